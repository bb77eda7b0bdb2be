"""kill -9 at any write of a run's first epoch, a full disk, a second run into a folder in use.

A run is killed (SIGKILL, through tests/support/write_faults.py) right after or during one of its atomic writes, then
``detcli train --resume`` must finish it exactly as the uninterrupted run: the same results.csv (but the time
column) and the same weights, optimizer and EMA state in last.pt and best.pt. The first-epoch writes are listed
in FIRST_EPOCH_WRITES and checked against what an uninterrupted run writes, so a new write is a new kill point.
A few kill points run by default, the others with ``-m slow``.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.support.cli_subprocess import run_cli_forked

from detcli.checkpoints.io import load_checkpoint
from detcli.engine.run_dir import ResultsCSV
from detcli.engine.run_lock import LOCK_NAME, RunFolderInUse, RunLock
from detcli.errors import WriteError
from detcli.fileio import atomic_write

RUN = Path("runs/train/run")
# 8 images, batch 4: 2 iterations per epoch, a validation each epoch (best.pt in epoch 1)
TRAIN = ["train", "--preset", "nanodet-plus-m", "--epochs", "2", "--batch", "4", "--imgsz", "64", "--workers", "0",
         "--set", "train.val_interval=1", "--name", "run"]
FIRST_EPOCH_WRITES = [
    "run.json",  # the start record, before the data is read
    "preset.yaml", "run.json",  # the trainer's run files
    "labels.jpg", "train_batch0.jpg", "train_batch1.jpg",
    "results.csv", "weights/best.pt", "weights/last.pt", "results.png",
]
HOOK = {"DETCLI_TEST_CHILD_HOOK": "write_faults:install"}


def _train(cwd: Path, data: Path, *extra: str, **env: str):
    return run_cli_forked(*TRAIN, "--data", str(data), *extra, cwd=cwd, **HOOK, **env)


def _resume(cwd: Path, *extra: str):
    return run_cli_forked("train", "--resume", str(RUN), *extra, cwd=cwd)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data) -> tuple[Path, list[str]]:
    """The uninterrupted run's folder and its atomic writes (paths relative to the run folder), in order."""
    cwd = tmp_path_factory.mktemp("reference")
    out = _train(cwd, tiny_data, DETCLI_WRITE_LOG=str(cwd / "writes.txt"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    writes = [os.path.relpath(line, RUN) for line in (cwd / "writes.txt").read_text().split()]
    return cwd / RUN, writes


def _rows(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "time"} for row in ResultsCSV(run / "results.csv").read()[1]]


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint entry, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def assert_same_run(run: Path, reference: Path) -> None:
    """results.csv (without the time column) and the weights, EMA and optimizer state of both checkpoints."""
    assert _rows(run) == _rows(reference) and len(_rows(run)) == 2
    for name in ("last.pt", "best.pt"):
        got, want = load_checkpoint(run / "weights" / name), load_checkpoint(reference / "weights" / name)
        assert got["epoch"] == want["epoch"] and got["best_map"] == want["best_map"], name
        for key in ("model", "ema", "optimizer"):
            a, b = _tensors(got[key]), _tensors(want[key])
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, key)
    left = [p.name for p in run.rglob(".*")]  # no temporary, no lock file
    assert left == [], left


def test_the_kill_points_are_every_write_of_the_first_epoch(reference):
    run, writes = reference
    assert writes[:len(FIRST_EPOCH_WRITES)] == FIRST_EPOCH_WRITES
    assert writes[len(FIRST_EPOCH_WRITES)] == "results.csv"  # epoch 2 begins: its writes are resumed from last.pt
    assert json.loads((run / "run.json").read_text())["start"]["train_args"]["seed"] == 0


