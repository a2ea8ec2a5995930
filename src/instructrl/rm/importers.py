"""Preference data people already have, as :class:`~instructrl.records.Ranking` records.

Formats (``detect_format`` picks one from the file; ``fmt`` forces it):

* ``hh``: Anthropic HH-RLHF lines ``{"chosen": transcript, "rejected": transcript}``, transcripts made
  of ``\\n\\nHuman: …`` / ``\\n\\nAssistant: …`` turns (``.jsonl`` or ``.jsonl.gz``). The turns both
  transcripts share form the prompt; what follows the first differing assistant turn is the response.
* ``oasst``: OpenAssistant message trees (one tree per line, ``{"message_tree_id", "prompt": {…,
  "replies": […]}}``): the ranked sibling assistant replies to a user turn form one ranking of K,
  the conversation above them is the prompt (OASST rank 0 is best; it becomes rank 1).
* ``ranking`` / ``comparison``: instructrl's own JSONL records.
* ``hf``: a Hugging Face dataset saved with ``save_to_disk`` (a Dataset or a DatasetDict) with
  ``chosen``/``rejected`` columns, either with a ``prompt`` column (text or chat messages) or as
  whole transcripts (HH-style text, or chat-message lists).

A malformed record raises :class:`~instructrl.records.RecordError` naming file, line and field.
A well-formed record that yields no comparison (identical responses, an empty response, a pair whose
transcripts diverge before the last turn, an unranked OASST group…) is skipped and counted by reason
in :attr:`ImportResult.skipped`; callers log the counts.

Every ranking carries ``meta["dataset"]`` (where it came from, e.g. ``helpful-base_test``) and
``meta["conversation"]`` (the key :func:`instructrl.rm.data.split_by_conversation` splits on: the
first user turn for HH, the tree id for OASST).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructrl.records import (
    Comparison,
    Ranking,
    RecordError,
    check_messages,
    from_dict,
    iter_json_lines,
    prompt_text,
)

log = logging.getLogger(__name__)

FORMATS = ("auto", "hh", "oasst", "ranking", "comparison", "hf")


@dataclass
class ImportResult:
    rankings: list[Ranking] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    source: str = ""
    fmt: str = ""

    def summary(self) -> str:
        text = f"{self.source} ({self.fmt}): {len(self.rankings)} rankings"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()) if n)
        return text


def dataset_name(path: str | Path) -> str:
    """``.../helpful-base_test.jsonl.gz`` -> ``helpful-base_test``."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _key(text: str) -> str:
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:16]


def conversation_key(r: Ranking) -> str:
    """The split key of a ranking: ``meta['conversation']`` if set, else its first user turn."""
    if r.meta.get("conversation"):
        return str(r.meta["conversation"])
    first = (
        r.prompt
        if isinstance(r.prompt, str)
        else next((m["content"] for m in r.prompt if m["role"] == "user"), prompt_text(r.prompt))
    )
    return _key(first)


