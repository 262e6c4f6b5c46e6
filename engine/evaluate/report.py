"""What an evaluation says, for people: the Markdown report of a run, and the lineage table (every
metric of a model and its ancestors, so losses that compound along the chain are visible)."""

from __future__ import annotations

import json

from .. import registry
from ..store import Store
from .config import LABELS, METRICS
from .scoring import worst


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def setting_label(settings: dict) -> str:
    """e.g. 'my-4step · 4 steps · g 5 · teacache · fp8 weights'."""
    parts = [settings["model"], f"{settings['steps']} steps", f"g {settings['guidance']:g}"]
    if settings.get("cache", "none") != "none":
        parts.append(settings["cache"])
    if settings.get("fp8", "off") != "off":
        parts.append(f"fp8 {settings['fp8']}")
    return " · ".join(parts)


FID_FEW = 1000  # below this many images FID is biased upwards and noisy: compare runs of the same size only
FEW = 100  # below this many prompts a proportion (adherence) moves by more than ten points by chance


def small_sample_notes(result: dict) -> list[str]:
    """Warnings for numbers that rest on few items: FID on few images, adherence on few prompts,
    categories of a handful of prompts."""
    n, notes = result["n"], []
    if result.get("fid") is not None and n < FID_FEW:
        notes.append(f"FID rests on {n} images: it is biased upwards at this size (more so the fewer the images) "
                     f"and noisy; compare it only between runs of the same prompts, and use {FID_FEW}+ for a "
                     "number to quote.")
    if result.get("adherence") is not None and n < FEW:
        half = 1.96 * (0.25 / n) ** 0.5
        notes.append(f"Adherence rests on {n} prompts: by chance alone it moves by up to ±{half:.2f} (95%).")
    few = [c for c, row in result.get("by_category", {}).items() if row["n"] < 20]
    if few:
        notes.append(f"Categories of fewer than 20 prompts ({', '.join(few)}): read their rows as anecdotes.")
    return notes


def markdown(result: dict, store: Store | None = None, per_category: int = 3) -> str:
    """The report of one run: overall metrics, the per-category table, what was unavailable and why,
    and each category's worst prompts."""
    s, ref = result["settings"], result["reference"]
    lines = [f"# Evaluation: {setting_label(s)}", "",
             f"Golden set `{result['golden']}` ({result['golden_sha']}), {result['n']} prompts. Reference: "
             f"`{ref['model']}` at {ref['steps']} steps, guidance {ref['guidance']:g}, same prompts and seeds. "
             f"FID space: {result.get('fid_space') or '—'}. NFE per image: {_fmt(result.get('nfe'))}.", "",
             "| metric | value |", "|---|---|"]
    notes = small_sample_notes(result)
    if notes:
        lines[-2:-2] = [*(f"> ⚠️ {note}" for note in notes), ""]
    lines += [f"| {LABELS[m]} | {_fmt(result.get(m))} |" for m in METRICS]
    if result.get("vlm"):
        v = result["vlm"]
        lines += [f"| VLM {k} (1-10) ↑ | {_fmt(v.get(k))} |" for k in ("quality", "adherence", "artifacts")]
    lines += ["", "## By category", "", "| category | n | " + " | ".join(LABELS[m] for m in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    for c, row in result["by_category"].items():
        lines.append(f"| {c} | {row['n']} | " + " | ".join(_fmt(row.get(m)) for m in METRICS) + " |")
    if result.get("unavailable"):
        lines += ["", "## Unavailable", ""]
        lines += [f"- **{m}**: {why}" for m, why in result["unavailable"].items()]
    if store is not None and result.get("run"):
        lines += ["", "## Worst prompts per category", "",
                  "| category | prompt | seed | missed | PSNR | image | teacher's image |",
                  "|---|---|---|---|---|---|---|"]
        for c, items in worst(store, result["run"], per_category).items():
            for it in items:
                lines.append(f"| {c} | {it['prompt']} | {it['seed']} | {', '.join(it['missed'] or []) or '—'} | "
                             f"{_fmt(it['psnr'])} | {store.root / it['image']} | {store.root / it['ref_image']} |")
    return "\n".join(lines) + "\n"


def lineage_rows(store: Store, model: str, golden: str | None = None) -> list[dict]:
    """The latest run of each evaluated setting of every model along the lineage, root first (then
    each model's settings in the order first evaluated). Rows carry the model's position, the
    setting's label, the metrics and per-category metrics; a model never evaluated has a row
    with `run` None (and, for a distilled round, the adherence its job measured)."""
    chain = registry.lineage(store, model)
    evals = {e["model"]: e for e in store.job_evals()}
    rows = []
    for pos, name in enumerate(chain):
        runs = store.eval_runs(model=name, golden=golden)
        latest: dict[str, dict] = {}
        for r in sorted(runs, key=lambda r: r["id"]):
            key = json.dumps({k: r["settings"].get(k) for k in ("steps", "guidance", "cache", "fp8")}, sort_keys=True)
            latest[key] = r
        if not latest:
            e = evals.get(name)
            rows.append({"position": pos, "model": name, "label": name, "run": None,
                         "training_adherence": e["adherence"] if e else None})
            continue
        for r in latest.values():
            res = r["result"]
            rows.append({"position": pos, "model": name, "label": setting_label(r["settings"]), "run": r["id"],
                         "golden": r["golden"], "n": res["n"], "nfe": res.get("nfe"),
                         **{m: res.get(m) for m in METRICS},
                         "by_category": {c: v for c, v in res["by_category"].items()},
                         "training_adherence": evals[name]["adherence"] if name in evals else None})
    return rows


def lineage_markdown(rows: list[dict], metric: str = "adherence") -> str:
    """The lineage as a table: every metric, then `metric` per category."""
    cats = sorted({c for r in rows if r["run"] for c in r["by_category"]})
    head = ["#", "setting", "n", "NFE", *(LABELS[m] for m in METRICS), *(f"{c} ({metric})" for c in cats)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["run"] is None:
            note = f"not evaluated (adherence after training {r['training_adherence']:.3f})" \
                if r["training_adherence"] is not None else "not evaluated"
            lines.append(f"| {r['position']} | {r['label']} | {note} |" + " |" * (len(head) - 3))
            continue
        cells = [r["position"], r["label"], r["n"], _fmt(r["nfe"]), *(_fmt(r[m]) for m in METRICS),
                 *(_fmt(r["by_category"].get(c, {}).get(metric)) for c in cats)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
