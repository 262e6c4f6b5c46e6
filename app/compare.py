"""Compare tab: one prompt and seed, two model settings side by side, with what each cost."""

from __future__ import annotations

import base64
import io
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from engine.accel.options import CACHES, FP8_MODES
from engine.errors import UsageError
from engine.generate import run_seeds, run_timed
from engine.measure import PSNR_CAP, difference_image, psnr_per_image, steady_threads
from engine.request import GUIDANCE_RANGE, Request

from .state import Lab, enlarge

DEFAULT_PROMPT = "a happy yellow face on a pink background"
SIDES = (("Left", "embedded", 50, 5.0), ("Right", "embedded", 8, 5.0))
SHIPPED_STUDENT = ("embedded-4step", 4)  # the first Compare shows teacher against the shipped student
REPEATS = 3  # timed runs per side by default: the median and min-max are shown
GAIN = 4  # the difference view's amplification
HISTORY = 20  # pairs listed for reopening


def sides(lab: Lab) -> tuple:
    """Left: the teacher at 50 steps with CFG; right: the shipped 4-step student when it is there."""
    student, steps = SHIPPED_STUDENT
    if student in lab.model_names():
        return SIDES[0], ("Right", student, steps, 5.0)
    return SIDES


def steps_text(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _timing(record: dict) -> str:
    """Seconds per image as measured: the median of the timed runs and their spread (min–max)."""
    n = record.get("repeats")
    if n is None:  # a generation recorded before repeats were timed
        return f"**{record['seconds']:.2f} s**"
    spread = (f" (median of {n}: {record['seconds_min']:.2f}–{record['seconds_max']:.2f} s)" if n > 1
              else " (1 timed run)")
    return f"**{record['seconds']:.2f} s**{spread}"


def _warmth(record: dict) -> str:
    """Whether the timed runs followed a warm-up, and on how many CPU threads they ran."""
    if record.get("warm_up") is None:
        return ""
    words = ("an untimed warm-up ran first (this setting's cold start in this app)" if record["warm_up"]
             else "warm: this setting ran before in this app")
    if "threads" in record:
        words += f" · {record['threads']} CPU thread{'s' * (record['threads'] != 1)}"
    return f"  \n<small>{words}</small>"


def _readout(record: dict) -> str:
    speed = []
    if record.get("cache", "none") != "none":
        speed.append(f"cache {record['cache']}")
    if record.get("fp8", "off") != "off":
        speed.append(f"FP8 {record['fp8']}")
    return (f"**{record['model']}** · {steps_text(record['steps'])} · guidance {record['guidance']:g}"
            + "".join(f" · {x}" for x in speed) + "  \n"
            f"NFE **{record['nfe']}** · skipped **{record['skipped']}** · {_timing(record)} · "
            f"peak memory {record['peak_mem_mb']:.0f} MB"
            + (f" · parameters {record['param_mem_mb']:.1f} MB" if "param_mem_mb" in record else "")
            + _warmth(record))


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


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).unsqueeze(0)  # (1, H, W, 3) uint8


def difference(a: Image.Image, b: Image.Image) -> tuple[Image.Image | None, str]:
    """The two sides' absolute difference, amplified GAIN times, and the PSNR between them; sides of
    different sizes cannot be compared pixel for pixel, and say so."""
    if a.size != b.size:
        return None, (f"The sides differ in size ({a.width}×{a.height} and {b.width}×{b.height}): no pixel "
                      "difference or PSNR between them.")
    ta, tb = _tensor(a), _tensor(b)
    psnr = psnr_per_image(ta, tb).item()
    diff = Image.fromarray(difference_image(ta, tb, GAIN)[0].numpy())
    level = int((ta.int() - tb.int()).abs().max())
    same = " (identical images)" if psnr >= PSNR_CAP else ""
    return enlarge(diff), (f"PSNR between the sides **{psnr:.1f} dB**{same} · largest difference {level}/255 · "
                           f"the difference image is amplified ×{GAIN} (black: the same)")


ZOOM_STYLE = ("flex:1; aspect-ratio:1; overflow:hidden; border:1px solid #8884; cursor:grab; touch-action:none;"
              " max-width:480px")
IMG_STYLE = ("width:100%; height:100%; object-fit:contain; image-rendering:pixelated; transform-origin:0 0;"
             " user-select:none; pointer-events:none")
