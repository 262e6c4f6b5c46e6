"""Copy the students of the full recipe from a lab data directory into assets/, as shipped models.

    python -m engine distill guidance --teacher embedded --name embedded-guidance ...
    python -m engine distill progressive --teacher embedded-guidance --from-steps 64 --to-steps 4 \
        --name embedded-4step ...
    python -m engine distill dmd --teacher embedded-guidance --steps 1 --name embedded-1step ...
    python scripts/ship_students.py --data-dir lab-data [--guidance SRC] [--step4 SRC] [--step1 SRC]

--guidance / --step4 / --step1 name the models in that data directory to ship as `embedded-guidance`,
`embedded-4step` and `embedded-1step` (default: those names), for a student trained under another
name (a longer run started with --init, say); the round history and the recipes are renamed with
them. A student trained in another data directory is shipped from there with --X-data-dir.

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

from engine import registry  # noqa: E402
from engine.paths import ASSETS  # noqa: E402
from engine.store import Store  # noqa: E402

SHIP = {"embedded-guidance": "embedded", "embedded-4step": "embedded-guidance", "embedded-1step": "embedded-guidance"}
FLAGS = {"embedded-guidance": "guidance", "embedded-4step": "step4", "embedded-1step": "step1"}


def shipped_name(model: str, rename: dict[str, str]) -> str:
    """A model's name as shipped; a chain's intermediate rounds (SRC-r<k>-<n>step) follow its last."""
    if model in rename:
        return rename[model]
    for src, name in rename.items():
        if model.startswith(f"{src}-r"):
            return name + model[len(src):]
    return model


def round_history(store: Store, name: str, rename: dict[str, str]) -> list[dict]:
    """Adherence after every round along the student's lineage, from the jobs' records."""
    chain = registry.lineage(store, name)
    out = []
    for e in store.job_evals():
        if e["model"] in chain:
            out.append({"model": shipped_name(e["model"], rename), "round": e["round"], "steps": e["steps"],
                        "guidance": e["guidance"], "adherence": e["adherence"],
                        "by_category": e["by_category"], "n": e["n"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    for name, flag in FLAGS.items():
        p.add_argument(f"--{flag}", default=name, help=f"the model shipped as {name}")
        p.add_argument(f"--{flag}-data-dir", default=None, help=f"where --{flag} was trained (default --data-dir)")
    args = p.parse_args()
    stores = {name: Store(getattr(args, f"{flag}_data_dir") or args.data_dir) for name, flag in FLAGS.items()}
    source = {name: getattr(args, flag) for name, flag in FLAGS.items()}
    rename = {src: name for name, src in source.items()}
    for name, parent in SHIP.items():
        store = stores[name]
        row = store.model(source[name])
        if row is None:
            print(f"skip {name}: {source[name]!r} is not in {store.root}")
            continue
        src, dst = Path(row["path"]), ASSETS / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        meta = json.loads((dst / "lab.json").read_text())
        trained_parent = meta.get("parent")
        recipe = meta.get("recipe") or {}
        if recipe.get("init") and recipe["init"] not in rename and recipe["init"] not in SHIP:  # it continued a run
            recipe["init"] = f"{recipe['init']} (an earlier run, since replaced by this one)"
        for key in ("name", "teacher", "init"):
            if recipe.get(key) in rename:
                recipe[key] = rename[recipe[key]]
        meta.update(parent=parent, trained_parent=shipped_name(trained_parent, rename) if trained_parent else None,
                    rounds=round_history(store, source[name], rename))
        (dst / "lab.json").write_text(json.dumps(meta, indent=1))
        print(f"shipped {name} -> {dst.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
