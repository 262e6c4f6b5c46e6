"""The Blocks of the app: every tab (`build_app`), or the arena alone for raters (`build_arena_app`).
Both refuse a signed-in rater everything but the arena (app/access.py)."""

from __future__ import annotations

import gradio as gr

from . import arena, compare, decide, distill, evaluate, leaderboard, models, sweep
from . import jobs as jobs_tab
from .access import REFUSED, Access
from .state import Lab

CSS = """
.gradio-container img { image-rendering: pixelated; }
.lab-battle img { width: 100%; height: 100%; object-fit: contain; }
table.lab-jobs { width: 100%; border-collapse: collapse; }
table.lab-jobs td, table.lab-jobs th { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }
/* Tables keep words and numbers whole: a table wider than its column scrolls sideways instead. */
.gradio-container .prose table { display: block; max-width: 100%; overflow-x: auto; }
.gradio-container .prose table th, .gradio-container .prose table td { word-break: keep-all; overflow-wrap: normal;
  hyphens: none; }
.gradio-container .prose table th { white-space: nowrap; }
.lab-warning { color: #975a16; }
"""


class LabBlocks(gr.Blocks):
    """gr.Blocks that checks the caller's role before any event runs (app/access.py): a rater may
    run the events in `open_to_raters` (ids of `fns`, set once the app is built) and no other."""

    def __init__(self, access: Access, **kwargs):
        super().__init__(**kwargs)
        self.lab_access = access
        self.open_to_raters: frozenset[int] = frozenset()

    async def process_api(self, block_fn, inputs, state=None, request=None, *args, **kwargs):
        fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
        first = request[0] if isinstance(request, list) and request else request
        if fn._id not in self.open_to_raters and not self.lab_access.is_admin(first):
            # Not shown on the page (a rater's page only ever fires it from a hidden tab's
            # refresh); an API caller receives the message.
            raise gr.Error(REFUSED, visible=False, print_exception=False)
        return await super().process_api(block_fn, inputs, state, request, *args, **kwargs)


def build_app(lab: Lab, access: Access | None = None) -> gr.Blocks:
    """Every tab. With sign-ins, the admin tabs start hidden and the page's first event shows them
    to admins; a rater's page shows the Arena alone, and every other event refuses them."""
    access = access or Access()
    with LabBlocks(access, title="Distillation Lab") as demo:
        gr.Markdown("# Distillation Lab\nTeacher and student, side by side: what each costs in passes, "
                    "seconds and memory, and what it does to the image.")
        shown = not access.signed_in
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="Compare", visible=shown) as compare_tab:
                tab = compare.build(lab)
            with gr.Tab("Distill", id="Distill", visible=shown) as distill_tab_:
                distill_tab = distill.build(lab)
            with gr.Tab("Arena", id="Arena"):
                before = set(demo.fns)
                arena.build(lab)
                open_to_raters = set(demo.fns) - before
            with gr.Tab("Leaderboard", id="Leaderboard", visible=shown) as board_tab:
                board = leaderboard.build(lab)
            with gr.Tab("Sweep", id="Sweep", visible=shown) as sweep_tab:
                sweep_view = sweep.build(lab)
            with gr.Tab("Decide", id="Decide", visible=shown) as decide_tab:
                decide_view = decide.build(lab)
            with gr.Tab("Evaluate", id="Evaluate", visible=shown) as evaluate_tab:
                evaluate_view = evaluate.build(lab)
            with gr.Tab("Models", id="Models", visible=shown) as models_tab:
                models_view = models.build(lab)
            with gr.Tab("Jobs", id="Jobs", visible=shown) as jobs_tab_:
                jobs_view = jobs_tab.build(lab)
        admin_tabs = [compare_tab, distill_tab_, board_tab, sweep_tab, decide_tab, evaluate_tab, models_tab,
                      jobs_tab_]

        def by_role(request: gr.Request):
            """Admins see every tab; a rater the Arena alone, selected."""
            admin = access.is_admin(request)
            return [gr.Tabs(selected=None if admin else "Arena"), *[gr.Tab(visible=admin) for _ in admin_tabs]]

        if access.signed_in:
            before = set(demo.fns)
            demo.load(by_role, None, [tabs, *admin_tabs], api_visibility="private")
            open_to_raters |= set(demo.fns) - before
        evaluate_tab.select(lambda: (gr.Dropdown(choices=lab.model_names()),
                                     gr.Dropdown(choices=evaluate.golden_choices(lab))), None,
                            [evaluate_view["model"], evaluate_view["golden"]], api_visibility="private")
        # New students appear in the pickers without a restart: refresh them on load and on tab change.
        refresh = lambda: [gr.Dropdown(choices=lab.model_names())] * 2  # noqa: E731
        demo.load(refresh, None, tab["models"], api_visibility="private")
        compare_tab.select(refresh, None, tab["models"], api_visibility="private")
        compare_tab.select(lambda: compare.history_table(lab), None, tab["history"], api_visibility="private")
        def distill_pickers():
            names = lab.model_names()
            return gr.Dropdown(choices=names), gr.Dropdown(choices=[""] + names)

        for event in (demo.load, distill_tab_.select):
            event(distill_pickers, None, [distill_tab["teacher"], distill_tab["init"]], api_visibility="private")
        demo.load(lambda: distill.picker(lab), None, distill_tab["picked"], api_visibility="private")
        for event in (demo.load, jobs_tab_.select):
            event(jobs_view["refresh"], jobs_view["picked"], [jobs_view["table"], jobs_view["picked"]],
                  api_visibility="private")
        demo.load(lambda: [gr.Dropdown(choices=lab.model_names())] * 2, None, board["models"],
                  api_visibility="private")
        board_tab.select(board["refresh_fn"], None, board["outputs"], api_visibility="private")
        for view, tab_ in ((sweep_view, sweep_tab), (decide_view, decide_tab)):
            tab_.select(lambda: gr.Dropdown(choices=lab.model_names()), None, view["model"], api_visibility="private")
        models_tab.select(lambda: (models.inventory(lab), gr.Dropdown(choices=lab.model_names())), None,
                          [models_view["table"], models_view["model"]], api_visibility="private")
        decide_tab.select(lambda m: decide.show(lab, m), decide_view["model"],
                          [decide_view["table"], decide_view["chart"]], api_visibility="private")
    demo.open_to_raters = frozenset(open_to_raters)
    return demo


def build_arena_app(lab: Lab, access: Access | None = None) -> gr.Blocks:
    """The arena alone, for raters: no model names anywhere in the page (`python -m app --arena-only`)."""
    with LabBlocks(access or Access(), title="Distillation Lab · Arena") as demo:
        gr.Markdown("# Distillation Lab · Arena")
        arena.build(lab)
    demo.open_to_raters = frozenset(demo.fns)
    return demo
