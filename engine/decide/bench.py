"""`python -m engine bench`: the seed's decision table, measured on one model and one machine.

Rows: the teacher (full steps, CFG); its guidance-distilled, step-distilled (8 and 4 steps) and
both-distilled students; its consistency student at 4 and 2 steps and its DMD students at 4 and 1;
FP8 on the teacher and on the fastest student; TeaCache (or the model's
diffusers cache) at the calibrated threshold and a faster one, on the teacher and on the 4-step
student. Each student row names its model and why it is the one (picked, shipped, the most trained:
`candidates`). Per row: NFE and passes skipped, seconds per image (median of timed runs of
`timing_batch` images after an untimed warm-up, timed round-robin across the rows so a busy machine
slows every row alike, one torch thread on a CPU), speed-up over the teacher (the median of the
per-round ratios), each with the interval of its median (engine/decide/timing.py), peak and
parameter memory, and quality: adherence (embedded domain, GenEval-style, by the judge)
FID to the teacher's images in the judge's feature space, PSNR to the teacher's image and to the
same model without the speed feature, at the same prompt and seed, and (`diversity` > 0) diversity
over seeds with its bootstrap interval (engine/evaluate/diversity.py). A student that does not
exist yet gets a row that says so.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

from .. import registry
from ..accel.fp8 import compute_capable
from ..accel.runtime import accelerated, calibration, supported_caches
from ..distill.recipes import Recipe
from ..errors import UsageError
from ..evaluate.adherence import score, summarize
from ..evaluate.diversity import evaluate as diversity
from ..evaluate.metrics import JudgeFeatures, frechet_distance
from ..families.base import Family
from ..measure import psnr_per_image
from ..sampling import sample
from ..world import sample_prompts
from . import timing
from .config import BenchConfig

# Conventional names of MODEL's students for each role (config.ROLES), tried after the lineage (`discover`).
STUDENT_NAMES = {
    "guidance": ("{m}-guidance",),
    "step8": ("{m}-8step", "{m}-progressive-8step"),
    "step4": ("{m}-4step", "{m}-progressive-4step"),
    "both": ("{m}-guidance-4step", "{m}-both-4step", "{m}-guidance+progressive-4step"),
    "consistency4": ("{m}-consistency", "{m}-lcm"),
    "consistency2": ("{m}-consistency", "{m}-lcm"),  # a consistency student samples at any few steps
    "dmd4": ("{m}-dmd4", "{m}-dmd-4step"),
    "dmd1": ("{m}-1step", "{m}-dmd1", "{m}-dmd-1step"),
}
FEW_STEP_ROLES = {"consistency4": 4, "consistency2": 2, "dmd4": 4, "dmd1": 1}  # role -> sampling steps


@dataclass
class Row:
    key: str  # stable id, e.g. "teacher", "teacher+teacache@0.2"
    label: str  # what the decision table calls it
    model: str | None  # None: the student does not exist
    steps: int
    guidance: float
    cache: str = "none"
    fp8: str = "off"
    base: str | None = None  # key of the same model without this row's speed feature
    missing: str | None = None  # why the row could not be measured
    chosen: str = ""  # a student row: why this student (picked, shipped, the most trained, ...)


def _round_of(row: dict) -> dict | None:
    """What a registered student's round did: {'kind': 'guidance'} or {'kind': 'progressive', 'student_steps': N}."""
    if not row.get("recipe") or row.get("round") is None:
        return None
    try:
        return Recipe.from_json(row["recipe"]).rounds()[row["round"]]
    except (UsageError, ValueError, IndexError, TypeError):
        return None


def _trained(row: dict) -> int:
    """Optimisation steps behind a student: its recipe's steps per round times the rounds up to its own."""
    try:
        return int(Recipe.from_json(row["recipe"]).train_steps) * (int(row["round"]) + 1)
    except (UsageError, ValueError, TypeError, KeyError):
        return 0


