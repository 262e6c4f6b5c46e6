"""The Distill tab: launching a job through the app's API and in the browser, watching it finish,
and finding its student in the Compare tab's pickers without a restart."""

import time

import pytest
import torch
from gradio_client import Client
from helpers import serve, stop_jobs, wait_job

from app import state
from app.blocks import build_app
from app.distill import job_detail
from app.state import Lab
from engine import jobs
from engine.store import Store

TECH = "Guidance distillation (one pass instead of two)"


FIELDS = ["technique", "teacher", "name", "lora", "lora_rank", "lora_save", "train_steps", "lr", "batch_size",
          "guidance_min", "guidance_max", "from_steps", "to_steps", "eval_n", "init", "on_policy", "ema",
          "gradient_checkpointing", "student_steps", "real_guidance", "fake_updates", "target_ema", "prompts",
          "mixed_precision", "warmup", "checkpoint_every", "sample_every"]  # the /launch endpoint's inputs, in order
DMD = "DMD2 (distribution matching: 1-4 steps)"


def form(teacher, name, steps=3, **values) -> list:
    """The launch form's values, in order: a quick guidance job unless `values` say otherwise."""
    base = dict(technique=TECH, teacher=teacher, name=name, lora=False, lora_rank=8, lora_save="merged",
                train_steps=steps, lr=1e-4, batch_size=2, guidance_min=1.0, guidance_max=8.0, from_steps=64,
                to_steps=4, eval_n=0, init="", on_policy=0.0, ema=0.995, gradient_checkpointing=False,
                student_steps=1, real_guidance=5.0, fake_updates=5, target_ema=0.95, prompts=None,
                mixed_precision="auto", warmup=0, checkpoint_every=100, sample_every=100)
    assert set(values) <= set(base), set(values) - set(base)
    return [{**base, **values}[k] for k in FIELDS]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    store = Store(tmp_path_factory.mktemp("lab-data"))
    store.register_model("tiny", tiny_model_dir, "embedded")
    demo = build_app(Lab(store))
    yield serve(demo), store
    demo.close()
    stop_jobs(store)


def test_round_table_gives_each_adherence_its_interval(tmp_path):
    """120 prompts at 0.8 adherence: Wilson's 95% interval is about 0.72-0.86, shown beside it."""
    lab = Lab(Store(tmp_path / "d"))
    job = lab.store.create_job("distill", name="g", label="guidance: embedded -> g", payload={}, parts=1,
                               part_unit="round", step_unit="step")
    lab.store.add_job_eval(job, round=0, model="g", steps=50, guidance=5.0, adherence=0.8, n=120,
                           by_category={"basic": 0.9})
    _, evals, *_ = job_detail(lab, str(job))
    row = evals.iloc[0]
    lo, hi = (float(x) for x in row["95% interval"].split("–"))
    assert row["n"] == 120 and lo == pytest.approx(0.719, abs=2e-3) and hi == pytest.approx(0.862, abs=2e-3)


def test_launch_through_the_api_and_use_the_student(served):
    url, store = served
    client = Client(url, verbose=False)
    text, table, _ = client.predict(*form("tiny", "api-g"), api_name="/launch")
    assert "queued" in text and "api-g" in text
    job = wait_job(store, store.jobs()[0]["id"])
    assert job["status"] == "succeeded", (job, jobs.log_path(store, job["id"]).read_text())
    # a second job continues that student on its own trajectories, from the form's "more settings"
    client.predict(*form("tiny", "api-g2", init="api-g", on_policy=1.0, ema=0), api_name="/launch")
    job = wait_job(store, max(j["id"] for j in store.jobs()))
    recipe = job["payload"]
    assert job["status"] == "succeeded", (job, jobs.log_path(store, job["id"]).read_text())
    assert recipe["init"] == "api-g" and recipe["on_policy"] == 1.0
    assert recipe["ema"] is None
    # the new student runs in Compare at once, one pass per step
    _, _, _, left, *_ = client.predict("a red circle", 0, "api-g", 2, 5.0, "embedded", 1, 1.0,
                                      *[] if len(client.view_api(return_format="dict")["named_endpoints"]["/compare"]
                                                  ["parameters"]) == 8 else _extra_compare_args(client),
                                      api_name="/compare")
    assert "NFE **2**" in left


def _extra_compare_args(client):
    params = client.view_api(return_format="dict")["named_endpoints"]["/compare"]["parameters"][8:]
    return [p["parameter_default"] for p in params]


