"""Evaluation from the command line: a model setting (or its whole lineage) on a golden set, the
lineage table of what was evaluated, and adherence on fresh prompts of the embedded world."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..evaluate.config import METRICS, EvalConfig
from ..evaluate.golden import DEFAULT_EMBEDDED
from ..evaluate.vlm import VLMConfig
from ..request import check_guidance
from ..world import CATEGORIES
from .args import (
    COMMON,
    DATA_DIR,
    SEED,
    SIZE,
    STEPS,
    THREADS,
    arg,
    command,
    int_in,
    number,
    open_store,
    progress,
    say,
    set_threads,
)
from .distill import job_result


@command("eval", "evaluate a model setting on a golden set against its teacher (FID, adherence, CLIP score, PSNR; "
                 "optional VLM judge) and print one JSON line",
         arg("--model", default="embedded"),
         arg("--golden", default=str(DEFAULT_EMBEDDED),
             help="golden set: JSONL (prompt, category, seed, stated) or one prompt a line (default: the embedded "
                  "domain's)"),
         arg("--steps", type=STEPS, default=50),
         arg("--guidance", type=number, default=5.0),
         arg("--limit", type=int_in(1, 100000), default=None, help="only the first N prompts"),
         arg("--cache", default="none", metavar="METHOD[:THRESHOLD]", help="as for generate"),
         arg("--fp8", default="off", help="off, weights or compute"),
         arg("--teacher", default=None, help="reference model (default: the root of the model's lineage)"),
         arg("--ref-steps", type=STEPS, default=50, help="the teacher's steps for the reference images"),
         arg("--ref-guidance", type=number, default=5.0, help="the teacher's guidance for the reference images"),
         arg("--height", type=SIZE, default=None),
         arg("--width", type=SIZE, default=None),
         arg("--clip-model", default=None, help="transformers CLIP directory (or cached hub id) for CLIP score"),
         arg("--inception", default=None, help="FID Inception weights for real models (default: torch hub cache)"),
         arg("--batch-size", type=int_in(1, 4096), default=16),
         arg("--diversity-k", type=int_in(0, 64), default=0,
             help="seeds per prompt for diversity over seeds (embedded: the judge; else CLIP features); 0: none"),
         arg("--report", default=None, help="write a Markdown report here (per-category table, worst prompts)"),
         arg("--vlm-url", default=None, help="OpenAI-compatible endpoint for the VLM judge, e.g. http://host/v1"),
         arg("--vlm-model", default=None),
         arg("--vlm-key-env", default="LAB_VLM_API_KEY",
             help="environment variable with the key (else OPENAI_API_KEY)"),
         arg("--vlm-price-input", type=number, default=None, help="USD per million input tokens"),
         arg("--vlm-price-output", type=number, default=None, help="USD per million output tokens"),
         arg("--vlm-max-cost", type=number, default=None, help="refuse when the estimated VLM cost is above (USD)"),
         arg("--lineage", action="store_true",
             help="evaluate every model of --model's lineage at the steps and guidance each was made for (then "
                  "--model with --cache/--fp8 if given); prints one JSON line each"),
         THREADS,
         arg("--job", action="store_true", help="run as a background job (queued like distillation) and follow it"),
         arg("--detach", action="store_true", help="with --job: return at once"),
         *COMMON)
def evaluate(args):
    vlm_cfg = None
    if args.vlm_url or args.vlm_model:
        vlm_cfg = VLMConfig(url=args.vlm_url or "", model=args.vlm_model or "", api_key_env=args.vlm_key_env,
                            price_input=args.vlm_price_input, price_output=args.vlm_price_output)
    cfg = EvalConfig(model=args.model, golden=args.golden, steps=args.steps, guidance=args.guidance,
                     cache=args.cache, fp8=args.fp8, limit=args.limit, teacher=args.teacher, ref_steps=args.ref_steps,
                     ref_guidance=args.ref_guidance, height=args.height, width=args.width,
                     clip_model=args.clip_model, inception=args.inception, vlm=vlm_cfg, batch_size=args.batch_size,
                     diversity_k=args.diversity_k,
                     device=args.device, dtype=args.dtype)
    cfg.check()
    if args.report and not Path(args.report).parent.exists():
        raise UsageError(f"--report: folder {str(Path(args.report).parent)!r} does not exist")
    if cfg.vlm is not None:
        _vlm_guard(cfg, args.vlm_max_cost)
    from ..evaluate import job as eval_job
    from ..evaluate import report, runs

    set_threads(args.threads)
    store = open_store(args)
    cfgs = runs.lineage_configs(store, cfg) if args.lineage else [cfg]
    if args.job:
        job_id = eval_job.submit(store, cfgs)
        say(f"job {job_id} queued: eval of {cfg.model}" + (" and its lineage" if args.lineage else ""))
        job = job_result(store, job_id, args.detach)
        found = store.eval_runs(job_id=job_id)[::-1]
        if args.detach or len(found) != len(cfgs):
            return job
        results = [r["result"] for r in found]
    else:
        results = [runs.run(c, store, progress=progress(f"eval {c.model}, {c.steps} steps: "), log=say) for c in cfgs]
        if any("shard" in r for r in results):  # another process of `accelerate launch` prints the result
            return None
    if args.report:
        Path(args.report).write_text("\n".join(report.markdown(r, store) for r in results))
        for r in results:
            r["report"] = args.report
    return results[0] if len(results) == 1 else "\n".join(json.dumps(r) for r in results)


def _vlm_guard(cfg: EvalConfig, max_cost: float | None) -> None:
    """Show the VLM judge's expected calls and cost before anything is generated; refuse above max_cost."""
    from ..evaluate import golden, vlm

    est = vlm.estimate_for(cfg.vlm, [p.text for p in golden.load(cfg.golden).limited(cfg.limit).prompts])
    say(vlm.describe_estimate(est) + " (at most; answers already cached are not sent again)")
    if max_cost is not None:
        if est["cost_usd"] is None:
            raise UsageError("--vlm-max-cost needs --vlm-price-input and --vlm-price-output to estimate the cost")
        if est["cost_usd"] > max_cost:
            raise UsageError(f"--vlm-max-cost: the VLM judge would cost about ${est['cost_usd']:.4f}, "
                             f"above ${max_cost:g}; lower --limit or raise the cap")