def candidates(store, teacher: str) -> dict[str, list[dict]]:
    """Every student of `teacher` for each role (shipped or registered), best first: the shipped one,
    then the most trained (a 30-step test job never stands in for a real student), then the newest.
    Each is {"name", "shipped", "trained"}; roles come from the lineage and the recipe each
    distillation job recorded (a progressive student of a guidance student counts as both)."""
    found: dict[str, list[tuple]] = {}
    for order, row in enumerate(registry.models(store)):  # oldest first
        chain = registry.lineage(store, row["name"])
        if teacher not in chain[:-1]:
            continue
        this = _round_of(row)
        if this is None:
            continue
        rounds = [_round_of(r) for r in (registry.model_row(store, n) for n in chain) if r]
        guided = any(r and r["kind"] == "guidance" for r in rounds)
        roles: list[tuple[str, bool]] = []  # (role, the student's own steps are the role's)
        if this["kind"] == "consistency":  # one consistency student serves both rows, its own steps first
            roles = [(role, this["student_steps"] == steps) for role, steps in (("consistency4", 4),
                                                                                ("consistency2", 2))]
        elif this["kind"] == "dmd":
            if f"dmd{this['student_steps']}" in FEW_STEP_ROLES:
                roles = [(f"dmd{this['student_steps']}", True)]
        elif this["kind"] == "guidance":
            roles = [("guidance", True)]
        elif this["student_steps"] in (4, 8):
            role = "both" if guided and this["student_steps"] == 4 else f"step{this['student_steps']}"
            if role != "step8" or not guided:
                roles = [(role, True)]
        shipped = row.get("created") is None and row["name"] in registry.SHIPPED
        for role, own in roles:
            found.setdefault(role, []).append((own, shipped, _trained(row), order, row["name"]))
    return {role: [{"name": name, "shipped": shipped, "trained": trained}
                   for own, shipped, trained, order, name in sorted(rows, reverse=True)]
            for role, rows in found.items()}


def why_chosen(found: list[dict], name: str) -> str:
    """The rule that chose `name` among a role's candidates, in words."""
    pick = next((c for c in found if c["name"] == name), None)
    if pick is None:
        return "its conventional name"
    if pick["shipped"]:
        return "shipped with the lab"
    steps = f"{pick['trained']:,} training steps" if pick["trained"] else "training unknown"
    return f"the only one ({steps})" if len(found) == 1 else f"the most trained of {len(found)} ({steps})"


def discover(store, teacher: str) -> dict[str, str]:
    """The student of `teacher` each role takes unless one is picked (`candidates`' first)."""
    return {role: found[0]["name"] for role, found in candidates(store, teacher).items()}


def _student(store, teacher: str, role: str, cfg: BenchConfig, found: dict[str, list[dict]]) -> tuple[str | None, str]:
    """The student of a row and why it is the one: picked, else the rule of `candidates`, else a conventional name."""
    if role in cfg.students:
        names = [cfg.students[role]]
    else:  # a conventional name that discovery placed in another role is not this role's student
        elsewhere = {c["name"] for r, cs in found.items() if r != role for c in cs}
        names = [c["name"] for c in found.get(role, [])[:1]] + [
            n.format(m=teacher) for n in STUDENT_NAMES[role] if n.format(m=teacher) not in elsewhere]
    for name in names:
        try:
            registry.resolve(name, store)
        except UsageError:
            continue
        return name, "you picked it" if role in cfg.students else why_chosen(found.get(role, []), name)
    return None, ""


