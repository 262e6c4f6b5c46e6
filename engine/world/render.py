"""Render a Scene to a small RGB image, deterministically.

Drawn at SUPERSAMPLE times the output size with PIL, then box-filtered down: edges are
anti-aliased like a real photo's, and stripes and checks stay fine detail at the output size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import Scene

RGB = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (25, 25, 25),
    "gray": (128, 128, 128), "pink": (250, 185, 200), "sky": (165, 210, 245),
}
SUPERSAMPLE = 4
# Centre of an object at each position, as a fraction of the image side.
ANCHORS = {"center": (0.5, 0.5), "left": (0.27, 0.5), "right": (0.73, 0.5),
           "top": (0.5, 0.27), "bottom": (0.5, 0.73)}
RADIUS = {"small": 0.14, "large": 0.25}
PAIR_RADIUS = 0.16
PAIR_OFFSET = 0.23

# 5x7 bitmap glyphs for the digits ("text rendering").
GLYPHS = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
}


def _shape_mask(shape: str, cx: float, cy: float, r: float, n: int) -> Image.Image:
    mask = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        s = r * 0.85
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=255)
    elif shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, fill=255)
    elif shape == "cross":
        w = r * 0.36
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _texture_layer(colour: str, texture: str, n: int, period: int) -> Image.Image:
    base = np.array(RGB[colour], dtype=np.float32)
    # The second tone is a darker (or, for black, lighter) shade of the object's colour.
    alt = base * 0.35 if colour != "black" else np.full(3, 150.0)
    yy, xx = np.mgrid[0:n, 0:n]
    if texture == "solid":
        on = np.ones((n, n), bool)
    elif texture == "striped":
        on = (yy // period) % 2 == 0
    elif texture == "checkered":
        on = ((yy // period) + (xx // period)) % 2 == 0
    else:
        raise ValueError(f"unknown texture {texture!r}")
    img = np.where(on[..., None], base, alt).astype(np.uint8)
    return Image.fromarray(img, "RGB")


def _paste_object(canvas: Image.Image, shape: str, colour: str, texture: str,
                  cx: float, cy: float, r: float) -> None:
    n = canvas.size[0]
    layer = _texture_layer(colour, texture, n, period=n // 16)  # 2 px stripes at 32 x 32
    canvas.paste(layer, (0, 0), _shape_mask(shape, cx, cy, r, n))


def _draw_digit(canvas: Image.Image, digit: str, colour: str, cx: float, cy: float) -> None:
    n = canvas.size[0]
    cell = n * 0.095  # glyph is 5 x 7 cells: about half the image high
    x0, y0 = cx - 2.5 * cell, cy - 3.5 * cell
    d = ImageDraw.Draw(canvas)
    for row, bits in enumerate(GLYPHS[digit]):
        for col, bit in enumerate(bits):
            if bit == "1":
                d.rectangle([x0 + col * cell, y0 + row * cell, x0 + (col + 1) * cell,
                             y0 + (row + 1) * cell], fill=RGB[colour])


def _draw_face(canvas: Image.Image, colour: str, expression: str, cx: float, cy: float) -> None:
    n = canvas.size[0]
    r = n * 0.34
    d = ImageDraw.Draw(canvas)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=RGB[colour])
    ink = RGB["black"]
    e = r * 0.14
    for sx in (-1, 1):
        ex, ey = cx + sx * r * 0.38, cy - r * 0.28
        d.ellipse([ex - e, ey - e, ex + e, ey + e], fill=ink)
    w = max(2, int(r * 0.12))
    mx, my, mw = cx, cy + r * 0.35, r * 0.5
    if expression == "happy":
        d.arc([mx - mw, my - mw * 0.9, mx + mw, my + mw * 0.5], 20, 160, fill=ink, width=w)
    elif expression == "sad":
        d.arc([mx - mw, my - mw * 0.1, mx + mw, my + mw * 1.1], 200, 340, fill=ink, width=w)
    elif expression == "surprised":
        o = r * 0.2
        d.ellipse([mx - o, my - o, mx + o, my + o], fill=ink)
    elif expression == "neutral":
        d.rectangle([mx - mw * 0.8, my - w / 2, mx + mw * 0.8, my + w / 2], fill=ink)
    else:
        raise ValueError(f"unknown expression {expression!r}")


def render(scene: Scene, size: int = 32) -> Image.Image:
    """Draw `scene` as a size x size RGB image."""
    n = size * SUPERSAMPLE
    canvas = Image.new("RGB", (n, n), RGB[scene.background])
    jx, jy = scene.jitter[0] * n, scene.jitter[1] * n
    if scene.kind == "object":
        ax, ay = ANCHORS[scene.position]
        _paste_object(canvas, scene.shape, scene.colour, scene.texture,
                      ax * n + jx, ay * n + jy, RADIUS[scene.size] * n)
    elif scene.kind == "digit":
        _draw_digit(canvas, scene.digit, scene.colour, n / 2 + jx, n / 2 + jy)
    elif scene.kind == "face":
        _draw_face(canvas, scene.colour, scene.expression, n / 2 + jx, n / 2 + jy)
    elif scene.kind == "pair":
        dx, dy = (PAIR_OFFSET, 0.0) if scene.layout == "horizontal" else (0.0, PAIR_OFFSET)
        for (shape, colour), sign in (((scene.shape_a, scene.colour_a), -1), ((scene.shape_b, scene.colour_b), 1)):
            _paste_object(canvas, shape, colour, "solid", (0.5 + sign * dx) * n + jx,
                          (0.5 + sign * dy) * n + jy, PAIR_RADIUS * n)
    else:
        raise ValueError(f"unknown kind {scene.kind!r}")
    return canvas.resize((size, size), Image.Resampling.BOX)


def to_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8."""
    return np.asarray(img, dtype=np.uint8)
