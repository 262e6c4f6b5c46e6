"""The acceleration controls and views of the running app, through its API (gradio_client)."""

import pytest
from gradio_client import Client
from helpers import serve

from app.blocks import build_app
from app.state import Lab
from engine import registry
from engine.accel.calibrate import VERSION
from engine.store import Store


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("lab-data"))
    # A stored calibration of the shipped teacher, so the test pays for no calibration run.
    store.save_calibration(registry.load("embedded", device="cpu").identity(), "teacache",
                           {"method": "teacache", "version": VERSION, "coefficients": [1.0, 0.0], "threshold": 0.3})
    demo = build_app(Lab(store, device="cpu"))
    yield Client(serve(demo), verbose=False), store
    demo.close()


def test_compare_sides_take_a_cache_and_fp8_and_show_skipped_passes(app):
    client, store = app
    out = client.predict("a red circle", 3, "embedded", 8, 5.0, "embedded", 8, 5.0,
                         "none", "", "off", "teacache", "", "weights", api_name="/compare")
    left, right = out[3], out[4]
    assert "NFE **16** · skipped **0**" in left
    assert "cache teacache:0.3" in right and "FP8 weights" in right
    skipped = int(right.split("skipped **")[1].split("**")[0])
    nfe = int(right.split("NFE **")[1].split("**")[0])
    assert skipped > 0 and nfe + skipped == 16
    gens = store.generations(2)
    assert gens[0]["settings"]["cache"] == "teacache:0.3" and gens[0]["skipped"] == skipped


def test_compare_says_why_a_cache_cannot_run(app):
    client, _ = app
    with pytest.raises(Exception, match="Right side: cache fbcache: .*use teacache"):
        client.predict("a red circle", 3, "embedded", 2, 5.0, "embedded", 2, 5.0,
                       "none", "", "off", "fbcache", "", "off", api_name="/compare")


def test_decide_answers_from_the_latest_bench_run(app):
    client, store = app
    with pytest.raises(Exception, match="no finished bench run of 'embedded' yet: run bench first"):
        client.predict("embedded", "no", "none", "gpu", 0, 0.05, api_name="/decide")
    rows = [{"key": "teacher", "row": "teacher (50 steps, CFG)", "model": "embedded", "seconds": 1.3, "speedup": 1.0,
             "nfe": 100, "skipped": 0, "adherence": 0.82, "psnr_teacher": 100.0},
            {"key": "teacher+teacache@0.4", "row": "teacher + teacache 0.4", "model": "embedded", "seconds": 0.4,
             "speedup": 3.25, "nfe": 26, "skipped": 74, "adherence": 0.81, "psnr_teacher": 34.0}]
    store.add_bench_run("embedded", "cpu (2 cores)", {"n": 30, "timing": 3}, rows)
    text = client.predict("embedded", "no", "none", "gpu", 0, 0.05, api_name="/decide")
    assert "Recommendation: teacher + teacache 0.4" in text and "3.25×" in text and "74 passes skipped" in text


def test_sweep_runs_as_a_job_whose_cells_make_a_chart_and_a_table(app):
    from app.sweep import view
    from engine import jobs
    from engine.decide.job import sweep_result

    client, store = app
    line = client.predict("embedded", "a red star", 0, "4, 2", "5", "none", "", "off", 0, 2, api_name="/sweep")
    assert "queued — follow it in the Jobs tab" in line  # at once, not when it is done
    job_id = line.split("Job ")[1].split(" ")[0]
    job = jobs.follow(store, int(job_id), out=open("/dev/null", "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, int(job_id)).read_text()
    gallery, chart, table = view(sweep_result(store, int(job_id)))
    assert len(gallery) == 2
    assert "<svg" in chart and "4 steps, s 5" in chart
    assert "| 4 | 5 | none | 8 | 0 |" in table and "| 2 | 5 | none | 4 | 0 |" in table
    assert "median of 2 timed images after a warm-up" in table