def plan(cfg: BenchConfig, teacher: Family, store, cache_thresholds: list[float], cache_method: str) -> list[Row]:
    """The rows to measure, in table order."""
    s, g = cfg.steps, cfg.guidance
    rows = [Row("teacher", f"teacher ({s} steps, CFG)", cfg.model, s, g)]
    for th in cache_thresholds:
        rows.append(Row(f"teacher+{cache_method}@{th:g}", f"teacher + {cache_method} {th:g}", cfg.model, s, g,
                        cache=f"{cache_method}:{th:g}", base="teacher"))
    rows.append(Row("teacher+fp8w", "teacher + FP8 weights", cfg.model, s, g, fp8="weights", base="teacher"))
    if compute_capable(teacher.device) is None:
        rows.append(Row("teacher+fp8c", "teacher + FP8 compute", cfg.model, s, g, fp8="compute", base="teacher"))
    roles = {"guidance": ("guidance-distilled", s), "step8": ("step-distilled, 8 steps", 8),
             "step4": ("step-distilled, 4 steps", 4), "both": ("guidance + step-distilled, 4 steps", 4)}
    found, each = {}, candidates(store, cfg.model)
    discovered = {role: cs[0]["name"] for role, cs in each.items()}
    for role, (label, steps) in roles.items():
        name, why = _student(store, cfg.model, role, cfg, each)
        found[role] = name
        taken = {n for n in found.values() if n} | set(discovered.values())
        wanted = cfg.students.get(role) or next(
            (c for c in (n.format(m=cfg.model) for n in STUDENT_NAMES[role]) if c not in taken),
            f"{cfg.model}-{role}")
        missing = None if name else f"no student yet: distil one (e.g. `{wanted}`) or pass --student {role}=NAME"
        rows.append(Row(role, label, name, steps, g, missing=missing, chosen=why))
    few = {"consistency4": "consistency, 4 steps", "consistency2": "consistency, 2 steps", "dmd4": "DMD2, 4 steps",
           "dmd1": "DMD2, 1 step"}
    for role, label in few.items():
        name, why = _student(store, cfg.model, role, cfg, each)
        missing = None if name else (f"no student yet: distil one (`distill {role.rstrip('0123456789')} --steps "
                                     f"{FEW_STEP_ROLES[role]}`) or pass --student {role}=NAME")
        # a DMD generator without a guidance input runs one pass at guidance 1; the others at the table's scale
        guidance = g if name is None or role.startswith("consistency") or registry.takes_guidance(
            registry.resolve(name, store)) else 1.0
        rows.append(Row(role, label, name, FEW_STEP_ROLES[role], guidance, missing=missing, chosen=why))
    fastest = "both" if found["both"] else "step4"
    if found[fastest]:
        rows.append(Row(f"{fastest}+fp8w", f"{roles[fastest][0]} + FP8 weights", found[fastest], 4, g,
                        fp8="weights", base=fastest))
    for th in cache_thresholds[:1]:  # caching on top of the fastest 4-step student
        rows.append(Row(f"{fastest}+{cache_method}@{th:g}", f"{roles[fastest][0]} + {cache_method} {th:g}",
                        found[fastest], 4, g, cache=f"{cache_method}:{th:g}", base=fastest,
                        missing=None if found[fastest] else "no 4-step student yet"))
    return rows


def _quality(family: Family, row: Row, prompts, judge, cfg: BenchConfig, store,
             step=lambda done, total: None) -> tuple[torch.Tensor, dict]:
    """The row's images of the quality prompts and what they score; `step(done, total)` after each
    batch (it may raise to stop)."""
    size = family.default_size
    images, misses = [], []
    with accelerated(family, row.cache, row.fp8, steps=row.steps, store=store) as acc:
        for i in range(0, len(prompts), cfg.batch_size):
            batch = prompts[i:i + cfg.batch_size]
            imgs, _ = sample(family, [p.text for p in batch], steps=row.steps, guidance=row.guidance,
                             seeds=[p.seed for p in batch], height=size, width=size)
            images.append(imgs)
            if judge is not None:
                misses += score(judge, imgs, batch)
            step(i + len(batch), len(prompts))
    out = {"cache": acc.cache, "fp8": acc.fp8, "param_mem_mb": acc.param_mem_mb}
    if judge is not None:
        out["adherence"] = summarize(prompts, misses)["adherence"]
    return torch.cat(images), out


def batches(cfg_or_dict) -> list[int]:
    """The timing batch sizes of a config (a BenchConfig or its saved dict), first one primary."""
    b = cfg_or_dict.get("timing_batch", 1) if isinstance(cfg_or_dict, dict) else cfg_or_dict.timing_batch
    return [int(b)] if isinstance(b, int) else [int(x) for x in b]


