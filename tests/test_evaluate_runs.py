"""Evaluation runs: the teacher against itself and at two steps (the CLI, embedded domain), a real
family scored with tiny random networks, the image cache, the lineage, and background jobs."""

import json
import os
import signal
import threading
import time

import pytest
from evaluate_fixtures import TinyFeatures, save_tiny_clip
from helpers import register_lineage

from engine import jobs, registry
from engine.cli import main
from engine.evaluate import golden, report, runs
from engine.evaluate import job as eval_job
from engine.evaluate.config import EvalConfig
from engine.prompts import Prompt
from engine.store import Store


def cli_json(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_teacher_against_itself_and_at_two_steps(tmp_path, capsys):
    """The reference is the teacher at 16 steps here (50 by default) to keep the suite fast."""
    data = str(tmp_path / "d")
    same = cli_json(capsys, "eval", "--model", "embedded", "--steps", "16", "--guidance", "5", "--limit", "18",
                    "--ref-steps", "16", "--data-dir", data, "--device", "cpu", "--report", str(tmp_path / "same.md"))
    weak = cli_json(capsys, "eval", "--model", "embedded", "--steps", "2", "--guidance", "5", "--limit", "18",
                    "--ref-steps", "16", "--data-dir", data, "--device", "cpu")
    assert same["n"] == weak["n"] == 18
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and same["psnr"] == 100.0 and same["feature_distance"] < 1e-6
    assert same["adherence"] >= 0.7
    assert weak["fid"] > 100 and weak["psnr"] < 25
    assert weak["adherence"] <= same["adherence"] - 0.25
    assert set(same["by_category"]) == {"basic", "fine_detail", "text", "faces", "long", "rare"}
    assert all(c["n"] == 3 and c["fid"] == pytest.approx(0.0, abs=1e-3) for c in same["by_category"].values())
    assert same["clip_score"] is None and "--clip-model" in same["unavailable"]["clip_score"]
    # each image was generated once: the 16-step images served as the teacher's and the candidate's
    store = Store(data)
    assert store.db["eval_images"].count == 36
    assert [r["model"] for r in store.eval_runs()] == ["embedded", "embedded"]
    text = (tmp_path / "same.md").read_text()
    assert "| basic | 3 | 0 |" in text and "## Worst prompts per category" in text


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a red star", "seed": 1}\n{"prompt": "x", "seed": 1.5}\n')
    for argv, message in ((["--golden", str(bad)], "line 2 of bad.jsonl: 'seed' must be an integer"),
                          (["--steps", "0"], "--steps"), (["--cache", "warp"], "cache must be"),
                          (["--vlm-url", "http://127.0.0.1:9/v1"], "vlm model must name")):
        assert main(["eval", "--data-dir", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_vlm_cost_is_shown_before_anything_runs_and_capped(tmp_path, capsys):
    code = main(["eval", "--data-dir", str(tmp_path / "d"), "--limit", "10", "--vlm-url", "http://127.0.0.1:9/v1",
                 "--vlm-model", "m", "--vlm-price-input", "1000", "--vlm-price-output", "1000",
                 "--vlm-max-cost", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "VLM judge: 10 calls for 10 images" in err and "above $0.01" in err
    assert Store(tmp_path / "d").db["eval_images"].count == 0  # refused before generating anything


def test_a_real_family_with_tiny_clip_and_feature_networks(tmp_path, tiny_pipeline):
    store = Store(tmp_path / "d")
    store.register_model("tiny-sd", tiny_pipeline("sd"), "sd")
    g = tmp_path / "g.jsonl"
    golden.write(g, [Prompt("a red fox", 1, "animals"), Prompt("a blue car", 2, "things"),
                     Prompt("a green fox", 3, "animals"), Prompt("a red car", 4, "things")])
    clip_dir = save_tiny_clip(tmp_path / "clip")
    cfg = EvalConfig(model="tiny-sd", golden=str(g), steps=2, guidance=3.0, ref_steps=3, ref_guidance=3.0,
                          clip_model=str(clip_dir), device="cpu", batch_size=4)
    r = runs.run(cfg, store, feature_space=TinyFeatures())
    assert r["settings"]["height"] == 64 and r["n"] == 4 and r["nfe"] == 4
    assert r["fid"] > 0 and r["fid_space"] == "TinyFeatures"
    assert 0 <= r["clip_score"] <= 100 and r["by_category"]["animals"]["clip_score"] is not None
    assert r["psnr"] < 100 and r["feature_distance"] > 0  # CLIP image embeddings
    assert r["adherence"] is None and "embedded domain" in r["unavailable"]["adherence"]
    # no feature network and no Inception weights: FID is unavailable, with the reason
    plain = runs.run(EvalConfig(**{**cfg.__dict__, "clip_model": None}), store)
    assert plain["fid"] is None and "Inception" in plain["unavailable"]["fid"]
    assert plain["clip_score"] is None and plain["feature_distance"] is None
    assert plain["psnr"] == pytest.approx(r["psnr"])  # the same cached images
    assert store.db["eval_images"].count == 8  # 4 reference + 4 candidate, generated once for both runs
    # diversity over seeds of a real model: CLIP image features of each prompt's K images
    assert r["diversity"] is None and "--diversity-k" in r["unavailable"]["diversity"]
    seeds = runs.run(EvalConfig(**{**cfg.__dict__, "diversity_k": 3}), store)
    assert 0 < seeds["diversity"] <= 2 and seeds["by_category"]["things"]["diversity"] is not None
    assert "diversity" not in seeds["unavailable"]
    assert "needs the embedded judge or a CLIP model" in runs.run(
        EvalConfig(**{**cfg.__dict__, "clip_model": None, "diversity_k": 3}), store)["unavailable"]["diversity"]


def test_embedded_diversity_in_a_run_and_its_report(tmp_path, capsys):
    data = str(tmp_path / "d")
    r = cli_json(capsys, "eval", "--model", "embedded", "--steps", "8", "--limit", "12", "--ref-steps", "8",
                 "--diversity-k", "4", "--data-dir", data, "--device", "cpu", "--report", str(tmp_path / "r.md"))
    lo, hi = r["diversity_interval"]
    assert 0 < lo <= r["diversity"] <= hi <= 1 and r["diversity_k"] == 4
    assert "| diversity over seeds ↑ |" in (tmp_path / "r.md").read_text()


def test_lineage_runs_in_a_background_job(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "d")
    register_lineage(store, tiny_model_dir, tmp_path)
    assert registry.lineage(store, "tiny-student") == ["tiny-teacher", "tiny-student"]
    assert runs.recommended(store, "tiny-student") == (2, 5.0)
    plan = runs.lineage_configs(store, EvalConfig(model="tiny-student", fp8="weights", limit=3))
    assert [(c.model, c.steps, c.guidance, c.fp8, c.limit) for c in plan] == [
        ("tiny-teacher", 50, 5.0, "off", 3), ("tiny-student", 2, 5.0, "off", 3), ("tiny-student", 2, 5.0, "weights", 3)]
    base = {"limit": 12, "ref_steps": 4, "device": "cpu"}
    configs = [EvalConfig(model="tiny-teacher", steps=4, **base),
               EvalConfig(model="tiny-student", steps=2, **base)]
    job_id = eval_job.submit(store, configs)
    job = jobs.follow(store, job_id, out=open(os.devnull, "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(store, job_id).read_text()
    assert job["kind"] == "eval" and job["models"] == ["tiny-teacher", "tiny-student"]
    assert jobs.progress(job)[1] == "setting 2/2, image 24/24"
    done = store.eval_runs(job_id=job_id)
    assert sorted(r["model"] for r in done) == ["tiny-student", "tiny-teacher"]
    rows = report.lineage_rows(store, "tiny-student", "embedded")
    assert [(r["position"], r["label"]) for r in rows] == [(0, "tiny-teacher · 4 steps · g 5"),
                                                            (1, "tiny-student · 2 steps · g 5")]
    assert rows[0]["fid"] == pytest.approx(0.0, abs=1e-3) and rows[1]["fid"] > rows[0]["fid"]
    assert set(rows[1]["by_category"]) == {"basic", "fine_detail", "text", "faces", "long", "rare"}
    table = report.lineage_markdown(rows)
    assert table.count("\n") == 3 and "tiny-student · 2 steps" in table


def test_an_evaluation_job_stops_on_a_cancel(tmp_path, tiny_model_dir):
    """The evaluation body under the job runner, in this process: the SIGTERM that `cancel` sends
    arrives after the first images, and the job ends canceled with no run stored. (A job's own
    process receiving it is tested with distillation, tests/test_jobs.py.)"""
    store = Store(tmp_path / "d")
    job_id = eval_job.submit(store, [EvalConfig(model=str(tiny_model_dir), steps=2, ref_steps=20, batch_size=1,
                                                 device="cpu")], start=False)  # 360 prompts: far from done

    def cancel_once_under_way():
        end = time.time() + 240
        while not (store.job(job_id)["step"] or 0) > 0 and time.time() < end:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=cancel_once_under_way).start()
    assert jobs.run(store, job_id, eval_job.run) == 0
    job = store.job(job_id)
    assert job["status"] == "canceled" and 0 < job["step"] < job["total"] and store.eval_runs(job_id=job_id) == []


def test_cli_evaluates_a_lineage_and_prints_its_table(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "d"
    register_lineage(Store(data), tiny_model_dir, tmp_path)
    assert main(["eval", "--model", "tiny-student", "--lineage", "--limit", "6", "--ref-steps", "4",
                 "--data-dir", str(data), "--device", "cpu", "--report", str(tmp_path / "r.md")]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [(r["model"], r["settings"]["steps"]) for r in out] == [("tiny-teacher", 4), ("tiny-student", 2)]
    assert out[0]["fid"] == pytest.approx(0.0, abs=1e-3) and out[1]["psnr"] < 100
    assert (tmp_path / "r.md").read_text().count("# Evaluation: ") == 2
    assert main(["lineage", "--model", "tiny-student", "--data-dir", str(data), "--metric", "psnr"]) == 0
    table = capsys.readouterr().out
    assert "| 0 | tiny-teacher · 4 steps · g 5 | 6 |" in table and "| 1 | tiny-student · 2 steps · g 5 | 6 |" in table
    assert "basic (psnr)" in table


def test_several_processes_share_the_generation(tmp_path, capsys, tiny_model_dir):
    """`accelerate launch --num_processes 2` (CPU, gloo): each process generates a share of the
    golden set, the main process alone prints, and the result is the one process's result."""
    import subprocess
    import sys

    argv = ["eval", "--model", str(tiny_model_dir), "--teacher", str(tiny_model_dir), "--steps", "2",
            "--ref-steps", "4", "--limit", "12", "--batch-size", "4", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "engine", *argv, "--data-dir", str(tmp_path / "two")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # printed once, by the main process
    one = cli_json(capsys, *argv, "--data-dir", str(tmp_path / "one"))
    two = lines[0]
    assert two["n"] == one["n"] == 12
    assert two["adherence"] == pytest.approx(one["adherence"], abs=1 / 12 + 1e-9)
    assert two["psnr"] == pytest.approx(one["psnr"], abs=0.5)
    assert Store(tmp_path / "two").db["eval_images"].count == 24  # every image once, none twice
    assert len(Store(tmp_path / "two").eval_runs()) == 1
