"""The Decide tab's handlers (app/decide.py): a bench is a job, queued at once and followed; the
table comes back when it has succeeded; Recommend during a bench says there is no finished run."""

import time

import gradio as gr
import pytest

from app import decide
from app.state import Lab
from engine import jobs
from engine.accel.calibrate import VERSION
from engine.decide.config import ROLES
from engine.families.embedded import EmbeddedFamily
from engine.store import Store

CALIBRATION = {"method": "teacache", "version": VERSION, "coefficients": [1.0, 0.0], "threshold": 0.3}


def test_run_bench_queues_a_job_and_the_table_refreshes_when_it_has_succeeded(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "lab-data")
    store.save_calibration(EmbeddedFamily.load(tiny_model_dir).identity(), "teacache", CALIBRATION)
    lab, model = Lab(store, device="cpu"), str(tiny_model_dir)
    picks = [""] * len(ROLES)
    picks[ROLES.index("step4")] = model  # the tiny model stands in for a 4-step student
    line, seen = decide.bench(lab, model, 1, 1, *picks)
    job_id = int(seen.split(":")[0])
    assert f"Job {job_id} queued — follow it in the Jobs tab" in line and "<progress" in line
    # Recommend before the run has finished: a clear message, no traceback
    with pytest.raises(gr.Error, match=f"no finished bench run of .* yet \\(bench job {job_id} is (queued|running)"):
        decide.decide(lab, model, "yes", "small", "cpu", 0, 0.05)
    status, seen, table, _ = decide.watch(lab, model, seen)
    assert f"Bench job {job_id}" in status
    while (job := store.job(job_id))["status"] not in jobs.TERMINAL:
        time.sleep(0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, job_id).read_text()
    status, seen, table, chart = decide.watch(lab, model, seen)
    assert seen == f"{job_id}:succeeded" and "succeeded" in status
    assert ">step-distilled, 4 steps</td>" in table and "you picked it" in table and "<svg" in chart
    assert "Adherence rests on 1 prompt a row: by chance alone it moves by up to ±0.98" in table
    assert decide.watch(lab, model, seen)[2] == gr.skip()  # shown once, not on every tick
    assert "Recommendation:" in decide.decide(lab, model, "yes", "small", "cpu", 0, 0.05)


def test_the_pickers_name_the_rule_s_choice_and_offer_the_lineage(tmp_path):
    lab = Lab(Store(tmp_path / "d"))
    choices = dict(zip(decide.ROLES, decide.picker_choices(lab, "embedded"), strict=True))
    from engine import registry

    if "embedded-4step" not in registry.BUILTIN:
        pytest.skip("the shipped students are not in assets/")
    assert choices["both"][0] == ("automatic: embedded-4step (shipped with the lab)", "")
    assert ("embedded-4step", "embedded-4step") in choices["both"]
    assert choices["step8"][0] == ("automatic: none yet", "")


def test_the_hardware_question_starts_at_the_apps_own_device(tmp_path):
    assert decide.default_hardware(Lab(Store(tmp_path / "d"), device="cpu")) == "cpu"


def test_the_sweep_tab_follows_the_newest_sweep_as_it_opens(tmp_path):
    """A reload of the Sweep tab shows the last sweep again: the page follows the newest sweep job."""
    from app import sweep

    lab = Lab(Store(tmp_path / "d"))
    assert sweep.newest(lab) == ""
    first = jobs.submit(lab.store, "sweep", {}, name="embedded", label="sweep", parts=1, start=False)
    jobs.submit(lab.store, "bench", {}, name="embedded", label="bench", parts=1, start=False)
    assert sweep.newest(lab) == str(first)
