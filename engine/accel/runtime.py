"""Switching a cache and an FP8 mode on around one use of a model, and off again (`accelerated`);
the calibrations the caches need, stored per model; which caches a model's denoiser can run."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import UsageError
from ..families.base import Family
from .diffusers_cache import DiffusersCacheConfig, apply_diffusers_cache, remove_diffusers_cache, unsupported
from .fp8 import FP8Config, apply_fp8, param_mem_mb, remove_fp8
from .options import DIFFUSERS_METHODS, CacheSpec, check_fp8, parse_cache
from .teacache import TeaCacheConfig, apply_teacache, probe_of, remove_teacache


def supported_caches(family: Family) -> list[str]:
    """The cache methods that run on this family's denoiser."""
    out = ["none"]
    try:
        probe_of(family.denoiser, TeaCacheConfig())
        out.append("teacache")
    except UsageError:
        pass
    return out + [m for m in DIFFUSERS_METHODS if unsupported(family.denoiser, m) is None]


@dataclass
class Applied:
    """What `accelerated` switched on, for the generation's record."""
    cache: str = "none"  # the cache as run, with its threshold resolved, e.g. "teacache:0.2"
    fp8: str = "off"
    param_mem_mb: float = 0.0  # denoiser parameter memory while switched on
    calibration: dict | None = field(default=None, repr=False)


def stored_calibration(family: Family, method: str, store=None) -> dict | None:
    """The calibration of `method` stored for this model (None: none, or one made for an older VERSION)."""
    from .calibrate import VERSION

    found = store.calibration(family.identity(), method) if store is not None else None
    return found if found is not None and found.get("version") == VERSION else None


def calibration(family: Family, method: str, *, store=None, log=None) -> dict:
    """The stored calibration of `method` for this model, or a fresh one (then stored)."""
    from .calibrate import CALIBRATORS

    found = stored_calibration(family, method, store)
    if found is None:
        key = family.identity()
        if log:
            log(f"calibrating {method} for {key} (once; stored in the lab database)")
        found = CALIBRATORS[method](family)
        if store is not None:
            store.save_calibration(key, method, found)
    return found


def _needs_calibration(spec: CacheSpec) -> bool:
    """TeaCache calibrates for its threshold (a threshold given needs none: it then reads on the
    stored polynomial where the model has one, else on the raw change); MagCache always needs its
    per-step ratios, which a threshold does not replace."""
    return spec.method == "magcache" or (spec.method == "teacache" and spec.threshold is None)


def _check_cache(family: Family, spec: CacheSpec) -> None:
    """Refuse a cache the model cannot run before any work (a calibration) is done."""
    if spec.method == "teacache":
        probe_of(family.denoiser, TeaCacheConfig())
    elif spec.method in DIFFUSERS_METHODS:
        reason = unsupported(family.denoiser, spec.method)
        if reason:
            raise UsageError(f"cache {spec.method}: {reason}")


def _switch_on_cache(family: Family, spec: CacheSpec, cal: dict | None, steps: int) -> str:
    model = family.denoiser
    if spec.method == "teacache":
        threshold = cal["threshold"] if spec.threshold is None else spec.threshold
        coefficients = tuple(cal["coefficients"]) if cal else None
        apply_teacache(model, TeaCacheConfig(threshold=threshold, coefficients=coefficients))
        return f"teacache:{threshold:g}"
    ratios = tuple(cal["mag_ratios"]) if cal else None
    apply_diffusers_cache(model, DiffusersCacheConfig(spec.method, spec.threshold, steps=steps, mag_ratios=ratios))
    return str(spec)


def _switch_off_cache(family: Family, method: str) -> None:
    if method == "teacache":
        remove_teacache(family.denoiser)
    elif method in DIFFUSERS_METHODS:
        remove_diffusers_cache(family.denoiser)


@contextmanager
def accelerated(family: Family, cache: str | CacheSpec | None = None, fp8: str | None = "off", *,
                steps: int = 50, store=None, log=None):
    """Switch a cache and an FP8 mode on for the block (one use of `family` at a time); the
    denoiser is restored exactly on the way out. Yields an `Applied`."""
    spec = cache if isinstance(cache, CacheSpec) else parse_cache(cache)
    mode = check_fp8(fp8)
    with family.lock:  # nobody else samples the model while it is changed
        _check_cache(family, spec)
        applied = Applied(fp8=mode)
        if _needs_calibration(spec):  # calibrated on the model as stored, before any FP8 rounding
            applied.calibration = calibration(family, spec.method, store=store, log=log)
        elif spec.method == "teacache":
            applied.calibration = stored_calibration(family, spec.method, store)
        apply_fp8(family.denoiser, FP8Config(mode))
        try:
            if spec.method != "none":
                applied.cache = _switch_on_cache(family, spec, applied.calibration, steps)
            applied.param_mem_mb = round(param_mem_mb(family.denoiser), 2)
            try:
                yield applied
            finally:
                _switch_off_cache(family, spec.method)
        finally:
            remove_fp8(family.denoiser)
