"""Figures without pyplot: a grid of images, texts and blanks, saved as PNG through Agg."""

import io

import numpy as np
from PIL import Image

from pmg_kedro.components.reporting import figures


def test_the_grid_draws_each_cell_kind_in_its_place():
    red = np.zeros((3, 4, 4), dtype=np.float32)
    red[0] = 1.0  # (3, H, W) in [0, 1]
    blue = Image.new("RGB", (4, 4), (0, 0, 255))
    fig = figures.image_grid(
        [("user 1", [red, "no image", None]), ("user 2", [blue])],
        "title",
        column_titles=["history", "target", "pmg"],
    )
    axes = np.array(fig.axes).reshape(2, 3)
    assert [len(ax.images) for ax in axes.flat] == [1, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(axes[0][0].images[0].get_array()[..., 0], np.ones((4, 4)))
    assert axes[0][1].texts[0].get_text() == "no image" and not axes[0][2].texts
    assert [ax.get_title() for ax in axes[0]] == ["history", "target", "pmg"]
    assert axes[1][0].get_ylabel() == "user 2" and fig._suptitle.get_text() == "title"


def test_figures_need_no_pyplot_to_be_saved():
    fig = figures.text_figure("not applicable: no images")
    assert fig.canvas.manager is None  # not a pyplot figure: nothing to close
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (600, 150)  # 6 x 1.5 in at 100 dpi
