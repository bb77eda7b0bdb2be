"""Preset → detector. An explicit ``match`` on ``model.type``, so "go to definition" works."""
from __future__ import annotations

from detcli.config.schema import DeFCNConfig, NanoDetPlusConfig, Preset, RetinaNetConfig, RTMDetConfig
from detcli.errors import PresetError
from detcli.models.base import Detector


def build_model(preset: Preset, num_classes: int | None = None, pretrained: bool = True) -> Detector:
    """Build the detector a preset describes.

    Args:
        preset: a validated preset.
        num_classes: the dataset's class count; must agree with ``model.num_classes`` when that is set.
        pretrained: load the backbone's ImageNet weights named by the preset (when found locally).
    """
    cfg = preset.model
    classes = resolve_num_classes(preset, num_classes)
    backbone_weights = cfg.backbone_weights if pretrained else None
    match cfg:
        case NanoDetPlusConfig():
            from detcli.models.detectors.nanodet_plus import build_nanodet_plus

            return build_nanodet_plus(cfg, preset.test, classes, backbone_weights)
        case RetinaNetConfig():
            from detcli.models.detectors.retinanet import build_retinanet

            return build_retinanet(cfg, preset.test, classes, backbone_weights)
        case RTMDetConfig():
            from detcli.models.detectors.rtmdet import build_rtmdet

            return build_rtmdet(cfg, preset.test, classes, backbone_weights)
        case DeFCNConfig():
            from detcli.models.detectors.defcn import build_defcn

            return build_defcn(cfg, preset.test, classes, backbone_weights)
    raise PresetError(f"model.type {cfg.type!r} has no builder")  # pragma: no cover - the union is exhaustive


def detector_class(preset: Preset) -> type[Detector]:
    """The detector class a preset builds (its class attributes, e.g. the counting conventions, without a build)."""
    match preset.model:
        case NanoDetPlusConfig():
            from detcli.models.detectors.nanodet_plus import NanoDetPlus

            return NanoDetPlus
        case RetinaNetConfig():
            from detcli.models.detectors.retinanet import RetinaNet

            return RetinaNet
        case RTMDetConfig():
            from detcli.models.detectors.rtmdet import RTMDet

            return RTMDet
        case DeFCNConfig():
            from detcli.models.detectors.defcn import DeFCN

            return DeFCN
    raise PresetError(f"model.type {preset.model.type!r} has no detector")  # pragma: no cover - exhaustive


def resolve_num_classes(preset: Preset, dataset_classes: int | None) -> int:
    """The class count: the preset's when set (it must agree with the dataset), else the dataset's."""
    declared = preset.model.num_classes
    if declared is not None and dataset_classes is not None and declared != dataset_classes:
        raise PresetError(
            f"preset {preset.name!r}: model.num_classes is {declared} but the dataset has {dataset_classes} "
            f"classes; remove model.num_classes (it is then taken from the dataset) or fix it "
            f"(--set model.num_classes={dataset_classes})"
        )
    classes = declared if declared is not None else dataset_classes
    if classes is None:
        raise PresetError(f"preset {preset.name!r}: model.num_classes is not set and no dataset gives it")
    return classes


def assigner_name(preset: Preset) -> str:
    match preset.model:
        case NanoDetPlusConfig(assigner=a):
            return f"DynamicSoftLabelAssigner(topk={a.topk}, iou_factor={a.iou_factor}) on AGM predictions"
        case RetinaNetConfig(assigner=a):
            return f"MaxIoUAssigner(pos={a.pos_iou_thr}, neg={a.neg_iou_thr}, min_pos={a.min_pos_iou})"
        case RTMDetConfig(assigner=a):
            return (f"DynamicSoftLabelAssigner(topk={a.topk}, iou_factor={a.iou_factor}, "
                    f"soft_center_radius={a.soft_center_radius}) on the head's own predictions")
        case DeFCNConfig(assigner=a):
            return (f"POTO(alpha={a.alpha}, centre_radius={a.centre_radius}, Hungarian) + auxiliary one-to-many "
                    f"(top-{a.aux_topk} per level, mean+std) on the head's own predictions")
    return "?"


def strides_of(preset: Preset) -> list[int]:
    match preset.model:
        case NanoDetPlusConfig(strides=s):
            return list(s)
        case RetinaNetConfig(anchor=a):
            return list(a.strides)
        case RTMDetConfig():
            from detcli.models.detectors.rtmdet import STRIDES

            return list(STRIDES)
        case DeFCNConfig(strides=s):
            return list(s)
    return []
