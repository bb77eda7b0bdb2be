"""Console output: rich on a terminal, plain lines otherwise (CI logs), silent on non-zero ranks."""
from __future__ import annotations

import copy
import platform
import sys
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from detcli.progress import ProgressBar, RunClock, format_value, wrap_pairs


class EpochTable:
    """The per-epoch rows of a training run, under a header printed once, laid out for the console width.

    ``metrics`` maps a column name to its value; a value that is a dict is a group of columns (a detector's
    loss terms). Where the whole row fits the console, the group's columns sit in the row; where it does
    not, the row holds the other columns and the group follows on the line(s) below as ``name value`` pairs,
    so that no line wraps (results.csv keeps every value). The layout is chosen at the first row and kept.
    """

    min_width = 7  # "100/100", "0.1234", "1.2e-05"

    def __init__(self, console: Console):
        self.console = console
        self.widths: dict[str, int] | None = None
        self.grouped = False  # the groups go below the row

    @staticmethod
    def cell(value: Any) -> str:
        text = format_value(value)
        if isinstance(value, float) and len(text) > EpochTable.min_width and abs(value) < 1e4:
            text = f"{value:.1e}"
        return text

    def lines(self, metrics: dict[str, Any]) -> list[tuple[str, str]]:
        """The (text, style) lines that print ``metrics``: the header first, the first time."""
        flat = {k: v for key, value in metrics.items()
                for k, v in (value.items() if isinstance(value, dict) else [(key, value)])}
        out: list[tuple[str, str]] = []
        if self.widths is None:
            self.widths = {k: max(len(k), len(self.cell(v)), self.min_width) for k, v in flat.items()}
            row_width = sum(self.widths.values()) + 2 * (len(self.widths) - 1)
            self.grouped = row_width > self.console.width and any(isinstance(v, dict) for v in metrics.values())
            out.append(("  ".join(k.rjust(w) for k, w in self._columns(metrics)), "bold"))
        out.append(("  ".join(self.cell(flat.get(k, "")).rjust(w) for k, w in self._columns(metrics)), ""))
        if self.grouped:
            pairs = [f"{k} {self.cell(v)}" for value in metrics.values() if isinstance(value, dict)
                     for k, v in value.items()]
            out.extend((line, "dim") for line in wrap_pairs(pairs, self.console.width))
        return out

    def _columns(self, metrics: dict[str, Any]) -> list[tuple[str, int]]:
        assert self.widths is not None
        grouped = {k for v in metrics.values() if isinstance(v, dict) for k in v} if self.grouped else set()
        return [(k, w) for k, w in self.widths.items() if k not in grouped]


class Reporter:
    """What the CLI and the engine print. ``silent`` for non-zero DDP ranks.

    Text is always printed literally: category names, file names and preset strings come from user files,
    so no console here interprets rich markup (``[red]`` stays ``[red]``). detcli's own styling is applied
    with :class:`rich.text.Text` styles instead.
    """

    def __init__(self, silent: bool = False, force_plain: bool | None = None, file=None,
                 console: Console | None = None):
        """``console``: a rich console to print to (tests: ``Console(file=…, width=80, force_terminal=True)``)."""
        self.console = console or Console(file=file or sys.stdout, highlight=False, soft_wrap=False, markup=False)
        self.silent = silent
        self.rich = self.console.is_terminal if force_plain is None else not force_plain
        if not self.rich and console is None:
            self.console = Console(file=file or sys.stdout, highlight=False, no_color=True, width=160,
                                   soft_wrap=True, markup=False)
        self._epochs = EpochTable(self.console)

    # ---------------------------------------------------------------- basics
    def print(self, renderable: Any = "") -> None:
        """``renderable``; a table's title goes on a line of its own, as wide as the console (never folded to
        the table's width, which would split a path in its title mid-word)."""
        if self.silent:
            return
        if isinstance(renderable, Table) and renderable.title:
            title = renderable.title if isinstance(renderable.title, Text) else Text(str(renderable.title))
            self.console.print(Text.assemble(title, style="italic"), soft_wrap=True, highlight=False)
            renderable = copy.copy(renderable)
            renderable.title = None
        self.console.print(renderable, markup=False, highlight=False)

    def info(self, msg: str) -> None:
        self.print(msg)

    def warn(self, msg: str) -> None:
        if not self.silent:
            self.console.print(Text.assemble(("WARNING", "yellow"), " ", msg))

    def error(self, msg: str, label: str = "error:") -> None:
        """``label msg`` on stderr (``interrupted:`` for Ctrl-C)."""
        err = Console(stderr=True, highlight=False, no_color=not self.rich, soft_wrap=True,  # paths stay whole
                      markup=False)
        err.print(Text.assemble((label, "bold red"), " ", msg))

    def progress(self, iterable: Iterable, total: int | None = None, description: str = "",
                 run: RunClock | None = None) -> ProgressBar:
        """``iterable`` with a progress bar (sparse lines when plain); ``run`` adds the whole run's ETA."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        return ProgressBar(self, iterable, total, description, run)

    def table(self, title: str, columns: list[str], rows: list[list[Any]], numeric: bool = True) -> None:
        """A table; columns after the first are right-aligned when ``numeric``."""
        if self.silent:
            return
        table = Table(title=title, show_edge=self.rich, box=box.SQUARE if self.rich else None,
                      show_header=any(columns))
        for i, col in enumerate(columns):
            table.add_column(col, justify="right" if numeric and i > 0 else "left")
        for row in rows:
            table.add_row(*[Text(format_value(v)) for v in row])
        self.print(table)

    def key_values(self, title: str, items: dict[str, Any]) -> None:
        self.table(title, ["", ""], [[k, v] for k, v in items.items()], numeric=False)

    def epoch_row(self, metrics: dict[str, Any]) -> None:
        """One epoch of the run's table (:class:`EpochTable`: a dict value is a group of columns that goes
        below the row where the row would not fit the console); the header is printed once."""
        if self.silent:
            return
        for line, style in self._epochs.lines(metrics):
            self.console.print(line, style=style or None, markup=False, highlight=False)

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
        from detcli.cpus import wait_policy_note

        if wait_policy_note:
            self.print(wait_policy_note)
