"""Evaluate policies: ``run(EvalConfig) -> Path``.

``tasks`` chooses what runs on every policy: ``preference`` (described here) and the automatic
evaluations of :mod:`instructrl.eval.tasks` (TruthfulQA, HellaSwag, RealToxicityPrompts, GSM8K),
whose results go to ``tasks/`` and ``task_results.{json,md}`` (see :mod:`instructrl.eval.tasks.suite`).

Preference, on held-out test prompts with the held-out panel: setup -> sample (one response per
test prompt and policy, with its log-prob) -> KL to the reference policy -> judge (held-out panel:
Likert and flags per response, each policy against the baseline, a ranking of all policies'
responses per prompt) -> reward-model scores -> save.

Writes ``out_dir/{config.yaml, samples/<policy>.jsonl, comparisons.jsonl, results.json,
metrics.jsonl}``. Sampling is the slow part: a policy whose ``samples/<policy>.jsonl`` exists (for
the same prompts) is not sampled again, so an interrupted evaluation resumes where it stopped.

``results.json`` holds, per policy: the win rate against the baseline (ties half) with its
bootstrap interval and counts, the mean Likert score (with its interval), the rate of every
metadata flag, the mean reward-model score, the KL to the reference policy (nats per response,
between the temperature-scaled sampling distributions), response lengths (words, tokens) and the
rate of responses cut at ``max_new_tokens``; the reward model's accuracy on the held-out panel's
judgements; and a few example prompts with every policy's response.

With ``judge.base_url`` set, an LLM judge (:class:`~instructrl.label.judge.LLMJudge`, both orders
asked per pair) compares every policy's response with the baseline's too, beside the panel: each
policy's row gets ``judge`` (the judge's win rate with its bootstrap interval and counts, its
agreement with the held-out panel on the same pairs, a tie counting as a verdict, with its interval,
the agreement over the pairs neither called a tie, and the judge's unparsed answers), and
``results.json`` a ``judge`` summary (endpoint, model, requests, unparsed answers, agreement over
all pairs); ``comparisons.jsonl`` holds both verdicts of every pair (``outcome``: the panel's,
``judge``: the judge's). The endpoint is asked once before sampling, so that a judge that does not
answer stops the evaluation at once; one that fails later stops it too, naming the endpoint; a
failure is never counted as a tie. Its verdicts are kept per policy in ``judge/<policy>.json`` as they come in: a
resumed evaluation asks the judge again only for a policy whose responses (or the judge's model or settings) changed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from instructrl.builtin import load_demonstrations, resolve
from instructrl.config import ConfigError, save_config
from instructrl.eval.config import EvalConfig, EvalJudgeConfig, PolicySpec
from instructrl.eval.sample import load_policy, sample_prompts, sequence_logprobs
from instructrl.eval.tasks.suite import build_tasks, run_tasks
from instructrl.eval.winrate import (
    agreement,
    bootstrap_ci,
    kl_estimate,
    preference_accuracy,
    ranking_accuracy,
    summarize,
)
from instructrl.label.judge import LLMJudge
from instructrl.label.labeler import rng_for
from instructrl.label.panel import Panel
from instructrl.label.rubric import FLAGS
from instructrl.models.engines import make_generator
from instructrl.models.generation import OpenAIError, ended_flags, is_cut
from instructrl.models.scalar import load_reward_model
from instructrl.records import (
    Demonstration,
    Prompt,
    Sample,
    atomic_write_text,
    prompt_messages,
    prompt_text,
    read_jsonl,
    write_jsonl,
)
from instructrl.utils.device import DTYPES, autocast, resolve_device, resolve_precision
from instructrl.utils.metrics import MetricsLogger
from instructrl.utils.seed import seed_everything

log = logging.getLogger("instructrl.eval")


# --------------------------------------------------------------------------- inputs


def load_test_prompts(cfg: EvalConfig) -> list[Prompt]:
    if not cfg.prompts:
        raise ValueError("eval: prompts is required (Prompt JSONL of the test prompts)")
    prompts = read_jsonl(resolve(cfg.prompts), Prompt)[: cfg.max_prompts]
    if not prompts:
        raise ValueError(f"eval: no prompts in {cfg.prompts}")
    seen: set[str] = set()
    for i, p in enumerate(prompts):
        p.id = p.id or f"test-{i}"
        if p.id in seen:
            raise ValueError(f"{cfg.prompts}: prompt id {p.id!r} appears twice; ids must be unique")
        seen.add(p.id)
    return prompts


def few_shot_prefix(cfg: EvalConfig, test: list[Prompt]) -> list[Demonstration]:
    """``few_shot_k`` plain demonstrations with short responses, none from a test user or of a test
    prompt, drawn with the run's seed."""
    users = {p.user_id for p in test if p.user_id}
    texts = {prompt_text(p.prompt).strip().lower() for p in test}
    pool = [
        d
        for spec in cfg.few_shot_demos
        for d in load_demonstrations(spec)
        if isinstance(d.prompt, str)
        and d.response
        and d.user_id not in users
        and d.prompt.strip().lower() not in texts
        and 3 <= len(d.response.split()) <= cfg.few_shot_max_words
    ]
    if len(pool) < cfg.few_shot_k:
        raise ValueError(
            f"eval: only {len(pool)} demonstrations in {cfg.few_shot_demos} fit the few-shot prefix "
            f"(plain, {cfg.few_shot_max_words} words at most, no test user); few_shot_k={cfg.few_shot_k}"
        )
    return random.Random(cfg.run.seed).sample(pool, cfg.few_shot_k)


