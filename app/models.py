"""Models tab: every model with where it lives (family, kind, size, lineage, path), and an export
of any of them for diffusers, downloaded as a zip (engine/export)."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import registry
from engine.errors import UsageError
from engine.export import FORMATS

from .state import Lab

DOWNLOADS = Path(tempfile.gettempdir()) / "distillation-lab-exports"  # zips served as they are
FORMAT_LABELS = {"diffusers pipeline (DiffusionPipeline.from_pretrained)": "diffusers",
                 "LoRA adapter (pipe.load_lora_weights; LoRA students saved as adapters)": "lora"}
assert set(FORMAT_LABELS.values()) == set(FORMATS)


def inventory(lab: Lab) -> pd.DataFrame:
    rows = registry.inventory(lab.store)
    return pd.DataFrame([{"name": r["name"], "family": r["family"], "kind": r["kind"] or "",
                          "size (MB)": round(r["bytes"] / 2**20, 1), "lineage": " → ".join(r["lineage"]),
                          "path": r["path"] + (f" (adapter over {r['base']})" if "base" in r else "")}
                         for r in rows], columns=["name", "family", "kind", "size (MB)", "lineage", "path"])


def export(lab: Lab, name: str, fmt_label: str, progress=gr.Progress()):
    """Export `name` into the data directory's exports/ and zip it for the browser; returns the zip,
    the model card and where the folder is."""
    from engine.export.write import export as write

    fmt = FORMAT_LABELS.get(fmt_label, fmt_label)
    if not name:
        raise gr.Error("model: pick a model to export", print_exception=False)
    progress(0.1, desc="loading the model and writing the export")
    try:
        out = lab.store.new_dir("exports") / f"{name}-{fmt}"
        result = write(lab.store, name, out, fmt)
    except (UsageError, RuntimeError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    progress(0.7, desc="zipping")
    DOWNLOADS.mkdir(exist_ok=True)
    archive = Path(tempfile.mkdtemp(dir=DOWNLOADS)) / f"{name}-{fmt}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # weights do not compress
        for f in sorted(out.rglob("*")):
            if f.is_file():
                z.write(f, Path(out.name) / f.relative_to(out))
    card = (out / "README.md").read_text()
    where = f"Written to `{result['out']}` ({len(result['files'])} files); the zip holds the same folder."
    return str(archive), card, where


def build(lab: Lab) -> dict:
    DOWNLOADS.mkdir(exist_ok=True)
    gr.set_static_paths([DOWNLOADS])
    gr.Markdown("Every model the lab knows: the shipped ones and each student a job registered, with its "
                "lineage, size and folder. Export one to use it outside the lab, in diffusers.")
    table = gr.Dataframe(inventory(lab), interactive=False, wrap=True, label="Models")
    with gr.Row():
        model = gr.Dropdown(lab.model_names(), value=None, label="Model to export", scale=2)
        fmt = gr.Radio(list(FORMAT_LABELS), value=list(FORMAT_LABELS)[0], label="Format", scale=3)
        go = gr.Button("Export", variant="primary", scale=1)
    with gr.Row():
        download = gr.File(label="Download (zip)", scale=1)
        where = gr.Markdown()
    card = gr.Markdown(label="Model card")
    def run(m, f, progress=gr.Progress()):
        return export(lab, m, f, progress)

    go.click(run, [model, fmt], [download, card, where], api_name="export")
    return {"table": table, "model": model}