def test_launch_a_dmd_job_through_the_api(served):
    """The form's DMD fields reach the recipe; the job trains the generator and its fake score (two
    curves) and registers a one-step student that samples by consistency sampling."""
    from app.distill import job_detail
    from engine import registry

    url, store = served
    client = Client(url, verbose=False)
    dmd = form("tiny", "api-dmd", steps=4, technique=DMD, student_steps=1, real_guidance=4.0, fake_updates=2)
    text, _, _ = client.predict(*dmd, api_name="/launch")
    assert "dmd of **tiny**" in text
    picked = str(max(j["id"] for j in store.jobs()))
    job = wait_job(store, int(picked))
    assert job["status"] == "succeeded", (job, jobs.log_path(store, job["id"]).read_text())
    recipe = job["payload"]
    assert (recipe["technique"], recipe["student_steps"], recipe["real_guidance"], recipe["fake_updates"]) == \
        ("dmd", 1, 4.0, 2)
    assert registry.load("api-dmd", store=store, device="cpu").sampler == "consistency"
    chart, *_, images = job_detail(Lab(store), picked)
    assert 'data-series="generator"' in chart and 'data-series="fake score"' in chart
    # the student's images at fixed seeds, at the job's last step (4 steps; 100 between samples)
    assert [caption for _, caption in images] == ["round 1 · step 4"]


