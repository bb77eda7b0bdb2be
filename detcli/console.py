"""Console output: rich on a terminal, plain lines otherwise (CI logs), silent on non-zero ranks."""
from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


class Progress_:
    """Iterator wrapper returned by :meth:`Reporter.progress`."""

    min_interval = 5.0  # plain (log) mode: seconds at least between two lines, besides ~10% of ``total``

    def __init__(self, reporter: "Reporter", iterable: Iterable, total: int | None, description: str):
        self.reporter, self.iterable, self.total, self.description = reporter, iterable, total, description
        self.clock = time.monotonic  # seconds; a fake clock in tests
        self.postfix: dict[str, Any] = {}

    def update_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = dict(values)

    def _postfix_text(self) -> str:
        return " ".join(f"{k} {_fmt(v)}" for k, v in self.postfix.items())

    def __iter__(self) -> Iterator:
        rep = self.reporter
        if rep.silent:
            yield from self.iterable
            return
        if not rep.rich:
            yield from self._plain()
            return
        columns = (
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[postfix]}", markup=False),
        )
        with Progress(*columns, console=rep.console, transient=True) as bar:
            task = bar.add_task(self.description, total=self.total, postfix="")
            for item in self.iterable:
                yield item
                bar.update(task, advance=1, postfix=self._postfix_text())

    def _plain(self) -> Iterator:
        """Sparse lines for logs: at most one per ~10% of ``total`` and per ``min_interval`` seconds, and
        always the last one; each with the elapsed time and, when ``total`` is known, an ETA."""
        start = last_time = self.clock()
        step = -(-self.total // 10) if self.total else 1  # ceil(total / 10)
        n = last_n = 0
        for item in self.iterable:
            yield item
            n += 1
            now = self.clock()
            if n == self.total or (n - last_n >= step and now - last_time >= self.min_interval):
                self._plain_line(n, now - start)
                last_n, last_time = n, now
        if n != last_n and n != self.total:  # ended before ``total`` (or there is none): still say where
            self._plain_line(n, self.clock() - start)

    def _plain_line(self, n: int, elapsed: float) -> None:
        parts = [self.description, f"{n}/{self.total}" if self.total else str(n), self._duration(elapsed)]
        if self.total and n < self.total:
            parts.append(f"eta {self._duration(elapsed / n * (self.total - n))}")
        if self.postfix:
            parts.append(self._postfix_text())
        self.reporter.console.print(" ".join(p for p in parts if p), highlight=False, markup=False)

    @staticmethod
    def _duration(seconds: float) -> str:
        """``42.0s``, ``3m05s``, ``2h07m``."""
        if seconds < 60:
            return f"{seconds:.1f}s"
        minutes, secs = divmod(round(seconds), 60)
        if minutes < 60:
            return f"{minutes}m{secs:02d}s"
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m"


class Reporter:
    """What the CLI and the engine print. ``silent`` for non-zero DDP ranks.

    Text is always printed literally: category names, file names and preset strings come from user files,
    so no console here interprets rich markup (``[red]`` stays ``[red]``). detcli's own styling is applied
    with :class:`rich.text.Text` styles instead.
    """

    def __init__(self, silent: bool = False, force_plain: bool | None = None, file=None):
        self.console = Console(file=file or sys.stdout, highlight=False, soft_wrap=False, markup=False)
        self.silent = silent
        self.rich = self.console.is_terminal if force_plain is None else not force_plain
        if not self.rich:
            self.console = Console(file=file or sys.stdout, highlight=False, no_color=True, width=160,
                                   soft_wrap=True, markup=False)
        self._epoch_header_printed = False

    # ---------------------------------------------------------------- basics
    def print(self, renderable: Any = "") -> None:
        if not self.silent:
            self.console.print(renderable)

    def info(self, msg: str) -> None:
        self.print(msg)

    def warn(self, msg: str) -> None:
        if not self.silent:
            self.console.print(Text.assemble(("WARNING", "yellow"), " ", msg))

    def error(self, msg: str) -> None:
        err = Console(stderr=True, highlight=False, no_color=not self.rich, soft_wrap=True,  # paths stay whole
                      markup=False)
        err.print(Text.assemble(("error:", "bold red"), " ", msg))

    def progress(self, iterable: Iterable, total: int | None = None, description: str = "") -> Progress_:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        return Progress_(self, iterable, total, description)

    def table(self, title: str, columns: list[str], rows: list[list[Any]], numeric: bool = True) -> None:
        """A table; columns after the first are right-aligned when ``numeric``."""
        if self.silent:
            return
        table = Table(title=title, title_justify="left", show_edge=self.rich, box=box.SQUARE if self.rich else None,
                      show_header=any(columns))
        for i, col in enumerate(columns):
            table.add_column(col, justify="right" if numeric and i > 0 else "left")
        for row in rows:
            table.add_row(*[Text(_fmt(v)) for v in row])
        self.console.print(table)

    def key_values(self, title: str, items: dict[str, Any]) -> None:
        self.table(title, ["", ""], [[k, v] for k, v in items.items()], numeric=False)

    def epoch_row(self, metrics: dict[str, Any]) -> None:
        """One compact row per epoch; the column header is printed once."""
        if self.silent:
            return
        keys = list(metrics)
        widths = [max(len(k), 9) for k in keys]
        if not self._epoch_header_printed:
            self.console.print("  ".join(k.rjust(w) for k, w in zip(keys, widths)), style="bold", markup=False)
            self._epoch_header_printed = True
        self.console.print("  ".join(_fmt(metrics[k]).rjust(w) for k, w in zip(keys, widths)), markup=False)

    # ---------------------------------------------------------------- header
    def header(self, command: str, device: str) -> None:
        import torch
        import torchvision

        from detcli import __version__

        cuda = torch.version.cuda or "none"
        self.print(
            f"detcli {__version__} {command} · Python {platform.python_version()} · torch {torch.__version__} "
            f"· torchvision {torchvision.__version__} · CUDA build {cuda} · device {device}"
        )
