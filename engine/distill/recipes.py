"""Distillation recipes: what a job trains, as dataclasses that serialise to JSON for the job table.

Techniques (DESIGN.md §4-5):
- `guidance`: Meng et al. 2023 stage 1, one round; the student takes the guidance scale as input.
- `progressive`: Salimans & Ho 2022, rounds that halve the step count from `from_steps` to `to_steps`.
- `guidance+progressive`: both, in the order that works (guidance first; Meng et al. stage 2).
- `consistency`: consistency distillation (Song et al. 2023; LCM, Luo et al. 2023), one round; the
  student takes the guidance scale as input and samples in 1-8 steps by consistency sampling.
- `dmd`: distribution matching distillation (DMD2, Yin et al. 2024), one round; a generator of
  `student_steps` steps against the teacher's guided score and a fake score trained alongside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError, check_fields
from ..request import check_guidance

TECHNIQUES = ("guidance", "progressive", "guidance+progressive", "consistency", "dmd")
FEW_STEP = ("consistency", "dmd")  # one-round techniques whose students sample by consistency sampling
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
STUDENT_PREDICTION = ("auto", "keep")
RETIRED = {"guidance"}  # fields older recipes carry that nothing reads any more
ALIASES = {"both": "guidance+progressive"}


@dataclass
class LoraSpec:
    rank: int = 8  # LoRA rank r
    alpha: float | None = None  # LoRA alpha (scale alpha / r); None = rank
    target_modules: list[str] | None = None  # None = the family's default (attention projections)
    save: str = "merged"  # "merged": a plain model; "adapter": LoRA weights that load onto the teacher


@dataclass
class Recipe:
    technique: str  # one of TECHNIQUES
    teacher: str  # a model name (`embedded`, a registered student) or a model directory
    name: str  # the student's name (the last round's); earlier rounds register NAME-r<k>-<steps>step
    train_steps: int = 1000  # optimisation steps per round
    lr: float = 5e-5  # peak learning rate of each round (linear warm-up, cosine decay)
    warmup: int = 50  # warm-up steps of each round
    batch_size: int = 24  # samples per optimisation step (per process)
    guidance_min: float = 1.0  # guidance distillation: range of scales s the student learns
    guidance_max: float = 8.0
    from_steps: int = 64  # progressive: teacher steps of the first round
    to_steps: int = 4  # progressive: student steps of the last round
    teacher_steps: int = 32  # guidance: grid of the teacher trajectories the student learns on
    lora: LoraSpec | None = None  # train a LoRA student instead of all weights
    ema: float | None = 0.995  # EMA decay of the student weights (None: no EMA)
    grad_clip: float = 1.0
    checkpoint_every: int = 100  # optimisation steps between checkpoints
    sample_every: int = 100  # the student's images at fixed seeds every this many steps (0: none)
    mixed_precision: str = "auto"  # accelerate's mixed precision: auto = bf16 on CUDA, no on CPU
    eval_n: int = 120  # embedded domain: prompts scored for adherence after every round (0: none)
    eval_steps: int = 50  # ... at this many steps for a guidance round (a progressive round uses its own)
    prompts: str | None = None  # a file of training prompts (one per line); None: the domain's own
    init: str | None = None  # start the first round's student from this model (e.g. to train a student longer)
    student_prediction: str = "auto"  # progressive: "auto" reads an eps-predicting UNet student as v (DESIGN
    # §5: eps breaks at high noise with few steps); "keep": the teacher's prediction type
    on_policy: float = 0.0  # fraction of walkers that move on by the student's own prediction rather than the
    # teacher's, so the student also learns at the states its own errors lead to (0: the teacher's trajectories)
    student_steps: int = 4  # consistency: the steps its student samples (and is scored) at; dmd: the generator's K
    target_ema: float = 0.95  # consistency: EMA decay of the target network (0: the student itself, no gradient)
    huber_c: float = 0.001  # consistency: pseudo-Huber c = huber_c * sqrt(dimensions of a sample)
    real_guidance: float = 5.0  # dmd: guidance scale of the teacher's (real) score
    fake_updates: int = 5  # dmd: fake-score updates per generator update (DMD2's two time-scale rule)
    fake_lr: float | None = None  # dmd: the fake score's learning rate (None: lr)
    gan_weight: float = 0.0  # dmd: weight of DMD2's GAN term, a classifier on the fake score's features (0: off)
    gradient_checkpointing: bool = False  # recompute the student's block activations in the backward
    # (diffusers' own switch on the denoiser): less memory, about a third more time per step
    seed: int = 0

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Recipe:
        """The recipe of `to_json`'s dict; a field it does not know is refused, by name."""
        d = check_fields(cls, {k: v for k, v in d.items() if k not in RETIRED}, "recipe")
        if d.get("lora") is not None:
            d["lora"] = LoraSpec(**check_fields(LoraSpec, d["lora"], "recipe lora"))
        return cls(**d)

    # -- the rounds it will run -------------------------------------------------------------------
    def rounds(self) -> list[dict]:
        """[{'kind': 'guidance'} | {'kind': 'progressive', 'teacher_steps': N, 'student_steps': N // 2}]"""
        if self.technique in FEW_STEP:
            return [{"kind": self.technique, "student_steps": self.student_steps}]
        out = []
        if "guidance" in self.technique:
            out.append({"kind": "guidance"})
        if "progressive" in self.technique:
            n = self.from_steps
            while n > self.to_steps:
                out.append({"kind": "progressive", "teacher_steps": n, "student_steps": n // 2})
                n //= 2
        return out

    # -- validation -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        if self.technique not in TECHNIQUES:
            raise UsageError(f"technique must be one of {', '.join(TECHNIQUES)}, got {self.technique!r}")
        if not self.name or not self.name.strip() or len(self.name) > 64 or any(c in self.name for c in "/\\ "):
            raise UsageError(f"name must be 1..64 characters without spaces or slashes, got {self.name!r}")
        _positive_int("train_steps", self.train_steps, 1_000_000)
        _positive_int("batch_size", self.batch_size, 65_536)
        _positive_int("checkpoint_every", self.checkpoint_every, 10_000_000)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise UsageError(f"lr must be a number in (0, 1], got {self.lr}")
        if not isinstance(self.sample_every, int) or not 0 <= self.sample_every <= 10_000_000:
            raise UsageError(f"sample_every must be an integer in 0..10000000 (0: no samples), got {self.sample_every}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"warmup must be an integer >= 0, got {self.warmup}")
        for k in ("guidance_min", "guidance_max"):
            check_guidance(getattr(self, k), k)
        if self.guidance_min > self.guidance_max:
            raise UsageError(f"guidance_min ({self.guidance_min}) must not exceed guidance_max ({self.guidance_max})")
        if "progressive" in self.technique:
            _positive_int("from_steps", self.from_steps, 4096)
            _positive_int("to_steps", self.to_steps, 4096)
            if self.to_steps >= self.from_steps:
                raise UsageError(f"to_steps ({self.to_steps}) must be smaller than from_steps ({self.from_steps})")
            ratio = self.from_steps / self.to_steps
            if ratio != 2 ** round(math.log2(ratio)):
                raise UsageError(f"from_steps / to_steps must be a power of two (each round halves the steps), "
                                 f"got {self.from_steps} -> {self.to_steps}")
        if self.technique in ("guidance", "guidance+progressive", "consistency"):
            _positive_int("teacher_steps", self.teacher_steps, 4096)
        if self.technique in FEW_STEP:
            _positive_int("student_steps", self.student_steps, 64)
        if self.technique == "consistency":
            if self.teacher_steps < 2:
                raise UsageError(f"teacher_steps must be at least 2 for consistency (the teacher's grid), "
                                 f"got {self.teacher_steps}")
            if not (isinstance(self.target_ema, (int, float)) and 0 <= self.target_ema < 1):
                raise UsageError(f"target_ema must be a number in [0, 1), got {self.target_ema}")
            if not (isinstance(self.huber_c, (int, float)) and math.isfinite(self.huber_c) and self.huber_c > 0):
                raise UsageError(f"huber_c must be a positive number, got {self.huber_c}")
        if self.technique == "dmd":
            check_guidance(self.real_guidance, "real_guidance")
            _positive_int("fake_updates", self.fake_updates, 100)
            if self.fake_lr is not None and not (isinstance(self.fake_lr, (int, float)) and math.isfinite(self.fake_lr)
                                                 and 0 < self.fake_lr <= 1):
                raise UsageError(f"fake_lr must be a number in (0, 1], got {self.fake_lr}")
            if not (isinstance(self.gan_weight, (int, float)) and math.isfinite(self.gan_weight)
                    and 0 <= self.gan_weight <= 10):
                raise UsageError(f"gan_weight must be a number in 0..10 (0: no GAN term), got {self.gan_weight}")
        if self.lora is not None:
            r = self.lora.rank
            if not isinstance(r, int) or not 1 <= r <= 1024:
                raise UsageError(f"lora rank must be an integer in 1..1024, got {r}")
            if self.lora.alpha is not None and not (math.isfinite(self.lora.alpha) and self.lora.alpha > 0):
                raise UsageError(f"lora alpha must be a positive number, got {self.lora.alpha}")
            if self.lora.save not in ("merged", "adapter"):
                raise UsageError(f"lora save must be 'merged' or 'adapter', got {self.lora.save!r}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise UsageError(f"ema must be in (0, 1), got {self.ema}")
        if self.student_prediction not in STUDENT_PREDICTION:
            raise UsageError(f"student_prediction must be one of {', '.join(STUDENT_PREDICTION)}, "
                             f"got {self.student_prediction!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")
        if not (isinstance(self.on_policy, (int, float)) and 0 <= self.on_policy <= 1):
            raise UsageError(f"on_policy must be a number in 0..1, got {self.on_policy}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise UsageError(f"gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if not isinstance(self.eval_n, int) or self.eval_n < 0:
            raise UsageError(f"eval_n must be an integer >= 0, got {self.eval_n}")


def _positive_int(name: str, v, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
        raise UsageError(f"{name} must be an integer in 1..{hi}, got {v}")


def from_inputs(values: dict) -> Recipe:
    """A recipe from a form's or the command line's values, by field name - the one mapping both
    fronts use. Blank values (None, '') take the recipe's defaults; technique `both` is
    guidance+progressive; `ema` 0 is no EMA; `lora` (a switch), `lora_rank`, `lora_alpha` and
    `lora_save` make a LoRA student; numbers are read as their field's type, a bad one refused by name."""
    values = {k: v for k, v in values.items() if v is not None and v != ""}
    lora_keys = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_save": "save"}
    lora = {lora_keys[k]: values.pop(k) for k in list(values) if k in lora_keys}
    if values.pop("lora", "rank" in lora):
        lora = LoraSpec(**{k: _typed(f"lora_{k}", v, LoraSpec) for k, v in lora.items()})
    else:
        lora = None
    check_fields(Recipe, values, "recipe")
    if "technique" in values:
        values["technique"] = ALIASES.get(values["technique"], values["technique"])
    fields = {k: _typed(k, v, Recipe) for k, v in values.items()}
    if fields.get("ema") == 0:
        fields["ema"] = None
    for k in ("technique", "teacher", "name"):
        fields.setdefault(k, "")
    return Recipe(**fields, lora=lora)


def _typed(name: str, value, cls):
    """`value` as the type of `cls`'s field (int, float or text)."""
    kind = cls.__dataclass_fields__[name.removeprefix("lora_") if cls is LoraSpec else name].type
    if "int" in kind or "float" in kind:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name} must be a number, got {value!r}") from None
        if "int" in kind:
            if not number.is_integer():
                raise UsageError(f"{name} must be a whole number, got {value!r}")
            return int(number)
        return number
    return value.strip() if isinstance(value, str) else value


def read_prompts(path: str) -> list[str]:
    """The training prompts of a prompt file, one a line."""
    if not Path(path).is_file():
        raise UsageError(f"prompts: no such file {path!r}")
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise UsageError(f"prompts: {path!r} is not UTF-8 text (one prompt a line)") from None
    if not lines:
        raise UsageError(f"prompts: {path!r} has no prompts (one per line)")
    bad = next((i for i, ln in enumerate(lines, 1) if not ln.isprintable()), None)
    if bad:
        raise UsageError(f"prompts: prompt {bad} of {path!r} holds control characters; one prompt of text a line")
    return lines


def order_warning(technique: str, teacher_guidance_embedded: bool, teacher_uses_cfg: bool = True) -> str | None:
    """The seed's pitfall: step distillation of a CFG teacher before guidance distillation."""
    if technique == "progressive" and teacher_uses_cfg and not teacher_guidance_embedded:
        return ("warning: step distillation of a teacher that still needs two passes for guidance: distill "
                "guidance first (technique guidance+progressive, or a guidance-distilled teacher) - with fewer "
                "steps the guidance effect is already weakened")
    return None


__all__ = ["LoraSpec", "Recipe", "TECHNIQUES", "from_inputs", "order_warning", "read_prompts"]