def with_prefix(prompt: Any, shots: list[Demonstration]) -> list[dict]:
    """The prompt as a chat whose earlier turns are the demonstrations."""
    turns = []
    for d in shots:
        turns += [{"role": "user", "content": d.prompt}, {"role": "assistant", "content": d.response}]
    return turns + prompt_messages(prompt)


# --------------------------------------------------------------------------- sampling


def sample_policy(
    cfg: EvalConfig, spec: PolicySpec, prompts: list[Prompt], shots: list[Demonstration], with_logprobs: bool
) -> list[Sample]:
    """One response per prompt (token ids and, for KL, the log-prob under the policy kept)."""

    model, tok, device = load_policy(spec.model, device=cfg.run.device, dtype=cfg.dtype)
    amp_dtype = resolve_precision(cfg.run.precision, device)
    inputs = [with_prefix(p.prompt, shots) if spec.few_shot else p.prompt for p in prompts]
    gen = make_generator(
        model,
        tok,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        progress=cfg.run.progress,
    )
    log.info(
        "eval: sampling %s (%s%s) on %d prompts",
        spec.name,
        spec.model,
        ", few-shot prefix" if spec.few_shot else "",
        len(prompts),
    )
    samples = sample_prompts(
        gen,
        prompts,
        inputs=inputs,
        policy=spec.name,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.run.seed,
        autocast_ctx=lambda: autocast(device, amp_dtype),
        keep_token_ids=True,
    )
    if with_logprobs and any(s.logprob is None for s in samples):
        # CachedGenerator reports the log-prob of what it drew (at the temperature, before top-p);
        # other engines get a forward pass
        lps = sequence_logprobs(
            model,
            tok,
            inputs,
            [s.meta["token_ids"] for s in samples],
            temperature=cfg.temperature,
            max_prompt_tokens=cfg.max_prompt_tokens,
            batch_size=cfg.forward_batch_size,
            device=device,
            autocast_ctx=lambda: autocast(device, amp_dtype),
        )
        for s, lp in zip(samples, lps):
            s.logprob = lp
    for s in samples:
        s.meta["vocab"] = len(tok)
        if spec.few_shot:
            s.meta["few_shot"] = [d.id for d in shots]
    del model, gen
    gc.collect()
    return samples


