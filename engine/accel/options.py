"""The caches and FP8 modes a generation can ask for, by name: `METHOD[:THRESHOLD]` and
off | weights | compute, checked before anything heavy is imported."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError

DIFFUSERS_METHODS = ("fbcache", "magcache", "taylorseer")  # diffusers' own caches (diffusers_cache.py)
CACHES = ("none", "teacache", *DIFFUSERS_METHODS)
CALIBRATED = ("teacache", "magcache")  # caches calibrated per model (teacache only when no threshold is given)
FP8_MODES = ("off", "weights", "compute")


@dataclass(frozen=True)
class CacheSpec:
    method: str = "none"  # one of CACHES
    threshold: float | None = None  # None: the calibrated (teacache) or the method's default one

    def __str__(self) -> str:
        return self.method if self.threshold is None else f"{self.method}:{self.threshold:g}"


def parse_cache(text: str | None) -> CacheSpec:
    """`METHOD[:THRESHOLD]` -> CacheSpec; '' and None mean no cache."""
    text = (text or "none").strip().lower()
    method, _, knob = text.partition(":")
    if method not in CACHES:
        raise UsageError(f"cache must be METHOD[:THRESHOLD] with METHOD one of {', '.join(CACHES)}, got {text!r}")
    if not knob:
        return CacheSpec(method)
    if method == "none":
        raise UsageError(f"cache 'none' takes no threshold, got {text!r}")
    try:
        threshold = float(knob)
    except ValueError:
        raise UsageError(f"cache threshold must be a number, got {knob!r} in {text!r}") from None
    check_threshold(threshold, f"cache threshold (in {text!r})")
    return CacheSpec(method, threshold)


def check_threshold(threshold: float, field: str = "cache threshold") -> float:
    if not math.isfinite(threshold) or not 0 <= threshold <= 100:
        raise UsageError(f"{field} must be a number in 0..100, got {threshold:g}")
    return threshold


def check_fp8(mode: str | None) -> str:
    mode = (mode or "off").strip().lower()
    if mode not in FP8_MODES:
        raise UsageError(f"fp8 must be one of {', '.join(FP8_MODES)}, got {mode!r}")
    return mode
