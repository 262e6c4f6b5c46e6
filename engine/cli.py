"""`python -m engine <command>`: everything the app can do, from the command line.

Bad input exits with code 2 and one line on stderr naming the field and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {v}")
        return v
    return parse


def _float():
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="lab data directory (default $LAB_DATA_DIR or ./lab-data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m engine", description="Distillation Lab engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate one image and print its measurement as JSON")
    g.add_argument("--model", default="embedded")
    g.add_argument("--prompt", required=True)
    g.add_argument("--steps", type=_int_in(1, 1000), default=50)
    g.add_argument("--guidance", type=_float(), default=5.0)
    g.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    g.add_argument("--height", type=_int_in(8, 4096), default=None)
    g.add_argument("--width", type=_int_in(8, 4096), default=None)
    g.add_argument("--out", default="out.png", help="where to write the image (PNG)")
    g.add_argument("--cache", default="none", metavar="METHOD[:THRESHOLD]",
                   help="none, teacache, fbcache, magcache, taylorseer (as the model supports); "
                        "no threshold: the calibrated or default one")
    g.add_argument("--fp8", default="off", help="off, weights (float8 storage, any device) or compute (GPU cc >= 8.9)")
    _common(g)

    a = sub.add_parser("adherence", help="adherence of a model on fresh prompts (embedded domain)")
    a.add_argument("--model", default="embedded")
    a.add_argument("--steps", type=_int_in(1, 1000), default=50)
    a.add_argument("--guidance", type=_float(), default=5.0)
    a.add_argument("--n", type=_int_in(1, 100000), default=200)
    a.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    a.add_argument("--category", default=None)
    a.add_argument("--batch-size", type=_int_in(1, 4096), default=50)
    _common(a)

    at = sub.add_parser("adherence-table", help="adherence over steps x guidance, as a Markdown table")
    at.add_argument("--model", default="embedded")
    at.add_argument("--steps", type=_int_in(1, 1000), nargs="+", default=[50, 8])
    at.add_argument("--guidance", type=_float(), nargs="+", default=[1.0, 3.0, 5.0, 7.0])
    at.add_argument("--n", type=_int_in(1, 100000), default=600)
    at.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    at.add_argument("--batch-size", type=_int_in(1, 4096), default=50)
    at.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    _common(at)

    # flags left out are left out of the namespace: TeacherTrainConfig's defaults are the only ones
    t = sub.add_parser("train-teacher", help="train the embedded teacher", argument_default=argparse.SUPPRESS)
    t.add_argument("--steps", type=_int_in(1, 10**7))
    t.add_argument("--minutes", type=_float())
    t.add_argument("--batch-size", type=_int_in(1, 65536))
    t.add_argument("--lr", type=_float())
    t.add_argument("--dataset", type=_int_in(1, 10**8))
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1))
    t.add_argument("--warmup", type=_int_in(0, 10**6))
    t.add_argument("--caption-noise", type=_float(),
                   help="fraction of training captions that misstate one attribute, as real captions do (0-1)")
    t.add_argument("--device")
    t.add_argument("--init", help="continue from this model directory's weights")
    t.add_argument("--out", help="model directory (default assets/embedded-teacher)")

    d = sub.add_parser("distill", help="start a distillation job (guidance, progressive, or both)")
    d.add_argument("technique", choices=["guidance", "progressive", "both", "guidance+progressive"])
    d.add_argument("--teacher", default="embedded")
    d.add_argument("--name", required=True, help="the student's model name")
    d.add_argument("--train-steps", type=_int_in(1, 10**6), default=None, help="optimisation steps per round")
    d.add_argument("--lr", type=_float(), default=None)
    d.add_argument("--warmup", type=_int_in(0, 10**6), default=None)
    d.add_argument("--batch-size", type=_int_in(1, 65536), default=None)
    d.add_argument("--guidance-min", type=_float(), default=None)
    d.add_argument("--guidance-max", type=_float(), default=None)
    d.add_argument("--teacher-steps", type=_int_in(1, 4096), default=None,
                   help="guidance: steps of the teacher trajectories trained on")
    d.add_argument("--from-steps", type=_int_in(1, 4096), default=None)
    d.add_argument("--to-steps", type=_int_in(1, 4096), default=None)
    d.add_argument("--lora-rank", type=int, default=None, help="train a LoRA student of this rank")
    d.add_argument("--lora-alpha", type=_float(), default=None)
    d.add_argument("--lora-save", choices=["merged", "adapter"], default="merged")
    d.add_argument("--ema", type=_float(), default=None, help="EMA decay of the student (default 0.995; 0: none)")
    d.add_argument("--checkpoint-every", type=_int_in(1, 10**7), default=None)
    d.add_argument("--eval-n", type=_int_in(0, 100000), default=None,
                   help="embedded domain: prompts scored for adherence after every round")
    d.add_argument("--prompts", default=None, help="training prompts, one per line (default: the model's domain)")
    d.add_argument("--init", default=None, help="start the student from this model's weights (train a student longer)")
    d.add_argument("--mixed-precision", default=None, help="auto, no, bf16, fp16")
    d.add_argument("--student-prediction", default=None,
                   help="progressive: auto (an eps-predicting UNet's students predict v) or keep")
    d.add_argument("--on-policy", type=_float(), default=None,
                   help="fraction 0..1 of training walkers that follow the student's own steps (default 0)")
    d.add_argument("--seed", type=_int_in(0, 2**31 - 1), default=None)
    d.add_argument("--detach", action="store_true", help="start the job and return at once")
    d.add_argument("--data-dir", default=None)

    sub.add_parser("jobs", help="list distillation jobs").add_argument("--data-dir", default=None)
    for verb, text in (("resume", "continue a failed, canceled or interrupted job from its last checkpoint"),
                       ("cancel", "cancel a queued or running job")):
        r = sub.add_parser(verb, help=text)
        r.add_argument("job", type=_int_in(1, 2**62))
        r.add_argument("--data-dir", default=None)
        if verb == "resume":
            r.add_argument("--detach", action="store_true")
    jr = sub.add_parser("job-run", help=argparse.SUPPRESS)  # the body of a job's own process
    jr.add_argument("job", type=int)
    jr.add_argument("--data-dir", default=None)

    pa = sub.add_parser("parity", help="compare the lab's sampler with the model's own diffusers pipeline")
    pa.add_argument("--model", required=True)
    pa.add_argument("--prompt", default="a photo of a red fox in the snow")
    pa.add_argument("--steps", type=_int_in(1, 1000), default=4)
    pa.add_argument("--guidance", type=_float(), default=3.5)
    pa.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    pa.add_argument("--height", type=_int_in(8, 4096), default=None)
    pa.add_argument("--width", type=_int_in(8, 4096), default=None)
    _common(pa)

    rg = sub.add_parser("register", help="name a diffusers directory or cached hub id for every model picker")
    rg.add_argument("--name", required=True)
    rg.add_argument("--model", required=True, help="a diffusers directory (model_index.json) or a cached hub id")
    rg.add_argument("--data-dir", default=None)

    rm = sub.add_parser("random-model", help="save a tiny random-weight diffusers pipeline (to try --model PATH)")
    rm.add_argument("--kind", required=True, help="sd, sd-v, sdxl, flux, flux-dev, flux2-klein or sd3")
    rm.add_argument("--out", required=True, help="directory to create")
    rm.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)

    j = sub.add_parser("train-judge", help="train the judge network")
    j.add_argument("--steps", type=_int_in(1, 10**7), default=3000)
    j.add_argument("--device", default="auto")
    j.add_argument("--out", default=None, help="directory (default assets/judge)")

    ar = sub.add_parser("arena", help="blind arena: prepare battles, export votes, print the leaderboard")
    asub = ar.add_subparsers(dest="arena_command", required=True, parser_class=_Parser)
    ap = asub.add_parser("prepare", help="pre-generate battles between model settings")
    ap.add_argument("--setting", action="append", required=True, metavar="MODEL[,steps=N][,guidance=G][,KEY=V]",
                    help="a competitor (repeat; at least two); the first is the reference")
    ap.add_argument("--pairs", default="first", help="first: the first setting against each other one; all: every pair")
    ap.add_argument("--n", type=_int_in(1, 10_000), default=100, help="battles to prepare")
    ap.add_argument("--golden", default=None, help="golden set (JSONL: prompt, seed, category); default: fresh prompts of the embedded world")
    ap.add_argument("--category", default=None, help="embedded-world prompts of this category only")
    ap.add_argument("--prompt", action="append", default=None, help="a prompt typed by hand (repeat)")
    ap.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    ap.add_argument("--batch-size", type=_int_in(1, 4096), default=16)
    _common(ap)
    ae = asub.add_parser("export", help="write every vote as CSV or JSON")
    ae.add_argument("--format", default="csv", help="csv or json")
    ae.add_argument("--out", required=True)
    ae.add_argument("--data-dir", default=None)
    al = asub.add_parser("leaderboard", help="print the ratings, win rates, position bias and agreement")
    al.add_argument("--bootstrap", type=_int_in(0, 100_000), default=1000, help="resamples for the intervals")
    al.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    al.add_argument("--category", default=None)
    al.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    al.add_argument("--data-dir", default=None)
    b = sub.add_parser("bench", help="the decision table for a model: speed, memory and quality of each technique")
    b.add_argument("--model", default="embedded")
    b.add_argument("--steps", type=_int_in(1, 1000), default=50, help="the teacher's sampling steps")
    b.add_argument("--guidance", type=_float(), default=5.0)
    b.add_argument("--n", type=_int_in(1, 100000), default=60, help="prompts scored for quality per row")
    b.add_argument("--timing", type=_int_in(1, 1000), default=5, help="timed generations per row (median)")
    b.add_argument("--timing-batch", type=_int_in(1, 4096), default=[1], nargs="+",
                   help="images per timed generation: 1 measures latency, more measures throughput per image; "
                        "several (e.g. 1 16) time each row at each size in the same run")
    b.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    b.add_argument("--batch-size", type=_int_in(1, 4096), default=30)
    b.add_argument("--thresholds", type=_float(), nargs="+", default=None,
                   help="cache thresholds (default: the calibrated one and twice it)")
    b.add_argument("--student", action="append", default=[], metavar="ROLE=NAME",
                   help="use this model for a row: guidance, step8, step4 or both (repeatable)")
    b.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    b.add_argument("--threads", type=_int_in(1, 1024), default=None,
                   help="CPU threads for torch (default: torch's own; on a busy shared CPU, 1 times steadily)")
    _common(b)

    sw = sub.add_parser("sweep", help="one prompt over steps x guidance (or x cache threshold): cost and quality")
    sw.add_argument("--model", default="embedded")
    sw.add_argument("--prompt", required=True)
    sw.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    sw.add_argument("--steps", type=_int_in(1, 1000), nargs="+", default=[50, 20, 8])
    sw.add_argument("--guidance", type=_float(), nargs="+", default=[1.0, 5.0])
    sw.add_argument("--cache", default="none", help="cache method of every cell")
    sw.add_argument("--thresholds", type=_float(), nargs="+", default=[], help="cache thresholds as the columns")
    sw.add_argument("--fp8", default="off")
    sw.add_argument("--n", type=_int_in(0, 100000), default=0, help="embedded domain: adherence prompts per cell")
    sw.add_argument("--out-dir", default=None, help="write each cell's image here")
    _common(sw)

    c = sub.add_parser("calibrate", help="calibrate a cache for a model (TeaCache: polynomial and threshold; "
                                         "MagCache: ratios)")
    c.add_argument("--model", default="embedded")
    c.add_argument("--method", default="teacache", help="teacache or magcache")
    c.add_argument("--prompts", type=_int_in(1, 1000), default=4)
    c.add_argument("--steps", type=_int_in(2, 1000), default=50)
    c.add_argument("--guidance", type=_float(), default=5.0)
    c.add_argument("--target-psnr", type=_float(), default=30.0, help="dB to the uncached images the threshold keeps")
    _common(c)
    _add_eval_parsers(sub)
    return parser


def _add_eval_parsers(sub) -> None:
    from .evaluate.golden import DEFAULT_EMBEDDED

    e = sub.add_parser("eval", help="evaluate a model setting on a golden set against its teacher (FID, adherence, "
                                    "CLIP score, PSNR; optional VLM judge) and print one JSON line")
    e.add_argument("--model", default="embedded")
    e.add_argument("--golden", default=str(DEFAULT_EMBEDDED), help="golden set: JSONL (prompt, category, seed, "
                   "stated) or one prompt a line (default: the embedded domain's)")
    e.add_argument("--steps", type=_int_in(1, 1000), default=50)
    e.add_argument("--guidance", type=_float(), default=5.0)
    e.add_argument("--limit", type=_int_in(1, 100000), default=None, help="only the first N prompts")
    e.add_argument("--cache", default="none", metavar="METHOD[:THRESHOLD]", help="as for generate")
    e.add_argument("--fp8", default="off", help="off, weights or compute")
    e.add_argument("--teacher", default=None, help="reference model (default: the root of the model's lineage)")
    e.add_argument("--ref-steps", type=_int_in(1, 1000), default=50, help="the teacher's steps for the reference images")
    e.add_argument("--ref-guidance", type=_float(), default=5.0, help="the teacher's guidance for the reference images")
    e.add_argument("--height", type=_int_in(8, 4096), default=None)
    e.add_argument("--width", type=_int_in(8, 4096), default=None)
    e.add_argument("--clip-model", default=None, help="transformers CLIP directory (or cached hub id) for CLIP score")
    e.add_argument("--inception", default=None, help="FID Inception weights for real models (default: torch hub cache)")
    e.add_argument("--batch-size", type=_int_in(1, 4096), default=16)
    e.add_argument("--report", default=None, help="write a Markdown report here (per-category table, worst prompts)")
    e.add_argument("--vlm-url", default=None, help="OpenAI-compatible endpoint for the VLM judge, e.g. http://host/v1")
    e.add_argument("--vlm-model", default=None)
    e.add_argument("--vlm-key-env", default="LAB_VLM_API_KEY", help="environment variable with the key "
                                                                    "(else OPENAI_API_KEY)")
    e.add_argument("--vlm-price-input", type=_float(), default=None, help="USD per million input tokens")
    e.add_argument("--vlm-price-output", type=_float(), default=None, help="USD per million output tokens")
    e.add_argument("--vlm-max-cost", type=_float(), default=None, help="refuse when the estimated VLM cost is above (USD)")
    e.add_argument("--lineage", action="store_true", help="evaluate every model of --model's lineage at the steps and "
                   "guidance each was made for (then --model with --cache/--fp8 if given); prints one JSON line each")
    e.add_argument("--threads", type=_int_in(1, 1024), default=None,
                   help="CPU threads for torch (default: torch's own; on a busy shared CPU, 1 runs steadily)")
    e.add_argument("--job", action="store_true", help="run as a background job (queued like distillation) and follow it")
    e.add_argument("--detach", action="store_true", help="with --job: return at once")
    _common(e)

    ln = sub.add_parser("lineage", help="every evaluated metric along a model's lineage (teacher -> ... -> model)")
    ln.add_argument("--model", required=True)
    ln.add_argument("--golden", default=None, help="only runs on this golden set (its name, e.g. embedded)")
    ln.add_argument("--metric", default="adherence", help="the per-category columns: fid, adherence, clip_score, psnr")
    ln.add_argument("--json", action="store_true")
    ln.add_argument("--data-dir", default=None)


def _cmd_generate(args) -> dict:
    from . import registry
    from .generate import Request, run
    from .store import Store

    req = Request(prompt=args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  height=args.height, width=args.width, cache=args.cache, fp8=args.fp8)
    req.check()
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, got {args.out!r}")
    if not out.parent.exists():
        raise UsageError(f"--out: folder {str(out.parent)!r} does not exist")
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    image, record = run(family, req, model_name=args.model, store=store,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    image.save(out)
    record["out"] = str(out)
    return record


def _check_guidance(g: float) -> None:
    import math

    if not math.isfinite(g) or not 0 <= g <= 30:
        raise UsageError(f"--guidance must be a number in 0..30 (1 = no guidance), got {g}")


def _adherence_setup(args, category: str | None):
    from . import registry
    from .judge import Judge
    from .paths import JUDGE_WEIGHTS
    from .store import Store
    from .world import CATEGORIES, sample_prompts

    if category is not None and category not in CATEGORIES:
        raise UsageError(f"--category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    if family.name != "embedded":
        raise UsageError(f"adherence needs a model of the embedded domain; {args.model!r} is a {family.name} model")
    judge = Judge.load(JUDGE_WEIGHTS).to(family.device)
    return family, judge, sample_prompts(args.n, args.seed, category)


def _progress(label: str):
    return lambda i, n: print(f"\r{label}{i}/{n} images", end="" if i < n else "\n", file=sys.stderr, flush=True)


def _cmd_adherence(args) -> dict:
    from .adherence import evaluate

    _check_guidance(args.guidance)
    family, judge, prompts = _adherence_setup(args, args.category)
    result = evaluate(family, judge, prompts, steps=args.steps, guidance=args.guidance,
                      batch_size=args.batch_size, progress=_progress(""))
    result["model"] = args.model
    return result


def _cmd_adherence_table(args):
    from .adherence import evaluate
    from .world import CATEGORIES

    for g in args.guidance:
        _check_guidance(g)
    family, judge, prompts = _adherence_setup(args, None)
    rows = []
    for steps in args.steps:
        for g in args.guidance:
            rows.append(evaluate(family, judge, prompts, steps=steps, guidance=g, batch_size=args.batch_size,
                                 progress=_progress(f"steps {steps}, guidance {g:g}: ")))
    if args.json:
        return {"model": args.model, "n": args.n, "seed": args.seed, "rows": rows}
    head = ["steps", "guidance", "NFE", "overall", *CATEGORIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        nfe = r["steps"] * (1 if r["guidance"] == 1 or family.guidance_embedded else 2)
        cells = [r["steps"], f"{r['guidance']:g}", nfe, f"{r['adherence']:.3f}",
                 *(f"{r['by_category'].get(c, float('nan')):.3f}" for c in CATEGORIES)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _cmd_train_teacher(args) -> dict:
    from .train_teacher import TeacherTrainConfig, train

    given = {k: v for k, v in vars(args).items() if k in TeacherTrainConfig.__dataclass_fields__}
    cfg = TeacherTrainConfig(**given)
    if not 0 <= cfg.caption_noise < 1:
        raise UsageError(f"--caption-noise must be at least 0 and below 1, got {cfg.caption_noise}")
    if not cfg.lr > 0:
        raise UsageError(f"--lr must be positive, got {cfg.lr}")
    return train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def _cmd_parity(args) -> dict:
    from . import registry
    from .families.parity import compare
    from .store import Store

    _check_guidance(args.guidance)
    family = registry.load(args.model, store=Store(args.data_dir), device=args.device, dtype=args.dtype)
    result = compare(family, args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                     height=args.height or family.default_size, width=args.width or family.default_size)
    return {"model": args.model, **result}


def _cmd_register(args) -> dict:
    from . import registry
    from .store import Store

    row = registry.register(Store(args.data_dir), args.name, args.model)
    return {"name": row["name"], "family": row["family"], "path": row["path"]}


def _cmd_random_model(args) -> dict:
    from .families import catalog, synthetic

    if args.kind not in synthetic.KINDS:
        raise UsageError(f"--kind must be one of {', '.join(synthetic.KINDS)}, got {args.kind!r}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {str(out)!r} exists and is not empty; name a new directory")
    with catalog.quiet():
        synthetic.save(args.kind, out, seed=args.seed)
    return {"kind": args.kind, "family": synthetic.FAMILY[args.kind], "path": str(out)}


def _cmd_train_judge(args) -> dict:
    from .train_judge import JudgeTrainConfig, train

    cfg = JudgeTrainConfig(steps=args.steps, device=args.device)
    if args.out:
        cfg.out = args.out
    report = train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"min_accuracy": report["min_accuracy"], "accuracy": report["accuracy"]}


def _cmd_arena(args):
    from .arena import battles, leaderboard, votes
    from .arena.settings import parse
    from .store import Store

    store = Store(args.data_dir)
    if args.arena_command == "export":
        out = Path(args.out)
        if not out.parent.exists():
            raise UsageError(f"--out: folder {str(out.parent)!r} does not exist")
        votes.export(store, args.format, out)
        return {"votes": store.vote_count(), "format": args.format, "out": str(out)}
    if args.arena_command == "leaderboard":
        board = leaderboard.leaderboard(store, leaderboard.LeaderboardConfig(args.bootstrap, args.seed, args.category))
        return board if args.json else leaderboard.markdown(board)
    if args.prompt and args.golden:
        raise UsageError("--prompt and --golden: give one source of prompts, not both")
    cfg = battles.PrepareConfig(n=args.n, pairs=args.pairs, seed=args.seed, batch_size=args.batch_size,
                                device=args.device)
    if args.prompt:
        prompts, cfg.source = battles.typed_prompts(args.prompt, args.seed), "admin"
    elif args.golden:
        prompts, cfg.source = battles.golden_prompts(args.golden), Path(args.golden).stem
    else:
        prompts, cfg.source = battles.world_prompts(args.n, args.seed, args.category), "world"
    rows = battles.prepare(store, [parse(s) for s in args.setting], prompts, cfg, progress=_progress("arena: "))
    return {"battles": len(rows), "total_battles": len(store.battles())}


RECIPE_FLAGS = ("train_steps", "lr", "warmup", "batch_size", "guidance_min", "guidance_max", "teacher_steps",
                "from_steps", "to_steps", "ema", "checkpoint_every", "eval_n", "prompts", "mixed_precision", "seed",
                "init", "student_prediction", "on_policy")


def _cmd_distill(args) -> dict:
    from . import jobs
    from .distill.recipes import LoraSpec, Recipe
    from .store import Store

    technique = "guidance+progressive" if args.technique == "both" else args.technique
    fields = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    if fields.get("ema") == 0:
        fields["ema"] = None  # --ema 0: no EMA
    lora = None
    if args.lora_rank is not None:
        lora = LoraSpec(rank=args.lora_rank, alpha=args.lora_alpha, save=args.lora_save)
    recipe = Recipe(technique=technique, teacher=args.teacher, name=args.name, lora=lora, **fields)
    store = Store(args.data_dir)
    job_id, warnings = jobs.submit(store, recipe)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"job {job_id} queued: {technique} of {args.teacher} -> {args.name} (log: {jobs.log_path(store, job_id)})",
          file=sys.stderr, flush=True)
    return _job_result(store, job_id, args.detach)


def _job_result(store, job_id: int, detach: bool) -> dict:
    from . import jobs

    job = store.job(job_id) if detach else jobs.follow(store, job_id)
    out = {"job": job_id, "status": job["status"], "models": json.loads(job["models"] or "[]")}
    if job["error"]:
        out["error"] = job["error"]
    return out


def _cmd_jobs(args) -> str:
    from . import jobs
    from .store import Store

    store = Store(args.data_dir)
    jobs.reconcile(store)
    rows = store.jobs()
    lines = [f"{'id':>4}  {'status':<11} {'technique':<21} {'teacher':<18} {'name':<18} progress"]
    for j in rows:
        progress = f"round {min(j['round'] + 1, j['rounds'])}/{j['rounds']}, step {j['step']}/{j['total']}"
        lines.append(f"{j['id']:>4}  {j['status']:<11} {j['technique']:<21} {j['teacher']:<18} {j['name']:<18} {progress}")
    return "\n".join(lines)


def _cmd_resume(args) -> dict:
    from . import jobs
    from .store import Store

    store = Store(args.data_dir)
    jobs.resume(store, args.job)
    print(f"job {args.job} resumed from its last checkpoint", file=sys.stderr, flush=True)
    return _job_result(store, args.job, args.detach)


def _cmd_cancel(args) -> dict:
    from . import jobs
    from .store import Store

    store = Store(args.data_dir)
    return {"job": args.job, "status": jobs.cancel(store, args.job)}


def _cmd_job_run(args) -> None:
    from . import jobs
    from .store import Store

    raise SystemExit(jobs.run_job(Store(args.data_dir), args.job))



def _cmd_bench(args):
    from .accel.bench import STUDENT_NAMES, BenchConfig, markdown, run
    from .store import Store

    _check_guidance(args.guidance)
    students = {}
    for item in args.student:
        role, _, name = item.partition("=")
        if role not in STUDENT_NAMES or not name:
            raise UsageError(f"--student must be ROLE=NAME with ROLE one of {', '.join(STUDENT_NAMES)}, got {item!r}")
        students[role] = name
    for th in args.thresholds or []:
        if not 0 <= th <= 100:
            raise UsageError(f"--thresholds must be numbers in 0..100, got {th:g}")
    timing_batch = tuple(args.timing_batch) if len(args.timing_batch) > 1 else args.timing_batch[0]
    cfg = BenchConfig(model=args.model, steps=args.steps, guidance=args.guidance, n=args.n, timing=args.timing,
                      seed=args.seed, batch_size=args.batch_size, timing_batch=timing_batch,
                      thresholds=tuple(args.thresholds) if args.thresholds else None, students=students)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    store = Store(args.data_dir)
    result = run(cfg, store=store, device=args.device, dtype=args.dtype,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    result["id"] = store.add_bench_run(args.model, result["device"], result["config"], result["rows"])
    return result if args.json else markdown(result)


def _cmd_sweep(args) -> dict:
    from . import registry
    from .accel.sweep import SweepConfig, run_sweep
    from .store import Store

    for g in args.guidance:
        _check_guidance(g)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise UsageError(f"--out-dir: {args.out_dir!r} is not a folder")
    cfg = SweepConfig(prompt=args.prompt, seed=args.seed, steps=tuple(args.steps), guidance=tuple(args.guidance),
                      cache=args.cache, thresholds=tuple(args.thresholds), fp8=args.fp8, n=args.n)
    cfg.cells()
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    judge = None
    if cfg.n and family.name == "embedded":
        from .judge import Judge
        from .paths import JUDGE_WEIGHTS
        judge = Judge.load(JUDGE_WEIGHTS).to(family.device)
    result = run_sweep(family, cfg, model_name=args.model, store=store, judge=judge)
    cells = []
    for i, cell in enumerate(result["cells"]):
        image = cell.pop("image")
        if out_dir is not None:
            cell["out"] = str(out_dir / f"cell{i:02d}.png")
            image.save(cell["out"])
        cells.append(cell)
    return {"model": args.model, "reference": result["reference"], "cells": cells}


def _cmd_calibrate(args) -> dict:
    from . import registry
    from .accel import CALIBRATED, model_key, supported_caches
    from .accel.calibrate import CALIBRATORS, CalibrationConfig
    from .store import Store

    _check_guidance(args.guidance)
    if args.method not in CALIBRATED:
        raise UsageError(f"--method must be one of {', '.join(CALIBRATED)}, got {args.method!r}")
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    if args.method not in supported_caches(family):
        raise UsageError(f"--method {args.method}: not supported by {args.model!r} "
                         f"(supported: {', '.join(supported_caches(family))})")
    cfg = CalibrationConfig(prompts=args.prompts, steps=args.steps, guidance=args.guidance,
                            target_psnr=args.target_psnr)
    result = CALIBRATORS[args.method](family, cfg, progress=lambda i, n: print(
        f"calibration run {i}/~{n}", file=sys.stderr, flush=True))
    store.save_calibration(model_key(family), args.method, result)
    return {"model": args.model, **result}


def _eval_config(args):
    from .evaluate.runs import EvalConfig
    from .evaluate.vlm import VLMConfig

    for g in (args.guidance, args.ref_guidance):
        _check_guidance(g)
    vlm = None
    if args.vlm_url or args.vlm_model:
        vlm = VLMConfig(url=args.vlm_url or "", model=args.vlm_model or "", api_key_env=args.vlm_key_env,
                        price_input=args.vlm_price_input, price_output=args.vlm_price_output)
    cfg = EvalConfig(model=args.model, golden=args.golden, steps=args.steps, guidance=args.guidance,
                     cache=args.cache, fp8=args.fp8, limit=args.limit, teacher=args.teacher, ref_steps=args.ref_steps,
                     ref_guidance=args.ref_guidance, height=args.height, width=args.width,
                     clip_model=args.clip_model, inception=args.inception, vlm=vlm, batch_size=args.batch_size,
                     device=args.device, dtype=args.dtype)
    cfg.check()
    return cfg


def _vlm_guard(cfg, store, max_cost) -> None:
    """Show the VLM judge's expected calls and cost before anything is generated; refuse above max_cost."""
    from .evaluate import golden, vlm

    n = len(golden.load(cfg.golden).limited(cfg.limit).prompts)
    est = vlm.estimate(cfg.vlm, [vlm.Item(str(i), b"") for i in range(n)])  # upper bound: nothing cached yet
    print(vlm.describe_estimate(est) + " (at most; answers already cached are not sent again)",
          file=sys.stderr, flush=True)
    if max_cost is not None:
        if est["cost_usd"] is None:
            raise UsageError("--vlm-max-cost needs --vlm-price-input and --vlm-price-output to estimate the cost")
        if est["cost_usd"] > max_cost:
            raise UsageError(f"--vlm-max-cost: the VLM judge would cost about ${est['cost_usd']:.4f}, "
                             f"above ${max_cost:g}; lower --limit or raise the cap")


