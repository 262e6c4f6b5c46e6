"""Leaderboard tab: ratings recomputed from the votes, students against their teachers, position
bias and rater agreement; export of the votes; and (admins) preparing battles for the arena."""

from __future__ import annotations

import html

import gradio as gr

from engine.arena import battles, leaderboard, votes
from engine.arena.settings import MAX_BATTLES, PrepareConfig
from engine.errors import UsageError
from engine.request import GUIDANCE_RANGE

from .state import Lab, progress_bar

ALL = "all categories"
EMPTY = ("**No votes yet** ({battles} battles prepared). Prepare battles between two settings below "
         "(*Prepare battles*), then vote in the **Arena** tab; ratings appear here as votes come in.")
SOURCES = {"embedded world": "world", "typed prompts": "typed", "golden set file": "golden"}


def refresh(lab: Lab, category: str | None, n_bootstrap: int) -> tuple:
    cats = sorted({b["category"] for b in lab.store.battles() if b["category"]})
    cfg = leaderboard.LeaderboardConfig(n_bootstrap=int(n_bootstrap),
                                        category=None if category in (None, "", ALL) else category)
    board = leaderboard.leaderboard(lab.store, cfg)
    text = leaderboard.summary(board) if board["votes"] else EMPTY.format(battles=len(lab.store.battles()))
    return (text, leaderboard.rating_table(board), leaderboard.win_table(board),
            gr.update(choices=[ALL, *cats], value=category if category in cats else ALL))


def export(lab: Lab, fmt: str) -> str:
    path = lab.store.new_file(f".{fmt}", folder="exports")
    votes.export(lab.store, fmt, path)
    return str(path)


def prepare(lab: Lab, model_a, steps_a, guidance_a, model_b, steps_b, guidance_b, n, source, category, typed,
            golden, seed) -> str:
    """Queue the battles' preparation as a job (checked first); returns at once."""
    from engine.arena import job as arena_job

    try:
        if n is None or not 1 <= n <= MAX_BATTLES:
            raise UsageError(f"Battles must be a whole number in 1..{MAX_BATTLES}, got {n!r}")
        if seed is None or seed < 0:
            raise UsageError(f"Seed must be a whole number >= 0, got {seed!r}")
        n, seed = int(n), int(seed)
        prompts, name = battles.prompt_source(SOURCES.get(source, source), n=n, seed=seed,
                                              category=None if category in (None, "", ALL) else category,
                                              typed=(typed or "").splitlines(), golden_file=golden)
        cfg = PrepareConfig(n=n, source=name, device=lab.device)
        settings = [{"model": model_a, "steps": steps_a, "guidance": guidance_a},
                    {"model": model_b, "steps": steps_b, "guidance": guidance_b}]
        job_id = arena_job.submit(lab.store, settings, prompts, cfg)
    except UsageError as e:
        raise gr.Error(str(e), print_exception=False) from None
    return f"Job {job_id} queued: {n} battles. Its progress is below and in the **Jobs** tab."


def preparation_status(lab: Lab) -> str:
    """The latest battle preparation's progress, or how many battles there are."""
    from engine.arena import job as arena_job

    latest = lab.store.jobs(kind=arena_job.KIND, limit=1)
    total = f"{len(lab.store.battles())} battles in all."
    if not latest:
        return total
    job = latest[0]
    return f"{progress_bar(job)} <b>job {job['id']}</b>: {html.escape(job['status'])} · {total}"


def build(lab: Lab) -> dict:
    """Lay out the tab inside the current Blocks context; returns the components tests use."""
    from engine.world import CATEGORIES

    gr.Markdown("Ratings are recomputed from the votes every time (Bradley–Terry with ties as their own "
                "outcome, Davidson's model; rank = 1 + the number of settings whose lower bound is above this "
                "one's upper bound; under 30 votes a rating is preliminary).")
    with gr.Row():
        category = gr.Dropdown([ALL], value=ALL, label="Golden-set category", scale=2)
        n_boot = gr.Slider(0, 5000, value=1000, step=100, label="Bootstrap resamples", scale=2)
        go = gr.Button("Refresh", variant="primary", scale=1)
    summary = gr.Markdown()
    ratings = gr.Dataframe(headers=leaderboard.RATING_COLUMNS, label="Ratings (95% bootstrap intervals)",
                           interactive=False, wrap=True)
    wins = gr.Dataframe(headers=leaderboard.WIN_COLUMNS, label="Students against their teachers (Wilson 95%)",
                        interactive=False, wrap=True)
    with gr.Row():
        csv_btn = gr.Button("Export votes as CSV")
        json_btn = gr.Button("Export votes as JSON")
        exported = gr.File(label="Export", interactive=False, height=90)

    with gr.Accordion("Prepare battles (admin)", open=False):
        pickers = []
        with gr.Row():
            for side, steps, guidance in (("A (reference)", 50, 5.0), ("B", 8, 5.0)):
                with gr.Column():
                    gr.Markdown(f"**Setting {side}**")
                    pickers += [gr.Dropdown(lab.model_names(), value="embedded", label="Model"),
                                gr.Slider(1, 100, value=steps, step=1, label="Steps"),
                                gr.Slider(*GUIDANCE_RANGE, value=guidance, step=0.5, label="Guidance scale")]
        with gr.Row():
            n = gr.Number(20, label="Battles", precision=0)
            seed = gr.Number(0, label="Seed", precision=0)
            source = gr.Radio(list(SOURCES), value=list(SOURCES)[0], label="Prompts from")
            cat = gr.Dropdown([ALL, *CATEGORIES], value=ALL, label="World category")
        typed = gr.Textbox(label="Typed prompts (one a line)", lines=3)
        golden = gr.File(label="Golden set (JSONL or one prompt a line)", type="filepath",
                         file_types=[".jsonl", ".txt"])
        prep = gr.Button("Prepare battles", variant="primary")
        prep_out = gr.Markdown()
        prep_status = gr.HTML(preparation_status(lab))
        gr.Timer(2.0).tick(lambda: preparation_status(lab), None, prep_status, api_visibility="private")

    outputs = [summary, ratings, wins, category]
    go.click(lambda c, b: refresh(lab, c, b), [category, n_boot], outputs, api_name="leaderboard")
    csv_btn.click(lambda: export(lab, "csv"), None, exported, api_name="arena_export_csv")
    json_btn.click(lambda: export(lab, "json"), None, exported, api_name="arena_export_json")
    prep.click(lambda *a: prepare(lab, *a), [*pickers, n, source, cat, typed, golden, seed], prep_out,
               api_name="arena_prepare")
    return {"refresh": go, "category": category, "bootstrap": n_boot, "outputs": outputs, "models": pickers[0::3],
            "refresh_fn": lambda: refresh(lab, ALL, 1000)}
