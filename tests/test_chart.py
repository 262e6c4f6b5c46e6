import re

import pytest

from app.chart import label_box, place_labels, scatter


def _overlap(a, b):
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_labels_of_coinciding_points_do_not_overlap():
    # a bench often has rows at the same quality and nearly the same speed (FP8 weights, a cache)
    at = [(100.0, 80.0), (101.0, 80.0), (102.0, 80.0), (100.0, 81.0), (300.0, 200.0)]
    labels = ["teacher (50 steps, CFG)", "teacher + FP8 weights", "guidance-distilled",
              "teacher + teacache 0.5", "guidance + step-distilled, 4 steps"]
    boxes = [label_box(x, y, lbl) for (x, y), lbl in zip(place_labels(at, labels), labels)]
    assert all(not _overlap(boxes[i], boxes[j]) for i in range(len(boxes)) for j in range(i))
    # a label with room beside its point stays next to it
    assert place_labels([(10.0, 50.0)], ["alone"]) == [(17.0, 42.0)]


def test_scatter_names_every_point_once():
    svg = scatter([(1.0, 0.8, "teacher"), (3.3, 0.8, "teacher + teacache"), (None, 0.5, "unmeasured")],
                  "speed-up", "adherence")
    assert svg.count("<circle") == 2
    assert re.findall(r">(teacher[^<]*)</text>", svg) == ["teacher", "teacher + teacache"]


def test_nice_ticks_are_round_numbers_inside_the_range():
    from app.chart import nice_ticks

    assert nice_ticks(1, 80) == [20, 40, 60, 80]
    assert nice_ticks(-0.0558, 1.72) == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert nice_ticks(3, 3) == [3]


def test_a_long_curve_is_drawn_from_a_few_hundred_points_ending_at_the_last():
    from app.chart import MAX_POINTS, curves

    svg = curves({"round 1": [(x, 1.0 / x) for x in range(1, 20_001)]}, "step", "loss")
    points = re.search(r'class="series"[^>]*points="([^"]+)"', svg).group(1).split()
    assert len(points) <= MAX_POINTS + 1
    assert float(points[-1].split(",")[0]) == max(float(p.split(",")[0]) for p in points)
