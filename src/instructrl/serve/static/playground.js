// The playground's chat and compare pages: JSON requests with the session's CSRF token in a header, answers
// read as server-sent events. Text from people and models is put in the page as text (textContent), never
// as markup.
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }

  async function postJSON(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  }

  async function acceptNotice(csrf, model) {
    const form = new URLSearchParams({ model: model, csrf_token: csrf });
    const r = await fetch("/playground/notice", {
      method: "POST", body: form, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf },
    });
    return r.ok;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body.error && body.error.message) return body.error.message;
      if (body.detail) return body.detail;
    } catch (e) { /* not JSON */ }
    return "The server answered " + response.status + ".";
  }

  // ---------------------------------------------------------------- chat

  function chatPage(root) {
    const csrf = root.dataset.csrf;
    const seen = new Set(root.dataset.seen ? root.dataset.seen.split(",") : []);
    const model = $("model"), chat = $("chat"), message = $("message"), status = $("status");
    const notice = $("notice"), send = $("send"), stop = $("stop");
    let history = [];
    let controller = null;

    for (const id of ["temperature", "top_p"]) {
      const input = $(id), out = $(id + "-value");
      input.addEventListener("input", () => { out.textContent = input.value; });
    }

    function showNotice() {
      // shown on every switch of model, as the notice recurs each time a model is used
      $("notice-model").textContent = model.value;
      notice.hidden = false;
      send.disabled = true;
      $("notice-ok").focus();
    }

    function addMessage(role, text) {
      const empty = $("empty");
      if (empty) empty.remove();
      const div = document.createElement("div");
      div.className = "msg msg-" + role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = role === "user" ? "You" : role === "assistant" ? model.value : "Error";
      const body = document.createElement("span");
      body.className = "body";
      body.textContent = text;
      div.append(who, body);
      chat.append(div);
      chat.scrollTop = chat.scrollHeight;
      return body;
    }

    $("notice-ok").addEventListener("click", async () => {
      if (await acceptNotice(csrf, model.value)) {
        seen.add(model.value);
        notice.hidden = true;
        send.disabled = false;
        message.focus();
      }
    });
    model.addEventListener("change", showNotice);
    $("clear").addEventListener("click", () => {
      history = [];
      chat.replaceChildren();
      status.textContent = "";
    });
    stop.addEventListener("click", () => { if (controller) controller.abort(); });
    message.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("send-form").requestSubmit(); }
    });

    $("send-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = message.value.trim();
      if (!text || controller) return;
      if (!seen.has(model.value)) { showNotice(); return; }
      const messages = [];
      const system = $("system").value.trim();
      if (system) messages.push({ role: "system", content: system });
      messages.push(...history, { role: "user", content: text });
      addMessage("user", text);
      message.value = "";
      const out = addMessage("assistant", "");
      status.textContent = "Writing…";
      send.disabled = true;
      stop.hidden = false;
      controller = new AbortController();
      let answer = "";
      try {
        const r = await fetch("/playground/chat", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          credentials: "same-origin",
          signal: controller.signal,
          body: JSON.stringify({
            model: model.value, messages: messages,
            temperature: parseFloat($("temperature").value), top_p: parseFloat($("top_p").value),
            max_tokens: parseInt($("max_tokens").value, 10),
          }),
        });
        if (!r.ok) throw new Error(await errorText(r));
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const line = buffer.slice(0, cut).trim();
            buffer = buffer.slice(cut + 2);
            if (!line.startsWith("data:")) continue;
            const event = JSON.parse(line.slice(5));
            if (event.delta) { answer += event.delta; out.textContent = answer; chat.scrollTop = chat.scrollHeight; }
            if (event.error) throw new Error(event.error);
            if (event.done) status.textContent = event.done === "length" ? "Stopped at the token limit." : "";
          }
        }
        history.push({ role: "user", content: text }, { role: "assistant", content: answer });
      } catch (err) {
        if (err.name === "AbortError") {
          status.textContent = "Stopped.";
        } else {
          out.parentElement.remove();
          addMessage("error", err.message);
          status.textContent = "";
        }
      } finally {
        controller = null;
        send.disabled = false;
        stop.hidden = true;
      }
    });

    if (!seen.has(model.value)) showNotice();
  }

  // ---------------------------------------------------------------- compare

  function comparePage(root) {
    const csrf = root.dataset.csrf;
    const form = $("compare-form");
    if (!form) return;
    const status = $("status"), notice = $("notice");
    let seen = root.dataset.seen === "1";
    let current = null;

    $("notice-ok").addEventListener("click", async () => {
      if (await acceptNotice(csrf, "compare")) { seen = true; notice.hidden = true; $("prompt").focus(); }
    });

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const prompt = $("prompt").value.trim();
      if (!prompt) return;
      if (!seen) { notice.hidden = false; return; }
      status.textContent = "Both models are writing…";
      $("compare-go").disabled = true;
      try {
        const r = await postJSON("/playground/compare", csrf, {
          prompt: prompt,
          temperature: parseFloat($("cmp-temperature").value),
          max_tokens: parseInt($("cmp-max").value, 10),
        });
        if (!r.ok) throw new Error(await errorText(r));
        const body = await r.json();
        current = body.id;
        $("left").textContent = body.left;
        $("right").textContent = body.right;
        $("name-left").textContent = "";
        $("name-right").textContent = "";
        $("voted").textContent = "";
        for (const b of document.querySelectorAll("[data-vote]")) b.disabled = false;
        $("answers").hidden = false;
        $("votes").hidden = false;
        status.textContent = "";
      } catch (err) {
        status.textContent = err.message;
      } finally {
        $("compare-go").disabled = false;
      }
    });

    for (const button of document.querySelectorAll("[data-vote]")) {
      button.addEventListener("click", async () => {
        if (current === null) return;
        const r = await postJSON("/playground/compare/" + current + "/vote", csrf, { vote: button.dataset.vote });
        if (!r.ok) { $("voted").textContent = await errorText(r); return; }
        const body = await r.json();
        $("name-left").textContent = "(" + body.left + ")";
        $("name-right").textContent = "(" + body.right + ")";
        $("voted").textContent = "Thanks — your vote is saved.";
        for (const b of document.querySelectorAll("[data-vote]")) b.disabled = true;
      });
    }
  }

  const playground = $("playground");
  if (playground) chatPage(playground);
  const compare = $("compare");
  if (compare) comparePage(compare);
})();
