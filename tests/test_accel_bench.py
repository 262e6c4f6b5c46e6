"""bench (the decision table), decide (the guide from measured rows), sweep, and the generate CLI's
--cache/--fp8, on the tiny random-weight embedded model."""

import json

import pytest

from engine.accel.calibrate import VERSION
from engine.cli import main
from engine.decide.bench import markdown, run
from engine.decide.config import BenchConfig
from engine.decide.guide import Answers, explain, recommend
from engine.errors import UsageError
from engine.families.embedded import EmbeddedFamily
from engine.store import Store

# A stored TeaCache calibration (identity polynomial), so no test pays for a calibration run.
CALIBRATION = {"method": "teacache", "version": VERSION, "coefficients": [1.0, 0.0], "threshold": 0.3}


def calibrated_store(root, model_dir) -> Store:
    store = Store(root)
    store.save_calibration(EmbeddedFamily.load(model_dir).identity(), "teacache", CALIBRATION)
    return store


def test_bench_fills_measured_rows_and_names_missing_students(tiny_model_dir, tmp_path):
    store = calibrated_store(tmp_path / "lab", tiny_model_dir)
    teacher = str(tiny_model_dir)
    cfg = BenchConfig(model=teacher, steps=6, n=4, timing=1, batch_size=4, thresholds=(0.3,), timing_batch=(1, 3),
                      students={"step4": teacher})  # the tiny model itself stands in for a 4-step student
    result = run(cfg, store=store)
    assert store.bench_runs(teacher)[0]["id"] == result["id"]  # the run is stored for the Decide tab
    rows = {r["key"]: r for r in result["rows"]}
    t = rows["teacher"]
    assert t["nfe"] == 12 and t["speedup"] == 1.0 and t["psnr_teacher"] == 100.0 and 0 <= t["adherence"] <= 1
    cached = rows["teacher+teacache@0.3"]
    assert cached["skipped"] > 0 and cached["nfe"] + cached["skipped"] == 12 and "psnr_base" in cached
    assert cached["cache"] == "teacache:0.3"
    fp8 = rows["teacher+fp8w"]
    assert fp8["param_mem_mb"] <= 0.6 * t["param_mem_mb"] and fp8["nfe"] == 12
    assert rows["step4"]["model"] == teacher and rows["step4"]["nfe"] == 8  # 4 steps, CFG
    assert "step4+teacache@0.3" in rows and "missing" not in rows["step4+teacache@0.3"]
    for key in ("guidance", "step8", "both"):
        assert "no student yet" in rows[key]["missing"]
    # latency (one image) and throughput (three at once), both timed in this run
    assert t["speedup_b3"] == 1.0 and rows["step4"]["seconds_b3"] > 0 and "speedup_b3" in rows["step4"]
    table = markdown(result)
    assert "| teacher (6 steps, CFG) |" in table and "no student yet" in table and "1.00×" in table
    assert "s/image (batch 1) | speed-up (batch 1) | s/image (batch 3) | speed-up (batch 3) |" in table


def bench_result(**extra):
    def row(key, seconds, adherence, **kw):
        return {"key": key, "row": key, "model": "m", "seconds": seconds, "speedup": round(2.0 / seconds, 2),
                "adherence": adherence, "nfe": 10, "skipped": 0, "psnr_teacher": 30.0, **kw}
    rows = [row("teacher", 2.0, 0.80), row("teacher+teacache@0.2", 0.8, 0.79), row("teacher+teacache@0.4", 0.5, 0.70),
            row("teacher+fp8w", 2.5, 0.80), row("teacher+fp8c", 1.2, 0.80), row("guidance", 1.0, 0.80),
            row("step4", 0.2, 0.74), {"key": "both", "row": "both", "missing": "no student yet"}]
    return {"device": "cpu (2 cores)", "rows": rows, **extra}


