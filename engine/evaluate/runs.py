"""An evaluation run: one model setting on a golden set, scored against its teacher's images.

The images come from images.py (each made once, then cached), the scores from scoring.py, the
optional VLM judge from vlm.py. `run` works in the caller's process (`python -m engine eval`) or
as the body of an evaluation job (job.py). Under `accelerate launch --num_processes N -m engine eval`
the N processes each generate their share of the images; the main process scores and stores them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import torch
from PIL import Image

from .. import registry
from ..errors import UsageError
from ..jobs import Stopped
from ..prompts import Prompt
from ..store import Store
from . import golden, vlm
from .config import EvalConfig
from .images import Progress, images_for, processes
from .scoring import mean, score, scorers


# -- the lineage ----------------------------------------------------------------------------------
def recommended(store: Store, model: str, default_steps: int = 50, default_guidance: float = 5.0) -> tuple[int, float]:
    """The steps and guidance a model was made for (a student's lab.json), else the defaults."""
    try:
        meta_path = registry.resolve(model, store) / "lab.json"
        rec = json.loads(meta_path.read_text()).get("recommended") or {} if meta_path.exists() else {}
    except (UsageError, ValueError, OSError):
        rec = {}
    return int(rec.get("steps") or default_steps), float(rec.get("guidance") or default_guidance)


def lineage_configs(store: Store, base: EvalConfig) -> list[EvalConfig]:
    """`base` (golden set, limit, scorers) for every model of base.model's lineage at the steps and
    guidance each was made for (the root at the reference settings); then base.model with base's
    cache and FP8 when either is switched on."""
    out = []
    for name in registry.lineage(store, base.model):
        steps, guidance = recommended(store, name, base.ref_steps, base.ref_guidance)
        out.append(replace(base, model=name, steps=steps, guidance=guidance, cache="none", fp8="off"))
    if base.cache != "none" or base.fp8 != "off":
        steps, guidance = recommended(store, base.model, base.ref_steps, base.ref_guidance)
        out.append(replace(base, steps=steps, guidance=guidance))
    return out


# -- a run ----------------------------------------------------------------------------------------
def run(cfg: EvalConfig, store: Store, *, progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False, job_id: int | None = None,
        feature_space=None, clip=None, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate one setting; stores the run and returns its result (with `run`, the run's id)."""
    cfg.check()
    if store.root is None:
        raise UsageError("evaluation keeps its images under a data directory; open the store with one")
    gs = golden.load(cfg.golden).limited(cfg.limit)
    prompts = list(gs.prompts)
    teacher_name = cfg.teacher or registry.lineage(store, cfg.model)[0]
    state = processes()
    device = str(state.device) if state is not None and cfg.device == "auto" else cfg.device
    family = registry.load(cfg.model, store=store, device=device, dtype=cfg.dtype)
    teacher = registry.load(teacher_name, store=store, device=device, dtype=cfg.dtype)
    h, w = cfg.height or family.default_size, cfg.width or family.default_size
    family.check_size(h, w)
    if (h, w) != (cfg.height or teacher.default_size, cfg.width or teacher.default_size):
        raise UsageError(f"teacher {teacher_name!r} makes {teacher.default_size}px images and {cfg.model!r} "
                         f"{family.default_size}px; give --height and --width to compare them at one size")
    phases = [0, 0]  # the reference's images done, then the candidate's (in prompts)

    def phase(k: int) -> Progress:
        def report(i: int, n: int) -> None:
            phases[k] = round(len(prompts) * i / n) if n else len(prompts)
            if progress:
                progress(sum(phases), 2 * len(prompts))
        return report

    ref, ref_rows = images_for(store, teacher, prompts, steps=cfg.ref_steps,
                               guidance=cfg.ref_guidance, cache="none", fp8="off", height=h, width=w,
                               batch_size=cfg.batch_size, progress=phase(0), should_stop=should_stop)
    images, rows = images_for(store, family, prompts, steps=cfg.steps, guidance=cfg.guidance,
                              cache=cfg.cache, fp8=cfg.fp8, height=h, width=w, batch_size=cfg.batch_size,
                              progress=phase(1), should_stop=should_stop)
    if should_stop():
        raise Stopped("stopped")
    if state is not None and not state.is_main_process:
        return {"model": cfg.model, "shard": state.process_index}  # the main process scores and stores
    s = scorers(family, cfg, feature_space, clip)
    result, items = score(prompts, images, ref, s)
    for it, row, ref_row in zip(items, rows, ref_rows):
        it["image"], it["ref_image"] = row["image"], ref_row["image"]
    add_diversity(result, family, s, prompts, cfg)
    result.update({"model": cfg.model, "teacher": teacher_name, "golden": gs.name, "golden_sha": gs.sha,
                   "settings": {**cfg.settings(), "height": h, "width": w},
                   "reference": {"model": teacher_name, "steps": cfg.ref_steps, "guidance": cfg.ref_guidance},
                   "fid_space": s.space_name if result["fid"] is not None else None,
                   "nfe": mean(r["nfe"] for r in rows), "seconds_per_image": mean(r["seconds"] for r in rows)})
    if cfg.vlm is not None:
        result["vlm"] = judge_with_vlm(cfg.vlm, store, prompts, images, items, log=log)
    run_id = store.add_eval_run(model=cfg.model, teacher=teacher_name, golden=gs.name, golden_sha=gs.sha,
                                settings=result["settings"], result=result, items=items, job_id=job_id)
    result["run"] = run_id
    store.update_eval_result(run_id, result)
    return result


def add_diversity(result: dict, family, s, prompts: list[Prompt], cfg: EvalConfig) -> None:
    """Diversity over `cfg.diversity_k` seeds per prompt, overall (with its bootstrap interval) and per
    category: the judge's reading of what prompts leave unstated (embedded), else CLIP image features."""
    from ..accel.runtime import accelerated
    from . import diversity, metrics

    result["diversity"] = None
    if not cfg.diversity_k:
        result["unavailable"]["diversity"] = "not measured: give --diversity-k K (seeds per prompt)"
        return
    judge = None if isinstance(s.judge, metrics.Unavailable) else s.judge
    if judge is None and isinstance(s.clip, metrics.Unavailable):
        result["unavailable"]["diversity"] = f"needs the embedded judge or a CLIP model ({s.clip.reason})"
        return
    features = None if judge is not None else (lambda images: metrics.clip_image_features(images, s.clip))
    with accelerated(family, cfg.cache, cfg.fp8, steps=cfg.steps):
        scores = diversity.per_prompt(family, prompts, steps=cfg.steps, guidance=cfg.guidance, k=cfg.diversity_k,
                                      judge=judge, features=features, batch_size=cfg.batch_size * 4)
    by_cat: dict[str, list[float]] = defaultdict(list)
    for p, v in zip(prompts, scores):
        if v is not None:
            by_cat[p.category].append(v)
    values = [v for v in scores if v is not None]
    result["diversity"] = mean(values)
    result["diversity_interval"] = list(diversity.bootstrap_interval(values)) if values else None
    result["diversity_k"] = cfg.diversity_k
    for c, row in result["by_category"].items():
        row["diversity"] = mean(by_cat.get(c, []))


def vlm_items(prompts: list[Prompt], images: torch.Tensor) -> list[vlm.Item]:
    return [vlm.Item(p.text, vlm.png_bytes(Image.fromarray(img.numpy()))) for p, img in zip(prompts, images)]


def judge_with_vlm(cfg: vlm.VLMConfig, store: Store, prompts: list[Prompt], images: torch.Tensor,
                   items: list[dict], log: Callable[[str], None] | None = None) -> dict:
    """Score every image with the VLM judge (estimate first, cached answers reused); per category too."""
    vitems = vlm_items(prompts, images)
    est = vlm.estimate(cfg, vitems, store)
    if log:
        log(vlm.describe_estimate(est))
    answers = vlm.judge(cfg, vitems, store)
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for it, a in zip(items, answers):
        it["vlm"] = a
        by_cat[it["category"]].append(a)
    return {**vlm.summarize(answers), "estimate": est, "model": cfg.model,
            "by_category": {c: vlm.summarize(v) for c, v in sorted(by_cat.items())}}
