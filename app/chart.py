"""Charts as inline SVG, labelled so they need no legend lookup: a scatter whose every point names
itself, and a line chart over named points (a lineage) with every value printed.

(Gradio's native plots clip their colour legend below the plot, which leaves points unnamed; a
speed-versus-quality chart or a lineage is only useful when each point says what it is.)
"""

from __future__ import annotations

import math
from html import escape

COLOURS = ["#222222", "#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0ca678", "#c92a2a", "#5c7cfa"]


def _padded(values: list[float], margin: float) -> tuple[float, float]:
    """An axis range around `values`, widened by `margin` of their span (a flat series gets a span)."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
    return lo - margin * span, hi + margin * span


def _open(w: int, h: int, label: str, css_class: str = "", style: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return (f'<svg{cls} viewBox="0 0 {w} {h}" width="100%" style="max-width:{w}px;font:12px sans-serif{style}" '
            f'role="img" aria-label="{escape(label)}">')


def _y_title(text: str, y: float) -> str:
    return f'<text x="14" y="{y}" text-anchor="middle" transform="rotate(-90 14 {y})">{escape(text)}</text>'


def scatter(points: list[tuple[float, float, str]], x_title: str, y_title: str) -> str:
    """points: (x, y, label). Returns an <svg> element."""
    w, h, pad = 720, 360, 56
    points = [(x, y, lbl) for x, y, lbl in points if x is not None and y is not None]
    if not points:
        return "<p><em>nothing measured yet</em></p>"
    xs = [p[0] for p in points]
    x0, x1 = min(0.0, min(xs)), max(xs) * 1.35 or 1.0  # room for the last point's label
    y0, y1 = _padded([p[1] for p in points], 0.15)

    def px(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def py(y):
        return h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    out = [_open(w, h, f"{y_title} against {x_title}", style=";overflow:visible"),
           f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#ccc"/>']
    for k in range(5):
        t = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{px(t):.1f}" y="{h - pad + 16}" text-anchor="middle" fill="#555">{t:.3g}</text>')
        t = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{pad - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#555">{t:.3g}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">{escape(x_title)}</text>')
    out.append(_y_title(y_title, h / 2))
    points = sorted(points, key=lambda p: (p[0], p[1]))
    at = [(px(x), py(y)) for x, y, _ in points]
    for (cx, cy), (lx, ly), (_, _, label) in zip(at, place_labels(at, [p[2] for p in points]), points):
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{COLOURS[1]}"/>')
        if abs(ly - cy) > 20:  # moved away from its point: a leader line says whose label it is
            out.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{lx - 2:.1f}" y2="{ly - 4:.1f}" stroke="#aaa"/>')
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" fill="#222">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


CHAR_W, LINE_H = 6.6, 14  # a 12px sans-serif label: average advance per character, line height


def label_box(x: float, y: float, label: str) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a label whose baseline starts at (x, y)."""
    return x, y - LINE_H + 3, x + CHAR_W * len(label), y + 3


def place_labels(at: list[tuple[float, float]], labels: list[str]) -> list[tuple[float, float]]:
    """A baseline for each point's label, beside it and clear of the labels placed before it.

    Points with (nearly) the same values are common in a bench (FP8 weights at the teacher's
    quality, say); each label tries just above, just below, then further out, and keeps the
    first spot that overlaps no earlier label and no point.
    """
    placed: list[tuple[float, float, float, float]] = []

    def clear(box: tuple[float, float, float, float]) -> bool:
        return (all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed)
                and not any(box[0] - 5 <= qx <= box[2] + 5 and box[1] - 5 <= qy <= box[3] + 5 for qx, qy in at))

    out = []
    for (cx, cy), label in zip(at, labels):
        spots = [cy - 8, cy + 16] + [cy + d for k in range(1, 12) for d in (-8 - k * LINE_H, 16 + k * LINE_H)]
        ly = next((y for y in spots if clear(label_box(cx + 7, y, label))), spots[0])
        placed.append(label_box(cx + 7, ly, label))
        out.append((cx + 7, ly))
    return out


