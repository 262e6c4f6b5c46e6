"""One generation as the CLI and the app run it: validate, sample, save, record."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from .accel import accelerated, check_fp8, parse_cache
from .errors import UsageError
from .families.base import Family
from .sampling import sample
from .store import Store

MAX_STEPS = 1000
MAX_GUIDANCE = 30.0
MAX_PROMPT = 1000
MAX_SEED = 2**32 - 1


@dataclass
class Request:
    prompt: str
    steps: int = 50
    guidance: float = 5.0
    seed: int = 0
    height: int | None = None  # None: the family's native size
    width: int | None = None
    cache: str = "none"  # METHOD[:THRESHOLD] (engine/accel); no threshold: the calibrated or default one
    fp8: str = "off"  # off | weights | compute

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise UsageError("prompt must be non-empty text")
        if len(self.prompt) > MAX_PROMPT:
            raise UsageError(f"prompt must be at most {MAX_PROMPT} characters, got {len(self.prompt)}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise UsageError(f"steps must be an integer in 1..{MAX_STEPS}, got {self.steps}")
        if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance) \
                or not 0 <= self.guidance <= MAX_GUIDANCE:
            raise UsageError(f"guidance must be a number in 0..{MAX_GUIDANCE:g} (1 = no guidance), got {self.guidance}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not 8 <= v <= 4096):
                raise UsageError(f"{name} must be an integer in 8..4096, got {v}")
        parse_cache(self.cache)
        check_fp8(self.fp8)


def run(family: Family, req: Request, *, model_name: str, store: Store | None = None,
        callback=None, log=None) -> tuple[Image.Image, dict]:
    """Generate one image. Returns the image and its record (the CLI's JSON line). `log` hears
    of slow one-off work (a cache calibrating itself for this model)."""
    req.check()
    h = req.height or family.default_size
    w = req.width or family.default_size
    family.check_size(h, w)
    with accelerated(family, req.cache, req.fp8, steps=req.steps, store=store, log=log) as acc:
        images, m = sample(family, [req.prompt], steps=req.steps, guidance=req.guidance, seeds=[req.seed],
                           height=h, width=w, callback=callback)
    image = Image.fromarray(images[0].numpy())
    record = {"model": model_name, "prompt": req.prompt, "steps": req.steps, "guidance": req.guidance,
              "seed": req.seed, "height": h, "width": w, **m.to_json(), "cache": acc.cache, "fp8": acc.fp8,
              "param_mem_mb": acc.param_mem_mb}
    if store is not None and store.root is not None:
        path = store.new_file(".png")
        image.save(path)
        record["id"] = store.record_generation(
            model=model_name, prompt=req.prompt, seed=req.seed, steps=req.steps, guidance=req.guidance,
            height=h, width=w, settings={"cache": acc.cache, "fp8": acc.fp8}, nfe=m.nfe, skipped=m.skipped,
            seconds=m.seconds, peak_mem_mb=m.peak_mem_mb, image=path.name)
    return image, record
