"""The pipeline's config: presets load, the default preset is the built-in default, keys the
pipeline sets are refused, a section given in part keeps the pipeline's defaults."""

from pathlib import Path

import pytest
import yaml

from instructrl.config import ConfigError, describe, load_config
from instructrl.pipeline import SET, PipelineConfig, fingerprint

ROOT = Path(__file__).resolve().parents[2]


def test_presets_load_and_default_yaml_is_the_default():
    assert load_config(PipelineConfig, ROOT / "configs/run/default.yaml") == load_config(PipelineConfig)
    tiny = load_config(PipelineConfig, ROOT / "configs/run/tiny.yaml")
    assert tiny.model == "tiny" and tiny.threads == 1 and tiny.ppo.ppo.steps == 2
    gpu = load_config(PipelineConfig, ROOT / "configs/run/gpu.yaml")
    assert gpu.ptx.coef == 27.8 and gpu.data.max_test_prompts is None


def test_a_section_given_in_part_keeps_the_pipeline_defaults(tmp_path):
    cfg = load_config(PipelineConfig, None, ["sft.train.epochs=3"])
    assert cfg.sft.train.epochs == 3
    assert cfg.sft.train.max_steps == 24  # the pipeline's default, not SFTTrainConfig's (None)
    assert cfg.sft.model.name_or_path == SET and cfg.sft.optim.lr == 2e-5
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"ppo": {"ppo": {"steps": 3}}, "eval": {"temperature": 1.0}}))
    cfg = load_config(PipelineConfig, p)
    assert cfg.ppo.ppo.steps == 3 and cfg.ppo.ppo.batch_size == 8 and cfg.ppo.reward.model == SET
    assert cfg.eval.temperature == 1.0 and cfg.eval.max_new_tokens == 64
    rows = {r[0]: r for r in describe(PipelineConfig)}
    assert rows["sft.train.max_steps"][2] == 24 and rows["ppo.reward.model"][2] == SET


@pytest.mark.parametrize("override, key", [
    ("sft.model.name_or_path=other", "sft.model.name_or_path"),
    ("rm.data.train=[x.jsonl]", "rm.data.train"),
    ("ppo.ptx.data=[corpus.txt]", "ppo.ptx.data"),
    ("label.task=demonstrate", "label.task"),
    ("eval.panel_file=p.json", "eval.panel_file"),
    ("curate.run.seed=3", "curate.run"),
])
def test_keys_the_pipeline_sets_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"{key} is set by instructrl run"):
        load_config(PipelineConfig, None, [override])


def test_invalid_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.sft, data.rm and data.ppo must be > 0 and sum to 1"):
        load_config(PipelineConfig, None, ["data.sft=0.5"])
    with pytest.raises(ConfigError, match=r"rm_sampling.n \(K\) must be >= 2"):
        load_config(PipelineConfig, None, ["rm_sampling.n=1"])
    with pytest.raises(ConfigError, match="unknown key 'sft.train.epochz'"):
        load_config(PipelineConfig, None, ["sft.train.epochz=1"])


def test_fingerprints_chain_and_ignore_how_a_step_is_shown():
    cfg = load_config(PipelineConfig)
    quiet = load_config(PipelineConfig, None, ["run.progress=false"])
    a = fingerprint({"sft": cfg.sft}, "")
    assert a == fingerprint({"sft": quiet.sft}, "")  # progress bars do not change the output
    assert a != fingerprint({"sft": load_config(PipelineConfig, None, ["sft.optim.lr=1e-4"]).sft}, "")
    assert a != fingerprint({"sft": cfg.sft}, "another previous step")


def test_a_reward_model_of_its_own_base_gives_the_value_function_the_policy():
    from instructrl.pipeline import Pipeline

    plain = Pipeline(load_config(PipelineConfig, None, ["run.out_dir=runs/x"]))
    assert plain.rm_cfg().model.name_or_path == "runs/x/sft/final"
    assert plain.ppo_cfg("ppo", 0.0).value.init is None  # starts from the reward model, as InstructGPT did
    big = Pipeline(load_config(PipelineConfig, None, ["run.out_dir=runs/x", "rm_base=models/bigger"]))
    assert big.rm_cfg().model.name_or_path == "models/bigger"
    assert big.ppo_cfg("ppo", 0.0).value.init == "runs/x/sft/final"  # reads the policy's tokens
    assert big.ppo_cfg("ppo", 0.0).reward.model == "runs/x/rm/final"
    own = Pipeline(load_config(PipelineConfig, None, ["rm_base=models/bigger", "ppo.value.init=models/v"]))
    assert own.ppo_cfg("ppo", 0.0).value.init == "models/v"
