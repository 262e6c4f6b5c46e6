"""Distill tab: launch guidance, step, consistency and DMD distillation jobs, watch them, cancel and
resume them."""

from __future__ import annotations

import html
from dataclasses import fields

import gradio as gr
import pandas as pd

from engine import jobs, registry
from engine.arena.ratings import wilson
from engine.distill import job as distill_job
from engine.distill.recipes import MIXED_PRECISION, Recipe, from_inputs, order_warning
from engine.errors import UsageError

from . import state
from .chart import curves
from .state import Lab, progress_bar

TECHNIQUES = {"Guidance distillation (one pass instead of two)": "guidance",
              "Step distillation (halve the steps each round)": "progressive",
              "Both: guidance first, then steps": "guidance+progressive",
              "Consistency (LCM: 1-8 steps, any guidance)": "consistency",
              "DMD2 (distribution matching: 1-4 steps)": "dmd"}
STEP_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# The techniques that read each technique-specific field of the form (the others hide it).
FIELDS_OF = {"guidance_min": ("guidance", "guidance+progressive", "consistency"),
             "guidance_max": ("guidance", "guidance+progressive", "consistency"),
             "from_steps": ("progressive", "guidance+progressive"), "to_steps": ("progressive", "guidance+progressive"),
             "student_steps": ("consistency", "dmd"), "real_guidance": ("dmd",), "fake_updates": ("dmd",),
             "target_ema": ("consistency",)}
DEFAULTS = {f.name: f.default for f in fields(Recipe)}  # the form starts at the recipe's defaults
STATUS_COLOURS = {"queued": "#888", "running": "#2b6cb0", "succeeded": "#2f855a", "failed": "#c53030",
                  "canceled": "#975a16", "interrupted": "#c05621"}


def build_recipe(form: dict) -> Recipe:
    """The recipe of the form's values (keyed by recipe field; a blank field takes its default)."""
    return from_inputs({**form, "technique": TECHNIQUES.get(form.get("technique"), form.get("technique"))})


def kept_prompts(lab: Lab, uploaded) -> str | None:
    """An uploaded prompt file, copied into the data directory (the job reads it in its own process,
    later; the upload's temporary copy may be gone by then)."""
    if not uploaded:
        return None
    import shutil

    from engine.distill.recipes import read_prompts

    read_prompts(str(uploaded))  # refused here, by name, if it holds no prompts
    path = lab.store.new_file(".txt", folder="prompts")
    shutil.copyfile(uploaded, path)
    return str(path)


def launch(lab: Lab, form: dict):
    try:
        form = {**form, "prompts": kept_prompts(lab, form.get("prompts"))}
        recipe = build_recipe(form)
        job_id, warnings = distill_job.submit(lab.store, recipe)
    except UsageError as e:
        raise gr.Error(str(e), print_exception=False) from None
    text = f"Job {job_id} queued: {recipe.technique} of **{recipe.teacher}** → **{recipe.name}**."
    if warnings:
        text += "\n\n⚠️ " + " ".join(warnings)
    return text, job_table(lab), gr.Dropdown(choices=job_choices(lab), value=str(job_id))


def warning_for(lab: Lab, technique, teacher) -> str:
    try:
        w = order_warning(TECHNIQUES.get(technique, technique),
                          registry.takes_guidance(registry.resolve(teacher, lab.store)))
    except UsageError:
        return ""
    return f"⚠️ {w}" if w else ""


def plan_text(lab: Lab, form: dict) -> str:
    """The recipe's memory plan against the device the job would run on (engine/distill/memory.py),
    or why there is none yet."""
    from engine.distill import memory

    try:
        recipe = build_recipe({**form, "name": form.get("name") or "preview"})
        plan = distill_job.memory_plan(lab.store, recipe)
    except UsageError as e:
        return f"**Memory plan**: none yet ({e})"
    except Exception as e:  # a teacher the planner cannot trace (launching it is not refused: distill/job.py)
        return f"**Memory plan**: none for this teacher ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    size = memory.human
    rows = " · ".join(f"{k} {size(v)}" for k, v in plan.parts.items())
    device = f"{size(plan.device_bytes)} of {plan.device}" if plan.device_bytes else plan.device
    head = (f"**Memory plan: {size(plan.total)}** of the {device} "
            f"(batch {plan.batch_size}, {plan.size}×{plan.size}, {plan.trainable:,} trained parameters)")
    verdict = "fits" if plan.fits else "**does not fit**: it would be refused at Launch"
    other = (f"gradient checkpointing would make activations {size(plan.activations_checkpointed)}"
             if not recipe.gradient_checkpointing else "")
    return f"{head} — {verdict}.  \n{rows}." + (f"  \n{other}." if other else "")


