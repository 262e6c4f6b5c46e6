"""The blind arena from the command line: prepare battles, export the votes, print the leaderboard."""

from __future__ import annotations

from pathlib import Path

from ..arena.settings import PrepareConfig, parse
from ..errors import UsageError
from .args import COMMON, DATA_DIR, SEED, arg, command, group, int_in, open_store, progress

group("arena", "blind arena: prepare battles, export votes, print the leaderboard")


@command("arena prepare", "pre-generate battles between model settings",
         arg("--setting", action="append", required=True, metavar="MODEL[,steps=N][,guidance=G][,KEY=V]",
             help="a competitor (repeat; at least two); the first is the reference"),
         arg("--pairs", default="first", help="first: the first setting against each other one; all: every pair"),
         arg("--n", type=int_in(1, 10_000), default=100, help="battles to prepare"),
         arg("--golden", default=None,
             help="golden set (JSONL: prompt, seed, category); default: fresh prompts of the embedded world"),
         arg("--category", default=None, help="embedded-world prompts of this category only"),
         arg("--prompt", action="append", default=None, help="a prompt typed by hand (repeat)"),
         arg("--seed", type=SEED, default=0, help="which embedded-world prompts; typed prompts' seeds (battles' own "
             "noise seeds are drawn in secret)"),
         arg("--batch-size", type=int_in(1, 4096), default=16),
         *COMMON)
def prepare(args) -> dict:
    if args.prompt and args.golden:
        raise UsageError("--prompt and --golden: give one source of prompts, not both")
    settings = [parse(s) for s in args.setting]
    cfg = PrepareConfig(n=args.n, pairs=args.pairs, batch_size=args.batch_size, device=args.device)
    cfg.check(len(settings))
    from ..arena import battles

    source = "typed" if args.prompt else "golden" if args.golden else "world"
    prompts, cfg.source = battles.prompt_source(source, n=args.n, seed=args.seed, category=args.category,
                                                typed=args.prompt, golden_file=args.golden)
    store = open_store(args)
    rows = battles.prepare(store, settings, prompts, cfg, progress=progress("arena: "))
    return {"battles": len(rows), "total_battles": len(store.battles())}


@command("arena export", "write every vote as CSV or JSON",
         arg("--format", default="csv", choices=("csv", "json")),
         arg("--out", required=True),
         DATA_DIR)
def export(args) -> dict:
    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"--out: folder {str(out.parent)!r} does not exist")
    from ..arena import votes

    store = open_store(args)
    votes.export(store, args.format, out)
    return {"votes": store.vote_count(), "format": args.format, "out": str(out)}


@command("arena leaderboard", "print the ratings, win rates, position bias and agreement",
         arg("--bootstrap", type=int_in(0, 100_000), default=1000, help="resamples for the intervals"),
         arg("--seed", type=SEED, default=0),
         arg("--category", default=None),
         arg("--include-revotes", action="store_true",
             help="count votes cast again after an undo, when the rater had seen the sides"),
         arg("--json", action="store_true", help="print JSON instead of Markdown"),
         DATA_DIR)
def leaderboard(args):
    from ..arena import leaderboard as board

    cfg = board.LeaderboardConfig(args.bootstrap, args.seed, args.category, args.include_revotes)
    result = board.leaderboard(open_store(args), cfg)
    return result if args.json else board.markdown(result)
