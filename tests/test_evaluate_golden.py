"""Golden sets: the file format, line-numbered errors, and the shipped embedded set."""

import json
from collections import Counter

import pytest

from engine.errors import UsageError
from engine.evaluate import golden
from engine.prompts import Prompt
from engine.world import CATEGORIES, HEADS


def test_jsonl_and_plain_lines(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"prompt": "a red star", "category": "basic", "seed": 7, "stated": {"shape": "star"}}\n'
                 "\n# a comment\n"
                 '{"text": "a blue circle"}\n')
    gs = golden.load(f)
    assert gs.name == "g" and len(gs.sha) == 16
    assert gs.prompts == (Prompt("a red star", 7, "basic", {"shape": "star"}),
                          Prompt("a blue circle", 1, "all"))
    assert gs.prompts[0].stated == {"shape": "star"}
    plain = tmp_path / "p.txt"
    plain.write_text("a fox\n\na cat on a mat\n")
    assert [(p.text, p.seed, p.category) for p in golden.load(plain).prompts] == [("a fox", 0, "all"),
                                                                                   ("a cat on a mat", 1, "all")]
    assert golden.load(plain).limited(1).prompts == golden.load(plain).prompts[:1]


@pytest.mark.parametrize("lines,message", [
    (['{"prompt": "ok", "seed": 1}', '{"prompt": "a", "seed": "x"}'], "line 2 of g.jsonl: 'seed' must be an integer"),
    (['{"prompt": "ok"}', "", '{"prompt": "a",'], "line 3 of g.jsonl: not valid JSON"),
    (['{"seed": 3}'], "line 1 of g.jsonl: 'prompt' must be non-empty text"),
    (['{"prompt": "a", "seed": -1}'], "'seed' must be an integer in 0..4294967295, got -1"),
    (['{"prompt": "a", "category": 5}'], "line 1 of g.jsonl: 'category'"),
    (['{"prompt": "a", "stated": ["shape"]}'], "line 1 of g.jsonl: 'stated'"),
    (['["a", 1]'], "line 1 of g.jsonl: must be a JSON object"),
    (["", "# only a comment"], "holds no prompts"),
])
def test_bad_files_name_the_line(tmp_path, lines, message):
    f = tmp_path / "g.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        golden.load(f)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(UsageError, match="no file at"):
        golden.load(tmp_path / "nope.jsonl")
    f = tmp_path / "b.jsonl"
    f.write_bytes(b'{"prompt": "a"}\n\xff\xfe\n')
    with pytest.raises(UsageError, match="line 2 of b.jsonl: not UTF-8"):
        golden.load(f)


def test_the_shipped_embedded_set_covers_every_category_with_judgeable_attributes():
    gs = golden.load(golden.DEFAULT_EMBEDDED)
    counts = Counter(p.category for p in gs.prompts)
    assert len(gs.prompts) >= 300 and set(counts) == set(CATEGORIES) and min(counts.values()) >= 50
    for p in gs.prompts:
        assert p.stated, p
        for k, v in p.stated.items():
            assert k == "unordered" or v in HEADS[k], (p, k)
    # interleaved: any limit of at least six keeps every category
    assert {p.category for p in gs.limited(6).prompts} == set(CATEGORIES)
    # the file is what scripts/make_golden.py writes from the shapes world
    lines = golden.DEFAULT_EMBEDDED.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [p.to_json() for p in golden.from_world(360, 1)]
