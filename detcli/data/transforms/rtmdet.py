"""RTMDet's train and test pipelines from a preset's ``augment`` (type ``rtmdet``) and ``input`` sections.

The steps in the order of mmdet ``configs/rtmdet/rtmdet_l_8xb32-300e_coco.py``::

    train (stage 1)  CachedMosaic → RandomResize(1280) → RandomCrop(640) → YOLOXHSVRandomAug → RandomFlip
                     → Pad(640, 114) → CachedMixUp → normalise (BGR mean/std)
    train (stage 2)  the same with mosaic and mixup off and RandomResize(640) (``augment.switch``)
    test             Resize(640, keep_ratio) → Pad(640, 114) → normalise

Pixel sizes are the preset's at its own ``input.size``; ``--imgsz`` scales all of them by
``imgsz / max(input.size)`` (640 → 320 halves the mosaic tiles, the resize scale, crop and pad alike).
"""
from __future__ import annotations

from detcli.config.schema import InputConfig, RTMDetAugmentConfig
from detcli.data.transforms.colorspace import YOLOXHSVRandomAug
from detcli.data.transforms.geometric import Pad, RandomCrop, RandomFlip, RandomResize, Resize
from detcli.data.transforms.mixup import CachedMixUp
from detcli.data.transforms.mosaic import CachedMosaic
from detcli.data.transforms.pipeline import Pipeline


def _scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def rtmdet_train_pipeline(aug: RTMDetAugmentConfig, inp: InputConfig, imgsz: int | None = None) -> Pipeline:
    """One training stage (``aug`` as given: pass ``aug.switched()`` for stage 2)."""
    f = 1.0 if imgsz is None else imgsz / max(inp.size)
    steps = []
    if aug.mosaic is not None:
        m = aug.mosaic
        steps.append(CachedMosaic(_scaled(m.img_scale, f), m.center_ratio_range, m.pad_val, m.prob,
                                  m.max_cached_images, m.random_pop))
    steps.append(RandomResize(_scaled(aug.resize.scale, f), aug.resize.ratio_range, aug.resize.keep_ratio))
    steps.append(RandomCrop(_scaled(aug.crop.crop_size, f), aug.crop.allow_negative_crop))
    if aug.hsv is not None:
        steps.append(YOLOXHSVRandomAug(aug.hsv.hue_delta, aug.hsv.saturation_delta, aug.hsv.value_delta))
    steps.append(RandomFlip(aug.flip))
    steps.append(Pad(_scaled(aug.pad.size, f), aug.pad.pad_val))
    if aug.mixup is not None:
        x = aug.mixup
        steps.append(CachedMixUp(_scaled(x.img_scale, f), x.ratio_range, x.flip_ratio, x.pad_val, x.max_iters,
                                 x.max_cached_images, x.random_pop, x.prob))
    return Pipeline(steps, inp.mean, inp.std, to_rgb=inp.channel_order == "rgb")


def rtmdet_test_pipeline(aug: RTMDetAugmentConfig, size: tuple[int, int], inp: InputConfig) -> Pipeline:
    """Keep-ratio resize into ``size`` (w, h), bilinear, then pad to ``size`` with the augment's pad value."""
    return Pipeline([Resize(size, keep_ratio=True), Pad(size, aug.pad.pad_val)], inp.mean, inp.std,
                    to_rgb=inp.channel_order == "rgb")
