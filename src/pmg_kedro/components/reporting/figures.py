"""Figures of the reports as `matplotlib.figure.Figure` objects, made without pyplot.

A `Figure` needs no backend (it draws through Agg when saved, as kedro-datasets'
MatplotlibDataset saves it), so no module selects one at import, and nothing pyplot keeps open
has to be closed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

# A grid cell: an image ((3, H, W) floats in [0, 1], or PIL), a text shown in its place, or None.
Cell = np.ndarray | Image.Image | str | None


def subplots(rows: int = 1, cols: int = 1, size: tuple[float, float] = (6.4, 4.8)):
    """A figure of `size` inches and its (rows, cols) array of axes."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(rows, cols, squeeze=False)


def text(ax, message: str, fontsize: float = 6) -> None:
    """A centred, wrapped message in an axes (where a plot or an image is missing)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=fontsize, wrap=True)


def text_figure(message: str, size: tuple[float, float] = (6, 1.5), fontsize: float = 9) -> Figure:
    """A figure that only says something (why there is nothing to plot)."""
    fig, axes = subplots(1, 1, size)
    axes[0][0].axis("off")
    text(axes[0][0], message, fontsize)
    return fig


def image_grid(
    rows: Sequence[tuple[str, Sequence[Cell]]],
    title: str,
    column_titles: Sequence[str] = (),
    cell_size: tuple[float, float] = (1.3, 1.5),
    margin: tuple[float, float] = (0.0, 0.0),
    title_size: float = 9,
    label_style: dict | None = None,
    frames: bool = True,
) -> Figure:
    """One row of cells per (label, cells): images, texts in their place, or blanks; the label
    left of the row (`label_style`: its Axes.set_ylabel arguments), `column_titles` above the
    first row, each cell framed or not. `cell_size` and `margin` are inches."""
    n_rows = max(len(rows), 1)
    n_cols = max((len(cells) for _, cells in rows), default=len(column_titles)) or 1
    size = (cell_size[0] * n_cols + margin[0], cell_size[1] * n_rows + margin[1])
    fig, axes = subplots(n_rows, n_cols, size)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(frames)
    for r, (label, cells) in enumerate(rows):
        for c, cell in enumerate(cells):
            _draw(axes[r][c], cell)
        axes[r][0].set_ylabel(label, **(label_style or {"fontsize": 7}))
    for c, name in enumerate(column_titles):
        axes[0][c].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    return fig


def _draw(ax, cell: Cell) -> None:
    if isinstance(cell, str):
        text(ax, cell)
    elif isinstance(cell, np.ndarray):
        ax.imshow(cell.transpose(1, 2, 0))  # (3, H, W) -> (H, W, 3)
    elif cell is not None:
        ax.imshow(cell)
