"""Cache calibration (engine/accel/calibrate.py, and when `accelerated` asks for one): it runs at a
small image side, not the model's native one, and not at all for a TeaCache threshold given."""

import pytest

from engine import registry
from engine.accel import calibrate
from engine.accel.calibrate import VERSION, CalibrationConfig, calibrate_teacache, calibration_size
from engine.accel.hooks import is_clean
from engine.accel.runtime import accelerated
from engine.accel.teacache import HOOK
from engine.sampling import sample


@pytest.fixture
def sizes(monkeypatch):
    """The (height, width) of every sampling run a calibration makes."""
    seen = []

    def spy(family, prompts, **kw):
        seen.append((kw["height"], kw["width"]))
        return sample(family, prompts, **kw)
    monkeypatch.setattr(calibrate, "sample", spy)
    return seen


@pytest.fixture
def flux(tiny_pipeline):
    """A tiny FLUX.1 saved without lab.json, so its default size is the pipeline's native 1024."""
    fam = registry.load(str(tiny_pipeline("flux")), device="cpu")
    assert fam.default_size == 1024
    return fam


def test_calibration_runs_at_a_small_size_not_the_native_one(flux, sizes):
    cal = calibrate_teacache(flux, CalibrationConfig(prompts=1, steps=4, thresholds=(0.1, 0.3)))
    assert sizes and set(sizes) == {(256, 256)} and cal["size"] == 256
    assert is_clean(flux.denoiser)


def test_calibration_size_is_the_models_own_where_smaller_and_one_it_can_make(flux, tiny_family, tiny_pipeline):
    assert calibration_size(flux, CalibrationConfig(size=250)) == 240  # FLUX: multiples of 16
    sd = registry.load(str(tiny_pipeline("sd")), device="cpu")
    assert calibration_size(sd, CalibrationConfig()) == sd.default_size == 64
    side = tiny_family.default_size  # the embedded model makes images of its one size only
    assert calibration_size(tiny_family, CalibrationConfig(size=side // 2)) == side


def test_magcache_calibrates_on_first_use_at_the_small_size(flux, sizes, memory_store, monkeypatch):
    """MagCache needs the model's per-step ratios even with a threshold given: measured once, small."""
    cheap = CalibrationConfig(prompts=1, steps=6)
    monkeypatch.setitem(calibrate.CALIBRATORS, "magcache", lambda family: calibrate.calibrate_magcache(family, cheap))
    with accelerated(flux, "magcache:0.1", steps=6, store=memory_store) as acc:
        assert set(sizes) == {(256, 256)}
        _, m = sample(flux, ["a cat"], steps=6, guidance=3.0, seeds=[0], height=64, width=64)
    stored = memory_store.calibration(flux.identity(), "magcache")
    assert stored["size"] == 256 and len(stored["mag_ratios"]) == 6
    assert acc.calibration["mag_ratios"] == stored["mag_ratios"]
    assert m.nfe + m.skipped == 12 and is_clean(flux.denoiser)


def test_a_teacache_threshold_given_runs_no_calibration(tiny_family, memory_store, monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("calibrated although the threshold was given")
    monkeypatch.setitem(calibrate.CALIBRATORS, "teacache", refuse)
    kw = dict(steps=8, guidance=4.0, seeds=[1], height=tiny_family.default_size, width=tiny_family.default_size)
    with accelerated(tiny_family, "teacache:0.3", steps=8, store=memory_store) as acc:
        hook = tiny_family.denoiser._diffusers_hook.get_hook(HOOK)
        _, m = sample(tiny_family, ["a red star"], **kw)
    assert acc.cache == "teacache:0.3" and acc.calibration is None and m.skipped > 0
    assert hook.config.coefficients is None  # no polynomial stored: the threshold reads on the raw change
    assert memory_store.calibration(tiny_family.identity(), "teacache") is None  # and no record was made
    # a stored calibration lends its polynomial to a threshold given, still without calibrating
    memory_store.save_calibration(tiny_family.identity(), "teacache", {
        "method": "teacache", "version": VERSION, "coefficients": [2.0, 0.0], "threshold": 0.1})
    with accelerated(tiny_family, "teacache:0.3", steps=8, store=memory_store) as acc:
        hook = tiny_family.denoiser._diffusers_hook.get_hook(HOOK)
    assert hook.config.coefficients == (2.0, 0.0) and hook.config.threshold == 0.3
    assert is_clean(tiny_family.denoiser)


def test_teacache_without_a_threshold_calibrates_once_and_stores_it(tiny_family, memory_store, monkeypatch):
    calls = []

    def fake(family, cfg=CalibrationConfig(), progress=None):
        calls.append(family)
        return {"method": "teacache", "version": VERSION, "coefficients": [1.0, 0.0], "threshold": 0.2}
    monkeypatch.setitem(calibrate.CALIBRATORS, "teacache", fake)
    for _ in range(2):
        with accelerated(tiny_family, "teacache", steps=8, store=memory_store) as acc:
            pass
    assert len(calls) == 1 and acc.cache == "teacache:0.2"
    assert memory_store.calibration(tiny_family.identity(), "teacache")["threshold"] == 0.2
