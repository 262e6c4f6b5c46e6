"""Shared fixtures: tiny random-weight models, temporary data directories, in-memory stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The suite runs as one pytest-xdist worker per core (`make test`), each starting job and app
# processes: one thread per torch process (set before torch is imported, and inherited by every
# process a test starts), or their threads spin against one another.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)

TINY = dict(channels=(32, 32, 32), heads=2, text_width=32, text_layers=1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight embedded model saved as a model directory (fast to run, no quality)."""
    from engine.families.embedded import EmbeddedConfig, EmbeddedFamily

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny"
    EmbeddedFamily.new(EmbeddedConfig(**TINY)).save(path, dtype=torch.float32)
    return path


@pytest.fixture
def tiny_family(tiny_model_dir):
    from engine.families.embedded import EmbeddedFamily

    return EmbeddedFamily.load(tiny_model_dir)


@pytest.fixture
def memory_store():
    from engine.store import Store

    return Store(memory=True)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "lab-data"
    monkeypatch.setenv("LAB_DATA_DIR", str(d))
    return d


def run_cli(*args: str, data_dir: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m engine ARGS` as a user would; returns the completed process."""
    env = dict(os.environ)
    if data_dir is not None:
        env["LAB_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """`tiny_pipeline(kind)`: the path of a saved tiny random-weight diffusers pipeline of `kind`
    (engine.families.synthetic.KINDS), a plain diffusers directory without lab.json; built once."""
    from engine.families import synthetic

    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            path = tmp_path_factory.mktemp("pipelines") / kind
            synthetic.build(kind, seed=0).save_pretrained(path)
            made[kind] = path
        return made[kind]
    return make


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (Debian's, driven by Playwright) for every browser test; each opens its own page."""
    from helpers import CHROMIUM, FLAGS, browser_or_skip

    api = browser_or_skip()
    with api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()
