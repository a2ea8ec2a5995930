"""``instructrl label bot``: a simulated labeler or the LLM judge working through a workbench user's queue.

The bot is a workbench user with an API key; it asks the workbench's API (:mod:`.api`) for the user's next
task, labels it as the labeler would (a ranking with Likert scores and flags, or a demonstration: the
prompt's reference answer, else the best of the candidates the task carries) and submits it, until the
queue is empty (or ``max_items``). Its labels land beside people's, so the agreement dashboard compares
bots and people on the overlapping items.

The rubric's flags map to the workbench's (the paper's Table 3) where they mean the same thing:
fails_instruction, hallucination and inappropriate_for_customer_assistant one to one, and
satisfies_constraint where the prompt has verifiable constraints and none is violated; the rubric's
toxic, truncated, degenerate and off_topic have no column there and only move the scores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from instructrl.builtin import resolve
from instructrl.config import ConfigError
from instructrl.label.labeler import rng_for
from instructrl.label.rubric import as_prompt
from instructrl.label.workbench.config import BotConfig
from instructrl.models.generation import OpenAIError
from instructrl.records import Prompt, read_jsonl, require_records

log = logging.getLogger(__name__)

FLAG_MAP = {
    "fails_instruction": "fails_instruction",
    "hallucination": "hallucination",
    "inappropriate_for_customer_assistant": "inappropriate_for_customer_assistant",
}


class WorkbenchError(RuntimeError):
    """The workbench refused a request or could not be reached."""


def workbench_flags(flags: dict[str, bool], prompt: Prompt) -> list[str]:
    """The workbench flag names of one response's rubric flags (see the module doc)."""
    out = [FLAG_MAP[name] for name, on in flags.items() if on and name in FLAG_MAP]
    if prompt.constraints and not flags.get("violates_constraint", False):
        out.append("satisfies_constraint")
    return out


def _key(prompt: Any) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def make_labeler(cfg: BotConfig) -> Any:
    """The labeler the bot acts as: one labeler of a saved panel, or the LLM judge."""
    from instructrl.label.config import PanelConfig
    from instructrl.label.panel import Panel, build_rubric, make_panels

    rubric = build_rubric(cfg.rubric)
    if cfg.labeler == "judge":
        from instructrl.label.judge import LLMJudge

        return LLMJudge.from_config(cfg.judge, rubric)
    if cfg.panel_file:
        try:
            panel = Panel.load(cfg.panel_file if "#" in cfg.panel_file else f"{cfg.panel_file}#train", rubric)
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"panel_file: {str(e).strip(chr(34))}") from None
    else:
        panel = make_panels(PanelConfig(rubric=cfg.rubric), rubric)[0]
    if not cfg.labeler_id:
        return panel.labelers[0]
    ids = [lab.id for lab in panel.labelers]
    if cfg.labeler_id not in ids:
        raise ConfigError(f"labeler_id: no labeler {cfg.labeler_id!r} in the panel; its labelers: {', '.join(ids)}")
    return panel.labeler(cfg.labeler_id)


class Bot:
    """One labeler's loop over the API: :meth:`next_task`, :meth:`label`, :meth:`submit`."""

    def __init__(self, cfg: BotConfig, labeler: Any, client: Any):
        self.cfg, self.labeler, self.client = cfg, labeler, client
        self.records: dict[str, Prompt] = {}
        for spec in cfg.prompts:
            path = resolve(spec)
            for p in require_records(read_jsonl(path, Prompt), path, "prompts"):
                self.records.setdefault(_key(p.prompt), p)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self.client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise WorkbenchError(f"{self.cfg.url}{path}: {type(e).__name__}: {e}") from None

    def next_task(self) -> dict | None:
        params = {"project": self.cfg.project} if self.cfg.project is not None else None
        r = self._request("GET", "/api/label/v1/next", params=params)
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise WorkbenchError(f"{self.cfg.url}/api/label/v1/next: HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json()
        except ValueError:
            raise WorkbenchError(f"{self.cfg.url}/api/label/v1/next: not a JSON answer: {r.text[:300]}") from None

    def label(self, task: dict) -> dict:
        """The body to submit for one task (a label, or a skip with its reason)."""
        prompt = self.records.get(_key(task["prompt"])) or as_prompt(task["prompt"])
        version = (task.get("instruction_version") or {}).get("id")
        body: dict[str, Any] = {"instruction_version": version} if version is not None else {}
        if task["kind"] == "rank":
            texts = [r["text"] for r in task["responses"]]
            finish = [r.get("finish_reason") for r in task["responses"]]
            rng = rng_for(self.cfg.seed, "bot", self.labeler.id, task["assignment"])
            ranking = self.labeler.rank(prompt, texts, rng, finish)
            flags = ranking.flags or [{} for _ in texts]
            return body | {
                "ranks": list(ranking.ranks),
                "likert": list(ranking.likert),  # the panel always rates; the judge does with judge.likert
                "flags": [workbench_flags(f, prompt) for f in flags],
            }
        if task["kind"] == "demonstrate":
            candidates = [c for c in (task.get("meta") or {}).get("candidates", []) if isinstance(c, str)]
            demo = self.labeler.demonstrate(prompt, candidates)
            if demo is None:
                return body | {"skip_reason": "No reference answer, and no candidate response to start from."}
            return body | {"response": demo.response}
        return body | {"skip_reason": f"A bot does not do {task['kind']} tasks."}

    def submit(self, task: dict, body: dict) -> str:
        path = f"/api/label/v1/tasks/{task['assignment']}"
        r = self._request("POST", path, json=body)
        if r.status_code == 409:
            return "already"  # a retry of a submit whose answer was lost: stored once
        if r.status_code != 200:
            raise WorkbenchError(f"{self.cfg.url}{path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["status"]

    def run(self, progress: bool = True) -> dict[str, int]:
        """Label until the queue stays empty for ``wait`` seconds (or ``max_items`` labels)."""
        from tqdm.auto import tqdm

        counts = {"done": 0, "skipped": 0, "already": 0}
        bar = tqdm(desc=f"bot {self.labeler.id}", unit="label", disable=not progress)
        idle_since = None
        while self.cfg.max_items is None or counts["done"] + counts["skipped"] < self.cfg.max_items:
            task = self.next_task()
            if task is None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.cfg.wait:
                    break
                time.sleep(self.cfg.poll)
                continue
            idle_since = None
            status = self.submit(task, self.label(task))
            counts[status] += 1
            bar.update(1)
        bar.close()
        return counts


def bot_cli(cfg: BotConfig) -> dict[str, int]:
    """``instructrl label bot``: label the key's user's queue, then print what was done."""
    import httpx

    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise ConfigError(
            f"${cfg.api_key_env} is empty: make a key for the bot's user (instructrl serve key create user=NAME "
            f"db_url=...) and export it as {cfg.api_key_env}"
        )
    labeler = make_labeler(cfg)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=cfg.url, headers=headers, timeout=cfg.timeout) as client:
        bot = Bot(cfg, labeler, client)
        r = bot._request("GET", "/api/label/v1/next", params={"project": -1})  # checks the address and the key
        if r.status_code in (401, 403):
            raise WorkbenchError(f"{cfg.url}: the workbench refused the key in ${cfg.api_key_env}: {r.text[:300]}")
        try:
            counts = bot.run()
        except OpenAIError as e:
            raise WorkbenchError(
                f"the LLM judge at {cfg.judge.base_url} (model {cfg.judge.model!r}) failed: {e}"
            ) from None
    log.info("bot %s: %s", labeler.id, json.dumps(counts))
    return counts
