"""KL coefficient controllers: fixed, or adaptive towards a target KL (Ziegler et al. 2019).

The adaptive controller moves beta proportionally to how far the observed KL is from the target,
with the error clipped to +-20%: ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon``
after a batch of ``n`` episodes.
"""

from __future__ import annotations


class FixedKLController:
    """Beta stays at ``coef``."""

    def __init__(self, coef: float):
        if coef < 0:
            raise ValueError(f"kl.coef must be >= 0, got {coef}")
        self.coef = float(coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.coef

    def state(self) -> dict:
        return {"coef": self.coef}

    def load_state(self, state: dict) -> None:
        self.coef = float(state["coef"])


class AdaptiveKLController(FixedKLController):
    """Beta starts at ``coef`` and moves towards the KL ``target`` over ``horizon`` episodes."""

    def __init__(self, coef: float, target: float, horizon: int, max_error: float = 0.2):
        if coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs kl.coef, kl.target and kl.horizon > 0")
        super().__init__(coef)
        self.target, self.horizon, self.max_error = float(target), horizon, max_error

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -self.max_error), self.max_error)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef


def build_kl_controller(kind: str, coef: float, target: float | None, horizon: int) -> FixedKLController:
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        if target is None:
            raise ValueError("kl.kind=adaptive needs kl.target")
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}: use 'fixed' or 'adaptive'")
