"""Data parallelism through accelerate: a job created with `distill --queue` and run under
`accelerate launch --num_processes 2` (CPU, gloo; the cluster path: the user's own launcher runs
`engine job-run`) trains the student to the weights one process reaches with the doubled batch;
only the main process writes, and the job records how many processes ran it and where."""

import os
import subprocess
import sys

import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

from engine.jobs import job_dir
from engine.store import Store


def queue(data_dir, teacher, batch: int) -> int:
    done = run_cli("distill", "guidance", "--teacher", str(teacher), "--name", "s", "--train-steps", "3",
                   "--checkpoint-every", "2", "--batch-size", str(batch), "--eval-n", "0", "--warmup", "0",
                   "--lr", "1e-3", "--teacher-steps", "4", "--ema", "0", "--queue", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert "accelerate launch" in done.stderr and "job-run" in done.stderr
    store = Store(data_dir)
    job = store.jobs()[0]
    assert job["status"] == "queued"  # created, started nowhere
    return job["id"]


def job_run(data_dir, job_id: int, processes: int) -> None:
    # `--cpu` would make accelerate run one process: its torchrun launcher (named for GPUs) starts
    # them, and on a machine without CUDA they form a gloo group.
    launcher = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"] if processes > 1 else []
    done = subprocess.run([sys.executable, *launcher, "-m", "engine", "job-run", str(job_id), "--data-dir",
                           str(data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_two_processes_train_what_one_does_with_the_doubled_batch(tiny_model_dir, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    job_run(two, queue(two, tiny_model_dir, 2), processes=2)
    job_run(one, queue(one, tiny_model_dir, 4), processes=1)
    weights = {}
    for name, data in (("two", two), ("one", one)):
        store = Store(data)
        job = store.jobs()[0]
        assert job["status"] == "succeeded" and job["models"] == ["s"]
        assert job["processes"] == (2 if name == "two" else 1) and job["host"]
        assert [m["step"] for m in store.job_metrics(job["id"])] == [1, 3]  # written once, by the main process
        weights[name] = load_file(job_dir(store, job["id"]) / "round0" / "trainable.safetensors")  # step 2
    assert weights["two"].keys() == weights["one"].keys()
    first = load_file(next((tiny_model_dir / "unet").glob("*.safetensors")))
    start = {k: first[k].float() if k in first else torch.zeros_like(w) for k, w in weights["one"].items()}
    one = torch.cat([(weights["one"][k] - start[k]).flatten() for k in start])  # what training changed
    two = torch.cat([(weights["two"][k] - start[k]).flatten() for k in start])
    assert one.norm() > 0.1  # trained, not the teacher's weights
    # The same updates, to float tolerance: Adam's first steps move each weight by about the learning
    # rate times the sign of its gradient, so the few weights whose gradient is ~0 (where the two
    # summation orders round apart) may step apart; every other weight agrees.
    assert (two - one).norm() / one.norm() < 1e-2
    assert ((two - one).abs() > 1e-5).float().mean() < 1e-2
    assert (two - one).abs().max() < 2e-3  # at most two steps of the learning rate


def test_a_job_launched_with_an_accelerate_config_file(tiny_model_dir, tmp_path):
    """`distill --accelerate-config FILE`: the job's process is `accelerate launch --config_file FILE`,
    as given (here two processes on this CPU), and it records the processes that ran it."""
    config = tmp_path / "two.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\n"
                      "num_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\ndynamo_config: {}\n"
                      "use_cpu: false\n")
    done = run_cli("distill", "guidance", "--teacher", str(tiny_model_dir), "--name", "s", "--train-steps", "2",
                   "--batch-size", "2", "--eval-n", "0", "--warmup", "0", "--teacher-steps", "4", "--ema", "0",
                   "--accelerate-config", str(config), data_dir=tmp_path / "lab")
    assert done.returncode == 0, done.stderr[-2000:]
    job = Store(tmp_path / "lab").jobs()[0]
    assert job["status"] == "succeeded" and job["processes"] == 2 and job["launch_config"] == str(config)
    bad = run_cli("distill", "guidance", "--teacher", str(tiny_model_dir), "--name", "t",
                  "--accelerate-config", str(tmp_path / "nope.yaml"), data_dir=tmp_path / "lab")
    assert bad.returncode == 2 and "--accelerate-config must be an accelerate config file" in bad.stderr