@command("lineage", "every evaluated metric along a model's lineage (teacher -> ... -> model)",
         arg("--model", required=True),
         arg("--golden", default=None, help="only runs on this golden set (its name, e.g. embedded)"),
         arg("--metric", default="adherence", choices=METRICS, help="the per-category columns"),
         arg("--json", action="store_true"),
         DATA_DIR)
def lineage(args):
    from ..evaluate import report

    rows = report.lineage_rows(open_store(args), args.model, args.golden)
    return {"model": args.model, "rows": rows} if args.json else report.lineage_markdown(rows, args.metric)


ADHERENCE = (arg("--model", default="embedded"),
             arg("--n", type=int_in(1, 100000), default=200),
             arg("--seed", type=SEED, default=0),
             arg("--batch-size", type=int_in(1, 4096), default=50))


def _adherence_setup(args, category: str | None):
    """The model, its domain's judge and the prompts (checked before the model is loaded)."""
    if category is not None and category not in CATEGORIES:
        raise UsageError(f"--category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    from .. import registry
    from ..world import sample_prompts

    family = registry.load(args.model, store=open_store(args), device=args.device, dtype=args.dtype)
    judge = family.judge()
    if judge is None:
        raise UsageError(f"adherence needs a model of a domain with a judge (the embedded one); {args.model!r} is a "
                         f"{family.name} model")
    return family, judge, sample_prompts(args.n, args.seed, category)


@command("adherence", "adherence of a model on fresh prompts (embedded domain)",
         *ADHERENCE,
         arg("--steps", type=STEPS, default=None, help="default: the model's own (a student: its recipe's)"),
         arg("--guidance", type=number, default=None, help="default: the model's own"),
         arg("--category", default=None),
         *COMMON)
def adherence(args) -> dict:
    if args.guidance is not None:
        check_guidance(args.guidance, "--guidance")
    family, judge, prompts = _adherence_setup(args, args.category)
    from ..evaluate.adherence import evaluate as score_adherence

    steps, guidance = _setting(family, args)
    result = score_adherence(family, judge, prompts, steps=steps, guidance=guidance,
                             batch_size=args.batch_size, progress=progress(""))
    return {**result, "model": args.model}


def _setting(family, args) -> tuple[int, float]:
    """--steps and --guidance, each the model's own where not given (engine/generate.py `defaults`)."""
    from ..generate import defaults

    steps, guidance = defaults(family)
    return (steps if args.steps is None else args.steps, guidance if args.guidance is None else args.guidance)


@command("diversity", "diversity over seeds of a model on fresh prompts (embedded domain): K seeds per prompt, "
                      "the judge reads what each prompt leaves unstated",
         arg("--model", default="embedded"),
         arg("--n", type=int_in(1, 100000), default=100, help="prompts"),
         arg("--k", type=int_in(2, 64), default=8, help="seeds per prompt"),
         arg("--seed", type=SEED, default=0, help="the prompt set (as for adherence)"),
         arg("--steps", type=STEPS, default=None, help="default: the model's own (a student: its recipe's)"),
         arg("--guidance", type=number, default=None, help="default: the model's own"),
         *COMMON)
def diversity(args) -> dict:
    if args.guidance is not None:
        check_guidance(args.guidance, "--guidance")
    family, judge, prompts = _adherence_setup(args, None)
    from ..evaluate.diversity import evaluate as score_diversity

    steps, guidance = _setting(family, args)
    result = score_diversity(family, judge, prompts, steps=steps, guidance=guidance, k=args.k, progress=progress(""))
    return {**result, "model": args.model, "seed": args.seed}


@command("adherence-table", "adherence over steps x guidance, as a Markdown table",
         *ADHERENCE[:1],
         arg("--steps", type=STEPS, nargs="+", default=[50, 8]),
         arg("--guidance", type=number, nargs="+", default=[1.0, 3.0, 5.0, 7.0]),
         arg("--n", type=int_in(1, 100000), default=600),
         *ADHERENCE[2:],
         arg("--json", action="store_true", help="print JSON instead of Markdown"),
         *COMMON)
def adherence_table(args):
    for g in args.guidance:
        check_guidance(g, "--guidance")
    family, judge, prompts = _adherence_setup(args, None)
    from ..evaluate.adherence import evaluate as score_adherence

    rows = [score_adherence(family, judge, prompts, steps=steps, guidance=g, batch_size=args.batch_size,
                            progress=progress(f"steps {steps}, guidance {g:g}: "))
            for steps in args.steps for g in args.guidance]
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
