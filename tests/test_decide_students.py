"""Which student each bench row measures (engine/decide/bench.py: candidates, plan): the one picked,
else the shipped one, else the most trained; a throwaway test student never takes a shipped one's row."""

import pytest

from engine import registry
from engine.decide.bench import candidates, discover, markdown, plan
from engine.decide.config import BenchConfig
from engine.distill.recipes import Recipe
from engine.families.embedded import EmbeddedFamily


def register(store, name, parent, technique, rnd, **kw):
    recipe = Recipe(technique=technique, teacher=parent, name=name, **kw)
    store.register_model(name, registry.BUILTIN["embedded"], "embedded", parent=parent, recipe=recipe.to_json(),
                         round=rnd)


@pytest.fixture
def shipped():
    if not {"embedded-guidance", "embedded-4step"} <= set(registry.BUILTIN):
        pytest.skip("the shipped students are not in assets/")


def rows_of(store, **cfg):
    teacher = EmbeddedFamily.load(registry.BUILTIN["embedded"])
    return {r.key: r for r in plan(BenchConfig(**cfg), teacher, store, [0.4], "teacache")}


def test_a_throwaway_student_made_after_the_shipped_one_does_not_replace_it(memory_store, shipped):
    # a 30-step test job, registered after the shipped students, of the same lineage and recipe kinds
    register(memory_store, "quick-guidance", "embedded", "guidance", 0, train_steps=30)
    register(memory_store, "quick-4step", "embedded-guidance", "progressive", 1, from_steps=8, to_steps=4,
             train_steps=30)
    assert [c["name"] for c in candidates(memory_store, "embedded")["guidance"]] == ["embedded-guidance",
                                                                                   "quick-guidance"]
    rows = rows_of(memory_store)
    assert (rows["guidance"].model, rows["guidance"].chosen) == ("embedded-guidance", "shipped with the lab")
    assert (rows["both"].model, rows["both"].chosen) == ("embedded-4step", "shipped with the lab")
    # picked by the user (the Decide tab's pickers, `--student ROLE=NAME`), it is measured, and says so
    picked = rows_of(memory_store, students={"guidance": "quick-guidance"})
    assert (picked["guidance"].model, picked["guidance"].chosen) == ("quick-guidance", "you picked it")


def test_without_a_shipped_student_the_most_trained_one_is_taken_not_the_newest(memory_store):
    register(memory_store, "long-lcm", "embedded", "consistency", 0, student_steps=4, train_steps=2000)
    register(memory_store, "test-lcm", "embedded", "consistency", 0, student_steps=4, train_steps=30)
    assert discover(memory_store, "embedded")["consistency4"] == "long-lcm"
    rows = rows_of(memory_store)
    assert rows["consistency4"].model == "long-lcm"
    assert rows["consistency4"].chosen == "the most trained of 2 (2,000 training steps)"


def test_the_table_names_each_row_s_student_and_why():
    result = {"model": "embedded", "device": "cpu (2 cores)", "config": {"n": 4, "timing": 3, "timing_batch": 1},
              "rows": [{"key": "teacher", "row": "teacher (50 steps, CFG)", "model": "embedded", "nfe": 100,
                        "seconds": 1.0, "seconds_lo": 0.9, "seconds_hi": 1.2, "speedup": 1.0, "speedup_lo": 1.0,
                        "speedup_hi": 1.0},
                       {"key": "both", "row": "guidance + step-distilled, 4 steps", "model": "embedded-4step",
                        "chosen": "shipped with the lab", "nfe": 4, "seconds": 0.11, "seconds_lo": 0.1,
                        "seconds_hi": 0.12, "speedup": 9.1, "speedup_lo": 8.3, "speedup_hi": 10.0}]}
    table = markdown(result)
    assert "| guidance + step-distilled, 4 steps | embedded-4step |" in table
    assert "guidance + step-distilled, 4 steps: `embedded-4step` (shipped with the lab)" in table
    assert "| 9.10× (8.30–10.00) |" in table and "| 1.00× |" in table
