"""`python -m app`: check the command line, then build the Blocks app and serve it (127.0.0.1:7860
unless told otherwise). Gradio and the engine are imported only once the arguments are good."""

from __future__ import annotations

import argparse
import ipaddress
import os

from engine.errors import UsageError


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


EXPOSED = ("--host {host} without --auth-file: anyone who can reach port {port} may launch and cancel "
           "jobs, load a model from any path on this machine, read and export every vote, and vote as "
           "anyone. Give --auth-file to sign people in.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app", description="Distillation Lab web app")
    p.add_argument("--host", default=os.environ.get("LAB_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "7860")))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--arena-only", action="store_true", help="serve only the blind Arena tab (for raters)")
    p.add_argument("--auth-file", default=os.environ.get("LAB_AUTH_FILE"),
                   help="sign-in: a file of USER:PASSWORD:ROLE lines, ROLE admin or rater; raters may only "
                        "vote, each as their user")
    p.add_argument("--allow-anyone", action="store_true",
                   help="serve on a non-loopback --host without --auth-file (everyone is an admin)")
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be in 1..65535, got {args.port}")
    exposed = EXPOSED.format(host=args.host, port=args.port)
    if not args.auth_file and not loopback(args.host) and not args.allow_anyone:
        p.error(f"{exposed} To serve it so anyway, add --allow-anyone.")
    # Gradio's queue recomputes its monitoring summary (a pandas frame of up to 10,000 recent
    # events) after every event by default: a cost per call that grows with traffic. Every 1,000.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    from engine.store import Store

    from .access import Access, read_auth_file

    try:
        access = read_auth_file(args.auth_file) if args.auth_file else Access()
        store = Store(args.data_dir)
    except UsageError as e:
        p.error(str(e))
    if not access.signed_in and not loopback(args.host):
        print(f"warning: {exposed}", flush=True)
    from engine import jobs

    from .arena import HEAD
    from .blocks import CSS, build_app, build_arena_app
    from .state import Lab

    lab = Lab(store, device=args.device)
    # Jobs whose process died while the app was down are marked interrupted; queued ones start.
    try:
        jobs.dispatch(lab.store)
    except UsageError as e:  # a read-only or full data directory: served for reading, writes refused
        print(f"warning: {e}", flush=True)
    demo = (build_arena_app if args.arena_only else build_app)(lab, access)
    demo.queue().launch(server_name=args.host, server_port=args.port, css=CSS, head=HEAD, footer_links=["api"],
                        auth=access.gradio_auth())
    return 0
