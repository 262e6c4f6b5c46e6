import json
import subprocess
import sys

import pytest
from conftest import ROOT
from PIL import Image

from engine.cli import main

FIELDS = {"nfe", "seconds", "peak_mem_mb", "steps", "guidance", "seed", "model", "skipped"}


def test_generate_writes_image_and_json(tmp_path, data_dir, capsys):
    out = tmp_path / "img.png"
    assert main(["generate", "--model", "embedded", "--prompt", "a red circle", "--steps", "3", "--guidance", "5",
                 "--seed", "0", "--out", str(out)]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIELDS <= set(rec)
    assert rec["nfe"] == 6 and rec["steps"] == 3 and rec["guidance"] == 5 and rec["model"] == "embedded"
    assert Image.open(out).size == (32, 32)
    assert (data_dir / "lab.db").exists()


def test_generate_without_guidance_is_one_pass_a_step(tmp_path, tiny_model_dir, data_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "a star", "--steps", "4", "--guidance", "1",
                 "--out", str(tmp_path / "x.png")]) == 0
    assert json.loads(capsys.readouterr().out)["nfe"] == 4


def test_a_bad_flag_is_refused_before_torch_is_imported():
    """Flags are checked by configs that import nothing heavy: a refusal takes well under a second."""
    bad = [["generate", "--prompt", "x", "--guidance", "nan"], ["distill", "guidance", "--name", "x", "--lr", "0"],
           ["eval", "--ref-guidance", "99"], ["bench", "--student", "fast=x"],
           ["sweep", "--prompt", "x", "--fp8", "on"],
           ["train-teacher", "--caption-noise", "2"], ["arena", "prepare", "--setting", "embedded"],
           ["adherence", "--guidance", "-1"]]
    code = ("import sys; from engine.cli import main; "
            f"codes = [main(a) for a in {bad!r}]; "
            "print(codes, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.split("]")[0] == "[" + ", ".join(["2"] * len(bad)), r.stdout + r.stderr
    assert r.stdout.strip().endswith("False"), r.stdout  # torch was never imported
    assert len(r.stderr.strip().splitlines()) == len(bad)  # one line each


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
def test_bad_input_is_one_line_exit_2(args, field, tmp_path, data_dir, capsys):
    base = {"--prompt": "a red circle", "--steps": "2", "--out": str(tmp_path / "x.png")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    assert main(["generate", *[x for kv in base.items() for x in kv]]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
    assert "Traceback" not in err and out == ""


def test_adherence_prints_overall_and_per_category(tiny_model_dir, data_dir, capsys):
    assert main(["adherence", "--model", str(tiny_model_dir), "--steps", "2", "--guidance", "3", "--n", "12"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert 0 <= rec["adherence"] <= 1 and rec["n"] == 12
    assert set(rec["by_category"]) == {"basic", "fine_detail", "text", "faces", "long", "rare"}


def test_adherence_rejects_unknown_category(data_dir, capsys):
    assert main(["adherence", "--category", "portraits"]) == 2
    err = capsys.readouterr().err
    assert "--category" in err and "basic" in err


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_train_teacher_refuses_a_caption_noise_outside_0_1(value, tmp_path, data_dir, capsys):
    assert main(["train-teacher", "--caption-noise", value, "--steps", "1", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "caption_noise" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


def test_train_teacher_passes_the_flags_given_and_keeps_the_config_defaults(monkeypatch, tmp_path):
    import engine.train_teacher as tt

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


def test_bad_values_that_once_ended_in_tracebacks_are_one_line(tmp_path, data_dir, capsys):
    """Each refused with exit 2 and one line naming what is wrong, before anything is written."""
    nul, binary, empty = tmp_path / "nul.txt", tmp_path / "binary.txt", tmp_path / "empty.txt"
    nul.write_bytes(b"\x00\x00\x00\n")
    empty.write_text("")
    binary.write_bytes(bytes(range(128, 256)))
    for argv, says in [
        (["arena", "prepare", "--setting", "embedded,steps=inf", "--setting", "embedded"], "steps must be an integer"),
        (["eval", "--golden", str(nul), "--limit", "1"], "line 1 of nul.txt: a prompt must be printable text"),
        (["distill", "guidance", "--name", "b", "--prompts", str(binary)], "is not UTF-8 text"),
        (["distill", "guidance", "--name", "b", "--prompts", str(empty)], "has no prompts (one per line)"),
        (["generate", "--prompt", "x", "--device", "tpu", "--out", str(tmp_path / "x.png")],
         "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["calibrate", "--target-psnr", "nan"], "--target-psnr must be a number of dB"),
        (["train-teacher", "--minutes", "nan", "--out", str(tmp_path / "t")], "minutes must be positive"),
        (["bench", "--student", "guidance=NO-SUCH-MODEL"], "--student guidance: no model named or found at"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (data_dir / "jobs").exists() and not (tmp_path / "t").exists()


def test_a_taken_name_is_refused_unless_told_to_replace(tmp_path, data_dir, tiny_pipeline, tiny_model_dir, capsys):
    from engine.store import Store

    assert main(["register", "--name", "mine", "--model", str(tiny_pipeline("sd"))]) == 0
    assert main(["register", "--name", "mine", "--model", str(tiny_pipeline("sdxl"))]) == 2
    assert "'mine' is registered already" in capsys.readouterr().err
    assert Store().model("mine")["family"] == "sd"  # not replaced
    assert main(["register", "--name", "mine", "--model", str(tiny_pipeline("sdxl")), "--replace"]) == 0
    assert Store().model("mine")["family"] == "sdxl"
    capsys.readouterr()
    assert main(["distill", "guidance", "--teacher", str(tiny_model_dir), "--name", "mine", "--detach"]) == 2
    assert "'mine' is registered already" in capsys.readouterr().err and Store().jobs() == []


def test_the_app_refuses_a_port_out_of_range(capsys):
    from app.main import main as app_main

    with pytest.raises(SystemExit) as refused:
        app_main(["--port", "99999"])
    assert refused.value.code == 2 and "--port must be in 1..65535, got 99999" in capsys.readouterr().err


def test_a_data_directory_or_output_the_lab_cannot_use_is_one_line_and_nothing_is_written(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "lab.db").write_bytes(b"this is no database\n")
    odd = tmp_path / "odd"
    (odd / "lab.db").mkdir(parents=True)
    out_dir = tmp_path / "pictures.png"
    out_dir.mkdir()
    for argv, says in [
        (["jobs", "--data-dir", str(a_file)], "data directory: cannot use"),
        (["jobs", "--data-dir", str(garbage)], "cannot be used as the lab's database (file is not a database)"),
        (["arena", "leaderboard", "--data-dir", str(odd)], "cannot be used as the lab's database"),
        (["generate", "--prompt", "x", "--out", str(a_file / "x.png")], "is not a folder"),
        (["generate", "--prompt", "x", "--out", str(out_dir)], "--out must be a .png file"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert (garbage / "lab.db").read_bytes() == b"this is no database\n" and a_file.read_text() == "not a folder"


def test_a_read_only_data_directory_is_read_and_never_written(tmp_path, monkeypatch, capsys):
    """Reads work from it; every write is refused in one line with exit 2, the database untouched.
    (The test marks the folder read-only for the lab through os.access: it runs as any user.)"""
    import gc
    import os

    from engine.store import Store

    d = tmp_path / "lab"
    assert main(["register", "--name", "mine", "--model", "assets/embedded-teacher", "--data-dir", str(d)]) == 0
    gc.collect()  # the commands' connections close, their log is written into the file
    before = (d / "lab.db").read_bytes()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK and str(p).startswith(str(d))
                        else real(p, mode, **kw))
    capsys.readouterr()
    assert main(["jobs", "--data-dir", str(d)]) == 0
    assert main(["arena", "leaderboard", "--data-dir", str(d)]) == 0
    assert Store(d).model("mine")["path"].endswith("assets/embedded-teacher")
    for argv in (["register", "--name", "other", "--model", "assets/embedded-teacher", "--replace"],
                 ["distill", "guidance", "--name", "s", "--detach"],
                 ["arena", "export", "--format", "csv", "--out", str(tmp_path / "v.csv")]):
        code = main([*argv, "--data-dir", str(d)])
        err = capsys.readouterr().err
        if argv[0] == "arena":  # an export only reads
            assert code == 0, err
            continue
        assert code == 2 and "is read-only, so nothing can be recorded" in err and len(err.strip().splitlines()) == 1
    assert (d / "lab.db").read_bytes() == before
    assert main(["jobs", "--data-dir", str(tmp_path / "new")]) == 0  # a writable one beside it is unaffected