def _time_once(family: Family, row: Row, prompt, store, batch: int = 1) -> dict:
    """One timed generation of `batch` images of the prompt (seeds prompt.seed, +1, ...); seconds per image."""
    size = family.default_size
    with accelerated(family, row.cache, row.fp8, steps=row.steps, store=store):
        _, m = sample(family, [prompt.text] * batch, steps=row.steps, guidance=row.guidance,
                      seeds=[prompt.seed + i for i in range(batch)], height=size, width=size)
    return {"seconds": m.seconds / batch, "nfe": m.nfe, "skipped": m.skipped, "peak_mem_mb": m.peak_mem_mb}


def _speed(ts: list[dict], teacher: list[dict], suffix: str = "") -> dict:
    """A row's seconds per image (median and its interval) and its speed-up over the teacher, paired
    round by round (timing.paired_speedup)."""
    sec, lo, hi = timing.median_interval([t["seconds"] for t in ts])
    up, up_lo, up_hi = timing.paired_speedup([t["seconds"] for t in teacher], [t["seconds"] for t in ts])
    return {f"seconds{suffix}": round(sec, 4), f"seconds_lo{suffix}": round(lo, 4), f"seconds_hi{suffix}": round(hi, 4),
            f"speedup{suffix}": round(up, 2), f"speedup_lo{suffix}": round(up_lo, 2),
            f"speedup_hi{suffix}": round(up_hi, 2)}


def thresholds_for(teacher: Family, cfg: BenchConfig, store, say) -> tuple[str | None, list[float]]:
    """The cache method the teacher supports and the thresholds its rows use (calibrated where needed)."""
    caches = supported_caches(teacher)
    method = "teacache" if "teacache" in caches else next((c for c in caches if c != "none"), None)
    thresholds = list(cfg.thresholds or [])
    if method and not thresholds:
        if method in ("teacache", "magcache"):
            cal = calibration(teacher, method, store=store, log=say)
            th = cal.get("threshold", 0.06)
        else:
            th = {"fbcache": 0.05, "taylorseer": 3}[method]
        thresholds = [th, round(2 * th, 4)]
    return method, thresholds if method else []


def run(cfg: BenchConfig, *, store=None, device: str = "auto", dtype: str = "auto", log=None, progress=None,
        check_stop=None, on_rows=None) -> dict:
    """Measure every row; returns {"model", "device", "config", "rows": [...]}, stored as a bench
    run (with its "id") when a store is given. Progress comes in parts: each row's quality images
    (`progress(part, images, total)`), then the timing rounds as the last part; `check_stop()`
    runs between batches and timed images (it raises to stop); `on_rows(rows)` hears the plan."""
    cfg.check()
    say = log or (lambda msg: None)
    progress = progress or (lambda part, step, total: None)
    check_stop = check_stop or (lambda: None)
    teacher = registry.load(cfg.model, store=store, device=device, dtype=dtype)
    before = timing.one_thread(teacher.device, cfg.threads)
    try:
        return _measure(cfg, teacher, store, device, dtype, say, progress, check_stop, on_rows)
    finally:
        if before is not None:
            torch.set_num_threads(before)


