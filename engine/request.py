"""What one generation asks for - prompt, steps, guidance, seed, size, cache, FP8 - and the ranges
each may take, checked before anything heavy is imported (the CLI refuses a bad flag at once)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .accel.options import check_fp8, parse_cache
from .errors import UsageError

MAX_STEPS = 1000
GUIDANCE_RANGE = (0.0, 30.0)  # guidance scale s: 1 = no guidance, 0 = the unconditional model
MAX_PROMPT = 1000
MAX_SEED = 2**32 - 1
SIZE_RANGE = (8, 4096)


def check_guidance(g, field: str = "guidance") -> float:
    """A guidance scale in GUIDANCE_RANGE, or UsageError naming `field`."""
    lo, hi = GUIDANCE_RANGE
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not lo <= g <= hi:
        raise UsageError(f"{field} must be a number in {lo:g}..{hi:g} (1 = no guidance), got {g}")
    return float(g)


@dataclass
class Request:
    prompt: str
    steps: int | None = None  # None: the model's own (engine/generate.py `defaults`)
    guidance: float | None = None  # None: the model's own
    seed: int = 0
    height: int | None = None  # None: the family's native size
    width: int | None = None
    cache: str = "none"  # METHOD[:THRESHOLD] (engine/accel/options.py); no threshold: the calibrated or default one
    fp8: str = "off"  # off | weights | compute

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise UsageError("prompt must be non-empty text")
        if len(self.prompt) > MAX_PROMPT:
            raise UsageError(f"prompt must be at most {MAX_PROMPT} characters, got {len(self.prompt)}")
        if self.steps is not None and (not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS):
            raise UsageError(f"steps must be an integer in 1..{MAX_STEPS}, got {self.steps}")
        if self.guidance is not None:
            check_guidance(self.guidance)
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed}")
        lo, hi = SIZE_RANGE
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not lo <= v <= hi):
                raise UsageError(f"{name} must be an integer in {lo}..{hi}, got {v}")
        parse_cache(self.cache)
        check_fp8(self.fp8)
