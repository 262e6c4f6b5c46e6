"""`python -m app`: check the command line, then build the Blocks app and serve it (127.0.0.1:7860
unless told otherwise). Gradio and the engine are imported only once the arguments are good."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.errors import UsageError


def read_auth_file(path: str) -> list[tuple[str, str]]:
    """USER:PASSWORD a line (blank lines and # comments skipped), for Gradio's `auth`."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise UsageError(f"--auth-file: cannot read {path!r} ({e.strerror})") from None
    users = []
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = (part.strip() for part in line.partition(":"))
        if not sep or not user or not password:
            raise UsageError(f"--auth-file: line {i} of {Path(path).name} must be USER:PASSWORD")
        users.append((user, password))
    if not users:
        raise UsageError(f"--auth-file: {Path(path).name} names no USER:PASSWORD")
    return users


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app", description="Distillation Lab web app")
    p.add_argument("--host", default=os.environ.get("LAB_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "7860")))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--arena-only", action="store_true", help="serve only the blind Arena tab (for raters)")
    p.add_argument("--auth-file", default=os.environ.get("LAB_AUTH_FILE"),
                   help="sign-in: a file of USER:PASSWORD lines (Gradio auth); each rater votes as their user")
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be in 1..65535, got {args.port}")
    from engine.store import Store

    try:
        auth = read_auth_file(args.auth_file) if args.auth_file else None
        store = Store(args.data_dir)
    except UsageError as e:
        p.error(str(e))
    from engine import jobs

    from .blocks import CSS, build_app, build_arena_app
    from .state import Lab

    lab = Lab(store, device=args.device)
    # Jobs whose process died while the app was down are marked interrupted; queued ones start.
    jobs.dispatch(lab.store)
    demo = build_arena_app(lab) if args.arena_only else build_app(lab)
    demo.queue().launch(server_name=args.host, server_port=args.port, css=CSS, footer_links=["api"], auth=auth)
    return 0
