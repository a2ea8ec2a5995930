"""Checkpoints: a Hugging Face directory plus ``state.json``; resume is exact.

``step-NNNNNN/`` holds the model (``save_pretrained``; for LoRA runs the adapter only), the
tokenizer, ``state.json`` (step, epoch, data position, best metric, and any stage state that is
JSON) and ``trainer_state.pt`` (optimizer, scheduler and RNG states, which are tensors). A
checkpoint is written to ``step-NNNNNN.tmp`` and renamed, so a kill while saving leaves the last
complete checkpoint as the newest one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from instructrl.utils.seed import rng_state, set_rng_state


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    tokenizer: Any = None,
    *,
    state: dict | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    merge_lora: bool = False,
) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    to_save = model
    if merge_lora and hasattr(model, "merge_and_unload"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if state is not None:
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    if optimizer is not None or scheduler is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            tmp / "trainer_state.pt",
        )
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def publish(src: Path, final: Path) -> Path:
    """Rename a complete checkpoint folder to ``final`` (replacing an older one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(src, final)
    return final


def save_final(
    out: Path, model: torch.nn.Module, tokenizer: Any, state: dict, extra: Callable[[Path], Any] | None = None
) -> Path:
    """Write ``out/final`` (LoRA merged): saved beside it, ``extra`` adds its own files, then renamed
    into place, so ``final/`` appears only when complete (a finished run is recognized by it)."""
    partial = save_checkpoint(out / "final.partial", model, tokenizer, merge_lora=True, state=state)
    if extra is not None:
        extra(partial)
    return publish(partial, out / "final")


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load the weights saved in ``path`` into ``model`` in place (full model or peft adapter)."""
    from safetensors.torch import load_file

    path = Path(path)
    adapter = path / "adapter_model.safetensors"
    if adapter.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(adapter)))
        return
    state: dict = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None
) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``path``; returns ``state.json``."""
    path = Path(path)
    load_weights(model, path)
    state = json.loads((path / "state.json").read_text())
    ts = path / "trainer_state.pt"
    if ts.exists():
        blob = torch.load(ts, weights_only=False)
        if optimizer is not None and blob.get("optimizer") is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob.get("scheduler") is not None:
            scheduler.load_state_dict(blob["scheduler"])
        set_rng_state(blob["rng"])
    return state
