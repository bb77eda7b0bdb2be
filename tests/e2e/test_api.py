"""The public Python API (``detcli.api.model``): load a detcli checkpoint, an official checkpoint with its preset or
an exported ONNX file; predict on paths, folders, globs, arrays, PIL images and lists, eagerly or streamed; results
that draw, save and become COCO results; evaluation and export; errors as DetcliError naming the file."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detcli.api.model import Model, load
from detcli.api.results import Result
from detcli.errors import DetcliError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PHOTO = GOLDEN / "e2e" / "images" / "chelsea.jpg"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A detcli NanoDet-Plus-m checkpoint for the 5 demo classes, trained size 64, every image gets detections;
    (checkpoint, val annotation file, val image folder)."""
    from tests.support.demo_checkpoint import write_confident_checkpoint

    return write_confident_checkpoint(tmp_path_factory.mktemp("api"), "confident.pt")


@pytest.fixture(scope="module")
def model(checkpoint) -> Model:
    return load(checkpoint[0], device="cpu")


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """NanoDet-Plus-m's golden weights as an official (Lightning) checkpoint, 80 COCO classes."""
    from tests.golden.checkpoints import write_official_checkpoint
    from tests.golden.weights import fixture_state_dict

    doc = json.loads((GOLDEN / "nanodet-plus-m.json").read_text())
    path, _ = write_official_checkpoint(doc, fixture_state_dict(doc), tmp_path_factory.mktemp("official"))
    return path


# ----------------------------------------------------------------------------- load
def test_load_a_detcli_checkpoint_gives_its_run_record(model, checkpoint):
    from detcli.data.demo import CLASSES

    spec = model.spec
    assert spec.origin == "detcli" and spec.weights == checkpoint[0]
    assert model.class_names == list(CLASSES) and spec.cat_ids == list(range(1, len(CLASSES) + 1))
    assert spec.imgsz == spec.trained_imgsz == 64 and spec.input_size == (64, 64)  # the trained size, not 320
    assert spec.dataset is not None and model.inference_path == "optimised"
    assert load(checkpoint[0], device="cpu", imgsz=96).spec.input_size == (96, 96)  # imgsz wins


def test_load_an_official_checkpoint_with_its_preset(official):
    from detcli.data.coco_names import COCO80, COCO80_IDS

    m = load(official, preset="nanodet-plus-m", device="cpu", exact=True)
    assert m.spec.origin == "official" and m.class_names == COCO80 and m.spec.cat_ids == COCO80_IDS
    assert m.spec.imgsz is None and m.spec.input_size == (320, 320) and m.inference_path == "exact"
    result, = m.predict(str(PHOTO), conf=0.01)
    assert result.path == str(PHOTO) and result.orig_img.shape == cv2.imread(str(PHOTO)).shape


@pytest.mark.parametrize("call, words", [
    (lambda tmp: load(tmp / "missing.pt"), ["missing.pt", "no such file"]),
    (lambda tmp: load(tmp / "model.onnx", preset="nanodet-plus-m"), ["model.onnx", "drop --preset"]),
    (lambda tmp: load(tmp / "model.onnx", exact=True), ["model.onnx", "--exact", "onnxruntime"]),
])
def test_load_errors_are_detcli_errors_naming_the_file(tmp_path, call, words):
    (tmp_path / "model.onnx").write_bytes(b"not read: refused by its name")
    with pytest.raises(DetcliError) as e:
        call(tmp_path)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_an_official_file_without_a_preset_is_refused(official):
    with pytest.raises(DetcliError, match=rf"{official.name} is not a detcli checkpoint; give --preset"):
        load(official, device="cpu")


def test_a_bad_preset_override_is_an_error_not_an_exit(official):
    try:
        load(official, preset="nanodet-plus-m", overrides=["test.no_such_field=1"], device="cpu")
    except SystemExit:  # pragma: no cover - the failure this test is for
        pytest.fail("the API exited")
    except DetcliError as e:
        assert "no_such_field" in str(e)
    else:
        pytest.fail("no error")


