import pytest

from engine.paths import JUDGE_WEIGHTS
from engine.world import judge as J
from engine.world.dataset import render_dataset
from engine.world.train_judge import accuracy


@pytest.fixture(scope="module")
def judge():
    return J.Judge.load(JUDGE_WEIGHTS)


def test_shipped_judge_reads_every_attribute_of_fresh_images(judge):
    images, scenes = render_dataset(1200, seed=424242, distribution="uniform", workers=1)
    acc = accuracy(judge, J.to_tensor(images), scenes)
    assert set(acc) == set(J.HEADS)
    for name, value in acc.items():
        assert value >= 0.98, (name, value)


def test_missed_lists_exactly_the_wrong_attributes():
    pred = {"kind": "object", "shape": "circle", "colour": "red", "position": "left", "background": "white"}
    assert J.missed({"kind": "object", "shape": "circle", "colour": "red"}, pred) == []
    assert J.missed({"kind": "object", "shape": "square", "colour": "red", "position": "right"}, pred) == \
        ["shape", "position"]


def test_unordered_pair_accepts_either_order_but_ordered_does_not():
    pred = {"kind": "pair", "shape_a": "square", "colour_a": "blue", "shape_b": "circle", "colour_b": "red",
            "layout": "horizontal", "background": "white"}
    stated = {"kind": "pair", "shape_a": "circle", "colour_a": "red", "shape_b": "square", "colour_b": "blue"}
    assert J.missed({**stated, "unordered": "1"}, pred) == []
    assert set(J.missed({**stated, "layout": "horizontal"}, pred)) == {"shape_a", "colour_a", "shape_b", "colour_b"}


def test_features_have_the_configured_width(judge):
    images, _ = render_dataset(8, seed=1, workers=1)
    f = J.features(judge, J.to_tensor(images))
    assert f.shape == (8, judge.config.features)