# --------------------------------------------------------------------------- detection


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        if any((p / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf"
        raise RecordError(str(p), None, "a directory that is not a Hugging Face dataset saved with save_to_disk")
    for lineno, obj in iter_json_lines(p):
        if not isinstance(obj, dict):
            raise RecordError(f"{p}:{lineno}", None, f"expected a JSON object, got {type(obj).__name__}")
        if "message_tree_id" in obj or (isinstance(obj.get("prompt"), dict) and "replies" in obj["prompt"]):
            return "oasst"
        if "responses" in obj and "ranks" in obj:
            return "ranking"
        if "chosen" in obj and "rejected" in obj:
            return "comparison" if "prompt" in obj else "hh"
        raise RecordError(
            f"{p}:{lineno}",
            None,
            "cannot tell the format: expected HH-RLHF (chosen, rejected), "
            "an OASST tree (message_tree_id, prompt), a Ranking (prompt, responses, ranks) or a "
            f"Comparison (prompt, chosen, rejected); found keys {sorted(obj)}",
        )
    raise RecordError(str(p), None, "empty file")


def load_rankings(path: str | Path, fmt: str = "auto") -> ImportResult:
    """Read ``path`` in format ``fmt`` ('auto' detects it) into rankings, with skip counts."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown preference data format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise RecordError(str(path), None, "file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader = {
        "hh": import_hh,
        "oasst": import_oasst,
        "ranking": import_records,
        "comparison": import_records,
        "hf": import_hf_dataset,
    }[fmt]
    result = reader(path)
    result.fmt = fmt
    return result


# --------------------------------------------------------------------------- transcripts

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[dict]:
    """``\\n\\nHuman: a\\n\\nAssistant: b`` -> chat messages (content stripped). Raises ValueError."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("expected a transcript of '\\n\\nHuman: ' / '\\n\\nAssistant: ' turns")
    return [{"role": _ROLE[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def split_transcripts(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str] | str:
    """(prompt messages, chosen response, rejected response) of two conversations that share their
    turns up to a user turn and then each continue with an assistant turn; or a skip reason.

    A response is the text of the final assistant turn(s); consecutive assistant turns at the end
    are joined with a blank line. A continuation that contains a further user turn is not a response
    to the shared prompt and is skipped.
    """
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) == len(rejected):
        return "identical responses"
    # back off to the last user turn of the shared part
    while n > 0 and chosen[n - 1]["role"] != "user":
        n -= 1
    if n == 0:
        return "no shared user turn before the responses"
    tails = (chosen[n:], rejected[n:])
    if any(not t or any(m["role"] != "assistant" for m in t) for t in tails):
        return "response continues with a user turn"
    responses = ["\n\n".join(m["content"] for m in t).strip() for t in tails]
    if not all(responses):
        return "empty response"
    if responses[0] == responses[1]:
        return "identical responses"
    return [dict(m) for m in chosen[:n]], responses[0], responses[1]


def _as_prompt(messages: list[dict]) -> Any:
    """A single user turn becomes plain text; a longer conversation stays a list of messages."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def _pair_ranking(prompt: Any, chosen: str, rejected: str, *, rid: str, dataset: str, conversation: str) -> Ranking:
    return Ranking(
        prompt=prompt,
        responses=[chosen, rejected],
        ranks=[1, 2],
        id=rid,
        meta={"dataset": dataset, "conversation": conversation},
    )


def _first_user(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def _objects(path: str | Path):
    """``(where, line, object)`` for each line of a JSONL file whose lines must be JSON objects."""
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise RecordError(where, None, f"expected a JSON object, got {type(obj).__name__}")
        yield where, lineno, obj


# --------------------------------------------------------------------------- HH-RLHF


def import_hh(path: str | Path) -> ImportResult:
    res = ImportResult(source=str(path))
    name = dataset_name(path)
    for where, lineno, obj in _objects(path):
        convs = []
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise RecordError(where, key, "missing")
            if not isinstance(obj[key], str):
                raise RecordError(where, key, f"expected a transcript string, got {type(obj[key]).__name__}")
            try:
                convs.append(parse_hh_transcript(obj[key]))
            except ValueError as e:
                raise RecordError(where, key, str(e)) from None
        out = split_transcripts(*convs)
        if isinstance(out, str):
            res.skipped[out] += 1
            continue
        prompt, chosen, rejected = out
        res.rankings.append(
            _pair_ranking(
                _as_prompt(prompt),
                chosen,
                rejected,
                rid=f"{name}:{lineno}",
                dataset=name,
                conversation=f"hh:{_key(_first_user(prompt))}",
            )
        )
    return res


# --------------------------------------------------------------------------- OpenAssistant trees


def _check_message(m: Any, where: str, fld: str) -> None:
    if not isinstance(m, dict):
        raise RecordError(where, fld, "expected a message object")
    if not isinstance(m.get("text"), str):
        raise RecordError(where, f"{fld}.text", "missing or not a string")
    if m.get("role") not in ("prompter", "assistant"):
        raise RecordError(where, f"{fld}.role", f"expected 'prompter' or 'assistant', got {m.get('role')!r}")
    if not isinstance(m.get("replies", []), list):
        raise RecordError(where, f"{fld}.replies", "expected a list")
    rank = m.get("rank")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 0):
        raise RecordError(where, f"{fld}.rank", f"expected an integer >= 0 or null, got {rank!r}")


def import_oasst(path: str | Path) -> ImportResult:
    res = ImportResult(source=str(path))
    name = dataset_name(path)
    for where, lineno, obj in _objects(path):
        if "prompt" not in obj:
            raise RecordError(where, "prompt", "missing (expected an OpenAssistant message tree)")
        tree_id = (
            str(obj.get("message_tree_id") or obj["prompt"].get("message_id") or f"{name}:{lineno}")
            if isinstance(obj["prompt"], dict)
            else ""
        )
        _check_message(obj["prompt"], where, "prompt")
        stack: list[tuple[dict, list[dict], str]] = [(obj["prompt"], [], "prompt")]
        while stack:
            msg, above, fld = stack.pop()
            role = "user" if msg["role"] == "prompter" else "assistant"
            path_msgs = above + [{"role": role, "content": msg["text"]}]
            replies = msg.get("replies", [])
            for i, r in enumerate(replies):
                _check_message(r, where, f"{fld}.replies[{i}]")
            if len(replies) >= 2:
                _oasst_group(res, msg, replies, path_msgs, name=name, tree_id=tree_id)
            for i, r in enumerate(replies):
                if not r.get("deleted"):
                    stack.append((r, path_msgs, f"{fld}.replies[{i}]"))
    return res


def _count(res: ImportResult, reason: str, n: int) -> None:
    if n:
        res.skipped[reason] += n


def _oasst_group(
    res: ImportResult, parent: dict, replies: list[dict], prompt: list[dict], *, name: str, tree_id: str
) -> None:
    if parent["role"] != "prompter":
        res.skipped["ranked user replies (not assistant responses)"] += 1
        return
    live = [r for r in replies if not r.get("deleted") and r["text"].strip()]
    _count(res, "deleted replies", sum(1 for r in replies if r.get("deleted")))
    _count(res, "empty replies", sum(1 for r in replies if not r.get("deleted") and not r["text"].strip()))
    ranked = [r for r in live if r.get("rank") is not None]
    if len(ranked) < 2:
        res.skipped["sibling groups with fewer than 2 ranked replies"] += 1
        return
    _count(res, "unranked replies beside ranked ones", len(live) - len(ranked))
    if len({r["rank"] for r in ranked}) == 1:
        res.skipped["sibling groups where every reply ties"] += 1
        return
    res.rankings.append(
        Ranking(
            prompt=_as_prompt(prompt),
            responses=[r["text"] for r in ranked],
            ranks=[r["rank"] + 1 for r in ranked],
            id=str(parent.get("message_id", "")),
            meta={"dataset": name, "conversation": f"oasst:{tree_id}", "lang": parent.get("lang")},
        )
    )


# --------------------------------------------------------------------------- instructrl records


def import_records(path: str | Path) -> ImportResult:
    """Ranking and Comparison JSONL (both may appear in one file), validated strictly."""
    res = ImportResult(source=str(path))
    name = dataset_name(path)
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        if isinstance(obj, dict) and "responses" in obj:
            r = from_dict(Ranking, obj, where)
        else:
            r = from_dict(Comparison, obj, where).to_ranking()
            if r.responses[0] == r.responses[1]:
                res.skipped["identical responses"] += 1
                continue
        if len(set(r.ranks)) == 1:
            res.skipped["rankings where every response ties"] += 1
            continue
        r.meta = {"dataset": name, **r.meta}
        r.meta.setdefault("conversation", conversation_key(r))
        res.rankings.append(r)
    return res


# --------------------------------------------------------------------------- Hugging Face datasets


def import_hf_dataset(path: str | Path) -> ImportResult:
    """A ``save_to_disk`` Dataset or DatasetDict (every split) with ``chosen``/``rejected`` columns."""
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise ImportError("reading a Hugging Face dataset needs the 'datasets' package: pip install datasets") from None
    res = ImportResult(source=str(path))
    loaded = load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    base = Path(path).name
    for split, ds in splits:
        name = f"{base}/{split}" if split else base
        missing = [c for c in ("chosen", "rejected") if c not in ds.column_names]
        if missing:
            raise RecordError(
                f"{path}" + (f" (split {split})" if split else ""),
                missing[0],
                f"missing column; the dataset has {ds.column_names}",
            )
        for i, row in enumerate(ds):
            _hf_row(res, row, where=f"{path}:{name}[{i}]", rid=f"{name}:{i}", name=name)
    return res


def _hf_side(value: Any, where: str, fld: str) -> list[dict] | str:
    if isinstance(value, str):
        return value
    try:
        return check_messages(value, fld)
    except ValueError as e:
        raise RecordError(where, fld, f"expected text or a list of chat messages ({e})") from None


def _hf_row(res: ImportResult, row: dict, *, where: str, rid: str, name: str) -> None:
    chosen = _hf_side(row["chosen"], where, "chosen")
    rejected = _hf_side(row["rejected"], where, "rejected")
    if type(chosen) is not type(rejected):
        raise RecordError(where, "rejected", "chosen and rejected must both be text or both be chat messages")
    prompt = row.get("prompt")
    if prompt is not None:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise RecordError(where, "prompt", "empty prompt")
            pmsgs: list[dict] = [{"role": "user", "content": prompt}]
        else:
            pmsgs = _hf_side(prompt, where, "prompt")  # type: ignore[assignment]
        if isinstance(chosen, list):  # conversational: the response is the assistant turn(s)
            out = split_transcripts(pmsgs + chosen, pmsgs + rejected)
        else:
            out = split_transcripts(
                pmsgs + [{"role": "assistant", "content": chosen.strip()}],
                pmsgs + [{"role": "assistant", "content": rejected.strip()}],
            )
    else:
        try:
            convs = [parse_hh_transcript(s) if isinstance(s, str) else s for s in (chosen, rejected)]
        except ValueError as e:
            raise RecordError(
                where, "chosen", f"without a prompt column, chosen/rejected must be whole transcripts: {e}"
            ) from None
        out = split_transcripts(*convs)
    if isinstance(out, str):
        res.skipped[out] += 1
        return
    pm, c, r = out
    res.rankings.append(
        _pair_ranking(_as_prompt(pm), c, r, rid=rid, dataset=name, conversation=f"hf:{_key(_first_user(pm))}")
    )


def summarize_skips(results: list[ImportResult]) -> dict[str, int]:
    total: Counter = Counter()
    for r in results:
        total.update(r.skipped)
    return dict(total)
