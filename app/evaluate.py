"""Evaluate tab: validate a model setting, or a model's whole lineage, on a golden set in a
background job; see every metric along the lineage per category (table and chart), and each
category's worst prompts next to the teacher's images."""

from __future__ import annotations

import html
import json
from dataclasses import replace

import gradio as gr
import pandas as pd
from PIL import Image

from engine import jobs
from engine.accel.options import CACHES, FP8_MODES
from engine.errors import UsageError
from engine.evaluate import golden, report, runs, vlm
from engine.evaluate import job as eval_job
from engine.evaluate.config import LABELS, METRICS, EvalConfig
from engine.evaluate.scoring import worst

from .chart import lines
from .state import Lab, enlarge, fitted, progress_bar

METRIC_CHOICES = {"adherence (embedded judge) ↑": "adherence", "FID ↓": "fid", "CLIP score ↑": "clip_score",
                  "PSNR to teacher ↑": "psnr", "feature distance to teacher ↓": "feature_distance"}


def golden_choices(lab: Lab) -> list[str]:
    return list(golden.available(lab.store))


def _golden_path(lab: Lab, name, upload) -> str:
    if upload:
        return str(golden.keep(lab.store, upload))
    sets = golden.available(lab.store)
    if name not in sets:
        raise UsageError(f"golden set: choose one of {', '.join(sets)} or upload a file, got {name!r}")
    return str(sets[name])


def _vlm(url, model, price_in, price_out) -> vlm.VLMConfig | None:
    if not (url or "").strip():
        return None
    cfg = vlm.VLMConfig(url=url.strip(), model=(model or "").strip(),
                        price_input=float(price_in) if price_in not in (None, "") else None,
                        price_output=float(price_out) if price_out not in (None, "") else None)
    cfg.check()
    return cfg


def configs(lab: Lab, model, golden_name, upload, limit, steps, guidance, cache, fp8, clip_model, inception,
            vlm_url, vlm_model, price_in, price_out, whole_lineage: bool) -> list[EvalConfig]:
    """The settings a job evaluates: the one chosen, or every model of its lineage at the steps and
    guidance it was made for (the root teacher at 50 steps, guidance 5)."""
    common = dict(golden=_golden_path(lab, golden_name, upload), limit=int(limit) if limit else None,
                  clip_model=(clip_model or "").strip() or None, inception=(inception or "").strip() or None,
                  vlm=_vlm(vlm_url, vlm_model, price_in, price_out), device=lab.device)
    if not model:
        raise UsageError("model: choose a model")
    base = EvalConfig(model=model, cache=cache or "none", fp8=fp8 or "off", **common)
    if whole_lineage:
        out = runs.lineage_configs(lab.store, base)
    else:
        if steps in (None, "") or guidance in (None, ""):
            raise UsageError("steps and guidance must be numbers")
        out = [replace(base, steps=int(steps), guidance=float(guidance))]
    for c in out:
        c.check()
    return out


