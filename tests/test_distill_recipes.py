import pytest

from engine.distill.recipes import LoraSpec, Recipe, from_inputs, order_warning
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
        Recipe.from_json({"technique": "guidance", "teacher": "embedded", "name": "x", "steps": 3})
    # a field older recipes carry, which nothing reads, is let through
    assert Recipe.from_json({"technique": "guidance", "teacher": "embedded", "name": "x", "guidance": 5.0}).name == "x"


def test_the_form_and_the_command_line_build_recipes_through_one_mapping():
    r = from_inputs({"technique": "both", "teacher": "embedded", "name": " s ", "train_steps": 300.0, "lr": "1e-4",
                     "ema": 0, "init": "", "on_policy": None, "lora": True, "lora_rank": 4.0, "lora_save": "adapter"})
    assert r == Recipe(technique="guidance+progressive", teacher="embedded", name="s", train_steps=300, lr=1e-4,
                       ema=None, lora=LoraSpec(rank=4, save="adapter"))
    assert from_inputs({"technique": "guidance", "teacher": "embedded", "name": "s", "lora": False,
                        "lora_rank": 8}).lora is None  # the form's rank slider, with the LoRA box unticked
    assert from_inputs({"technique": "guidance", "teacher": "t", "name": "s", "lora_rank": 2}).lora.rank == 2  # CLI
    with pytest.raises(UsageError, match="train_steps must be a whole number"):
        from_inputs({"technique": "guidance", "teacher": "t", "name": "s", "train_steps": 2.5})
    with pytest.raises(UsageError, match="lr must be a number"):
        from_inputs({"technique": "guidance", "teacher": "t", "name": "s", "lr": "fast"})


def test_order_warning_only_for_steps_before_guidance():
    assert order_warning("progressive", teacher_guidance_embedded=False)
    assert order_warning("progressive", teacher_guidance_embedded=True) is None
    assert order_warning("guidance+progressive", teacher_guidance_embedded=False) is None