def reference_logprobs(
    cfg: EvalConfig, ref: PolicySpec, prompts: list[Prompt], samples: dict[str, list[Sample]]
) -> dict[str, list[float]]:
    """Log-probs of every other policy's responses under the reference policy (its own prompt, no prefix)."""

    model, tok, device = load_policy(ref.model, device=cfg.run.device, dtype=cfg.dtype)
    amp_dtype = resolve_precision(cfg.run.precision, device)
    out = {}
    for name, ss in samples.items():
        if name == ref.name:
            continue
        if ss[0].meta.get("vocab") != len(tok):
            log.warning("eval: %s has a different vocabulary than %s; no KL for it", name, ref.name)
            continue
        out[name] = sequence_logprobs(
            model,
            tok,
            [p.prompt for p in prompts],
            [s.meta["token_ids"] for s in ss],
            temperature=cfg.temperature,
            max_prompt_tokens=cfg.max_prompt_tokens,
            batch_size=cfg.forward_batch_size,
            device=device,
            autocast_ctx=lambda: autocast(device, amp_dtype),
        )
    del model
    gc.collect()
    return out


def load_panel(panel_file: str) -> Any:

    if not panel_file:
        raise ValueError("eval: panel_file is required (the panels.json of a labeling run)")
    path = panel_file
    if "#" not in path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"eval: panel file {path} not found") from None
        if isinstance(data, dict) and "heldout" in data:
            path += "#heldout"
    return Panel.load(path)


def load_judge(cfg: EvalJudgeConfig) -> LLMJudge:
    """The LLM judge of ``cfg``, asked once for a one-token answer: an endpoint that does not answer
    (or refuses the key or the model) is a ConfigError naming it, before any sampling."""
    judge = LLMJudge.from_config(cfg)
    try:
        judge.generator.generate([[{"role": "user", "content": "Answer OK."}]], max_new_tokens=1, temperature=0.0)
    except OpenAIError as e:
        raise ConfigError(
            f"judge.base_url: the LLM judge at {cfg.base_url} (model {cfg.model!r}) does not answer: {e}; "
            "start the server or fix judge.base_url, judge.model or judge.api_key_env"
        ) from None
    return judge


def judge_pairs(
    cfg: EvalConfig,
    judge: LLMJudge,
    prompts: list[Prompt],
    resp: dict[str, list[str]],
    names: list[str],
    cache_dir: Path | None = None,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """``(outcomes, unparsed)``: the LLM judge's outcome of each policy's response against the
    baseline's on every prompt (both orders asked), and its unparsed answers per policy. With
    ``cache_dir``, each policy's verdicts are kept in ``<cache_dir>/<policy>.json`` as soon as they are
    in, and a resumed evaluation asks again only where the judge, the prompts or a response changed."""
    outcomes: dict[str, list[str]] = {}
    unparsed: dict[str, int] = {}
    for n in tqdm(names, desc="eval LLM judge", disable=not cfg.run.progress):
        key = hashlib.sha256(
            json.dumps(
                [
                    cfg.judge.model,
                    cfg.judge.temperature,
                    cfg.judge.max_tokens,
                    [p.prompt for p in prompts],
                    resp[n],
                    resp[cfg.baseline],
                ],
                ensure_ascii=False,
            ).encode("utf-8", "surrogatepass")
        ).hexdigest()
        path = cache_dir / f"{n}.json" if cache_dir is not None else None
        if path is not None and path.exists():
            kept = json.loads(path.read_text(encoding="utf-8"))
            if kept.get("key") == key:
                outcomes[n], unparsed[n] = kept["outcomes"], kept["unparsed"]
                log.info("eval: the LLM judge's verdicts on %s are kept from %s", n, path)
                continue
        before = judge.unparsed
        try:
            outcomes[n] = judge.compare_many(prompts, resp[n], resp[cfg.baseline])
        except OpenAIError as e:
            raise OpenAIError(
                f"eval: the LLM judge at {cfg.judge.base_url} (model {cfg.judge.model!r}) failed while comparing "
                f"{n} with {cfg.baseline}: {e}"
            ) from None
        unparsed[n] = judge.unparsed - before
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"key": key, "outcomes": outcomes[n], "unparsed": unparsed[n]}) + "\n")
    return outcomes, unparsed