def test_decide_without_retraining_picks_the_cache_row_within_the_quality_budget():
    out = recommend(Answers(can_retrain=False, budget="none", hardware="gpu", max_loss=0.02), bench_result())
    assert out["choice"]["key"] == "teacher+teacache@0.2"  # 0.4 loses 0.10 adherence; fp8c needs FP8 hardware
    # the students exist already (their rows were measured): open without training; a missing one is not
    assert "guidance" in out["open"] and "both" not in out["unmeasured"] and "teacher+fp8c" not in out["open"]
    assert "caching" in explain(out)


def test_decide_with_a_budget_and_a_latency_target_cites_the_measured_student():
    out = recommend(Answers(can_retrain=True, budget="small", hardware="gpu-fp8", latency=1.1, max_loss=0.02),
                    bench_result())
    assert out["choice"]["key"] == "guidance"  # best quality under 1.1 s among open rows
    text = explain(out)
    assert "guidance distillation" in text and "1 s/image" in text
    big = recommend(Answers(budget="large", max_loss=0.1), bench_result())
    assert big["choice"]["key"] == "step4" and "both" in big["unmeasured"]


def test_decide_rejects_bad_answers():
    with pytest.raises(UsageError, match="budget must be one of none, small, large"):
        recommend(Answers(budget="lots"), bench_result())


def test_sweep_renders_a_grid_with_psnr_to_the_reference(tiny_family, memory_store):
    from engine.decide.config import SweepConfig
    from engine.decide.sweep import run_sweep

    cfg = SweepConfig(prompt="a red star", steps=(4, 2), guidance=(3.0, 1.0))
    out = run_sweep(tiny_family, cfg, model_name="tiny", store=memory_store)
    cells = out["cells"]
    assert [(c["steps"], c["guidance"]) for c in cells] == [(4, 3.0), (4, 1.0), (2, 3.0), (2, 1.0)]
    assert cells[0]["psnr_ref"] == 100.0 and cells[3]["psnr_ref"] < 100.0  # the reference is 4 steps, s = 3
    assert [c["nfe"] for c in cells] == [8, 4, 4, 2]
    with pytest.raises(UsageError, match="thresholds need a cache method"):
        SweepConfig(prompt="x", thresholds=(0.1,)).cells()


