"""The curate config: both YAML files load, list-of-section overrides, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructrl.config import ConfigError, load_config
from instructrl.data.config import CurateConfig
from instructrl.data.readers import get_path, parse_timestamp

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_yaml_loads(which):
    cfg = load_config(CurateConfig, ROOT / f"configs/{which}/curate.yaml")
    assert [i.name for i in cfg.inputs] == ["oasst_lottery", "oasst_trees", "selfinstruct_seed"]
    assert cfg.inputs[1].fields.text == "prompt.text" and cfg.inputs[1].fields.user_id is None
    assert cfg.cap.max_per_user == 200 and cfg.dedup.prefix_chars == 100


def test_inputs_override_builds_sections():
    cfg = load_config(
        CurateConfig,
        None,
        ["inputs=[{path: a.jsonl, source: api, fields: {text: q}}]", "split.train=0.7", "split.test=0.2"],
    )
    assert (
        cfg.inputs[0].path == "a.jsonl"
        and cfg.inputs[0].fields.text == "q"
        and cfg.inputs[0].fields.user_id == "user_id"
    )
    assert (cfg.split.train, cfg.split.valid, cfg.split.test) == (0.7, 0.1, 0.2)


def test_invalid_values_are_named():
    with pytest.raises(ConfigError, match="split fractions must be >= 0 and sum to 1"):
        load_config(CurateConfig, None, ["split.train=0.5"])
    with pytest.raises(ConfigError, match="unknown key 'dedup.prefix'"):
        load_config(CurateConfig, None, ["dedup.prefix=3"])
    with pytest.raises(ConfigError, match="inputs\\[\\].source 'web' is not one of"):
        load_config(CurateConfig, None, ["inputs=[{path: a.jsonl, source: web}]"])


def test_field_paths_and_timestamps():
    obj = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x": None}
    assert get_path(obj, "a.b.1.c") == 2 and get_path(obj, "a.b.-1.c") == 2
    assert get_path(obj, "a.b.5.c") is get_path(obj, "nope")  # both missing
    assert parse_timestamp("2023-01-01T00:00:00Z") == ("2023-01-01T00:00:00Z", 1672531200.0)
    assert parse_timestamp(1672531200) == ("2023-01-01T00:00:00+00:00", 1672531200.0)
    assert parse_timestamp("2023-01-01 01:00:00+01:00")[1] == 1672531200.0
    with pytest.raises(ValueError, match="not ISO 8601"):
        parse_timestamp("yesterday")