# ----------------------------------------------------------------------------- predict
def _same(a: list[Result], b: list[Result]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.labels, y.labels)


def test_predict_on_a_file_a_folder_a_glob_an_array_a_pil_image_and_a_list(model, checkpoint, tmp_path):
    val = checkpoint[2]
    files = sorted(val.glob("*.jpg"))
    folder = model.predict(val, conf=0.3)
    assert [r.path for r in folder] == [str(f) for f in files] and [r.index for r in folder] == list(range(len(files)))
    assert all(len(r) > 0 for r in folder)
    _same(model.predict(str(val / "*.jpg"), conf=0.3), folder)
    _same(model.predict(files[1], conf=0.3), folder[1:2])
    img = cv2.imread(str(files[0]))
    array, = model.predict(img, conf=0.3)
    _same([array], folder[:1])
    assert array.path == "image0.jpg" and array.frame is None
    cv2.imwrite(str(tmp_path / "lossless.png"), img)
    pil, = model.predict(Image.open(tmp_path / "lossless.png"), conf=0.3)  # RGB in, BGR inside
    _same([pil], folder[:1])
    assert pil.path == "lossless.png"
    np.testing.assert_array_equal(pil.orig_img, img)
    mixed = model.predict([img, str(files[1]), Image.fromarray(img[:, :, ::-1])], conf=0.3)
    assert [r.index for r in mixed] == [0, 1, 2] and mixed[1].path == str(files[1])
    _same(mixed, [folder[0], folder[1], folder[0]])
    _same(model.predict(list(files), conf=0.3, batch=1), folder)  # batching changes nothing


def test_pil_images_of_any_mode_become_bgr():
    from detcli.inference.sources import pil_to_bgr

    red = Image.new("RGB", (3, 2), (255, 0, 0))
    assert pil_to_bgr(red).shape == (2, 3, 3) and pil_to_bgr(red)[0, 0].tolist() == [0, 0, 255]
    assert pil_to_bgr(Image.new("L", (3, 2), 7))[1, 2].tolist() == [7, 7, 7]
    assert pil_to_bgr(Image.new("RGBA", (3, 2), (0, 255, 0, 10)))[0, 0].tolist() == [0, 255, 0]


def test_predict_settings_and_batching(model, checkpoint):
    val = checkpoint[2]
    few = model.predict(val, conf=0.3, max_det=3)
    assert all(len(r) == 3 for r in few)
    strict = model.predict(val, conf=0.9)
    assert all(len(r) == 0 for r in strict) and strict[0].boxes.shape == (0, 4)


def test_stream_predicts_lazily_and_checks_the_source_at_once(model, checkpoint, tmp_path):
    stream = model.predict(checkpoint[2], conf=0.3, stream=True)
    assert not isinstance(stream, list) and iter(stream) is stream
    first = next(stream)
    assert isinstance(first, Result) and first.index == 0 and len(list(stream)) == 3
    with pytest.raises(DetcliError, match="source not found: .*nothing_here"):
        model.predict(str(tmp_path / "nothing_here"), stream=True)  # before anything is consumed


