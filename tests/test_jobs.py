"""The job life cycle with real job processes on a tiny model."""

import json
import os
import signal

import pytest
from helpers import wait_for

from engine import cli, jobs, registry
from engine.distill import job as distill_job
from engine.distill.recipes import Recipe
from engine.errors import UsageError
from engine.families.embedded import EmbeddedFamily
from engine.store import Store


def recipe(teacher, name, **kw):
    base = dict(technique="guidance", teacher=str(teacher), name=name, train_steps=4, batch_size=2,
                teacher_steps=4, eval_n=0, checkpoint_every=2, warmup=1)
    return Recipe(**{**base, **kw})


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "lab-data")


def test_jobs_run_one_at_a_time_each_in_a_process_of_its_own(store, tiny_model_dir, capsys):
    """A guidance job runs in its own process and registers its student. A step-distillation job
    started from the command line meanwhile waits for it, warns that guidance should come first,
    and the command follows it to its end and prints the student's name."""
    a, warnings = distill_job.submit(store, recipe(tiny_model_dir, "g1", train_steps=12))
    assert warnings == [] and store.job(a)["status"] == "running"
    assert cli.main(["distill", "progressive", "--teacher", str(tiny_model_dir), "--name", "p0", "--from-steps", "4",
                     "--to-steps", "2", "--train-steps", "2", "--batch-size", "2", "--eval-n", "0",
                     "--data-dir", str(store.root)]) == 0
    out, err = capsys.readouterr()
    assert "distill guidance first" in err
    out = json.loads(out)
    assert out["status"] == "succeeded" and out["models"] == ["p0"]
    first, second = store.job(a), store.job(out["job"])
    assert f"job {second['id']} queued:" in err  # it waited in the queue while the first ran
    assert first["status"] == "succeeded", jobs.log_path(store, a).read_text()
    assert first["finished"] <= second["started"]  # the second waited for the first
    assert first["models"] == ["g1"] and jobs.progress(first) == (1.0, "round 1/1, step 12/12")
    row = store.model("g1")
    assert row["parent"] == str(tiny_model_dir) and row["recipe"]["technique"] == "guidance"
    assert store.job_metrics(a)[-1]["step"] == 12
    assert {"g1", "p0"} <= set(registry.names(store))
    assert EmbeddedFamily.load(registry.resolve("g1", store)).guidance_embedded


