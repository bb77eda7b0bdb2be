"""What a user sees while training, on 80- and 120-column terminals: the bar keeps its description, count,
elapsed time and ETAs (the epoch's and the run's) whatever the number of loss terms, which go below it; the
epoch table never wraps; table titles keep paths whole. Real trainer rows, with NanoDet-Plus's loss names."""
from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console
from rich.table import Table
from tests.support.toy_training import ToyDetector, loaders, train_cfg

from detcli.config.loader import load_preset
from detcli.console import Reporter
from detcli.engine.run_dir import new_run_dir
from detcli.engine.trainer import Trainer, _console_row
from detcli.models import build_model
from detcli.progress import RunClock, wrap_pairs
from detcli.structures import Target

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nanodet_loss_names() -> list[str]:
    """The loss terms NanoDet-Plus really returns (main head and AGM: six)."""
    model = build_model(load_preset("nanodet-plus-m")[0], 2, pretrained=False).train()
    target = Target(boxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]), labels=torch.tensor([1]))
    names = list(model.loss(torch.randn(2, 3, 128, 128), [target, target], [None, None], 0))
    assert len(names) == 6
    return names


class Screen(Reporter):
    """A Reporter on a terminal ``width`` columns wide that keeps each frame of the training bar as rendered."""

    def __init__(self, width: int):
        self.raw = io.StringIO()
        super().__init__(console=Console(file=self.raw, width=width, force_terminal=True, color_system=None))
        self.width, self.frames = width, []

    def progress(self, *args, **kwargs):
        bar = super().progress(*args, **kwargs)
        update = bar.update_postfix

        def snapshot(values):
            update(values)
            frame = Console(file=io.StringIO(), width=self.width, color_system=None)
            frame.print(bar.display.get_renderable())
            self.frames.append(frame.file.getvalue().rstrip("\n").split("\n"))

        bar.update_postfix = snapshot
        return bar

    def final(self) -> list[str]:
        """The terminal's lines at the end: rich's live-display controls (carriage return, erase line, cursor
        up) applied, so the transient bar is gone as it is on screen."""
        lines, row, col = [""], 0, 0
        for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", self.raw.getvalue()):
            if token == "\n":
                row, col = row + 1, 0
                lines.extend([""] * (row + 1 - len(lines)))
            elif token == "\r":
                col = 0
            elif token == "\x1b[2K":
                lines[row] = ""
            elif token == "\x1b[1A":
                row = max(0, row - 1)
            elif token and not token.startswith("\x1b"):
                line = lines[row].ljust(col)
                lines[row] = line[:col] + token + line[col + len(token):]
                col += len(token)
        return [line.rstrip() for line in lines if line.strip()]


def _train_on_screen(tmp_path, width: int, loss_names: list[str]) -> Screen:
    """Two epochs of the real Trainer (a toy network that returns NanoDet-Plus's loss terms) on a Screen."""

    class NamedLikeNanoDetPlus(ToyDetector):
        def loss(self, images, targets, metas, epoch):
            terms = super().loss(images, targets, metas, epoch)
            return {name: terms["loss_cls"] * (i + 1) / 3 for i, name in enumerate(loss_names)}

    torch.manual_seed(0)
    train, val, val_ds = loaders()
    screen = Screen(width)
    Trainer(load_preset("nanodet-plus-m")[0], train_cfg(2), NamedLikeNanoDetPlus(), train, val, val_ds,
            new_run_dir(tmp_path, f"w{width}"), screen, torch.device("cpu"), 0, False, None,
            {"argv": ["detcli", "train"]}, {"config": {}}).fit()
    return screen


BAR_LINE = re.compile(r"^epoch [12]/2 [━╸╺ ]{10,} [0-3]/4 \d+:\d\d:\d\d( eta (\d+:\d\d:\d\d|-:--:--))? "
                      r"· run eta (\d+:\d\d:\d\d|-:--:--)$")


@pytest.mark.parametrize("width", [80, 120])
def test_the_bar_keeps_count_elapsed_and_both_etas_and_the_losses_go_below(tmp_path, nanodet_loss_names, width):
    screen = _train_on_screen(tmp_path, width, nanodet_loss_names)
    assert len(screen.frames) == 8  # 2 epochs × 4 iterations: a frame as each iteration's values arrive
    labels = ["loss", "qfl", "bbox", "dfl", "aux_qfl", "aux_bbox", "aux_dfl", "lr"]
    for frame in screen.frames:
        assert all(len(line) <= width for line in frame), frame
        assert BAR_LINE.match(frame[0]), frame[0]
        values = "  ".join(line.strip() for line in frame[1:])
        pairs = dict(re.findall(r"(\S+) (\S+)", values))
        assert list(pairs) == labels, frame  # every term, each name beside its value
    assert all("eta " in frame[0] for frame in screen.frames)  # the epoch's ETA until its last iteration
    assert all(re.search(r"run eta \d+:\d\d:\d\d$", frame[0]) for frame in screen.frames[1:])  # once one is done
    assert len(screen.frames[0]) == (3 if width == 80 else 2)  # the losses wrap below the bar, never into it


