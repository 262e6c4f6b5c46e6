"""`python -m app`: build the Blocks app and serve it (127.0.0.1:7860 unless told otherwise)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from engine import jobs
from engine.errors import UsageError
from engine.store import Store

from . import arena, compare, decide, distill, evaluate, leaderboard, sweep
from .state import Lab

CSS = """
.gradio-container img { image-rendering: pixelated; }
table.lab-jobs { width: 100%; border-collapse: collapse; }
table.lab-jobs td, table.lab-jobs th { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }
"""


def build_app(lab: Lab) -> gr.Blocks:
    with gr.Blocks(title="Distillation Lab") as demo:
        gr.Markdown("# Distillation Lab\nTeacher and student, side by side: what each costs in passes, "
                    "seconds and memory, and what it does to the image.")
        with gr.Tab("Compare") as compare_tab:
            tab = compare.build(lab)
        with gr.Tab("Distill") as distill_tab_:
            distill_tab = distill.build(lab)
        with gr.Tab("Arena"):
            arena.build(lab)
        with gr.Tab("Leaderboard"):
            board = leaderboard.build(lab)
        with gr.Tab("Sweep") as sweep_tab:
            sweep_view = sweep.build(lab)
        with gr.Tab("Decide") as decide_tab:
            decide_view = decide.build(lab)
        with gr.Tab("Evaluate") as evaluate_tab:
            evaluate_view = evaluate.build(lab)
        evaluate_tab.select(lambda: (gr.Dropdown(choices=lab.model_names()),
                                     gr.Dropdown(choices=evaluate.golden_choices(lab))), None,
                            [evaluate_view["model"], evaluate_view["golden"]], api_visibility="private")
        # New students appear in the pickers without a restart: refresh them on load and on tab change.
        refresh = lambda: [gr.Dropdown(choices=lab.model_names())] * 2  # noqa: E731
        demo.load(refresh, None, tab["models"], api_visibility="private")
        compare_tab.select(refresh, None, tab["models"], api_visibility="private")
        def distill_pickers():
            names = lab.model_names()
            return gr.Dropdown(choices=names), gr.Dropdown(choices=[""] + names)

        for event in (demo.load, distill_tab_.select):
            event(distill_pickers, None, [distill_tab["teacher"], distill_tab["init"]], api_visibility="private")
        demo.load(lambda: [gr.Dropdown(choices=lab.model_names())] * 2, None, board["models"],
                  api_visibility="private")
        for view, tab_ in ((sweep_view, sweep_tab), (decide_view, decide_tab)):
            tab_.select(lambda: gr.Dropdown(choices=lab.model_names()), None, view["model"], api_visibility="private")
        decide_tab.select(lambda m: decide.show(lab, m), decide_view["model"],
                          [decide_view["table"], decide_view["chart"]], api_visibility="private")
    return demo


def build_arena_app(lab: Lab) -> gr.Blocks:
    """The arena alone, for raters: no model names anywhere in the page (`python -m app --arena-only`)."""
    with gr.Blocks(title="Distillation Lab · Arena") as demo:
        gr.Markdown("# Distillation Lab · Arena")
        arena.build(lab)
    return demo


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
    try:
        auth = read_auth_file(args.auth_file) if args.auth_file else None
    except UsageError as e:
        p.error(str(e))
    lab = Lab(Store(args.data_dir), device=args.device)
    # Jobs whose process died while the app was down are marked interrupted; queued ones start.
    jobs.dispatch(lab.store)
    demo = build_arena_app(lab) if args.arena_only else build_app(lab)
    demo.queue().launch(server_name=args.host, server_port=args.port, css=CSS, footer_links=["api"], auth=auth)
    return 0
