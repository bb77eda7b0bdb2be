"""RTMDet data pipeline (mmdet 3.3.0 semantics): boxes, caches, HSV, crop/refetch, output size and padding.

Hand-computed cases first (small images, fixed mosaic centre, caches holding one kind of partner), then whole
pipelines on tiny generated data. Draw-by-draw equality with mmdet itself: benchmarks/parity/rtmdet_pipeline_parity.py
(opt-in, tests/family/test_rtmdet_pipeline_parity.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.config.schema import InputConfig, RTMDetAugmentConfig
from detcli.data.coco import CocoDetection
from detcli.data.transforms.cache import ResultsCache
from detcli.data.transforms.colorspace import hsv_gains, shift_hsv
from detcli.data.transforms.common import normalize, to_chw_tensor, transform_boxes
from detcli.data.transforms.geometric import Pad, RandomCrop, RandomFlip, RandomResize, Resize, rescale_size
from detcli.data.transforms.mixup import CachedMixUp
from detcli.data.transforms.mosaic import CachedMosaic, tile_span
from detcli.data.transforms.pipeline import Sample, clip_and_keep, normalization_table, normalize_to_chw
from detcli.data.transforms.rtmdet import rtmdet_test_pipeline, rtmdet_train_pipeline
from detcli.errors import DatasetError

MEAN, STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
INPUT = InputConfig(size=(640, 640), keep_ratio=True, channel_order="bgr", mean=MEAN, std=STD)
TINY = {  # rtmdet_tiny_8xb32-300e_coco.py over the l defaults
    "type": "rtmdet", "resize": {"ratio_range": [0.5, 2.0]},
    "mosaic": {"max_cached_images": 20, "random_pop": False},
    "mixup": {"max_cached_images": 10, "random_pop": False, "prob": 0.5},
}
STAGE2 = {"mosaic": None, "mixup": None, "resize": {"scale": [640, 640]}}


def sample(w: int, h: int, boxes, labels=None, value: int = 100) -> Sample:
    img = np.full((h, w, 3), value, dtype=np.uint8)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.arange(len(boxes)) if labels is None else labels
    return Sample.from_arrays(img, boxes, labels)


def assert_boxes_inside(s: Sample) -> None:
    b = s.boxes
    assert b.dtype == np.float32 and len(b) == len(s.labels)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= s.width).all() and (b[:, 3] <= s.height).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


# ---------------------------------------------------------------------------------------------- boxes
def test_clip_and_keep_drops_outside_and_degenerate_boxes():
    boxes = np.array([[-5, -5, 10, 10], [90, 10, 120, 20], [-20, 0, -1, 5], [100, 0, 130, 5],
                      [30, 30, 30, 40], [10, 50, 20, 70]], dtype=np.float32)
    out, keep = clip_and_keep(boxes, 100, 60)
    assert keep.tolist() == [True, True, False, False, False, True]
    assert out[keep].tolist() == [[0, 0, 10, 10], [90, 10, 100, 20], [10, 50, 20, 60]]


# ---------------------------------------------------------------------------------------------- cache
def test_cache_fifo_drops_the_oldest():
    cache = ResultsCache(3, random_pop=False)
    items = [sample(4, 4, [], value=v) for v in range(6)]
    for s in items:
        cache.push(s, np.random.default_rng(0))
    assert [int(s.img[0, 0, 0]) for s in cache.entries] == [3, 4, 5]


def test_cache_random_pop_and_draws_never_touch_the_newest():
    """mmdet draws with numpy's randint(0, len − 1): upper bound exclusive, so the newest entry stays."""
    rng = np.random.default_rng(1)
    popped, drawn = set(), set()
    for _ in range(300):
        cache = ResultsCache(4, random_pop=True)
        for v in range(5):
            cache.push(sample(2, 2, [], value=v), rng)
        assert len(cache) == 4 and int(cache.entries[-1].img[0, 0, 0]) == 4
        popped |= {0, 1, 2, 3} - {int(s.img[0, 0, 0]) for s in cache.entries}
        drawn.add(int(cache.draw(rng).img[0, 0, 0]))
    assert popped == {0, 1, 2, 3} and drawn == {0, 1, 2, 3}


