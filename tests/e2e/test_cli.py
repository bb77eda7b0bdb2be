"""The CLI as a user meets it: help texts, clear errors without tracebacks, and train → eval → predict."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.checkpoints.io import load_checkpoint
from tests.support.cli_subprocess import run_cli, run_cli_forked


def test_help_shows_examples(tmp_path: Path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and "detcli train --preset nanodet-plus-m" in top.stdout
    for cmd in ("train", "eval", "predict", "export"):
        out = run_cli(cmd, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "Examples" in out.stdout, out.stdout
    assert "detcli inspect-anchors --preset retinanet-r50-fpn" in top.stdout


def _examples(help_text: str) -> list[str]:
    """The lines of the help's Examples block (up to the next section), blank lines dropped."""
    block = help_text.split("Examples", 1)[1].split("\n", 1)[1]
    block = block.split("\nOptions:", 1)[0].split("\nArguments:", 1)[0].split("\nCommands:", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["predict"]])
def test_help_at_80_columns_keeps_each_example_on_one_line(tmp_path: Path, cmd):
    out = run_cli(*cmd, "--help", cwd=tmp_path, COLUMNS="80")
    assert out.returncode == 0, out.stderr
    examples = _examples(out.stdout)
    assert len(examples) >= 3
    for line in examples:  # a wrapped command would leave a line that does not start a command
        assert line.startswith(("    detcli ", "    torchrun ")) and len(line) <= 80, line


@pytest.mark.parametrize(
    "cmd, own",
    [("eval", "--data DATA Dataset: a YAML (COCO, YOLO data.yaml, VOC), a COCO/YOLO/VOC folder, or 'demo' "
              "(default: the checkpoint's dataset)"),
     ("predict", "predictions.json (COCO results format, image ids numbered from 1 in reading order")],
)
def test_eval_and_predict_help_describe_their_own_options(tmp_path: Path, cmd, own):
    text = " ".join(run_cli(cmd, "--help", cwd=tmp_path, COLUMNS="80").stdout.split())  # undo the wrapping
    assert "--device DEVICE One device: cpu, 0 or cuda:1." in text and "DDP" not in text
    assert "--imgsz N Input size, long side (default: the size the checkpoint was trained at" in text
    assert "e.g. test.iou_thr=0.5" in text and "train.optimizer" not in text
    assert own in text


