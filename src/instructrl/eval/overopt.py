"""Reward-model over-optimization curves: proxy (learned reward model) and gold score against KL.

Gao et al. (2022) plot both scores of a policy against the square root of its KL to the initial
policy: the proxy keeps rising while the gold score turns down once the policy exploits the reward
model. Two ways to move away from the SFT policy are measured here:

* **best-of-n**: draw n responses from SFT and keep the one the proxy scores highest. Its KL to SFT
  is analytic, ``log n - (n - 1) / n`` nats (Stiennon et al. 2020; Gao et al. 2022, eq. 1). From N
  samples per prompt the expected scores for every n <= N are computed exactly over all n-subsets
  (the unbiased estimator), not from one subset.
* **PPO**: the proxy and gold scores of the policy's responses to the same held-out prompts at
  several points of the run, with the sampled KL of those responses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def best_of_n_kl(n: int) -> float:
    """KL (nats) between the best-of-n policy and the policy it samples from: ``log n - (n - 1) / n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_expectation(proxy: Sequence[float], gold: Sequence[float], n: int) -> tuple[float, float]:
    """Expected (proxy, gold) score of the proxy's pick among n of one prompt's N samples, over all n-subsets.

    Sorted by proxy score, the i-th lowest of N samples (i = 1..N) is the best of a random n-subset
    with probability ``C(i - 1, n - 1) / C(N, n)``. Ties in the proxy are broken by sample order."""
    size = len(proxy)
    if len(gold) != size:
        raise ValueError(f"{len(proxy)} proxy scores but {len(gold)} gold scores")
    if not 1 <= n <= size:
        raise ValueError(f"n must be in 1..{size}, got {n}")
    order = sorted(range(size), key=lambda k: (proxy[k], -k))  # ascending; among ties the first sample wins
    total = math.comb(size, n)
    e_proxy = e_gold = 0.0
    for rank, k in enumerate(order, start=1):
        w = math.comb(rank - 1, n - 1) / total
        e_proxy += w * proxy[k]
        e_gold += w * gold[k]
    return e_proxy, e_gold


def best_of_n_curve(
    proxy: Sequence[Sequence[float]], gold: Sequence[Sequence[float]], ns: Sequence[int]
) -> list[dict[str, float]]:
    """Per n: the KL, sqrt(KL) and the mean over prompts of the expected proxy and gold scores."""
    rows = []
    for n in ns:
        pairs = [best_of_n_expectation(p, g, n) for p, g in zip(proxy, gold)]
        kl = best_of_n_kl(n)
        rows.append(
            {
                "n": n,
                "kl": kl,
                "sqrt_kl": math.sqrt(kl),
                "proxy": sum(p for p, _ in pairs) / len(pairs),
                "gold": sum(g for _, g in pairs) / len(pairs),
            }
        )
    return rows
