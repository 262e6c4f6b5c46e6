import json

import pytest
from PIL import Image

from conftest import run_cli

FIELDS = {"nfe", "seconds", "peak_mem_mb", "steps", "guidance", "seed", "model", "skipped"}


def test_generate_writes_image_and_json(tmp_path, data_dir):
    out = tmp_path / "img.png"
    r = run_cli("generate", "--model", "embedded", "--prompt", "a red circle", "--steps", "3", "--guidance", "5",
                "--seed", "0", "--out", str(out), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert FIELDS <= set(rec)
    assert rec["nfe"] == 6 and rec["steps"] == 3 and rec["guidance"] == 5 and rec["model"] == "embedded"
    assert Image.open(out).size == (32, 32)
    assert (data_dir / "lab.db").exists()


def test_generate_without_guidance_is_one_pass_a_step(tmp_path, tiny_model_dir, data_dir):
    r = run_cli("generate", "--model", str(tiny_model_dir), "--prompt", "a star", "--steps", "4", "--guidance", "1",
                "--out", str(tmp_path / "x.png"), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nfe"] == 4


@pytest.mark.parametrize("args,field", [
    (["--steps", "0"], "--steps"),
    (["--steps", "5000"], "--steps"),
    (["--guidance", "nan"], "guidance"),
    (["--guidance", "-1"], "guidance"),
    (["--prompt", ""], "prompt"),
    (["--prompt", "x" * 10000], "prompt"),
    (["--model", "/no/such/model"], "--model"),
    (["--model", "tests"], "--model"),
    (["--height", "64"], "height"),
])
def test_bad_input_is_one_line_exit_2(args, field, tmp_path, data_dir):
    base = {"--prompt": "a red circle", "--steps": "2", "--out": str(tmp_path / "x.png")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = run_cli("generate", *[x for kv in base.items() for x in kv], data_dir=data_dir)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_adherence_prints_overall_and_per_category(tiny_model_dir, data_dir):
    r = run_cli("adherence", "--model", str(tiny_model_dir), "--steps", "2", "--guidance", "3", "--n", "12",
                data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert 0 <= rec["adherence"] <= 1 and rec["n"] == 12
    assert set(rec["by_category"]) == {"basic", "fine_detail", "text", "faces", "long", "rare"}


def test_adherence_rejects_unknown_category(data_dir):
    r = run_cli("adherence", "--category", "portraits", data_dir=data_dir)
    assert r.returncode == 2 and "--category" in r.stderr and "basic" in r.stderr


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_train_teacher_refuses_a_caption_noise_outside_0_1(value, tmp_path, data_dir):
    r = run_cli("train-teacher", "--caption-noise", value, "--steps", "1", "--out", str(tmp_path / "t"),
                data_dir=data_dir)
    assert r.returncode == 2 and "--caption-noise" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


def test_train_teacher_passes_the_flags_given_and_keeps_the_config_defaults(monkeypatch, tmp_path):
    import engine.train_teacher as tt
    from engine.cli import main

    seen = []
    monkeypatch.setattr(tt, "train", lambda cfg, log: seen.append(cfg) or {})
    assert main(["train-teacher"]) == 0
    assert seen[-1] == tt.TeacherTrainConfig()
    assert main(["train-teacher", "--steps", "7", "--caption-noise", "0", "--batch-size", "8", "--lr", "5e-4",
                 "--warmup", "3", "--seed", "1", "--dataset", "50", "--minutes", "2", "--device", "cpu",
                 "--init", "assets/embedded-teacher", "--out", str(tmp_path / "t")]) == 0
    assert seen[-1] == tt.TeacherTrainConfig(steps=7, caption_noise=0.0, batch_size=8, lr=5e-4, warmup=3, seed=1,
                                             dataset=50, minutes=2.0, device="cpu", init="assets/embedded-teacher",
                                             out=str(tmp_path / "t"))
