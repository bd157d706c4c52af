"""pass@k with the unbiased estimator of Chen et al. 2021 (the Codex paper), and which k a run can report."""

from __future__ import annotations

from collections.abc import Sequence

KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples drawn from n (c of them correct) is correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # the product form avoids the huge binomials: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    fails = 1.0
    for i in range(n - c + 1, n + 1):
        fails *= 1.0 - k / i
    return 1.0 - fails


def reported_ks(sample_counts: Sequence[int]) -> list[int]:
    """The k of KS that every problem has enough samples for."""
    fewest = min(sample_counts, default=0)
    return [k for k in KS if k <= fewest]


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k over problems: the mean of each problem's estimate from its (n, c)."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if counts else 0.0
