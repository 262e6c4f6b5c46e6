"""The wheel: `pip install .` must give the whole lab, every subpackage and the shipped assets."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("distillation_lab-*.whl")
    return whl


def test_wheel_carries_every_package_and_asset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for top in ("engine", "app"):
        for source in (ROOT / top).rglob("*.py"):
            rel = source.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert rel in names, f"the wheel lacks {rel}"
    for asset in (ROOT / "assets").rglob("*"):
        if asset.is_file():
            assert f"engine/assets/{asset.relative_to(ROOT / 'assets').as_posix()}" in names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


def test_installed_lab_runs_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs by unpacking
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "LAB_DATA_DIR": str(tmp_path / "data")}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    r = run("-c", "import engine.paths as p; print(p.ASSETS); print((p.EMBEDDED_TEACHER / 'lab.json').is_file())")
    assert r.returncode == 0, r.stderr
    assets, found = r.stdout.split()
    assert Path(assets) == site / "engine" / "assets" and found == "True"
    for command in (("-m", "engine", "distill", "--help"), ("-m", "engine", "bench", "--help"),
                    ("-m", "app", "--help")):
        r = run(*command)
        assert r.returncode == 0, f"{command}: {r.stderr[-500:]}"
        assert "usage" in r.stdout.lower()
