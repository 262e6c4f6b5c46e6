"""Copy the students of the full recipe from a lab data directory into assets/, as shipped models.

    python -m engine distill guidance --teacher embedded --name embedded-guidance ...
    python -m engine distill progressive --teacher embedded-guidance --from-steps 64 --to-steps 4 --name embedded-4step ...
    python scripts/ship_students.py --data-dir lab-data

Each shipped student keeps its recipe, and its lab.json gains the adherence measured after every
round of the jobs that made it (including rounds whose weights are not shipped), so the lineage
view shows the whole chain. The parent of the shipped 4-step student becomes the shipped guidance
student (its real parent, the 8-step round, is not shipped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.paths import ASSETS  # noqa: E402
from engine.store import Store  # noqa: E402

SHIP = {"embedded-guidance": "embedded", "embedded-4step": "embedded-guidance"}


def round_history(store: Store, name: str) -> list[dict]:
    """Adherence after every round along the student's lineage, from the jobs' records."""
    chain = [m["name"] for m in store.lineage(name)]
    out = []
    for e in store.job_evals():
        if e["model"] in chain:
            out.append({"model": e["model"], "round": e["round"], "steps": e["steps"], "guidance": e["guidance"],
                        "adherence": e["adherence"], "by_category": json.loads(e["by_category"]), "n": e["n"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    store = Store(args.data_dir)
    for name, parent in SHIP.items():
        row = store.model(name)
        if row is None:
            print(f"skip {name}: not in {args.data_dir}")
            continue
        src, dst = Path(row["path"]), ASSETS / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        meta = json.loads((dst / "lab.json").read_text())
        meta.update(parent=parent, trained_parent=meta.get("parent"), rounds=round_history(store, name))
        (dst / "lab.json").write_text(json.dumps(meta, indent=1))
        print(f"shipped {name} -> {dst.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
