"""Sweep tab: one model, a grid of steps x guidance (or steps x cache threshold), the images side by
side and a chart of quality against time."""

from __future__ import annotations

import gradio as gr

from engine.accel.options import CACHES, FP8_MODES
from engine.decide.config import SweepConfig
from engine.decide.sweep import run_sweep
from engine.errors import UsageError

from .chart import scatter
from .state import Lab, enlarge

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
    return (f"{r['steps']} steps · s {r['guidance']:g}{cache}: {r['seconds']:.2f} s, NFE {r['nfe']}, "
            f"skipped {r['skipped']}, PSNR {r['psnr_ref']:g} dB{quality}")


def sweep(lab: Lab, model, prompt, seed, steps, guidance, cache, thresholds, fp8, n, progress=gr.Progress()):
    """Returns (gallery items, chart data, table markdown)."""
    try:
        cfg = SweepConfig(prompt=prompt or "", seed=int(seed) if seed is not None else -1,
                          steps=_numbers(steps, int, "steps"), guidance=_numbers(guidance, float, "guidance"),
                          cache=cache or "none", thresholds=_numbers(thresholds, float, "thresholds"),
                          fp8=fp8 or "off", n=int(n or 0))
        cfg.check()
        result = run_sweep(lab.load(model), cfg, model_name=model, store=lab.store,
                           progress=lambda i, k, cell: progress(i / k, desc=f"cell {i + 1}/{k}"))
    except UsageError as e:
        raise gr.Error(str(e)) from None
    cells = result["cells"]
    gallery = [(enlarge(c["image"], 192), _caption(c)) for c in cells]
    quality = "adherence" if any("adherence" in c for c in cells) else "psnr_ref"
    title = "adherence" if quality == "adherence" else "PSNR to the reference (dB)"
    chart = scatter([(c["seconds"], c.get(quality), f"{c['steps']} steps, s {c['guidance']:g}"
                      + (f", {c['cache']}" if c["cache"] != "none" else "")) for c in cells],
                    "seconds per image", title)
    head = "| steps | guidance | cache | NFE | skipped | s/image | PSNR to reference |" + \
        (" adherence |" if quality == "adherence" else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        adherence = f" {c['adherence']:.3f} |" if quality == "adherence" else ""
        lines.append(f"| {c['steps']} | {c['guidance']:g} | {c['cache']} | {c['nfe']} | {c['skipped']} | "
                     f"{c['seconds']:.3f} | {c['psnr_ref']:g} |{adherence}")
    ref = result["reference"]
    lines.append(f"\nReference: {ref['steps']} steps, guidance {ref['guidance']:g}, no cache "
                 f"({ref['seconds']:.2f} s).")
    return gallery, chart, "\n".join(lines)


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
    go = gr.Button("Run sweep", variant="primary")
    gallery = gr.Gallery(label="Cells", columns=4, height="auto", object_fit="contain")
    with gr.Row():
        chart = gr.HTML(label="Quality against time")
        table = gr.Markdown()
    go.click(lambda *a, progress=gr.Progress(): sweep(lab, *a, progress=progress),
             [model, prompt, seed, steps, guidance, cache, thresholds, fp8, n], [gallery, chart, table],
             api_name="sweep")
    return {"model": model, "run": go}
