"""Where things live: the shipped assets and the lab's data directory."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the assets inside the package; a checkout keeps them beside it.
ASSETS = PACKAGE / "assets" if (PACKAGE / "assets").is_dir() else PACKAGE.parent / "assets"
EMBEDDED_TEACHER = ASSETS / "embedded-teacher"
JUDGE_WEIGHTS = ASSETS / "judge"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: `explicit`, else $LAB_DATA_DIR, else ./lab-data. Created if missing;
    one that cannot be (a file in its place, no permission) is a UsageError saying so."""
    path = Path(explicit or os.environ.get("LAB_DATA_DIR") or "lab-data")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"data directory: cannot use {str(path)!r} as a folder ({e.strerror}); "
                         f"give --data-dir a folder the lab may write in") from None
    return path
