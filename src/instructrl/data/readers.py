"""Read raw prompt logs (JSONL, CSV, Parquet, a saved Hugging Face dataset) and map their fields
onto :class:`instructrl.records.Prompt`.

Readers stream: they yield one record at a time and never hold a file in memory. A record that
cannot be read comes out as a :class:`RecordError` (``file:line: field 'x': reason``) instead of
an object, so the caller decides whether to stop or to skip and count it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from instructrl.data.config import FieldMap, InputConfig
from instructrl.records import CATEGORIES, PROMPT_TYPES, SOURCES, Prompt, RecordError, check_messages

_MISSING = object()


def input_format(inp: InputConfig) -> str:
    if inp.format != "auto":
        return inp.format
    if "://" in inp.path:
        return "db"
    p = Path(inp.path)
    if p.is_dir():
        return "hf"
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if last in (".csv", ".tsv"):
        return "csv"
    if last in (".parquet", ".pq"):
        return "parquet"
    raise RecordError(
        str(p),
        None,
        f"cannot tell the format from the suffix '{last}'; set inputs[].format (jsonl, csv, parquet, hf)",
    )


def iter_raw(inp: InputConfig, raw: bool = False) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(where, index, obj)``: ``where`` is ``file:line`` (or ``file:row N``), ``index`` the
    1-based line/row number, ``obj`` a dict, a string, or a RecordError for an unreadable record.
    With ``raw`` a JSONL file yields each line's text unparsed (a worker process parses it)."""
    path = Path(inp.path)
    fmt = input_format(inp)
    if fmt == "db":
        yield from _iter_db(inp.path)
        return
    if not path.exists():
        raise RecordError(str(path), None, "file not found")
    if fmt == "jsonl":
        yield from (_iter_lines(path) if raw else _iter_jsonl(path))
    elif fmt == "csv":
        yield from _iter_csv(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path)
    else:
        yield from _iter_hf(path)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _open_bytes(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, as Windows editors write it


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line; a BOM before the first line is dropped."""
    try:
        with _open_bytes(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if lineno == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError) as e:
        raise RecordError(str(path), None, f"cannot read: {e}") from None


def utf8_error(where: str, e: UnicodeDecodeError) -> RecordError:
    return RecordError(
        where,
        None,
        f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at byte {e.start} of the line); save the file as UTF-8",
    )


def _iter_db(url: str) -> Iterator[tuple[str, int, Any]]:
    """The serving database's prompts that may train the next round (see :mod:`instructrl.web.prompts`)."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError

        from instructrl.web.db import Database
        from instructrl.web.prompts import training_prompts
    except ImportError:  # pragma: no cover - depends on the environment
        raise RecordError(
            url, None, "reading the serving database needs the web extra: pip install 'instructrl[web]'"
        ) from None
    try:
        label = make_url(url).render_as_string(hide_password=True)
    except Exception:
        raise RecordError(url, None, "not a database URL (e.g. sqlite:///runs/workbench/workbench.db)") from None
    if make_url(url).get_backend_name() == "sqlite" and not Path(make_url(url).database or "").exists():
        raise RecordError(label, None, "database file not found")
    db = Database(url)
    try:
        for n, p in enumerate(training_prompts(db), 1):
            obj = dataclasses.asdict(p)
            if isinstance(p.prompt, list):
                obj["messages"] = obj.pop("prompt")
            yield f"{label}:served_prompts id {p.meta['served_prompt_id']}", n, obj
    except SQLAlchemyError as e:
        raise RecordError(label, None, f"cannot read the prompt store: {str(e).splitlines()[0]}") from None
    finally:
        db.dispose()


def _iter_jsonl(path: Path) -> Iterator[tuple[str, int, Any]]:
    loads = json.loads
    for lineno, line in _lines(path):
        try:
            yield f"{path}:{lineno}", lineno, loads(line)
        except json.JSONDecodeError as e:
            yield (
                f"{path}:{lineno}",
                lineno,
                RecordError(f"{path}:{lineno}", None, f"not valid JSON ({e.msg}, column {e.colno})"),
            )
        except UnicodeDecodeError as e:
            yield f"{path}:{lineno}", lineno, utf8_error(f"{path}:{lineno}", e)


def _iter_lines(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """Unparsed lines (bytes: the worker that parses them also reports invalid UTF-8)."""
    for lineno, line in _lines(path):
        yield f"{path}:{lineno}", lineno, line


def _iter_csv(path: Path) -> Iterator[tuple[str, int, Any]]:
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    try:
        with _open_text(path) as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            for row in reader:
                lineno = reader.line_num
                yield f"{path}:{lineno}", lineno, {k: (v if v != "" else None) for k, v in row.items() if k is not None}
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise RecordError(str(path), None, f"cannot read: {e}") from None


def _iter_parquet(path: Path) -> Iterator[tuple[str, int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise RecordError(str(path), None, "reading Parquet needs pyarrow: pip install 'instructrl[curate]'") from None
    try:
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", row, obj
    except OSError as e:
        raise RecordError(str(path), None, f"cannot read Parquet: {e}") from None


def _iter_hf(path: Path) -> Iterator[tuple[str, int, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise RecordError(str(path), None, "reading a saved dataset needs datasets: pip install datasets") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise RecordError(str(path), None, f"not a dataset saved with save_to_disk: {e}") from None
    parts = list(ds.items()) if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    for split, part in parts:
        row = 0
        label = f"{path}[{split}]" if split else str(path)
        for batch in part.iter(batch_size=1024):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                row += 1
                yield f"{label}:row {row}", row, dict(zip(keys, values))


# --------------------------------------------------------------------------- field mapping


def get_path(obj: Any, path: str) -> Any:
    """``obj['a']['b'][0]`` for the dotted path ``a.b.0``; a missing step gives ``_MISSING``."""
    if "." not in path:
        return obj.get(path, _MISSING) if isinstance(obj, dict) else _MISSING
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def _value(obj: Any, path: str | None) -> Any:
    if path is None:
        return None
    v = get_path(obj, path)
    return None if v is _MISSING else v


def parse_timestamp(value: Any) -> tuple[str, float]:
    """(ISO string, Unix seconds) from ISO 8601 text or Unix seconds; naive times are UTC."""
    if isinstance(value, bool):
        raise ValueError(f"expected ISO 8601 text or Unix seconds, got {value!r}")
    if isinstance(value, (int, float)):
        t = dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
        return t.isoformat(), float(value)
    if isinstance(value, dt.datetime):
        t = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return t.isoformat(), t.timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            t = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"not ISO 8601 or Unix seconds: {value!r}") from None
            return parse_timestamp(seconds)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return value, t.timestamp()
    raise ValueError(f"expected ISO 8601 text or Unix seconds, got {type(value).__name__}")


def _as_id(value: Any, field: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(where, field, f"expected a string or integer id, got {type(value).__name__}")
    text = str(value).strip()
    return text or None


def _category(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = value.strip().lower().replace(" ", "_").replace("-", "_")
    key = {"qa": "open_qa", "open_qa": "open_qa", "closed_qa": "closed_qa", "brainstorm": "brainstorming"}.get(key, key)
    return key if key in CATEGORIES else None


def to_prompt(obj: Any, where: str, index: int, name: str, default_source: str, fm: FieldMap) -> tuple[Prompt, float]:
    """Map one raw record onto a validated Prompt; returns ``(prompt, unix_time or nan)``.

    Raises RecordError naming ``where`` and the offending field.
    """
    if isinstance(obj, str):  # a bare string is the prompt text; it has no user, so it is its own
        rid = f"{name}-{index}"
        return Prompt(prompt=obj, id=rid, user_id=f"anon:{rid}", source=default_source), float("nan")
    if not isinstance(obj, dict):
        raise RecordError(where, None, f"expected a JSON object or string, got {type(obj).__name__}")
    meta: dict = {}
    prompt: Any = None
    messages = _value(obj, fm.messages)
    if messages is not None:
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                raise RecordError(where, fm.messages, "expected a list of chat messages (or its JSON text)") from None
        try:
            check_messages(messages, fm.messages or "messages", final_role="user")
        except ValueError as e:
            raise RecordError(where, fm.messages, str(e).split(": ", 1)[-1]) from None
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        text = _value(obj, fm.text)
        if text is None:
            field = fm.text or fm.messages
            raise RecordError(
                where, field, "missing prompt text" + ("" if fm.messages is None else f" (and no '{fm.messages}')")
            )
        if not isinstance(text, str):
            raise RecordError(where, fm.text, f"expected a string, got {type(text).__name__}")
        extra = _value(obj, fm.input)
        if extra is not None:
            if not isinstance(extra, str):
                raise RecordError(where, fm.input, f"expected a string, got {type(extra).__name__}")
            if extra.strip():
                text = f"{text}\n\n{extra}"
        prompt = text
    rid = _as_id(_value(obj, fm.id), fm.id or "id", where) or f"{name}-{index}"
    if fm.user_id is None:
        user = f"anon:{rid}"
    else:
        user = _as_id(_value(obj, fm.user_id), fm.user_id, where)
        if user is None:
            raise RecordError(
                where, fm.user_id, "missing user id (set inputs[].fields.user_id: null if the log has none)"
            )
    org = _as_id(_value(obj, fm.org_id), fm.org_id or "org_id", where)
    source = _value(obj, fm.source)
    if source is None:
        source = default_source
    elif source not in SOURCES:
        raise RecordError(where, fm.source, f"{source!r} is not one of {', '.join(SOURCES)}")
    ptype = _value(obj, fm.type)
    if ptype is None:
        ptype = "chat" if isinstance(prompt, list) else "plain"
    elif ptype not in PROMPT_TYPES:
        raise RecordError(where, fm.type, f"{ptype!r} is not one of {', '.join(PROMPT_TYPES)}")
    raw_cat = _value(obj, fm.category)
    category = _category(raw_cat)
    if raw_cat is not None and category is None:
        meta["input_category"] = str(raw_cat)
    lang = _value(obj, fm.lang)
    ts_text, ts = None, float("nan")
    raw_ts = _value(obj, fm.timestamp)
    if raw_ts is not None:
        try:
            ts_text, ts = parse_timestamp(raw_ts)
        except ValueError as e:
            raise RecordError(where, fm.timestamp, str(e)) from None
    response = _value(obj, fm.response)
    if response is not None and not isinstance(response, str):
        raise RecordError(where, fm.response, f"expected a string, got {type(response).__name__}")
    p = Prompt(
        prompt=prompt,
        id=rid,
        user_id=user,
        org_id=org,
        source=source,
        type=ptype,
        category=category,
        lang=lang if isinstance(lang, str) else None,
        timestamp=ts_text,
        reference=response if response and response.strip() else None,
        meta=meta,
    )
    return p, ts
