"""The app in headless Chromium, started the way a user starts it (`python -m app`)."""

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT
from test_app_api import free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("LAB_REQUIRE_BROWSER"):
            pytest.fail("LAB_REQUIRE_BROWSER is set but /usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def app_process(*args: str, env: dict | None = None):
    """`python -m app ARGS` on a free port, as a user starts it; yields its URL once the page
    answers (its output is the error if it dies first), and stops it afterwards."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", *args, "--port", str(port)], cwd=ROOT,
                            env=env or dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stdout.read().decode())
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    with app_process(env=dict(os.environ, LAB_DATA_DIR=str(tmp_path_factory.mktemp("lab-data")))) as url:
        yield url


@pytest.fixture(scope="module")
def page(served_app):
    api = _browser_or_skip()
    with api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1200})
        pg.goto(served_app)
        yield pg
        browser.close()


def test_generate_shows_two_images(page, tmp_path):
    page.get_by_role("button", name="Generate").click()
    images = page.locator("img[src*='/file=']")
    images.nth(1).wait_for(timeout=120_000)
    assert images.count() >= 2
    for i in range(2):
        assert images.nth(i).evaluate("el => el.naturalWidth") >= 256
    assert page.get_by_text("NFE").count() >= 2
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
