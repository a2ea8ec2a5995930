// The task pages' little script: keyboard shortcuts, the current output, the live ranking line and
// draft autosave. The forms work without it (plain POST); it only makes them faster to use.
(function () {
  "use strict";

  const form = document.getElementById("task-form");
  if (!form) return;
  const skipForm = document.getElementById("skip-form");
  const status = document.getElementById("draft-status");
  const outputs = Array.from(form.querySelectorAll(".output"));
  const csrf = form.dataset.csrf;
  const draftUrl = form.dataset.draftUrl;

  // ------------------------------------------------------------------ drafts

  let timer = null;
  let saving = false;
  let again = false;
  let stopped = false;

  function setStatus(text, isError) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function fields() {
    const out = {};
    for (const f of [form, skipForm]) {
      if (!f) continue;
      for (const [name, value] of new FormData(f)) {
        if (name === "csrf_token" || name === "instruction_version") continue;
        (out[name] = out[name] || []).push(String(value));
      }
    }
    return out;
  }

  function schedule(delay) {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(save, delay === undefined ? 700 : delay);
  }

  async function save() {
    if (saving) {
      again = true;
      return;
    }
    saving = true;
    try {
      const response = await fetch(draftUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ fields: fields() }),
      });
      if (response.status === 409 || response.status === 401 || response.status === 403) {
        stopped = true;
        setStatus("Draft not saved: reload the page (signed out, or already submitted).", true);
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      setStatus("Draft saved at " + new Date(data.saved_at).toLocaleTimeString() + ".", false);
    } catch (error) {
      setStatus("Draft not saved: no connection? Trying again…", true);
      schedule(4000);
    } finally {
      saving = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function changed() {
    updateRanking();
    schedule();
  }

  form.addEventListener("change", changed);
  form.addEventListener("input", changed);
  if (skipForm) skipForm.addEventListener("input", changed);
  for (const f of [form, skipForm]) {
    if (f) f.addEventListener("submit", () => { stopped = true; clearTimeout(timer); });
  }

  // ------------------------------------------------------------------ a few-shot prompt: one more example

  const addExample = document.getElementById("add-example");
  const examples = document.getElementById("examples");
  if (addExample && examples) {
    const max = Number(examples.dataset.max) || 16;
    const refresh = () => { addExample.disabled = examples.querySelectorAll(".example").length >= max; };
    addExample.addEventListener("click", () => {
      const all = examples.querySelectorAll(".example");
      if (all.length >= max) return;
      const index = all.length;
      const next = all[all.length - 1].cloneNode(true);
      next.dataset.index = String(index);
      next.querySelector("legend").textContent = "Example " + (index + 1);
      next.querySelectorAll("textarea").forEach((area) => {
        area.name = area.name.replace(/_\d+$/, "_" + index);
        area.value = "";
      });
      examples.appendChild(next);
      next.querySelector("textarea").focus();
      refresh();
    });
    refresh();
  }

  // ------------------------------------------------------------------ the current output

  let current = 0;

  function setCurrent(index, scroll) {
    if (!outputs.length) return;
    current = Math.max(0, Math.min(outputs.length - 1, index));
    outputs.forEach((output, i) => output.classList.toggle("current", i === current));
    if (scroll) outputs[current].scrollIntoView({ block: "start" });
  }

  outputs.forEach((output, i) => {
    output.addEventListener("mousedown", () => setCurrent(i, false));
    output.addEventListener("focusin", () => setCurrent(i, false));
  });

  // ------------------------------------------------------------------ the ranking line: "B = D > A > C"

  function updateRanking() {
    const line = document.getElementById("ranking-order");
    if (!line) return;
    const byRank = new Map();
    const missing = [];
    outputs.forEach((output, i) => {
      const chosen = form.querySelector(`input[name="rank_${i}"]:checked`);
      if (!chosen) {
        missing.push(output.dataset.letter);
        return;
      }
      const rank = Number(chosen.value);
      if (!byRank.has(rank)) byRank.set(rank, []);
      byRank.get(rank).push(output.dataset.letter);
    });
    const groups = Array.from(byRank.keys()).sort((a, b) => a - b).map((rank) => byRank.get(rank).join(" = "));
    let text = groups.length ? groups.join(" > ") : "not ranked yet";
    if (groups.length && missing.length) text += " (not ranked: " + missing.join(", ") + ")";
    line.textContent = text;
  }

  // ------------------------------------------------------------------ keyboard

  const flagKeys = {};
  if (outputs.length) {
    outputs[0].querySelectorAll(".flag").forEach((label) => {
      const key = label.querySelector("kbd");
      const input = label.querySelector("input");
      if (key && input) flagKeys[key.textContent.trim()] = input.value;
    });
  }

  function choose(name, value) {
    const input = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (!input) return;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function toggleFlag(position, flag) {
    const input = form.querySelector(`input[name="flags_${position}"][value="${flag}"]`);
    if (!input) return;
    input.checked = !input.checked;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function isTyping(target) {
    if (!target) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && !["radio", "checkbox", "submit", "button"].includes(target.type);
  }

  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      const inSkip = skipForm && skipForm.contains(event.target);
      (inSkip ? skipForm : form).requestSubmit();
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey || !outputs.length) return;
    const digit = /^(?:Digit|Numpad)([1-9])$/.exec(event.code);
    if (digit) {
      event.preventDefault();
      choose(`${event.shiftKey ? "rank" : "likert"}_${current}`, digit[1]);
      return;
    }
    if (event.shiftKey) return;
    if (event.key === "j") {
      event.preventDefault();
      setCurrent(current + 1, true);
    } else if (event.key === "k") {
      event.preventDefault();
      setCurrent(current - 1, true);
    } else if (flagKeys[event.key]) {
      event.preventDefault();
      toggleFlag(current, flagKeys[event.key]);
    }
  });

  // start at the first output not rated yet
  const unrated = outputs.findIndex((_, i) => !form.querySelector(`input[name="likert_${i}"]:checked`));
  setCurrent(unrated === -1 ? 0 : unrated, false);
  updateRanking();
})();