def test_generate_cli_reports_skipped_passes_and_parameter_memory(tiny_model_dir, tmp_path, data_dir, capsys):
    calibrated_store(data_dir, tiny_model_dir)
    args = ["generate", "--model", str(tiny_model_dir), "--prompt", "a red star", "--steps", "8",
            "--out", str(tmp_path / "x.png")]
    assert main(args) == 0
    p = json.loads(capsys.readouterr().out)
    assert main([*args, "--cache", "teacache", "--fp8", "weights"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert p["skipped"] == 0 and p["cache"] == "none" and p["fp8"] == "off"
    assert f["cache"] == "teacache:0.3" and f["skipped"] > 0 and f["nfe"] + f["skipped"] == 16
    assert f["param_mem_mb"] <= 0.6 * p["param_mem_mb"]
    settings = Store(data_dir).generations(1)[0]["settings"]
    assert settings == {"cache": "teacache:0.3", "fp8": "weights"}


@pytest.mark.parametrize("flags,says", [
    (["--cache", "fbcache"], "fbcache: diffusers' fbcache runs on its transformer classes"),
    (["--fp8", "compute"], "compute capability >= 8.9"),
    (["--cache", "teacache:fast"], "cache threshold must be a number"),
    (["--cache", "deepcache"], "cache must be METHOD[:THRESHOLD]"),
])
def test_generate_cli_refuses_unsupported_combinations(flags, says, tmp_path, tiny_model_dir, data_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "a star", "--steps", "2",
                 "--out", str(tmp_path / "x.png"), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_bench_cli_checks_its_flags_before_any_work(data_dir, capsys):
    assert main(["bench", "--student", "fast=embedded"]) == 2
    assert "student must be ROLE=NAME with ROLE one of guidance, step8, step4, both" in capsys.readouterr().err
    assert main(["bench", "--thresholds", "-1"]) == 2
    assert "thresholds must be a number in 0..100" in capsys.readouterr().err
    assert not (data_dir / "lab.db").exists()  # refused before the store was opened


def test_bench_finds_students_through_the_lineage_their_jobs_recorded(memory_store):
    from engine.decide.bench import candidates, discover
    from engine.distill.recipes import Recipe

    def register(name, parent, technique, rnd, **kw):
        recipe = Recipe(technique=technique, teacher=parent, name=name, **kw)
        memory_store.register_model(name, f"/m/{name}", "embedded", parent=parent, recipe=recipe.to_json(),
                                    round=rnd)

    register("fast-guidance", "embedded", "guidance+progressive", 0, from_steps=16, to_steps=4)
    register("fast-r2-8step", "fast-guidance", "guidance+progressive", 1, from_steps=16, to_steps=4)
    register("fast", "fast-r2-8step", "guidance+progressive", 2, from_steps=16, to_steps=4)
    register("plain", "embedded", "progressive", 1, from_steps=16, to_steps=4)
    register("other", "someone-else", "guidance", 0)
    # a shipped student keeps its row (tests/test_decide_students.py); the registered ones are candidates
    assert discover(memory_store, "embedded") == {"guidance": "embedded-guidance", "both": "embedded-4step",
                                                  "step4": "plain", "dmd1": "embedded-1step"}
    found = candidates(memory_store, "embedded")
    assert [c["name"] for c in found["guidance"]] == ["embedded-guidance", "fast-guidance"]
    assert [c["name"] for c in found["both"]] == ["embedded-4step", "fast"]
    # a consistency student serves the 4- and 2-step rows; a DMD student the row of its own steps
    register("lcm", "embedded", "consistency", 0, student_steps=4)
    register("g4", "embedded", "dmd", 0, student_steps=4)
    found = discover(memory_store, "embedded")
    assert (found["consistency4"], found["consistency2"], found["dmd4"]) == ("lcm", "lcm", "g4")


def test_sweep_cli_prints_the_cells_and_writes_their_images(tiny_model_dir, tmp_path, data_dir, capsys):
    assert main(["sweep", "--model", str(tiny_model_dir), "--prompt", "a star", "--steps", "3", "2",
                 "--guidance", "4", "--out-dir", str(tmp_path)]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert [(c["steps"], c["nfe"]) for c in cells] == [(3, 6), (2, 4)] and cells[0]["psnr_ref"] == 100.0
    assert all((tmp_path / f"cell{i:02d}.png").exists() for i in range(2))
    assert main(["sweep", "--prompt", "a star", "--thresholds", "0.1"]) == 2
    assert "thresholds need a cache method" in capsys.readouterr().err


def test_bench_finds_the_shipped_students_in_a_fresh_data_directory(tmp_path):
    from engine import registry
    from engine.decide.bench import discover

    if "embedded-4step" not in registry.BUILTIN or "embedded-guidance" not in registry.BUILTIN:
        pytest.skip("the shipped students are not in assets/")
    # the 4-step student was step-distilled from the guidance student: it fills the "both" row
    store = Store(tmp_path / "fresh")
    assert discover(store, "embedded") == {"guidance": "embedded-guidance", "both": "embedded-4step",
                                           "dmd1": "embedded-1step"}
    # ... and only there: its conventional name does not make it a steps-only student as well
    from engine.decide.bench import plan
    from engine.families.embedded import EmbeddedFamily

    rows = {r.key: r for r in plan(BenchConfig(), EmbeddedFamily.load(registry.BUILTIN["embedded"]), store,
                                   [0.4], "teacache")}
    assert rows["both"].model == "embedded-4step" and rows["guidance"].model == "embedded-guidance"
    assert rows["step4"].model is None and rows["step8"].model is None and "both+teacache@0.4" in rows
    assert "embedded-progressive-4step" in rows["step4"].missing  # not a name that is taken
    # the shipped DMD2 student has a row of its own, at one step and the guidance its input takes
    assert (rows["dmd1"].model, rows["dmd1"].steps, rows["dmd1"].guidance) == ("embedded-1step", 1, 5.0)
    assert rows["consistency4"].model is None and "distill consistency --steps 4" in rows["consistency4"].missing
