"""The app in headless Chromium, started the way a user starts it (`python -m app`)."""

import os

import pytest
from helpers import app_process


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    with app_process(env=dict(os.environ, LAB_DATA_DIR=str(tmp_path_factory.mktemp("lab-data")))) as url:
        yield url


@pytest.fixture(scope="module")
def page(served_app, chromium):
    pg = chromium.new_page(viewport={"width": 1400, "height": 1200})
    pg.goto(served_app)
    yield pg
    pg.close()


def test_generate_shows_two_images(page, tmp_path):
    page.get_by_role("button", name="Generate").click()
    images = page.locator("img[src*='/file=']")
    images.nth(1).wait_for(timeout=120_000)
    assert images.count() >= 2
    for i in range(2):
        assert images.nth(i).evaluate("el => el.naturalWidth") >= 256
    assert page.get_by_text("NFE").count() >= 2
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
