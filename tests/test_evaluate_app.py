"""The Evaluate tab: through the app's API (gradio_client) and in headless Chromium, on a tiny
teacher -> student lineage evaluated beforehand."""

import os

import pytest
from gradio_client import Client
from helpers import register_lineage, serve

from app.blocks import build_app
from app.state import Lab
from engine import jobs
from engine.evaluate import runs
from engine.evaluate.config import EvalConfig
from engine.store import Store

CATEGORIES = {"basic", "fine_detail", "text", "faces", "long", "rare"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    """A data directory with tiny-teacher -> tiny-student, both evaluated on 12 golden prompts."""
    root = tmp_path_factory.mktemp("eval-app")
    store = Store(root / "d")
    register_lineage(store, tiny_model_dir, root)
    for model, steps in (("tiny-teacher", 4), ("tiny-student", 2)):
        runs.run(EvalConfig(model=model, steps=steps, limit=12, ref_steps=4, device="cpu"), store)
    return store


@pytest.fixture(scope="module")
def url(evaluated):
    demo = build_app(Lab(evaluated, device="cpu"))
    yield serve(demo)
    demo.close()


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def test_lineage_chart_table_and_worst_prompts(client, evaluated):
    chart, table, _ = client.predict("tiny-student", "embedded", "FID ↓", api_name="/lineage")
    assert chart.count("<polyline") >= 1 and "tiny-teacher" in chart and "tiny-student" in chart
    assert all(f">{c}</text>" in chart for c in CATEGORIES)  # a line (legend entry) per category
    # 12 prompts: FID, adherence and the categories of two prompts each say how little they rest on
    assert "FID rests on 12 images" in chart and "Adherence rests on 12 prompts" in chart
    assert "Categories of fewer than 20 prompts" in chart
    table = table.get("value", table)  # sent with its column widths
    rows = table["data"]
    assert [r[1] for r in rows] == ["tiny-teacher · 4 steps · g 5", "tiny-student · 2 steps · g 5"]
    fid = table["headers"].index("FID ↓")
    assert rows[0][fid] == pytest.approx(0.0, abs=1e-3) and rows[1][fid] > 0
    student_run = evaluated.eval_runs(model="tiny-student")[0]["id"]
    gallery, note = client.predict(str(student_run), api_name="/worst")
    assert len(gallery) == 12  # 2 prompts in each of the 6 categories, all shown at 3 per category
    assert {g["caption"].split(":")[0] for g in gallery} == CATEGORIES
    assert "against **tiny-teacher**" in note and "left: teacher" in note


def test_vlm_estimate_and_a_launched_evaluation(client, evaluated):
    text = client.predict("embedded", None, 12, "http://127.0.0.1:9/v1", "judge-1", 1.0, 4.0, api_name="/vlm_estimate")
    assert "12 calls for 12 images" in text and "$" in text
    msg, _ = client.predict("tiny-student", "embedded", None, 6, 2, 5.0, "none", "off", "", "", "", "", None, None, "",
                            api_name="/evaluate")
    job_id = int(msg.split()[1])
    job = jobs.follow(evaluated, job_id, out=open(os.devnull, "w"), poll=0.2)
    assert job["status"] == "succeeded", jobs.log_path(evaluated, job_id).read_text()
    run = evaluated.eval_runs(job_id=job_id)[0]
    assert run["result"]["n"] == 6 and run["settings"]["steps"] == 2
    with pytest.raises(Exception, match="no evaluation job is queued or running"):
        client.predict(api_name="/evaluate_cancel")


def test_bad_golden_upload_names_the_line(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "a red star", "seed": 1}\n{"prompt": ""}\n')
    with pytest.raises(Exception, match="line 2 of mine.jsonl"):
        client.predict("tiny-student", "embedded", handle_file(str(bad)), 6, 2, 5.0, "none", "off", "", "", "", "",
                       None, None, "", api_name="/evaluate")


def test_the_lineage_chart_in_a_browser(url, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(url)
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_label("Model to evaluate").fill("tiny-student")
    page.keyboard.press("Enter")
    chart = page.locator("svg.lab-lineage-chart")
    chart.wait_for(timeout=120_000)
    labels = chart.locator("text.x-label > tspan:first-child").all_text_contents()
    assert labels == ["tiny-teacher", "tiny-student"], labels
    lines = chart.locator("polyline.series")
    assert lines.count() >= 1 + len(CATEGORIES) - 1  # overall, and categories with two points
    series = {lines.nth(i).get_attribute("data-series") for i in range(lines.count())}
    assert "all prompts" in series
    points = lines.first.get_attribute("points").split()
    assert len(points) == 2
    page.locator("img[src*='/file=']").first.wait_for(timeout=60_000)  # worst prompts beside the teacher's
    page.screenshot(path=str(tmp_path / "evaluate.png"), full_page=True)
    page.close()


def test_table_columns_are_as_wide_as_their_longest_word():
    """No header or number breaks mid-word: each column is as wide as its longest word."""
    import pandas as pd

    from app.state import fitted

    table = fitted(pd.DataFrame({"adherence ↑": [0.7167], "setting": ["embedded-guidance · 50 steps"]}))
    assert table.column_widths == [f"{28 + 10 * len('adherence')}px", f"{28 + 10 * len('embedded-guidance')}px"]