# --------------------------------------------------------------------------- run


def run(cfg: EvalConfig) -> Path:
    """Every configured task on every policy: ``preference`` (below) and the tasks of
    :mod:`instructrl.eval.tasks` (their data is read and checked first, before any model loads)."""
    if not cfg.policies:
        raise ValueError("eval: no policies to evaluate")
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    seed_everything(cfg.run.seed)
    if cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    tasks = build_tasks(cfg)
    for task in tasks:
        task.load()
    if "preference" in cfg.tasks:
        run_preference(cfg, out)
    if tasks:
        path = run_tasks(cfg, tasks, out)
        log.info("eval: task results in %s", path)
    return out


def run_preference(cfg: EvalConfig, out: Path) -> None:
    """Sample every policy on the test prompts and judge them with the held-out panel (see the module doc)."""
    prompts = load_test_prompts(cfg)
    ids = [p.id for p in prompts]
    shots = few_shot_prefix(cfg, prompts) if any(p.few_shot for p in cfg.policies) else []
    panel = load_panel(cfg.panel_file)  # fail early, before hours of sampling
    judge = load_judge(cfg.judge) if cfg.judge.enabled else None
    kl_on = cfg.kl_reference is not None and cfg.temperature > 0

    # ---------------------------------------------------------------- sample every policy (resumable)
    samples: dict[str, list[Sample]] = {}
    for spec in cfg.policies:
        path = out / "samples" / f"{spec.name}.jsonl"
        if cfg.run.resume and path.exists():
            got = read_jsonl(path, Sample)
            if [s.meta.get("prompt_id") for s in got] == ids:
                log.info("eval: %s already sampled (%s)", spec.name, path)
                samples[spec.name] = got
                continue
            log.info("eval: %s holds samples of other prompts; sampling again", path)
        samples[spec.name] = sample_policy(cfg, spec, prompts, shots, with_logprobs=kl_on)
        write_jsonl(path, samples[spec.name])

    # ---------------------------------------------------------------- KL to the reference policy
    kl: dict[str, float] = {}
    if kl_on:
        ref = next(p for p in cfg.policies if p.name == cfg.kl_reference)
        kl[ref.name] = 0.0
        for name, ref_lps in reference_logprobs(cfg, ref, prompts, samples).items():
            kl[name] = kl_estimate([s.logprob for s in samples[name]], ref_lps)

    # ---------------------------------------------------------------- judge with the held-out panel
    names = [p.name for p in cfg.policies]
    base = cfg.baseline
    fr = {n: [s.finish_reason for s in samples[n]] for n in names}
    resp = {n: [s.response for s in samples[n]] for n in names}
    panel.prefetch([(p, resp[n][i], fr[n][i]) for n in names for i, p in enumerate(prompts)])
    judged = {
        n: panel.judge_many(prompts, resp[n], seed=cfg.run.seed, finish_reasons=fr[n])
        for n in tqdm(names, desc="eval judge", disable=not cfg.run.progress)
    }
    outcomes: dict[str, list[str]] = {}
    rows = []
    for n in names:
        if n == base:
            continue
        outcomes[n] = [
            panel.compare(p, resp[n][i], resp[base][i], rng_for(cfg.run.seed, "eval", n, p.id), [fr[n][i], fr[base][i]])
            for i, p in enumerate(prompts)
        ]
    judge_outcomes, judge_unparsed = (
        judge_pairs(cfg, judge, prompts, resp, list(outcomes), out / "judge") if judge else ({}, {})
    )
    for n in outcomes:
        for i, p in enumerate(prompts):
            row = {"prompt_id": p.id, "policy": n, "baseline": base, "outcome": outcomes[n][i]}
            if judge:
                row["judge"] = judge_outcomes[n][i]
            rows.append(row)
    write_jsonl(out / "comparisons.jsonl", rows)
    rankings = (
        panel.rank_many(
            [(p, [resp[n][i] for n in names], [fr[n][i] for n in names]) for i, p in enumerate(prompts)],
            seed=cfg.run.seed,
        )
        if len(names) > 1
        else []
    )

    # ---------------------------------------------------------------- reward model
    rm_scores: dict[str, list[float]] = {}
    rm_acc: dict[str, Any] = {}
    if cfg.reward_model:
        device = resolve_device(cfg.run.device)
        rm, rm_tok = load_reward_model(cfg.reward_model, device=device, dtype=DTYPES[cfg.dtype])
        for n in tqdm(names, desc="eval rm score", disable=not cfg.run.progress):
            rm_scores[n] = rm.score_texts(
                rm_tok,
                [p.prompt for p in prompts],
                resp[n],
                max_len=cfg.max_prompt_tokens + cfg.max_new_tokens,
                batch_size=cfg.forward_batch_size,
                device=device,
                amp_dtype=resolve_precision(cfg.run.precision, device),
                ended=ended_flags(fr[n], len(resp[n])),
            )
        del rm
        gc.collect()
        acc, n_pairs = ranking_accuracy(
            [[rm_scores[n][i] for n in names] for i in range(len(prompts))], [r.ranks for r in rankings]
        )
        rm_acc["heldout_rankings"] = {"accuracy": acc, "pairs": n_pairs}
        sa = [x for n in outcomes for x in rm_scores[n]]
        sb = [x for n in outcomes for x in rm_scores[base]]
        acc2, n2 = preference_accuracy(sa, sb, [o for n in outcomes for o in outcomes[n]])
        rm_acc["vs_baseline"] = {"accuracy": acc2, "pairs": n2}

    # ---------------------------------------------------------------- summarize and save
    results = summarize_results(cfg, prompts, samples, judged, outcomes, kl, rm_scores, FLAGS)
    results["judge"] = None
    if judge:
        add_judge_results(cfg, results, outcomes, judge_outcomes, judge_unparsed, judge.requests)
    results["rm_accuracy"] = rm_acc
    results["few_shot_prefix"] = [{"id": d.id, "prompt": d.prompt, "response": d.response} for d in shots]
    results["panel"] = {
        "name": panel.name,
        "labelers": [lab.id for lab in panel.labelers],
        "calibration": panel.calibration.to_dict() if panel.calibration else None,
    }
    pick = random.Random(cfg.run.seed).sample(range(len(prompts)), min(cfg.examples, len(prompts)))
    results["examples"] = [
        {"prompt_id": prompts[i].id, "prompt": prompts[i].prompt, "responses": {n: resp[n][i] for n in names}}
        for i in sorted(pick)
    ]
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    flat: dict[str, Any] = {}
    for r in results["policies"]:
        for k in ("win_rate", "win_low", "win_high", "likert", "rm_score", "kl", "words", "tokens"):
            if r.get(k) is not None:
                flat[f"eval/{r['name']}/{k}"] = r[k]
        if r.get("judge"):
            for k in ("win_rate", "win_low", "win_high", "agreement"):
                flat[f"eval/{r['name']}/judge_{k}"] = r["judge"][k]
    if results["judge"]:
        flat["eval/judge/agreement"] = results["judge"]["agreement"]["rate"]
        flat["eval/judge/unparsed"] = results["judge"]["unparsed"]
    for k, v in rm_acc.items():
        flat[f"eval/rm_accuracy/{k}"] = v["accuracy"]
    MetricsLogger(out).log(0, flat)
    log.info(
        "eval: %s",
        ", ".join(
            f"{r['name']} win {r['win_rate']:.3f} [{r['win_low']:.3f}, {r['win_high']:.3f}]"
            for r in results["policies"]
        ),
    )
    if results["judge"]:
        log.info(
            "eval: LLM judge %s: %s; agreement with the held-out panel %.3f over %d pairs, %d unparsed answers",
            cfg.judge.model,
            ", ".join(
                f"{r['name']} win {r['judge']['win_rate']:.3f} [{r['judge']['win_low']:.3f}, "
                f"{r['judge']['win_high']:.3f}]"
                for r in results["policies"]
                if r["judge"]
            ),
            results["judge"]["agreement"]["rate"],
            results["judge"]["agreement"]["n"],
            results["judge"]["unparsed"],
        )


