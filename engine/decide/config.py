"""What a bench run and a sweep measure, checked before anything heavy is imported."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..accel.options import check_threshold, parse_cache
from ..errors import UsageError
from ..request import Request, check_guidance

ROLES = ("guidance", "step8", "step4", "both", "consistency4", "consistency2", "dmd4", "dmd1")  # the students
# a bench table has a row for
MAX_CELLS = 36


@dataclass
class BenchConfig:
    model: str = "embedded"  # the teacher: a model name or directory
    steps: int = 50  # the teacher's (and the guidance student's) sampling steps
    guidance: float = 5.0  # guidance scale s
    n: int = 60  # prompts scored for quality per row
    timing: int = 5  # timed generations per row, after an untimed warm-up (median and its interval)
    timing_batch: int | tuple[int, ...] = 1  # images per timed generation: 1 = latency; more = throughput
    # (s/image = time / batch); several sizes time each row at each, in the same round-robin
    seed: int = 0  # seeds the prompts and their noise
    batch_size: int = 30  # images per batch in the quality pass
    thresholds: tuple[float, ...] | None = None  # cache thresholds; None: the calibrated one and twice it
    students: dict[str, str] = field(default_factory=dict)  # role (ROLES) -> model name, instead of discovery
    diversity: int = 0  # embedded domain: prompts whose K seeds score each row's diversity (0: no diversity column)
    diversity_k: int = 8  # seeds per prompt for diversity
    threads: int = 1  # torch threads on a CPU while it runs (1: steady timings on a shared CPU; 0: torch's own)

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        check_guidance(self.guidance)
        for name in ("n", "timing"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UsageError(f"{name} must be a whole number >= 1, got {v}")
        check_threads(self.threads)
        for role, name in self.students.items():
            if role not in ROLES or not name:
                raise UsageError(f"student must be ROLE=NAME with ROLE one of {', '.join(ROLES)}, got {role}={name}")
        for th in self.thresholds or ():
            check_threshold(th, "thresholds")
        if not isinstance(self.diversity, int) or self.diversity < 0:
            raise UsageError(f"diversity must be a whole number of prompts >= 0, got {self.diversity}")
        if not isinstance(self.diversity_k, int) or not 2 <= self.diversity_k <= 64:
            raise UsageError(f"diversity_k must be a whole number of seeds in 2..64, got {self.diversity_k}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> BenchConfig:
        d = known(cls, d)
        if isinstance(d.get("timing_batch"), list):
            d["timing_batch"] = tuple(d["timing_batch"])
        if d.get("thresholds") is not None:
            d["thresholds"] = tuple(d["thresholds"])
        return cls(**d)


def known(cls, d: dict) -> dict:
    """The fields of `cls` in a saved config (a job's payload); a field it does not know is refused."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UsageError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    return dict(d)


def check_threads(threads) -> None:
    if not isinstance(threads, int) or not 0 <= threads <= 1024:
        raise UsageError(f"threads must be a whole number in 0..1024 (0: torch's own), got {threads}")


@dataclass
class SweepConfig:
    prompt: str  # the prompt every cell renders
    seed: int = 0
    steps: tuple[int, ...] = (50, 20, 8)  # rows of the grid
    guidance: tuple[float, ...] = (1.0, 5.0)  # columns, unless thresholds are given
    cache: str = "none"  # cache method of every cell; with thresholds, the columns are its thresholds
    thresholds: tuple[float, ...] = ()  # cache thresholds (then guidance uses its first value only)
    fp8: str = "off"  # off | weights | compute, for every cell
    n: int = 0  # embedded domain: prompts scored for adherence per cell (0: PSNR only)
    quality_seed: int = 0  # seeds those prompts
    timing: int = 3  # timed images per cell after its untimed warm-up (median and its interval)
    threads: int = 1  # torch threads on a CPU while it runs (1: steady timings on a shared CPU; 0: torch's own)

    def check(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed."""
        Request(prompt=self.prompt, seed=self.seed, cache=self.cache, fp8=self.fp8).check()
        for g in self.guidance:
            check_guidance(g)
        if not isinstance(self.timing, int) or not 1 <= self.timing <= 20:
            raise UsageError(f"timing must be a whole number of timed images in 1..20, got {self.timing}")
        check_threads(self.threads)
        self.cells()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SweepConfig:
        d = known(cls, d)
        for name in ("steps", "guidance", "thresholds"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def cells(self) -> list[dict]:
        method = parse_cache(self.cache).method
        if self.thresholds and method == "none":
            raise UsageError("thresholds need a cache method (teacache, fbcache, ...)")
        if self.thresholds:
            grid = [{"steps": s, "guidance": self.guidance[0], "cache": f"{method}:{th:g}"}
                    for s in self.steps for th in self.thresholds]
        else:
            grid = [{"steps": s, "guidance": g, "cache": self.cache} for s in self.steps for g in self.guidance]
        if not grid:
            raise UsageError("sweep needs at least one steps value and one guidance value")
        if len(grid) > MAX_CELLS:
            raise UsageError(f"sweep has {len(grid)} cells; at most {MAX_CELLS}")
        return grid
