import dataclasses
from typing import Literal

import pytest
import yaml

from instructrl.config import ConfigError, RunConfig, describe, load_config, option, save_config, section


@dataclasses.dataclass
class Inner:
    lr: float = option(1e-3, "learning rate")
    mode: Literal["a", "b"] = option("a", "mode")
    names: list[str] = option(["x"], "names")
    limit: int | None = option(None, "limit")

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"inner.lr must be > 0, got {self.lr}")


@dataclasses.dataclass
class Cfg:
    run: RunConfig = section(RunConfig)
    inner: Inner = section(Inner)
    flag: bool = option(False, "a flag")


def write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_and_yaml(tmp_path):
    cfg = load_config(Cfg, write(tmp_path, {"inner": {"lr": 0.5, "mode": "b"}, "flag": True}))
    assert cfg.inner.lr == 0.5 and cfg.inner.mode == "b" and cfg.flag is True
    assert cfg.inner.names == ["x"] and cfg.run.seed == 0


def test_unknown_key_names_file_key_and_choices(tmp_path):
    p = write(tmp_path, {"inner": {"lrr": 0.5}})
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    msg = str(e.value)
    assert str(p) in msg and "inner.lrr" in msg and "lr, mode, names, limit" in msg


def test_wrong_type_and_literal(tmp_path):
    with pytest.raises(ConfigError, match=r"inner.lr.*expected a number"):
        load_config(Cfg, write(tmp_path, {"inner": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match=r"inner.mode.*'c' is not one of the valid choices: 'a', 'b'"):
        load_config(Cfg, write(tmp_path, {"inner": {"mode": "c"}}))
    with pytest.raises(ConfigError, match=r"flag.*expected true or false"):
        load_config(Cfg, write(tmp_path, {"flag": 3}))
    with pytest.raises(ConfigError, match=r"inner.lr must be > 0"):
        load_config(Cfg, write(tmp_path, {"inner": {"lr": -1}}))


def test_overrides_coerce_and_validate(tmp_path):
    cfg = load_config(Cfg, None, ["inner.lr=1e-4", "flag=true", "inner.names=[a, b]", "inner.limit=7", "run.out_dir=123"])
    assert cfg.inner.lr == pytest.approx(1e-4) and cfg.flag is True
    assert cfg.inner.names == ["a", "b"] and cfg.inner.limit == 7
    assert cfg.run.out_dir == "123"  # a string field keeps the text as typed
    assert load_config(Cfg, None, ["inner.limit=null"]).inner.limit is None
    with pytest.raises(ConfigError, match=r"command line 'inner.nope=1'.*valid keys under 'inner'"):
        load_config(Cfg, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match=r"inner.limit.*expected int \| null, got 2.5"):
        load_config(Cfg, None, ["inner.limit=2.5"])


def test_save_roundtrip_and_describe(tmp_path):
    cfg = load_config(Cfg, None, ["inner.mode=b"])
    path = save_config(cfg, tmp_path)
    again = load_config(Cfg, path)
    assert again == cfg
    rows = {r[0]: r for r in describe(Cfg)}
    assert rows["inner.lr"][3] == "learning rate" and rows["run.seed"][2] == 0


def test_every_shipped_yaml_loads():
    """Every YAML under configs/ loads strictly into its stage's config class."""
    from pathlib import Path

    from instructrl.cli import STAGES, _load

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files, "no configs found"
    stage_names = {name.replace(" ", "_"): spec for name, (spec, _, _) in STAGES.items()}
    checked = 0
    for f in files:
        stage = f.stem.split(".")[0]
        key = next((k for k in sorted(stage_names, key=len, reverse=True) if stage == k or stage.startswith(k + "_")), None)
        if key is None:
            continue
        load_config(_load(stage_names[key]), f)
        checked += 1
    assert checked >= 2