def test_cache_sizes_and_pop_rules_per_variant():
    l_steps = rtmdet_train_pipeline(RTMDetAugmentConfig(type="rtmdet"), INPUT).steps
    tiny_steps = rtmdet_train_pipeline(RTMDetAugmentConfig.model_validate(TINY), INPUT).steps
    (l_mosaic, l_mixup), (t_mosaic, t_mixup) = (l_steps[0], l_steps[-1]), (tiny_steps[0], tiny_steps[-1])
    assert isinstance(l_mosaic, CachedMosaic) and isinstance(l_mixup, CachedMixUp)
    assert (l_mosaic.cache.max_size, l_mosaic.cache.random_pop) == (40, True)
    assert (l_mixup.cache.max_size, l_mixup.cache.random_pop, l_mixup.prob) == (20, True, 1.0)
    assert (t_mosaic.cache.max_size, t_mosaic.cache.random_pop) == (20, False)
    assert (t_mixup.cache.max_size, t_mixup.cache.random_pop, t_mixup.prob) == (10, False, 0.5)
    assert l_steps[1].ratio_range == (0.1, 2.0) and tiny_steps[1].ratio_range == (0.5, 2.0)


# ---------------------------------------------------------------------------------------------- mosaic
def test_tile_span_hand_computed():
    # a 640-wide tile left of a centre at 500 on a 1280 canvas: canvas [0, 500) gets the tile's [140, 640)
    assert tile_span(500, 640, 1280, before=True) == (0, 500, 140, 640)
    assert tile_span(500, 300, 1280, before=True) == (200, 500, 0, 300)
    # right of the centre: the canvas border cuts the tile
    assert tile_span(900, 640, 1280, before=False) == (900, 1280, 0, 380)
    assert tile_span(900, 100, 1280, before=False) == (900, 1000, 0, 100)


def test_mosaic_passes_through_while_at_most_four_are_cached():
    mosaic = CachedMosaic(img_scale=(32, 32))
    rng = np.random.default_rng(0)
    inputs = [sample(20, 10, [[1, 1, 5, 5]], value=v) for v in range(5)]
    outputs = [mosaic(s, rng) for s in inputs]
    assert all(o is i for o, i in zip(outputs[:4], inputs[:4]))
    assert outputs[4].img.shape == (64, 64, 3)  # the fifth builds a mosaic on the (2h, 2w) canvas
    mosaic.reset()
    assert len(mosaic.cache) == 0 and mosaic(inputs[0], rng) is inputs[0]


def test_mosaic_places_tiles_around_the_centre():
    """64×64 canvas, centre fixed at (32, 32); the 64×64 images are scaled by s = 0.5 into 32×32 tiles."""
    mosaic = CachedMosaic(img_scale=(32, 32), center_ratio_range=(1.0, 1.0), pad_val=114)
    rng = np.random.default_rng(0)
    partner = sample(64, 64, [[10, 50, 30, 60], [10, 20, 30, 40], [50, 0, 60, 4]], labels=[7, 8, 9], value=50)
    for _ in range(4):
        mosaic(partner, rng)  # every partner drawn is this one
    main = sample(64, 64, [[2, 2, 20, 20], [40, 40, 60, 60]], labels=[1, 2], value=200)
    out = mosaic(main, rng)
    assert out.img.shape == (64, 64, 3)
    assert (out.img[:32, :32] == 200).all() and (out.img[:32, 32:] == 50).all() and (out.img[32:] == 50).all()
    # main box [40,40,60,60]·0.5 → [20,20,30,30], shifted by (0, 0): the top-left tile spans [0, 32)
    # partner (top-right, shifted by (32, 0)): [10,50,30,60]·0.5 → [37,25,47,30]; [10,20,30,40] → [37,10,47,20];
    # [50,0,60,4] → [57,0,62,2]; the same partner bottom-left (shift (0,32)) and bottom-right (shift (32,32))
    assert sorted(out.labels.tolist()) == [1, 2, 7, 7, 7, 8, 8, 8, 9, 9, 9]
    assert out.boxes[out.labels == 2].tolist() == [[20, 20, 30, 30]]
    assert out.boxes[out.labels == 7].tolist() == [[37, 25, 47, 30], [5, 57, 15, 62], [37, 57, 47, 62]]
    assert_boxes_inside(out)
    # the matrix takes the sample's original boxes to its place in the mosaic
    np.testing.assert_allclose(transform_boxes(main.boxes, out.matrix), [[1, 1, 10, 10], [20, 20, 30, 30]])


