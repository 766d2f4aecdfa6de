"""The course's figure style, in one place."""
from __future__ import annotations


def set_style() -> None:
    """Small, readable figures that keep committed notebooks light."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 80,
        "savefig.dpi": 80,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
        "legend.frameon": False,
    })


def subplots(n: int = 1, ncols: int | None = None, size: float = 3.2, **kw):
    """`fig, axes = subplots(3)`: n axes in a row (or `ncols` per row), each about `size` inches wide."""
    import matplotlib.pyplot as plt

    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 0.8 * nrows), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, (flat[0] if n == 1 else flat[:n])
