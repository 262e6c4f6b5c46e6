"""Where things live: the shipped assets and the lab's data directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the assets inside the package; a checkout keeps them beside it.
ASSETS = PACKAGE / "assets" if (PACKAGE / "assets").is_dir() else PACKAGE.parent / "assets"
EMBEDDED_TEACHER = ASSETS / "embedded-teacher"
JUDGE_WEIGHTS = ASSETS / "judge"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: `explicit`, else $LAB_DATA_DIR, else ./lab-data. Created if missing."""
    path = Path(explicit or os.environ.get("LAB_DATA_DIR") or "lab-data")
    path.mkdir(parents=True, exist_ok=True)
    return path