def test_mosaic_drops_boxes_beyond_the_canvas():
    """Centre at (16, 16) of a 64×64 canvas: the top-left 32×32 tile is cut to its bottom-right 16×16."""
    mosaic = CachedMosaic(img_scale=(32, 32), center_ratio_range=(0.5, 0.5))
    rng = np.random.default_rng(0)
    filler = sample(32, 32, [[0, 0, 32, 32]], labels=[5])
    for _ in range(4):
        mosaic(filler, rng)
    main = sample(32, 32, [[0, 0, 10, 10], [5, 20, 14, 30], [20, 20, 30, 30]], labels=[0, 1, 2])
    out = mosaic(main, rng)
    # the tile is shifted by (16 − 32, 16 − 32) = (−16, −16): [0,0,10,10] leaves, [5,20,14,30] leaves (x2 < 16)
    assert out.boxes[out.labels < 5].tolist() == [[4, 4, 14, 14]] and out.labels[out.labels < 5].tolist() == [2]
    # the partners: top-right tile [16, 48) × [0, 16) of its [0, 32) × [16, 32) part
    assert out.boxes[out.labels == 5].tolist() == [[16, 0, 48, 16], [0, 16, 16, 48], [16, 16, 48, 48]]
    assert_boxes_inside(out)


# ---------------------------------------------------------------------------------------------- mixup
def _mixup_with(partner: Sample, **kw) -> CachedMixUp:
    mixup = CachedMixUp(**kw)
    mixup(partner, np.random.default_rng(0))
    return mixup


def test_mixup_blends_half_and_half_and_drops_partner_boxes_outside():
    partner = sample(64, 64, [[60, 10, 80, 20], [70, 0, 90, 10], [5, 5, 15, 15]], labels=[3, 4, 5], value=50)
    mixup = _mixup_with(partner, img_scale=(64, 64), flip_ratio=0.0)
    main = sample(64, 64, [[1, 2, 30, 40]], labels=[9], value=101)
    out = mixup(main, np.random.default_rng(0))
    assert out.img.shape == (64, 64, 3) and (out.img == 75).all()  # uint8(0.5·101 + 0.5·50) truncates 75.5
    assert out.labels.tolist() == [9, 3, 5]  # the sample's boxes first; [70, 0, 90, 10] is cut away
    assert out.boxes.tolist() == [[1, 2, 30, 40], [60, 10, 64, 20], [5, 5, 15, 15]]
    np.testing.assert_array_equal(out.matrix, main.matrix)  # the sample itself does not move


def test_mixup_flips_the_partner_and_crops_it_to_the_sample():
    partner = sample(32, 32, [[0, 0, 8, 8]], labels=[1], value=50)
    # letterbox 64×64 (s = 2), always flipped: box → [0,0,16,16] → [48,0,64,16]; the 64×64 partner is cropped
    # to the 32×32 sample at offsets drawn in [0, 31] (numpy randint(0, 32), as mmdet)
    mixup = _mixup_with(partner, img_scale=(64, 64), flip_ratio=1.0)
    kept = 0
    for seed in range(40):
        mixup.cache.entries = mixup.cache.entries[:1]
        out = mixup(sample(32, 32, [[2, 2, 6, 6]], value=150), np.random.default_rng(seed))
        assert_boxes_inside(out)
        assert out.img.shape == (32, 32, 3)
        draws = np.random.default_rng(seed)  # gate, partner, jitter, flip, then y and x offsets
        draws.random(), draws.integers(0, 1), draws.uniform(1, 1), draws.random()
        y0, x0 = int(draws.integers(0, 32)), int(draws.integers(0, 32))
        box, keep = clip_and_keep(np.array([[48 - x0, -y0, 64 - x0, 16 - y0]]), 32, 32)
        assert out.labels.tolist() == [0] + [1] * int(keep[0])
        np.testing.assert_array_equal(out.boxes[1:], box[keep])
        kept += int(keep[0])
    assert 0 < kept < 40


def test_mixup_passes_through_until_two_cached_and_skips_partners_without_boxes():
    mixup = CachedMixUp(img_scale=(16, 16))
    first = sample(16, 16, [[1, 1, 4, 4]])
    assert mixup(first, np.random.default_rng(0)) is first  # one cached: nothing to mix with
    empty_partner = _mixup_with(sample(16, 16, []), img_scale=(16, 16), max_iters=3)
    main = sample(16, 16, [[1, 1, 4, 4]])
    assert empty_partner(main, np.random.default_rng(0)) is main


