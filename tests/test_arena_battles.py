"""Preparing battles through the sampler the Compare tab uses, pairing raters with the least-voted
comparisons, prompt sources, settings, the leaderboard's teacher/student rows, and the CLI."""

import json
import random

import numpy as np
import pytest
from arena_load import seed_battles
from helpers import cast
from PIL import Image

from engine.arena import battles, leaderboard
from engine.arena import settings as S
from engine.errors import UsageError
from engine.families.embedded import EmbeddedFamily
from engine.generate import run
from engine.prompts import Prompt
from engine.request import Request
from engine.sampling import sample
from engine.store import Store

TEACHER = {"model": "zebra-teacher", "steps": 2, "guidance": 4.0}
STUDENT = {"model": "zebra-student", "steps": 1, "guidance": 1.0}


@pytest.fixture
def lab_store(tmp_path, tiny_model_dir):
    s = Store(tmp_path)
    s.register_model("zebra-teacher", tiny_model_dir, "embedded")
    s.register_model("zebra-student", tiny_model_dir, "embedded", parent="zebra-teacher")
    return s


def test_prepare_makes_every_image_through_the_sampler_once_per_battle(lab_store, tiny_model_dir):
    family = EmbeddedFamily.load(tiny_model_dir)
    prompts = battles.world_prompts(3, seed=1)
    rows = battles.prepare(lab_store, [TEACHER, STUDENT], prompts, battles.PrepareConfig(n=3, batch_size=2),
                           load=lambda name: family)
    assert len(rows) == 3 == len(lab_store.battles())
    assert {r["category"] for r in rows} == {p.category for p in prompts}
    assert len({r["token"] for r in rows}) == 3 and all(len(r["token"]) >= 16 for r in rows)
    b = rows[0]
    assert b["a_setting"] == S.key(S.normalize(TEACHER)) and b["b_setting"] == S.key(S.normalize(STUDENT))
    # the stored image is what one Compare-tab generation of the same prompt and seed gives
    image, _ = run(family, Request(b["prompt"], TEACHER["steps"], TEACHER["guidance"], b["seed"]), model_name="t")
    stored = Image.open(lab_store.root / "arena" / b["a_image"])
    assert np.abs(np.asarray(stored, int) - np.asarray(image, int)).max() <= 1
    # opaque file names: nothing of the model or settings
    assert all("zebra" not in r["a_image"] + r["b_image"] and len(r["a_image"]) == 28 for r in rows)
    # a second batch on the same prompts draws its own images, from seeds of its own: no file and no
    # seed is shared between two battles, so one battle's reveal tells nothing of another's
    again = battles.prepare(lab_store, [TEACHER, STUDENT], prompts, battles.PrepareConfig(n=3),
                            load=lambda name: family)
    files = [f for r in rows + again for f in (r["a_image"], r["b_image"])]
    assert len(set(files)) == len(files) == 12 and len({r["seed"] for r in rows + again}) == 6


def test_prepare_refuses_bad_settings_before_generating(lab_store):
    prompts = battles.typed_prompts(["a red star"])
    never = lambda name: pytest.fail("nothing may load")  # noqa: E731
    for settings, message in [([TEACHER], "at least two settings"),
                              ([TEACHER, dict(TEACHER)], "identical"),
                              ([TEACHER, {"model": "nope"}], "model 'nope' is not known"),
                              ([TEACHER, {**STUDENT, "steps": 0}], "steps must be an integer in 1..1000"),
                              ([TEACHER, {**STUDENT, "guidance": float("nan")}], "guidance must be a number")]:
        with pytest.raises(UsageError, match=message):
            battles.prepare(lab_store, settings, prompts, battles.PrepareConfig(n=1), load=never)
    with pytest.raises(UsageError, match="pairs must be"):
        battles.prepare(lab_store, [TEACHER, STUDENT], prompts, battles.PrepareConfig(n=1, pairs="some"), load=never)
    assert lab_store.battles() == []


