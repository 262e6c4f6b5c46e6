"""A labelled scatter chart as inline SVG: every point carries its name beside it.

(Gradio's native ScatterPlot clips its colour legend below the plot, which leaves the points
unnamed; a speed-versus-quality chart is only useful when each point says what it is.)
"""

from __future__ import annotations

from html import escape

W, H, PAD = 720, 360, 56  # canvas and margin, in pixels


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def scatter(points: list[tuple[float, float, str]], x_title: str, y_title: str) -> str:
    """points: (x, y, label). Returns an <svg> element."""
    points = [(x, y, lbl) for x, y, lbl in points if x is not None and y is not None]
    if not points:
        return "<p><em>nothing measured yet</em></p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(0.0, min(xs)), max(xs) * 1.35 or 1.0  # room for the last point's label
    ylo, yhi = min(ys), max(ys)
    span = (yhi - ylo) or max(abs(yhi) * 0.1, 0.05)
    y0, y1 = ylo - 0.15 * span, yhi + 0.15 * span

    def px(x):
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y):
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    out = [f'<svg viewBox="0 0 {W} {H}" width="100%" '
           f'style="max-width:{W}px;font:12px sans-serif;overflow:visible" '
           f'role="img" aria-label="{escape(y_title)} against {escape(x_title)}">',
           f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#ccc"/>']
    for t in _ticks(x0, x1):
        out.append(f'<text x="{px(t):.1f}" y="{H - PAD + 16}" text-anchor="middle" fill="#555">{t:.3g}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<text x="{PAD - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#555">{t:.3g}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">{escape(x_title)}</text>')
    out.append(f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">'
               f'{escape(y_title)}</text>')
    for i, (x, y, label) in enumerate(sorted(points, key=lambda p: (p[0], p[1]))):
        dy = -8 if i % 2 == 0 else 16  # alternate above and below so neighbours do not overlap
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="#e8590c"/>')
        out.append(f'<text x="{px(x) + 7:.1f}" y="{py(y) + dy:.1f}" fill="#222">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
