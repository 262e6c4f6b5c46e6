"""Compare tab: one prompt and seed, two model settings side by side, with what each cost."""

from __future__ import annotations

from contextlib import contextmanager

import gradio as gr

from engine.accel.options import CACHES, FP8_MODES
from engine.errors import UsageError
from engine.generate import run, run_seeds
from engine.request import GUIDANCE_RANGE, Request

from .state import Lab, enlarge

DEFAULT_PROMPT = "a happy yellow face on a pink background"
SIDES = (("Left", "embedded", 50, 5.0), ("Right", "embedded", 8, 5.0))
SHIPPED_STUDENT = ("embedded-4step", 4)  # the first Compare shows teacher against the shipped student


def sides(lab: Lab) -> tuple:
    """Left: the teacher at 50 steps with CFG; right: the shipped 4-step student when it is there."""
    student, steps = SHIPPED_STUDENT
    if student in lab.model_names():
        return SIDES[0], ("Right", student, steps, 5.0)
    return SIDES


def steps_text(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _readout(record: dict) -> str:
    speed = []
    if record.get("cache", "none") != "none":
        speed.append(f"cache {record['cache']}")
    if record.get("fp8", "off") != "off":
        speed.append(f"FP8 {record['fp8']}")
    return (f"**{record['model']}** · {steps_text(record['steps'])} · guidance {record['guidance']:g}"
            + "".join(f" · {x}" for x in speed) + "  \n"
            f"NFE **{record['nfe']}** · skipped **{record['skipped']}** · **{record['seconds']:.2f} s** · "
            f"peak memory {record['peak_mem_mb']:.0f} MB"
            + (f" · parameters {record['param_mem_mb']:.1f} MB" if "param_mem_mb" in record else ""))


def cache_spec(method, threshold) -> str:
    """The Request's cache string from the two widgets (a blank threshold: calibrated or default)."""
    method = method or "none"
    threshold = "" if threshold is None else str(threshold).strip()
    return method if method == "none" or not threshold else f"{method}:{threshold}"


@contextmanager
def side_errors(side: str):
    """Bad input on one side, as a message naming the side (no traceback in the console)."""
    try:
        yield
    except UsageError as e:
        raise gr.Error(f"{side} side: {e}", print_exception=False) from None


def each_side(lab: Lab, prompt, seed, values: tuple, progress):
    """For each side's widget values (model, steps, guidance, cache, threshold, fp8): its name, model
    name, loaded model, checked request and a step callback for the page's progress bar; bad input
    is refused naming the side."""
    for i, (model, steps, guidance, cache, threshold, fp8) in enumerate(values):
        side = SIDES[i][0]
        with side_errors(side):
            req = Request(prompt=prompt or "", steps=int(steps), guidance=float(guidance),
                          seed=int(seed) if seed is not None else -1, cache=cache_spec(cache, threshold),
                          fp8=fp8 or "off")
            req.check()
            family = lab.load(model)
        yield side, model, family, req, lambda k, n, i=i, side=side: progress((i + k / n) / 2,
                                                                              desc=f"{side}: step {k}/{n}")


def generate_pair(lab: Lab, prompt, seed, model_a, steps_a, guidance_a, model_b, steps_b, guidance_b,
                  cache_a="none", threshold_a="", fp8_a="off", cache_b="none", threshold_b="", fp8_b="off",
                  progress=gr.Progress()):
    """Generate both sides; returns (image a, image b, slider pair, readout a, readout b)."""
    images, readouts = [], []
    values = ((model_a, steps_a, guidance_a, cache_a, threshold_a, fp8_a),
              (model_b, steps_b, guidance_b, cache_b, threshold_b, fp8_b))
    for side, model, family, req, step in each_side(lab, prompt, seed, values, progress):
        with side_errors(side):
            image, record = run(family, req, model_name=model, store=lab.store, callback=step,
                                log=lambda m, side=side: progress(None, desc=f"{side}: {m}"))
        images.append(enlarge(image))
        readouts.append(_readout(record))
    return images[0], images[1], (images[0], images[1]), readouts[0], readouts[1]


def generate_seeds(lab: Lab, prompt, seed, k, model_a, steps_a, guidance_a, model_b, steps_b, guidance_b,
                   cache_a="none", threshold_a="", fp8_a="off", cache_b="none", threshold_b="", fp8_b="off",
                   progress=gr.Progress()):
    """Both sides at K seeds each (seed, seed + 1, ...): two galleries and their readouts."""
    grids, readouts = [], []
    values = ((model_a, steps_a, guidance_a, cache_a, threshold_a, fp8_a),
              (model_b, steps_b, guidance_b, cache_b, threshold_b, fp8_b))
    for side, model, family, req, step in each_side(lab, prompt, seed, values, progress):
        with side_errors(side):
            images, record = run_seeds(family, req, int(k), model_name=model, store=lab.store, callback=step)
        grids.append([(enlarge(im, 256), f"seed {s}") for im, s in zip(images, record["seeds"])])
        readouts.append(f"**{record['model']}** · {steps_text(record['steps'])} · guidance {record['guidance']:g} · "
                        f"seeds {record['seeds'][0]}–{record['seeds'][-1]}  \n"
                        f"NFE **{record['nfe']}** per image · **{record['seconds']:.2f} s** for {len(images)} images")
    return grids[0], grids[1], readouts[0], readouts[1]


def model_setting(lab: Lab, model):
    """The steps and guidance a picked student was made for (its lab.json), as slider updates; a model
    without a recommendation leaves the sliders as they are."""
    from engine import registry

    try:
        rec = registry.lab_json(registry.resolve(model, lab.store)).get("recommended") or {}
    except UsageError:
        rec = {}
    return (gr.update(value=rec["steps"]) if rec.get("steps") else gr.update(),
            gr.update(value=rec["guidance"]) if rec.get("guidance") is not None else gr.update())


def build(lab: Lab) -> dict:
    """Lay out the tab inside the current Blocks context; returns the components tests use."""
    with gr.Row():
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", scale=4, max_lines=3)
        seed = gr.Number(0, label="Seed", precision=0, scale=1)
    pickers, speed = [], []
    with gr.Row():
        for side, default_model, steps, guidance in sides(lab):
            with gr.Column():
                gr.Markdown(f"### {side}")
                # Custom values allowed: students registered after the page loaded are valid
                # names too (the engine refuses unknown ones with a clear message).
                model = gr.Dropdown(lab.model_names(), value=default_model, label="Model", allow_custom_value=True)
                st = gr.Slider(1, 100, value=steps, step=1, label="Steps")
                gd = gr.Slider(*GUIDANCE_RANGE, value=guidance, step=0.5,
                               label="Guidance scale (1 = no CFG: one pass a step)")
                pickers += [model, st, gd]
                # a student opens at the steps and guidance it was made for (a DMD student: 1 step)
                model.input(lambda m: model_setting(lab, m), model, [st, gd])
                with gr.Row():
                    cache = gr.Dropdown(list(CACHES), value="none", label="Cache", scale=2,
                                        info="skip denoiser passes whose input barely changed")
                    threshold = gr.Textbox("", label="Threshold (blank: calibrated)", scale=1, max_lines=1)
                    fp8 = gr.Radio(list(FP8_MODES), value="off", label="FP8", scale=2)
                speed += [cache, threshold, fp8]
    go = gr.Button("Generate", variant="primary")
    with gr.Row(equal_height=True):
        img_a = gr.Image(label="Left", type="pil", format="png", interactive=False, height=400)
        img_b = gr.Image(label="Right", type="pil", format="png", interactive=False, height=400)
    with gr.Row():
        out_a = gr.Markdown()
        out_b = gr.Markdown()
    with gr.Accordion("Slider view", open=False):
        slider = gr.ImageSlider(label="Left | Right", type="pil", format="png", max_height=500)
    with gr.Accordion("Seeds view: the prompt at several seeds on each side (a student that draws the same "
                      "image for every seed shows it at a glance)", open=True):
        with gr.Row():
            n_seeds = gr.Slider(4, 8, value=8, step=1, label="Seeds (from the seed above)", scale=3)
            go_seeds = gr.Button("Show seeds", scale=1)
        with gr.Row(equal_height=True):
            grid_a = gr.Gallery(label="Left: seeds", columns=4, height=360, object_fit="contain", preview=False)
            grid_b = gr.Gallery(label="Right: seeds", columns=4, height=360, object_fit="contain", preview=False)
        with gr.Row():
            seeds_a = gr.Markdown()
            seeds_b = gr.Markdown()
    go.click(lambda *a, progress=gr.Progress(): generate_pair(lab, *a, progress=progress),
             [prompt, seed, *pickers, *speed], [img_a, img_b, slider, out_a, out_b], api_name="compare")
    go_seeds.click(lambda *a, progress=gr.Progress(): generate_seeds(lab, *a, progress=progress),
                   [prompt, seed, n_seeds, *pickers, *speed], [grid_a, grid_b, seeds_a, seeds_b],
                   api_name="compare_seeds")
    return {"prompt": prompt, "seed": seed, "models": [pickers[0], pickers[3]], "generate": go,
            "images": [img_a, img_b], "caches": [speed[0], speed[3]], "fp8": [speed[2], speed[5]],
            "seeds": n_seeds, "grids": [grid_a, grid_b]}