# The zoom view's script (gr.HTML's js_on_load: `element` is the component, kept across updates): one
# scale and offset for both panes, so the wheel zooms and a drag pans them identically.
ZOOM_JS = """
let s = 1, x = 0, y = 0, drag = null;
const apply = () => {
  element.querySelectorAll('.lab-zoom-img').forEach(im => {
    im.style.transform = `translate(${x}px, ${y}px) scale(${s})`; });
};
element.addEventListener('wheel', e => {
  const pane = e.target.closest('.lab-zoom-pane'); if (!pane) return;
  e.preventDefault();
  const r = pane.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
  const ns = Math.min(32, Math.max(1, s * Math.exp(-e.deltaY * 0.002)));
  x = px - (px - x) * ns / s; y = py - (py - y) * ns / s; s = ns;
  if (s === 1) { x = 0; y = 0; }
  apply();
}, {passive: false});
element.addEventListener('pointerdown', e => {
  if (!e.target.closest('.lab-zoom-pane')) return;
  drag = {x: e.clientX - x, y: e.clientY - y}; e.preventDefault();
});
window.addEventListener('pointermove', e => { if (drag) { x = e.clientX - drag.x; y = e.clientY - drag.y; apply(); } });
window.addEventListener('pointerup', () => { drag = null; });
element.addEventListener('dblclick', () => { s = 1; x = 0; y = 0; apply(); });
if (typeof watch === 'function') watch('value', () => { s = 1; x = 0; y = 0; apply(); });
"""


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def zoom_html(a: Image.Image, b: Image.Image) -> str:
    """Both sides in one element, at full resolution and scaled up crisply by the browser, for ZOOM_JS."""
    panes = "".join(f'<div class="lab-zoom-pane" title="{side}" style="{ZOOM_STYLE}"><img class="lab-zoom-img" '
                    f'alt="{side}" src="{_data_uri(im)}" draggable="false" style="{IMG_STYLE}"></div>'
                    for side, im in (("Left", a), ("Right", b)))
    return f'<div class="lab-zoom" style="display:flex; gap:8px">{panes}</div>'


def warm_key(model, req: Request) -> tuple:
    return (model, req.steps, req.guidance, req.cache, req.fp8)


def generate_pair(lab: Lab, prompt, seed, model_a, steps_a, guidance_a, model_b, steps_b, guidance_b,
                  cache_a="none", threshold_a="", fp8_a="off", cache_b="none", threshold_b="", fp8_b="off",
                  repeats=REPEATS, warmed: set | None = None, progress=gr.Progress()):
    """Generate both sides, each timed over `repeats` runs after an untimed warm-up where this setting
    has not run yet (`warmed`: the settings that have, updated; None: warm up every time). Returns
    (image a, image b, slider pair, readout a, readout b, difference image, difference text, zoom html)."""
    raw, images, readouts, pair = [], [], [], {}
    values = ((model_a, steps_a, guidance_a, cache_a, threshold_a, fp8_a),
              (model_b, steps_b, guidance_b, cache_b, threshold_b, fp8_b))
    threads = torch.get_num_threads()
    for side, model, family, req, step in each_side(lab, prompt, seed, values, progress):
        key = warm_key(model, req)
        warm_up = warmed is None or key not in warmed
        with side_errors(side):
            image, record = run_timed(family, req, repeats=int(repeats), warm_up=warm_up, model_name=model,
                                      store=lab.store, settings={"compare": side, **pair}, callback=step,
                                      log=lambda m, side=side: progress(None, desc=f"{side}: {m}"))
        if warmed is not None:
            warmed.add(key)
        if "id" in record:
            pair = {"pair": record["id"]}  # the right side's row names the left side's
        if family.device.type == "cpu":
            record["threads"] = threads
        raw.append(image)
        images.append(enlarge(image))
        readouts.append(_readout(record))
    return (images[0], images[1], (images[0], images[1]), readouts[0], readouts[1], *difference(*raw),
            zoom_html(*raw))


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


def _side_record(row: dict) -> dict:
    """A stored generation row as the record a readout shows."""
    settings = row.get("settings") or {}
    return {**row, "cache": settings.get("cache", "none"), "fp8": settings.get("fp8", "off"),
            **{k: settings[k] for k in ("seconds_min", "seconds_max", "repeats") if k in settings}}


def pairs(lab: Lab, limit: int = HISTORY) -> list[tuple[dict, dict]]:
    """The newest Compare pairs in the store, (left row, right row), newest first."""
    rows = lab.store.generations(8 * limit)
    by_id = {r["id"]: r for r in rows}
    found = [(by_id[r["settings"]["pair"]], r) for r in rows
             if r["settings"].get("compare") == "Right" and r["settings"].get("pair") in by_id]
    return found[:limit]


def _setting(row: dict) -> str:
    return f"{row['model']} · {steps_text(row['steps'])} · g {row['guidance']:g} · {row['seconds']:.2f} s"


def history_table(lab: Lab) -> pd.DataFrame:
    """The recent pairs, one row each; the pair id reopens it."""
    return pd.DataFrame([{"pair": b["id"], "when": str(a["created"])[:19].replace("T", " "), "prompt": a["prompt"],
                          "seed": a["seed"], "Left": _setting(a), "Right": _setting(b)} for a, b in pairs(lab)],
                        columns=["pair", "when", "prompt", "seed", "Left", "Right"])


def _cache_widgets(cache: str) -> tuple[str, str]:
    method, _, threshold = (cache or "none").partition(":")
    return method, threshold


