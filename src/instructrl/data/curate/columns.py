"""What pass 1 keeps: compact per-record key columns, and what one cleaned batch holds."""

from __future__ import annotations

from array import array
from collections import Counter

import numpy as np


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
