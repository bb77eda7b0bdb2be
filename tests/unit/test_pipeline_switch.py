"""The family-neutral pipeline switch (``augment.switch``) and the RTMDet augment schema.

Schema and preset errors, :class:`EpochStages`, ``build_transform`` per family (NanoDet-Plus and RetinaNet
untouched), and the trainer serving stage 2 from the right epoch: straight, after ``--resume`` into stage 2,
with DataLoader workers, and (``-m slow``) in 2-process DDP on every rank.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from detcli.config.loader import load_preset
from detcli.config.schema import (
    AugmentSwitch, EMAConfig, OptimizerConfig, RTMDetAugmentConfig, ScheduleConfig, TrainConfig,
)
from detcli.checkpoints.io import load_checkpoint
from detcli.data.build import build_dataset, build_transform
from detcli.data.coco import CocoDetection
from detcli.data.collate import collate
from detcli.data.dataset_config import Split
from detcli.data.loader import build_dataloader
from detcli.data.transforms.nanodet import NanoDetTransform
from detcli.data.transforms.pipeline import Pipeline
from detcli.data.transforms.resize import KeepRatioResizeTransform
from detcli.data.transforms.stages import EpochStages
from detcli.engine.run_dir import new_run_dir
from detcli.engine.session import ProcessInfo, TrainParts, TrainSetup, launch_training
from detcli.engine.trainer import Trainer
from detcli.errors import PresetError
from detcli.models.base import Detector
from detcli.structures import Detections

torch.set_num_threads(1)
STAGE2 = {"mosaic": None, "mixup": None, "resize": {"scale": [640, 640]}}


# ---------------------------------------------------------------------------------------------- schema
def test_rtmdet_defaults_are_the_l_config_and_stage2_is_preset_data():
    aug = RTMDetAugmentConfig.model_validate({"type": "rtmdet", "switch": {"epochs_from_end": 20, "set": STAGE2}})
    assert aug.mosaic.img_scale == (640, 640) and aug.mosaic.center_ratio_range == (0.5, 1.5)
    assert (aug.mosaic.max_cached_images, aug.mosaic.random_pop, aug.mosaic.pad_val) == (40, True, 114.0)
    assert aug.resize.scale == (1280, 1280) and aug.resize.ratio_range == (0.1, 2.0) and aug.resize.keep_ratio
    assert aug.crop.crop_size == (640, 640) and not aug.crop.allow_negative_crop
    assert (aug.hsv.hue_delta, aug.hsv.saturation_delta, aug.hsv.value_delta) == (5, 30, 30)
    assert aug.flip == 0.5 and aug.pad.size == (640, 640) and aug.pad.pad_val == 114.0
    mix = aug.mixup
    assert (mix.img_scale, mix.ratio_range, mix.flip_ratio, mix.max_iters) == ((640, 640), (1.0, 1.0), 0.5, 15)
    assert (mix.max_cached_images, mix.random_pop, mix.prob) == (20, True, 1.0)
    stage2 = aug.switched()
    assert stage2.mosaic is None and stage2.mixup is None and stage2.switch is None
    assert stage2.resize.scale == (640, 640) and stage2.resize.ratio_range == (0.1, 2.0)  # merged, not replaced
    assert aug.switch.start_epoch(300) == 280 and aug.switch.start_epoch(12) == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"mosaic": {"max_cached_images": 3}}, "greater than or equal to 4"),
        ({"mixup": {"max_cached_images": 1}}, "greater than or equal to 2"),
        ({"resize": {"ratio_range": [2.0, 0.5]}}, "must not exceed"),
        ({"hsv": {"hue_delta": 181}}, "less than or equal to 180"),
        ({"pad": {"pad_val": 300}}, "less than or equal to 255"),
        ({"mosaic": {"max_cahced_images": 20}}, "Extra inputs are not permitted"),
        ({"switch": {"set": STAGE2}}, "exactly one of epochs_from_end and epoch"),
        ({"switch": {"epoch": 3, "epochs_from_end": 2}}, "exactly one of epochs_from_end and epoch"),
        ({"switch": {"epoch": 3, "set": {"type": "nanodet"}}}, "set.type"),
        ({"switch": {"epoch": 3, "set": {"resize": {"scale": [0, 640]}}}}, r"switch\.set\.resize\.scale\.0"),
        ({"switch": {"epoch": 3, "set": {"mosiac": None}}}, r"switch\.set\.mosiac: Extra inputs"),
    ],
)
def test_bad_rtmdet_fields_are_clear_messages(data, message):
    with pytest.raises(ValidationError, match=message):
        RTMDetAugmentConfig.model_validate({"type": "rtmdet", **data})


def test_any_family_takes_a_switch_and_a_bad_stage2_field_fails_at_load():
    preset, _ = load_preset("nanodet-plus-m", ["augment.switch={epochs_from_end: 3, set: {flip: 0.0}}"])
    assert preset.augment.switch.start_epoch(10) == 7 and preset.augment.switched().flip == 0.0
    with pytest.raises(PresetError, match=r"switch\.set\.flip.*less than or equal to 1"):
        load_preset("retinanet-r18-fpn", ["augment.switch={epoch: 3, set: {flip: 2}}"])


# ---------------------------------------------------------------------------------------------- EpochStages
class StageMarker:
    """A transform whose image holds its stage number (module level: DataLoader workers and spawn pickle it)."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.epochs_started: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_started.append(epoch)

    def __call__(self, img, boxes, labels, rng=None):
        return {"img": torch.full((3, 16, 16), float(self.value)), "boxes": torch.as_tensor(boxes).reshape(-1, 4),
                "labels": torch.as_tensor(labels, dtype=torch.int64), "warp_matrix": np.eye(3), "img_shape": (16, 16)}