def test_a_setting_key_generation_does_not_know_is_refused_before_anything_runs(lab_store):
    never = lambda name: pytest.fail("nothing may load")  # noqa: E731
    with pytest.raises(UsageError, match="shimmer is not a generation option here; allowed: model, steps"):
        battles.prepare(lab_store, [TEACHER, {**STUDENT, "shimmer": 3}], battles.typed_prompts(["a"]),
                        battles.PrepareConfig(n=1), load=never)
    with pytest.raises(UsageError, match="width must be an integer"):
        battles.prepare(lab_store, [TEACHER, {**STUDENT, "width": 3}], battles.typed_prompts(["a"]),
                        battles.PrepareConfig(n=1), load=never)
    assert lab_store.battles() == []


def test_plan_gives_every_comparison_every_category_and_the_least_covered_first():
    keys = ["T", "A", "B"]
    prompts = battles.typed_prompts(["p1", "p2"])  # one category ("typed")
    out = battles.plan(keys, prompts, battles.PrepareConfig(n=4), counts={("T", "A"): 3})
    assert [(a, b) for a, b, _ in out] == [("T", "B"), ("T", "A"), ("T", "B"), ("T", "A")]  # B first: less covered
    assert [p.text for *_, p in out] == ["p1", "p2", "p1", "p2"]
    # world prompts cycle through six categories: taking turns per battle would give each comparison
    # only every other category (and the category would name the opponent); per category it gets all
    world = battles.world_prompts(24, seed=3)
    out = battles.plan(keys, world, battles.PrepareConfig(n=24), counts={})
    for pair in (("T", "A"), ("T", "B")):
        assert {p.category for a, b, p in out if (a, b) == pair} == {p.category for p in world}
    later = battles.plan(keys, world[:6], battles.PrepareConfig(n=6), counts={},
                         category_counts={("T", "A", c): 1 for c in {p.category for p in world}})
    assert {(a, b) for a, b, _ in later} == {("T", "B")}  # the comparison short of every category catches up
    every = battles.plan(keys, prompts, battles.PrepareConfig(n=3, pairs="all"), counts={})
    assert sorted((a, b) for a, b, _ in every) == [("A", "B"), ("T", "A"), ("T", "B")]


def test_next_battle_prefers_the_comparison_and_battle_with_fewest_votes(tmp_path):
    store = Store(tmp_path)
    rows = seed_battles(store, 6)  # alternately teacher vs 8 steps, teacher vs guidance 1
    pair = lambda b: battles.pair_of(b["a_setting"], b["b_setting"])  # noqa: E731
    busy = pair(rows[0])
    for b in rows:
        if pair(b) == busy:
            cast(store, b, "early", "left")
    seen = []
    for _ in range(3):
        b = battles.next_battle(store, "newcomer")
        assert pair(b) != busy  # the comparison nobody has voted on comes first
        seen.append(b["id"])
        cast(store, b, "newcomer", "tie")
    assert len(set(seen)) == 3
    rest = [battles.next_battle(store, "newcomer")["id"]]
    cast(store, store.battle(rest[0]), "newcomer", "tie")
    assert pair(store.battle(rest[0])) == busy
    while (b := battles.next_battle(store, "newcomer")) is not None:
        cast(store, b, "newcomer", "left")
    assert store.rater_progress("newcomer") == (6, 6)  # never the same battle twice


def test_golden_and_typed_prompts(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"prompt": "a red star", "seed": 7, "category": "basic"}\n\n{"text": "two faces", "seed": 2}\n')
    prompts = [Prompt("a red star", 7, "basic"), Prompt("two faces", 2)]
    assert battles.prompt_source("golden", golden_file=f) == (prompts, f.stem)
    f.write_text('{"prompt": "ok", "seed": 1}\n{"seed": 3}\n')
    with pytest.raises(UsageError, match="line 2 of g.jsonl: 'prompt' must be non-empty text"):
        battles.golden_prompts(f)
    f.write_text("a blue circle\na green cross\n")
    assert [(p.text, p.seed) for p in battles.golden_prompts(f)[0]] == [("a blue circle", 0), ("a green cross", 1)]
    with pytest.raises(UsageError, match="no file"):
        battles.golden_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(UsageError, match="at least one prompt"):
        battles.typed_prompts(["", "  "])
    assert [p.seed for p in battles.typed_prompts(["a", "b"], seed=5)] == [5, 6]
    typed, source = battles.prompt_source("typed", typed=["a star"], seed=2)
    assert (typed, source) == ([Prompt("a star", 2, "typed")], "admin")
    world, source = battles.prompt_source("world", n=6, category="faces")
    assert source == "world" and len(world) == 6 and {p.category for p in world} == {"faces"}
    with pytest.raises(UsageError, match="source must be one of world, typed, golden"):
        battles.prompt_source("twitter")


