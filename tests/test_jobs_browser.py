"""Long work as jobs, in the browser: arena battles prepared by a job of their own, with progress on
the page, the Jobs tab listing jobs of every kind, and a cancel from there that leaves nothing
half-made."""

import time

import pytest
from gradio_client import Client
from helpers import serve, stop_jobs, wait_job

from app.blocks import build_app
from app.state import Lab
from engine import jobs
from engine.store import Store


def prepare_args(model, n):
    # model, steps, guidance of A and B, battles, prompts source, category, typed, golden, seed
    return [model, 4, 5.0, model, 2, 5.0, n, "embedded world", "all categories", "", None, 0]


@pytest.fixture
def served(tmp_path, tiny_model_dir):
    """The app over a fresh data directory holding the tiny model; its jobs stopped afterwards."""
    store = Store(tmp_path / "lab")
    store.register_model("tiny", tiny_model_dir, "embedded")
    demo = build_app(Lab(store, device="cpu"))
    try:
        yield serve(demo), store
    finally:
        demo.close()
        stop_jobs(store)


def test_battles_prepared_by_a_job_and_a_cancel_from_the_jobs_tab(served, chromium):
    url, store = served
    client = Client(url, verbose=False)
    # a bad value is refused by name before anything is queued
    try:
        client.predict(*prepare_args("tiny", 0), api_name="/arena_prepare")
        raise AssertionError("no battles at all was accepted")
    except Exception as e:
        assert "Battles must be a whole number in 1..10000, got 0" in str(e)
    assert store.jobs() == []
    text = client.predict(*prepare_args("tiny", 2), api_name="/arena_prepare")
    assert "queued" in text
    done = wait_job(store, store.jobs()[0]["id"], jobs.TERMINAL)
    assert done["status"] == "succeeded", jobs.log_path(store, done["id"]).read_text()
    assert len(store.battles()) == 2 and done["kind"] == "arena"

    page = chromium.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(url)
    page.get_by_role("tab", name="Leaderboard").click()
    page.get_by_text("Prepare battles (admin)").click()
    pickers = [p for p in page.get_by_label("Model", exact=True).all() if p.is_visible()]
    assert len(pickers) == 2
    for picker in pickers:  # the tiny model on both sides
        picker.fill("tiny")
        page.keyboard.press("Enter")
    page.get_by_label("Battles", exact=True).fill("4000")
    page.get_by_role("button", name="Prepare battles", exact=True).click()
    page.get_by_text("queued: 4000 battles").wait_for(timeout=30_000)
    job_id = max(j["id"] for j in store.jobs())
    wait_job(store, job_id, ("running",))
    end = time.time() + 120
    while not store.job(job_id)["step"] and time.time() < end:  # images are being made
        time.sleep(0.3)
    page.locator("progress").first.wait_for(timeout=10_000)  # the progress on the Leaderboard tab
    page.get_by_role("tab", name="Jobs").click()
    row = page.locator("table.lab-jobs tr", has_text="arena: 4000 battles")
    row.get_by_text("running").wait_for(timeout=10_000)
    page.get_by_label("Job", exact=True).click()
    page.get_by_role("option", name=f"{job_id} · arena: 4000 battles, tiny vs tiny · running").click()
    page.get_by_role("button", name="Cancel job").click()
    row.get_by_text("cancel").first.wait_for(timeout=10_000)  # canceling, then canceled
    assert wait_job(store, job_id, jobs.TERMINAL, timeout=120)["status"] == "canceled"
    page.locator("table.lab-jobs tr", has_text="arena: 4000 battles").get_by_text("canceled").wait_for(
        timeout=10_000)
    page.close()
    # nothing half-made: the finished job's battles alone, and their images alone
    assert len(store.battles()) == 2
    assert len(list((store.root / "arena").glob("*.png"))) == 4


def test_a_bench_runs_as_a_job_with_progress_and_is_canceled_from_the_decide_tab(served, chromium):
    url, store = served
    page = chromium.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(url)
    page.get_by_role("tab", name="Decide").click()
    picker = page.get_by_label("Model (the teacher)")
    picker.click()
    page.get_by_role("option", name="tiny", exact=True).click()
    page.wait_for_function("document.querySelector('input[aria-label=\"Model (the teacher)\"]').value === 'tiny'")
    for label, value in (("Quality prompts per row", "10"), ("Timed images per row", "1")):  # the least
        field = page.get_by_role("spinbutton", name=label)
        field.fill(value)
        field.press("Enter")
    page.get_by_role("button", name="Run bench").click()
    page.get_by_text("queued — follow it in the Jobs tab").wait_for(timeout=30_000)
    job_id = store.jobs()[0]["id"]
    job = store.job(job_id)
    cfg = job["payload"]["config"]
    assert job["kind"] == "bench" and (cfg["model"], cfg["n"], cfg["timing"]) == ("tiny", 10, 1)
    end = time.time() + 120
    while not store.job(job_id)["step"] and time.time() < end:  # its first images are done
        time.sleep(0.3)
    page.get_by_text(f"Bench job {job_id}").wait_for(timeout=10_000)
    assert page.locator("progress").count() >= 1  # the job's progress on the Decide tab
    page.get_by_role("button", name="Cancel bench").click()
    assert wait_job(store, job_id, jobs.TERMINAL, timeout=120)["status"] == "canceled"
    page.get_by_text("canceled").first.wait_for(timeout=10_000)
    assert store.bench_runs("tiny") == []  # a canceled bench stores no run
    page.close()


def test_the_jobs_tab_opens_on_the_newest_job_and_keeps_a_picked_one(tmp_path):
    from app import jobs as jobs_tab

    lab = Lab(Store(tmp_path / "lab"))
    for name in ("a", "b"):
        jobs.submit(lab.store, "demo", {}, name=name, label=f"demo {name}", parts=1, start=False)
    html, picker = jobs_tab.refresh(lab, None)
    assert picker.value == "2" and [c[1] for c in picker.choices] == ["2", "1"] and "demo a" in html
    assert jobs_tab.refresh(lab, "1")[1].value == "1"
