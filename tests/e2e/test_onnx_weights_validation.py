"""``--weights model.onnx``: the file and its metadata are checked before onnxruntime opens it, its outputs on every
run; each crafted file ends in exit 2 naming the file and what is wrong, never in a traceback."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.app.export import ExportRequest, export_command
from detcli.config.loader import presets_dir
from detcli.errors import WriteError
from detcli.fileio import atomic_write_json
from tests.support.cli_subprocess import run_cli_forked
from tests.support.official_weights import official_checkpoint

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """NanoDet-Plus-m (80 classes) at 64 px, end-to-end and raw, and an image to predict on."""
    folder = tmp_path_factory.mktemp("exports")
    weights = official_checkpoint(presets_dir() / "nanodet-plus-m.yaml", folder)
    common = dict(weights=weights, preset="nanodet-plus-m", imgsz=64, device="cpu")
    e2e = export_command(ExportRequest(**common, output=folder / "e2e.onnx"))
    raw = export_command(ExportRequest(**common, nms=False, output=folder / "raw.onnx"))
    image = folder / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return {"e2e": e2e, "raw": raw, "image": image}


def load(path: Path):
    return onnx.load(str(path), load_external_data=False)


def props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_props(model, values: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def edit_meta(model, **changes) -> None:
    """Metadata fields replaced by ``changes`` (JSON-encoded unless a str; None removes the field)."""
    values = props(model)
    for key, value in changes.items():
        if value is None:
            values.pop(key)
        else:
            values[key] = value if isinstance(value, str) else json.dumps(value)
    set_props(model, values)


def predict(tmp_path: Path, model_path: Path, image: Path):
    proc = run_cli_forked("predict", str(image), "--weights", str(model_path), "--device", "cpu", cwd=tmp_path,
                          timeout=120)
    return proc, proc.stdout + proc.stderr


def assert_refused(tmp_path: Path, model_path: Path, image: Path, message: str) -> None:
    proc, text = predict(tmp_path, model_path, image)
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text and message in text and model_path.name in text, text[-3000:]
    written = tmp_path / "runs" / "predict" / "predict" / "predictions.json"
    if written.exists():  # what ran before the error is kept: strict JSON, nothing of the refused output
        assert strict_json(written.read_text()) == []


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in a JSON file")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------- crafted files

def _external(model, folder: Path, location: str, offset: int = 0, length: int | None = None) -> None:
    """The largest initializer's data moved to ``location`` (relative to the model's folder, written when it is
    a plain name there)."""
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    data = tensor.raw_data
    if "/" not in location and not os.path.isabs(location) and not (folder / location).exists():
        (folder / location).write_bytes(data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length or len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _outside(folder: Path) -> Path:
    """A marker file beside (not inside) the model's folder."""
    marker = folder.parent / "outside.bin"
    marker.write_bytes(b"\0" * (1 << 20))
    return marker


def _rename_input(model, name: str) -> None:
    old = model.graph.input[0].name
    model.graph.input[0].name = name
    for node in model.graph.node:
        node.input[:] = [name if i == old else i for i in node.input]


def _declare(model, output: str, elem_type: int, shape: list[int]) -> None:
    out = next(o for o in model.graph.output if o.name == output)
    out.CopyFrom(helper.make_tensor_value_info(output, elem_type, shape))


def _extra_output(model) -> None:
    model.graph.node.append(helper.make_node("Identity", ["num_dets"], ["x"]))
    model.graph.output.append(helper.make_tensor_value_info("x", TensorProto.INT64, [1]))


def _custom_node(model, domain: str, import_domain: bool) -> None:
    first = model.graph.input[0].name
    model.graph.node.append(helper.make_node("Evil", [first], ["evil_out"], domain=domain, name="evil"))
    if import_domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))


