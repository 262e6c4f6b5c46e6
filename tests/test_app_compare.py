"""The Compare tab: timed repeats after a warm-up, the difference view, the history of pairs, and in
Chromium the slider, difference and synced zoom views after one generation."""

import pytest
import torch
from helpers import serve
from PIL import Image

from app.blocks import build_app
from app.compare import difference, generate_pair, history_table, pairs, reopen_pair
from app.state import Lab
from engine.errors import UsageError
from engine.generate import run, run_timed
from engine.measure import PSNR_CAP, difference_image, steady_threads
from engine.request import Request
from engine.store import Store


def quiet(*args, **kwargs):
    """A gr.Progress stand-in for calls outside an event."""


@pytest.fixture
def lab(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "lab-data")
    store.register_model("tiny", tiny_model_dir, "embedded")
    return Lab(store, device="cpu")


def test_timed_repeats_report_the_median_and_spread_after_a_warm_up(tiny_family, tmp_path):
    store = Store(tmp_path / "d")
    req = Request(prompt="a red circle", steps=3, guidance=5.0, seed=7)
    calls = []
    image, record = run_timed(tiny_family, req, repeats=3, warm_up=True, model_name="tiny", store=store,
                              settings={"compare": "Left"}, callback=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 12) for k in range(1, 13)]  # a warm-up and three timed runs of three steps
    each = record["seconds_each"]
    assert len(each) == 3 and record["seconds"] == pytest.approx(sorted(each)[1], abs=1e-4)
    assert record["seconds_min"] == min(each) and record["seconds_max"] == max(each) and record["nfe"] == 6
    (row,) = store.generations()  # one row for the shown image, not one per run
    assert row["seconds"] == record["seconds"] and row["id"] == record["id"]
    assert row["settings"] == {"cache": "none", "fp8": "off", "seconds_min": min(each), "seconds_max": max(each),
                               "repeats": 3, "warm_up": True, "compare": "Left"}
    same, _ = run(tiny_family, req, model_name="tiny")  # the same seed: every run draws the same image
    assert image.tobytes() == same.tobytes()
    _, cold = run_timed(tiny_family, req, repeats=1, warm_up=False, model_name="tiny")
    assert cold["repeats"] == 1 and cold["seconds_each"] == [cold["seconds"]]
    with pytest.raises(UsageError, match="timed repeats must be a whole number in 1..20, got 0"):
        run_timed(tiny_family, req, repeats=0, model_name="tiny")


def test_difference_shows_amplified_pixels_and_the_psnr_between_the_sides():
    a = Image.new("RGB", (8, 8), (100, 100, 100))
    b = a.copy()
    b.putpixel((0, 0), (110, 100, 100))  # MSE = 10^2 / (8 * 8 * 3)
    image, text = difference(a, b)
    expected = 10 * torch.log10(torch.tensor(255.0**2 / (100 / 192))).item()
    assert f"**{expected:.1f} dB**" in text and "largest difference 10/255" in text and "×4" in text
    small = image.resize((8, 8), Image.Resampling.NEAREST)  # shown enlarged by a whole factor
    assert small.getpixel((0, 0)) == (40, 0, 0) and small.getpixel((1, 1)) == (0, 0, 0)
    _, same = difference(a, a)
    assert f"**{PSNR_CAP:.1f} dB** (identical images)" in same
    image, text = difference(a, Image.new("RGB", (16, 16)))
    assert image is None and "differ in size (8×8 and 16×16)" in text
    with pytest.raises(ValueError, match="differ in shape"):
        difference_image(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), torch.zeros(1, 4, 4, 3, dtype=torch.uint8))
    big = difference_image(torch.full((1, 1, 1, 3), 200, dtype=torch.uint8), torch.zeros(1, 1, 1, 3, dtype=torch.uint8))
    assert big.flatten().tolist() == [255, 255, 255]  # clipped, not wrapped around


