"""An evaluation run: one model setting on a golden set, scored against its teacher's images.

Every image is generated once: images are cached in the lab database by model (its directory and
the time its weights were written), settings (steps, guidance, cache, FP8, size), prompt and seed,
so the teacher's reference images, and any setting evaluated before, are reused. Then, per image
and per category: adherence (the embedded judge) and/or CLIP score, PSNR and a feature distance to
the teacher's image at the same seed, and the Fréchet distance of the two sets of images
(engine/evaluate/metrics.py); optionally a VLM judge (vlm.py). Runs in the caller's process
(`python -m engine eval`) or as a background job (`submit`; engine/jobs.py runs it by kind).
Under `accelerate launch --num_processes N -m engine eval ...` the N processes (one a GPU) each
generate their share of the images; the main process scores them and prints the result.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import registry
from ..errors import UsageError
from ..families.base import Family
from ..store import Store
from . import golden as G
from . import metrics as M
from . import vlm as V

Progress = Callable[[int, int], None]


class Stopped(Exception):
    """The run was asked to stop (a canceled job)."""


@dataclass
class EvalConfig:
    model: str = "embedded"  # model name, model directory or cached hub id
    golden: str = str(G.DEFAULT_EMBEDDED)  # golden-set file (JSONL or one prompt a line)
    steps: int = 50  # sampling steps of the evaluated setting
    guidance: float = 5.0  # guidance scale (1 = none)
    cache: str = "none"  # METHOD[:THRESHOLD] (engine/accel)
    fp8: str = "off"  # off | weights | compute
    limit: int | None = None  # only the first N prompts of the golden set
    teacher: str | None = None  # reference model; None: the root of the model's lineage
    ref_steps: int = 50  # the teacher's reference images: full steps ...
    ref_guidance: float = 5.0  # ... with classifier-free guidance
    height: int | None = None  # None: the family's native size
    width: int | None = None
    clip_model: str | None = None  # transformers CLIP directory (or cached hub id) for CLIP score
    inception: str | None = None  # FID Inception weights file for real models; None: the torch hub cache
    vlm: V.VLMConfig | None = None  # optional VLM judge
    batch_size: int = 16  # images generated per forward batch
    device: str = "auto"
    dtype: str = "auto"

    def check(self) -> None:
        from ..generate import Request

        for steps, guidance in ((self.steps, self.guidance), (self.ref_steps, self.ref_guidance)):
            Request(prompt="golden", steps=steps, guidance=guidance, height=self.height, width=self.width,
                    cache=self.cache, fp8=self.fp8).check()
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise UsageError(f"limit must be a positive integer, got {self.limit!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 4096:
            raise UsageError(f"batch_size must be an integer in 1..4096, got {self.batch_size!r}")
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
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        if d.get("vlm"):
            d["vlm"] = V.VLMConfig(**d["vlm"])
        return cls(**d)


# -- the lineage ----------------------------------------------------------------------------------
def lineage(store: Store, model: str) -> list[str]:
    """The model and its ancestors, root (the teacher) first. A root that is not registered (the
    built-in `embedded`, a model directory) is named by the first registered model's parent."""
    registry.names(store)  # gives shipped students their rows (and parents) in this database
    chain = store.lineage(model)
    if not chain:
        return [model]
    names = [r["name"] for r in chain]
    return ([chain[0]["parent"]] if chain[0]["parent"] else []) + names


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
    for name in lineage(store, base.model):
        steps, guidance = recommended(store, name, base.ref_steps, base.ref_guidance)
        out.append(replace(base, model=name, steps=steps, guidance=guidance, cache="none", fp8="off"))
    if base.cache != "none" or base.fp8 != "off":
        steps, guidance = recommended(store, base.model, base.ref_steps, base.ref_guidance)
        out.append(replace(base, steps=steps, guidance=guidance))
    return out


# -- several processes (accelerate launch) --------------------------------------------------------
def processes():
    """accelerate's PartialState when this process is one of several launched together, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState()


# -- images, generated once -----------------------------------------------------------------------
def model_key(store: Store, model: str) -> str:
    """A model's identity for the image cache: its directory and when its files last changed."""
    path = registry.resolve(model, store).resolve()
    newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0) if path.is_dir() else 0.0
    return f"{path}@{newest:.0f}"


def _settings_key(steps: int, guidance: float, cache: str, fp8: str, height: int, width: int) -> str:
    return json.dumps({"steps": steps, "guidance": float(guidance), "cache": cache, "fp8": fp8,
                       "height": height, "width": width}, sort_keys=True)


