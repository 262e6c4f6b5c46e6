import pytest

from engine.distill.recipes import LoraSpec, Recipe, order_warning
from engine.distill.run import plan
from engine.errors import UsageError


def recipe(**kw):
    base = dict(technique="guidance+progressive", teacher="embedded", name="s")
    return Recipe(**{**base, **kw})


def test_rounds_halve_the_steps_after_guidance():
    r = recipe(from_steps=64, to_steps=4)
    kinds = [(x["kind"], x.get("teacher_steps"), x.get("student_steps")) for x in r.rounds()]
    assert kinds == [("guidance", None, None), ("progressive", 64, 32), ("progressive", 32, 16),
                     ("progressive", 16, 8), ("progressive", 8, 4)]
    assert [p.model_name for p in plan(r)] == ["s-guidance", "s-r2-32step", "s-r3-16step", "s-r4-8step", "s"]


def test_json_round_trip_with_lora():
    r = recipe(lora=LoraSpec(rank=8, save="adapter"), lr=3e-4)
    assert Recipe.from_json(r.to_json()) == r


@pytest.mark.parametrize("kw,field", [
    (dict(lr=-1e-4), "lr"), (dict(lr=0.0), "lr"),
    (dict(from_steps=4, to_steps=8), "to_steps"),
    (dict(from_steps=12, to_steps=4), "power of two"),
    (dict(lora=LoraSpec(rank=0)), "lora rank"),
    (dict(technique="magic"), "technique"),
    (dict(name="a b"), "name"),
    (dict(guidance_min=9.0, guidance_max=2.0), "guidance_min"),
    (dict(train_steps=0), "train_steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(on_policy=1.5), "on_policy"), (dict(on_policy=-0.1), "on_policy"),
])
def test_bad_recipes_are_refused_naming_the_field(kw, field):
    with pytest.raises(UsageError, match=field):
        recipe(**kw).check()


def test_unknown_recipe_field_is_refused():
    with pytest.raises(UsageError, match="unknown field"):
        Recipe.from_dict({"technique": "guidance", "teacher": "embedded", "name": "x", "steps": 3})


def test_order_warning_only_for_steps_before_guidance():
    assert order_warning("progressive", teacher_guidance_embedded=False)
    assert order_warning("progressive", teacher_guidance_embedded=True) is None
    assert order_warning("guidance+progressive", teacher_guidance_embedded=False) is None