def _measure(cfg, teacher, store, device, dtype, say, progress, check_stop, on_rows) -> dict:
    method, thresholds = thresholds_for(teacher, cfg, store, say)
    rows = plan(cfg, teacher, store, thresholds, method or "cache")
    if on_rows:
        on_rows(rows)
    judge = teacher.judge()
    prompts = sample_prompts(cfg.n, cfg.seed)
    families = {}
    results: dict[str, dict] = {}
    images: dict[str, torch.Tensor] = {}
    div_prompts = sample_prompts(cfg.diversity, cfg.seed + 2) if cfg.diversity and judge is not None else []
    # 1. quality: every row renders the same prompts at the same seeds; then diversity, K seeds of each prompt
    for part, row in enumerate(rows):
        check_stop()
        if row.missing:
            results[row.key] = {"missing": row.missing}
            progress(part, 0, 0)
            continue
        fam = families.get(row.model) or registry.load(row.model, store=store, device=device, dtype=dtype)
        families[row.model] = fam
        say(f"quality: {row.label} ({cfg.n} images)")
        total = cfg.n + len(div_prompts) * cfg.diversity_k

        def step(done, _total, part=part, total=total):
            progress(part, done, total)
            check_stop()
        step(0, total)
        try:
            images[row.key], results[row.key] = _quality(fam, row, prompts, judge, cfg, store, step)
        except UsageError as e:
            results[row.key] = {"missing": str(e)}
            continue
        if div_prompts:
            say(f"diversity: {row.label} ({cfg.diversity} prompts x {cfg.diversity_k} seeds)")
            with accelerated(fam, row.cache, row.fp8, steps=row.steps, store=store):
                d = diversity(fam, judge, div_prompts, steps=row.steps, guidance=row.guidance, k=cfg.diversity_k,
                              batch_size=cfg.batch_size, progress=lambda i, _: step(cfg.n + i * cfg.diversity_k, 0))
            results[row.key].update({"diversity": d["diversity"], "diversity_interval": d["interval"]})
    # 2. speed: round-robin over the rows, so a busy machine slows every row alike; round 0 is an
    # untimed warm-up (a model's first runs pay one-off costs: kernels chosen, memory allocated)
    live = [r for r in rows if "missing" not in results[r.key]]
    sizes = batches(cfg)
    timings: dict[int, dict[str, list[dict]]] = {b: {r.key: [] for r in live} for b in sizes}
    timing_prompts = sample_prompts(cfg.timing + 1, cfg.seed + 1)
    total = len(timing_prompts) * len(live) * sum(sizes)
    done = 0
    for i, prompt in enumerate(timing_prompts):
        say(f"timing: round {i}/{cfg.timing}" + (" (warm-up)" if i == 0 else ""))
        for row in live:
            for b in sizes:
                check_stop()
                t = _time_once(families[row.model], row, prompt, store, b)
                if i > 0:
                    timings[b][row.key].append(t)
                done += b
                progress(len(rows), done, total)
    out_rows = []
    for row in rows:
        r = {"key": row.key, "row": row.label, "model": row.model, "steps": row.steps, "guidance": row.guidance,
             **({"chosen": row.chosen} if row.chosen and row.model else {}), **results[row.key]}
        if row.key in timings[sizes[0]]:
            ts = timings[sizes[0]][row.key]
            r.update({"nfe": round(statistics.mean(t["nfe"] for t in ts), 1),
                      "skipped": round(statistics.mean(t["skipped"] for t in ts), 1),
                      **_speed(ts, timings[sizes[0]]["teacher"]),
                      "peak_mem_mb": round(max(t["peak_mem_mb"] for t in ts), 1)})
            for b in sizes[1:]:  # the same row timed at the other batch sizes
                r.update(_speed(timings[b][row.key], timings[b]["teacher"], f"_b{b}"))
            r["psnr_teacher"] = round(float(psnr_per_image(images[row.key], images["teacher"]).mean()), 2)
            fid = frechet_distance(images[row.key], images["teacher"], JudgeFeatures(judge)) if judge else None
            if isinstance(fid, float):
                r["fid"] = round(fid, 3)
            if row.base in images:
                r["psnr_base"] = round(float(psnr_per_image(images[row.key], images[row.base]).mean()), 2)
        out_rows.append(r)
    result = {"model": cfg.model, "device": describe_device(teacher.device), "config": asdict(cfg), "rows": out_rows}
    if store is not None:  # the Decide tab and `bench` read the latest run of a model back
        result["id"] = store.add_bench_run(cfg.model, result["device"], result["config"], out_rows)
    return result


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    return f"cpu ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores)"