def images_for(store: Store, family: Family, model: str, prompts: list[G.GoldenPrompt], *, steps: int,
               guidance: float, cache: str, fp8: str, height: int, width: int, batch_size: int,
               progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False
               ) -> tuple[torch.Tensor, list[dict]]:
    """uint8 images (N, H, W, 3) for the prompts at their seeds, from the cache or generated (and
    cached), with each image's row (file, nfe, skipped, seconds)."""
    from ..accel import accelerated
    from ..sampling import sample

    key, settings = model_key(store, model), _settings_key(steps, guidance, cache, fp8, height, width)
    found = store.eval_images(key, settings, [(p.text, p.seed) for p in prompts])
    todo = list({(p.text, p.seed): p for p in prompts if (p.text, p.seed) not in found}.values())
    state = processes()
    if state is not None:  # each process generates its own share; the cache gathers them
        with state.split_between_processes(todo) as share:
            todo = list(share)
    if todo:  # the cache and FP8 mode are switched on once; each sampling call starts a fresh cache state
        with accelerated(family, cache, fp8, steps=steps, store=store):
            for i in range(0, len(todo), batch_size):
                if should_stop():
                    raise Stopped("stopped")
                batch = todo[i:i + batch_size]
                imgs, m = sample(family, [p.text for p in batch], steps=steps, guidance=guidance,
                                 seeds=[p.seed for p in batch], height=height, width=width)
                rows = []
                for p, img in zip(batch, imgs):
                    path = store.new_file(".png", folder="eval")
                    Image.fromarray(img.numpy()).save(path)
                    rows.append({"prompt": p.text, "seed": p.seed, "image": f"eval/{path.name}", "nfe": m.nfe,
                                 "skipped": m.skipped, "seconds": m.seconds / len(batch)})
                store.add_eval_images(key, settings, rows)
                found.update({(r["prompt"], r["seed"]): r for r in rows})
                if progress:
                    progress(i + len(batch), len(todo))
    if state is not None:
        state.wait_for_everyone()
        found = store.eval_images(key, settings, [(p.text, p.seed) for p in prompts])
    rows = [found[(p.text, p.seed)] for p in prompts]
    arr = np.stack([np.asarray(Image.open(store.root / r["image"]).convert("RGB")) for r in rows])
    return torch.from_numpy(arr), rows


# -- scoring --------------------------------------------------------------------------------------
def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(float(np.mean(vals)), 4) if vals else None


def _value(v):
    return None if isinstance(v, M.Unavailable) else (round(v, 4) if isinstance(v, float) else v)


@dataclass
class Scorers:
    """What the run scores with; each is a working object or the reason it is unavailable."""
    judge: object | M.Unavailable = field(default_factory=lambda: M.Unavailable("not the embedded domain"))
    space: object = None  # FID feature space: an nn.Module or torchmetrics Inception kwargs, or Unavailable
    space_name: str = ""
    clip: object = None  # (model, processor) or Unavailable


def scorers(family: Family, cfg: EvalConfig, feature_space=None, clip=None) -> Scorers:
    """The embedded judge, the FID feature space and the CLIP model for this run.
    `feature_space` (an nn.Module on uint8 images) and `clip` ((model, processor)) override what the
    config names, for models and tests that bring their own networks."""
    s = Scorers()
    if family.name == "embedded":
        from ..judge import Judge
        from ..paths import JUDGE_WEIGHTS

        s.judge = Judge.load(JUDGE_WEIGHTS).to(family.device)
        s.space, s.space_name = M.JudgeFeatures(s.judge), "judge features"
    else:
        s.space, s.space_name = M.inception_fid_space(cfg.inception), "Inception-v3 pool3"
    if feature_space is not None:
        s.space, s.space_name = feature_space, type(feature_space).__name__
    s.clip = clip if clip is not None else M.load_clip(cfg.clip_model)
    return s


def _features(space, images: torch.Tensor) -> torch.Tensor | None:
    if isinstance(space, torch.nn.Module):
        return space(M.to_nchw(images)).double()
    return None


