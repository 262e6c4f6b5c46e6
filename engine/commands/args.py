"""What every command shares: the decorator that puts a command's flags on its handler, the flag
types, the common flags, and how a command opens the store and reports progress."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UsageError
from ..store import Store


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


@dataclass
class Command:
    name: str  # "generate", or "arena prepare" for a subcommand of "arena"
    help: str
    handler: Callable
    args: tuple = ()  # (flag names, add_argument keywords) pairs, from `arg`
    options: dict = field(default_factory=dict)  # add_parser keywords (e.g. argument_default)


COMMANDS: list[Command] = []


@dataclass
class Outcome:
    """What a command prints, with an exit code other than 0: a job it followed failed or was canceled."""
    result: object
    code: int


def arg(*names: str, **kwargs) -> tuple:
    """One flag of a command, as argparse's add_argument takes it."""
    return names, kwargs


def command(name: str, help: str, *args: tuple, **options) -> Callable:
    """Register the decorated function as the command `name`, with these flags."""
    def register(fn: Callable) -> Callable:
        COMMANDS.append(Command(name, help, fn, args, options))
        return fn
    return register


def group(name: str, help: str) -> None:
    """A command whose subcommands are registered as "NAME SUB"."""
    COMMANDS.append(Command(name, help, None))


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {v}")
        return v
    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


SEED = int_in(0, 2**32 - 1)
STEPS = int_in(1, 1000)
SIZE = int_in(8, 4096)
DATA_DIR = arg("--data-dir", default=None, help="lab data directory (default $LAB_DATA_DIR or ./lab-data)")
DEVICE = arg("--device", default="auto", help="auto, cpu, cuda, cuda:N")
DTYPE = arg("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16")
COMMON = (DATA_DIR, DEVICE, DTYPE)
THREADS = arg("--threads", type=int_in(1, 1024), default=None,
              help="CPU threads for torch (default: torch's own; on a busy shared CPU, 1 runs steadily)")


def build_parser() -> Parser:
    parser = Parser(prog="python -m engine", description="Distillation Lab engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for c in COMMANDS:
        where, name = sub, c.name
        if " " in c.name:  # "arena prepare": a subcommand of the group "arena"
            group, name = c.name.split(" ", 1)
            where = groups[group]
        p = where.add_parser(name, help=c.help, **c.options)
        for names, kwargs in c.args:
            p.add_argument(*names, **kwargs)
        p.set_defaults(handler=c.handler)
        if c.handler is None:  # a group: its subcommands follow
            groups[c.name] = p.add_subparsers(dest=f"{c.name}_command", required=True, parser_class=Parser)
    return parser


def open_store(args) -> Store:
    return Store(args.data_dir)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(label: str) -> Callable[[int, int], None]:
    """A progress line on stderr: '<label>i/n images', rewritten in place."""
    return lambda i, n: print(f"\r{label}{i}/{n} images", end="" if i < n else "\n", file=sys.stderr, flush=True)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