def add_judge_results(
    cfg: EvalConfig,
    results: dict,
    panel_outcomes: dict[str, list[str]],
    judge_outcomes: dict[str, list[str]],
    unparsed: dict[str, int],
    requests: int,
) -> None:
    """The LLM judge's figures in ``results`` (see the module doc): ``judge`` in each policy's row (None
    for the baseline) and the run's ``judge`` summary."""
    stats = {"resamples": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.run.seed}
    for row in results["policies"]:
        n = row["name"]
        if n not in judge_outcomes:
            row["judge"] = None
            continue
        s = summarize(judge_outcomes[n], **stats)
        a = agreement(panel_outcomes[n], judge_outcomes[n], **stats)
        row["judge"] = {
            **s.row(),
            "pairs": s.n,
            "agreement": a.rate,
            "agreement_low": a.low,
            "agreement_high": a.high,
            "agreement_decided": a.decided if a.n_decided else None,
            "decided_pairs": a.n_decided,
            "unparsed": unparsed[n],
        }
    names = list(judge_outcomes)
    pooled = agreement(
        [o for n in names for o in panel_outcomes[n]], [o for n in names for o in judge_outcomes[n]], **stats
    )
    results["judge"] = {
        "base_url": cfg.judge.base_url,
        "model": cfg.judge.model,
        "requests": requests,
        "unparsed": sum(unparsed.values()),
        "agreement": {**pooled.to_dict(), "decided": pooled.decided if pooled.n_decided else None},
    }


