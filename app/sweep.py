"""Sweep tab: one model, a grid of steps x guidance (or steps x cache threshold), run as a job; the
images side by side and a chart of quality against time once it has succeeded."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from engine import jobs
from engine.accel.options import CACHES, FP8_MODES
from engine.decide import job as sweep_job
from engine.decide import timing
from engine.decide.config import SweepConfig
from engine.errors import UsageError

from .chart import scatter
from .state import Lab, enlarge, progress_bar

DEFAULT_PROMPT = "a red star on the left"


def _numbers(text: str, kind, field: str) -> tuple:
    try:
        values = tuple(kind(x) for x in str(text or "").replace(",", " ").split())
    except ValueError:
        raise UsageError(f"{field} must be numbers separated by commas, got {text!r}") from None
    return values


def _caption(r: dict) -> str:
    cache = f" · {r['cache']}" if r["cache"] != "none" else ""
    quality = f" · adherence {r['adherence']:.2f}" if "adherence" in r else ""
    return (f"{r['steps']} steps · s {r['guidance']:g}{cache}: {r['seconds']:.3g} s, "
            f"{timing.describe(r['speedup'], r.get('speedup_lo'), r.get('speedup_hi'), short=True)}, NFE {r['nfe']}, "
            f"skipped {r['skipped']}, PSNR {r['psnr_ref']:g} dB{quality}")


def sweep(lab: Lab, model, prompt, seed, steps, guidance, cache, thresholds, fp8, n, repeats) -> tuple[str, str]:
    """Queue a sweep job; returns its status line at once and its id (what the watcher follows)."""
    try:
        cfg = SweepConfig(prompt=prompt or "", seed=int(seed) if seed is not None else -1,
                          steps=_numbers(steps, int, "steps"), guidance=_numbers(guidance, float, "guidance"),
                          cache=cache or "none", thresholds=_numbers(thresholds, float, "thresholds"),
                          fp8=fp8 or "off", n=int(n or 0), timing=int(repeats))
        job_id = sweep_job.submit_sweep(lab.store, model or "", cfg, device=lab.device)
    except (UsageError, ValueError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    return f"**Job {job_id} queued — follow it in the Jobs tab.** " + progress_bar(lab.store.job(job_id)), \
        str(job_id)


def view(result: dict):
    """A finished sweep's (gallery items, chart data, table markdown)."""
    cells = result["cells"]
    gallery = [(enlarge(Image.open(c["image"]), 192), _caption(c)) for c in cells]
    quality = "adherence" if any("adherence" in c for c in cells) else "psnr_ref"
    title = "adherence" if quality == "adherence" else "PSNR to the reference (dB)"
    chart = scatter([(c["seconds"], c.get(quality), f"{c['steps']} steps, s {c['guidance']:g}"
                      + (f", {c['cache']}" if c["cache"] != "none" else "")) for c in cells],
                    "seconds per image", title)
    head = "| steps | guidance | cache | NFE | skipped | s/image | speed-up | PSNR to reference |" + \
        (" adherence |" if quality == "adherence" else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        adherence = f" {c['adherence']:.3f} |" if quality == "adherence" else ""
        up = timing.describe(c["speedup"], c.get("speedup_lo"), c.get("speedup_hi"), short=True)
        lines.append(f"| {c['steps']} | {c['guidance']:g} | {c['cache']} | {c['nfe']} | {c['skipped']} | "
                     f"{timing.seconds(c['seconds'], c.get('seconds_lo'), c.get('seconds_hi'))} | {up} | "
                     f"{c['psnr_ref']:g} |{adherence}")
    ref = result["reference"]
    lines.append(f"\nReference: {ref['steps']} steps, guidance {ref['guidance']:g}, no cache "
                 f"({timing.seconds(ref['seconds'], ref.get('seconds_lo'), ref.get('seconds_hi'))} s). Seconds: the "
                 f"median of {result['config']['timing']} timed images after a warm-up, the interval of the median in "
                 f"brackets; a speed-up marked ≈ 1× cannot be told apart from the reference's speed.")
    return gallery, chart, "\n".join(lines)


def watch(lab: Lab, job_id: str, shown: str):
    """Every two seconds: the followed sweep job's progress; its cells once it has succeeded.
    Returns (status, shown, gallery, chart, table)."""
    job = lab.store.job(int(job_id)) if job_id else None
    if job is None:
        return "", shown, gr.skip(), gr.skip(), gr.skip()
    jobs.reconcile(lab.store)
    line = f"Sweep job {job['id']} · {job['status']} · " + progress_bar(job) + \
        (f" · {job['error']}" if job.get("error") else "")
    if job["status"] != "succeeded" or shown == job_id:
        return line, shown, gr.skip(), gr.skip(), gr.skip()
    return (line, job_id, *view(sweep_job.sweep_result(lab.store, job["id"])))


def newest(lab: Lab) -> str:
    """The newest sweep job's id ('' if none)."""
    latest = lab.store.jobs(kind=sweep_job.SWEEP, limit=1)
    return str(latest[0]["id"]) if latest else ""


def cancel(lab: Lab, job_id: str) -> str:
    job = lab.store.job(int(job_id)) if job_id else None
    if job is None or job["status"] not in jobs.ACTIVE:
        raise gr.Error("cancel: no sweep of this page is queued or running", print_exception=False)
    jobs.cancel(lab.store, job["id"])
    return f"Sweep job {job['id']} · {lab.store.job(job['id'])['status']}"


def build(lab: Lab) -> dict:
    with gr.Row():
        model = gr.Dropdown(lab.model_names(), value="embedded", label="Model", scale=2)
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", scale=4, max_lines=2)
        seed = gr.Number(0, label="Seed", precision=0, scale=1)
    with gr.Row():
        steps = gr.Textbox("50, 20, 8", label="Steps (rows)", scale=2)
        guidance = gr.Textbox("1, 5", label="Guidance scales (columns)", scale=2)
        cache = gr.Dropdown(list(CACHES), value="none", label="Cache", scale=2)
        thresholds = gr.Textbox("", label="Cache thresholds (columns instead of guidance)", scale=2)
        fp8 = gr.Radio(list(FP8_MODES), value="off", label="FP8", scale=2)
        n = gr.Slider(0, 200, value=0, step=10, label="Quality prompts per cell (embedded: adherence)", scale=2)
        repeats = gr.Slider(1, 20, value=3, step=1, label="Timed images per cell (after a warm-up)", scale=2)
    with gr.Row():
        go = gr.Button("Run sweep", variant="primary", scale=4)
        stop = gr.Button("Cancel sweep", variant="stop", scale=1)
    job_line = gr.HTML()
    # the job this page follows (as it opens: the newest sweep, so a reload shows it again), and the
    # one whose cells are shown
    followed, shown = gr.State(lambda: newest(lab)), gr.State("")
    gallery = gr.Gallery(label="Cells", columns=4, height="auto", object_fit="contain")
    chart = gr.HTML(label="Quality against time")
    table = gr.Markdown()  # under the chart, the page's width: its columns keep their words whole
    go.click(lambda *a: sweep(lab, *a), [model, prompt, seed, steps, guidance, cache, thresholds, fp8, n, repeats],
             [job_line, followed], api_name="sweep")
    stop.click(lambda j: cancel(lab, j), followed, job_line, api_name="cancel_sweep")
    gr.Timer(2.0).tick(lambda j, s: watch(lab, j, s), [followed, shown], [job_line, shown, gallery, chart, table],
                       api_visibility="private")
    return {"model": model, "run": go}
