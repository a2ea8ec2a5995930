"""``instructrl curate``: raw prompt logs -> ``train/valid/test.jsonl`` + a statistics report.

Two streaming passes and one decision step in between; texts are never held in memory, only
about 70 bytes of keys per prompt:

1. **Read and clean** every input record in batches: map its fields onto a Prompt, drop bad or
   out-of-range records, find personal data (mask or drop), identify the language (langid, batched),
   tag the category, count tokens. The cleaned record goes to a spill file on disk; only compact
   keys stay in memory (64-bit hashes of the normalized text, of its first N characters, of the
   user and the split group; time, token counts, codes): about 70 bytes a prompt.
2. **Decide** on those arrays (:mod:`instructrl.data.select`): exact duplicates, then shared
   prefixes (the earliest copy survives), the per-user cap, and the split of every user. Texts are
   compared by 64-bit hashes: two different prompts collide with probability ~n²/2⁶⁵ (3e-8 for a
   million prompts), which would drop one of them as a duplicate.
3. **Write** the spill file's survivors into their split files (atomically), then re-read the
   written files and prove that no user (or organization) appears in two splits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
from array import array
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from instructrl.config import save_config
from instructrl.data import select
from instructrl.data.config import CurateConfig, InputConfig
from instructrl.data.readers import input_format, iter_raw, to_prompt
from instructrl.records import CATEGORIES, SOURCES, Prompt, RecordError, atomic_write_text, prompt_text

log = logging.getLogger(__name__)

#: status of a record that passed the per-record filters
KEPT, EXACT_DUP, PREFIX_DUP, USER_CAP = 0, 1, 2, 3
STATUS_NAMES = {EXACT_DUP: "exact_duplicate", PREFIX_DUP: "shared_prefix", USER_CAP: "user_cap"}


class CurationError(RuntimeError):
    """The curated output breaks a guarantee (e.g. a user in two splits)."""


def normalize(text: str) -> str:
    """The text dedup compares: lower-cased, whitespace runs collapsed to one space, stripped."""
    return " ".join(text.lower().split())


class TokenCounter:
    """Token counts for the length tables: a tokenizer.json through ``tokenizers``, or words."""

    @staticmethod
    def resolve(spec: str) -> str:
        """'whitespace', or the path of a tokenizer.json for 'default' or a model directory."""
        if spec == "whitespace":
            return spec
        if spec == "default":
            from instructrl.models.default import default_model_dir

            path = Path(default_model_dir()) / "tokenizer.json"
        else:
            base = Path(spec).expanduser()
            path = base if base.is_file() else base / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"stats.tokenizer: no tokenizer.json at {path} (use 'default', a model directory or 'whitespace')")
        return str(path)

    def __init__(self, spec: str):
        path = self.resolve(spec)
        self.spec = spec
        if path == "whitespace":
            self._tok = None
            return
        import tokenizers

        self._tok = tokenizers.Tokenizer.from_file(path)

    def __call__(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._tok is None:
            return [len(t.split()) for t in texts]
        return [len(e.ids) for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]


class Columns:
    """Compact per-record keys of the records that passed pass 1 (typed arrays, ~70 bytes each)."""

    def __init__(self) -> None:
        self.exact = array("Q")
        self.prefix = array("Q")
        self.has_prefix = array("B")
        self.user = array("Q")
        self.org = array("Q")  # 0: no organization
        self.ts = array("d")
        self.tokens = array("q")  # -2: not in the token-count sample
        self.ref_tokens = array("q")  # -1: no demonstration, -2: not in the sample
        self.lang = array("H")
        self.category = array("B")
        self.source = array("B")
        self.input = array("H")

    def __len__(self) -> int:
        return len(self.exact)

    def np(self, name: str) -> np.ndarray:
        arr = getattr(self, name)
        dtype = {"Q": np.uint64, "B": np.uint8, "d": np.float64, "q": np.int64, "H": np.uint16}[arr.typecode]
        return np.frombuffer(arr, dtype=dtype) if len(arr) else np.zeros(0, dtype=dtype)


class _UnreadableFile(Exception):
    def __init__(self, error: RecordError):
        super().__init__(str(error))
        self.error = error


_PROMPT_FIELDS = [f.name for f in dataclasses.fields(Prompt)]


class Batch:
    """What one process made of a batch of raw records: spill lines, compact keys, counts."""

    def __init__(self, n_in: int = 0) -> None:
        self.n_in = n_in
        self.spill: list[str] = []
        self.cols = Columns()
        self.langs: list[str] = []
        self.bad: list[tuple[str, str | None, str]] = []  # (where, field, reason) in input order
        self.dropped: Counter = Counter()
        self.pii_records: Counter = Counter()
        self.pii_masked = 0
        self.pii_dropped = 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["spill"] = "".join(self.spill)  # one string pickles much faster than many
        state["cols"] = {k: v for k, v in vars(self.cols).items()}
        return state

    def __setstate__(self, state: dict) -> None:
        cols = Columns()
        cols.__dict__.update(state.pop("cols"))
        state["spill"] = [state["spill"]]
        self.__dict__.update(state)
        self.cols = cols


class Processor:
    """Cleans batches of raw records (map fields, filters, PII, langid, category, tokens, keys).

    One lives in the main process (``workers: 0``) or in each worker process."""

    def __init__(self, cfg: CurateConfig, tokenizer: str):
        self.cfg = cfg
        self.detector = None
        if cfg.pii.action != "off":
            from instructrl.data.pii import PIIDetector

            p = cfg.pii
            self.detector = PIIDetector(p.entities, p.phone_regions, p.address_countries, p.national_ids, p.ip_public_only, p.mask_format)
        self.langid = None
        if cfg.lang.detect:
            from instructrl.data.langid_batch import get_identifier

            self.langid = get_identifier(tuple(cfg.lang.languages), cfg.lang.max_bytes)
        self.count_tokens = TokenCounter(tokenizer)
        self._tag = None
        if cfg.category.tag:
            from instructrl.data.category import tag

            self._tag = tag
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
                    out.bad.append((where, None, f"not valid JSON ({e.msg} at column {e.colno})"))
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

    def _count(self, texts: list[str], refs: list[str | None], sampled: list[bool] | None) -> tuple[list[int], list[int]]:
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
        if len(ids) > 200_000:
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


_WORKER: Processor | None = None


def _init_worker(cfg: CurateConfig, tokenizer: str) -> None:
    global _WORKER
    _WORKER = Processor(cfg, tokenizer)


def _work(args: tuple) -> Batch:
    return _WORKER.process(*args)


class Reader:
    """Pass 1: stream the inputs in batches, have them cleaned (here or by worker processes),
    write the cleaned records to the spill file and keep their compact keys."""

    def __init__(self, cfg: CurateConfig, spill_path: Path):
        self.cfg = cfg
        self.cols = Columns()
        self.langs: list[str] = []
        self._lang_idx: dict[str, int] = {}
        self.read: Counter = Counter()  # per input name
        self.bad: Counter = Counter()  # per (input name, reason)
        self.dropped: Counter = Counter()  # per-record filters
        self.pii_records: Counter = Counter()  # records with each entity (masked or dropped)
        self.pii_masked_records = 0
        self.pii_dropped_records = 0
        self.errors: list[str] = []
        self._spill = open(spill_path, "w", encoding="utf-8")
        tokenizer = TokenCounter.resolve(cfg.stats.tokenizer)
        self._pool = None
        self._local: Processor | None = None
        if cfg.workers > 0:
            import multiprocessing

            # spawn: workers start clean (no inherited threads or torch state) and load their own models
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, tokenizer))
        else:
            self._local = Processor(cfg, tokenizer)

    # ------------------------------------------------------------------ errors

    def _bad_record(self, err: RecordError, name: str, user_field: str | None, reason: str | None = None) -> None:
        if self.cfg.on_error == "stop":
            raise err
        if reason is not None:
            pass
        elif err.field is None:
            reason = "broken record"
        elif user_field is not None and err.field == user_field:
            reason = "missing user id"
        else:
            reason = f"bad field '{err.field}'"
        self.bad[(name, reason)] += 1
        if len(self.errors) < 20:
            self.errors.append(str(err))

    # ------------------------------------------------------------------ reading

    def _chunks(self, inp: InputConfig, name: str, input_idx: int, raw: bool, counter: list):
        bs = self.cfg.batch_size
        items: list = []
        failure = None
        try:
            for item in iter_raw(inp, raw=raw):
                items.append(item)
                if len(items) >= bs:
                    counter[0] += len(items)
                    yield (items, raw, input_idx, name, inp.source, inp.fields)
                    items = []
        except RecordError as e:  # the file itself: missing, unreadable, wrong format
            failure = e
        if items:  # what was read before a failure still counts
            counter[0] += len(items)
            yield (items, raw, input_idx, name, inp.source, inp.fields)
        if failure is not None:
            raise _UnreadableFile(failure)

    def read_input(self, inp: InputConfig, name: str, input_idx: int, progress) -> None:
        try:
            raw = Path(inp.path).exists() and input_format(inp) == "jsonl"
        except RecordError:
            raw = False  # iter_raw raises it again where it is counted (or stops the run)
        user_field = inp.fields.user_id
        counter = [0]
        failure = None
        pending: deque = deque()
        try:
            for chunk in self._chunks(inp, name, input_idx, raw, counter):
                if self._pool is None:
                    self._merge(self._local.process(*chunk), name, user_field, progress)
                    continue
                # a bounded window of batches in flight keeps memory flat however large the input
                pending.append(self._pool.apply_async(_work, (chunk,)))
                if len(pending) > 2 * self.cfg.workers:
                    self._merge(pending.popleft().get(), name, user_field, progress)
        except _UnreadableFile as e:
            failure = e.error
        while pending:
            self._merge(pending.popleft().get(), name, user_field, progress)
        self.read[name] += counter[0]
        if failure is not None:
            self._bad_record(failure, name, None, reason="unreadable file")

    def _merge(self, batch: Batch, name: str, user_field: str | None, progress) -> None:
        progress.update(batch.n_in)
        for where, field, reason in batch.bad:
            self._bad_record(RecordError(where, field, reason), name, user_field)
        self._spill.write("".join(batch.spill))
        for key, arr in vars(batch.cols).items():
            getattr(self.cols, key).extend(arr)
        idx = self._lang_idx
        for lang in batch.langs:
            li = idx.get(lang)
            if li is None:
                li = idx[lang] = len(self.langs)
                self.langs.append(lang)
            self.cols.lang.append(li)
        self.dropped.update(batch.dropped)
        self.pii_records.update(batch.pii_records)
        self.pii_masked_records += batch.pii_masked
        self.pii_dropped_records += batch.pii_dropped

    def close(self, terminate: bool = False) -> None:
        self._spill.close()
        if self._pool is not None:
            if terminate:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None


# --------------------------------------------------------------------------- decisions


def split_groups(user: np.ndarray, org: np.ndarray, by: str) -> np.ndarray:
    """The key each record is split by. ``user``: the user. ``org``: the connected component of
    users and organizations (users who share an organization, and organizations that share a
    user, stay together), so neither a user nor an organization can land in two splits."""
    if by == "user":
        return user
    users, u_idx = np.unique(user, return_inverse=True)
    has_org = org != 0
    orgs, o_idx = np.unique(org[has_org], return_inverse=True)
    parent = list(range(len(users) + len(orgs)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = np.unique(np.stack([u_idx[has_org], o_idx + len(users)], axis=1), axis=0) if has_org.any() else np.zeros((0, 2), int)
    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(len(users))], dtype=np.int64)
    # the component's key: the smallest user hash in it (stable, independent of input order)
    comp_key = np.full(len(parent), np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(comp_key, roots, users)
    return comp_key[roots][u_idx]


def decide(cfg: CurateConfig, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """``(status, split)`` per pass-1 record: status KEPT/EXACT_DUP/PREFIX_DUP/USER_CAP, split 0-2 or -1."""
    n = len(cols)
    exact = cols.np("exact")
    index = np.arange(n)
    if cfg.dedup.keep == "earliest":
        ts = cols.np("ts")
        ts = np.where(np.isnan(ts), np.inf, ts)
        order = np.lexsort((index, ts))
        preference = np.empty(n, dtype=np.int64)
        preference[order] = index
    else:
        preference = index
    status = np.zeros(n, dtype=np.uint8)
    alive = np.ones(n, dtype=bool)
    if cfg.dedup.exact:
        keep = select.first_per_key(exact, preference)
        status[~keep] = EXACT_DUP
        alive &= keep
    if cfg.dedup.prefix_chars:
        keep = select.first_per_key(cols.np("prefix"), preference, candidates=alive & (cols.np("has_prefix") == 1))
        status[alive & ~keep] = PREFIX_DUP
        alive &= keep
    user = cols.np("user")
    rank = select.mix64(exact, cfg.run.seed) if cfg.cap.keep == "random" else preference
    keep = select.cap_per_group(user, rank, cfg.cap.max_per_user, alive)
    status[alive & ~keep] = USER_CAP
    alive = keep
    split = np.full(n, -1, dtype=np.int8)
    if alive.any():
        groups = split_groups(user[alive], cols.np("org")[alive], cfg.split.by)
        uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        fr = (cfg.split.train, cfg.split.valid, cfg.split.test)
        split[alive] = select.assign_splits(uniq, sizes, fr, cfg.run.seed, cfg.split.method)[inverse]
    return status, split


# --------------------------------------------------------------------------- writing and checking


def write_splits(out: Path, spill: Path, split: np.ndarray, progress: bool) -> dict[str, Path]:
    """Copy the spill file's kept lines into ``train/valid/test.jsonl`` with their ``split`` set."""
    from tqdm import tqdm

    paths = {name: out / f"{name}.jsonl" for name in select.SPLITS}
    tmps, handles = {}, {}
    try:
        for name, path in paths.items():
            fd, tmps[name] = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".tmp")
            os.chmod(tmps[name], 0o644)
            handles[name] = os.fdopen(fd, "w", encoding="utf-8")
        tails = [f', "split": "{name}"}}\n' for name in select.SPLITS]
        files = [handles[name] for name in select.SPLITS]
        where = split.tolist()
        with open(spill, encoding="utf-8") as fh:
            for i, line in enumerate(tqdm(fh, total=len(where), desc="write", unit=" prompts", disable=not progress)):
                s = where[i]
                if s >= 0:
                    files[s].write(line[:-2] + tails[s])
        for name in select.SPLITS:
            handles[name].close()
            os.replace(tmps[name], paths[name])
    except BaseException:
        for name, tmp in tmps.items():
            handles.get(name) and handles[name].close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return paths