@pytest.mark.parametrize("width", [80, 120])
def test_the_epoch_table_fits_and_shows_every_value(tmp_path, nanodet_loss_names, width):
    screen = _train_on_screen(tmp_path, width, nanodet_loss_names)
    lines = screen.final()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert not any(re.match(r"epoch \d/2 ", line) for line in lines)  # the transient bar is gone
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["epoch", "elapsed", "loss"])
    rows = [i for i, line in enumerate(lines) if re.match(r"^\s+[12]/2\s", line)]
    assert len(rows) == 2 and rows[0] == header + 1
    heads = lines[header].split()
    if width == 120:  # the whole row fits: one line per epoch, a column per term
        assert heads == ["epoch", "elapsed", "loss", "qfl", "bbox", "dfl", "aux_qfl", "aux_bbox", "aux_dfl", "lr",
                         "AP50-95", "AP50", "best"]
        assert rows[1] == rows[0] + 1 and len(lines[rows[0]].split()) == len(heads)
    else:  # 80 columns: the terms as name-value pairs below each row
        assert heads == ["epoch", "elapsed", "loss", "lr", "AP50-95", "AP50", "best"]
        below = " ".join(lines[rows[0] + 1:rows[1]])
        assert [k for k, _ in re.findall(r"(\S+) (\S+)", below)] == ["qfl", "bbox", "dfl", "aux_qfl", "aux_bbox",
                                                                    "aux_dfl"]
    first = lines[rows[0]].split()
    assert first[0] == "1/2" and re.fullmatch(r"\d+\.\ds", first[1])  # elapsed: the run's time so far
    assert float(first[heads.index("AP50-95")]) >= 0 and first[heads.index("best")] == first[heads.index("AP50-95")]


def test_the_console_row_sums_the_terms_and_keeps_them_as_a_group(nanodet_loss_names):
    row = {"epoch": 3, "time": 125.0, **{f"train/{n}": 0.5 for n in nanodet_loss_names}, "lr/pg0": 0.001,
           "metrics/AP50-95": None, "metrics/AP50": None}
    out = _console_row(row, 100, -1.0)
    assert out["epoch"] == "  3/100" and out["elapsed"] == "2m05s" and out["loss"] == pytest.approx(3.0)
    assert list(out["losses"]) == ["qfl", "bbox", "dfl", "aux_qfl", "aux_bbox", "aux_dfl"]
    assert [k for k in out if k != "losses"] == ["epoch", "elapsed", "loss", "lr", "AP50-95", "AP50", "best"]


def test_the_run_eta_counts_every_iteration_left_at_the_rate_so_far():
    now = [0.0]
    run = RunClock(total=100, done=20, clock=lambda: now[0])  # a resumed run: 20 iterations done before
    assert run.remaining() is None
    run.start()
    for _ in range(10):
        now[0] += 2.0
        run.step()
    now[0] += 20.0  # a validation: counted in the rate from now on
    assert run.remaining() == pytest.approx(40.0 / 10 * 70)


def test_plain_lines_give_the_run_eta_too():
    text = io.StringIO()
    bar = Reporter(force_plain=True, file=text).progress(range(4), description="epoch 2/5",
                                                         run=RunClock(total=20, done=4))
    now = [0.0]
    bar.clock = bar.run.clock = lambda: now[0]
    for _ in bar:
        now[0] += 1.0
        bar.update_postfix({"loss": 0.5})
    assert text.getvalue().splitlines() == ["epoch 2/5 4/4 4.0s run eta 12.0s loss 0.5"]


def test_pairs_wrap_whole_at_the_width():
    pairs = ["qfl 0.7134", "bbox 0.9512", "dfl 0.3123", "aux_qfl 0.7011"]
    assert wrap_pairs(pairs, 30) == ["  qfl 0.7134  bbox 0.9512", "  dfl 0.3123  aux_qfl 0.7011"]
    assert wrap_pairs(["a_very_long_name 1"], 10) == ["  a_very_long_name 1"]  # too long: alone, never split


@pytest.mark.parametrize("width", [80, 120])
def test_table_titles_keep_paths_whole(width):
    path = "/data/datasets/coco2017/annotations/instances_train2017.json"
    raw = io.StringIO()
    rep = Reporter(console=Console(file=raw, width=width, force_terminal=True, color_system=None))
    table = Table(title=f"train: {path}")  # as the dataset summary builds it
    table.add_column("item")
    table.add_column("count")
    table.add_row("images", "8")
    rep.print(table)
    rep.table(f"per class ({path})", ["class", "AP"], [["a", 0.5]])
    lines = raw.getvalue().splitlines()
    assert f"train: {path}" in lines and f"per class ({path})" in lines, raw.getvalue()
    assert table.title == f"train: {path}"  # the caller's table is not changed
