"""The running app, through its API as any client would use it (gradio_client)."""

import pytest
from gradio_client import Client
from helpers import serve
from PIL import Image

from app.blocks import build_app
from app.state import Lab
from engine.store import Store


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("lab-data"))
    demo = build_app(Lab(store))
    yield serve(demo), store
    demo.close()


def test_compare_returns_two_large_images_and_measurements(app_url):
    url, store = app_url
    client = Client(url, verbose=False)
    a, b, pair, ra, rb, *_ = client.predict("a red circle", 3, "embedded", 4, 5.0, "embedded", 2, 1.0,
                                            api_name="/compare")
    ia, ib = Image.open(a), Image.open(b)
    assert ia.size[0] >= 256 and ia.size == ib.size  # 32 x 32 shown big enough to judge
    assert "NFE **8**" in ra and "NFE **2**" in rb  # CFG: two passes a step; guidance 1: one
    assert len(store.generations()) == 2


def test_compare_seeds_view_shows_each_side_at_several_seeds(app_url):
    """One prompt at K seeds per side, in a grid: the teacher draws a different image for each seed."""
    url, _ = app_url
    client = Client(url, verbose=False)
    grid_a, grid_b, ra, rb = client.predict("a circle", 3, 4, "embedded", 4, 5.0, "embedded-4step", 4, 5.0,
                                            api_name="/compare_seeds")
    assert [g["caption"] for g in grid_a] == [f"seed {s}" for s in (3, 4, 5, 6)] and len(grid_b) == 4
    pixels = [Image.open(g["image"]).convert("RGB").tobytes() for g in grid_a]
    assert len(set(pixels)) == 4  # four seeds, four images
    assert Image.open(grid_a[0]["image"]).size[0] >= 256  # big enough to judge
    assert "NFE **8** per image" in ra and "seeds 3–6" in ra and "NFE **4** per image" in rb
    with pytest.raises(Exception, match="maximum value 8"):
        client.predict("a circle", 3, 9, "embedded", 4, 5.0, "embedded", 4, 5.0, api_name="/compare_seeds")


def test_compare_reports_bad_input_without_crashing(app_url):
    url, _ = app_url
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="minimum value 1"):  # the slider's own bound, checked by Gradio
        client.predict("a red circle", 3, "embedded", 0, 5.0, "embedded", 2, 1.0, api_name="/compare")
    with pytest.raises(Exception, match="seed must be an integer"):
        client.predict("a red circle", -1, "embedded", 2, 5.0, "embedded", 2, 1.0, api_name="/compare")
    with pytest.raises(Exception, match="prompt"):
        client.predict("", 3, "embedded", 2, 5.0, "embedded", 2, 1.0, api_name="/compare")


def test_picking_a_student_sets_the_steps_and_guidance_it_was_made_for(tmp_path):
    from app.compare import model_setting

    lab = Lab(Store(tmp_path / "d"))
    steps, guidance = model_setting(lab, "embedded-4step")
    assert steps["value"] == 4 and guidance["value"] == 5.0
    assert model_setting(lab, "embedded") == ({"__type__": "update"}, {"__type__": "update"})  # the teacher: as set
    assert model_setting(lab, "no-such-model") == ({"__type__": "update"}, {"__type__": "update"})
