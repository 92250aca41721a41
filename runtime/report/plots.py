"""The report's pictures as PNG bytes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

PSNR_CAP_DB = 100.0  # identical outputs have infinite PSNR; plotted at least this high


def _figure_png(fig) -> bytes:  # noqa: ANN001 (matplotlib Figure)
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_speed(points: Sequence[tuple[str, float, float]]) -> bytes:
    """One point per variant: (label, faces/s, PSNR vs eager fp32 in dB)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    identical_y = identical_height([psnr for _, _, psnr in points])
    for label, speed, psnr_db in points:
        y = identical_y if math.isinf(psnr_db) else psnr_db
        ax.scatter([speed], [y], s=50)
        ax.annotate(label, (speed, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(identical_y, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("throughput (faces/s, best batch)")
    ax.set_ylabel(f"PSNR vs eager fp32 (dB; identical = {identical_y:.0f}, dashed)")
    ax.set_title("accuracy against speed")
    ax.grid(True, alpha=0.3)
    return _figure_png(fig)


def identical_height(psnrs: Sequence[float]) -> float:
    """Where infinite PSNR (identical output) is drawn: PSNR_CAP_DB, or the next multiple of
    10 dB at least 10 dB above every finite PSNR, so "identical" is always on top."""
    finite = [p for p in psnrs if math.isfinite(p)]
    top = max(finite, default=0.0) + 10.0
    return max(PSNR_CAP_DB, 10.0 * math.ceil(top / 10.0))


def time_per_graph(variants: dict[str, dict[str, float]]) -> bytes:
    """Stacked bars: for each variant, milliseconds per face spent in each graph."""
    plt = _pyplot()
    names = list(variants)
    graphs = sorted({g for times in variants.values() for g in times})
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.5 * max(1, len(names))))
    left = np.zeros(len(names))
    for graph in graphs:
        values = np.array([variants[n].get(graph, 0.0) for n in names])
        ax.barh(names, values, left=left, label=graph)
        left += values
    ax.set_xlabel("ms per face (batch 1)")
    ax.set_title("where time goes, per graph")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _figure_png(fig)


def comparison_grid(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]) -> bytes:
    """rows: (row label, [(column title, HxWx3 uint8 image), ...])."""
    plt = _pyplot()
    n_cols = max(len(cols) for _, cols in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 2.3 * len(rows)), squeeze=False)
    for r, (label, cols) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(cols):
                title, image = cols[c]
                ax.imshow(image)
                ax.set_title(f"{label}\n{title}" if c == 0 else title, fontsize=7)
    return _figure_png(fig)