def test_epoch_stages_serve_the_stage_of_each_epoch():
    a, b = StageMarker(0), StageMarker(1)
    stages = EpochStages([(0, a), (3, b)])
    assert [stages.stage_at(e) for e in range(5)] == [0, 0, 0, 1, 1]
    assert [stages.set_epoch(e) for e in (0, 1, 3, 4)] == [False, False, True, False]
    assert a.epochs_started == [0, 1] and b.epochs_started == [3, 4]
    assert stages(np.zeros((2, 2, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))["img"][0, 0, 0] == 1
    assert stages.set_epoch(0) and stages.active == 0  # back to stage 1 (a second run in the same process)
    assert EpochStages([(0, a), (0, b)]).stage_at(0) == 1  # stage 2 from epoch 0: a run shorter than stage 2
    with pytest.raises(ValueError, match="epoch 0"):
        EpochStages([(2, a)])
    with pytest.raises(ValueError, match="in order"):
        EpochStages([(0, a), (5, b), (3, a)])


# ---------------------------------------------------------------------------------------------- build_transform
def _rtmdet_preset(switch: dict | None = None):
    """The built-in NanoDet preset with an RTMDet augment and input: build_transform reads only those two."""
    base, _ = load_preset("nanodet-plus-m")
    aug = RTMDetAugmentConfig.model_validate({"type": "rtmdet", **({"switch": switch} if switch else {})})
    inp = base.input.model_copy(update={"size": (640, 640), "keep_ratio": True})
    return base.model_copy(update={"augment": aug, "input": inp})


def test_build_transform_switches_rtmdet_for_the_last_20_epochs():
    preset = _rtmdet_preset({"epochs_from_end": 20, "set": STAGE2})
    stages = build_transform(preset, train=True, epochs=300)
    assert isinstance(stages, EpochStages) and stages.starts == [0, 280]
    names = [[type(s).__name__ for s in t.steps] for t in stages.transforms]
    assert names[0] == ["CachedMosaic", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad",
                        "CachedMixUp"]
    assert names[1] == ["RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad"]
    assert stages.transforms[1].steps[0].scale == (640, 640)
    assert build_transform(preset, train=True, epochs=50).starts == [0, 30]  # a shorter run: its last 20
    assert isinstance(build_transform(preset, train=True), Pipeline)  # no run length (inspect): stage 1 alone
    test = build_transform(preset, train=False, epochs=300)
    assert [type(s).__name__ for s in test.steps] == ["Resize", "Pad"]
    assert build_transform(preset, train=True, imgsz=320, epochs=300).transforms[0].steps[0].img_scale == (320, 320)


@pytest.mark.parametrize("name, cls", [("nanodet-plus-m", NanoDetTransform), ("retinanet-r18-fpn", KeepRatioResizeTransform)])
def test_nanodet_and_retinanet_transforms_are_untouched(tmp_path, name, cls):
    """No switch in their presets: the same transform class as before, fed the same arrays by the dataset."""
    preset, _ = load_preset(name)
    assert preset.augment.switch is None
    transform = build_transform(preset, train=True, epochs=300)
    assert type(transform) is cls
    ann, img_dir = _tiny_coco(tmp_path, 3, side=40)  # RetinaNet's preset drops images under 32 px
    ds = build_dataset(preset, Split(ann_file=str(ann), img_dir=str(img_dir)), train=True, epochs=300)
    assert type(ds.transform) is cls and ds.set_epoch(5) is False
    img = cv2.imread(str(img_dir / "1.png"))
    boxes, labels = ds.annotation(0)
    direct = transform(img, boxes, labels, np.random.default_rng(7))
    via_dataset = ds.get(0, np.random.default_rng(7))
    assert torch.equal(direct["img"], via_dataset["img"]) and torch.equal(direct["boxes"], via_dataset["boxes"])
    assert via_dataset["meta"].warp_matrix == np.asarray(direct["warp_matrix"]).tolist()


# ---------------------------------------------------------------------------------------------- trainer
def _tiny_coco(tmp: Path, n: int, side: int = 16) -> tuple[Path, Path]:
    img_dir = tmp / "imgs"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, n + 1):
        cv2.imwrite(str(img_dir / f"{i}.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "width": side, "height": side})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 0})
    ann = tmp / "ann.json"
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann, img_dir


class StageProbe(Detector):
    """Writes ``rank epoch stage`` for every batch it trains on (the stage is the marker in the pixels)."""

    strides = (1,)
    num_classes = 2

    def __init__(self, record: Path) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.record = str(record)

    def forward(self, images):
        return self.conv(images).mean((2, 3))

    def loss(self, images, targets, metas, epoch):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        stages = sorted({int(v) for v in images[:, 0, 0, 0].tolist()})
        with open(self.record, "a") as f:
            f.write(f"{rank} {epoch} {' '.join(map(str, stages))}\n")
        present = torch.stack([torch.bincount(t.labels, minlength=2).clamp(max=1) for t in targets]).float()
        return {"loss_cls": F.binary_cross_entropy_with_logits(self(images), present)}

    def _unused(self, *args, **kwargs):
        raise AssertionError("the engine only calls loss here")

    priors = decode_boxes = encode_boxes = decode_scores = assign = _unused

    def predict(self, images, metas, score_thr, iou_thr, max_det):
        return [Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)) for _ in metas]