def score(prompts: list[G.GoldenPrompt], images: torch.Tensor, ref: torch.Tensor, s: Scorers) -> tuple[dict, list[dict]]:
    """Run-level metrics (overall and per category) and per-image rows."""
    from .. import judge as J

    n = len(prompts)
    items = [{"idx": i, "prompt": p.text, "category": p.category, "seed": p.seed} for i, p in enumerate(prompts)]
    unavailable: dict[str, str] = {}
    for it, v in zip(items, M.psnr(images, ref)):
        it["psnr"] = v
    # adherence: the judge checks each prompt's stated attributes
    if isinstance(s.judge, M.Unavailable):
        unavailable["adherence"] = f"the judge reads the embedded domain only ({s.judge.reason})"
    elif not any(p.stated for p in prompts):
        unavailable["adherence"] = "the golden set states no attributes for the judge to check ('stated')"
    else:
        preds = J.predict(s.judge, J.to_tensor(images.numpy()))
        for it, p, pred in zip(items, prompts, preds):
            if p.stated:
                it["missed"] = J.missed(p.stated, pred)
                it["adherent"] = int(not it["missed"])
    # closeness in a feature space: the judge's (embedded), else CLIP's image embeddings
    feats = _features(s.space, images) if not isinstance(s.space, M.Unavailable) else None
    if feats is not None and not isinstance(s.judge, M.Unavailable):
        dist = M.cosine_distance(feats, _features(s.space, ref))
    elif not isinstance(s.clip, M.Unavailable):
        dist = M.cosine_distance(M.clip_image_features(images, s.clip), M.clip_image_features(ref, s.clip))
    else:
        dist = None
        unavailable["feature_distance"] = f"needs the embedded judge or a CLIP model ({s.clip.reason})"
    for it, v in zip(items, dist or [None] * n):
        it["feature_distance"] = v
    if isinstance(s.clip, M.Unavailable):
        unavailable["clip_score"] = s.clip.reason
    else:
        for it, v in zip(items, M.clip_scores(images, [p.text for p in prompts], s.clip)):
            it["clip_score"] = v
    if isinstance(s.space, M.Unavailable):
        unavailable["fid"] = s.space.reason

    def fid(idx: list[int]):
        if isinstance(s.space, M.Unavailable):
            return s.space
        return M.frechet_distance(images[idx], ref[idx], s.space)

    def summary(idx: list[int]) -> dict:
        rows = [items[i] for i in idx]
        return {"n": len(idx), "fid": _value(fid(idx)),
                "adherence": _mean(r.get("adherent") for r in rows),
                "clip_score": _mean(r.get("clip_score") for r in rows),
                "psnr": _mean(r["psnr"] for r in rows),
                "feature_distance": _mean(r.get("feature_distance") for r in rows)}

    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_cat[p.category].append(i)
    overall = summary(list(range(n)))
    if overall["fid"] is None and "fid" not in unavailable:
        unavailable["fid"] = fid(list(range(n))).reason
    overall["by_category"] = {c: summary(idx) for c, idx in sorted(by_cat.items())}
    overall["unavailable"] = unavailable
    return overall, items


