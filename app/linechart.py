"""A labelled line chart as inline SVG: one line per series over named points (a lineage), every
point's value printed, the legend beside the plot (never clipped), missing values left as gaps."""

from __future__ import annotations

from html import escape

W, H = 820, 380  # canvas, in pixels
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 24, 70  # margins: the legend sits in the right one
COLOURS = ["#222222", "#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0ca678", "#c92a2a", "#5c7cfa"]


def lines(x_labels: list[str], series: dict[str, list[float | None]], y_title: str, title: str = "") -> str:
    """x_labels: one per point, shown on two lines split at ' · '; series: name -> one value per point."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not x_labels or not values:
        return "<p><em>nothing evaluated yet</em></p>"
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
    y0, y1 = lo - 0.1 * span, hi + 0.1 * span
    n = len(x_labels)

    def px(i: int) -> float:
        return LEFT + (i + 0.5) * (W - LEFT - RIGHT) / n

    def py(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * (H - TOP - BOTTOM)

    out = [f'<svg class="lab-lineage-chart" viewBox="0 0 {W} {H}" width="100%" '
           f'style="max-width:{W}px;font:12px sans-serif" role="img" aria-label="{escape(title or y_title)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="#ccc"/>']
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.3g}</text>')
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
    for i, label in enumerate(x_labels):
        first, _, rest = label.partition(" · ")
        out.append(f'<text class="x-label" x="{px(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                   f'<tspan x="{px(i):.1f}" font-weight="600">{escape(first)}</tspan>'
                   f'<tspan x="{px(i):.1f}" dy="14" fill="#555">{escape(rest)}</tspan></text>')
    out.append(f'<text x="14" y="{(H - BOTTOM + TOP) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(H - BOTTOM + TOP) / 2})">{escape(y_title)}</text>')
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
        ly = TOP + 14 + 18 * k
        out.append(f'<line x1="{W - RIGHT + 14}" x2="{W - RIGHT + 34}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="{width}"/><text x="{W - RIGHT + 40}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
