"""What every tab shares: the store and model loading, on the device the app was started with."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from PIL import Image

from engine import jobs, registry
from engine.families.base import Family
from engine.store import Store

DISPLAY_SIDE = 384  # small images are shown at least this big, upscaled without blur


@dataclass
class Lab:
    store: Store
    device: str = "auto"

    def model_names(self) -> list[str]:
        return registry.names(self.store)

    def load(self, name: str) -> Family:
        return registry.load(name, store=self.store, device=self.device)


def fitted(table: pd.DataFrame, **kwargs) -> gr.Dataframe:
    """A table whose columns are as wide as their longest word or number (headers included), so
    nothing breaks mid-word; a table wider than the page scrolls sideways."""
    def width(texts) -> int:
        longest = max((len(w) for t in texts for w in str(t).split()), default=1)
        return 28 + 10 * longest  # the headers are bold monospace, with a menu button beside them

    widths = [max(width([c]), width(table[c].astype(str).tolist())) for c in table.columns]
    return gr.Dataframe(value=table, column_widths=[f"{w}px" for w in widths], **kwargs)


def enlarge(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """Nearest-neighbour upscale by a whole factor so each generated pixel stays a crisp square."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def progress_bar(job: dict) -> str:
    """A job's progress as an HTML bar and its words, e.g. 'round 2/4, step 150/300, 3.1 step/s, 1:05 left'."""
    fraction, text = jobs.progress(job)
    return (f'<progress value="{fraction:.3f}" max="1" style="width:160px"></progress> {100 * fraction:.0f}% '
            f'<small>{html.escape(text)}</small>')


def job_status(job: dict) -> str:
    """A job's status line (markdown): state, progress and pace, time taken, device use, error."""
    fraction, text = jobs.progress(job)
    state = "canceling" if job["status"] == "running" and job.get("phase") == "canceling" else job["status"]
    line = f"**Job {job['id']}: {state}** — {text}"
    spent = jobs.elapsed(job)
    if spent is not None:
        line += f" · {'took' if job['status'] in jobs.TERMINAL else 'running for'} {jobs.clock(spent)}"
    if job["status"] == "running" and job.get("device_mem_mb"):
        line += f" · GPU memory {job['device_mem_mb'] / 1024:.1f} GiB peak"
        if job.get("device_util") is not None:
            line += f", {job['device_util']:.0f}% busy"
    if job.get("error"):
        line += f"  \n{job['error']}"
    if job.get("message"):
        line += f"  \n{job['message']}"
    return line


def job_choices(store: Store, kind: str | None = None) -> list[tuple[str, str]]:
    """Jobs for a picker, newest first: ('12 · guidance: embedded → g · running', '12')."""
    return [(f"{j['id']} · {j['label'].replace(' -> ', ' → ')} · {j['status']}", str(j["id"]))
            for j in store.jobs(kind=kind, limit=100)]


def log_tail(store: Store, job_id: int, lines: int = 40) -> str:
    log = jobs.log_path(store, job_id)
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
