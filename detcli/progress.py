"""Progress of a loop on the console: a rich bar on a terminal, sparse lines in logs, with the whole run's ETA.

On a terminal the bar line holds only what keeps its width whatever the model: description, bar, count,
elapsed time, the loop's ETA and the run's ETA; the running values (a detector's loss terms, lr, memory) go
on the line(s) below it, wrapped at the console width. At 80 columns a NanoDet-Plus epoch reads::

    epoch 3/8 ━━━━━━━━━━━━━━━━━━━━━━━━━ 120/160 0:02:05 eta 0:00:40 · run eta 0:12:30
      loss 2.345  qfl 0.7134  bbox 0.9512  dfl 0.3123  aux_qfl 0.7011
      aux_bbox 0.9402  aux_dfl 0.3088  lr 0.0009877
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

if TYPE_CHECKING:
    from detcli.console import Reporter


def format_value(value: Any) -> str:
    """A number as the console shows it: 4 significant digits, ``-`` for NaN."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def format_duration(seconds: float) -> str:
    """``42.0s``, ``3m05s``, ``2h07m`` (logs and the epoch table)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def clock_time(seconds: float | None) -> str:
    """``0:02:05`` as rich's time columns write it; ``-:--:--`` while unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def wrap_pairs(pairs: list[str], width: int, indent: int = 2, sep: str = "  ") -> list[str]:
    """``name value`` pairs on lines of at most ``width`` characters (each line indented), never splitting one."""
    lines: list[str] = []
    line = ""
    for pair in pairs:
        candidate = f"{line}{sep}{pair}" if line else pair
        if line and indent + len(candidate) > width:
            lines.append(" " * indent + line)
            candidate = pair
        line = candidate
    if line:
        lines.append(" " * indent + line)
    return lines


class RunClock:
    """Where a whole training run stands, for the run ETA.

    ``total`` training iterations in all (epochs × iterations per epoch), ``done`` of them before this process
    began (a resumed run). The time left is the wall time since this process' first iteration, per iteration
    trained since, times the iterations left: validation, checkpoints and plots count at their share of the
    time so far (nothing before the first validation).
    """

    def __init__(self, total: int, done: int = 0, clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.clock = int(total), int(done), clock
        self.started: float | None = None
        self.trained = 0  # iterations since ``started``

    def start(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def step(self) -> None:
        self.start()
        self.trained += 1

    def remaining(self) -> float | None:
        """Seconds left in the run; None before the first iteration ends."""
        if self.started is None or self.trained == 0:
            return None
        left = self.total - self.done - self.trained
        return (self.clock() - self.started) / self.trained * max(0, left)


class _EtaColumn(ProgressColumn):
    """``eta 0:00:40`` (this loop, from rich's speed estimate) and, for a training epoch, ``run eta 0:12:30``."""

    def render(self, task: Task) -> Text:
        parts = []
        if task.total is not None and not task.finished:
            parts.append(f"eta {clock_time(task.time_remaining)}")
        if task.fields.get("run") is not None:
            parts.append(f"run eta {clock_time(task.fields.get('run_eta'))}")
        return Text(" · ".join(parts), style="cyan")


class _ElapsedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(clock_time(task.finished_time if task.finished else task.elapsed), style="yellow")


class _BarWithValues(Progress):
    """A rich Progress whose running values are printed below the bar, wrapped at the console width."""

    def __init__(self, *columns: Any, values: Callable[[], list[str]], console: Console, **kwargs: Any):
        self._values, self._console = values, console  # before Progress.__init__, which renders once
        super().__init__(*columns, console=console, **kwargs)

    def get_renderables(self) -> Iterable[Any]:
        yield self.make_tasks_table(self.tasks)
        lines = wrap_pairs(self._values(), self._console.width)
        if lines:
            yield Text("\n".join(lines), style="dim", no_wrap=True, overflow="ellipsis")


class ProgressBar:
    """Iterator wrapper returned by :meth:`Reporter.progress`; ``run`` (a :class:`RunClock`) adds the run ETA."""

    min_interval = 5.0  # plain (log) mode: seconds at least between two lines, besides ~10% of ``total``

    def __init__(self, reporter: "Reporter", iterable: Iterable, total: int | None, description: str,
                 run: RunClock | None = None):
        self.reporter, self.iterable, self.total, self.description = reporter, iterable, total, description
        self.run = run
        self.clock = time.monotonic  # seconds; a fake clock in tests
        self.postfix: dict[str, Any] = {}
        self.display: Progress | None = None  # the rich display while it runs (terminal mode)

    def update_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = dict(values)

    def _pairs(self) -> list[str]:
        return [f"{k} {format_value(v)}" for k, v in self.postfix.items()]

    def __iter__(self) -> Iterator:
        rep = self.reporter
        if self.run is not None:
            self.run.start()
        if rep.silent:
            for item in self.iterable:
                yield item
                self._done()
            return
        if not rep.rich:
            yield from self._plain()
            return
        yield from self._rich()

    def _done(self) -> None:
        """One item done (the caller's loop body returned): count it on the run clock."""
        if self.run is not None:
            self.run.step()

    def _rich(self) -> Iterator:
        width = self.reporter.console.width
        count = 2 * len(str(self.total or 0)) + 1
        times = len(" 0:00:00 eta 0:00:00") + (len(" · run eta 00:00:00") if self.run is not None else 0)
        bar_width = max(8, min(40, width - len(self.description) - count - times - 3))
        columns = (
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(bar_width=bar_width),
            MofNCompleteColumn(),
            _ElapsedColumn(),
            _EtaColumn(),
        )
        run = self.run
        with _BarWithValues(*columns, values=self._pairs, console=self.reporter.console, transient=True) as bar:
            self.display = bar
            task = bar.add_task(self.description, total=self.total, run=run,
                                run_eta=run.remaining() if run is not None else None)  # known from epoch 2 on
            try:
                for item in self.iterable:
                    yield item
                    self._done()
                    bar.update(task, advance=1, run_eta=run.remaining() if run is not None else None)
            finally:
                self.display = None

    def _plain(self) -> Iterator:
        """Sparse lines for logs: at most one per ~10% of ``total`` and per ``min_interval`` seconds, and
        always the last one; each with the elapsed time and, when ``total`` is known, an ETA."""
        start = last_time = self.clock()
        step = -(-self.total // 10) if self.total else 1  # ceil(total / 10)
        n = last_n = 0
        for item in self.iterable:
            yield item
            self._done()
            n += 1
            now = self.clock()
            if n == self.total or (n - last_n >= step and now - last_time >= self.min_interval):
                self._plain_line(n, now - start)
                last_n, last_time = n, now
        if n != last_n and n != self.total:  # ended before ``total`` (or there is none): still say where
            self._plain_line(n, self.clock() - start)

    def _plain_line(self, n: int, elapsed: float) -> None:
        parts = [self.description, f"{n}/{self.total}" if self.total else str(n), format_duration(elapsed)]
        if self.total and n < self.total:
            parts.append(f"eta {format_duration(elapsed / n * (self.total - n))}")
        run_left = self.run.remaining() if self.run is not None else None
        if run_left:
            parts.append(f"run eta {format_duration(run_left)}")
        parts.extend(self._pairs())
        self.reporter.console.print(" ".join(p for p in parts if p), highlight=False, markup=False)


__all__ = ["ProgressBar", "RunClock", "format_duration", "format_value", "wrap_pairs"]
