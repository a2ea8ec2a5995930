"""Cleaning one batch of raw records: map fields onto a Prompt, length filters, personal data,
language, category, token counts, and the compact keys of what survives."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from instructrl.data import select
from instructrl.data.config import CurateConfig
from instructrl.data.curate.columns import Batch
from instructrl.data.curate.tokens import TokenCounter
from instructrl.data.pii import PIIDetector
from instructrl.data.readers import to_prompt, utf8_error
from instructrl.records import CATEGORIES, SOURCES, Prompt, RecordError, prompt_text
from instructrl.text.category import tag
from instructrl.text.language import get_identifier


def normalize(text: str) -> str:
    """The text dedup compares: lower-cased, whitespace runs collapsed to one space, stripped."""
    return " ".join(text.lower().split())


_PROMPT_FIELDS = [f.name for f in dataclasses.fields(Prompt)]


class Processor:
    """Cleans batches of raw records (map fields, filters, PII, langid, category, tokens, keys).

    One lives in the main process (``workers: 0``) or in each worker process."""

    def __init__(self, cfg: CurateConfig, tokenizer: str):
        self.cfg = cfg
        self.detector = None
        if cfg.pii.action != "off":
            p = cfg.pii
            self.detector = PIIDetector(
                p.entities, p.phone_regions, p.address_countries, p.national_ids, p.ip_public_only, p.mask_format
            )
        self.langid = None
        if cfg.lang.detect:
            self.langid = get_identifier(tuple(cfg.lang.languages), cfg.lang.max_bytes)
        self.count_tokens = TokenCounter(tokenizer)
        self._tag = tag if cfg.category.tag else None
        self._source_idx = {s: i for i, s in enumerate(SOURCES)}
        self._cat_idx = {c: i for i, c in enumerate(CATEGORIES)}
        self._keep_langs = set(cfg.lang.keep)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._id_hashes: dict[str, int] = {}  # user and org ids repeat: hash each once

    def _scrub(self, p: Prompt) -> set[str]:
        """Find personal data in the prompt and its demonstration; mask it in place if configured."""
        det = self.detector
        masking = self.cfg.pii.action == "mask"
        found: set[str] = set()
        if isinstance(p.prompt, str):
            f = det.find(p.prompt)
            if f:
                found.update(x.entity for x in f)
                if masking:
                    p.prompt = det.mask(p.prompt, f)
        else:
            for m in p.prompt:
                f = det.find(m["content"])
                if f:
                    found.update(x.entity for x in f)
                    if masking:
                        m["content"] = det.mask(m["content"], f)
        if p.reference:
            f = det.find(p.reference)
            if f:
                found.update(x.entity for x in f)
                if masking:
                    p.reference = det.mask(p.reference, f)
        return found

    def process(self, items: list, raw: bool, input_idx: int, name: str, source: str, fm: Any) -> Batch:
        """``items``: ``(where, index, obj)``; with ``raw`` the objects are JSON lines still to parse."""
        cfg = self.cfg
        out = Batch(len(items))
        lo, hi = cfg.filters.min_chars, cfg.filters.max_chars
        kept: list[tuple[Prompt, float, str]] = []
        loads = json.loads
        for where, index, obj in items:
            if raw:
                try:
                    obj = loads(obj)
                except json.JSONDecodeError as e:
                    out.bad.append((where, None, f"not valid JSON ({e.msg}, column {e.colno})"))
                    continue
                except UnicodeDecodeError as e:
                    bad = utf8_error(where, e)
                    out.bad.append((bad.where, None, bad.reason))
                    continue
            elif isinstance(obj, RecordError):
                out.bad.append((obj.where, obj.field, obj.reason))
                continue
            try:
                p, ts = to_prompt(obj, where, index, name, source, fm)
            except RecordError as e:
                out.bad.append((e.where, e.field, e.reason))
                continue
            text = prompt_text(p.prompt)
            if len(text.strip()) < lo:
                out.dropped["too_short"] += 1
                continue
            if len(text) > hi:
                out.dropped["too_long"] += 1
                continue
            if self.detector is not None:
                ents = self._scrub(p)
                if ents:
                    for e in ents:
                        out.pii_records[e] += 1
                    if cfg.pii.action == "drop":
                        out.pii_dropped += 1
                        out.dropped["pii"] += 1
                        continue
                    out.pii_masked += 1
                    text = prompt_text(p.prompt)
            kept.append((p, ts, text))
        if not kept:
            return out
        # tokenizers releases the GIL: count tokens on a second thread while this one runs langid,
        # tagging, hashing and spilling the same batch
        rate = cfg.stats.token_sample
        if rate >= 1.0:
            sampled = None
        else:  # a deterministic sample: the same prompts are counted on every run
            limit = int(rate * 2**64)
            sampled = [select.hash64(k[2]) < limit for k in kept]
        counted = self._pool.submit(self._count, [k[2] for k in kept], [k[0].reference for k in kept], sampled)
        if self.langid is not None:
            for (p, _, _), lang in zip(kept, self.langid.classify([k[2] for k in kept])):
                p.lang = lang
        keep_mask = None
        if self._keep_langs:
            keep_mask = [k[0].lang in self._keep_langs for k in kept]
            out.dropped["language"] += keep_mask.count(False)
            kept = [k for k, m in zip(kept, keep_mask) if m]
        self._append(out, kept, input_idx)
        tokens, ref_tokens = counted.result()
        if keep_mask is not None:
            tokens = [t for t, m in zip(tokens, keep_mask) if m]
            ref_tokens = [t for t, m in zip(ref_tokens, keep_mask) if m]
        out.cols.tokens.extend(tokens)
        out.cols.ref_tokens.extend(ref_tokens)
        return out

    def _count(
        self, texts: list[str], refs: list[str | None], sampled: list[bool] | None
    ) -> tuple[list[int], list[int]]:
        """Token counts of prompts and demonstrations: -1 no demonstration, -2 not in the sample."""
        if sampled is None:
            tokens = self.count_tokens(texts)
        else:
            tokens = [-2] * len(texts)
            chosen = [i for i, m in enumerate(sampled) if m]
            for i, n in zip(chosen, self.count_tokens([texts[i] for i in chosen])):
                tokens[i] = n
        ref_tokens = [-1 if not r else -2 for r in refs]
        present = [i for i, r in enumerate(refs) if r and (sampled is None or sampled[i])]
        for i, n in zip(present, self.count_tokens([refs[i] for i in present])):
            ref_tokens[i] = n
        return tokens, ref_tokens

    def _append(self, out: Batch, kept: list, input_idx: int) -> None:
        c = out.cols
        hash64 = select.hash64
        n_prefix = self.cfg.dedup.prefix_chars
        tag = self._tag
        spill = out.spill.append
        langs = out.langs.append
        dumps = json.dumps
        cat_idx, other = self._cat_idx, len(CATEGORIES) - 1
        ids = self._id_hashes
        if len(ids) > 200_000:  # bounds the memo (about 27 MB at 200,000 ids); clearing costs only re-hashing
            ids.clear()
        for p, ts, text in kept:
            if p.category is None and tag is not None:
                p.category = tag(p.prompt, p.type)
            norm = normalize(text)
            c.exact.append(hash64(norm))
            if n_prefix and len(norm) >= n_prefix:
                c.prefix.append(hash64(norm[:n_prefix]))
                c.has_prefix.append(1)
            else:
                c.prefix.append(0)
                c.has_prefix.append(0)
            h = ids.get(p.user_id)
            if h is None:
                h = ids[p.user_id] = hash64(p.user_id)
            c.user.append(h)
            if p.org_id:
                h = ids.get(p.org_id)
                if h is None:
                    h = ids[p.org_id] = hash64(p.org_id)
                c.org.append(h)
            else:
                c.org.append(0)
            c.ts.append(ts)
            langs(p.lang or "unknown")
            c.category.append(cat_idx.get(p.category or "other", other))
            c.source.append(self._source_idx[p.source])
            c.input.append(input_idx)
            # records.to_dict, inlined: the fields that are set, in Prompt's order
            d = {k: v for k in _PROMPT_FIELDS if (v := getattr(p, k)) is not None}
            if not p.meta:
                del d["meta"]
            spill(dumps(d, ensure_ascii=False) + "\n")