# -- a run ----------------------------------------------------------------------------------------
def run(cfg: EvalConfig, store: Store, *, progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False, job_id: int | None = None,
        feature_space=None, clip=None, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate one setting; stores the run and returns its result (with `run`, the run's id)."""
    cfg.check()
    if store.root is None:
        raise UsageError("evaluation keeps its images under a data directory; open the store with one")
    gs = G.load(cfg.golden).limited(cfg.limit)
    prompts = list(gs.prompts)
    teacher_name = cfg.teacher or lineage(store, cfg.model)[0]
    state = processes()
    device = str(state.device) if state is not None and cfg.device == "auto" else cfg.device
    family = registry.load(cfg.model, store=store, device=device, dtype=cfg.dtype)
    teacher = registry.load(teacher_name, store=store, device=device, dtype=cfg.dtype)
    h, w = cfg.height or family.default_size, cfg.width or family.default_size
    family.check_size(h, w)
    if (h, w) != (cfg.height or teacher.default_size, cfg.width or teacher.default_size):
        raise UsageError(f"teacher {teacher_name!r} makes {teacher.default_size}px images and {cfg.model!r} "
                         f"{family.default_size}px; give --height and --width to compare them at one size")
    phases = [0, 0]  # images generated for the reference, then for the candidate

    def phase(k: int) -> Progress:
        def report(i: int, n: int) -> None:
            phases[k] = i
            if progress:
                progress(sum(phases), 2 * len(prompts))
        return report

    ref, ref_rows = images_for(store, teacher, teacher_name, prompts, steps=cfg.ref_steps,
                               guidance=cfg.ref_guidance, cache="none", fp8="off", height=h, width=w,
                               batch_size=cfg.batch_size, progress=phase(0), should_stop=should_stop)
    images, rows = images_for(store, family, cfg.model, prompts, steps=cfg.steps, guidance=cfg.guidance,
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
    result.update({"model": cfg.model, "teacher": teacher_name, "golden": gs.name, "golden_sha": gs.sha,
                   "settings": {**cfg.settings(), "height": h, "width": w},
                   "reference": {"model": teacher_name, "steps": cfg.ref_steps, "guidance": cfg.ref_guidance},
                   "fid_space": s.space_name if result["fid"] is not None else None,
                   "nfe": _mean(r["nfe"] for r in rows), "seconds_per_image": _mean(r["seconds"] for r in rows)})
    if cfg.vlm is not None:
        result["vlm"] = judge_with_vlm(cfg.vlm, store, prompts, images, items, log=log)
    run_id = store.add_eval_run(model=cfg.model, teacher=teacher_name, golden=gs.name, golden_sha=gs.sha,
                                settings=result["settings"], result=result, items=items, job_id=job_id)
    result["run"] = run_id
    store.update_eval_result(run_id, result)
    return result


def vlm_items(prompts: list[G.GoldenPrompt], images: torch.Tensor) -> list[V.Item]:
    return [V.Item(p.text, V.png_bytes(Image.fromarray(img.numpy()))) for p, img in zip(prompts, images)]


def judge_with_vlm(cfg: V.VLMConfig, store: Store, prompts: list[G.GoldenPrompt], images: torch.Tensor,
                   items: list[dict], log: Callable[[str], None] | None = None) -> dict:
    """Score every image with the VLM judge (estimate first, cached answers reused); per category too."""
    vitems = vlm_items(prompts, images)
    est = V.estimate(cfg, vitems, store)
    if log:
        log(V.describe_estimate(est))
    answers = V.judge(cfg, vitems, store)
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for it, a in zip(items, answers):
        it["vlm"] = a
        by_cat[it["category"]].append(a)
    return {**V.summarize(answers), "estimate": est, "model": cfg.model,
            "by_category": {c: V.summarize(v) for c, v in sorted(by_cat.items())}}


# -- background jobs ------------------------------------------------------------------------------
def submit(store: Store, configs: list[EvalConfig], *, start: bool = True) -> int:
    """Queue one job that evaluates the settings in order (checked first); start it if idle."""
    from .. import jobs

    if not configs:
        raise UsageError("evaluate: give at least one model setting")
    for cfg in configs:
        cfg.check()
        G.load(cfg.golden)
        registry.resolve(cfg.model, store)
        if cfg.teacher:
            registry.resolve(cfg.teacher, store)
    teacher = configs[0].teacher or lineage(store, configs[0].model)[0]
    job_id = store.create_kind_job("eval", technique="eval", name=configs[-1].model, teacher=teacher,
                                   recipe=json.dumps([c.to_json() for c in configs]), rounds=len(configs))
    if start:
        jobs.dispatch(store)
    return job_id


def run_job(store: Store, job: dict, report: Callable[[int, int, int], None], should_stop: Callable[[], bool]) -> list[str]:
    """The body of an evaluation job (engine/jobs.py KINDS): every setting in turn."""
    configs = [EvalConfig.from_json(d) for d in json.loads(job["recipe"])]
    done = []
    for i, cfg in enumerate(configs):
        print(f"evaluating {cfg.model} ({cfg.steps} steps, guidance {cfg.guidance:g}, cache {cfg.cache}, "
              f"fp8 {cfg.fp8})", flush=True)
        result = run(cfg, store, progress=lambda s, t, i=i: report(i, s, t), should_stop=should_stop,
                     job_id=job["id"], log=lambda m: print(m, flush=True))
        print(json.dumps({k: result[k] for k in ("model", "n", "fid", "adherence", "clip_score", "psnr")}), flush=True)
        done.append(cfg.model)
    return done


def worst(store: Store, run_id: int, per_category: int = 3) -> dict[str, list[dict]]:
    """Each category's worst images of a run: missed attributes first (embedded), then the lowest
    CLIP score, then the lowest PSNR to the teacher."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for it in store.eval_items(run_id):
        by_cat[it["category"]].append(it)

    def badness(it: dict):
        return (-(len(it["missed"]) if it["missed"] else 0),
                it["clip_score"] if it["clip_score"] is not None else 0.0,
                it["psnr"] if it["psnr"] is not None else 0.0)

    return {c: sorted(v, key=badness)[:per_category] for c, v in sorted(by_cat.items())}


def image_path(store: Store, rel: str) -> Path:
    return store.root / rel