def job_table(lab: Lab) -> str:
    jobs.reconcile(lab.store)
    rows = lab.store.jobs(kind=distill_job.KIND, limit=50)
    if not rows:
        return "<p>No jobs yet: fill in the recipe above and press <b>Launch</b>.</p>"
    return jobs_html(rows, "technique: teacher → student")


def jobs_html(rows: list[dict], what: str, kinds: bool = False) -> str:
    """Jobs as an HTML table: id, (kind,) status, what it does, progress with pace and time left,
    time taken, the models it made or scored."""
    head = (f"<tr><th>job</th>{'<th>kind</th>' if kinds else ''}<th>status</th><th>{what}</th><th>progress</th>"
            "<th>time</th><th>models</th></tr>")
    body = []
    for j in rows:
        colour = STATUS_COLOURS.get(j["status"], "#000")
        status = "canceling" if j["status"] == "running" and j.get("phase") == "canceling" else j["status"]
        models = ", ".join(j["models"] or [])
        spent = jobs.elapsed(j)
        kind = f"<td>{html.escape(j['kind'])}</td>" if kinds else ""
        body.append(f"<tr><td>{j['id']}</td>{kind}"
                    f"<td style='color:{colour};font-weight:600'>{status}</td>"
                    f"<td>{html.escape(j['label']).replace(' -&gt; ', ' → ')}</td>"
                    f"<td>{progress_bar(j)}</td><td>{jobs.clock(spent) if spent is not None else '—'}</td>"
                    f"<td>{html.escape(models)}</td></tr>")
    return f"<table class='lab-jobs'>{head}{''.join(body)}</table>"


def picker(lab: Lab) -> gr.Dropdown:
    """The Job list as the page opens: every job, the newest picked, so a reload finds them all."""
    choices = job_choices(lab)
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def job_choices(lab: Lab) -> list[tuple[str, str]]:
    return state.job_choices(lab.store, distill_job.KIND)


def interval(adherence: float | None, n: int | None) -> str:
    """Wilson's 95% interval of an adherence measured on n prompts: rounds scored on a hundred or so
    prompts differ by a few points by chance alone."""
    if adherence is None or not n:
        return "—"
    lo, hi = wilson(adherence * n, n)
    return f"{lo:.3f}–{hi:.3f}"