def _point(kind: str, name: str, n: int = 1, slow: bool = True):
    return pytest.param(kind, name, n, id=f"{kind}-{name}-{n}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("kind, name, n", [
    _point("kill-after", "run.json", 1, slow=False),  # only the start record: the run starts again from it
    _point("kill-during", "best.pt", 1, slow=False),  # the first checkpoint write (issue 19)
    _point("kill-after", "best.pt", 1, slow=False),  # best.pt without last.pt
    _point("kill-after", "results.png", 1, slow=False),  # epoch 1 complete: resumed from last.pt
    _point("kill-after", "preset.yaml"),
    _point("kill-after", "run.json", 2),
    _point("kill-after", "labels.jpg"),
    _point("kill-after", "train_batch0.jpg"),
    _point("kill-after", "train_batch1.jpg"),
    _point("kill-after", "results.csv"),
    _point("kill-after", "last.pt"),
    _point("kill-during", "run.json", 2),
    _point("kill-during", "last.pt"),
])
def test_kill_at_a_first_epoch_write_then_resume_finishes_the_run(tmp_path, tiny_data, reference, kind, name, n):
    killed = _train(tmp_path, tiny_data, DETCLI_WRITE_FAULT=f"{kind}:{name}:{n}")
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]  # SIGKILL where asked
    epoch_saved = kind == "kill-after" and name in ("last.pt", "results.png")
    assert (tmp_path / RUN / "weights" / "last.pt").exists() == epoch_saved
    out = _resume(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert_same_run(tmp_path / RUN, reference[0])
    resumes = json.loads((tmp_path / RUN / "run.json").read_text())["resumes"]
    assert [r["from_epoch"] for r in resumes] == [1 if epoch_saved else 0]  # from last.pt, or again from epoch 1


def test_killed_before_the_start_record_says_there_is_nothing_to_resume(tmp_path, tiny_data):
    killed = _train(tmp_path, tiny_data, DETCLI_WRITE_FAULT="kill-during:run.json:1")
    assert killed.returncode == -9
    for args in ([str(RUN)], []):  # the folder named, the latest run
        out = run_cli_forked("train", "--resume", *args, cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert "holds neither weights/last.pt nor a start record (run.json): the run stopped before it saved " \
           "anything; start it again" in _resume(tmp_path).stderr
    assert "no run to continue under runs/train/" in run_cli_forked("train", "--resume", cwd=tmp_path).stderr


def test_a_new_run_over_a_finished_one_resumes_itself_not_the_old_one(tmp_path, tiny_data, reference):
    """--exist-ok into a finished run's folder, killed before its first last.pt: the old last.pt stays there, but
    --resume starts the new run again (its start record's run id differs from the old checkpoint's)."""
    shutil.copytree(reference[0], tmp_path / RUN)
    killed = _train(tmp_path, tiny_data, "--exist-ok", DETCLI_WRITE_FAULT="kill-after:best.pt:1")
    assert killed.returncode == -9
    assert load_checkpoint(tmp_path / RUN / "weights" / "last.pt")["epoch"] == 2  # the old run's
    out = _resume(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "is of an earlier run in this folder" in out.stdout
    assert_same_run(tmp_path / RUN, reference[0])


# ---------------------------------------------------------------------------------------------- full disk
def test_torch_save_on_a_full_disk_is_a_write_error(tmp_path):
    """torch.save turns ENOSPC into RuntimeError ('unexpected pos …'); atomic_write finds the OSError in it."""
    from tests.support.write_faults import _FullDisk

    payload = {"w": torch.ones(100_000)}
    with pytest.raises(RuntimeError) as raw:  # what the writer itself raises
        torch.save(payload, _FullDisk(io.BytesIO()))
    assert isinstance(raw.value.__context__, OSError) and raw.value.__context__.errno == errno.ENOSPC
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")
    with pytest.raises(WriteError, match=r"cannot write .*last\.pt: No space left on device \(the disk is full"):
        atomic_write(target, lambda f: torch.save(payload, _FullDisk(f)))
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(ValueError, match="a bug"):  # an exception that no OSError caused is not a disk problem
        atomic_write(target, lambda f: (_ for _ in ()).throw(ValueError("a bug")))


def test_full_disk_at_the_first_checkpoint_says_so_and_resumes(tmp_path, tiny_data, reference):
    out = _train(tmp_path, tiny_data, DETCLI_WRITE_FAULT="enospc:best.pt:1")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    text = " ".join(out.stderr.split())
    assert "cannot write runs/train/run/weights/best.pt: No space left on device (the disk is full" in text
    assert "Training stopped at epoch 1/2: no checkpoint was written" in text
    assert text.rstrip().endswith("continue with: detcli train --resume runs/train/run")
    assert "Traceback" not in out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / RUN / "weights").iterdir()) == []
    resumed = _resume(tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_same_run(tmp_path / RUN, reference[0])


# ---------------------------------------------------------------------------------------------- run folder lock
def test_run_lock_is_exclusive_and_a_dead_holder_never_blocks(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 999999999, "argv": ["detcli", "train"]}\n')  # left by a kill -9
    with RunLock(tmp_path, ["detcli", "train", "--name", "run"]):
        with pytest.raises(RunFolderInUse, match=rf"in use by another training run \(process {os.getpid()} on .*: "
                                                 r"detcli train --name run\)"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # removed when the run ends
    with RunLock(tmp_path):
        pass


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, tiny_data):
    run = tmp_path / RUN
    run.mkdir(parents=True)
    with RunLock(run, ["detcli", "train", "--name", "run"]):
        for args in (["--exist-ok"], ["--resume", str(RUN)]):
            out = run_cli_forked(*TRAIN, "--data", str(tiny_data), *args, cwd=tmp_path)
            assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
            text = " ".join(out.stderr.split())
            assert f"runs/train/run is in use by another training run (process {os.getpid()}" in text, text
            assert "Traceback" not in out.stdout + out.stderr
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]  # nothing written beside the running one
