"""Timings one can trust: untimed warm-up, N timed repeats, the median with a distribution-free
interval, and a speed-up that says when it cannot be told apart from 1x.

The interval of a median from n repeats is the pair of order statistics (x_(k), x_(n+1-k)) with the
largest k whose coverage 1 - 2 * P(Binomial(n, 1/2) < k) is at least 95% (Conover, *Practical
Nonparametric Statistics*, 3.2); below six repeats no k reaches it and the range (min, max) stands in.
A speed-up of row over baseline timed in the same rounds (bench's round-robin) is the median of the
per-round ratios baseline_i / row_i, with the same interval; timed apart (a sweep's cells) it is the
ratio of medians, its interval the ratio of the intervals' far ends.
"""

from __future__ import annotations

import math
import statistics

import torch

LEVEL = 0.95  # coverage the median's interval aims for


def median_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(median, lo, hi) of repeated timings: the order-statistic interval of the median."""
    if not values:
        raise ValueError("median_interval needs at least one value")
    xs, n = sorted(values), len(values)
    k = 1  # (min, max) unless a narrower pair reaches `level`
    for j in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(j)) / 2**n  # P(Binomial(n, 1/2) < j)
        if 1 - 2 * below >= level:
            k = j
    return statistics.median(xs), xs[k - 1], xs[n - k]


def paired_speedup(base: list[float], row: list[float]) -> tuple[float, float, float]:
    """(speed-up, lo, hi) of `row` over `base`, timed round by round (base[i] and row[i] in round i)."""
    if len(base) != len(row):
        raise ValueError(f"paired timings need as many base runs as row runs, got {len(base)} and {len(row)}")
    return median_interval([b / r for b, r in zip(base, row, strict=True)])


def speedup(base: list[float], row: list[float]) -> tuple[float, float, float]:
    """(speed-up, lo, hi) of `row` over `base` timed apart: median over median, far ends of the intervals."""
    b, b_lo, b_hi = median_interval(base)
    r, r_lo, r_hi = median_interval(row)
    return b / r, b_lo / r_hi, b_hi / r_lo


def distinguishable(lo: float | None, hi: float | None) -> bool:
    """Whether a speed-up's interval leaves out 1x (no interval: taken at its word)."""
    return lo is None or hi is None or lo == hi or not lo <= 1.0 <= hi


def describe(x: float, lo: float | None = None, hi: float | None = None, short: bool = False) -> str:
    """'3.20× (2.90–3.50)', or '1.10× (0.90–1.30, not distinguishable from 1×)' when the interval holds 1
    (`short`, for a table cell: '1.10× (0.90–1.30) ≈ 1×')."""
    if lo is None or hi is None or lo == hi:
        return f"{x:.2f}×"
    if distinguishable(lo, hi):
        return f"{x:.2f}× ({lo:.2f}–{hi:.2f})"
    return f"{x:.2f}× ({lo:.2f}–{hi:.2f}) ≈ 1×" if short else \
        f"{x:.2f}× ({lo:.2f}–{hi:.2f}, not distinguishable from 1×)"


def seconds(x: float, lo: float | None = None, hi: float | None = None) -> str:
    """'0.113 (0.110–0.120)': seconds per image with the interval of its median."""
    if lo is None or hi is None or lo == hi:
        return f"{x:.3g}"
    return f"{x:.3g} ({lo:.3g}–{hi:.3g})"


def one_thread(device, threads: int) -> int | None:
    """Set torch's CPU threads for timing (`threads` > 0, on a CPU device); returns the previous count
    to restore, or None where nothing was changed. One thread per process keeps a shared CPU's
    timings steady: several threads contend with every other process for the cores."""
    if threads <= 0 or torch.device(device).type != "cpu":
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return before
