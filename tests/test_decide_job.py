"""Bench and sweep as jobs (engine/decide/job.py): run in the job's own process to success, their
results stored; canceled between images; the CLI queues one with --queue."""

import json

import pytest
from helpers import wait_for

from engine import cli, jobs
from engine.accel.calibrate import VERSION
from engine.decide import job as decide_job
from engine.decide.config import BenchConfig, SweepConfig
from engine.errors import UsageError
from engine.families.embedded import EmbeddedFamily
from engine.store import Store

CALIBRATION = {"method": "teacache", "version": VERSION, "coefficients": [1.0, 0.0], "threshold": 0.3}


@pytest.fixture
def store(tmp_path, tiny_model_dir):
    s = Store(tmp_path / "lab-data")
    s.save_calibration(EmbeddedFamily.load(tiny_model_dir).identity(), "teacache", CALIBRATION)
    return s


def test_a_bench_job_runs_to_success_and_stores_its_run(store, tiny_model_dir):
    teacher = str(tiny_model_dir)
    cfg = BenchConfig(model=teacher, steps=4, n=2, timing=2, batch_size=2, thresholds=(0.3,),
                      students={"step4": teacher})
    job_id = decide_job.submit_bench(store, cfg)
    job = jobs.follow(store, job_id, out=open("/dev/null", "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, job_id).read_text()
    run = store.bench_runs(teacher)[0]
    rows = {r["key"]: r for r in run["rows"]}
    assert run["config"]["threads"] == 1 and rows["teacher"]["nfe"] == 8
    # every measured row: seconds with the interval of their median, a speed-up with its own
    for r in (r for r in run["rows"] if "missing" not in r):
        assert r["seconds_lo"] <= r["seconds"] <= r["seconds_hi"], r
        assert r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"], r
    assert rows["step4"]["model"] == teacher and rows["step4"]["chosen"] == "you picked it"
    # one part per row, then the timing rounds; all of them done
    assert job["parts"] == len(run["rows"]) + 1 and jobs.progress(job)[0] == 1.0
    assert job["models"] == [teacher]
    log = jobs.log_path(store, job_id).read_text()
    assert "step-distilled, 4 steps: " in log and f"bench run {run['id']} stored" in log


def test_a_bench_job_canceled_while_running_ends_canceled(store, tiny_model_dir):
    cfg = BenchConfig(model=str(tiny_model_dir), steps=4, n=100000, timing=1, batch_size=1, thresholds=(0.3,))
    job_id = decide_job.submit_bench(store, cfg)
    wait_for(lambda: (store.job(job_id)["step"] or 0) >= 2)  # images of the teacher's row are coming
    jobs.cancel(store, job_id)
    wait_for(lambda: store.job(job_id)["status"] in jobs.TERMINAL, timeout=60)
    assert store.job(job_id)["status"] == "canceled", jobs.log_path(store, job_id).read_text()
    assert store.bench_runs() == []  # nothing half-measured is stored


def test_bad_bench_settings_are_refused_before_any_job_exists(store):
    for bad in (BenchConfig(model="no-such-model"), BenchConfig(students={"step4": "no-such-student"}),
                BenchConfig(timing=0)):
        with pytest.raises(UsageError):
            decide_job.submit_bench(store, bad)
    assert store.jobs() == []


def test_a_sweep_job_keeps_its_cells_with_timings_and_images(store, tiny_model_dir):
    cfg = SweepConfig(prompt="a red star", steps=(4, 2), guidance=(3.0,), timing=2)
    job_id = decide_job.submit_sweep(store, str(tiny_model_dir), cfg)
    job = jobs.follow(store, job_id, out=open("/dev/null", "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, job_id).read_text()
    out = decide_job.sweep_result(store, job_id)
    assert [(c["steps"], c["nfe"]) for c in out["cells"]] == [(4, 8), (2, 4)] and job["parts"] == 3
    first = out["cells"][0]  # the reference's own setting
    assert first["psnr_ref"] == 100.0 and first["timed"] == 2
    assert first["speedup_lo"] <= first["speedup"] <= first["speedup_hi"]
    assert all(open(c["image"], "rb").read(4) == b"\x89PNG" for c in out["cells"])


def test_the_bench_cli_queues_a_job_with_queue(tiny_model_dir, data_dir, capsys):
    Store(data_dir).save_calibration(EmbeddedFamily.load(tiny_model_dir).identity(), "teacache", CALIBRATION)
    assert cli.main(["bench", "--model", str(tiny_model_dir), "--steps", "2", "--n", "1", "--timing", "1",
                     "--thresholds", "0.3", "--queue"]) == 0
    out = json.loads(capsys.readouterr().out)
    store = Store(data_dir)
    assert store.job(out["job"])["kind"] == "bench" and out["status"] in ("queued", "running")
    job = jobs.follow(store, out["job"], out=open("/dev/null", "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, out["job"]).read_text()
