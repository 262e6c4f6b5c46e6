"""The seed's decision guide, answered from a model's own `bench` rows rather than generic numbers.

The guide: a small training budget -> guidance distillation (~2x); maximum throughput -> step
distillation (6-12x); real time -> both, plus FP8 (~24x); no retraining -> caching (~2x); one to four
steps -> consistency or distribution matching (at a cost in diversity, which bench measures). Here the
answers (can you retrain, how much training, what hardware, what latency, how much quality you can
give up) decide which measured rows are open to you; among those the recommendation is the
fastest row within the quality budget, or, with a latency target, the best-quality row that
meets it. A student that exists already (its row was measured) needs no training: it is open
whatever the budget. Rows that would be open but have not been measured (no student yet) are named.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from . import timing

BUDGETS = ("none", "small", "large")  # no training; hours of one GPU; days or several GPUs
HARDWARE = ("cpu", "gpu", "gpu-fp8")  # gpu-fp8: compute capability >= 8.9 (Ada, Hopper, Blackwell)

# What each bench row needs, and the guide's words for it.
NEEDS = {  # row key prefix -> (training budget, needs FP8-compute hardware, the guide's case)
    "teacher": ("none", False, "the baseline: full steps with CFG"),
    "teacher+fp8w": ("none", False, "no retraining, less memory: FP8 weight storage"),
    "teacher+fp8c": ("none", True, "no retraining, faster matmuls: FP8 compute"),
    "teacher+": ("none", False, "no retraining needed: caching"),
    "guidance": ("small", False, "ship fast on a small budget: guidance distillation"),
    "step8": ("large", False, "maximum throughput: step distillation"),
    "step4": ("large", False, "maximum throughput: step distillation"),
    "both": ("large", False, "real time: guidance + step distillation"),
    "both+fp8w": ("large", False, "real time: guidance + step distillation + FP8"),
    "step4+fp8w": ("large", False, "maximum throughput: step distillation + FP8"),
    "step4+": ("large", False, "step distillation, with caching on top"),
    "both+": ("large", False, "guidance + step distillation, with caching on top"),
    "consistency4": ("large", False, "few steps at any guidance: consistency distillation (LCM)"),
    "consistency2": ("large", False, "few steps at any guidance: consistency distillation (LCM)"),
    "dmd4": ("large", False, "real time: distribution matching (DMD2); check diversity"),
    "dmd1": ("large", False, "one pass: distribution matching (DMD2); check diversity"),
}


@dataclass
class Answers:
    can_retrain: bool = True  # can you train a student at all
    budget: str = "small"  # none | small | large (see BUDGETS)
    hardware: str = "gpu"  # cpu | gpu | gpu-fp8 (see HARDWARE)
    latency: float | None = None  # seconds per image you must meet on the bench's machine; None: no target
    max_loss: float = 0.05  # adherence you can give up against the teacher (or 1 - PSNR/40 without a judge)

    def check(self) -> None:
        if self.budget not in BUDGETS:
            raise UsageError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.hardware not in HARDWARE:
            raise UsageError(f"hardware must be one of {', '.join(HARDWARE)}, got {self.hardware!r}")
        if self.latency is not None and not self.latency > 0:
            raise UsageError(f"latency must be a positive number of seconds, got {self.latency}")
        if not 0 <= self.max_loss <= 1:
            raise UsageError(f"max_loss must be in 0..1, got {self.max_loss}")


def _needs(key: str) -> tuple[str, bool, str]:
    if key in NEEDS:
        return NEEDS[key]
    for prefix in sorted((k for k in NEEDS if k.endswith("+")), key=len, reverse=True):
        if key.startswith(prefix):
            return NEEDS[prefix]
    return ("large", False, key)


def _open(row: dict, a: Answers) -> bool:
    """Whether the answers allow a row: a measured student exists already and needs no training."""
    budget, fp8c, _ = _needs(row["key"])
    exists = "missing" not in row and not row["key"].startswith("teacher")
    budget_ok = exists or budget == "none" or (a.can_retrain and BUDGETS.index(a.budget) >= BUDGETS.index(budget))
    return budget_ok and (not fp8c or a.hardware == "gpu-fp8")


def asked(a: Answers) -> str:
    """The answers in words: 'you can retrain with a small budget and need 0.5 s per image on a CPU'."""
    train = "you cannot retrain" if not a.can_retrain or a.budget == "none" else \
        f"you can retrain with a {a.budget} budget"
    where = {"cpu": "a CPU", "gpu": "a GPU without FP8 compute", "gpu-fp8": "a GPU with FP8 compute"}[a.hardware]
    need = f"need {a.latency:g} s per image on {where}" if a.latency is not None else f"run on {where}"
    return f"{train} and {need}, giving up at most {a.max_loss:g} adherence"


def _loss(row: dict, teacher: dict) -> float:
    if row.get("adherence") is not None and teacher.get("adherence") is not None:
        return teacher["adherence"] - row["adherence"]
    return max(0.0, 1 - row.get("psnr_teacher", 0) / 40)  # no judge: closeness to the teacher stands in


def _name(r: dict) -> str:
    return r["row"] + (f" (`{r['model']}`)" if r.get("model") and not r["key"].startswith("teacher") else "")


def recommend(answers: Answers, bench: dict) -> dict:
    """{"choice": row or None, "why": [...], "open": [...], "unmeasured": [...]} from one bench result."""
    answers.check()
    rows = {r["key"]: r for r in bench["rows"]}
    teacher = rows.get("teacher")
    if teacher is None or "missing" in teacher:
        raise UsageError("this bench run has no measured teacher row; run bench again")
    measured = [r for r in bench["rows"] if "missing" not in r and _open(r, answers)]
    unmeasured = [r for r in bench["rows"] if "missing" in r and _open(r, answers)]
    why = []
    within = [r for r in measured if _loss(r, teacher) <= answers.max_loss + 1e-9]
    if not within:
        within = [teacher]
        why.append(f"no open row keeps quality within {answers.max_loss:g} of the teacher")
    if answers.latency is not None:
        fast_enough = [r for r in within if r["seconds"] <= answers.latency]
        if fast_enough:
            choice = max(fast_enough, key=lambda r: (-_loss(r, teacher), r["speedup"]))
            why.insert(0, f"{asked(answers)}: {_name(choice)} meets it at {choice['seconds']:.3g} s per image, "
                          f"the best quality of the {len(fast_enough)} open row(s) that do")
        else:
            choice = min(within, key=lambda r: r["seconds"])
            why.insert(0, f"{asked(answers)}: nothing open meets {answers.latency:g} s per image within the quality "
                          f"budget; {_name(choice)} is the fastest that keeps it, at {choice['seconds']:.3g} s")
            lossy = [r for r in measured if r["seconds"] <= answers.latency]
            if lossy:
                best = min(lossy, key=lambda r: _loss(r, teacher))
                why.append(f"{_name(best)} meets {answers.latency:g} s ({best['seconds']:.3g} s) but gives up "
                           f"{_loss(best, teacher):.3f} adherence")
    else:
        choice = min(within, key=lambda r: r["seconds"])
        why.insert(0, f"{asked(answers)}: {_name(choice)} is the fastest open row within {answers.max_loss:g} "
                      f"adherence of the teacher")
    if choice["key"] != "teacher" and not timing.distinguishable(choice.get("speedup_lo"), choice.get("speedup_hi")):
        why.append(f"its speed-up, {timing.describe(choice['speedup'], choice['speedup_lo'], choice['speedup_hi'])},"
                   f" may be no speed-up at all on this machine")
    why.append(f"the guide's case: {_needs(choice['key'])[2]}")
    if choice.get("chosen"):
        why.append(f"`{choice['model']}` is this row's student: {choice['chosen']}")
    if not choice["key"].startswith("teacher") and "missing" not in choice:
        why.append("the student exists already: it needs no training budget")
    if not answers.can_retrain or answers.budget == "none":
        why.append("without training: caching, FP8 and the students that exist already are open")
    if unmeasured:
        why.append("open but not measured yet (no student): " + ", ".join(r["row"] for r in unmeasured))
    return {"choice": choice, "why": why, "open": [r["key"] for r in measured],
            "unmeasured": [r["key"] for r in unmeasured], "teacher": teacher, "device": bench.get("device")}


def explain(result: dict) -> str:
    """The recommendation as Markdown, citing the measured row."""
    c, t = result["choice"], result["teacher"]
    lines = [f"### Recommendation: {c['row']}" + (f" (`{c['model']}`)" if c.get("model") else ""),
             f"Measured on {result['device']}: "
             f"**{timing.seconds(c['seconds'], c.get('seconds_lo'), c.get('seconds_hi'))} s/image**, "
             f"**{timing.describe(c['speedup'], c.get('speedup_lo'), c.get('speedup_hi'))}** the "
             f"teacher ({t['seconds']:.3g} s), NFE {c['nfe']:g}"
             + (f" ({c['skipped']:g} passes skipped)" if c.get("skipped") else "")
             + (f", adherence **{c['adherence']:.3f}** (teacher {t['adherence']:.3f})"
                if c.get("adherence") is not None else "")
             + (f", PSNR to the teacher {c['psnr_teacher']:g} dB" if c["key"] != "teacher" else "")
             + (f", parameters {c['param_mem_mb']:g} MB" if c.get("param_mem_mb") else "") + "."]
    lines += [f"- {w}" for w in result["why"]]
    return "\n".join(lines)
