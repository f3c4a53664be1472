"""Charts as PNG bytes, drawn off-screen (matplotlib's Agg backend: no display needed), for the
evaluation report and the per-run label report."""

from __future__ import annotations

import io


def figure(figsize: tuple[float, float], rows: int = 1, cols: int = 1):
    """(figure, axes): one axes, or a rows x cols array of them when either is above 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows == 1 and cols == 1:
        return plt.subplots(figsize=figsize)
    return plt.subplots(rows, cols, figsize=figsize, squeeze=False)


def png(fig, dpi: int = 110) -> bytes:
    """A finished figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