def test_sigkill_marks_interrupted_and_resume_continues_from_the_checkpoint(store, tiny_model_dir):
    job_id, _ = distill_job.submit(store, recipe(tiny_model_dir, "k1", train_steps=60, checkpoint_every=5))
    wait_for(lambda: any(m["step"] >= 10 for m in store.job_metrics(job_id)))
    os.killpg(store.job(job_id)["pid"], signal.SIGKILL)
    wait_for(lambda: jobs.reconcile(store) == [job_id] or store.job(job_id)["status"] == "interrupted")
    assert store.job(job_id)["status"] == "interrupted"
    jobs.resume(store, job_id)
    job = jobs.follow(store, job_id, out=open(os.devnull, "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, job_id).read_text()
    steps = [m["step"] for m in store.job_metrics(job_id)]
    assert steps[-1] == 60
    assert len(steps) == len(set(steps)), steps  # resumed from the checkpoint, not from step 0


def test_cancel_a_running_job(store, tiny_model_dir):
    job_id, _ = distill_job.submit(store, recipe(tiny_model_dir, "c1", train_steps=100000, checkpoint_every=1000))
    wait_for(lambda: store.job_metrics(job_id))
    jobs.cancel(store, job_id)
    wait_for(lambda: store.job(job_id)["status"] == "canceled")
    assert store.model("c1") is None
    with pytest.raises(UsageError, match="only queued or running"):
        jobs.cancel(store, job_id)


def test_bad_recipes_are_refused_before_any_job_exists(store, tiny_model_dir):
    for bad in (recipe(tiny_model_dir, "x", lr=-1.0), recipe("no-such-model", "x"),
                recipe(tiny_model_dir, "embedded"), recipe(tiny_model_dir, "x", init="no-such-model")):
        with pytest.raises(UsageError):
            distill_job.submit(store, bad)
    assert store.jobs() == []


@pytest.mark.parametrize("args,message", [
    (["--lr", "-0.1"], "lr must be"),
    (["--from-steps", "4", "--to-steps", "8"], "to_steps"),
    (["--from-steps", "48", "--to-steps", "4"], "power of two"),
    (["--teacher", "no-such-teacher"], "teacher: no model named"),
    (["--init", "no-such-model"], "init: no model named"),
    (["--lora-rank", "0"], "lora rank"),
])
def test_cli_refuses_bad_recipes_with_one_line(args, message, tmp_path, capsys):
    assert cli.main(["distill", "progressive", "--name", "bad", *args, "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert Store(tmp_path / "d").jobs() == []


# -- the runner knows no kind ----------------------------------------------------------------------

def test_a_new_kind_runs_through_the_runner_unchanged(store):
    """A body of a kind the runner has never heard of: progress, the models it names, then success;
    a body that stops on a cancel is canceled, one that raises has failed with the error's first line."""
    def body(ctx: jobs.Context) -> list[str]:
        for part in range(2):
            ctx.report(part, 3, 3, loss=0.5)
            ctx.part_done(part, [f"m{part}"])
        return ["m0", "m1"]

    job_id = jobs.submit(store, "demo", {"x": 1}, name="m1", label="a demo", parts=2, units=("setting", "image"),
                         start=False)
    assert store.job(job_id)["payload"] == {"x": 1}
    assert jobs.run(store, job_id, body) == 0
    job = store.job(job_id)
    assert job["status"] == "succeeded" and job["models"] == ["m0", "m1"]
    assert jobs.progress(job) == (1.0, "setting 2/2, image 3/3")
    assert [m["loss"] for m in store.job_metrics(job_id)] == [0.5, 0.5]

    def stops(ctx):
        ctx.stop_flag["stop"] = True  # as SIGTERM from `cancel` sets it
        ctx.check_stop()

    def breaks(ctx):
        raise RuntimeError("out of paint\nsecond line")

    for fn, status, code, error in ((stops, "canceled", 0, None), (breaks, "failed", 1, "RuntimeError: out of paint")):
        job_id = jobs.submit(store, "demo", {}, name="m", label="demo", parts=1, start=False)
        assert jobs.run(store, job_id, fn) == code
        assert (store.job(job_id)["status"], store.job(job_id)["error"]) == (status, error)


def test_a_job_running_in_another_process_is_not_run_twice(store):
    """`job-run ID` by hand on a job its own process is running already refuses, body untouched."""
    import subprocess
    import sys

    job_id = jobs.submit(store, "demo", {}, name="m", label="demo", parts=1, start=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "job-run"])
    try:
        store.set_job_status(job_id, "running", only_from=("queued",))
        store.update_job(job_id, pid=other.pid)
        ran = []
        assert jobs.run(store, job_id, lambda ctx: ran.append(1) or []) == 1
        assert ran == [] and store.job(job_id)["status"] == "running"
    finally:
        other.kill()
        other.wait()
    store.update_job(job_id, status="queued", pid=None)
    assert jobs.run(store, job_id, lambda ctx: ["m"]) == 0  # its own run goes ahead


def test_a_jobs_environment_reaches_its_process_alone(store, monkeypatch):
    """An API key given at submit: in the child's environment, not in the app's, not in the database."""
    seen = {}

    class Child:
        pid = 4242

        def __init__(self, cmd, env, **kw):
            seen.update(cmd=cmd, env=env)

    monkeypatch.setattr(jobs.subprocess, "Popen", Child)
    job_id = jobs.submit(store, "demo", {}, name="m", label="demo", parts=1, env={"LAB_VLM_API_KEY": "sk-secret-1"},
                         start=False)
    kept = jobs.job_dir(store, job_id) / jobs.ENV_FILE
    assert kept.stat().st_mode & 0o777 == 0o600
    assert jobs.dispatch(store, gpus=0) == job_id
    assert seen["env"]["LAB_VLM_API_KEY"] == "sk-secret-1" and seen["cmd"][-3:-2] == [str(job_id)]
    assert "LAB_VLM_API_KEY" not in os.environ
    assert not any(b"sk-secret-1" in f.read_bytes() for f in store.root.glob("lab.db*"))


def test_a_job_that_fails_makes_the_command_that_followed_it_exit_1(tmp_path, tiny_model_dir, capsys):
    import shutil

    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    meta = json.loads((broken / "lab.json").read_text())
    meta["config"]["text_width"] *= 2  # whole files that do not fit the model it describes: found only on loading
    (broken / "lab.json").write_text(json.dumps(meta))
    assert cli.main(["distill", "guidance", "--teacher", str(broken), "--name", "never", "--train-steps", "2",
                     "--eval-n", "0", "--data-dir", str(tmp_path / "d")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "failed" and out["models"] == [] and "loading state_dict" in out["error"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB file system (tmpfs), for a disk that fills up; where this machine may not mount
    one the test is skipped (it needs the rights CI and the development machine have)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path) -> None:
    """Write to `path` until the disk holding it is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_fails_the_job_or_leaves_it_interrupted_never_running_and_no_partial_checkpoint(small_disk,
                                                                                                    capsys):
    import torch

    from engine.distill.trainer import _save_checkpoint

    store = Store(small_disk / "lab")
    ckpt = small_disk / "lab" / "jobs" / "ckpt"
    module = torch.nn.Linear(256, 256)
    opt = torch.optim.Adam(module.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def body(ctx: jobs.Context) -> list[str]:
        _save_checkpoint(ckpt, 1, module, ["weight", "bias"], opt, sched, None)  # fits
        ctx.report(0, 1, 2, loss=0.5)
        fill(small_disk / "filler")
        _save_checkpoint(ckpt, 2, module, ["weight", "bias"], opt, sched, None)  # the disk is full
        return ["never"]

    job_id = jobs.submit(store, "demo", {}, name="never", label="fills the disk", parts=1, start=False)
    assert store.claim_next_job()["id"] == job_id  # running, as the dispatcher leaves it
    code = jobs.run(store, job_id, body)
    assert code == 1
    # The last good checkpoint stands and nothing half-written holds space.
    assert json.loads((ckpt / "step.json").read_text()) == {"step": 1}
    assert [p.name for p in ckpt.parent.iterdir()] == ["ckpt"]  # no ckpt.tmp left behind
    # Still full: `jobs` lists it (as failed if that could be written, else interrupted), never running.
    capsys.readouterr()
    assert cli.main(["jobs", "--data-dir", str(small_disk / "lab")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "fills the disk" in line)
    assert row.split()[1] in ("failed", "interrupted"), row
    (small_disk / "filler").unlink()  # space again: the database says so too
    assert cli.main(["jobs", "--data-dir", str(small_disk / "lab")]) == 0
    assert Store(small_disk / "lab").job(job_id)["status"] in ("failed", "interrupted")


def test_a_resumed_job_starts_without_its_last_runs_phase_or_pace(store):
    """A canceled job showed 'canceling' and had a pace: claimed again, it shows neither."""
    job_id = jobs.submit(store, "demo", {}, name="m", label="demo", parts=1, start=False)
    store.set_job_status(job_id, "canceled", phase="canceling", rate=3.0, eta=10.0)
    store.set_job_status(job_id, "queued", only_from=("canceled",), resume=1)
    job = store.claim_next_job()
    assert job["id"] == job_id and (job["phase"], job["rate"], job["eta"]) == (None, None, None)
    assert jobs.progress(job)[1] == "starting: its process is loading"