def test_settings_parse_normalise_label_and_teacher():
    s = S.normalize(S.parse("embedded,steps=8,cache=teacache:0.1,fp8=weights"), ["embedded"])
    assert s == {"model": "embedded", "steps": 8, "guidance": 5.0, "cache": "teacache:0.1", "fp8": "weights"}
    assert S.key(s) == S.key(dict(reversed(list(s.items()))))  # order does not matter
    assert S.label(S.key(s)) == "embedded · 8 steps · guidance 5 · cache teacache:0.1 · fp8 weights"
    assert S.parse('{"model": "m", "steps": 2}') == {"model": "m", "steps": 2}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        S.parse("embedded,8")
    with pytest.raises(UsageError, match="steps must be an integer"):
        S.normalize({"model": "embedded", "steps": 2.5})
    lineage = {"g": ["embedded"], "p": ["g", "embedded"]}
    full, few = S.normalize({"model": "embedded"}), S.normalize({"model": "embedded", "steps": 8})
    assert S.teacher_of(full, few, lineage) == 0 and S.teacher_of(few, full, lineage) == 1
    assert S.teacher_of(S.normalize({"model": "p", "steps": 4}), full, lineage) == 1
    assert S.teacher_of(S.normalize({"model": "x"}), full, lineage) is None
    no_cfg = S.normalize({"model": "embedded", "guidance": 1})
    assert S.teacher_of(no_cfg, full, lineage) == 1  # same steps, guidance on: the reference
    assert S.teacher_of(no_cfg, few, lineage) is None  # more steps against guidance: neither


def test_leaderboard_student_against_teacher_per_category(lab_store):
    t, s = S.key(S.normalize(TEACHER)), S.key(S.normalize(STUDENT))
    made = []
    for i, cat in enumerate(["faces", "faces", "text", "text"]):
        made.append(lab_store.add_battle(prompt=f"p{i}", seed=i, category=cat, source="test", a_setting=t,
                                         b_setting=s, a_image="x.png", b_image="y.png", left_side="ab"[i % 2]))
    # the student (b) wins both face battles for both raters, loses the text ones
    for rater in ("r1", "r2"):
        for b in made:
            student_left = b["left_side"] == "b"
            won = b["category"] == "faces"
            cast(lab_store, b, rater, "left" if student_left == won else "right")
    board = leaderboard.leaderboard(lab_store, leaderboard.LeaderboardConfig(n_bootstrap=100))
    rows = {r["category"]: r for r in board["student_vs_teacher"]}
    assert rows["all"]["student"].startswith("zebra-student") and rows["all"]["teacher"].startswith("zebra-teacher")
    assert rows["all"]["win_rate"] == pytest.approx(0.5) and rows["all"]["votes"] == 8
    assert rows["faces"]["win_rate"] == 1.0 and rows["text"]["win_rate"] == 0.0
    assert rows["faces"]["lower"] > 0.5
    assert board["agreement"]["agreement"] == 1.0 and board["agreement"]["items"] == 4
    assert board["position_bias"]["left_wins"] == pytest.approx(0.5)
    faces = leaderboard.leaderboard(lab_store, leaderboard.LeaderboardConfig(n_bootstrap=50, category="faces"))
    assert faces["votes"] == 4 and faces["ratings"][0]["setting"].startswith("zebra-student")
    assert "| rank | setting |" in leaderboard.markdown(board)


def cli(capsys, monkeypatch, data_dir, *args):
    """`python -m engine ARGS` in this process (faster than a subprocess): (exit code, stdout, stderr)."""
    from engine.cli import main

    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_leaderboard_of_an_empty_database_and_bad_input(tmp_path, capsys, monkeypatch):
    code, out, _ = cli(capsys, monkeypatch, tmp_path, "arena", "leaderboard")
    assert code == 0 and "| rank | setting | rating |" in out and "0 votes" in out
    code, _, err = cli(capsys, monkeypatch, tmp_path, "arena", "export", "--format", "xml",
                       "--out", str(tmp_path / "v"))
    assert code == 2 and err.strip() == "error: argument --format: invalid choice: 'xml' (choose from 'csv', 'json')"


