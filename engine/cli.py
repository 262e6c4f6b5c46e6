"""`python -m engine <command>`: everything the app can do, from the command line.

Each command lives with its concept in engine/commands/; this module parses the line and runs the
command. Bad input exits with code 2 and one line on stderr naming the field and what is allowed.
"""

from __future__ import annotations

import json
import sys

from .commands import arena, decide, distill, evaluate, export, models, world  # noqa: F401 - each registers its commands
from .commands.args import Outcome, build_parser
from .errors import UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = args.handler(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    code = 0
    if isinstance(result, Outcome):
        result, code = result.result, result.code
    try:
        if result is not None:
            print(result if isinstance(result, str) else json.dumps(result))
    except BrokenPipeError:  # `... | head`: the reader has gone, which is not an error
        sys.stderr.close()
    return code
