"""Pass 2: copy the spill file's survivors into ``train/valid/test.jsonl`` (atomically), then
re-read the written files and prove that no user (or organization) appears in two splits."""

from __future__ import annotations

import json
import os
import re
import tempfile
from array import array
from pathlib import Path

import numpy as np
from tqdm import tqdm

from instructrl.data import select


class CurationError(RuntimeError):
    """The curated output breaks a guarantee (e.g. a user in two splits)."""


def write_splits(out: Path, spill: Path, split: np.ndarray, progress: bool) -> dict[str, Path]:
    """Copy the spill file's kept lines into ``train/valid/test.jsonl`` with their ``split`` set."""
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


_KEYS = {k: re.compile(r'(?:^\{|, )"' + k + r'": "((?:[^"\\]|\\.)*)"') for k in ("split", "user_id", "org_id")}


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
