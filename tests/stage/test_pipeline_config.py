"""The pipeline's config: presets load and state only what differs from the defaults, a section given
in part keeps the pipeline's defaults, keys the pipeline sets are refused (read off the builders), and
the steps' own data work (sharing out prompts, leaving test demonstrations out) on hand-made records."""

from pathlib import Path

import pytest
import yaml

from instructrl.config import ConfigError, describe, load_config
from instructrl.pipeline.config import (
    SET,
    DataConfig,
    Paths,
    PipelineConfig,
    ppo_config,
    rm_config,
    sft_config,
    suite_config,
)
from instructrl.pipeline.engine import Step, fingerprint, run_steps
from instructrl.pipeline.steps import build_steps, leave_out_test, share_out
from instructrl.records import Demonstration, Prompt, RecordError

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "run").glob("*.yaml"))


def test_presets_load_and_default_yaml_is_the_default():
    assert [p.name for p in PRESETS] == ["default.yaml", "gpu.yaml", "quality.yaml", "tiny.yaml"]
    assert load_config(PipelineConfig, ROOT / "configs/run/default.yaml") == load_config(PipelineConfig)
    tiny = load_config(PipelineConfig, ROOT / "configs/run/tiny.yaml")
    assert tiny.model == "tiny" and tiny.run.threads == 1 and tiny.ppo.ppo.steps == 2
    assert sft_config(tiny, Paths.of(tiny)).run.threads == 1  # every stage runs with the pipeline's run section
    gpu = load_config(PipelineConfig, ROOT / "configs/run/gpu.yaml")
    assert gpu.ptx.coef == 27.8 and gpu.data.max_test_prompts is None
    quality = load_config(PipelineConfig, ROOT / "configs/run/quality.yaml")
    built = ppo_config(quality, Paths.of(quality), "ppo", 0.0)
    assert quality.reward == "gold" and built.reward.factory == "instructrl.label.gold:GoldReward"
    assert built.ppo.steps == 40 and built.ppo.batch_size == 16 and built.optim.lr == 5e-5
    # the group baseline at the evaluation's temperature, the best gold monitor point kept and evaluated
    assert (built.ppo.advantage, built.rollout.samples_per_prompt, built.rollout.temperature) == ("group", 4, 0.7)
    assert built.rollout.temperature == quality.eval.temperature
    assert (built.monitor.keep_best, built.monitor.samples_per_prompt) == ("gold", 4)
    assert Paths.of(quality).ppo_model(quality, "ppo").endswith("ppo/best")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_state_only_what_differs_from_the_defaults(preset):
    """A value a preset repeats would be a second place for a default, and drift from it."""
    defaults = load_config(PipelineConfig)

    def same(data: dict, node, prefix: str = "") -> list[str]:
        out = []
        for key, value in data.items():
            current = getattr(node, key)
            if isinstance(value, dict) and not isinstance(current, dict):
                out += same(value, current, f"{prefix}{key}.")
            elif value == current:
                out.append(prefix + key)
        return out

    assert same(yaml.safe_load(preset.read_text()) or {}, defaults) == []


def test_the_default_run_keeps_its_settings():
    """The numbers the default run's figures were measured with (README, RESULTS.md)."""
    cfg = load_config(PipelineConfig)
    assert (
        cfg.rm.optim.lr,
        cfg.rm.train.batch_size,
        cfg.rm.train.micro_batch_size,
        cfg.rm.model.max_seq_len,
        cfg.rm.train.trainable_layers,
        cfg.rm.data.eval_fraction,
    ) == (3e-5, 4, 2, 384, 12, 0.15)
    assert (cfg.sft.train.max_steps, cfg.sft.train.batch_size, cfg.sft.optim.lr) == (24, 8, 2e-5)
    assert (cfg.ppo.ppo.steps, cfg.ppo.ppo.batch_size, cfg.ppo.kl.coef, cfg.ppo.optim.lr, cfg.ptx.coef) == (
        10,
        8,
        0.02,
        1e-5,
        1.0,
    )
    assert (cfg.rm_sampling.n, cfg.demo_sampling.n, cfg.eval.max_new_tokens, cfg.run.threads) == (4, 2, 64, 0)
    suite = cfg.suite
    assert (suite.truthfulqa.n, suite.hellaswag.n, suite.real_toxicity_prompts.n, suite.gsm8k.n) == (60, 100, 40, 4)
    assert suite.real_toxicity_prompts.prefixes == ["basic", "respectful"] and suite.hellaswag.shots == [0]


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


