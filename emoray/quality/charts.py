"""Charts as PNG bytes, drawn off-screen (matplotlib's Agg backend: no display needed), for the
evaluation report and the per-run label report."""

from __future__ import annotations

import io


def figure(figsize: tuple[float, float], grid: tuple[int, int] | None = None):
    """(figure, axes): one axes, or with `grid` (rows, cols) a 2-D array of them (even 1 x 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if grid is None:
        return plt.subplots(figsize=figsize)
    return plt.subplots(*grid, figsize=figsize, squeeze=False)


def png(fig, dpi: int = 110) -> bytes:
    """A finished figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
