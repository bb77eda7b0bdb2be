"""Preset → transforms and datasets. An explicit ``match`` on ``augment.type``."""
from __future__ import annotations

from pathlib import Path

from detcli.config.schema import (
    AugmentBase, NanoDetAugmentConfig, Preset, ResizeFlipAugmentConfig, RTMDetAugmentConfig,
)
from detcli.data.dataset_config import AnySplit, Split, VocSplit, YoloSplit


def input_size(preset: Preset, imgsz: int | None = None) -> tuple[int, int]:
    """(w, h) network input size (for keep-ratio presets: the (long, short) resize scale).

    ``imgsz`` (the CLI flag) sets the long side; the short side keeps the preset's proportion. Training
    records the result in its checkpoints (``input_size``); eval and predict take that as their default
    ``imgsz`` (:func:`detcli.inference.loading.resolve_imgsz`).
    """
    w, h = preset.input.size
    if imgsz is None:
        return int(w), int(h)
    long_side, short_side = max(w, h), min(w, h)
    short = max(32, round(imgsz * short_side / long_side))
    return (imgsz, short) if w >= h else (short, imgsz)


def build_transform(preset: Preset, train: bool, imgsz: int | None = None, epochs: int | None = None):
    """The callable ``(img_bgr, boxes, labels, rng) -> sample dict`` of a preset's family.

    ``epochs``: length of the training run. When given (training) and the augment section has a ``switch``,
    the result is an :class:`~detcli.data.transforms.stages.EpochStages` that serves stage 2 from
    ``switch.start_epoch(epochs)`` on; otherwise the stage-1 transform alone.
    """
    aug = preset.augment
    if train and epochs is not None and aug.switch is not None:
        from detcli.data.transforms.stages import EpochStages

        return EpochStages([
            (0, _family_transform(preset, aug, train, imgsz)),
            (aug.switch.start_epoch(epochs), _family_transform(preset, aug.switched(), train, imgsz)),
        ])
    return _family_transform(preset, aug, train, imgsz)


def _family_transform(preset: Preset, augment: AugmentBase, train: bool, imgsz: int | None):
    size = input_size(preset, imgsz)
    inp = preset.input
    match augment:
        case NanoDetAugmentConfig() as aug:
            from detcli.data.transforms.nanodet import NanoDetTransform

            return NanoDetTransform(
                input_size=size, mean=inp.mean, std=inp.std, train=train,
                scale=aug.scale, stretch=aug.stretch, flip=aug.flip, translate=aug.translate,
                rotation=aug.rotation, shear=aug.shear, perspective=aug.perspective,
                brightness=aug.brightness, contrast=aug.contrast, saturation=aug.saturation,
            )
        case ResizeFlipAugmentConfig() as aug:
            from detcli.data.transforms.resize import KeepRatioResizeTransform

            short_sides = None
            if aug.short_sides and train:  # scaled with --imgsz as the input size is
                f = max(size) / max(inp.size)
                short_sides = [max(32, round(s * f)) for s in aug.short_sides]
            return KeepRatioResizeTransform(
                scale=size, mean=inp.mean, std=inp.std, to_rgb=inp.channel_order == "rgb",
                flip=aug.flip, train=train, short_sides=short_sides, backend=aug.resize_backend,
                size_rule=aug.size_rule,
            )
        case RTMDetAugmentConfig() as aug:
            from detcli.data.transforms.rtmdet import rtmdet_test_pipeline, rtmdet_train_pipeline

            return rtmdet_train_pipeline(aug, inp, imgsz) if train else rtmdet_test_pipeline(aug, size, inp)
    raise AssertionError(augment)  # pragma: no cover - the union is exhaustive


def build_dataset(preset: Preset, split: AnySplit, train: bool, imgsz: int | None = None, epochs: int | None = None):
    """A :class:`~detcli.data.coco.CocoDetection` for one split with the preset's pipeline.

    ``epochs``: the training run's length, for an ``augment.switch`` (see :func:`build_transform`).
    """
    return dataset_for_split(
        split,
        transform=build_transform(preset, train=train, imgsz=imgsz, epochs=epochs),
        filter_empty=preset.data.filter_empty if train else False,
        min_size=preset.data.min_size if train else 0,
        # a substitute would be scored under the wrong id: evaluation skips an unreadable image and counts it
        unreadable="substitute" if train else "skip",
    )


def dataset_for_split(split: AnySplit, transform, filter_empty: bool, min_size: int = 0,
                      unreadable: str = "substitute"):
    """The :class:`~detcli.data.coco.CocoDetection` of a COCO, YOLO or VOC split (the last two converted to
    COCO annotations in memory: every family, the counts and COCO-style evaluation see one form);
    ``unreadable``: what an unreadable image becomes (``"substitute"``, ``"skip"``, ``"raise"``)."""
    from detcli.data.coco import CocoDetection

    match split:
        case Split():
            return CocoDetection(Path(split.ann_file), Path(split.img_dir), transform, filter_empty=filter_empty,
                                 min_size=min_size, unreadable=unreadable)
        case YoloSplit():
            from detcli.data.yolo import load_yolo_split

            annotations, img_dir = load_yolo_split(split.images, split.names, split.data_file, split.root)
        case VocSplit():
            from detcli.data.voc import load_voc_split

            annotations, img_dir = load_voc_split(split.image_sets, split.names)
        case _:
            raise AssertionError(split)  # pragma: no cover - the union is exhaustive
    return CocoDetection(split.source, img_dir, transform, filter_empty=filter_empty, min_size=min_size,
                         unreadable=unreadable, annotations=annotations)
