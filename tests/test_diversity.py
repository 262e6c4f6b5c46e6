"""Diversity over seeds (DESIGN §12): by hand on judge readings, and on the shipped teacher against a
sampler that ignores its seed."""

import math

import pytest

from engine.evaluate.diversity import (
    bootstrap_interval,
    evaluate,
    feature_diversity,
    normalised_entropy,
    prompt_diversity,
)
from engine.prompts import Prompt


def test_normalised_entropy_by_hand():
    assert normalised_entropy(["a"] * 8, 8, 5) == 0.0
    assert normalised_entropy(list("abcde") + ["a", "b", "c"], 8, 5) == pytest.approx(
        -(3 * 2 / 8 * math.log(2 / 8) + 2 * 1 / 8 * math.log(1 / 8)) / math.log(5))
    assert normalised_entropy(["x", "y"] * 4, 8, 2) == pytest.approx(1.0)


def test_only_the_unstated_attributes_of_the_prompts_kind_count():
    reading = {"kind": "digit", "background": "white", "colour": "red", "digit": "3", "shape": "star"}
    readings = [reading, {**reading, "background": "black"}, reading, {**reading, "background": "black"}]
    d = prompt_diversity(Prompt("the digit 3 in red", stated={"kind": "digit", "digit": "3", "colour": "red"}),
                         readings)
    # shape is no digit's attribute; digit and colour are stated; two backgrounds twice each in four
    # draws: log 2 of the log 4 that four draws can reach at most
    assert d == {"background": pytest.approx(0.5)}


def test_feature_diversity_and_interval():
    import torch

    same = torch.ones(4, 8)
    assert feature_diversity(same) == pytest.approx(0.0)
    assert feature_diversity(torch.eye(4)) == pytest.approx(1.0)
    lo, hi = bootstrap_interval([0.2, 0.4, 0.6, 0.8] * 10)
    assert lo < 0.5 < hi


def test_the_teacher_is_diverse_and_a_sampler_that_ignores_its_seed_is_not():
    """The same code path, with every one of a prompt's K seeds made the same: identical images,
    diversity 0; the shipped teacher with its K seeds: well above."""
    from engine import registry
    from engine.world import sample_prompts

    teacher = registry.load("embedded", device="cpu")
    prompts = sample_prompts(8, seed=3)
    kw = dict(steps=8, guidance=5.0, k=6)
    collapsed = evaluate(teacher, teacher.judge(), prompts, seeds=lambda p, j: p.seed, **kw)
    diverse = evaluate(teacher, teacher.judge(), prompts, **kw)
    assert collapsed["diversity"] == 0.0 and collapsed["n"] > 0
    assert diverse["diversity"] > 0.3, diverse
    assert diverse["interval"][0] > collapsed["diversity"]