def _train_cfg(epochs: int, batch: int = 2, workers: int = 0) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch=batch, workers=workers,
                       optimizer=OptimizerConfig(type="adamw", lr=0.01), schedule=ScheduleConfig(type="cosine"),
                       ema=EMAConfig(decay=0.9, gamma=4.0))


def _staged_dataset(ann: Path, img_dir: Path, epochs: int) -> CocoDetection:
    start = AugmentSwitch(epochs_from_end=2).start_epoch(epochs)
    return CocoDetection(ann, img_dir, EpochStages([(0, StageMarker(0)), (start, StageMarker(1))]), filter_empty=True)


class RecordingReporter:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg):
        self.lines.append(msg)

    warn = info

    def print(self, renderable=""):
        pass

    def progress(self, iterable, total=None, description="", run=None):
        class Bar(list):
            def update_postfix(self, values):
                pass

        return Bar(iterable)

    def epoch_row(self, metrics):
        pass

    def table(self, title, columns, rows):
        pass


class _Interrupted(Exception):
    pass


class StopAfterTwoEpochs(Trainer):
    def _end_epoch(self, epoch, *args):
        super()._end_epoch(epoch, *args)
        if epoch == 1:
            raise _Interrupted


def _fit(tmp: Path, run: Path, record: Path, workers: int, cls=Trainer, resume_from=None) -> RecordingReporter:
    preset, _ = load_preset("nanodet-plus-m")
    ann, img_dir = _tiny_coco(tmp / "data", 4)
    ds = _staged_dataset(ann, img_dir, epochs=4)
    loader = build_dataloader(ds, 2, workers, True, True, 0, False, collate)
    reporter = RecordingReporter()
    trainer = cls(preset, _train_cfg(4, workers=workers), StageProbe(record), loader, None, None, run, reporter,
                  torch.device("cpu"), 0, False, resume_from, {"argv": ["detcli", "train"]})
    trainer.fit()
    return reporter