def _local_function(model) -> None:
    fn = helper.make_function("local.fn", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    model.functions.append(fn)


def _symlink_out(model, folder: Path) -> None:
    (folder / "link.bin").symlink_to(_outside(folder))
    _external(model, folder, "link.bin")


# (name, source export, edit(model, folder), message)
CASES = [
    ("external-absolute", "e2e", lambda m, f: _external(m, f, str(_outside(f))), "must be a relative path"),
    ("external-dotdot", "e2e", lambda m, f: (_outside(f), _external(m, f, "../outside.bin")),
     "must be a relative path"),
    ("external-symlink-out", "e2e", _symlink_out, "leads outside the model's folder"),
    ("external-missing", "e2e", lambda m, f: _external(m, f, "sub/none.bin"), "no such file beside the model"),
    ("external-past-the-end", "e2e", lambda m, f: _external(m, f, "w.bin", offset=1 << 30), "lies outside that file"),
    ("custom-domain-imported", "e2e", lambda m, f: _custom_node(m, "com.evil", True), "domain 'com.evil'"),
    ("custom-domain-node", "e2e", lambda m, f: _custom_node(m, "ai.onnx.ml", False), "of domain 'ai.onnx.ml'"),
    ("local-function", "e2e", lambda m, f: _local_function(m), "defines its own operators"),
    ("input-name", "e2e", lambda m, f: _rename_input(m, "x"), "the graph's inputs are ['x']"),
    ("input-dtype", "e2e", lambda m, f: setattr(m.graph.input[0].type.tensor_type, "elem_type", TensorProto.DOUBLE),
     "input 'images' is ONNX type 11; its metadata (input_dtype) says float32"),
    ("input-size", "e2e", lambda m, f: setattr(m.graph.input[0].type.tensor_type.shape.dim[2], "dim_value", 32),
     "input 'images' has shape (1, 3, 32, 64)"),
    ("input-rank", "e2e", lambda m, f: m.graph.input[0].type.tensor_type.shape.dim.pop(), "has shape (1, 3, 64)"),
    ("output-missing", "e2e", lambda m, f: m.graph.output.pop(),
     "the graph's outputs are ['num_dets', 'boxes', 'scores']"),
    ("output-extra", "e2e", lambda m, f: _extra_output(m), "'labels', 'x']"),
    ("output-rank", "e2e", lambda m, f: _declare(m, "boxes", TensorProto.FLOAT, [1, 400]),
     "output 'boxes' is float32 (1, 400); its metadata promises float32 (1, 100, 4)"),
    ("output-dtype", "e2e", lambda m, f: _declare(m, "labels", TensorProto.FLOAT, [1, 100]),
     "output 'labels' is float32 (1, 100); its metadata promises int64"),
    ("raw-as-end2end", "raw", lambda m, f: edit_meta(m, mode="end2end", postprocess={"score_thr": 0.05, "iou_thr": 0.6,
                                                                                     "max_det": 100}),
     "the graph's outputs are ['cls_logits', 'bbox_reg']"),
    ("raw-class-count", "raw", lambda m, f: edit_meta(m, class_names=["a", "b", "c"], num_classes=3, cat_ids=[1, 2, 3]),
     "output 'cls_logits' is float32 (1, 85, 80); its metadata promises float32 (1, 85, 3)"),
    ("no-metadata", "e2e", lambda m, f: set_props(m, {}), "without detcli metadata"),
    ("metadata-missing-field", "e2e", lambda m, f: edit_meta(m, mode=None), "field 'mode': Field required"),
    ("class-names-wrong-type", "e2e", lambda m, f: edit_meta(m, class_names="abc"), "field 'class_names'"),
    ("num-classes-mismatch", "e2e", lambda m, f: edit_meta(m, num_classes=3), "num_classes 3 but class_names lists 80"),
    ("cat-ids-wrong-type", "e2e", lambda m, f: edit_meta(m, cat_ids="x"), "field 'cat_ids'"),
    ("cat-ids-wrong-length", "e2e", lambda m, f: edit_meta(m, cat_ids=[1, 2]), "cat_ids gives 2 ids for 80 classes"),
    ("input-shape-wrong-type", "e2e", lambda m, f: edit_meta(m, input_shape="big"), "field 'input_shape'"),
    ("input-shape-vs-preset", "e2e", lambda m, f: edit_meta(m, input_shape=[1, 3, 96, 96]),
     "metadata field 'input_shape' gives H×W 96×96, but preset_config.input.size at imgsz 64 makes 64×64"),
    ("mean-vs-preset", "e2e", lambda m, f: edit_meta(m, mean=[0.0, 0.0, 0.0]),
     "metadata field 'mean' is (0.0, 0.0, 0.0), but preset_config.input.mean is"),
    ("resize-vs-preset", "e2e", lambda m, f: edit_meta(m, resize={"method": "keep_ratio", "size": [64, 64]}),
     "metadata field 'resize' is {'method': 'keep_ratio'"),
    ("input-dtype-field", "e2e", lambda m, f: edit_meta(m, input_dtype="int8"), "field 'input_dtype'"),
    ("mean-nan", "e2e", lambda m, f: edit_meta(m, mean="[NaN, 1.0, 2.0]"), "field 'mean.0'"),
    ("preset-config", "e2e", lambda m, f: edit_meta(m, preset_config={"name": "x"}), "field 'preset_config."),
    ("postprocess-missing", "e2e", lambda m, f: edit_meta(m, postprocess=None), "mode end2end needs the postprocess"),
    ("dataset-wrong-type", "e2e", lambda m, f: edit_meta(m, dataset="[1, 2]"), "field 'dataset'"),
]


@pytest.mark.parametrize("source, edit, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_crafted_onnx_file_is_refused_before_onnxruntime_opens_it(tmp_path, exports, source, edit, message):
    folder = tmp_path / "model"
    folder.mkdir()
    model = load(exports[source])
    edit(model, folder)
    path = folder / "crafted.onnx"
    path.write_bytes(model.SerializeToString())
    assert_refused(tmp_path, path, exports["image"], message)


def test_not_an_onnx_file(tmp_path, exports):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x08\x07\xff" * 100)
    assert_refused(tmp_path, path, exports["image"], "not a readable ONNX model")


def test_external_data_inside_the_folder_and_no_cat_ids_are_accepted(tmp_path, exports):
    """What the checks must let through: tensor data in a file beside the model; metadata without ``cat_ids``
    (category ids 1…C then, as for a checkpoint that records none)."""
    folder = tmp_path / "model"
    folder.mkdir()
    model = load(exports["e2e"])
    _external(model, folder, "weights.bin")
    edit_meta(model, cat_ids=None)
    path = folder / "ok.onnx"
    path.write_bytes(model.SerializeToString())
    proc, text = predict(tmp_path, path, exports["image"])
    assert proc.returncode == 0, text[-3000:]
    records = json.loads((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text())
    assert all(r["category_id"] == 1 + ["person", "bicycle"].index(r["category"]) for r in records
               if r["category"] in ("person", "bicycle"))


# --------------------------------------------------------------------------- what a run returns

def fake_end2end(reference: Path, num: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 declared: int = 100):
    """A file with the reference export's interface and metadata whose outputs are the given constants
    (``declared``: the detection count its outputs declare, to make them lie)."""
    arrays = {"num_dets": np.array([num], np.int64), "boxes": boxes[None].astype(np.float32),
              "scores": scores[None].astype(np.float32), "labels": labels[None].astype(np.int64)}
    nodes = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k + "_value"))
             for k, v in arrays.items()]
    types = {"num_dets": (TensorProto.INT64, [1]), "boxes": (TensorProto.FLOAT, [1, declared, 4]),
             "scores": (TensorProto.FLOAT, [1, declared]), "labels": (TensorProto.INT64, [1, declared])}
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph(nodes, "fake", [images], [helper.make_tensor_value_info(k, *types[k]) for k in arrays])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = load(reference).ir_version
    set_props(model, props(load(reference)))
    return model


