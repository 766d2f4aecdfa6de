"""The course's figure style, in one place: readable on screen and in a committed notebook.

Rules every figure follows (tests/test_project.py checks the committed ones): rendered at ≥ 110 dpi,
≥ 700 px wide for a full-width figure, no text under 8 pt, every axis labelled, a colorbar on heatmaps.
"""
from __future__ import annotations

DPI = 110
MIN_FONT_PT = 8
FULL_WIDTH_IN = 7.2  # 792 px at DPI


def set_style() -> None:
    """Matplotlib settings for every course figure (called by `start()`)."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (FULL_WIDTH_IN, 3.8),
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "figure.constrained_layout.use": True,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "figure.titlesize": 11,
    })
    try:  # the inline backend otherwise re-applies its own 72-dpi defaults
        from IPython import get_ipython

        if get_ipython() is not None:
            get_ipython().run_line_magic("config", "InlineBackend.rc = {}")
    except Exception:
        pass


def subplots(n: int = 1, ncols: int | None = None, size: float = 3.6, **kw):
    """`fig, axes = subplots(3)`: n axes in a row (or `ncols` per row), the figure at least full width.

    `size` is each panel's width in inches; the figure is widened to `FULL_WIDTH_IN` when the panels
    are narrower in total, so that text stays readable at 100% zoom.
    """
    import matplotlib.pyplot as plt

    ncols = ncols or n
    nrows = -(-n // ncols)
    width = max(FULL_WIDTH_IN, size * ncols)
    height = max(3.2, size * 0.8) * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, (flat[0] if n == 1 else flat[:n])
