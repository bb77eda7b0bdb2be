"""RetinaNet's keep-ratio resize / flip / RGB normalisation on hand-computed sizes and values."""
import numpy as np
import pytest

from detcli.data.transforms.common import transform_boxes
from detcli.data.transforms.resize import KeepRatioResizeTransform, keep_ratio_size


def test_keep_ratio_size_as_mmcv_rescale_size():
    # 640x480: factor min(1333/640, 800/480) = 1.6667 → 1067 x 800 (int(w·s + 0.5))
    assert keep_ratio_size(640, 480, (1333, 800)) == (1067, 800)
    # 300x1000 (tall): factor min(1333/1000, 800/300) = 1.333 → 400 x 1333
    assert keep_ratio_size(300, 1000, (1333, 800)) == (400, 1333)
    # the order of the scale tuple does not matter
    assert keep_ratio_size(640, 480, (800, 1333)) == (1067, 800)


def test_resize_boxes_normalisation_and_matrix():
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    boxes = np.array([[64.0, 48.0, 640.0, 480.0]], dtype=np.float32)
    out = KeepRatioResizeTransform(train=False)(img, boxes, np.array([4]))
    assert out["img"].shape == (3, 800, 1067) and out["img_shape"] == (800, 1067)
    # RGB order after conversion: (30 − 123.675)/58.395, (20 − 116.28)/57.12, (10 − 103.53)/57.375
    expected = [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375]
    assert out["img"][:, 400, 500].tolist() == pytest.approx(expected, abs=1e-5)
    sx, sy = 1067 / 640, 800 / 480  # realised factors new/old
    assert out["boxes"].numpy()[0] == pytest.approx([64 * sx, 48 * sy, 1067.0, 800.0], abs=1e-3)
    assert out["labels"].tolist() == [4]
    np.testing.assert_allclose(transform_boxes(boxes, out["warp_matrix"]), out["boxes"].numpy(), atol=1e-3)


def test_flip_mirrors_image_and_boxes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 20.0, 50.0, 60.0]], dtype=np.float32)
    t = KeepRatioResizeTransform(scale=(400, 200), flip=1.0, train=True)
    out = t(img, boxes, np.array([0]), rng)
    plain = KeepRatioResizeTransform(scale=(400, 200), train=False)(img, boxes, np.array([0]))
    assert out["img_shape"] == plain["img_shape"] == (200, 400)
    np.testing.assert_array_equal(out["img"].numpy(), plain["img"].numpy()[:, :, ::-1])
    # x → W − x with W = 400 (no −1), after the ×2 resize
    assert out["boxes"].numpy()[0] == pytest.approx([400 - 100, 40, 400 - 20, 120])
    np.testing.assert_allclose(transform_boxes(boxes, out["warp_matrix"]), out["boxes"].numpy(), atol=1e-4)
    with pytest.raises(ValueError):
        t(img, boxes, np.array([0]), None)
