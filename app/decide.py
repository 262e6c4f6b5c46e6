"""Decide tab: the model's measured decision table (`python -m engine bench`, run as a job), a
speed-versus-quality chart, and the seed's decision guide asked as questions and answered from
those measured rows. The student of each row can be picked; left automatic, the row says which it
took and why."""

from __future__ import annotations

import html

import gradio as gr

from engine import jobs
from engine.decide import bench as decide_bench
from engine.decide import job as decide_job
from engine.decide.config import ROLES, BenchConfig
from engine.decide.guide import Answers, explain, recommend
from engine.errors import UsageError

from .chart import scatter
from .state import Lab, progress_bar

BUDGET_LABELS = {"none": "none: cannot train", "small": "small: hours of one GPU",
                 "large": "large: days, or several GPUs"}
HARDWARE_LABELS = {"cpu": "CPU", "gpu": "GPU before Ada (no FP8 compute)",
                   "gpu-fp8": "GPU with FP8 (Ada, Hopper, Blackwell)"}
ROLE_LABELS = {"guidance": "guidance-distilled", "step8": "step-distilled, 8 steps",
               "step4": "step-distilled, 4 steps", "both": "guidance + step-distilled, 4 steps",
               "consistency4": "consistency, 4 steps", "consistency2": "consistency, 2 steps",
               "dmd4": "DMD2, 4 steps", "dmd1": "DMD2, 1 step"}
AUTO = ""  # a picker's value for "the rule's choice"


def _chart(result: dict | None) -> str:
    rows = [] if result is None else [r for r in result["rows"] if "missing" not in r]
    judged = any(r.get("adherence") is not None for r in rows)
    quality = "adherence" if judged else "psnr_teacher"
    return scatter([(r["speedup"], r.get(quality), r["row"]) for r in rows], "speed-up over the teacher",
                   "adherence" if judged else "PSNR to the teacher (dB)")


def latest(lab: Lab, model: str) -> dict | None:
    """The model's latest finished bench run (a running bench stores its run when it ends)."""
    runs = lab.store.bench_runs(model, limit=1)
    return runs[0] if runs else None


def latest_job(lab: Lab, model: str) -> dict | None:
    jobs.reconcile(lab.store)
    return next((j for j in lab.store.jobs(kind=decide_job.BENCH, limit=50) if j["name"] == model), None)


def table(result: dict) -> str:
    """The decision table as HTML that keeps its headers whole (it scrolls sideways rather than squeeze),
    the rows not measured listed under it with why, then which student each row used."""
    cols = decide_bench.columns(result)
    nowrap = "style='white-space:nowrap'"
    head = "".join(f"<th {nowrap}>{html.escape(h)}</th>" for _, h in cols)
    body = []
    for r in (r for r in result["rows"] if "missing" not in r):
        cells = [f"<td style='min-width:12em'>{html.escape(r['row'])}</td>"]
        cells += [f"<td {nowrap}>{html.escape(decide_bench.cell(r, k))}</td>" for k, _ in cols[1:]]
        body.append("<tr>" + "".join(cells) + "</tr>")
    md = lambda text: html.escape(text).replace("`", "")  # noqa: E731
    missing = "".join(f"<li>{html.escape(r['row'])}: {md(r['missing'])}</li>" for r in result["rows"] if "missing" in r)
    return (f"<p>Run {result['id']} · {html.escape(result['created'])}. {md(decide_bench.intro(result))}</p>"
            f"<div style='overflow-x:auto'><table class='lab-jobs'><tr>{head}</tr>{''.join(body)}</table></div>"
            + (f"<p>Not measured:</p><ul>{missing}</ul>" if missing else "")
            + (f"<p>{md(decide_bench.students(result))}</p>" if decide_bench.students(result) else ""))


def show(lab: Lab, model):
    """The latest bench run of `model`: (table HTML, chart data)."""
    result = latest(lab, model)
    if result is None:
        return (f"<p>No bench run of <code>{html.escape(str(model))}</code> yet: press <b>Run bench</b> (or "
                f"<code>python -m engine bench --model {html.escape(str(model))}</code>).</p>", _chart(None))
    return table(result), _chart(result)


def picker_choices(lab: Lab, model) -> list[list[tuple[str, str]]]:
    """Each role's picker choices: automatic (naming the student the rule takes, and why), the
    lineage's students for that role (best first), then any other model."""
    found = decide_bench.candidates(lab.store, model) if model else {}
    names = lab.model_names()
    out = []
    for role in ROLES:
        mine = [c["name"] for c in found.get(role, [])]
        auto = f"automatic: {mine[0]} ({decide_bench.why_chosen(found[role], mine[0])})" if mine else \
            "automatic: none yet"
        out.append([(auto, AUTO), *[(n, n) for n in mine], *[(n, n) for n in names if n not in mine and n != model]])
    return out


def student_pickers(lab: Lab, model, *picks) -> list:
    """The pickers for `model`; a pick still offered is kept."""
    out = []
    for i, choices in enumerate(picker_choices(lab, model)):
        keep = picks[i] if i < len(picks) and picks[i] in {v for _, v in choices} else AUTO
        out.append(gr.Dropdown(choices=choices, value=keep))
    return out