def test_model_summary_labels_each_family_own_parameter_count():
    """NanoDet's README counts Conv2d parameters; MMDetection counts every parameter."""
    from detcli.models.summary import model_summary
    from detcli.config.loader import load_preset
    from detcli.models import build_model

    class Recorder:
        def key_values(self, title, items):
            self.items = items

    rows = {}
    for name in ("nanodet-plus-m", "retinanet-r18-fpn"):
        preset, _ = load_preset(name)
        reporter = Recorder()
        model_summary(reporter, preset, build_model(preset, 5, pretrained=False), (64, 64))
        rows[name] = reporter.items
    nanodet, retina = rows["nanodet-plus-m"], rows["retinanet-r18-fpn"]
    assert nanodet["conv parameters (inference graph)"].endswith(" (as NanoDet's README counts)")
    assert nanodet["parameters (inference graph)"].replace(",", "").isdigit()
    assert retina["parameters (inference graph)"].endswith(" (as MMDetection counts)")
    assert retina["conv parameters (inference graph)"].replace(",", "").isdigit()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--preset", "nanodet-plus-n"], "unknown preset 'nanodet-plus-n'"),
        (["train", "--preset", "nanodet-plus-m", "--set", "model.widht=1.5x"], "did you mean 'model.width'"),
        (["train", "--preset", "nanodet-plus-m", "--data", "nowhere.yaml"], "nowhere.yaml does not exist"),
        (["train"], "give --preset"),
        (["predict", "no_such_dir/"], "source not found: 'no_such_dir/'"),
        (["eval"], "no trained run found under runs/train"),
        (["eval", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
        (["train", "--preset", "nanodet-plus-m", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
        (["train", "--preset", "nanodet-plus-m", "--val-ann", "x.json"], "--val-ann and --val-images are both needed"),
        (["eval", "--val-ann", "nope.json", "--val-images", "."], "nope.json does not exist"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(tmp_path: Path, args, expected):
    out = run_cli_forked(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_corrupt_checkpoint_is_reported(tmp_path: Path):
    (tmp_path / "bad.pt").write_bytes(b"\x00not a checkpoint")
    out = run_cli_forked("eval", "--weights", "bad.pt", cwd=tmp_path)
    assert out.returncode == 2 and "bad.pt" in out.stderr and "Traceback" not in out.stderr


def test_train_eval_predict_end_to_end(tmp_path: Path, tiny_data: Path):
    train = run_cli_forked(
        "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--epochs", "2", "--batch", "4",
        "--imgsz", "128", "--workers", "0", "--set", "train.val_interval=1", cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "train"
    for name in ("preset.yaml", "run.json", "results.csv", "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file(), name
    rows = (run / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,") and "metrics/AP50-95" in rows[0]
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["seed"] == 0 and "torch" in manifest["versions"]
    assert "parameters (inference graph)" in train.stdout  # the preset summary
    assert load_checkpoint(run / "weights" / "best.pt")["input_size"] == [128, 128]  # the size it trained at

    # eval without --data or --imgsz: the dataset and the input size recorded in the checkpoint
    ev = run_cli_forked("eval", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())
    assert metrics["imgsz"] == [128, 128]
    assert set(metrics["stats"]) >= {"AP50-95", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}
    assert [c["class"] for c in metrics["per_class"]] == ["circle", "square", "triangle", "star", "ring"]

    # predict on the val folder with the latest run's best.pt
    val_dir = tiny_data.parent / "val"
    pr = run_cli_forked("predict", str(val_dir), "--conf", "0.01", cwd=tmp_path)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert "input 128×128" in pr.stdout
    out = tmp_path / "runs" / "predict" / "predict"
    assert len(list(out.glob("*.jpg"))) == 4
    preds = json.loads((out / "predictions.json").read_text())
    assert preds and all({"image_id", "category_id", "bbox", "score", "file_name"} <= set(p) for p in preds)

    # resuming a finished run says so, and leaves its files alone
    before = (run / "weights" / "best.pt").read_bytes()
    again = run_cli_forked("train", "--resume", cwd=tmp_path)
    assert again.returncode == 2 and "already finished its 2 epochs" in again.stderr, again.stderr
    assert (run / "weights" / "best.pt").read_bytes() == before


def test_retinanet_train_eval_predict_small(tmp_path: Path, tiny_data: Path):
    """RetinaNet goes through the same CLI as NanoDet-Plus (R18 at a small input size)."""
    train = run_cli_forked(
        "train", "--preset", "retinanet-r18-fpn", "--epochs", "1", "--batch", "2",
        "--train-ann", str(tiny_data.parent / "annotations" / "instances_train.json"),
        "--train-images", str(tiny_data.parent / "train"),
        "--val-ann", str(tiny_data.parent / "annotations" / "instances_val.json"),
        "--val-images", str(tiny_data.parent / "val"),
        "--imgsz", "160", "--workers", "0", "--name", "retina", cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "linear scaling" in train.stdout  # lr 0.01 at batch 16 scaled to batch 2, said in the summary
    assert "backbone initialised randomly" in train.stdout  # no ImageNet file here: said plainly
    best = tmp_path / "runs" / "train" / "retina" / "weights" / "best.pt"
    assert best.is_file()
    ev = run_cli_forked("eval", "--weights", str(best), "--imgsz", "160", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    pr = run_cli_forked("predict", str(tiny_data.parent / "val"), "--weights", str(best), "--conf", "0.01",
                 "--imgsz", "160", cwd=tmp_path)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert (tmp_path / "runs" / "predict" / "predict" / "predictions.json").is_file()


@pytest.mark.slow  # through the CLI; test_engine's DDP test covers the trainer under gloo by default
def test_nanodet_ddp_two_cpu_processes(tmp_path: Path, tiny_data: Path):
    """DDP on the gloo backend with 2 CPU workers (DETCLI_DDP_CPU_PROCS), through the CLI."""
    out = run_cli_forked(
        "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--epochs", "1", "--batch", "4",
        "--imgsz", "128", "--workers", "0", "--device", "cpu", "--name", "ddp", cwd=tmp_path, timeout=600,
        DETCLI_DDP_CPU_PROCS="2",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "ddp"
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert (run / "weights" / "last.pt").is_file() and (run / "weights" / "best.pt").is_file()
    assert not (tmp_path / "runs" / "train" / "ddp2").exists()  # one run folder for both ranks


@pytest.mark.parametrize("family", ["nanodet", "retinanet"])
def test_official_checkpoint_formats_load_through_the_cli(tmp_path: Path, tiny_data: Path, family: str):
    """NanoDet Lightning-style (``avg_model.`` EMA prefix) and MMDetection (``state_dict``/``meta``) files."""
    import torch

    from detcli.config.loader import load_preset
    from detcli.models import build_model

    preset = "nanodet-plus-m" if family == "nanodet" else "retinanet-r18-fpn"
    model = build_model(load_preset(preset)[0], 80, pretrained=False)
    sd = model.inference_state_dict()
    if family == "nanodet":
        ckpt = {"state_dict": {**{f"model.{k}": v for k, v in sd.items()},
                               **{f"avg_model.{k}": v for k, v in sd.items()}}, "epoch": 3}
    else:
        ckpt = {"state_dict": sd, "meta": {"mmdet_version": "3.3.0"}}
    torch.save(ckpt, tmp_path / "official.pth")
    out = run_cli_forked("predict", str(tiny_data.parent / "val"), "--preset", preset, "--weights", "official.pth",
                  "--imgsz", "160", "--conf", "0.5", "--name", family, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs" / "predict" / family / "predictions.json").is_file()
    wrong = run_cli_forked("predict", str(tiny_data.parent / "val"), "--preset",
                    "retinanet-r18-fpn" if family == "nanodet" else "nanodet-plus-m", "--weights", "official.pth",
                    cwd=tmp_path)
    assert wrong.returncode == 2 and "official.pth" in wrong.stderr and "Traceback" not in wrong.stderr


def test_unavailable_gpu_fails_before_a_run_folder_is_made(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = run_cli_forked("train", "--preset", "nanodet-plus-m", "--device", "0,1", cwd=tmp_path)
    assert out.returncode == 2 and "CUDA is not available" in out.stderr and "use --device cpu" in out.stderr
    assert not (tmp_path / "runs").exists()
