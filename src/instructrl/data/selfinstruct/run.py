"""``instructrl selfinstruct``: grow a task pool from seed tasks with the model itself.

One step: sample instruction-generation prompts (human seeds plus tasks generated so far) → the
model continues each list → parse → filter (length, banned words, first character, ROUGE-L
novelty against the whole pool) → decide which new instructions are classification tasks → write
instances (output-first for classification, input-first otherwise) → filter instances → keep the
tasks that have valid instances. ``generate.mode=single_step`` writes instruction, input and output
in one prompt instead.

Every step is appended to ``log.jsonl`` as one line (every candidate with its decision), written
and fsynced in one go: a killed run resumes after its last complete step, and since every step
draws its randomness from ``(run.seed, step)``, it continues exactly as an uninterrupted run would.
At the end ``tasks.jsonl`` (the new tasks, with provenance), ``demonstrations.jsonl`` (one SFT
record per instance) and the report (``report.json``, ``report.md``, ``rouge_overlap.png``) are
written from the log.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from instructrl.config import save_config
from instructrl.data.selfinstruct import prompts as templates
from instructrl.data.selfinstruct.config import SelfInstructConfig
from instructrl.data.selfinstruct.filters import filter_instances, instruction_drop_reason
from instructrl.data.selfinstruct.novelty import rouge_l
from instructrl.data.selfinstruct.parse import (
    parse_input_first,
    parse_instruction_list,
    parse_output_first,
    parse_single_step,
    parse_yes_no,
)
from instructrl.data.selfinstruct.report import write_report
from instructrl.data.selfinstruct.state import State, read_log
from instructrl.data.selfinstruct.tasks import Instance, Task, load_tasks, to_demonstrations
from instructrl.models.generation import is_cut
from instructrl.records import append_jsonl, write_jsonl
from instructrl.utils.metrics import MetricsLogger
from instructrl.utils.run import RESUMABLE_CHANGES, check_out_dir
from instructrl.utils.seed import derive

log = logging.getLogger(__name__)


#: Settings that may change when a run is resumed (e.g. a higher target extends a finished run).
SELFINSTRUCT_RESUMABLE = RESUMABLE_CHANGES | {
    "generate.target",
    "generate.max_steps",
    "backend.batch_size",
    "backend.concurrency",
    "backend.timeout",
    "backend.base_url",
    "backend.api_key_env",
}


def make_generator(cfg: SelfInstructConfig):
    from instructrl.models.generation import HFGenerator, OpenAIGenerator

    b = cfg.backend
    if b.kind == "openai":
        return OpenAIGenerator(b.base_url, b.model, b.api_key_env, timeout=b.timeout, concurrency=b.concurrency)
    if cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    return HFGenerator.from_pretrained(
        b.name_or_path,
        device=cfg.run.device,
        dtype=b.dtype,
        batch_size=b.batch_size,
        max_prompt_tokens=b.max_prompt_tokens,
        progress=cfg.run.progress,
    )


class Step:
    """One step of Self-Instruct; returns the log record."""

    def __init__(self, cfg: SelfInstructConfig, state: State, generator):
        self.cfg, self.state, self.gen = cfg, state, generator
        self.g, self.raw = cfg.generate, cfg.backend.prompt_format == "raw"
        self.rng = random.Random(derive(cfg.run.seed, "selfinstruct", state.step))
        # 31 bits: OpenAI-compatible servers take a 32-bit seed (each phase adds a small offset)
        self.seed = derive(cfg.run.seed, "selfinstruct sampling", state.step) % 2**31

    def _ask(self, raw_prompts: list[str], chat_prompts: list, phase: int, **kw):
        prompts = raw_prompts if self.raw else chat_prompts
        return self.gen.generate(prompts, raw=self.raw, seed=self.seed + phase, **kw) if prompts else []

    def _shown(self, n: int, n_machine: int) -> list[Task]:
        machine = self.rng.sample(self.state.tasks, min(n_machine, len(self.state.tasks)))
        human = self.rng.sample(self.state.seeds, min(n - len(machine), len(self.state.seeds)))
        shown = machine + human
        self.rng.shuffle(shown)
        return shown

    def run(self) -> dict:
        g, cands, extra = self.g, [], Counter()
        if g.mode == "pipeline":
            shown = [self._shown(g.num_prompt_instructions, g.num_machine_in_prompt) for _ in range(g.prompts_per_step)]
            texts = [[t.instruction for t in s] for s in shown]
            stop = templates.instruction_stop(g.num_prompt_instructions, g.max_new_instructions)
            gens = self._ask(
                [templates.instruction_prompt(t) for t in texts],
                [templates.instruction_chat_prompt(t, g.max_new_instructions) for t in texts],
                0,
                max_new_tokens=g.instruction_max_new_tokens,
                temperature=g.instruction_temperature,
                top_p=g.instruction_top_p,
                stop=stop if self.raw else stop[1:],
            )
            for p, gen in enumerate(gens):
                items, over = parse_instruction_list(
                    gen.text,
                    start=len(texts[p]) + 1 if self.raw else None,
                    truncated=is_cut(gen.finish_reason),
                    max_items=g.max_new_instructions,
                )
                extra["over_limit"] += over
                cands += [
                    {
                        "instruction": it.text,
                        "prompt": p,
                        "shown": [t.id for t in shown[p]],
                        **({"drop": "truncated"} if it.truncated else {}),
                    }
                    for it in items
                ]
        else:
            shown = [self._shown(g.single_step_shots, g.single_step_machine_shots) for _ in range(g.prompts_per_step)]
            gens = self._ask(
                [templates.single_step_prompt(s) for s in shown],
                [
                    templates.as_chat(templates.single_step_prompt(s), prefix=f"### Task {len(s) + 1}\nInstruction:")
                    for s in shown
                ],
                0,
                max_new_tokens=g.instruction_max_new_tokens,
                temperature=g.instruction_temperature,
                top_p=g.instruction_top_p,
                stop=templates.single_step_stop(g.single_step_shots, g.max_new_instructions),
            )
            for p, gen in enumerate(gens):
                items, over = parse_single_step(
                    gen.text,
                    start=len(shown[p]) + 1 if self.raw else None,
                    truncated=is_cut(gen.finish_reason),
                    max_items=g.max_new_instructions,
                )
                extra["over_limit"] += over
                cands += [
                    {
                        "instruction": it.instruction,
                        "prompt": p,
                        "shown": [t.id for t in shown[p]],
                        "_instance": it.instance,
                        **({"drop": "truncated"} if it.truncated else {}),
                    }
                    for it in items
                ]
        self._filter(cands)
        novel = [c for c in cands if c.get("novel")]
        unparsed = self._classify(novel)
        instance_drops = self._instances(novel)
        for k, c in enumerate(cands):
            c.pop("_instance", None)
            if c.get("instances") is not None and "drop" not in c:
                c["task"] = self._task(c, k)
            c.pop("instances", None)
        return {
            "step": self.state.step,
            "candidates": cands,
            "extra_drops": {k: v for k, v in extra.items() if v},
            "instance_drops": dict(instance_drops),
            "classification_unparsed": unparsed,
        }

    def _filter(self, cands: list[dict]) -> None:
        accepted: list[str] = []  # passed earlier in this step: also part of the pool
        threshold = self.cfg.filters.max_rouge_l
        for c in cands:
            if "drop" in c:
                continue
            reason = instruction_drop_reason(c["instruction"], self.cfg.filters)
            if reason is None:
                hits = self.state.index.scores_at_least(c["instruction"])
                local = max(((rouge_l(c["instruction"], a), a) for a in accepted), default=(0.0, ""))
                if hits and hits[0][1] >= local[0]:
                    reason = "not_novel"
                    c["similar_to"], c["rouge_l"] = self.state.index.texts[hits[0][0]], hits[0][1]
                elif local[0] >= threshold:
                    reason = "not_novel"
                    c["similar_to"], c["rouge_l"] = local[1], local[0]
            if reason:
                c["drop"] = reason
            else:
                c["novel"] = True
                accepted.append(c["instruction"])

    def _classify(self, novel: list[dict]) -> int:
        raw = [templates.classification_prompt(c["instruction"]) for c in novel]
        gens = self._ask(
            raw,
            [
                templates.as_chat(
                    r, "Classification task:", "\n\nIs the last task a classification task? Answer Yes or No."
                )
                for r in raw
            ],
            1,
            max_new_tokens=4,
            temperature=0.0,
            stop=templates.CLASSIFICATION_STOP if self.raw else None,
        )
        unparsed = 0
        for c, gen in zip(novel, gens):
            answer = parse_yes_no(gen.text)
            unparsed += answer is None
            c["is_classification"] = bool(answer)
        return unparsed

    def _instances(self, novel: list[dict]) -> Counter:
        g, drops = self.g, Counter()
        if g.mode == "pipeline":
            raw = [templates.instance_prompt(c["instruction"], c["is_classification"]) for c in novel]
            prefixes = [
                templates.OUTPUT_FIRST_PREFIX if c["is_classification"] else templates.INPUT_FIRST_PREFIX for c in novel
            ]
            gens = self._ask(
                raw,
                [templates.as_chat(r, pre) for r, pre in zip(raw, prefixes)],
                2,
                max_new_tokens=g.instance_max_new_tokens,
                temperature=g.instance_temperature,
                top_p=g.instance_top_p,
                stop=templates.INSTANCE_STOP,
            )
            parsed = [
                (parse_output_first if c["is_classification"] else parse_input_first)(
                    gen.text, truncated=is_cut(gen.finish_reason), prefixed=self.raw
                )
                for c, gen in zip(novel, gens)
            ]
        else:
            parsed = [([c["_instance"]], Counter()) if c["_instance"] else ([], Counter(unparseable=1)) for c in novel]
        for c, (instances, parse_drops) in zip(novel, parsed):
            kept, filter_drops = filter_instances(instances, self.cfg.filters, c["instruction"])
            drops.update(parse_drops)
            drops.update(filter_drops)
            if len(kept) > g.max_instances:
                drops["over_limit"] += len(kept) - g.max_instances
                kept = kept[: g.max_instances]
            if kept:
                c["instances"] = kept
            else:
                c["drop"] = "no_valid_instances"
        return drops

    def _task(self, c: dict, k: int) -> dict:
        j, f1 = self.state.seed_index.nearest(c["instruction"])
        meta = {
            "source": "selfinstruct",
            "step": self.state.step,
            "mode": self.g.mode,
            "shown": c["shown"],
            "generator": self.cfg.backend.model if self.cfg.backend.kind == "openai" else self.cfg.backend.name_or_path,
            "nearest_seed": self.state.seeds[j].id,
            "rouge_l_seed": f1,
        }
        instances: list[Instance] = c["instances"]
        return Task(
            c["instruction"], instances, c["is_classification"], id=f"si_{self.state.step:05d}_{k:03d}", meta=meta
        ).to_json()


def run(cfg: SelfInstructConfig) -> Path:
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    if not cfg.run.resume and log_path.exists():
        log_path.unlink()
    if log_path.exists():
        check_out_dir(cfg, out, resumable=SELFINSTRUCT_RESUMABLE, holds=str(log_path))
    save_config(cfg, out)
    state = State(load_tasks(cfg.seeds), cfg.filters.max_rouge_l)
    read_log(log_path, state)
    if state.step:
        log.info("resuming after step %d: %d new tasks so far", state.step - 1, len(state.tasks))
    metrics = MetricsLogger(out, resume_step=state.step - 1 if state.step else None)
    g = cfg.generate
    if len(state.tasks) < g.target and state.step < g.max_steps:
        generator = make_generator(cfg)
        bar = tqdm(
            total=g.target,
            initial=min(len(state.tasks), g.target),
            desc="selfinstruct",
            unit="task",
            disable=not cfg.run.progress,
        )
        while len(state.tasks) < g.target and state.step < g.max_steps:
            before = len(state.tasks)
            record = Step(cfg, state, generator).run()
            append_jsonl(log_path, [record])
            state.apply(record)
            metrics.log(
                record["step"],
                {
                    "selfinstruct/generated": len(record["candidates"]),
                    "selfinstruct/kept": len(state.tasks) - before,
                    "selfinstruct/tasks": len(state.tasks),
                    "selfinstruct/pool": len(state.index),
                },
            )
            bar.update(min(len(state.tasks), g.target) - min(before, g.target))
        bar.close()
    write_jsonl(out / "tasks.jsonl", [t.to_json() for t in state.tasks])
    write_jsonl(out / "demonstrations.jsonl", to_demonstrations(state.tasks))
    write_report(out, state, cfg)
    return out