def loss_series(metrics: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """The job's loss points as curves over one step axis (step counts restart each round): one
    curve per round, or for a DMD job the generator's and the fake score's."""
    offset, last_round, prev = 0, None, 0
    series: dict[str, list[tuple[float, float]]] = {}
    for m in metrics:
        if m["round"] != last_round:
            offset += prev
            last_round = m["round"]
        prev = m["step"]
        x = offset + m["step"]
        if m.get("fake_loss") is None:
            series.setdefault(f"round {m['round'] + 1}", []).append((x, m["loss"]))
        else:
            series.setdefault("generator", []).append((x, m["loss"]))
            series.setdefault("fake score", []).append((x, m["fake_loss"]))
    return series


SAMPLES_SHOWN = 4  # the newest few: the filmstrip shows them at their own size


def samples(lab: Lab, job_id: int) -> list[tuple[str, str]]:
    """The student's images at fixed seeds as training went, newest first: (file, 'round 1 · step 200')."""
    folder = jobs.job_dir(lab.store, job_id) / "samples"
    files = sorted(folder.glob("round*-step*.png"), key=lambda f: (int(f.stem.split("-")[0][5:]),
                                                                 int(f.stem.split("step")[1])))
    return [(str(f), f"{f.stem.split('-')[0].replace('round', 'round ')} · step {int(f.stem.split('step')[1])}")
            for f in reversed(files[-SAMPLES_SHOWN:])]


def shown_detail(lab: Lab, job_id, log_y: bool = False, smooth: float = 0.6):
    """`job_detail` as the page shows it: the samples as one filmstrip."""
    *rest, images = job_detail(lab, job_id, log_y, smooth)
    return *rest, filmstrip(images)


def filmstrip(items: list[tuple[str, str]], side: int = 96):
    """The samples as one picture, newest on top, each row labelled with its round and step and its
    images enlarged to `side` pixels (pixels kept square): the student learning, read downwards."""
    from PIL import Image, ImageDraw

    if not items:
        return None
    rows = []
    for path, caption in items:
        row = Image.open(path).convert("RGB")
        factor = max(1, side // row.height)
        rows.append((row.resize((row.width * factor, row.height * factor), Image.Resampling.NEAREST), caption))
    label, gap = 72, 6
    width = label + max(r.width for r, _ in rows)
    out = Image.new("RGB", (width, sum(r.height + gap for r, _ in rows) - gap), "white")
    draw, y = ImageDraw.Draw(out), 0
    for row, caption in rows:
        out.paste(row, (label, y))
        draw.text((6, y + row.height // 2 - 12), caption.replace(" · ", "\n"), fill="#333")
        y += row.height + gap
    return out


def job_detail(lab: Lab, job_id, log_y: bool = False, smooth: float = 0.6):
    """Loss chart, per-round quality, log tail, status line and the student's samples of one job."""
    nothing = ("<p class='lab-empty'><em>Pick a job to see its loss.</em></p>", pd.DataFrame(), "",
               "No job picked: launch one above, or pick one from the Job list.", [])
    if not job_id:
        return nothing
    job = lab.store.job(int(job_id))
    if job is None:
        return nothing
    chart = curves(loss_series(lab.store.job_metrics(job["id"])), "step", "training loss", log_y=bool(log_y),
                   smooth=float(smooth or 0), title=f"training loss of job {job['id']}")
    evals = pd.DataFrame([{"round": e["round"] + 1, "model": e["model"], "steps": e["steps"],
                           "guidance": e["guidance"], "adherence": round(e["adherence"], 3), "n": e["n"],
                           "95% interval": interval(e["adherence"], e["n"]),
                           **{k: round(v, 2) for k, v in e["by_category"].items()}}
                          for e in lab.store.job_evals(job["id"])])
    return chart, evals, state.log_tail(lab.store, job["id"]), state.job_status(job), samples(lab, job["id"])


def act(lab: Lab, verb: str, job_id):
    """Cancel or resume the picked job; returns the refreshed job table."""
    if not job_id:
        raise gr.Error(f"{verb}: pick a job first (the Job list below the table)", print_exception=False)
    try:
        {"cancel": jobs.cancel, "resume": jobs.resume}[verb](lab.store, int(job_id))
    except (UsageError, TypeError, ValueError) as e:
        raise gr.Error(f"{verb}: {e}", print_exception=False) from None
    return job_table(lab)


def first(field: str) -> bool:
    """Whether the form's first technique reads `field` (the form opens on it)."""
    return next(iter(TECHNIQUES.values())) in FIELDS_OF[field]


def build(lab: Lab) -> dict:
    gr.Markdown("Train a faster student from a teacher. Each job runs in its own process; its students "
                "appear in every model picker when it finishes. Guidance distillation must come first: "
                "step distillation of a two-pass CFG teacher weakens guidance.")
    names = lab.model_names()
    with gr.Row():
        with gr.Column(scale=3):
            technique = gr.Radio(list(TECHNIQUES), value=list(TECHNIQUES)[0], label="Technique")
            with gr.Row():
                teacher = gr.Dropdown(names, value="embedded", label="Teacher", allow_custom_value=True)
                name = gr.Textbox(label="Student name", placeholder="e.g. my-guidance")
            with gr.Row():
                train_steps = gr.Number(DEFAULTS["train_steps"], label="Training steps per round", precision=0)
                lr = gr.Number(DEFAULTS["lr"], label="Learning rate")
                batch = gr.Number(DEFAULTS["batch_size"], label="Batch size", precision=0)
            with gr.Row():
                g_min = gr.Number(DEFAULTS["guidance_min"], label="Guidance range: min", visible=first("guidance_min"))
                g_max = gr.Number(DEFAULTS["guidance_max"], label="Guidance range: max", visible=first("guidance_max"))
                from_steps = gr.Dropdown(STEP_CHOICES, value=DEFAULTS["from_steps"], label="Step rounds: from",
                                         visible=first("from_steps"))
                to_steps = gr.Dropdown(STEP_CHOICES, value=DEFAULTS["to_steps"], label="... to",
                                       visible=first("to_steps"))
            with gr.Row():
                student_steps = gr.Dropdown([1, 2, 4, 8], value=DEFAULTS["student_steps"],
                                            label="Student steps (consistency, DMD)", visible=first("student_steps"))
                real_guidance = gr.Number(DEFAULTS["real_guidance"], label="DMD: guidance of the teacher's score",
                                          visible=first("real_guidance"))
                fake_updates = gr.Number(DEFAULTS["fake_updates"], precision=0, visible=first("fake_updates"),
                                         label="DMD: fake-score updates per generator step")
            with gr.Row():
                eval_n = gr.Number(DEFAULTS["eval_n"], precision=0,
                                   label="Adherence prompts scored after every round (embedded domain; 0: none)")
                prompts = gr.File(label="Training prompts, one a line (a real teacher needs them; empty: the "
                                  "embedded world's)", file_types=[".txt"], type="filepath", height=90)
            with gr.Row():
                lora = gr.Checkbox(False, label="LoRA student")
                rank = gr.Slider(1, 64, value=8, step=1, label="LoRA rank")
                lora_save = gr.Radio(["merged", "adapter"], value="merged", label="Save LoRA as")
            with gr.Accordion("More settings", open=False):
                with gr.Row():
                    init = gr.Dropdown([""] + names, value="", allow_custom_value=True,
                                       label="Start the student from (train a student longer; empty: the teacher)")
                    on_policy = gr.Slider(0, 1, value=DEFAULTS["on_policy"], step=0.05,
                                          label="On-policy fraction (walkers that follow the student's own steps)")
                    ema = gr.Number(DEFAULTS["ema"], label="EMA decay of the student (0: none)")
                    target_ema = gr.Number(DEFAULTS["target_ema"], visible=first("target_ema"),
                                           label="Consistency: EMA decay of the target network (0: the student)")
                    ckpt = gr.Checkbox(DEFAULTS["gradient_checkpointing"],
                                       label="Gradient checkpointing (less memory, slower steps)")
                with gr.Row():
                    mixed = gr.Dropdown(list(MIXED_PRECISION), value=DEFAULTS["mixed_precision"],
                                        label="Mixed precision (auto: bf16 on a GPU, none on a CPU)")
                    warmup = gr.Number(DEFAULTS["warmup"], precision=0, minimum=0,
                                       label="Warm-up steps of each round (learning rate)")
                    ckpt_every = gr.Number(DEFAULTS["checkpoint_every"], precision=0, minimum=1,
                                           label="Checkpoint every N steps (a stopped job resumes from the last)")
                    sample_every = gr.Number(DEFAULTS["sample_every"], precision=0, minimum=0,
                                             label="The student's images every N steps (0: none)")
            warning = gr.Markdown()
            memory_plan = gr.Markdown(plan_text(lab, {"technique": technique.value, "teacher": teacher.value}))
            go = gr.Button("Launch", variant="primary")
            launched = gr.Markdown()
    gr.Markdown("### Jobs")
    table = gr.HTML(job_table(lab))
    with gr.Row():
        picked = gr.Dropdown(job_choices(lab), label="Job", scale=3)
        cancel_btn = gr.Button("Cancel job", scale=0)
        resume_btn = gr.Button("Resume job", scale=0)
    status = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=3):
            curve = gr.HTML(job_detail(lab, None)[0], elem_classes="lab-loss")
            with gr.Row():
                log_y = gr.Checkbox(False, label="Log scale")
                smooth = gr.Slider(0, 0.99, value=0.6, step=0.01,
                                   label="Smoothing (moving average; the raw loss stays faint beneath)")
        with gr.Column(scale=2):
            sample_view = gr.Image(label="The student's images at 4 fixed seeds as it trains (newest on top)",
                                   type="pil", format="png", interactive=False, height=470,
                                   elem_classes="lab-samples", buttons=["fullscreen", "download"])
    evals = gr.Dataframe(label="Adherence after every round (the loss compounds; the interval is Wilson's 95%)",
                         interactive=False,
                         headers=["round", "model", "steps", "guidance", "adherence", "n", "95% interval"])
    log = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, autoscroll=True)

    form = {"technique": technique, "teacher": teacher, "name": name, "lora": lora, "lora_rank": rank,
            "lora_save": lora_save, "train_steps": train_steps, "lr": lr, "batch_size": batch, "guidance_min": g_min,
            "guidance_max": g_max, "from_steps": from_steps, "to_steps": to_steps, "eval_n": eval_n, "init": init,
            "on_policy": on_policy, "ema": ema, "gradient_checkpointing": ckpt, "student_steps": student_steps,
            "real_guidance": real_guidance, "fake_updates": fake_updates, "target_ema": target_ema,
            "prompts": prompts, "mixed_precision": mixed, "warmup": warmup, "checkpoint_every": ckpt_every,
            "sample_every": sample_every}
    go.click(lambda *values: launch(lab, dict(zip(form, values))), list(form.values()), [launched, table, picked],
             api_name="launch")
    for c in (technique, teacher):
        c.change(lambda t, m: warning_for(lab, t, m), [technique, teacher], warning)
    # Only the fields the chosen technique reads are shown.
    shown = {g_min: FIELDS_OF["guidance_min"], g_max: FIELDS_OF["guidance_max"], from_steps: FIELDS_OF["from_steps"],
             to_steps: FIELDS_OF["to_steps"], student_steps: FIELDS_OF["student_steps"],
             real_guidance: FIELDS_OF["real_guidance"], fake_updates: FIELDS_OF["fake_updates"],
             target_ema: FIELDS_OF["target_ema"]}
    technique.change(lambda t: [gr.update(visible=TECHNIQUES.get(t, t) in kinds) for kinds in shown.values()],
                     technique, list(shown))
    # The memory plan follows the fields it depends on (and is there when the page opens).
    for c in (technique, teacher, lora, rank, batch, ckpt, from_steps, init, mixed):
        c.change(lambda *values: plan_text(lab, dict(zip(form, values))), list(form.values()), memory_plan)
    detail = [curve, evals, log, status, sample_view]
    for c in (picked, log_y, smooth):
        c.change(lambda j, y, s: shown_detail(lab, j, y, s), [picked, log_y, smooth], detail)
    cancel_btn.click(lambda j: act(lab, "cancel", j), picked, table, api_name="cancel")
    resume_btn.click(lambda j: act(lab, "resume", j), picked, table, api_name="resume")
    shown_state = gr.State({})  # what the page shows already: the timer sends only what changed

    def tick(j, y, s, shown):
        chart, evals_, log_, status_, images = job_detail(lab, j, y, s)
        choices = job_choices(lab)
        new = {"choices": choices, "images": images}
        out = [job_table(lab), chart, evals_, log_, status_]
        out.append(filmstrip(images) if images != shown.get("images") else gr.skip())
        out.append(gr.Dropdown(choices=choices) if choices != shown.get("choices") else gr.skip())
        return *out, new

    timer = gr.Timer(2.0)
    timer.tick(tick, [picked, log_y, smooth, shown_state], [table, *detail, picked, shown_state],
               api_visibility="private")
    return {"teacher": teacher, "init": init, "table": table, "picked": picked}
