"""The Blocks of the app: every tab (`build_app`), or the arena alone for raters (`build_arena_app`)."""

from __future__ import annotations

import gradio as gr

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
