"""TensorBoard logging (``--tensorboard``, ``train.tensorboard``): a clear message naming the extra when the package
is missing. The event file a run writes is read back in ``tests/e2e/test_api_train.py``
(:func:`tests.support.tensorboard_events.check_event_file`), on the API test's own training run."""
from __future__ import annotations

import sys

import pytest
import torch

from detcli.api.train import train
from detcli.errors import DetcliError

torch.set_num_threads(1)


@pytest.fixture
def no_tensorboard(monkeypatch):
    """The ``tensorboard`` package hidden, as where it is not installed."""
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard → ImportError


def test_missing_package_is_a_message_naming_the_extra_before_a_run_folder(tmp_path, tiny_data, no_tensorboard):
    with pytest.raises(DetcliError, match=r'pip install "detcli\[tensorboard\]"'):
        train("nanodet-plus-m", tiny_data, epochs=1, project=tmp_path / "runs", tensorboard=True, quiet=True)
    with pytest.raises(DetcliError, match=r"train\.tensorboard\) needs the tensorboard package"):  # the preset field
        train("nanodet-plus-m", tiny_data, epochs=1, project=tmp_path / "runs", overrides=["train.tensorboard=true"],
              quiet=True)
    assert not (tmp_path / "runs").exists()  # nothing made


def test_missing_package_through_the_cli_exits_2(tmp_path, tiny_data, no_tensorboard, monkeypatch, capsys):
    from detcli.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["detcli", "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data),
                                      "--epochs", "1", "--tensorboard", "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pip install "detcli[tensorboard]"' in " ".join(err.split())
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
