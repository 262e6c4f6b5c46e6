"""Decide tab: the model's measured decision table (`python -m engine bench`), a speed-versus-quality
chart, and the seed's decision guide asked as questions and answered from those measured rows."""

from __future__ import annotations

import gradio as gr

from engine.decide import bench as decide_bench
from engine.decide.config import BenchConfig
from engine.decide.guide import Answers, explain, recommend
from engine.errors import UsageError

from .chart import scatter
from .state import Lab

BUDGET_LABELS = {"none": "none: cannot train", "small": "small: hours of one GPU",
                 "large": "large: days, or several GPUs"}
HARDWARE_LABELS = {"cpu": "CPU", "gpu": "GPU before Ada (no FP8 compute)",
                   "gpu-fp8": "GPU with FP8 (Ada, Hopper, Blackwell)"}


def _chart(result: dict | None) -> str:
    rows = [] if result is None else [r for r in result["rows"] if "missing" not in r]
    judged = any(r.get("adherence") is not None for r in rows)
    quality = "adherence" if judged else "psnr_teacher"
    return scatter([(r["speedup"], r.get(quality), r["row"]) for r in rows], "speed-up over the teacher",
                   "adherence" if judged else "PSNR to the teacher (dB)")


def latest(lab: Lab, model: str) -> dict | None:
    runs = lab.store.bench_runs(model, limit=1)
    return runs[0] if runs else None


def show(lab: Lab, model):
    """The latest bench run of `model`: (table markdown, chart data)."""
    result = latest(lab, model)
    if result is None:
        return (f"No bench run of `{model}` yet: press **Run bench** (or `python -m engine bench --model {model}`).",
                _chart(None))
    return f"Run {result['id']} · {result['created']}\n\n" + decide_bench.markdown(result), _chart(result)


def bench(lab: Lab, model, n, timing, progress=gr.Progress()):
    try:
        cfg = BenchConfig(model=model, n=int(n), timing=int(timing))
        decide_bench.run(cfg, store=lab.store, device=lab.device, log=lambda m: progress(None, desc=m))
    except UsageError as e:
        raise gr.Error(str(e)) from None
    return show(lab, model)


def decide(lab: Lab, model, can_retrain, budget, hardware, latency, max_loss):
    result = latest(lab, model)
    if result is None:
        raise gr.Error(f"no bench run of {model!r} yet: run bench first")
    try:
        answers = Answers(can_retrain=can_retrain == "yes", budget=budget, hardware=hardware,
                          latency=float(latency) if latency not in (None, "", 0) else None,
                          max_loss=float(max_loss))
        return explain(recommend(answers, result))
    except UsageError as e:
        raise gr.Error(str(e)) from None


def build(lab: Lab) -> dict:
    with gr.Row():
        model = gr.Dropdown(lab.model_names(), value="embedded", label="Model (the teacher)", scale=3)
        n = gr.Slider(10, 500, value=30, step=10, label="Quality prompts per row", scale=2)
        timing = gr.Slider(1, 20, value=3, step=1, label="Timed images per row (median)", scale=2)
        go = gr.Button("Run bench", scale=1)
    with gr.Row():
        table = gr.Markdown()
    chart = gr.HTML(label="Speed against quality")
    gr.Markdown("### What do you need?")
    with gr.Row():
        retrain = gr.Radio(["yes", "no"], value="yes", label="Can you retrain (train a student)?")
        budget = gr.Radio([(v, k) for k, v in BUDGET_LABELS.items()], value="small", label="Training budget")
        hardware = gr.Radio([(v, k) for k, v in HARDWARE_LABELS.items()], value="gpu", label="Hardware")
    with gr.Row():
        latency = gr.Number(0, label="Latency target, seconds per image on the bench machine (0: none)",
                            minimum=0)
        max_loss = gr.Slider(0, 0.3, value=0.05, step=0.01, label="Adherence you can give up")
        ask = gr.Button("Recommend", variant="primary")
    answer = gr.Markdown()
    model.change(lambda m: show(lab, m), model, [table, chart], api_visibility="private")
    go.click(lambda *a, progress=gr.Progress(): bench(lab, *a, progress=progress), [model, n, timing],
             [table, chart], api_name="bench")
    ask.click(lambda *a: decide(lab, *a), [model, retrain, budget, hardware, latency, max_loss], answer,
              api_name="decide")
    return {"model": model, "table": table, "chart": chart, "load": lambda: show(lab, "embedded")}
