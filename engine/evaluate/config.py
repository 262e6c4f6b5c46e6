"""What an evaluation run scores: one model setting on a golden set against its teacher's images,
checked before anything heavy is imported."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UsageError, check_fields
from ..request import Request, check_guidance
from .golden import DEFAULT_EMBEDDED
from .vlm import VLMConfig

# what a run reports, overall and per category
METRICS = ("fid", "adherence", "clip_score", "psnr", "feature_distance", "diversity")
LABELS = {"fid": "FID ↓", "adherence": "adherence ↑", "clip_score": "CLIP score ↑", "psnr": "PSNR to teacher (dB) ↑",
          "feature_distance": "feature distance to teacher ↓", "diversity": "diversity over seeds ↑"}


@dataclass
class EvalConfig:
    model: str = "embedded"  # model name, model directory or cached hub id
    golden: str = str(DEFAULT_EMBEDDED)  # golden-set file (JSONL or one prompt a line)
    steps: int = 50  # sampling steps of the evaluated setting
    guidance: float = 5.0  # guidance scale (1 = none)
    cache: str = "none"  # METHOD[:THRESHOLD] (engine/accel/options.py)
    fp8: str = "off"  # off | weights | compute
    limit: int | None = None  # only the first N prompts of the golden set
    teacher: str | None = None  # reference model; None: the root of the model's lineage
    ref_steps: int = 50  # the teacher's reference images: full steps ...
    ref_guidance: float = 5.0  # ... with classifier-free guidance
    height: int | None = None  # None: the family's native size
    width: int | None = None
    clip_model: str | None = None  # transformers CLIP directory (or cached hub id) for CLIP score
    inception: str | None = None  # FID Inception weights file for real models; None: the torch hub cache
    vlm: VLMConfig | None = None  # optional VLM judge
    batch_size: int = 16  # images generated per forward batch
    diversity_k: int = 0  # seeds per prompt for diversity over seeds (0: not measured)
    device: str = "auto"
    dtype: str = "auto"

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        Request(prompt="golden", steps=self.steps, guidance=self.guidance, height=self.height, width=self.width,
                cache=self.cache, fp8=self.fp8).check()
        if not isinstance(self.ref_steps, int) or not 1 <= self.ref_steps <= 1000:
            raise UsageError(f"ref_steps must be an integer in 1..1000, got {self.ref_steps}")
        check_guidance(self.ref_guidance, "ref_guidance")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise UsageError(f"limit must be a positive integer, got {self.limit!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 4096:
            raise UsageError(f"batch_size must be an integer in 1..4096, got {self.batch_size!r}")
        if not isinstance(self.diversity_k, int) or not (self.diversity_k == 0 or 2 <= self.diversity_k <= 64):
            raise UsageError(f"diversity_k must be 0 (none) or a whole number of seeds in 2..64, "
                             f"got {self.diversity_k!r}")
        if self.vlm is not None:
            self.vlm.check()

    def settings(self) -> dict:
        """The evaluated setting, as results and the lineage view name it."""
        return {"model": self.model, "steps": self.steps, "guidance": self.guidance, "cache": self.cache,
                "fp8": self.fp8}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> EvalConfig:
        d = check_fields(cls, d, "evaluation")
        if d.get("vlm"):
            d["vlm"] = VLMConfig(**check_fields(VLMConfig, d["vlm"], "evaluation vlm"))
        return cls(**d)