def summarize_results(
    cfg: EvalConfig,
    prompts: list[Prompt],
    samples: dict,
    judged: dict,
    outcomes: dict,
    kl: dict,
    rm_scores: dict,
    flags: tuple,
) -> dict:
    rows = []
    for spec in cfg.policies:
        n = spec.name
        ss, js = samples[n], judged[n]
        if n == cfg.baseline:
            win = {"win_rate": 0.5, "win_low": 0.5, "win_high": 0.5, "wins": 0, "ties": len(ss), "losses": 0}
        else:
            win = summarize(outcomes[n], resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.run.seed).row()
        likert = [j.likert for j in js]
        lo, hi = bootstrap_ci(likert, resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.run.seed)
        counts = Counter(f for j in js for f, on in j.flags.items() if on)
        rows.append(
            {
                "name": n,
                "model": spec.model,
                "few_shot": spec.few_shot,
                "baseline": n == cfg.baseline,
                "n": len(ss),
                **win,
                "likert": sum(likert) / len(likert),
                "likert_low": lo,
                "likert_high": hi,
                "flags": {f: counts[f] / len(js) for f in flags},
                "rm_score": sum(rm_scores[n]) / len(rm_scores[n]) if n in rm_scores else None,
                "kl": kl.get(n),
                "words": sum(len(s.response.split()) for s in ss) / len(ss),
                "tokens": sum(s.meta.get("n_tokens", 0) for s in ss) / len(ss),
                "cut": sum(is_cut(s.finish_reason) for s in ss) / len(ss),
            }
        )
    return {
        "prompts": len(prompts),
        "baseline": cfg.baseline,
        "kl_reference": cfg.kl_reference,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
        "confidence": cfg.confidence,
        "policies": rows,
    }
