"""Each family's facts are written once, on its classes: the ``model`` config class in the schema (display name,
augment type: torch-free) and the detector class (which refers to them, and says strides and assigner from a
config); ``detcli.models``' lookups and ``FAMILIES`` only read them. Also the one pairwise IoU, and no upward
import from the building blocks into ``detcli.models``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import box_iou

import detcli
from detcli.app.presets import FAMILIES
from detcli.config.loader import builtin_presets, load_preset
from detcli.config.schema import model_config_types
from detcli.geometry.iou import pairwise_iou
from detcli.models import assigner_name, build_model, detector_class, strides_of

PACKAGE = Path(detcli.__file__).parent


def test_every_family_has_one_config_class_and_one_detector_class():
    configs = model_config_types()
    assert list(configs) == ["nanodet_plus", "retinanet", "rtmdet", "defcn"]
    for config in configs.values():
        cls = detector_class(config.model_construct())
        assert cls.config_type is config
        assert (cls.display_name, cls.augment_type) == (config.display_name, config.augment_type)
    assert FAMILIES == {"nanodet_plus": "NanoDet-Plus", "retinanet": "RetinaNet", "rtmdet": "RTMDet",
                        "defcn": "DeFCN"}


@pytest.mark.parametrize("name", ["nanodet-plus-m", "rtmdet-tiny", "retinanet-r18-fpn", "defcn-r50-fpn"])
def test_facts_without_a_build_agree_with_the_built_model(name):
    preset, _ = load_preset(name)
    model = build_model(preset, num_classes=3, pretrained=False)
    assert type(model) is detector_class(preset)
    assert tuple(strides_of(preset)) == model.strides
    assert assigner_name(preset) == type(model).assigner_description(preset.model) != ""
    assert model.num_classes == 3


def test_the_schema_pairs_each_family_with_its_augment_type():
    preset, _ = load_preset("retinanet-r18-fpn")
    data = preset.model_dump()
    data["augment"] = load_preset("nanodet-plus-m")[0].augment.model_dump()
    with pytest.raises(ValidationError, match="augment.type 'nanodet' does not fit model.type 'retinanet'"):
        type(preset).model_validate(data)
    for path in builtin_presets().values():
        p, _ = load_preset(path)
        assert p.augment.type == type(p.model).augment_type


# ----------------------------------------------------------------------------- the one pairwise IoU
def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50], dim=1)


def test_pairwise_iou_is_torchvisions_bit_for_bit_and_batches():
    a, b = _boxes(7, 0), _boxes(5, 1)
    assert torch.equal(pairwise_iou(a, b), box_iou(a, b))
    batched = pairwise_iou(torch.stack([a, a.flip(0)]), torch.stack([b, b * 0.5]))
    assert torch.equal(batched[0], box_iou(a, b)) and torch.equal(batched[1], box_iou(a.flip(0), b * 0.5))


def test_pairwise_iou_degenerate_pairs():
    empty = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    assert torch.isnan(pairwise_iou(empty, box)[0, 1])  # 0 / 0, as box_iou
    assert pairwise_iou(empty, box, nan=0.0).tolist() == [[0.0, 0.0]]  # detectron2's pairwise_iou (POTO)
    assert pairwise_iou(empty, box, union_eps=1e-6).tolist() == [[0.0, 0.0]]  # bbox_overlaps' clamp (DSLA)
    assert pairwise_iou(box[:1], box[:1], union_eps=1e-6).item() == 1.0


def test_one_pairwise_iou_in_the_package():
    defined = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if "def pairwise_iou(" in p.read_text(encoding="utf-8")]
    assert defined == ["geometry/iou.py"]


# ----------------------------------------------------------------------------- no upward import
@pytest.mark.parametrize("package", ["losses", "assigners", "geometry"])
def test_building_blocks_do_not_import_the_models(package):
    """Losses, assigners and box geometry sit below the detectors: none imports ``detcli.models``."""
    upward = []
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            upward += [f"{path.name}: {n}" for n in names if n == "detcli.models" or n.startswith("detcli.models.")]
    assert upward == []
