"""The guide (engine/decide/guide.py) and honest timings (engine/decide/timing.py)."""

import pytest

from engine.decide import timing
from engine.decide.guide import Answers, explain, recommend


def lab_like_bench():
    """Rows as the real bench of the embedded model on a 2-core CPU (the shipped students measured)."""
    def row(key, label, model, seconds, adherence, **kw):
        return {"key": key, "row": label, "model": model, "seconds": seconds, "seconds_lo": seconds * 0.95,
                "seconds_hi": seconds * 1.05, "speedup": round(2.6 / seconds, 2),
                "speedup_lo": round(2.6 / seconds * 0.9, 2), "speedup_hi": round(2.6 / seconds * 1.1, 2),
                "adherence": adherence, "nfe": 100, "skipped": 0, "psnr_teacher": 30.0, **kw}
    missing = lambda key, label: {"key": key, "row": label, "model": None, "missing": "no student yet"}  # noqa: E731
    return {"device": "cpu (2 cores)", "rows": [
        row("teacher", "teacher (50 steps, CFG)", "embedded", 2.6, 0.78),
        row("teacher+teacache@0.3", "teacher + teacache 0.3", "embedded", 1.3, 0.77),
        row("teacher+fp8w", "teacher + FP8 weights", "embedded", 3.1, 0.78),
        row("guidance", "guidance-distilled", "embedded-guidance", 1.3, 0.77, chosen="shipped with the lab"),
        missing("step8", "step-distilled, 8 steps"), missing("step4", "step-distilled, 4 steps"),
        row("both", "guidance + step-distilled, 4 steps", "embedded-4step", 0.11, 0.76,
            chosen="shipped with the lab"),
        missing("consistency4", "consistency, 4 steps"),
        row("dmd1", "DMD2, 1 step", "embedded-1step", 0.03, 0.70, chosen="shipped with the lab")]}


def test_an_existing_step_student_is_open_to_a_small_budget_and_meets_the_target():
    answers = Answers(can_retrain=True, budget="small", hardware="cpu", latency=0.5, max_loss=0.05)
    out = recommend(answers, lab_like_bench())
    assert out["choice"]["model"] == "embedded-4step"  # the only row within 0.05 adherence under 0.5 s
    assert "both" in out["open"] and "step4" not in out["unmeasured"]  # a student to train needs a large budget
    text = explain(out)
    assert ("you can retrain with a small budget and need 0.5 s per image on a CPU, giving up at most 0.05 "
            "adherence: guidance + step-distilled, 4 steps (`embedded-4step`) meets it at 0.11 s") in text
    assert "needs no training budget" in text and "shipped with the lab" in text


def test_without_training_the_existing_students_stay_open_and_a_missed_target_is_explained():
    out = recommend(Answers(can_retrain=False, budget="none", hardware="cpu", latency=0.05, max_loss=0.05),
                    lab_like_bench())
    assert out["choice"]["model"] == "embedded-4step"  # fastest within quality; none within it meets 0.05 s
    text = explain(out)
    assert "nothing open meets 0.05 s per image within the quality budget" in text
    assert "DMD2, 1 step (`embedded-1step`) meets 0.05 s (0.03 s) but gives up 0.080 adherence" in text


def test_a_speed_up_whose_interval_holds_one_is_said_to_be_no_speed_up():
    assert timing.describe(1.1, 0.9, 1.3) == "1.10× (0.90–1.30, not distinguishable from 1×)"
    assert timing.describe(1.1, 0.9, 1.3, short=True) == "1.10× (0.90–1.30) ≈ 1×"
    assert timing.describe(3.2, 2.9, 3.5) == "3.20× (2.90–3.50)" and timing.describe(1.0, 1.0, 1.0) == "1.00×"
    bench = lab_like_bench()
    bench["rows"] = bench["rows"][:3]  # the teacher, cached and in FP8
    cached = bench["rows"][1]
    cached.update(seconds=2.4, speedup=1.08, speedup_lo=0.92, speedup_hi=1.25)
    text = explain(recommend(Answers(can_retrain=False, budget="none", hardware="gpu"), bench))
    assert "1.08× (0.92–1.25, not distinguishable from 1×)" in text


def test_the_median_interval_is_the_order_statistic_one():
    assert timing.median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)  # under six repeats: the range
    xs = [float(x) for x in range(1, 11)]  # n = 10: (x(2), x(9)) covers 97.9%, (x(3), x(8)) only 89%
    assert timing.median_interval(xs) == (5.5, 2.0, 9.0)
    up, lo, hi = timing.paired_speedup([2.0, 2.2, 1.8], [1.0, 1.0, 1.0])
    assert (up, lo, hi) == (2.0, 1.8, 2.2)
    up, lo, hi = timing.speedup([2.0, 2.2, 1.8], [0.9, 1.0, 1.1])
    assert up == pytest.approx(2.0) and lo == pytest.approx(1.8 / 1.1) and hi == pytest.approx(2.2 / 0.9)