def test_mixup_prob_gates_after_the_cache_is_warm():
    mixup = _mixup_with(sample(16, 16, [[1, 1, 4, 4]], value=10), img_scale=(16, 16), prob=0.5)
    mixed = 0
    for seed in range(200):
        mixup.cache.entries = mixup.cache.entries[:1]
        main = sample(16, 16, [[1, 1, 4, 4]], value=200)
        mixed += mixup(main, np.random.default_rng(seed)) is not main
    assert 70 < mixed < 130


# ---------------------------------------------------------------------------------------------- single-image steps
def test_resize_as_mmcv_rescale_and_random_resize_target():
    assert rescale_size(320, 160, (640, 640)) == (640, 320)
    assert rescale_size(100, 300, (640, 640)) == (213, 640)  # int(100·640/300 + 0.5)
    out = Resize((640, 640))(sample(320, 160, [[10, 20, 320, 160]]))
    assert out.img.shape == (320, 640, 3) and out.boxes.tolist() == [[20, 40, 640, 320]]
    rr = RandomResize((1280, 1280), (0.5, 0.5))  # r = 0.5 → target (640, 640)
    out = rr(sample(320, 160, [[10, 20, 320, 160]]), np.random.default_rng(0))
    assert out.img.shape == (320, 640, 3)
    np.testing.assert_allclose(transform_boxes(np.array([[10, 20, 320, 160]]), out.matrix), out.boxes)
    targets = {RandomResize((1280, 1280), (0.5, 2.0)).target_scale(np.random.default_rng(s))[0] for s in range(300)}
    assert 640 <= min(targets) < 700 and 2500 < max(targets) <= 2560


def test_random_crop_clips_boxes_drops_cut_ones_and_drops_samples_without_boxes():
    s = sample(100, 40, [[0, 0, 10, 10], [45, 5, 70, 30], [90, 0, 100, 40]], labels=[0, 1, 2])
    for seed in range(20):
        expect = np.random.default_rng(seed)
        y0, x0 = int(expect.integers(0, 1)), int(expect.integers(0, 51))  # crop 50×40: y0 = 0, x0 ∈ [0, 50]
        out = RandomCrop((50, 50))(s, np.random.default_rng(seed))  # crop_h = min(50, 40)
        assert out.img.shape == (40, 50, 3)
        shifted, keep = clip_and_keep(s.boxes - [x0, y0, x0, y0], 50, 40)
        np.testing.assert_array_equal(out.boxes, shifted[keep])
        assert out.labels.tolist() == s.labels[keep].tolist() and 1 in out.labels  # [45, 70] always overlaps
        assert_boxes_inside(out)
    assert RandomCrop((10, 10))(sample(10, 10, []), np.random.default_rng(0)) is None
    assert RandomCrop((10, 10), allow_negative_crop=True)(sample(10, 10, []), np.random.default_rng(0)) is not None


def test_flip_mirrors_boxes_and_pad_fills_bottom_right_with_114():
    s = sample(40, 20, [[0, 2, 10, 12]])
    s = s.with_(img=s.img.copy())
    s.img[:, 0] = 7
    flipped = RandomFlip(1.0)(s, np.random.default_rng(0))
    assert flipped.boxes.tolist() == [[30, 2, 40, 12]] and (flipped.img[:, -1] == 7).all()
    np.testing.assert_allclose(transform_boxes(s.boxes, flipped.matrix), flipped.boxes)
    assert RandomFlip(0.0)(s, np.random.default_rng(0)) is s
    padded = Pad((64, 32))(s)
    assert padded.img.shape == (32, 64, 3) and (padded.img[20:] == 114).all() and (padded.img[:, 40:] == 114).all()
    assert (padded.img[:20, :40] == s.img).all() and padded.boxes is s.boxes


# ---------------------------------------------------------------------------------------------- HSV
def test_hsv_gains_are_bounded_integers_each_kept_half_the_time():
    gains = np.stack([hsv_gains(np.random.default_rng(s), 5, 30, 30) for s in range(2000)])
    assert gains.dtype == np.int16
    assert (np.abs(gains) <= [5, 30, 30]).all()
    assert (gains.min(0) < 0).all() and (gains.max(0) > 0).all()
    zero_share = (gains == 0).mean(0)
    assert (zero_share > 0.45).all() and (zero_share < 0.65).all()  # 0.5 gated, plus |U·delta| < 1 truncated


