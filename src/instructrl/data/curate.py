"""``instructrl curate``: raw prompt logs -> ``train/valid/test.jsonl`` + a statistics report.

Two streaming passes and one decision step in between, so memory stays bounded:

1. **Read and clean** every input record in batches: map its fields onto a Prompt, drop bad or
   out-of-range records, find personal data (mask or drop), identify the language (langid, batched),
   tag the category, count tokens. The cleaned record goes to a spill file on disk; only compact
   keys stay in memory (64-bit hashes of the normalized text, of its first N characters, of the
   user and the split group; time, token counts, codes): about 70 bytes a prompt.
2. **Decide** on those arrays (:mod:`instructrl.data.select`): exact duplicates, then shared
   prefixes (the earliest copy survives), the per-user cap, and the split of every user.
3. **Write** the spill file's survivors into their split files (atomically), then re-read the
   written files and prove that no user (or organization) appears in two splits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from array import array
from collections import Counter
from pathlib import Path

import numpy as np

from instructrl.config import save_config
from instructrl.data import select
from instructrl.data.config import CurateConfig, InputConfig
from instructrl.data.readers import iter_raw, to_prompt
from instructrl.records import CATEGORIES, SOURCES, Prompt, RecordError, atomic_write_text, prompt_text, to_dict

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

    def __init__(self, spec: str):
        self.spec = spec
        if spec == "whitespace":
            self._tok = None
            return
        import tokenizers

        if spec == "default":
            from instructrl.models.default import default_model_dir

            path = Path(default_model_dir()) / "tokenizer.json"
        else:
            base = Path(spec).expanduser()
            path = base if base.is_file() else base / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"stats.tokenizer: no tokenizer.json at {path} (use 'default', a model directory or 'whitespace')")
        self._tok = tokenizers.Tokenizer.from_file(str(path))

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
        self.tokens = array("l")
        self.ref_tokens = array("l")  # -1: no demonstration
        self.lang = array("H")
        self.category = array("B")
        self.source = array("B")
        self.input = array("H")

    def __len__(self) -> int:
        return len(self.exact)

    def np(self, name: str) -> np.ndarray:
        arr = getattr(self, name)
        dtype = {"Q": np.uint64, "B": np.uint8, "d": np.float64, "l": np.int64, "H": np.uint16}[arr.typecode]
        return np.frombuffer(arr, dtype=dtype) if len(arr) else np.zeros(0, dtype=dtype)


class Reader:
    """Pass 1: stream the inputs, clean each record, spill it, keep its compact keys."""

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
        self._batch: list[tuple[Prompt, float, int]] = []
        self._spill = open(spill_path, "w", encoding="utf-8")
        self.detector = None
        if cfg.pii.action != "off":
            from instructrl.data.pii import PIIDetector

            p = cfg.pii
            self.detector = PIIDetector(p.entities, p.phone_regions, p.address_countries, p.national_ids, p.ip_public_only, p.mask_format)
        self.langid = None
        if cfg.lang.detect:
            from instructrl.data.langid_batch import get_identifier

            self.langid = get_identifier(tuple(cfg.lang.languages), cfg.lang.max_bytes)
        self.count_tokens = TokenCounter(cfg.stats.tokenizer)
        self._tag = None
        if cfg.category.tag:
            from instructrl.data.category import tag

            self._tag = tag
        self._source_idx = {s: i for i, s in enumerate(SOURCES)}
        self._cat_idx = {c: i for i, c in enumerate(CATEGORIES)}
        self._keep_langs = set(cfg.lang.keep)

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

    def read_input(self, inp: InputConfig, name: str, input_idx: int, progress) -> None:
        fm = inp.fields
        bs = self.cfg.batch_size
        try:
            for where, index, obj in iter_raw(inp):
                self.read[name] += 1
                if isinstance(obj, RecordError):
                    self._bad_record(obj, name, fm.user_id)
                    continue
                try:
                    p, ts = to_prompt(obj, where, index, name, inp.source, fm)
                except RecordError as e:
                    self._bad_record(e, name, fm.user_id)
                    continue
                self._batch.append((p, ts, input_idx))
                if len(self._batch) >= bs:
                    self._flush()
                    progress.update(bs)
        except RecordError as e:  # the file itself: missing, unreadable, wrong format
            self._bad_record(e, name, None, reason="unreadable file")
        n = len(self._batch)
        self._flush()
        progress.update(n)

    def close(self) -> None:
        self._flush()
        self._spill.close()

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

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        cfg = self.cfg
        lo, hi = cfg.filters.min_chars, cfg.filters.max_chars
        kept: list[tuple[Prompt, float, int, str]] = []
        for p, ts, idx in batch:
            text = prompt_text(p.prompt)
            n = len(text.strip())
            if n < lo:
                self.dropped["too_short"] += 1
                continue
            if len(text) > hi:
                self.dropped["too_long"] += 1
                continue
            if self.detector is not None:
                ents = self._scrub(p)
                if ents:
                    for e in ents:
                        self.pii_records[e] += 1
                    if cfg.pii.action == "drop":
                        self.pii_dropped_records += 1
                        self.dropped["pii"] += 1
                        continue
                    self.pii_masked_records += 1
                    text = prompt_text(p.prompt)
            kept.append((p, ts, idx, text))
        if self.langid is not None and kept:
            for (p, _, _, _), lang in zip(kept, self.langid.classify([k[3] for k in kept])):
                p.lang = lang
        if self._keep_langs:
            before = len(kept)
            kept = [k for k in kept if k[0].lang in self._keep_langs]
            self.dropped["language"] += before - len(kept)
        if not kept:
            return
        tokens = self.count_tokens([k[3] for k in kept])
        refs = [(i, k[0].reference) for i, k in enumerate(kept) if k[0].reference]
        ref_tokens = [-1] * len(kept)
        for (i, _), n in zip(refs, self.count_tokens([r for _, r in refs])):
            ref_tokens[i] = n
        self._append(kept, tokens, ref_tokens)

    def _append(self, kept, tokens, ref_tokens) -> None:
        c = self.cols
        hash64 = select.hash64
        n_prefix = self.cfg.dedup.prefix_chars
        tag = self._tag
        write = self._spill.write
        dumps = json.dumps
        for (p, ts, idx, text), ntok, nref in zip(kept, tokens, ref_tokens):
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
            c.user.append(hash64(p.user_id))
            c.org.append(hash64(p.org_id) if p.org_id else 0)
            c.ts.append(ts)
            c.tokens.append(ntok)
            c.ref_tokens.append(nref)
            lang = p.lang or "unknown"
            li = self._lang_idx.get(lang)
            if li is None:
                li = self._lang_idx[lang] = len(self.langs)
                self.langs.append(lang)
            c.lang.append(li)
            c.category.append(self._cat_idx.get(p.category or "other", len(CATEGORIES) - 1))
            c.source.append(self._source_idx[p.source])
            c.input.append(idx)
            write(dumps(to_dict(p), ensure_ascii=False) + "\n")


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
                rec = json.loads(line)
                if rec.get("split") != name:
                    raise CurationError(f"{path}:{lineno}: field 'split': {rec.get('split')!r} in the {name} file")
                u.append(select.hash64(rec["user_id"]))
                if rec.get("org_id"):
                    o.append(select.hash64(rec["org_id"]))
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
    work = Path(tempfile.mkdtemp(prefix=".curate-", dir=out))
    try:
        spill = work / "spill.jsonl"
        reader = Reader(cfg, spill)
        with tqdm(desc="curate", unit=" prompts", disable=not cfg.run.progress) as bar:
            for i, (inp, name) in enumerate(zip(cfg.inputs, names)):
                reader.read_input(inp, name, i, bar)
        reader.close()
        status, split = decide(cfg, reader.cols)
        write_splits(out, spill, split, cfg.run.progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check = check_splits(out, cfg.split.by)
    report = build_report(cfg, names, reader, status, split, check)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    from instructrl.utils.metrics import MetricsLogger

    MetricsLogger(out).log(0, {f"curate/{k}": v for k, v in report["summary"].items()})
    log.info("curate: %s", ", ".join(f"{k}={v}" for k, v in report["summary"].items()))
    return out