_KEYS = {k: re.compile(r'(?:^\{|, )"%s": "((?:[^"\\]|\\.)*)"' % k) for k in ("split", "user_id", "org_id")}


def _top_level(line: str, keys: tuple[str, ...]) -> list:
    """Top-level string fields of a JSON line as written by json.dumps (", " and ": " separators):
    a regular expression finds them several times faster than parsing the whole line. A key inside
    a string value cannot match (its quotes are escaped); anything unexpected falls back to JSON."""
    out = []
    for k in keys:
        m = _KEYS[k].search(line)
        if m is None:
            if f'"{k}": ' not in line:
                out.append(None)  # absent
                continue
            rec = json.loads(line)
            return [rec.get(k) if isinstance(rec.get(k), str) else None for k in keys]
        v = m.group(1)
        out.append(json.loads(f'"{v}"') if "\\" in v else v)
    return out


def check_splits(out: str | os.PathLike, by: str = "user") -> dict:
    """Re-read ``train/valid/test.jsonl`` and count prompts and the users (and organizations)
    shared between splits. Raises CurationError if a user (or, split by org, an organization)
    appears in two splits."""
    out = Path(out)
    users: dict[str, np.ndarray] = {}
    orgs: dict[str, np.ndarray] = {}
    prompts = {}
    for name in select.SPLITS:
        u, o = array("Q"), array("Q")
        path = out / f"{name}.jsonl"
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                split, user, org = _top_level(line, ("split", "user_id", "org_id"))
                if split != name:
                    raise CurationError(f"{path}:{lineno}: field 'split': {split!r} in the {name} file")
                if not user:
                    raise CurationError(f"{path}:{lineno}: field 'user_id': missing")
                u.append(select.hash64(user))
                if org:
                    o.append(select.hash64(org))
        prompts[name] = len(u)
        users[name] = np.frombuffer(u, dtype=np.uint64) if len(u) else np.zeros(0, np.uint64)
        orgs[name] = np.frombuffer(o, dtype=np.uint64) if len(o) else np.zeros(0, np.uint64)
    result = {
        "prompts": prompts,
        "users": {k: int(len(np.unique(v))) for k, v in users.items()},
        "users_shared": select.disjoint_violations(users),
        "orgs_shared": select.disjoint_violations(orgs),
    }
    bad = {k: v for k, v in result["users_shared"].items() if v}
    if by == "org":
        bad.update({f"org {k}": v for k, v in result["orgs_shared"].items() if v})
    result["ok"] = not bad
    if bad:
        raise CurationError(f"{out}: split by {by} is not disjoint: {bad} keys appear in two splits")
    return result