def test_shift_hsv_hand_checked():
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 2] = 255  # BGR red: H 0, S 255, V 255
    out = shift_hsv(red, np.array([-5, 0, -30]))  # H → 175 (350°), V → 225
    assert out[0, 0].tolist() == pytest.approx([37.5, 0, 225], abs=1)  # 350° = red with B = 225·10/60
    hsv = cv2.cvtColor(shift_hsv(red, np.array([3, 0, 0])), cv2.COLOR_BGR2HSV)
    assert hsv[0, 0, 0] == 3
    grey = np.full((1, 1, 3), 100, np.uint8)  # S 0: +30 saturation, V clipped at 255
    assert cv2.cvtColor(shift_hsv(grey, np.array([0, -30, 200])), cv2.COLOR_BGR2HSV)[0, 0].tolist() == [0, 0, 255]


# ---------------------------------------------------------------------------------------------- whole pipelines
@pytest.mark.parametrize("to_rgb", [False, True])
def test_table_normalisation_equals_the_shared_normalize(to_rgb):
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mean, std = (MEAN[::-1], STD[::-1]) if to_rgb else (MEAN, STD)
    expected = to_chw_tensor(normalize(img[..., ::-1] if to_rgb else img, mean, std))
    assert torch.equal(normalize_to_chw(img, normalization_table(mean, std), to_rgb), expected)


def test_stage2_output_is_640_padded_with_114_before_normalisation():
    aug = RTMDetAugmentConfig.model_validate({**TINY, "switch": {"epochs_from_end": 20, "set": STAGE2}})
    pipe = rtmdet_train_pipeline(aug.switched(), INPUT)
    assert [type(s).__name__ for s in pipe.steps] == ["RandomResize", "RandomCrop", "YOLOXHSVRandomAug",
                                                      "RandomFlip", "Pad"]
    rng = np.random.default_rng(0)
    small = sample(100, 80, [[10, 10, 90, 70]], value=20)  # long side 320…1280 after the resize; HSV keeps < 60
    padded = 0
    for _ in range(12):
        out = pipe.run(small, rng)
        assert out.img.shape == (640, 640, 3)
        values = np.unique(out.img)
        assert set(values.tolist()) <= set(range(0, 61)) | {114}  # content, or exactly the pad value
        if (out.img == 114).any():
            padded += 1
            assert (out.img[-1] == 114).all() or (out.img[:, -1] == 114).all()  # bottom/right
        assert_boxes_inside(out)
    assert padded
    half = rtmdet_train_pipeline(aug.switched().model_copy(update={"resize": aug.resize.model_copy(
        update={"ratio_range": (0.25, 0.25)})}), INPUT)  # 100×80 → 320×256 (1280·0.25), then padded
    packed = half(small.img, small.boxes, small.labels, np.random.default_rng(1))
    assert packed["img"].shape == (3, 640, 640) and packed["img_shape"] == (640, 640)
    np.testing.assert_allclose(packed["img"][:, 300, 600].numpy(), (114 - np.array(MEAN)) / np.array(STD), rtol=1e-5)


def test_test_pipeline_keeps_ratio_and_pads_with_114():
    pipe = rtmdet_test_pipeline(RTMDetAugmentConfig(type="rtmdet"), (640, 640), INPUT)
    img = np.full((240, 320, 3), 60, np.uint8)
    out = pipe(img, np.array([[0, 0, 320, 240]], np.float32), np.array([3]))
    assert out["img"].shape == (3, 640, 640) and out["img_shape"] == (640, 640)
    assert out["boxes"].tolist() == [[0, 0, 640, 480]]
    np.testing.assert_allclose(out["warp_matrix"], np.diag([2.0, 2.0, 1.0]))
    expected_pad = (114 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out["img"][:, 500, 10].numpy(), expected_pad, rtol=1e-5)
    np.testing.assert_allclose(out["img"][:, 100, 10].numpy(), (60 - np.array(MEAN)) / np.array(STD), rtol=1e-5)