def bench(lab: Lab, model, n, timing, *picks) -> tuple[str, str]:
    """Queue a bench job; returns its status line at once (and what the watcher has seen of it)."""
    try:
        students = {role: name for role, name in zip(ROLES, picks, strict=True) if name}
        cfg = BenchConfig(model=model or "", n=int(n), timing=int(timing), students=students)
        job_id = decide_job.submit_bench(lab.store, cfg, device=lab.device)
    except (UsageError, ValueError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    job = lab.store.job(job_id)
    return (f"**Job {job_id} queued — follow it in the Jobs tab.** " + progress_bar(job),
            f"{job_id}:{job['status']}")


def status(job: dict | None) -> str:
    if job is None:
        return ""
    line = f"Bench job {job['id']} · {job['status']} · " + progress_bar(job)
    if job.get("error"):
        line += f" · {job['error']}"
    return line


def watch(lab: Lab, model, seen: str):
    """Every two seconds: the model's latest bench job as a progress line; the table and chart again
    when a job seen running has ended. Returns (status, seen, table, chart)."""
    job = latest_job(lab, model) if model else None
    if job is None:
        return "", "", gr.skip(), gr.skip()
    now = f"{job['id']}:{job['status']}"
    if job["status"] in jobs.TERMINAL and now != seen and seen.startswith(f"{job['id']}:"):
        return (status(job), now, *show(lab, model))
    return status(job), now, gr.skip(), gr.skip()


def cancel(lab: Lab, model) -> str:
    job = latest_job(lab, model)
    if job is None or job["status"] not in jobs.ACTIVE:
        raise gr.Error(f"cancel: no bench of {model!r} is queued or running", print_exception=False)
    jobs.cancel(lab.store, job["id"])
    return status(lab.store.job(job["id"]))


def decide(lab: Lab, model, can_retrain, budget, hardware, latency, max_loss):
    result = latest(lab, model)
    if result is None:
        job = latest_job(lab, model)
        running = f" (bench job {job['id']} is {job['status']}: press Recommend when it has succeeded)" \
            if job is not None and job["status"] in jobs.ACTIVE else ": run bench first"
        raise gr.Error(f"no finished bench run of {model!r} yet{running}", print_exception=False)
    try:
        answers = Answers(can_retrain=can_retrain == "yes", budget=budget, hardware=hardware,
                          latency=float(latency) if latency not in (None, "", 0) else None,
                          max_loss=float(max_loss))
        text = explain(recommend(answers, result))
    except (UsageError, ValueError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    job = latest_job(lab, model)
    if job is not None and job["status"] in jobs.ACTIVE:
        text += f"\n\n*From run {result['id']} ({result['created']}); bench job {job['id']} is still {job['status']}.*"
    return text


def default_hardware(lab: Lab) -> str:
    """The hardware answer the app's own device gives: a CPU, or a GPU with or without FP8 compute."""
    import torch

    from engine import registry

    device = registry.pick_device(lab.device)
    if device.type != "cuda":
        return "cpu"
    return "gpu-fp8" if torch.cuda.get_device_capability(device) >= (8, 9) else "gpu"


def build(lab: Lab) -> dict:
    with gr.Row():
        model = gr.Dropdown(lab.model_names(), value="embedded", label="Model (the teacher)", scale=3)
        n = gr.Slider(10, 500, value=30, step=10, label="Quality prompts per row", scale=2)
        timing = gr.Slider(1, 20, value=3, step=1, label="Timed images per row (after a warm-up)", scale=2)
        with gr.Column(scale=1, min_width=140):
            go = gr.Button("Run bench")
            stop = gr.Button("Cancel bench", size="sm", variant="stop")
    with gr.Accordion("Students: which model each row measures", open=False) as students:
        first = picker_choices(lab, "embedded")
        pickers = []
        for half in (ROLES[:4], ROLES[4:]):
            with gr.Row():
                pickers += [gr.Dropdown(first[ROLES.index(role)], value=AUTO, label=ROLE_LABELS[role],
                                        min_width=200) for role in half]
        gr.Markdown("Automatic: the shipped student, else the most trained of the lineage's students for that "
                    "row (a short test job never replaces it); each row names the student it used.")
    job_line = gr.HTML()
    seen = gr.State("")  # the watched job as "id:status"
    table = gr.HTML()
    chart = gr.HTML(label="Speed against quality")
    gr.Markdown("### What do you need?")
    with gr.Row():
        retrain = gr.Radio(["yes", "no"], value="yes", label="Can you retrain (train a student)?")
        budget = gr.Radio([(v, k) for k, v in BUDGET_LABELS.items()], value="small", label="Training budget")
        hardware = gr.Radio([(v, k) for k, v in HARDWARE_LABELS.items()], value=default_hardware(lab),
                            label="Hardware")
    with gr.Row():
        latency = gr.Number(0, label="Latency target, seconds per image on the bench machine (0: none)",
                            minimum=0)
        max_loss = gr.Slider(0, 0.3, value=0.05, step=0.01, label="Adherence you can give up")
        ask = gr.Button("Recommend", variant="primary")
    answer = gr.Markdown()
    model.change(lambda m: (*show(lab, m), *student_pickers(lab, m)), model, [table, chart, *pickers],
                 api_visibility="private")
    students.expand(lambda m, *p: student_pickers(lab, m, *p), [model, *pickers], pickers, api_visibility="private")
    go.click(lambda *a: bench(lab, *a), [model, n, timing, *pickers], [job_line, seen], api_name="bench")
    stop.click(lambda m: cancel(lab, m), model, job_line, api_name="cancel_bench")
    ask.click(lambda *a: decide(lab, *a), [model, retrain, budget, hardware, latency, max_loss], answer,
              api_name="decide")
    gr.Timer(2.0).tick(lambda m, s: watch(lab, m, s), [model, seen], [job_line, seen, table, chart],
                       api_visibility="private")
    return {"model": model, "table": table, "chart": chart, "pickers": pickers,
            "load": lambda: show(lab, "embedded")}
