"""The Models tab: every model with its folder, and an export downloaded as a zip, through the
named API (gradio_client) and in headless Chromium."""

import json
import zipfile

import pytest
from gradio_client import Client
from helpers import serve

from app.blocks import build_app
from app.state import Lab
from engine.store import Store


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo = build_app(Lab(Store(tmp_path_factory.mktemp("lab-data")), device="cpu"))
    yield serve(demo)
    demo.close()


DIFFUSERS = "diffusers pipeline (DiffusionPipeline.from_pretrained)"


def test_export_downloads_a_zip_of_a_diffusers_pipeline(app_url):
    client = Client(app_url, verbose=False)
    archive, card, where = client.predict("embedded-4step", DIFFUSERS, api_name="/export")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        index = json.loads(z.read("embedded-4step-diffusers/model_index.json"))
    assert {"embedded-4step-diffusers/pipeline.py", "embedded-4step-diffusers/unet/config.json",
            "embedded-4step-diffusers/README.md"} <= names
    assert index["_class_name"] == ["pipeline", "ShapesPipeline"]
    assert "read it before you trust it" in card
    assert "DiffusionPipeline.from_pretrained" in card and "embedded -> `embedded-guidance` -> `embedded-4step`" \
        in card.replace("`embedded` ->", "embedded ->")
    assert "exports" in where


def test_export_refusals_name_the_field(app_url):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="pick a model"):
        client.predict(None, DIFFUSERS, api_name="/export")
    with pytest.raises(Exception, match="is not a LoRA adapter student"):
        client.predict("embedded-4step", "LoRA adapter (pipe.load_lora_weights; LoRA students saved as adapters)",
                       api_name="/export")


def test_the_models_tab_in_the_browser(app_url, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.goto(app_url)
    page.get_by_role("tab", name="Models").click()
    page.get_by_text("assets/embedded-4step").first.wait_for(timeout=60_000)
    page.get_by_label("Model to export").click()
    page.get_by_role("option", name="embedded-guidance").click()
    page.get_by_role("button", name="Export").click()
    link = page.locator("a[href$='embedded-guidance-diffusers.zip']")
    link.wait_for(timeout=120_000)
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    assert "embedded-guidance-diffusers/model_index.json" in zipfile.ZipFile(saved).namelist()
    page.get_by_text("Use it").first.wait_for()
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
    page.close()
