"""Every family x every cache x FP8 off / weights (issue #15), each cell one image through
`engine.generate.run` as `python -m engine generate` makes it: the image is a real one, as close to
its family's plain image as the option promises, or the cell is refused with one UsageError line.

What each option promises, against the family's image with no cache and FP8 off (PSNR of the
uint8 images; the tiny random models below measure 34-62 dB with FP8 weights, 31-60 dB (or the
same image) with a cache, 28.8 dB at worst with both, on the embedded model):
- fp8 weights: the same image up to float8 rounding of the cast layers' weights (3 mantissa bits).
- teacache: its calibrated threshold kept 30 dB to the uncached images of the calibration prompts;
  this prompt is not one of them, so a few dB of slack.
- fbcache, magcache, taylorseer: diffusers' approximations at their suggested knobs.
A cache also promises to skip passes (fbcache only when the first block's residual barely moves,
which on a random model it need not), and the passes run plus those skipped add up.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from engine import registry
from engine.accel.calibrate import CALIBRATORS, CalibrationConfig
from engine.accel.hooks import is_clean
from engine.accel.options import CACHES
from engine.accel.runtime import supported_caches
from engine.errors import UsageError
from engine.families import synthetic
from engine.generate import run
from engine.request import Request
from engine.store import Store

KINDS = (*synthetic.KINDS, "embedded")
FP8 = ("off", "weights")
PROMPT, STEPS, GUIDANCE, SEED, SIZE = "a red fox in the snow", 8, 4.0, 3, 64
CALIBRATION = CalibrationConfig(prompts=2, steps=STEPS, guidance=GUIDANCE, size=SIZE)  # what `calibrate` stores

UNET = {"fbcache", "magcache", "taylorseer"}  # diffusers' caches hook transformer blocks, which a UNet has not
REFUSED = {  # cache -> why the lab cannot run it on the family (the message's words)
    "sd": dict.fromkeys(UNET, "not on UNet2DConditionModel; use teacache"),
    "sd-v": dict.fromkeys(UNET, "not on UNet2DConditionModel; use teacache"),
    "sdxl": dict.fromkeys(UNET, "not on UNet2DConditionModel; use teacache"),
    "embedded": dict.fromkeys(UNET, "not on UNet2DConditionModel; use teacache"),
    "sd3": dict.fromkeys(UNET, "not on SD3Transformer2DModel; use teacache"),  # diffusers has no cache hooks for it
    "flux2-klein": dict.fromkeys(("fbcache", "magcache"), "mix of double- and single-stream blocks; use teacache"),
    "flux": {},
    "flux-dev": {},
}
FP8_FLOOR = 30.0  # dB
CACHE_FLOOR = {"none": None, "teacache": 25.0, "fbcache": 35.0, "magcache": 35.0, "taylorseer": 35.0}  # dB
BOTH_SLACK = 3.0  # dB: FP8 and a cache together may stack their errors
SKIPS = {"teacache", "magcache", "taylorseer"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class Models:
    """Each family loaded once for the module, calibrated cheaply once, with its plain image."""

    def __init__(self, tiny_pipeline, tiny_model_dir):
        self.path = lambda kind: tiny_model_dir if kind == "embedded" else tiny_pipeline(kind)
        self.store = Store(memory=True)
        self.families, self.plain = {}, {}

    def family(self, kind: str):
        if kind not in self.families:
            fam = registry.load(str(self.path(kind)), device="cpu", dtype="float32")
            for method in ("teacache", "magcache"):
                if method in supported_caches(fam):
                    self.store.save_calibration(fam.identity(), method, CALIBRATORS[method](fam, CALIBRATION))
            self.families[kind] = fam
        return self.families[kind]

    def size(self, kind: str) -> int:
        return self.family(kind).default_size if kind == "embedded" else SIZE  # the embedded model has one size

    def generate(self, kind: str, cache: str = "none", fp8: str = "off"):
        size = self.size(kind)
        req = Request(prompt=PROMPT, steps=STEPS, guidance=GUIDANCE, seed=SEED, height=size, width=size,
                      cache=cache, fp8=fp8)
        image, record = run(self.family(kind), req, model_name=kind, store=self.store)
        return np.asarray(image), record

    def reference(self, kind: str) -> tuple[np.ndarray, dict]:
        """The family's image (and record) with no cache and FP8 off."""
        if kind not in self.plain:
            self.plain[kind] = self.generate(kind)
        return self.plain[kind]


@pytest.fixture(scope="module")
def models(tiny_pipeline, tiny_model_dir):
    return Models(tiny_pipeline, tiny_model_dir)


@pytest.mark.parametrize("kind", KINDS)
def test_supported_caches_are_the_cells_that_sample(models, kind):
    runs = [c for c in CACHES if c not in REFUSED[kind]]
    assert supported_caches(models.family(kind)) == runs


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("kind", KINDS)
def test_cell(models, kind, cache, fp8):
    fam = models.family(kind)
    if cache in REFUSED[kind]:
        with pytest.raises(UsageError) as refused:
            models.generate(kind, cache, fp8)
        msg = str(refused.value)
        assert "\n" not in msg and msg.startswith(f"cache {cache}: ") and msg.endswith(REFUSED[kind][cache])
        assert is_clean(fam.denoiser)
        return
    image, record = models.generate(kind, cache, fp8)
    size = models.size(kind)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    # a latent gone NaN or inf decodes to one flat colour; a real (if random) image varies
    assert image.std() > 10 and np.unique(image).size > 64
    assert record["cache"].partition(":")[0] == cache and record["fp8"] == fp8
    passes = 1 if fam.guidance_embedded else 2
    assert record["nfe"] + record["skipped"] == STEPS * passes
    if cache in SKIPS:
        assert record["skipped"] > 0
    elif cache == "none":
        assert record["skipped"] == 0
    assert is_clean(fam.denoiser)
    if cache == "none" and fp8 == "off":
        return
    plain, plain_record = models.reference(kind)
    if fp8 == "weights":  # the weights really were stored in float8 while the image was made
        assert record["param_mem_mb"] < 0.6 * plain_record["param_mem_mb"]
    floors = [f for f in (CACHE_FLOOR[cache], FP8_FLOOR if fp8 == "weights" else None) if f is not None]
    floor = min(floors) - (BOTH_SLACK if len(floors) == 2 else 0)
    got = psnr(image, plain)
    assert got >= floor, f"{kind} cache={cache} fp8={fp8}: {got:.1f} dB to the plain image, promised >= {floor:g}"
    if fp8 == "weights":
        assert got < float("inf")  # float8 rounding reached the image


def test_the_cli_refuses_a_cell_in_one_line_and_exits_2(tiny_pipeline, data_dir, tmp_path):
    out = tmp_path / "x.png"
    r = run_cli("generate", "--model", str(tiny_pipeline("sdxl")), "--prompt", PROMPT, "--steps", "2",
                "--height", "64", "--width", "64", "--cache", "magcache", "--fp8", "weights", "--device", "cpu",
                "--out", str(out), data_dir=data_dir)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: cache magcache: diffusers' magcache runs on its transformer classes, "
                      "not on UNet2DConditionModel; use teacache"]