def lines(x_labels: list[str], series: dict[str, list[float | None]], y_title: str, title: str = "") -> str:
    """One line per series over named points, missing values left as gaps, the legend beside the plot.

    x_labels: one per point, shown on two lines split at ' · '; series: name -> one value per point.
    """
    w, h = 820, 380
    left, right, top, bottom = 56, 150, 24, 70  # margins: the legend sits in the right one
    values = [v for vs in series.values() for v in vs if v is not None]
    if not x_labels or not values:
        return "<p><em>nothing evaluated yet</em></p>"
    y0, y1 = _padded(values, 0.1)
    n = len(x_labels)

    def px(i: int) -> float:
        return left + (i + 0.5) * (w - left - right) / n

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (h - top - bottom)

    out = [_open(w, h, title or y_title, "lab-lineage-chart"),
           f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" '
           f'stroke="#ccc"/>']
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.3g}</text>')
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
    for i, label in enumerate(x_labels):
        first, _, rest = label.partition(" · ")
        out.append(f'<text class="x-label" x="{px(i):.1f}" y="{h - bottom + 16}" text-anchor="middle">'
                   f'<tspan x="{px(i):.1f}" font-weight="600">{escape(first)}</tspan>'
                   f'<tspan x="{px(i):.1f}" dy="14" fill="#555">{escape(rest)}</tspan></text>')
    out.append(_y_title(y_title, (h - bottom + top) / 2))
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        width = 3 if k == 0 else 1.5
        segment: list[str] = []
        for i, v in enumerate(vs + [None]):
            if v is not None:
                segment.append(f"{px(i):.1f},{py(v):.1f}")
            elif segment:
                out.append(f'<polyline class="series" data-series="{escape(name)}" points="{" ".join(segment)}" '
                           f'fill="none" stroke="{colour}" stroke-width="{width}"/>')
                segment = []
        for i, v in enumerate(vs):
            if v is not None:
                out.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="{4 if k == 0 else 3}" fill="{colour}">'
                           f'<title>{escape(name)}: {v:.4g}</title></circle>')
                if k == 0:
                    out.append(f'<text x="{px(i) + 6:.1f}" y="{py(v) - 6:.1f}" fill="{colour}">{v:.3g}</text>')
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{w - right + 14}" x2="{w - right + 34}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="{width}"/><text x="{w - right + 40}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


MAX_POINTS = 600  # points drawn per curve: more add nothing at the chart's width


def smoothed(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
    pulled towards zero. weight 0: the values themselves."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)) if weight else v)
    return out


def nice_ticks(lo: float, hi: float, about: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi], about `about` of them."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(1, about - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def curves(series: dict[str, list[tuple[float, float]]], x_title: str, y_title: str, *, log_y: bool = False,
           smooth: float = 0.0, title: str = "") -> str:
    """Training curves: one line per series over a numeric x (a loss over steps), drawn from its
    first point; with `smooth` the raw values stay as a faint line under the smoothed one. Returns
    an <svg> element, or a line saying why there is nothing to draw."""
    w, h = 720, 320
    left, right, top, bottom = 64, 130, 24, 44
    if log_y:
        series = {k: [(x, y) for x, y in pts if y is not None and y > 0] for k, pts in series.items()}
    series = {k: [(x, y) for x, y in pts if y is not None and y == y] for k, pts in series.items()}
    series = {k: pts for k, pts in series.items() if pts}
    if not series:
        return "<p class='lab-empty'><em>No loss reported yet: the curve starts at the job's first step.</em></p>"
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [fy(y) for pts in series.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = _padded(ys, 0.08)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return top + (y1 - fy(v)) / (y1 - y0) * (h - top - bottom)

    out = [_open(w, h, title or f"{y_title} against {x_title}", "lab-loss-chart"),
           f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" '
           f'stroke="#ccc"/>']
    for v in nice_ticks(y0, y1):
        shown = 10 ** v if log_y else v
        y = top + (y1 - v) / (y1 - y0) * (h - top - bottom)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{shown:.3g}</text>')
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    for x in nice_ticks(x0, x1):
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle" fill="#555">{x:.4g}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 6}" text-anchor="middle">{escape(x_title)}</text>')
    out.append(_y_title(y_title + (" (log scale)" if log_y else ""), (h - bottom + top) / 2))
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[(k + 1) % len(COLOURS)]
        raw = [y for _, y in pts]
        lines_ = [(raw, 0.25, 1)] if smooth else []
        lines_.append((smoothed(raw, smooth) if smooth else raw, 1.0, 2))
        stride = max(1, -(-len(pts) // MAX_POINTS))  # a long job: every stride-th point (and the last) drawn
        keep = sorted(set(range(0, len(pts), stride)) | {len(pts) - 1})
        for values, opacity, width in lines_:
            path = " ".join(f"{px(pts[i][0]):.1f},{py(values[i]):.1f}" for i in keep)
            cls = "series" if opacity == 1.0 else "raw"
            out.append(f'<polyline class="{cls}" data-series="{escape(name)}" points="{path}" fill="none" '
                       f'stroke="{colour}" stroke-width="{width}" stroke-opacity="{opacity}"/>')
        if len(pts) == 1:  # one point: a dot, so the first report shows at once
            out.append(f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 + 32 * k
        out.append(f'<line x1="{w - right + 12}" x2="{w - right + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="2"/><text x="{w - right + 38}" y="{ly}">{escape(name)}</text>')
        last = pts[-1][1]
        out.append(f'<text x="{w - right + 38}" y="{ly + 13}" fill="#555" font-size="11">last {last:.4g}</text>')
    out.append("</svg>")
    return "".join(out)