def detections(n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.zeros((n, 4), np.float32)
    boxes[:3] = [[1, 2, 20, 30], [5, 5, 40, 40], [10, 0, 30, 20]]
    scores = np.zeros(n, np.float32)
    scores[:3] = [0.9, 0.8, 0.7]
    labels = np.full(n, -1, np.int64)
    labels[:3] = [0, 1, 2]
    return boxes, scores, labels


def test_label_out_of_range_is_refused(tmp_path, exports):
    boxes, scores, labels = detections()
    labels[1] = 80  # 80 classes: 0…79
    path = tmp_path / "labels.onnx"
    path.write_bytes(fake_end2end(exports["e2e"], 3, boxes, scores, labels).SerializeToString())
    assert_refused(tmp_path, path, exports["image"],
                   "output 'labels' holds class 80, but its metadata lists 80 classes")


def test_num_dets_out_of_range_is_refused(tmp_path, exports):
    path = tmp_path / "num.onnx"
    path.write_bytes(fake_end2end(exports["e2e"], 500, *detections()).SerializeToString())
    assert_refused(tmp_path, path, exports["image"], "output 'num_dets' is 500 for image 0; it must be 0 to 100")


def test_outputs_whose_shape_differs_from_the_declared_one_are_refused(tmp_path, exports):
    path = tmp_path / "lies.onnx"
    path.write_bytes(fake_end2end(exports["e2e"], 3, *detections(50), declared=100).SerializeToString())
    assert_refused(tmp_path, path, exports["image"], "output 'boxes' came back as float32 (1, 50, 4); its metadata "
                                                     "promises float32 (1, 100, 4)")


def test_nan_boxes_are_dropped_and_predictions_json_stays_valid_json(tmp_path, exports):
    boxes, scores, labels = detections()
    boxes[0, 2] = np.nan
    scores[2] = np.inf
    path = tmp_path / "nan.onnx"
    path.write_bytes(fake_end2end(exports["e2e"], 3, boxes, scores, labels).SerializeToString())
    proc, text = predict(tmp_path, path, exports["image"])
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    assert "dropped 2 detection(s) whose box or score is NaN or infinite" in text
    records = strict_json((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text())
    assert [r["category"] for r in records] == ["bicycle"] and records[0]["score"] == pytest.approx(0.8)


def test_predictions_json_writer_is_strict(tmp_path):
    path = tmp_path / "predictions.json"
    with pytest.raises(WriteError, match="NaN or infinite"):
        atomic_write_json(path, [{"score": float("nan")}], allow_nan=False)
    assert not path.exists() and not list(tmp_path.iterdir())
