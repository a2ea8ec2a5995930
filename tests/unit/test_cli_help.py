"""``instructrl <stage> --help`` lists every field of every stage, including stages whose required fields
are empty by default (their checks must not run just to show the defaults)."""

from __future__ import annotations

import pytest

from instructrl.cli import STAGES, main


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage, capsys):
    assert main([*stage.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: instructrl {stage} ") and "config fields:" in out