COLUMNS = [("row", "row"), ("model", "model"), ("nfe", "NFE"), ("skipped", "skipped"), ("seconds", "s/image"),
           ("speedup", "speed-up"), ("peak_mem_mb", "peak MB"), ("param_mem_mb", "params MB"),
           ("adherence", "adherence"), ("fid", "FID (judge)"), ("diversity", "diversity (95%)"),
           ("psnr_teacher", "PSNR vs teacher"), ("psnr_base", "PSNR vs base")]


def _runs(b: int) -> str:
    return "single-image runs" if b == 1 else f"runs of {b} images at once (seconds per image = run / {b})"


def columns(result: dict) -> list[tuple[str, str]]:
    """The table's columns: with several timing batch sizes, s/image and speed-up at each."""
    sizes = batches(result["config"])
    if len(sizes) == 1:
        return COLUMNS
    at = COLUMNS.index(("speedup", "speed-up")) + 1
    first = [(k, f"{h} (batch {sizes[0]})") if k in ("seconds", "speedup") else (k, h) for k, h in COLUMNS[:at]]
    extra = [c for b in sizes[1:] for c in ((f"seconds_b{b}", f"s/image (batch {b})"),
                                            (f"speedup_b{b}", f"speed-up (batch {b})"))]
    return first + extra + COLUMNS[at:]


def cell(r: dict, k: str) -> str:
    """One cell of the decision table, as text: a speed-up or seconds with its interval."""
    v = r.get(k)
    if v is None:
        return "—"
    if k.startswith("speedup"):
        suffix = k[len("speedup"):]
        return timing.describe(v, r.get(f"speedup_lo{suffix}"), r.get(f"speedup_hi{suffix}"), short=True)
    if k.startswith("seconds"):
        suffix = k[len("seconds"):]
        return timing.seconds(v, r.get(f"seconds_lo{suffix}"), r.get(f"seconds_hi{suffix}"))
    if k == "adherence":
        return f"{v:.3f}"
    if k == "diversity":
        lo, hi = r.get("diversity_interval") or (v, v)
        return f"{v:.3f} ({lo:.2f}–{hi:.2f})"
    return f"{v:g}" if isinstance(v, float) else str(v)


def markdown(result: dict) -> str:
    """The decision table as Markdown; missing rows say why; under it, which student each row used and why."""
    cols = columns(result)
    head = "| " + " | ".join(h for _, h in cols) + " |"
    lines = [intro(result), "", head, "|" + "---|" * len(cols)]
    for r in result["rows"]:
        if "missing" in r:
            blank = " |" * (len(cols) - 3)
            lines.append(f"| {r['row']} | {r.get('model') or '—'} | *{r['missing']}* |{blank}")
            continue
        lines.append("| " + " | ".join(cell(r, k) for k, _ in cols) + " |")
    if students(result):
        lines += ["", students(result)]
    return "\n".join(lines)


def intro(result: dict) -> str:
    """What the table measured, in a sentence."""
    cfg = result["config"]
    runs = "; ".join(_runs(b) for b in batches(cfg))
    return (f"Model `{result['model']}` on {result['device']}; {cfg['n']} prompts for quality, {cfg['timing']} "
            f"{runs} for time after a warm-up (median, and in brackets the interval of the median; a speed-up "
            f"marked ≈ 1× cannot be told apart from the teacher's speed)." + few_prompts(cfg["n"]))


def few_prompts(n: int) -> str:
    """A warning when adherence rests on under 100 prompts a row: how far it moves by chance alone."""
    if n >= 100:
        return ""
    return (f" ⚠️ Adherence rests on {n} prompt{'s' * (n != 1)} a row: by chance alone it moves by up to "
            f"±{1.96 * (0.25 / n) ** 0.5:.2f} (95%), so rows closer than that are not told apart.")


def students(result: dict) -> str:
    """Which student each row measured and why ('' where none did)."""
    chosen = [f"{r['row']}: `{r['model']}` ({r['chosen']})" for r in result["rows"] if r.get("chosen")]
    return "Students: " + "; ".join(chosen) + "." if chosen else ""
