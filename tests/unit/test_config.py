import dataclasses
import importlib
from pathlib import Path
from typing import Literal

import pytest
import yaml

from instructrl.cli import STAGES
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
    cfg = load_config(
        Cfg, None, ["inner.lr=1e-4", "flag=true", "inner.names=[a, b]", "inner.limit=7", "run.out_dir=123"]
    )
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


# configs/<folder>/<file>.yaml -> the CLI stage whose config class it holds. A file is named after
# its stage (``rm_score.yaml`` -> ``rm score``) unless listed here; a whole folder can name one stage.
CONFIG_STAGE_BY_FOLDER = {"run": "run"}  # presets of the whole loop: `instructrl run --config ...`
CONFIG_STAGE_BY_STEM = {"rm_hh": "rm"}  # the reward model on Anthropic HH preferences
CONFIG_FOLDERS_SKIPPED = {"accelerate"}  # `accelerate launch` files, not instructrl configs


def stage_of_config(root, path) -> str:
    """The CLI stage name of a YAML file under ``root`` (configs/), by folder, then by file name."""
    rel = path.relative_to(root)
    folder = rel.parts[0] if len(rel.parts) > 1 else ""
    if folder in CONFIG_STAGE_BY_FOLDER:
        return CONFIG_STAGE_BY_FOLDER[folder]
    return CONFIG_STAGE_BY_STEM.get(path.stem, path.stem.replace("_", " "))


def test_stage_of_config_maps_folder_and_file_name(tmp_path):
    assert stage_of_config(tmp_path, tmp_path / "tiny" / "sft.yaml") == "sft"
    assert stage_of_config(tmp_path, tmp_path / "default" / "rm_score.yaml") == "rm score"
    assert stage_of_config(tmp_path, tmp_path / "default" / "rm_hh.yaml") == "rm"
    assert stage_of_config(tmp_path, tmp_path / "run" / "gpu.yaml") == "run"


def test_every_shipped_yaml_loads():
    """Every YAML under configs/ loads strictly into the config class the CLI gives its stage; a file
    that maps to no stage fails the test (it would otherwise never be checked)."""
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(
        f
        for f in [*root.rglob("*.yaml"), *root.rglob("*.yml")]
        if f.relative_to(root).parts[0] not in CONFIG_FOLDERS_SKIPPED
    )
    assert len(files) >= 16, files  # tiny/ and default/ for six stages, rm_hh, three run presets
    problems, checked = [], []
    for f in files:
        name = str(f.relative_to(root))
        stage = stage_of_config(root, f)
        if stage not in STAGES:
            problems.append(f"{name}: no CLI stage '{stage}' (add it to CONFIG_STAGE_BY_STEM or _BY_FOLDER)")
            continue
        module, cls_name = STAGES[stage][0].split(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            load_config(cls, f)
        except Exception as e:  # every file's error is reported, not only the first
            problems.append(f"{name} as {cls_name} ({stage}): {type(e).__name__}: {e}")
            continue
        checked.append(name)
    assert not problems, "\n".join(problems)
    assert len(checked) == len(files)
    assert {"run/default.yaml", "run/tiny.yaml", "run/gpu.yaml", "default/rm_hh.yaml"} <= set(checked)