def _stages_by_epoch(record: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for line in record.read_text().splitlines():
        _, epoch, *stages = (int(v) for v in line.split())
        out.setdefault(epoch, set()).update(stages)
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_trainer_switches_for_the_last_epochs_and_after_resume(tmp_path, workers):
    """4 epochs, stage 2 for the last 2 (0-indexed 2 and 3): straight, and resumed after epoch 2."""
    straight = tmp_path / "straight.txt"
    reporter = _fit(tmp_path, new_run_dir(tmp_path, "a"), straight, workers)
    assert _stages_by_epoch(straight) == {0: {0}, 1: {0}, 2: {1}, 3: {1}}
    assert [m for m in reporter.lines if "switches stage" in m] == [
        "epoch 3/4: the training data pipeline switches stage (augment.switch)"]

    resumed = tmp_path / "resumed.txt"
    run = new_run_dir(tmp_path, "b")
    with pytest.raises(_Interrupted):
        _fit(tmp_path, run, resumed, workers, cls=StopAfterTwoEpochs)
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 2
    reporter = _fit(tmp_path, run, resumed, workers, resume_from=run / "weights" / "last.pt")  # a fresh dataset
    assert _stages_by_epoch(resumed) == {0: {0}, 1: {0}, 2: {1}, 3: {1}}
    assert any(m.startswith("epoch 3/4: the training data pipeline switches stage") for m in reporter.lines)


def build_probe_parts(info: ProcessInfo) -> TrainParts:
    """``TrainSetup.build`` for the DDP test (module level: it crosses torch.multiprocessing.spawn)."""
    tmp = Path(os.environ["DETCLI_TEST_SWITCH_DIR"])
    ds = _staged_dataset(tmp / "data" / "ann.json", tmp / "data" / "imgs", epochs=3)
    loader = build_dataloader(ds, info.batch_per_process, 0, True, True, info.seed, info.world_size > 1, collate)
    return TrainParts(StageProbe(tmp / "ddp.txt"), loader, None, None, {})


@pytest.mark.slow
def test_ddp_every_rank_switches(tmp_path, monkeypatch):
    _tiny_coco(tmp_path / "data", 8)
    monkeypatch.setenv("DETCLI_DDP_CPU_PROCS", "2")
    monkeypatch.setenv("DETCLI_TEST_SWITCH_DIR", str(tmp_path))
    preset, _ = load_preset("nanodet-plus-m")
    setup = TrainSetup(preset, _train_cfg(3, batch=4), build_probe_parts, new_run_dir(tmp_path, "ddp"), device="cpu",
                       seed=0, force_plain=True, train_args={"argv": ["detcli", "train"]})
    launch_training(setup)
    seen: dict[tuple[int, int], set[int]] = {}
    for line in (tmp_path / "ddp.txt").read_text().splitlines():
        rank, epoch, *stages = (int(v) for v in line.split())
        seen.setdefault((rank, epoch), set()).update(stages)
    assert seen == {(r, e): {0 if e < 1 else 1} for r in (0, 1) for e in range(3)}
