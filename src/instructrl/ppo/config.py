"""PPO stage config (``instructrl ppo``). No torch import here: ``--help`` stays instant."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from instructrl.config import LoraConfig, ModelConfig, OptimConfig, RunConfig, option, section


@dataclass
class PPODataConfig:
    prompts: list[str] = option(
        ["builtin:demo"],
        "Prompt files: JSONL whose objects have a 'prompt' (Prompt, Demonstration or Sample records) or a 'text' "
        "field, or whose lines are JSON strings; 'builtin:demo' takes the prompts of the built-in demonstrations.",
    )
    max_prompt_tokens: int = option(256, "Longer prompts keep only their last this-many tokens.")
    max_prompts: int | None = option(None, "Use at most this many prompts (the first ones, in file order).")

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("data.prompts needs at least one file")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"data.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")


@dataclass
class RewardConfig:
    kind: Literal["model", "function", "factory", "target_tokens"] = option(
        "model",
        "What scores a response: a reward model (reward.model), a Python function (reward.function), a "
        "reward built by a Python factory (reward.factory), or the built-in programmatic reward "
        "(reward.target_tokens).",
    )
    model: str = option(
        "runs/demo/rm/final",
        "Reward-model checkpoint (`instructrl rm` output: a directory or a run directory with "
        "final/); its normalization bias is applied.",
    )
    function: str | None = option(
        None,
        "kind=function: 'package.module:callable', called as fn(prompts, responses, response_token_ids) -> "
        "list of floats.",
    )
    factory: str | None = option(
        None,
        "kind=factory: 'package.module:callable' called once with reward.factory_args; it returns the reward, "
        "called as reward(prompts, responses, response_token_ids, finish_reasons) -> list of floats "
        "(e.g. instructrl.label.gold:GoldReward, the training panel's noise-free judgment).",
    )
    factory_args: dict = option({}, "kind=factory: keyword arguments of reward.factory.")
    target_tokens: list[str] = option(
        [],
        "kind=target_tokens, for tests and smoke runs: the score is the fraction of response tokens (EOS "
        "excluded) that are one of these strings, each of which must be a single token.",
    )
    batch_size: int = option(8, "Sequences per reward-model forward pass.")
    max_seq_len: int = option(1024, "Longest prompt + response the reward model reads (the prompt is cut first).")
    missing_eos_penalty: float | None = option(
        None, "Subtract this from the score of a response that hit rollout.max_new_tokens without ending."
    )

    def __post_init__(self) -> None:
        if self.kind == "function" and not self.function:
            raise ValueError("reward.kind=function needs reward.function ('package.module:callable')")
        if self.kind == "factory" and not self.factory:
            raise ValueError("reward.kind=factory needs reward.factory ('package.module:callable')")
        if self.kind == "target_tokens" and not self.target_tokens:
            raise ValueError("reward.kind=target_tokens needs reward.target_tokens (a list of single-token strings)")


@dataclass
class ValueConfig:
    init: str | None = option(
        None,
        "Where the value function starts: a reward-model or causal-LM checkpoint; null is reward.model when "
        "reward.kind=model (as InstructGPT did), else the policy with a new scalar head.",
    )
    lr: float | None = option(None, "Value-function learning rate; null uses optim.lr.")
    cliprange: float | None = option(0.2, "Clip new values to within this of the rollout's; null disables.")
    trainable_layers: int | None = option(
        None,
        "Train only the top N decoder layers, the final norm and the head of the value function; null: every weight.",
    )

    def __post_init__(self) -> None:
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise ValueError(f"value.trainable_layers must be >= 1 or null, got {self.trainable_layers}")


@dataclass
class RolloutConfig:
    engine: Literal["cached", "hf"] = option(
        "cached",
        "Generation engine: 'cached' (instructrl's decode loop: finished sequences leave the batch, "
        "length buckets) or 'hf' (Hugging Face generate).",
    )
    batch_size: int = option(16, "Prompts per generation batch.")
    max_new_tokens: int = option(128, "Longest response; a response that reaches it is cut (finish_reason length).")
    temperature: float = option(1.0, "Sampling temperature (log-probs use the same temperature).")
    top_p: float = option(1.0, "Nucleus sampling threshold (1.0 samples from the whole distribution).")
    samples_per_prompt: int = option(
        1,
        "Responses sampled for each prompt of an iteration: ppo.batch_size episodes are ppo.batch_size / N "
        "prompts with N responses each (ppo.advantage=group needs N >= 2).",
    )
    forward_batch_size: int = option(8, "Sequences per no-grad forward pass (log-probs, reference, values).")
    weights: Literal["auto", "policy", "bf16", "fp16"] = option(
        "auto",
        "Weights the sampler decodes with: 'policy' (the training weights under autocast), 'bf16'/'fp16' (a "
        "half-precision copy refreshed before each rollout), 'auto' (bf16 under bf16 precision without LoRA).",
    )

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"rollout.temperature must be > 0 for PPO (it samples), got {self.temperature}")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.forward_batch_size < 1:
            raise ValueError("rollout.batch_size, max_new_tokens and forward_batch_size must be >= 1")
        if self.samples_per_prompt < 1:
            raise ValueError(f"rollout.samples_per_prompt must be >= 1, got {self.samples_per_prompt}")


@dataclass
class PPOAlgoConfig:
    steps: int = option(100, "PPO iterations (each: a rollout of ppo.batch_size episodes, then the PPO epochs).")
    batch_size: int = option(16, "Episodes (prompts) per PPO iteration.")
    minibatch_size: int = option(8, "Episodes per optimizer step.")
    micro_batch_size: int = option(4, "Episodes per forward/backward pass (gradient accumulation inside a minibatch).")
    epochs: int = option(1, "PPO epochs over each rollout batch (InstructGPT/DeepSpeed-Chat: 1).")
    advantage: Literal["gae", "group"] = option(
        "gae",
        "How each token's advantage is estimated: 'gae' (a learned value function and GAE, InstructGPT's PPO) or "
        "'group' (no value function: a response's return, its score minus beta times its KL, less the mean "
        "return of the other responses to the same prompt, given to each of its tokens; the leave-one-out "
        "baseline of RLOO; needs rollout.samples_per_prompt >= 2).",
    )
    gamma: float = option(1.0, "Discount of GAE.")
    lam: float = option(0.95, "Lambda of GAE.")
    cliprange: float = option(0.2, "Clip of the policy ratio.")
    whiten_advantages: bool = option(True, "Whiten advantages over the batch's response tokens.")
    score_norm: Literal["none", "batch", "running"] = option(
        "none", "Normalize scores before shaping: within the batch, or by the running mean/std of all scores."
    )
    score_clip: float | None = option(None, "Clip (normalized) scores to [-score_clip, score_clip]; null: no clip.")
    trainable_layers: int | None = option(
        None,
        "Train only the top N decoder layers and the final norm of the policy (embeddings and lower layers "
        "frozen: the backward pass stops there, a cheaper update); null: every weight.",
    )

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.minibatch_size, self.micro_batch_size, self.epochs) < 1:
            raise ValueError("ppo.steps, batch_size, minibatch_size, micro_batch_size and epochs must be >= 1")
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise ValueError(f"ppo.trainable_layers must be >= 1 or null, got {self.trainable_layers}")
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"ppo.minibatch_size ({self.minibatch_size}) exceeds ppo.batch_size ({self.batch_size})")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError("ppo.gamma and ppo.lam must be in [0, 1]")


@dataclass
class KLConfig:
    kind: Literal["fixed", "adaptive"] = option("fixed", "Fixed beta, or the adaptive controller towards kl.target.")
    coef: float = option(0.02, "Beta (the initial beta when adaptive); InstructGPT: 0.02.")
    target: float | None = option(6.0, "Adaptive controller: target KL per response (nats).")
    horizon: int = option(10000, "Adaptive controller: episodes over which beta moves by at most 20%.")
    warn_above: float | None = option(20.0, "Warn when the mean KL per response to the reference exceeds this.")


@dataclass
class PtxConfig:
    data: list[str] = option(
        [],
        "Pretraining text: .txt files (documents separated by blank lines) or JSONL (field ptx.text_field, or "
        "JSON strings); 'builtin:demo' is the text of the built-in demonstrations. Empty: plain PPO.",
    )
    coef: float = option(
        0.0,
        "gamma_ptx: weight of the pretraining NLL in each minibatch's loss (InstructGPT: 27.8; "
        "0 = plain PPO while still reporting the held-out loss when ptx.data is set).",
    )
    text_field: str = option("text", "Field of JSONL objects that holds the text.")
    block_size: int = option(256, "Tokens per pretraining sequence (documents are joined with EOS and cut).")
    batch_size: int = option(4, "Pretraining sequences mixed into each minibatch.")
    eval_fraction: float = option(
        0.1, "Fraction of blocks held out to report the pretraining loss on (ppo/ptx_eval_loss)."
    )
    eval_blocks: int = option(32, "At most this many held-out blocks are evaluated.")

    def __post_init__(self) -> None:
        if self.coef < 0:
            raise ValueError(f"ptx.coef must be >= 0, got {self.coef}")
        if self.coef > 0 and not self.data:
            raise ValueError("ptx.coef > 0 needs ptx.data (pretraining text files)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"ptx.eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class MemoryConfig:
    frozen_device: str = option(
        "same", "Device of the frozen reference and reward models: 'same' as run.device, or e.g. 'cpu', 'cuda:1'."
    )
    offload_frozen: bool = option(
        False, "Keep the frozen models on the CPU and move them to the device only while they run."
    )
    frozen_dtype: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "Weight dtype of the frozen reference and reward models."
    )


@dataclass
class PPOTrainConfig:
    save_every: int = option(20, "Write a resumable step-NNNNNN/ checkpoint every N PPO iterations (0: never).")
    keep_checkpoints: int = option(2, "How many step checkpoints to keep (0: all).")
    log_every: int = option(1, "Write metrics every N PPO iterations.")
    sample_every: int = option(10, "Print a few prompt/response/score samples every N iterations (0: never).")
    eval_every: int = option(10, "Report the held-out pretraining loss every N iterations (needs ptx.data; 0: never).")


@dataclass
class MonitorReward:
    """A reward the monitor scores with (not trained on): a reward model or a reward factory."""

    name: str = option("", "Name in the metrics: monitor/<name> (letters, digits, '_').")
    model: str | None = option(None, "Reward-model checkpoint (as reward.model).")
    factory: str | None = option(None, "'package.module:callable' returning the reward (as reward.factory).")
    factory_args: dict = option({}, "Keyword arguments of factory.")

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"monitor.rewards[].name must be letters, digits or '_', got {self.name!r}")
        if (self.model is None) == (self.factory is None):
            raise ValueError(f"monitor.rewards[{self.name}]: give exactly one of model and factory")

    def as_reward(self, base: RewardConfig) -> RewardConfig:
        """The reward config: ``base`` (the training reward's batch size and length) with this source."""
        if self.model is not None:
            return dataclasses.replace(base, kind="model", model=self.model, factory=None, factory_args={})
        return dataclasses.replace(base, kind="factory", factory=self.factory, factory_args=dict(self.factory_args))


@dataclass
class MonitorConfig:
    every: int = option(
        0,
        "Every N iterations (and before the first and after the last), sample the monitor prompts with the "
        "current policy and log their KL to the reference and every monitor reward's mean score (0: never): the "
        "over-optimization curve of the run.",
    )
    prompts: list[str] = option([], "Held-out prompt files (not trained on, not the test prompts).")
    max_prompts: int = option(32, "Monitor at most this many prompts.")
    samples_per_prompt: int = option(
        1,
        "Responses sampled per monitor prompt: the mean score's noise falls as 1/sqrt(prompts x samples) (with "
        "16 prompts and 1 sample, the gold score's standard error is about 0.02, as large as what PPO gains).",
    )
    rewards: list[MonitorReward] = option([], "Rewards to score with besides the training reward (e.g. gold).")
    keep_best: str = option(
        "",
        "Keep the policy at the monitor point where this reward's mean score was highest in out_dir/best/ "
        "(state.json: step, score, KL): 'reward' (the training reward) or a monitor reward's name, e.g. gold; "
        "'': keep none. Chosen on the monitor prompts, so evaluate it on other (test) prompts.",
    )

    def __post_init__(self) -> None:
        names = ["reward", *(r.name for r in self.rewards)]
        if self.keep_best and self.keep_best not in names:
            raise ValueError(f"monitor.keep_best: {self.keep_best!r} is no monitor reward; one of {', '.join(names)}")
        if self.keep_best and not self.every:
            raise ValueError("monitor.keep_best needs monitor.every > 0 (it keeps the best monitor point)")
        if self.every < 0 or self.max_prompts < 1 or self.samples_per_prompt < 1:
            raise ValueError("monitor.every must be >= 0, monitor.max_prompts and samples_per_prompt >= 1")
        if self.every and not self.prompts:
            raise ValueError("monitor.every > 0 needs monitor.prompts")


@dataclass
class PPOConfig:
    """PPO (and PPO-ptx) of the SFT policy against a reward model, InstructGPT's equation 2."""

    run: RunConfig = section(RunConfig, "Output, seed, device, precision.")
    policy: ModelConfig = section(ModelConfig, "The policy to train, and the frozen reference (the SFT model).")
    lora: LoraConfig = section(
        LoraConfig,
        "Optional LoRA adapters on policy and value; the reference is then the policy with its adapters disabled.",
    )
    optim: OptimConfig = section(
        OptimConfig, "Optimizer and learning-rate schedule (policy; the value shares it except value.lr)."
    )
    data: PPODataConfig = section(PPODataConfig, "Prompts.")
    reward: RewardConfig = section(RewardConfig, "Reward: a reward model or a programmatic function.")
    value: ValueConfig = section(ValueConfig, "Value function.")
    rollout: RolloutConfig = section(RolloutConfig, "Sampling responses.")
    ppo: PPOAlgoConfig = section(PPOAlgoConfig, "PPO hyper-parameters.")
    kl: KLConfig = section(KLConfig, "KL penalty to the reference.")
    ptx: PtxConfig = section(PtxConfig, "PPO-ptx: pretraining log-likelihood mixed into every update.")
    memory: MemoryConfig = section(MemoryConfig, "Where the frozen models live.")
    train: PPOTrainConfig = section(PPOTrainConfig, "Checkpoints, logging, samples.")
    monitor: MonitorConfig = section(MonitorConfig, "Over-optimization monitor: proxy and gold scores against KL.")

    def __post_init__(self) -> None:
        k = self.rollout.samples_per_prompt
        if self.ppo.batch_size % k:
            raise ValueError(
                f"ppo.batch_size ({self.ppo.batch_size}) must be a multiple of rollout.samples_per_prompt ({k})"
            )
        if self.ppo.advantage == "group" and k < 2:
            raise ValueError("ppo.advantage=group needs rollout.samples_per_prompt >= 2 (a baseline from the others)")
        if self.lora.enabled and (self.ppo.trainable_layers or self.value.trainable_layers):
            raise ValueError("choose lora.enabled or ppo.trainable_layers / value.trainable_layers, not both")
