"""How the embedded domain's two networks are trained (the teacher, engine/train_teacher.py; the
judge, train_judge.py), as configs checked before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..paths import EMBEDDED_TEACHER, JUDGE_WEIGHTS


@dataclass
class TeacherTrainConfig:
    steps: int = 6000  # optimisation steps (an upper bound when `minutes` is set)
    minutes: float | None = None  # wall-clock budget: fit the step count (and LR schedule) to it
    batch_size: int = 64
    lr: float = 1e-3  # peak AdamW learning rate; linear warm-up, cosine decay to 10%
    warmup: int = 200
    ema: float = 0.999  # decay of the exponential moving average that is saved
    cond_dropout: float = 0.1  # probability of training on the empty prompt
    caption_noise: float = 0.1  # probability that a caption describes the scene with one attribute wrong
    dataset: int = 100_000  # distinct rendered scenes; captions are drawn afresh every time
    precision: str = "auto"  # "bf16" (autocast), "fp32", or auto: bf16 on CUDA, fp32 on CPU (faster there)
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    init: str | None = None  # continue from this model directory's weights instead of from scratch
    out: str = str(EMBEDDED_TEACHER)

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        if not 0 <= self.caption_noise < 1:
            raise UsageError(f"caption_noise must be at least 0 and below 1, got {self.caption_noise}")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if self.minutes is not None and not self.minutes > 0:
            raise UsageError(f"minutes must be positive, got {self.minutes}")


@dataclass
class JudgeTrainConfig:
    steps: int = 3000  # optimisation steps
    batch_size: int = 128
    lr: float = 2e-3  # peak AdamW learning rate, cosine decay to 0
    dataset: int = 60000  # distinct rendered scenes (uniform distribution)
    eval_size: int = 5000  # fresh scenes for the accuracy check
    noise: float = 0.08  # max std of Gaussian noise added in training, in [-1, 1] units
    seed: int = 0
    device: str = "auto"
    out: str = str(JUDGE_WEIGHTS)