def launch(lab: Lab, whole_lineage: bool, *form):
    """Queue the evaluation; the API key, if typed, reaches the job's process alone."""
    *form, key = form
    try:
        cfgs = configs(lab, *form, whole_lineage=whole_lineage)
        env = {cfgs[0].vlm.api_key_env: key} if key and cfgs[0].vlm is not None else None
        job_id = eval_job.submit(lab.store, cfgs, env=env)
    except (UsageError, ValueError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    what = "the lineage of" if whole_lineage else "a setting of"
    return f"Job {job_id} queued: {len(cfgs)} evaluation(s), {what} **{cfgs[-1].model}**.", job_table(lab)


def estimate(lab: Lab, golden_name, upload, limit, vlm_url, vlm_model, price_in, price_out, whole_lineage_n=1) -> str:
    """The VLM judge's calls and cost for one setting, before anything runs."""
    try:
        cfg = _vlm(vlm_url, vlm_model, price_in, price_out)
        if cfg is None:
            return "Give the endpoint URL and model to estimate the VLM judge's cost."
        gs = golden.load(_golden_path(lab, golden_name, upload)).limited(int(limit) if limit else None)
    except (UsageError, ValueError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    est = vlm.estimate_for(cfg, [p.text for p in gs.prompts])
    return vlm.describe_estimate(est) + " per evaluated setting (at most: cached answers are not sent again)."


def job_table(lab: Lab) -> str:
    jobs.reconcile(lab.store)
    rows = lab.store.jobs(kind=eval_job.KIND, limit=10)
    if not rows:
        return "<p>No evaluation jobs yet.</p>"
    body = []
    for j in rows:
        err = f" — {html.escape(j['error'])}" if j["error"] else ""
        body.append(f"<tr><td>{j['id']}</td><td>{j['status']}{err}</td><td>{html.escape(j['name'])}</td>"
                    f"<td>{progress_bar(j)}</td></tr>")
    return ("<table class='lab-jobs'><tr><th>job</th><th>status</th><th>model</th><th>progress</th></tr>"
            + "".join(body) + "</table>")


def cancel(lab: Lab) -> str:
    running = [j for j in lab.store.jobs(kind=eval_job.KIND, limit=50) if j["status"] in jobs.ACTIVE]
    if not running:
        raise gr.Error("cancel: no evaluation job is queued or running", print_exception=False)
    for j in running:
        jobs.cancel(lab.store, j["id"])
    return job_table(lab)


def lineage_view(lab: Lab, model, golden_name, metric_label):
    """(chart HTML, table, run choices) of the model's lineage on the golden set."""
    metric = METRIC_CHOICES.get(metric_label, "adherence")
    if not model:
        return "<p><em>choose a model</em></p>", pd.DataFrame(), gr.Dropdown(choices=[])
    rows = report.lineage_rows(lab.store, model, golden_name or None)
    done = [r for r in rows if r["run"] is not None]
    cats = sorted({c for r in done for c in r["by_category"]})
    series = {"all prompts": [r.get(metric) for r in done]}
    series.update({c: [r["by_category"].get(c, {}).get(metric) for r in done] for c in cats})
    title = f"{LABELS[metric]} along the lineage of {model}"
    chart = lines([r["label"] for r in done], series, LABELS[metric], title) if done else \
        f"<p><em>No evaluation of {html.escape(model)}'s lineage on this golden set yet: press "\
        f"<b>Evaluate the lineage</b>.</em></p>"
    if done:  # numbers that rest on few prompts say so (the smallest run's notes stand for all)
        smallest = min(done, key=lambda r: r["n"] or 0)
        chart += "".join(f"<p class='lab-warning'>⚠️ {html.escape(note)}</p>"
                         for note in report.small_sample_notes(smallest))
    table = pd.DataFrame([{"#": r["position"], "setting": r["label"], "n": r.get("n"), "NFE": r.get("nfe"),
                           **{LABELS[m]: r.get(m) for m in METRICS},
                           **{f"{c}": r["by_category"].get(c, {}).get(metric) if r["run"] else None for c in cats},
                           "adherence after training": r["training_adherence"]} for r in rows])
    table = table.dropna(axis=1, how="all").round(4)  # columns no row has (e.g. CLIP score without a CLIP model)
    choices = [(f"{r['label']} (run {r['run']})", str(r["run"])) for r in done]
    return chart, fitted(table), gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)


def _pair(lab: Lab, item: dict) -> Image.Image:
    ref = enlarge(Image.open(lab.store.root / item["ref_image"]).convert("RGB"), 160)
    img = enlarge(Image.open(lab.store.root / item["image"]).convert("RGB"), 160)
    out = Image.new("RGB", (ref.width + img.width + 8, max(ref.height, img.height)), "white")
    out.paste(ref, (0, 0))
    out.paste(img, (ref.width + 8, 0))
    return out


def worst_view(lab: Lab, run_id, per_category):
    """Gallery items: teacher's image | the model's image, each category's worst prompts."""
    if not run_id:
        return [], ""
    run = lab.store.eval_run(int(run_id))
    if run is None:
        return [], ""
    items = []
    for cat, items_of_cat in worst(lab.store, run["id"], int(per_category or 3)).items():
        for it in items_of_cat:
            missed = f" · missed {', '.join(it['missed'])}" if it["missed"] else ""
            clip = f" · CLIP {it['clip_score']:.1f}" if it["clip_score"] is not None else ""
            items.append((_pair(lab, it), f"{cat}: “{it['prompt']}” (seed {it['seed']}){missed}{clip} · "
                                          f"PSNR {it['psnr']:.1f} dB"))
    res = run["result"]
    note = (f"**{report.setting_label(run['settings'])}** against **{res['reference']['model']}** "
            f"({res['reference']['steps']} steps, guidance {res['reference']['guidance']:g}) — left: teacher, "
            f"right: this setting.")
    if res.get("unavailable"):
        note += "  \nUnavailable: " + "; ".join(f"{k}: {v}" for k, v in res["unavailable"].items())
    if res.get("vlm"):
        v = res["vlm"]
        note += f"  \nVLM judge ({v['model']}): quality {v['quality']}, adherence {v['adherence']}, " \
                f"artifacts {v['artifacts']} (1-10, {v['n']} answers, {v['failed']} unreadable)."
    return items, note


def build(lab: Lab) -> dict:
    gr.Markdown("Validate on a golden set after every change — each distillation round, FP8, caching — because "
                "small losses compound. Images of the same model, settings, prompt and seed are made once and "
                "reused. FID and the distances are against the teacher (the lineage's root) at 50 steps with "
                "guidance 5, same prompts and seeds.")
    with gr.Row():
        names = lab.model_names()
        # the shipped 4-step student has the longest lineage to look at (teacher, guidance, steps)
        first = "embedded-4step" if "embedded-4step" in names else "embedded"
        model = gr.Dropdown(names, value=first, label="Model to evaluate", scale=2,
                            allow_custom_value=True)
        golden_name = gr.Dropdown(golden_choices(lab), value="embedded", label="Golden set", scale=2)
        upload = gr.File(label="…or upload one (JSONL or one prompt a line)", type="filepath",
                         file_types=[".jsonl", ".txt"], height=90, scale=2)
        limit = gr.Number(60, label="Prompts (first N; blank: all)", precision=0, scale=1)
    with gr.Row():
        steps = gr.Number(50, label="Steps", precision=0)
        guidance = gr.Number(5.0, label="Guidance")
        cache = gr.Dropdown(list(CACHES), value="none", label="Cache")
        fp8 = gr.Dropdown(list(FP8_MODES), value="off", label="FP8")
    with gr.Accordion("Real models: CLIP and Inception; VLM judge", open=False):
        with gr.Row():
            clip_model = gr.Textbox(label="CLIP model (transformers directory or cached hub id)")
            inception = gr.Textbox(label="FID Inception weights (blank: the torch hub cache)")
        with gr.Row():
            vlm_url = gr.Textbox(label="VLM endpoint (OpenAI-compatible), e.g. http://127.0.0.1:8000/v1")
            vlm_model = gr.Textbox(label="VLM model")
            key = gr.Textbox(label="API key (blank: $LAB_VLM_API_KEY or $OPENAI_API_KEY)", type="password")
        with gr.Row():
            price_in = gr.Number(None, label="USD per million input tokens")
            price_out = gr.Number(None, label="USD per million output tokens")
            est_btn = gr.Button("Estimate VLM cost", scale=0)
        est = gr.Markdown()
    with gr.Row():
        one = gr.Button("Evaluate this setting", variant="primary")
        chain = gr.Button("Evaluate the lineage", variant="primary")
        cancel_btn = gr.Button("Cancel evaluation", scale=0)
    launched = gr.Markdown()
    table_jobs = gr.HTML(job_table(lab))
    gr.Markdown("### Along the lineage")
    with gr.Row():
        metric = gr.Dropdown(list(METRIC_CHOICES), value=list(METRIC_CHOICES)[0], label="Metric", scale=2)
        show = gr.Button("Show lineage", scale=1)
    chart = gr.HTML()
    table = gr.Dataframe(label="Every metric along the lineage (per-category columns: the chosen metric)",
                         interactive=False, wrap=True)
    gr.Markdown("### Worst prompts per category")
    with gr.Row():
        run_pick = gr.Dropdown([], label="Evaluation run", scale=3)
        per_cat = gr.Slider(1, 8, value=3, step=1, label="Per category", scale=1)
    note = gr.Markdown()
    gallery = gr.Gallery(label="teacher | setting", columns=3, height="auto", object_fit="contain")

    form = [model, golden_name, upload, limit, steps, guidance, cache, fp8, clip_model, inception, vlm_url, vlm_model,
            price_in, price_out, key]
    one.click(lambda *a: launch(lab, False, *a), form, [launched, table_jobs], api_name="evaluate")
    chain.click(lambda *a: launch(lab, True, *a), form, [launched, table_jobs], api_name="evaluate_lineage")
    cancel_btn.click(lambda: cancel(lab), None, table_jobs, api_name="evaluate_cancel")
    est_btn.click(lambda *a: estimate(lab, *a), [golden_name, upload, limit, vlm_url, vlm_model, price_in, price_out],
                  est, api_name="vlm_estimate")
    view = [model, golden_name, metric]
    for trigger in (show.click, metric.change, model.change, golden_name.change):
        trigger(lambda *a: lineage_view(lab, *a), view, [chart, table, run_pick],
                api_name="lineage" if trigger == show.click else None,
                api_visibility="public" if trigger == show.click else "private")
    for trigger in (run_pick.change, per_cat.change):
        trigger(lambda r, k: worst_view(lab, r, k), [run_pick, per_cat], [gallery, note],
                api_name="worst" if trigger == run_pick.change else None,
                api_visibility="public" if trigger == run_pick.change else "private")

    def tick(seen: str, m, g, metric_label):
        """The job list every two seconds; the lineage view again when a job has finished."""
        finished = json.dumps([j["id"] for j in lab.store.jobs(kind=eval_job.KIND, limit=50)
                               if j["status"] in jobs.TERMINAL])
        if finished == seen:
            return job_table(lab), seen, gr.skip(), gr.skip(), gr.skip()
        return (job_table(lab), finished, *lineage_view(lab, m, g, metric_label))

    seen = gr.State("")
    timer = gr.Timer(2.0)
    timer.tick(tick, [seen, *view], [table_jobs, seen, chart, table, run_pick], api_visibility="private")
    return {"model": model, "golden": golden_name, "chart": chart, "run": run_pick}
