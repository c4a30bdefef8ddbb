"""A small learning-curve PNG drawn with Pillow (no matplotlib in the core)."""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from refsnn.io import atomic_write_bytes

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _nice(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def line_plot_png(path, x, series: dict, *, title: str = "", xlabel: str = "", ylabel: str = "",
                  size=(800, 480)) -> None:
    """Write a PNG with one line per ``series`` entry, atomically: name -> y values over ``x``, or
    name -> ``(x_i, y_i)`` for a series with its own x values (``x`` is then unused and may be None).
    The legend takes four names per row."""
    W, H = size
    per_row = 4
    left, right, top, bottom = 70, 20, 40 + 14 * ((max(len(series), 1) - 1) // per_row), 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs, ys = [], []
    for v in series.values():
        xv, yv = v if isinstance(v, tuple) else (x, v)
        xs.append(np.asarray(xv, dtype=float))
        ys.append(np.asarray(yv, dtype=float))
    finite = np.concatenate([y[np.isfinite(y)] for y in ys] + [np.zeros(0)])
    allx = np.concatenate(xs + [np.zeros(0)])
    if allx.size and finite.size:
        x0, x1 = float(allx.min()), float(allx.max())
        y0, y1 = float(finite.min()), float(finite.max())
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y0, y1 = y0 - 1, y1 + 1
        pad = 0.05 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad

        def px(xv):
            return left + (xv - x0) / (x1 - x0) * (W - left - right)

        def py(yv):
            return H - bottom - (yv - y0) / (y1 - y0) * (H - top - bottom)

        for t in _nice(y0, y1):
            d.line([(left, py(t)), (W - right, py(t))], fill=(230, 230, 230))
            d.text((5, py(t) - 6), f"{t:g}", fill="black")
        for t in _nice(x0, x1):
            d.text((px(t) - 8, H - bottom + 5), f"{t:g}", fill="black")
        for k, (name, xk, y) in enumerate(zip(series, xs, ys)):
            col = COLORS[k % len(COLORS)]
            pts = [(px(a), py(b)) for a, b in zip(xk, y) if math.isfinite(b)]
            if len(pts) > 1:
                d.line(pts, fill=col, width=2)
            elif pts:
                d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=col)
            d.text((left + 10 + 175 * (k % per_row), 20 + 14 * (k // per_row)), name, fill=col)
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    d.text((left, 5), title, fill="black")
    d.text((W // 2 - 30, H - 20), xlabel, fill="black")
    d.text((5, top - 30), ylabel, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