def test_a_real_teachers_settings_reach_the_recipe(served, tmp_path):
    """Prompt file upload (kept in the data directory), mixed precision, warm-up, checkpoint and
    sample intervals, from the form to the job's recipe; an empty prompt file is refused by name."""
    from gradio_client import handle_file

    url, store = served
    client = Client(url, verbose=False)
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a red fox in the snow\na lighthouse at dusk\n")
    real = dict(mixed_precision="no", warmup=1, checkpoint_every=2, sample_every=2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    before = len(store.jobs())
    with pytest.raises(Exception, match="has no prompts"):
        client.predict(*form("tiny", "api-empty", steps=2, prompts=handle_file(str(empty)), **real),
                       api_name="/launch")
    assert len(store.jobs()) == before
    client.predict(*form("tiny", "api-real", steps=2, prompts=handle_file(str(prompts)), **real),
                   api_name="/launch")
    job = wait_job(store, max(j["id"] for j in store.jobs()))
    assert job["status"] == "succeeded", jobs.log_path(store, job["id"]).read_text()
    recipe = job["payload"]
    assert (recipe["mixed_precision"], recipe["warmup"], recipe["checkpoint_every"], recipe["sample_every"]) == \
        ("no", 1, 2, 2)
    kept = recipe["prompts"]
    assert kept.startswith(str(store.root)) and open(kept).read() == prompts.read_text()


def test_bad_form_is_refused_with_the_field_named(served, capfd):
    """Each bad field refused by name, nothing queued, and no traceback in the server's console
    (an expected refusal is not an error of the app)."""
    url, store = served
    client = Client(url, verbose=False)
    before = len(store.jobs())
    bad = form("tiny", "bad", lr=-1.0)
    with pytest.raises(Exception, match="lr must be"):
        client.predict(*bad, api_name="/launch")
    with pytest.raises(Exception, match="name must be"):
        client.predict(*form("tiny", ""), api_name="/launch")
    with pytest.raises(Exception, match="init"):
        client.predict(*form("tiny", "bad", init="no-such-model"), api_name="/launch")
    bad = form("tiny", "bad", technique=DMD, real_guidance=99.0)
    with pytest.raises(Exception, match="real_guidance must be"):
        client.predict(*bad, api_name="/launch")
    assert len(store.jobs()) == before
    console = capfd.readouterr()
    assert "Traceback" not in console.out + console.err


def test_browser_launch_watch_and_pick_the_student(served, chromium, tmp_path):
    url, store = served
    page = chromium.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(url)
    page.get_by_role("tab", name="Distill").click()
    # the form shows the fields of the chosen technique alone
    assert page.get_by_label("Guidance range: min").is_visible() and not page.get_by_text("Student steps").count()
    page.get_by_text("DMD2 (distribution matching").click()
    page.get_by_label("DMD: guidance of the teacher's score").wait_for()
    assert not page.get_by_label("Guidance range: min").count()
    page.get_by_text("Guidance distillation (one pass").click()
    page.get_by_label("Guidance range: min").wait_for()
    page.get_by_text("DMD2 (distribution matching").click()  # and back: the job launched is a DMD2 one
    page.get_by_label("DMD: guidance of the teacher's score").wait_for()
    page.get_by_label("Teacher", exact=True).fill("tiny")
    page.keyboard.press("Enter")
    page.get_by_label("Student name").fill("web-g")
    page.get_by_label("Training steps per round").fill("3")
    page.get_by_label("Batch size").fill("2")
    page.get_by_label("Adherence prompts scored after every round (embedded domain; 0: none)").fill("0")
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("Job").first.wait_for()
    # the API test's job already succeeded in this table: wait for this job's own row
    row = page.locator("table.lab-jobs tr", has_text="web-g")
    row.get_by_text("succeeded").first.wait_for(timeout=300_000)
    assert page.locator("table.lab-jobs progress").count() >= 1
    job = next(j for j in store.jobs() if j["name"] == "web-g")
    assert job["payload"]["technique"] == "dmd" and job["status"] == "succeeded"
    page.screenshot(path=str(tmp_path / "distill.png"), full_page=True)
    page.get_by_role("tab", name="Compare").click()
    for _ in range(20):  # the pickers refresh when the tab opens
        page.get_by_label("Model").first.click()
        if page.get_by_role("option", name="web-g").count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
    page.get_by_role("option", name="web-g").wait_for(timeout=5_000)
    page.close()
    assert store.model("web-g") is not None


def test_the_form_shows_the_memory_plan_of_its_recipe(tmp_path):
    from app.distill import TECHNIQUES, plan_text

    lab = Lab(Store(tmp_path / "lab"), device="cpu")
    technique = list(TECHNIQUES)[0]
    full = plan_text(lab, {"technique": technique, "teacher": "embedded"})
    lora = plan_text(lab, {"technique": technique, "teacher": "embedded", "lora": True, "lora_rank": 8})
    assert full.startswith("**Memory plan: ") and "fits" in full and "6,728,908 trained parameters" in full
    assert "118,784 trained parameters" in lora and "gradient checkpointing would make activations" in lora
    assert "none yet (teacher: no model named" in plan_text(lab, {"technique": technique, "teacher": "nope"})


def test_the_loss_chart_draws_a_line_from_the_first_two_reports(tmp_path):
    """The trainer reports its first step at once; with the next report the chart is a line (an SVG
    polyline through both points), per round; a DMD job's two losses are two curves; log scale and
    smoothing redraw it, the raw loss staying beneath the smoothed one."""
    import re

    from engine.distill.trainer import LoopConfig, make_accelerator, train_loop

    lab = Lab(Store(tmp_path / "d"))
    assert "Pick a job" in job_detail(lab, None)[0]
    reported = []
    net = torch.nn.Linear(2, 1)
    train_loop(make_accelerator("no"), net, lambda step: net(torch.ones(1, 2)).pow(2).sum(),
               LoopConfig(steps=10, lr=1e-2, warmup=0, report_seconds=1e9), tmp_path / "ckpt",
               report=reported.append)
    assert [r["step"] for r in reported] == [1, 10]
    job = lab.store.create_job("distill", name="g", label="guidance: embedded -> g", payload={}, parts=1,
                               part_unit="round", step_unit="step")
    assert "No loss reported yet" in job_detail(lab, str(job))[0]
    for r in reported:
        lab.store.add_job_metric(job, round=0, step=r["step"], loss=r["loss"])
    chart = job_detail(lab, str(job), False, 0.0)[0]
    lines = re.findall(r'<polyline class="series" data-series="([^"]+)" points="([^"]+)"', chart)
    assert [name for name, _ in lines] == ["round 1"] and len(lines[0][1].split()) == 2
    smooth = job_detail(lab, str(job), True, 0.6)[0]
    assert "log scale" in smooth and smooth.count('class="raw"') == 1
    lab.store.add_job_metric(job, round=0, step=20, loss=0.5, fake_loss=0.7)
    names = re.findall(r'<polyline class="series" data-series="([^"]+)"', job_detail(lab, str(job))[0])
    assert names == ["round 1", "generator", "fake score"]


def test_the_samples_show_as_one_filmstrip_newest_on_top(tmp_path):
    """Sample grids saved by a job (round<R>-step<S>.png) are listed newest first with their captions
    and drawn as one picture, each row enlarged with square pixels."""
    from PIL import Image

    from app.distill import filmstrip, samples

    lab = Lab(Store(tmp_path / "d"))
    job = lab.store.create_job("distill", name="g", label="g", payload={}, parts=2, part_unit="round",
                               step_unit="step")
    folder = jobs.job_dir(lab.store, job) / "samples"
    folder.mkdir()
    for name, shade in (("round1-step0000100", 10), ("round1-step0000020", 20), ("round2-step0000020", 30)):
        Image.new("RGB", (128, 32), (shade, shade, shade)).save(folder / f"{name}.png")
    items = samples(lab, job)
    assert [c for _, c in items] == ["round 2 · step 20", "round 1 · step 100", "round 1 · step 20"]
    strip = filmstrip(items, side=96)
    assert strip.size == (72 + 384, 3 * 96 + 2 * 6)
    assert strip.getpixel((72 + 10, 10)) == (30, 30, 30)  # the newest row on top
    assert filmstrip([]) is None


def test_a_job_reports_its_pace_and_time_left_and_its_phase(tmp_path, monkeypatch):
    """Steps per second and the time left come from the job's own reports; between steps the job
    says what it does; a cancel shows as canceling at once."""
    from engine.jobs import Context

    store = Store(tmp_path / "d")
    job_id = store.create_job("distill", name="g", label="guidance: embedded -> g", payload={}, parts=2,
                              part_unit="round", step_unit="step")
    store.set_job_status(job_id, "running", started="2026-01-01T00:00:00+00:00")
    ctx = Context(store, store.job(job_id))
    assert jobs.progress(store.job(job_id))[1] == "starting: its process is loading"  # not "step 0/0"
    ctx.phase("round 1: loading the teacher embedded")
    assert jobs.progress(store.job(job_id))[1] == "round 1: loading the teacher embedded"
    clock = [100.0, 110.0]  # the job's clock at its two reports: 90 steps in ten seconds
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock.pop(0) if len(clock) > 1 else clock[0])
    ctx.report(0, 1, 100, loss=1.0)
    ctx.report(0, 91, 100, loss=0.5)
    job = store.job(job_id)
    assert job["rate"] == 9.0 and job["eta"] == pytest.approx(109 / 9.0)
    assert jobs.progress(job)[1] == "round 1/2, step 91/100, 9 step/s, 0:12 left"
    line = state.job_status(job)
    assert "running" in line and "running for" in line and "GPU" not in line  # no GPU here
    store.update_job(job_id, phase="canceling")  # as `cancel` marks it, then signals the process
    ctx.stop_flag["stop"] = True  # the signal arrived while a step was finishing: its report keeps the mark
    ctx.report(0, 92, 100, loss=0.5)
    assert store.job(job_id)["phase"] == "canceling"