@pytest.mark.parametrize(
    "override, key",
    [
        ("sft.model.name_or_path=other", "sft.model.name_or_path"),
        ("rm.data.train=[x.jsonl]", "rm.data.train"),
        ("ppo.ptx.data=[corpus.txt]", "ppo.ptx.data"),
        ("ppo.reward.function=pkg.mod:fn", "ppo.reward.function"),
        ("label.task=demonstrate", "label.task"),
        ("label.labeler=heldout", "label.labeler"),
        ("eval.panel_file=p.json", "eval.panel_file"),
        ("eval.kl_reference=null", "eval.kl_reference"),
        ("curate.run.seed=3", "curate.run.seed"),
        ("suite.policies=[{name: a, model: m}]", "suite.policies"),
        ("suite.run.out_dir=elsewhere", "suite.run.out_dir"),
        ("suite.temperature=1.0", "suite.temperature"),  # the preference evaluation's
        ("suite.panel_file=p.json", "suite.panel_file"),
        ("eval.tasks=[preference, truthfulqa]", "eval.tasks"),  # the suite's
        ("eval.hellaswag.n=5", "eval.hellaswag.n"),
    ],
)
def test_keys_the_pipeline_sets_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"{key} is set by instructrl run"):
        load_config(PipelineConfig, None, [override])


@pytest.mark.parametrize(
    "override",
    [
        "ppo.value.init=models/v",
        "label.max_k=5",
        "eval.temperature=1.0",
        "run.seed=3",
        "suite.truthfulqa.n=5",
        "suite.dtype=fp32",
        "suite.tasks=[hellaswag]",
    ],
)
def test_keys_the_pipeline_keeps_are_accepted(override):
    load_config(PipelineConfig, None, [override])


def test_a_refused_key_says_where_it_belongs():
    with pytest.raises(ConfigError, match="set eval.temperature instead"):
        load_config(PipelineConfig, None, ["suite.temperature=1.0"])
    with pytest.raises(ConfigError, match="set suite.hellaswag.n instead"):
        load_config(PipelineConfig, None, ["eval.hellaswag.n=5"])
    with pytest.raises(ConfigError, match="'preference' is not one of the valid choices"):
        load_config(PipelineConfig, None, ["suite.tasks=[preference]"])
    with pytest.raises(ConfigError, match="suite.tasks: name each task once"):
        load_config(PipelineConfig, None, ["suite.tasks=[gsm8k, gsm8k]"])


def test_the_suite_evaluates_the_run_models_after_ppo_ptx_and_can_be_left_out():
    cfg = load_config(PipelineConfig, None, ["run.out_dir=runs/x", "suite.tasks=[truthfulqa, gsm8k]"])
    built = suite_config(cfg, Paths.of(cfg))
    assert [(p.name, p.model) for p in built.policies] == [
        ("base", "default"),
        ("sft", "runs/x/sft/final"),
        ("ppo", "runs/x/ppo/final"),
        ("ppo_ptx", "runs/x/ppo_ptx/final"),
    ]
    assert built.tasks == ["truthfulqa", "gsm8k"] and built.run.out_dir == "runs/x/suite" and not built.panel_file
    steps = build_steps(cfg)
    assert [s.name for s in steps][-2:] == ["eval", "suite"] and steps[-1].after == "ppo_ptx"
    off = load_config(PipelineConfig, None, ["suite.tasks=[]"])
    assert suite_config(off, Paths.of(off)) is None and "suite" not in [s.name for s in build_steps(off)]


def test_a_step_after_an_earlier_one_is_redone_only_when_that_one_changes(tmp_path):
    made: list[str] = []

    def steps(a: int, b: int, c: int) -> list[Step]:
        def step(name: str, value: int, after: str | None = None) -> Step:
            return Step(name, {"value": value}, lambda: made.append(name) or {}, after)

        return [step("a", a), step("b", b), step("c", c, after="a")]

    run_steps(steps(1, 1, 1), tmp_path, resume=True)
    assert made == ["a", "b", "c"]
    for changed, redone in (((1, 2, 1), ["b"]), ((1, 2, 2), ["c"]), ((2, 2, 2), ["a", "b", "c"])):
        made.clear()
        run_steps(steps(*changed), tmp_path, resume=True)
        assert made == redone, changed
    with pytest.raises(ValueError, match="follows 'd', which is not an earlier step"):
        run_steps([Step("e", {}, dict, after="d")], tmp_path, resume=True)


def test_a_missing_data_set_of_the_suite_stops_the_run_before_its_first_step(tmp_path, shared_data):
    # the other data sets of the tiny suite must be there (shared_data skips without them), so that
    # the one missing file is the one named
    from instructrl.pipeline.run import run

    missing = tmp_path / "no" / "hellaswag.jsonl"
    cfg = load_config(
        PipelineConfig,
        ROOT / "configs/run/tiny.yaml",
        [f"run.out_dir={tmp_path / 'run'}", f"suite.hellaswag.data={missing}"],
    )
    with pytest.raises(RecordError, match=r"no/hellaswag.jsonl: file not found \(set suite.hellaswag.data"):
        run(cfg)
    assert not (tmp_path / "run" / "base").exists()


