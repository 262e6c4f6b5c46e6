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

    t = sub.add_parser("train-teacher", help="train the embedded teacher")
    t.add_argument("--steps", type=_int_in(1, 10**7), default=6000)
    t.add_argument("--minutes", type=_float(), default=None)
    t.add_argument("--batch-size", type=_int_in(1, 65536), default=64)
    t.add_argument("--lr", type=_float(), default=1e-3)
    t.add_argument("--dataset", type=_int_in(1, 10**8), default=100_000)
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=None, help="model directory (default assets/embedded-teacher)")

    j = sub.add_parser("train-judge", help="train the judge network")
    j.add_argument("--steps", type=_int_in(1, 10**7), default=3000)
    j.add_argument("--device", default="auto")
    j.add_argument("--out", default=None, help="directory (default assets/judge)")
    return parser


def _cmd_generate(args) -> dict:
    from . import registry
    from .generate import Request, run
    from .store import Store

    req = Request(prompt=args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  height=args.height, width=args.width)
    req.check()
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, got {args.out!r}")
    if not out.parent.exists():
        raise UsageError(f"--out: folder {str(out.parent)!r} does not exist")
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    image, record = run(family, req, model_name=args.model, store=store)
    image.save(out)
    record["out"] = str(out)
    return record


def _cmd_adherence(args) -> dict:
    import math

    from . import registry
    from .adherence import evaluate
    from .judge import Judge
    from .paths import JUDGE_WEIGHTS
    from .store import Store
    from .world import CATEGORIES, sample_prompts

    if args.category is not None and args.category not in CATEGORIES:
        raise UsageError(f"--category must be one of {', '.join(CATEGORIES)}, got {args.category!r}")
    if not math.isfinite(args.guidance) or not 0 <= args.guidance <= 30:
        raise UsageError(f"--guidance must be a number in 0..30 (1 = no guidance), got {args.guidance}")
    store = Store(args.data_dir)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    if family.name != "embedded":
        raise UsageError(f"adherence needs a model of the embedded domain; {args.model!r} is a {family.name} model")
    judge = Judge.load(JUDGE_WEIGHTS).to(family.device)
    prompts = sample_prompts(args.n, args.seed, args.category)
    result = evaluate(family, judge, prompts, steps=args.steps, guidance=args.guidance,
                      batch_size=args.batch_size,
                      progress=lambda i, n: print(f"\r{i}/{n} images", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    result["model"] = args.model
    return result


def _cmd_train_teacher(args) -> dict:
    from .train_teacher import TeacherTrainConfig, train

    cfg = TeacherTrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                             dataset=args.dataset, seed=args.seed, device=args.device)
    if args.out:
        cfg.out = args.out
    if not cfg.lr > 0:
        raise UsageError(f"--lr must be positive, got {cfg.lr}")
    return train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def _cmd_train_judge(args) -> dict:
    from .train_judge import JudgeTrainConfig, train

    cfg = JudgeTrainConfig(steps=args.steps, device=args.device)
    if args.out:
        cfg.out = args.out
    report = train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"min_accuracy": report["min_accuracy"], "accuracy": report["accuracy"]}


COMMANDS = {"generate": _cmd_generate, "adherence": _cmd_adherence,
            "train-teacher": _cmd_train_teacher, "train-judge": _cmd_train_judge}


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
    print(json.dumps(result))
    return 0
