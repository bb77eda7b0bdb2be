"""A matplotlib figure on an Agg canvas (no display, no pyplot state), saved atomically."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from detcli.fileio import atomic_write

DPI = 100


def new_figure(width: float, height: float, layout: str | None = "constrained", **subplots: Any) -> tuple[Any, Any]:
    """A ``(figure, axes)`` pair of ``width`` × ``height`` inches on an Agg canvas (``subplots`` as
    :meth:`matplotlib.figure.Figure.subplots` takes them: nrows, ncols, …). ``layout=None`` leaves the spacing
    to the caller (``subplots_adjust``): the constrained layout costs half the drawing time of a grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def save_figure(fig: Any, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (PNG, or JPEG for .jpg/.jpeg) atomically; the figure is released."""
    path = Path(path)
    fmt = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, **({"pil_kwargs": {"quality": 90}} if fmt == "jpeg" else {}))
    fig.clear()
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data))
