"""Pass 1: stream the inputs in batches, have them cleaned here or by worker processes, spill the
cleaned records to disk and keep their compact keys."""

from __future__ import annotations

import multiprocessing
from collections import Counter, deque
from pathlib import Path

from instructrl.data.config import CurateConfig, InputConfig
from instructrl.data.curate.clean import Processor
from instructrl.data.curate.columns import Batch, Columns
from instructrl.data.curate.tokens import TokenCounter
from instructrl.data.readers import input_format, iter_raw
from instructrl.records import RecordError


class _UnreadableFile(Exception):
    def __init__(self, error: RecordError):
        super().__init__(str(error))
        self.error = error


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