def picked_pair(df: pd.DataFrame, evt: gr.SelectData):
    """The pair id of the history row clicked."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return int(df.iloc[row]["pair"]) if row is not None and row < len(df) else None


def reopen_pair(lab: Lab, pair_id):
    """A recorded pair back in the view with the settings it was made with: the widgets (prompt, seed,
    each side's model, steps, guidance, then cache, threshold, FP8) and the views generate_pair fills."""
    found = next(((a, b) for a, b in pairs(lab, 10 * HISTORY) if pair_id is not None and b["id"] == int(pair_id)),
                 None)
    if found is None:
        raise gr.Error(f"no Compare pair {pair_id} among the recent ones; pick a row of the history",
                       print_exception=False)
    if lab.store.root is None:
        raise gr.Error("this store keeps no images", print_exception=False)
    raw = [Image.open(Path(lab.store.root) / "images" / r["image"]).convert("RGB") for r in found]
    big = [enlarge(im) for im in raw]
    a, b = found
    widgets = [a["prompt"], a["seed"], a["model"], a["steps"], a["guidance"], b["model"], b["steps"], b["guidance"]]
    for r in found:
        widgets += [*_cache_widgets(r["settings"].get("cache")), r["settings"].get("fp8", "off")]
    return (*widgets, big[0], big[1], (big[0], big[1]), _readout(_side_record(a)), _readout(_side_record(b)),
            *difference(*raw), zoom_html(*raw))


def build(lab: Lab) -> dict:
    """Lay out the tab inside the current Blocks context; returns the components tests use."""
    try:  # the app's process times steadily on one CPU thread (measure.steady_threads)
        from engine import registry

        steady_threads(registry.pick_device(lab.device))
    except UsageError:
        pass  # a device that is not there: loading a model will say so
    warmed: set = set()  # the settings that have run in this app: their next runs are warm
    with gr.Row():
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", scale=4, max_lines=3, elem_id="compare-prompt")
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
    with gr.Row(equal_height=True):
        go = gr.Button("Generate", variant="primary", scale=3)
        repeats = gr.Slider(1, 10, value=REPEATS, step=1, label="Timed repeats", scale=2,
                            info="seconds: their median and min–max; a setting's first run is an untimed warm-up")
    with gr.Row(equal_height=True):
        img_a = gr.Image(label="Left", type="pil", format="png", interactive=False, height=400)
        img_b = gr.Image(label="Right", type="pil", format="png", interactive=False, height=400)
    with gr.Row():
        out_a = gr.Markdown()
        out_b = gr.Markdown()
    with gr.Row(equal_height=True):
        slider = gr.ImageSlider(label="Slider view: Left | Right", type="pil", format="png", max_height=500,
                                elem_id="compare-slider")
        with gr.Column():
            diff = gr.Image(label=f"Difference |Left − Right|, amplified ×{GAIN}", type="pil", format="png",
                            interactive=False, height=400, elem_id="compare-diff")
            diff_text = gr.Markdown()
    gr.Markdown("**Zoom together**: the mouse wheel zooms both sides at once, a drag pans both, "
                "a double click resets.")
    zoom = gr.HTML("", js_on_load=ZOOM_JS, elem_id="compare-zoom")
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
    with gr.Accordion("History: the recent pairs (pick a row, then Reopen)", open=False):
        table = gr.Dataframe(lambda: history_table(lab), interactive=False, wrap=True,
                             elem_id="compare-history")  # read at each page load
        with gr.Row():
            picked = gr.Number(None, label="Pair", precision=0, scale=1, elem_id="compare-pair")
            go_reopen = gr.Button("Reopen", scale=1, elem_id="compare-reopen")
    views = [img_a, img_b, slider, out_a, out_b, diff, diff_text, zoom]
    go.click(lambda *a, progress=gr.Progress(): generate_pair(lab, *a, warmed=warmed, progress=progress),
             [prompt, seed, *pickers, *speed, repeats], views, api_name="compare"
             ).then(lambda: history_table(lab), None, table, api_visibility="private")
    go_seeds.click(lambda *a, progress=gr.Progress(): generate_seeds(lab, *a, progress=progress),
                   [prompt, seed, n_seeds, *pickers, *speed], [grid_a, grid_b, seeds_a, seeds_b],
                   api_name="compare_seeds")
    table.select(picked_pair, table, picked, api_visibility="private")
    go_reopen.click(lambda i: reopen_pair(lab, i), picked, [prompt, seed, *pickers, *speed, *views],
                    api_name="reopen_pair")
    return {"prompt": prompt, "seed": seed, "models": [pickers[0], pickers[3]], "generate": go,
            "images": [img_a, img_b], "caches": [speed[0], speed[3]], "fp8": [speed[2], speed[5]],
            "seeds": n_seeds, "grids": [grid_a, grid_b], "repeats": repeats, "slider": slider, "difference": diff,
            "zoom": zoom, "history": table}