@pytest.mark.parametrize("bad, words", [
    (np.zeros((8, 8, 3), np.float32), ["source 0", "uint8", "float32"]),
    (np.zeros((8, 8, 4), np.uint8), ["source 0", "(8, 8, 4)"]),
    (12, ["source 0", "int"]),
    ([], ["empty"]),
])
def test_predict_refuses_what_is_no_image(model, bad, words):
    with pytest.raises(DetcliError) as e:
        model.predict(bad)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_result_fields_plot_save_and_coco(model, checkpoint, tmp_path):
    val_ann, val = checkpoint[1], checkpoint[2]
    results = model.predict(val, conf=0.3)
    r = results[0]
    k = len(r)
    assert r.boxes.shape == (k, 4) and r.boxes.dtype == np.float32
    assert r.scores.shape == (k,) and r.scores.dtype == np.float32 and r.labels.dtype == np.int64
    assert r.names == [model.class_names[c] for c in r.labels] and r.class_names == model.class_names
    h, w = r.orig_img.shape[:2]
    assert r.orig_img.dtype == np.uint8 and (r.boxes[:, 2:] <= [w, h]).all()  # original pixels
    before = r.orig_img.copy()
    drawn = r.plot()
    assert drawn.shape == r.orig_img.shape and not np.array_equal(drawn, before)
    np.testing.assert_array_equal(r.orig_img, before)  # a copy is drawn
    saved = r.save(tmp_path / "drawn.png")
    np.testing.assert_array_equal(cv2.imread(str(saved)), drawn)
    with pytest.raises(DetcliError, match="no_folder"):
        r.save(tmp_path / "no_folder" / "drawn.png")
    records = [rec for res in results for rec in res.to_coco()]
    assert {rec["image_id"] for rec in records} == {1, 2, 3, 4}
    assert set(records[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_ann))
        assert len(gt.loadRes(records).getAnnIds()) == len(records)
    assert {rec["category_id"] for rec in r.to_coco(image_id=7, cat_ids=[10, 20, 30, 40, 50])} <= {10, 20, 30, 40, 50}
    assert {rec["image_id"] for rec in r.to_coco(image_id=7)} == {7}


def test_boxes_equal_what_detcli_predict_writes(model, checkpoint, tmp_path):
    """The API and ``detcli predict`` (its command, in-process) run the same loop: predictions.json holds exactly
    the API's COCO results."""
    from detcli.app.predict import PredictRequest, predict_command

    val = checkpoint[2]
    with contextlib.redirect_stdout(io.StringIO()):
        out = predict_command(PredictRequest(source=str(val), weights=checkpoint[0], conf=0.3, save=False,
                                             device="cpu", project=tmp_path))
    written = [{k: r[k] for k in ("image_id", "category_id", "bbox", "score")}
               for r in json.loads((out / "predictions.json").read_text())]
    assert written == [rec for res in model.predict(str(val), conf=0.3) for rec in res.to_coco()]


# ----------------------------------------------------------------------------- evaluate and export
def test_evaluate_on_the_checkpoints_dataset_and_on_given_data(model, checkpoint):
    result = model.evaluate(workers=0, conf=0.3, keep_detections=True)
    assert result.num_images == 4 and result.num_detections == len(result.detections) > 0
    assert set(result.to_dict()["stats"]) >= {"AP50-95", "AP50"}
    from detcli.data.dataset_config import DatasetConfig

    again = model.evaluate(DatasetConfig.from_files(checkpoint[1], checkpoint[2]), workers=0, conf=0.3)
    assert again.to_dict()["stats"] == result.to_dict()["stats"]
    with pytest.raises(DetcliError, match="split 'test'"):
        model.evaluate(split="test")


def test_evaluate_without_a_dataset_says_to_give_one(official):
    m = load(official, preset="nanodet-plus-m", device="cpu")
    with pytest.raises(DetcliError, match=rf"{official.name} records no dataset; give --data"):
        m.evaluate()


def test_export_then_load_the_onnx_file(model, checkpoint, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    shutil.copy(checkpoint[0], tmp_path / "confident.pt")
    with contextlib.redirect_stdout(io.StringIO()):
        path = model.export("onnx", output=tmp_path / "model.onnx", nms=False)
    assert path == tmp_path / "model.onnx" and path.is_file() and (tmp_path / "model.onnx.json").is_file()
    exported = load(path, device="cpu")
    assert exported.spec.origin == "exported" and exported.inference_path == "exported"
    assert exported.spec.input_size == model.spec.input_size and exported.class_names == model.class_names
    got, want = exported.predict(checkpoint[2], conf=0.3), model.predict(checkpoint[2], conf=0.3)
    for a, b in zip(got, want):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-4)
    with pytest.raises(DetcliError, match="exported model already"):
        exported.export()
    with pytest.raises(DetcliError, match="--format 'tflite'"):
        model.export("tflite")
    with pytest.raises(DetcliError, match="--half needs a CUDA device"):
        model.export(half=True, output=tmp_path / "half.onnx")