def test_a_job_on_a_gpu_shows_its_memory_and_utilisation(tmp_path, monkeypatch):
    """Where the job's process uses CUDA, each report carries its peak memory and the GPU's
    utilisation, shown on the job's status line (CUDA's calls stood in for on this CPU machine)."""
    from engine.jobs import Context

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "utilization", lambda *a: 87)
    store = Store(tmp_path / "d")
    job_id = store.create_job("distill", name="g", label="g", payload={}, parts=1, part_unit="round",
                              step_unit="step")
    store.set_job_status(job_id, "running")
    Context(store, store.job(job_id)).report(0, 1, 10, loss=1.0)
    assert "GPU memory 3.0 GiB peak, 87% busy" in state.job_status(store.job(job_id))


def test_cancel_without_a_picked_job_says_so(tmp_path):
    from app.distill import act

    with pytest.raises(Exception, match="cancel: pick a job first"):
        act(Lab(Store(tmp_path / "d")), "cancel", None)


def test_browser_follows_a_job_after_a_reload_and_cancels_it(served, chromium):
    """A long job launched elsewhere (the API) is there after the page is opened anew: the Job list
    holds it and the earlier jobs, its loss chart is a drawn line, and Cancel from the page ends it."""
    import re

    url, store = served
    client = Client(url, verbose=False)
    client.predict(*form("tiny", "api-short", steps=2), api_name="/launch")
    wait_job(store, max(j["id"] for j in store.jobs()))
    client.predict(*form("tiny", "api-long", steps=100_000), api_name="/launch")
    job_id = max(j["id"] for j in store.jobs())
    end = time.time() + 120
    while len(store.job_metrics(job_id)) < 2 and time.time() < end:  # step 1 at once, then every 2 s
        time.sleep(0.5)
    assert len(store.job_metrics(job_id)) >= 2, store.job(job_id)
    page = chromium.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(url)
    page.get_by_role("tab", name="Distill").click()
    line = page.locator(".lab-loss svg polyline.series").first
    line.wait_for(timeout=30_000)
    assert len(line.get_attribute("points").split()) >= 2
    page.get_by_label("Job", exact=True).click()
    options = [o.replace("✓", "").strip() for o in page.get_by_role("option").all_inner_texts()]
    assert f"{job_id} · guidance: tiny → api-long · running" in options, options
    assert any("guidance: tiny → api-short · succeeded" in o for o in options), options  # the earlier job too
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_text(re.compile(rf"Job {job_id}: (canceling|canceled)")).first.wait_for(timeout=10_000)
    assert wait_job(store, job_id, timeout=120)["status"] == "canceled"
    page.close()
