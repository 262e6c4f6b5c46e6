"""Quality floors of the shipped teacher, measured small enough for CI (the full table is in the README)."""

import pytest

from engine.evaluate.adherence import evaluate, summarize
from engine.families.embedded import EmbeddedFamily
from engine.paths import EMBEDDED_TEACHER, JUDGE_WEIGHTS
from engine.prompts import Prompt
from engine.world import sample_prompts
from engine.world.judge import Judge


@pytest.fixture(scope="module")
def teacher():
    return EmbeddedFamily.load(EMBEDDED_TEACHER)


@pytest.fixture(scope="module")
def judge():
    return Judge.load(JUDGE_WEIGHTS)


def test_summarize_counts_per_category():
    ps = [Prompt("a", 0, "basic"), Prompt("b", 1, "basic"), Prompt("c", 2, "text")]
    out = summarize(ps, [[], ["shape"], []])
    assert out["adherence"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["by_category"] == {"basic": 0.5, "text": 1.0}
    assert out["missed"] == {"shape": 1}


def test_teacher_follows_basic_prompts_with_guidance(teacher, judge):
    prompts = sample_prompts(24, seed=11, category="basic")
    res = evaluate(teacher, judge, prompts, steps=10, guidance=5.0, batch_size=24)
    assert res["adherence"] >= 0.7, res


def test_guidance_improves_adherence(teacher, judge):
    prompts = sample_prompts(40, seed=12, category="fine_detail")
    with_cfg = evaluate(teacher, judge, prompts, steps=10, guidance=5.0, batch_size=40)["adherence"]
    without = evaluate(teacher, judge, prompts, steps=10, guidance=1.0, batch_size=40)["adherence"]
    assert with_cfg > without, (with_cfg, without)