def _cmd_eval(args) -> dict:
    from .evaluate import report, runs
    from .store import Store

    cfg = _eval_config(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.report and not Path(args.report).parent.exists():
        raise UsageError(f"--report: folder {str(Path(args.report).parent)!r} does not exist")
    store = Store(args.data_dir)
    if cfg.vlm is not None:
        _vlm_guard(cfg, store, args.vlm_max_cost)
    cfgs = runs.lineage_configs(store, cfg) if args.lineage else [cfg]
    if args.job:
        job_id = runs.submit(store, cfgs)
        print(f"job {job_id} queued: eval of {cfg.model}" + (" and its lineage" if args.lineage else ""),
              file=sys.stderr, flush=True)
        job = _job_result(store, job_id, args.detach)
        found = store.eval_runs(job_id=job_id)[::-1]
        if args.detach or len(found) != len(cfgs):
            return job
        results = [r["result"] for r in found]
    else:
        results = [runs.run(c, store, progress=_progress(f"eval {c.model}, {c.steps} steps: "),
                            log=lambda m: print(m, file=sys.stderr, flush=True)) for c in cfgs]
        if any("shard" in r for r in results):  # another process of `accelerate launch` prints the result
            return None
    if args.report:
        Path(args.report).write_text("\n".join(report.markdown(r, store) for r in results))
        for r in results:
            r["report"] = args.report
    return results[0] if len(results) == 1 else "\n".join(json.dumps(r) for r in results)


def _cmd_lineage(args):
    from .evaluate import report
    from .store import Store

    if args.metric not in report.METRICS:
        raise UsageError(f"--metric must be one of {', '.join(report.METRICS)}, got {args.metric!r}")
    rows = report.lineage_rows(Store(args.data_dir), args.model, args.golden)
    return {"model": args.model, "rows": rows} if args.json else report.lineage_markdown(rows, args.metric)

COMMANDS = {"distill": _cmd_distill, "jobs": _cmd_jobs, "resume": _cmd_resume, "cancel": _cmd_cancel,
            "job-run": _cmd_job_run, "generate": _cmd_generate, "adherence": _cmd_adherence,
            "adherence-table": _cmd_adherence_table,
            "train-teacher": _cmd_train_teacher, "train-judge": _cmd_train_judge, "random-model": _cmd_random_model,
            "parity": _cmd_parity, "register": _cmd_register,
            "arena": _cmd_arena, "bench": _cmd_bench, "calibrate": _cmd_calibrate,
            "sweep": _cmd_sweep,
            "eval": _cmd_eval, "lineage": _cmd_lineage}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = COMMANDS[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        if result is not None:
            print(result if isinstance(result, str) else json.dumps(result))
    except BrokenPipeError:  # `... | head`: the reader has gone, which is not an error
        sys.stderr.close()
    return 0