def _input_names(inputs: list[InputConfig]) -> list[str]:
    names, seen = [], Counter()
    for inp in inputs:
        base = inp.name or Path(inp.path).name.split(".")[0] or "input"
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}{seen[base]}")
    return names


def _check_dependencies(cfg: CurateConfig) -> None:
    needed = []
    if cfg.lang.detect:
        needed += ["langid", "scipy"]
    if cfg.pii.action != "off":
        needed += ["phonenumbers", "stdnum", "pyap"]
    missing = []
    for mod in needed:
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ImportError(f"curate needs {', '.join(missing)}: pip install 'instructrl[curate]'")


def run(cfg: CurateConfig) -> Path:
    from tqdm import tqdm

    from instructrl.data.stats import build_report, render_markdown

    if not cfg.inputs:
        raise ValueError("curate: no inputs; set inputs: [{path: ...}] in the config")
    _check_dependencies(cfg)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    names = _input_names(cfg.inputs)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    work = Path(tempfile.mkdtemp(prefix=".curate-", dir=out))
    try:
        spill = work / "spill.jsonl"
        reader = Reader(cfg, spill)
        phase("start")
        try:
            with tqdm(desc="curate", unit=" prompts", disable=not cfg.run.progress) as bar:
                for i, (inp, name) in enumerate(zip(cfg.inputs, names)):
                    reader.read_input(inp, name, i, bar)
        except BaseException:
            reader.close(terminate=True)
            raise
        reader.close()
        phase("read_and_clean")
        status, split = decide(cfg, reader.cols)
        phase("decide")
        write_splits(out, spill, split, cfg.run.progress)
        phase("write")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check = check_splits(out, cfg.split.by)
    phase("check")
    report = build_report(cfg, names, reader, status, split, check)
    phase("report")
    timings["cpu_this_process"] = round(time.process_time(), 2)
    report["seconds"] = timings
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    from instructrl.utils.metrics import MetricsLogger

    MetricsLogger(out).log(0, {f"curate/{k}": v for k, v in report["summary"].items()})
    log.info("curate: %s", ", ".join(f"{k}={v}" for k, v in report["summary"].items()))
    return out
