"""Jobs tab: every job of the lab in one view (distillations, evaluations, benches, sweeps, arena
preparations), each in its own process; pick one to follow its progress and log, cancel or resume it."""

from __future__ import annotations

import gradio as gr

from engine import jobs

from . import state
from .distill import act, jobs_html
from .state import Lab


def table(lab: Lab) -> str:
    jobs.reconcile(lab.store)
    rows = lab.store.jobs(limit=100)
    if not rows:
        return ("<p class='lab-empty'>No jobs yet. Long work runs here: a distillation (Distill tab), an "
                "evaluation (Evaluate), a bench (Decide), a sweep (Sweep) or battles for the arena (Arena).</p>")
    return jobs_html(rows, "what it does", kinds=True)


def detail(lab: Lab, job_id) -> tuple[str, str]:
    """The picked job's status line and log tail."""
    if not job_id:
        return "No job picked.", ""
    job = lab.store.job(int(job_id))
    if job is None:
        return f"No job {job_id}.", ""
    return state.job_status(job), state.log_tail(lab.store, job["id"])


def build(lab: Lab) -> dict:
    gr.Markdown("Every long piece of work runs as a job in a process of its own, one at a time (one device); "
                "the rest of the lab stays usable meanwhile. A canceled or interrupted job resumes where it "
                "stopped.")
    view = gr.HTML(table(lab))
    with gr.Row():
        choices = state.job_choices(lab.store)
        picked = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Job", scale=3)
        cancel_btn = gr.Button("Cancel job", scale=0)
        resume_btn = gr.Button("Resume job", scale=0)
    status = gr.Markdown()
    log = gr.Textbox(label="Log (last lines)", lines=12, max_lines=12, autoscroll=True)
    picked.change(lambda j: detail(lab, j), picked, [status, log], api_visibility="private")
    cancel_btn.click(lambda j: (act(lab, "cancel", j), table(lab))[1], picked, view, api_name="cancel_any")
    resume_btn.click(lambda j: (act(lab, "resume", j), table(lab))[1], picked, view, api_name="resume_any")
    shown = gr.State([])

    def tick(j, before):
        choices = state.job_choices(lab.store)
        picker = gr.Dropdown(choices=choices) if choices != before else gr.skip()
        return table(lab), *detail(lab, j), picker, choices

    gr.Timer(2.0).tick(tick, [picked, shown], [view, status, log, picked, shown], api_visibility="private")
    return {"picked": picked, "table": view, "refresh": lambda current: refresh(lab, current)}


def refresh(lab: Lab, current) -> tuple:
    """The table and the picker as the tab opens: every job listed, the one picked kept (the newest if none)."""
    choices = state.job_choices(lab.store)
    return table(lab), gr.Dropdown(choices=choices, value=current or (choices[0][1] if choices else None))