def test_invalid_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.sft, data.rm and data.ppo must be > 0 and sum to 1"):
        load_config(PipelineConfig, None, ["data.sft=0.5"])
    with pytest.raises(ConfigError, match=r"rm_sampling.n \(K\) must be >= 2"):
        load_config(PipelineConfig, None, ["rm_sampling.n=1"])
    with pytest.raises(ConfigError, match="unknown key 'sft.train.epochz'"):
        load_config(PipelineConfig, None, ["sft.train.epochz=1"])
    with pytest.raises(ConfigError, match="unknown key 'threads'"):  # run.threads took its place
        load_config(PipelineConfig, None, ["threads=1"])


def test_fingerprints_chain_and_ignore_how_a_step_is_shown():
    def sft_fingerprint(*overrides: str, previous: str = "") -> str:
        cfg = load_config(PipelineConfig, None, list(overrides))
        return fingerprint({"sft": sft_config(cfg, Paths.of(cfg))}, previous)

    a = sft_fingerprint()
    for how in ("run.progress=false", "run.threads=1", "run.resume=false", "run.device=cpu"):
        assert sft_fingerprint(how) == a, how  # how a step is shown, resumed or run fast: not its output
    for what in ("sft.optim.lr=1e-4", "run.seed=1", "run.precision=fp32", "model=other"):
        assert sft_fingerprint(what) != a, what
    assert sft_fingerprint(previous="another previous step") != a


def test_a_reward_model_of_its_own_base_gives_the_value_function_the_policy():
    plain = load_config(PipelineConfig, None, ["run.out_dir=runs/x"])
    assert rm_config(plain, Paths.of(plain)).model.name_or_path == "runs/x/sft/final"
    ppo = ppo_config(plain, Paths.of(plain), "ppo", 0.0)
    assert ppo.value.init is None  # starts from the reward model, as InstructGPT did
    assert (ppo.run.out_dir, ppo.ptx.coef, ppo.ptx.data) == ("runs/x/ppo", 0.0, ["builtin:demo"])
    big = load_config(PipelineConfig, None, ["run.out_dir=runs/x", "rm_base=models/bigger"])
    assert rm_config(big, Paths.of(big)).model.name_or_path == "models/bigger"
    ppo = ppo_config(big, Paths.of(big), "ppo_ptx", big.ptx.coef)
    assert ppo.value.init == "runs/x/sft/final"  # reads the policy's tokens
    assert (ppo.reward.model, ppo.ptx.coef) == ("runs/x/rm/final", 1.0)
    own = load_config(PipelineConfig, None, ["rm_base=models/bigger", "ppo.value.init=models/v"])
    assert ppo_config(own, Paths.of(own), "ppo", 0.0).value.init == "models/v"


def test_prompts_are_shared_out_by_seed_and_id_and_capped():
    pool = [Prompt(prompt=f"p{i}", user_id=f"u{i}", id=f"id{i}") for i in range(200)]
    test = [Prompt(prompt=f"t{i}", user_id="t", id=f"t{i}") for i in range(5)]
    data = DataConfig(max_sft_prompts=None, max_rm_prompts=None, max_ppo_prompts=None, max_test_prompts=3)
    roles = share_out(pool, test, data, seed=0)
    assert sorted(p.id for r in ("sft", "rm", "ppo") for p in roles[r]) == sorted(p.id for p in pool)
    assert [len(roles[r]) for r in ("sft", "rm", "ppo")] == [60, 93, 47]  # drawn at 0.3 / 0.4 / 0.3
    assert len(roles["test"]) == 3 and {p.id for p in roles["test"]} < {p.id for p in test}
    # the same prompt keeps its role whatever else is in the pool; another seed shares out anew
    again = share_out(pool[:100], test, data, seed=0)
    assert {p.id for p in again["sft"]} == {p.id for p in roles["sft"] if int(p.id[2:]) < 100}
    assert {p.id for p in share_out(pool, test, data, seed=1)["sft"]} != {p.id for p in roles["sft"]}
    capped = share_out(pool, test, DataConfig(max_sft_prompts=7), seed=0)
    assert [p.id for p in capped["sft"]] == [p.id for p in roles["sft"]][:7]


def test_demonstrations_of_test_users_and_test_prompts_are_left_out():
    test = [Prompt(prompt="What is 2+2?", user_id="alice", id="t1")]
    demos = [
        Demonstration(prompt="Name a colour.", response="Red.", user_id="alice"),  # a test user's
        Demonstration(prompt="  what is 2+2? ", response="4", user_id="bob"),  # a test prompt
        Demonstration(prompt="Name a fruit.", response="Pear.", user_id="bob"),
    ]
    assert leave_out_test(demos, test) == demos[2:]