def test_the_app_runs_torch_on_one_cpu_thread_unless_told_otherwise(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert steady_threads(torch.device("cpu")) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert steady_threads(torch.device("cpu")) == 2  # the user's own setting stands
    finally:
        torch.set_num_threads(before)


def test_a_pair_warms_up_once_per_setting_and_reopens_from_the_history(lab):
    warmed = set()
    args = ("a red circle", 3, "tiny", 2, 5.0, "tiny", 1, 1.0)
    first = generate_pair(lab, *args, repeats=2, warmed=warmed, progress=quiet)
    assert "warm-up ran first" in first[3] and "median of 2:" in first[3] and "NFE **4**" in first[3]
    assert "NFE **1**" in first[4] and "1 CPU thread" in first[4]
    second = generate_pair(lab, *args, repeats=1, warmed=warmed, progress=quiet)
    assert "warm: this setting ran before" in second[3] and "(1 timed run)" in second[3]
    assert second[0].tobytes() == first[0].tobytes()  # same seed, same image
    assert "dB" in second[6] and second[5].size == second[0].size
    assert second[7].count('class="lab-zoom-img"') == 2 and "data:image/png;base64," in second[7]
    assert len(lab.store.generations()) == 4  # one row per side per generation
    (newest_a, newest_b), (oldest_a, oldest_b) = pairs(lab)
    assert newest_b["settings"]["pair"] == newest_a["id"] and newest_b["steps"] == 1 and newest_a["steps"] == 2
    table = history_table(lab)
    assert list(table["pair"]) == [newest_b["id"], oldest_b["id"]]
    assert table.iloc[1]["Left"].startswith("tiny · 2 steps · g 5 · ")
    # reopening the first pair puts back its settings and its images, as generated
    out = reopen_pair(lab, oldest_b["id"])
    assert out[:14] == ("a red circle", 3, "tiny", 2, 5.0, "tiny", 1, 1.0, "none", "", "off", "none", "", "off")
    assert out[14].tobytes() == first[0].tobytes() and out[15].tobytes() == first[1].tobytes()
    assert "median of 2:" in out[17] and out[20] == first[6]
    with pytest.raises(Exception, match="no Compare pair 999"):
        reopen_pair(lab, 999)


def test_reopen_splits_a_cache_into_its_method_and_threshold(lab, monkeypatch):
    import app.compare as compare

    left = {"id": 1, "prompt": "p", "seed": 0, "model": "tiny", "steps": 2, "guidance": 5.0, "nfe": 4,
            "skipped": 1, "seconds": 0.1, "peak_mem_mb": 1.0, "image": "x.png",
            "settings": {"cache": "teacache:0.3", "fp8": "weights"}}
    right = {**left, "id": 2, "settings": {"cache": "none", "fp8": "off", "compare": "Right", "pair": 1}}
    monkeypatch.setattr(compare, "pairs", lambda lab, limit=0: [(left, right)])
    monkeypatch.setattr(compare.Image, "open", lambda path: Image.new("RGB", (4, 4)))
    out = reopen_pair(lab, 2)
    assert out[8:14] == ("teacache", "0.3", "weights", "none", "", "off")
    assert "cache teacache:0.3" in out[17] and "FP8 weights" in out[17] and "**0.10 s**" in out[17]


# -- in Chromium ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    store = Store(tmp_path_factory.mktemp("lab-data"))
    store.register_model("tiny", tiny_model_dir, "embedded")
    demo = build_app(Lab(store, device="cpu"))
    yield serve(demo)
    demo.close()


def transforms(page) -> list[str]:
    return page.locator("#compare-zoom .lab-zoom-img").evaluate_all("els => els.map(e => e.style.transform)")


def scale(transform: str) -> float:
    return float(transform.split("scale(")[1].rstrip(")"))


def test_after_one_generation_the_slider_difference_and_synced_zoom_show(served, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 1200})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("PSNR between the sides").wait_for(timeout=120_000)
    # the slider view is on the page without opening anything
    slider = page.locator("#compare-slider img").first
    slider.wait_for(state="visible", timeout=30_000)
    assert slider.is_visible() and slider.evaluate("el => el.naturalWidth") >= 256
    assert page.locator("#compare-diff img").first.is_visible()
    assert page.get_by_text("median of 3").count() == 2
    # the wheel over one side zooms both by the same amount, about the cursor
    imgs = page.locator("#compare-zoom .lab-zoom-img")
    assert imgs.count() == 2
    pane = page.locator("#compare-zoom .lab-zoom-pane").first
    pane.scroll_into_view_if_needed()
    box = pane.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    page.mouse.wheel(0, -400)
    page.wait_for_function("document.querySelector('#compare-zoom .lab-zoom-img').style.transform.includes('scale')")
    zoomed = transforms(page)
    assert zoomed[0] == zoomed[1] and scale(zoomed[0]) > 1.5
    # a drag over the other side pans both by the same offset
    right = page.locator("#compare-zoom .lab-zoom-pane").nth(1).bounding_box()
    x, y = right["x"] + right["width"] / 2, right["y"] + right["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=4)
    page.mouse.up()
    panned = transforms(page)
    assert panned[0] == panned[1] and panned != zoomed and scale(panned[0]) == scale(zoomed[0])
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    pane.dblclick()
    assert all(scale(t) == 1 for t in transforms(page))
    # the pair is in the history: picking its row and Reopen puts its settings back
    prompt = page.locator("#compare-prompt textarea")
    prompt.fill("something else")
    page.get_by_text("History: the recent pairs").click()
    history = page.locator("#compare-history")
    history.get_by_text("a happy yellow face").locator("visible=true").first.click()
    page.wait_for_function("!['', '0'].includes(document.querySelector('#compare-pair input').value)")
    page.locator("#compare-reopen").click()
    page.wait_for_function("document.querySelector('#compare-prompt textarea').value.startsWith('a happy')")
    assert not errors
    page.close()