def test_stage1_boxes_stay_inside_over_many_samples_and_inputs_are_not_modified():
    pipe = rtmdet_train_pipeline(RTMDetAugmentConfig.model_validate(TINY), INPUT, imgsz=128)  # every size · 0.2
    assert pipe.steps[0].img_scale == (128, 128) and pipe.steps[1].scale == (256, 256)
    data_rng = np.random.default_rng(0)
    rng = np.random.default_rng(1)
    kept = 0
    for _ in range(60):
        w, h = (int(v) for v in data_rng.integers(40, 200, 2))
        img = data_rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        xy = data_rng.uniform(0, 1, (4, 2)) * [w, h]
        boxes = np.concatenate([xy, xy + data_rng.uniform(2, 40, (4, 2))], 1).clip(0, [w, h, w, h]).astype(np.float32)
        before = (img.copy(), boxes.copy())
        out = pipe.run(Sample.from_arrays(img, boxes, np.arange(4)), rng)
        assert (img == before[0]).all() and (boxes == before[1]).all()
        if out is not None:
            kept += 1
            assert out.img.shape == (128, 128, 3)
            assert_boxes_inside(out)
    assert kept > 40


def _tiny_coco(tmp: Path, boxes_per_image: list[list[list[float]]], size=(48, 40)) -> tuple[Path, Path]:
    img_dir = tmp / "imgs"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        cv2.imwrite(str(img_dir / f"{i}.png"), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "width": size[0], "height": size[1]})
        anns += [{"id": len(anns) + k, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                 for k, b in enumerate(boxes, start=1)]
    ann = tmp / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    return ann, img_dir


def test_dataset_refetches_a_sample_the_crop_dropped(tmp_path):
    ann, img_dir = _tiny_coco(tmp_path, [[], [[5, 5, 20, 20]]])
    crop_only = RTMDetAugmentConfig.model_validate({"type": "rtmdet", "mosaic": None, "mixup": None, "hsv": None,
                                                    "resize": {"ratio_range": [1.0, 1.0]}})
    ds = CocoDetection(ann, img_dir, rtmdet_train_pipeline(crop_only, INPUT, imgsz=64), filter_empty=False)
    for seed in range(5):
        out = ds.get(0, np.random.default_rng(seed))  # image 1 has no box: RandomCrop drops it every time
        assert out["meta"].image_id == 2 and len(out["boxes"]) == 1
    (tmp_path / "e").mkdir()
    all_empty = CocoDetection(*_tiny_coco(tmp_path / "e", [[], []]), rtmdet_train_pipeline(crop_only, INPUT, imgsz=64),
                              filter_empty=False)
    with pytest.raises(DatasetError, match="filter_empty"):
        all_empty.get(0, np.random.default_rng(0))


def test_dataset_samples_repeat_with_the_per_sample_seed(tmp_path):
    ann, img_dir = _tiny_coco(tmp_path, [[[2, 2, 20, 20], [10, 5, 30, 30]]] * 7, size=(60, 44))

    def run() -> list[tuple[torch.Tensor, torch.Tensor]]:
        ds = CocoDetection(ann, img_dir, rtmdet_train_pipeline(RTMDetAugmentConfig(type="rtmdet"), INPUT, imgsz=64),
                           filter_empty=True)
        torch.manual_seed(11)
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out += [(s["img"], s["boxes"]) for s in (ds[i] for i in range(7))]
        return out

    a, b = run(), run()
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[6][0], a[13][0])  # the next epoch draws other augmentations


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_repeat_with_the_seed_caches_living_in_each_worker(tmp_path, workers):
    from detcli.data.collate import collate
    from detcli.data.loader import build_dataloader

    ann, img_dir = _tiny_coco(tmp_path, [[[2, 2, 20, 20], [10, 5, 30, 30]]] * 8, size=(60, 44))

    def run() -> list[torch.Tensor]:
        ds = CocoDetection(ann, img_dir, rtmdet_train_pipeline(RTMDetAugmentConfig.model_validate(TINY), INPUT,
                                                               imgsz=64), filter_empty=True)
        loader = build_dataloader(ds, 2, workers, True, True, 5, False, collate)
        torch.manual_seed(5)  # in-process loading draws the sample seeds from the global generator (the engine seeds it)
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out += [b.images for b in loader]
        return out

    a, b = run(), run()
    assert len(a) == 8 and all(x.shape == (2, 3, 64, 64) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_set_epoch_empties_the_caches(tmp_path):
    pipe = rtmdet_train_pipeline(RTMDetAugmentConfig(type="rtmdet"), INPUT, imgsz=64)
    rng = np.random.default_rng(0)
    for _ in range(6):
        pipe.run(sample(30, 30, [[2, 2, 20, 20]]), rng)
    assert len(pipe.steps[0].cache) == 6 and len(pipe.steps[-1].cache) > 0
    pipe.set_epoch(1)
    assert len(pipe.steps[0].cache) == 0 and len(pipe.steps[-1].cache) == 0
