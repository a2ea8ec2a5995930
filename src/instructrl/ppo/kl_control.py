"""KL coefficient controllers: fixed, or adaptive towards a target KL (Ziegler et al. 2019).

The adaptive controller moves beta proportionally to how far the observed KL is from the target,
with the error clipped to +-20%: ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon``
after a batch of ``n`` episodes.
"""

from __future__ import annotations


class FixedKLController:
    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state(self) -> dict:
        return {"value": self.value}


class AdaptiveKLController:
    def __init__(self, init_kl_coef: float, target: float, horizon: int, max_error: float = 0.2):
        if init_kl_coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs init_kl_coef, target and horizon > 0")
        self.value, self.target, self.horizon, self.max_error = float(init_kl_coef), float(target), horizon, max_error

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -self.max_error), self.max_error)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state(self) -> dict:
        return {"value": self.value}


def build_kl_controller(kind: str, init_kl_coef: float, target: float | None, horizon: int):
    if kind == "fixed":
        return FixedKLController(init_kl_coef)
    if kind == "adaptive":
        if target is None:
            raise ValueError("kl.kind=adaptive needs kl.target")
        return AdaptiveKLController(init_kl_coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}: use 'fixed' or 'adaptive'")