def test_cli_prepare_leaderboard_export(tmp_path, capsys, monkeypatch):
    code, _, err = cli(capsys, monkeypatch, tmp_path, "arena", "prepare", "--setting", "embedded,steps=2", "--n", "2")
    assert code == 2 and "at least two settings" in err and "Traceback" not in err
    code, out, err = cli(capsys, monkeypatch, tmp_path, "arena", "prepare", "--setting", "embedded,steps=2,guidance=5",
                         "--setting", "embedded,steps=1", "--prompt", "a red star", "--prompt", "a happy face",
                         "--n", "2")
    assert code == 0, err
    assert json.loads(out) == {"battles": 2, "total_battles": 2}
    store = Store(tmp_path)
    for b in store.battles():
        cast(store, b, "alice", "left" if b["left_side"] == "a" else "right")  # the 2-step side wins
    code, out, _ = cli(capsys, monkeypatch, tmp_path, "arena", "leaderboard", "--json", "--bootstrap", "50")
    board = json.loads(out)
    assert board["votes"] == 2 and board["ratings"][0]["setting"] == "embedded · 2 steps · guidance 5"
    code, out, _ = cli(capsys, monkeypatch, tmp_path, "arena", "export", "--format", "json", "--out",
                       str(tmp_path / "v.json"))
    assert code == 0 and json.loads(out)["votes"] == 2
    assert [v["rater"] for v in json.loads((tmp_path / "v.json").read_text())] == ["alice", "alice"]


def test_a_rater_who_knows_the_code_the_prompt_and_the_weights_cannot_tell_the_sides(lab_store, tiny_model_dir,
                                                                                      monkeypatch):
    """The attacks that once named the sides: replaying the old public left-side draw, and
    re-rendering the reference setting at the prompt's public seed to find the side it matches. Over
    60 battles neither does better than chance (within the binomial 95% interval of 50%), and no
    side is the reference's image pixel for pixel. The cryptographic source is replaced by a fixed
    stand-in, unknown to the attacks, so that the test gives the same answer every run (a draw
    from the true source lands outside a 95% interval one run in twenty, as a coin does)."""
    monkeypatch.setattr(battles, "_random", random.Random(7))
    family = EmbeddedFamily.load(tiny_model_dir)
    prompts = battles.world_prompts(60, seed=4)
    rows = battles.prepare(lab_store, [TEACHER, STUDENT], prompts, battles.PrepareConfig(n=60, batch_size=30),
                           load=lambda name: family)
    teacher = S.key(S.normalize(TEACHER))
    truth = ["left" if (b["a_setting"] if b["left_side"] == "a" else b["b_setting"]) == teacher else "right"
             for b in rows]
    old_rng = random.Random("arena-left-0-0")  # how the left side was drawn before: from public inputs
    replayed = ["left" if old_rng.choice("ab") == "a" else "right" for _ in rows]
    public = {p.text: p.seed for p in prompts}
    renders, _ = sample(family, [b["prompt"] for b in rows], steps=TEACHER["steps"], guidance=TEACHER["guidance"],
                        seeds=[public[b["prompt"]] for b in rows], height=32, width=32)
    matched, exact = [], 0  # the side that is the reference's image pixel for pixel (else: no clue, "left")
    for b, mine in zip(rows, renders.numpy().astype(int)):
        left, right = (np.asarray(battles.image(lab_store, f), int) for f in battles.files(b))
        exact += int(np.array_equal(left, mine) or np.array_equal(right, mine))
        matched.append("right" if np.array_equal(right, mine) else "left")
    lo, hi = 60 * 0.5 - 1.96 * (60 * 0.25) ** 0.5, 60 * 0.5 + 1.96 * (60 * 0.25) ** 0.5  # about 22..38 of 60
    for guesses in (replayed, matched):
        hits = sum(g == t for g, t in zip(guesses, truth))
        assert lo <= hits <= hi, hits
    assert exact == 0 and all(b["seed"] != public[b["prompt"]] for b in rows)  # none at its public seed
