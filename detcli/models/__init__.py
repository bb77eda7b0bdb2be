"""Preset → detector. An explicit ``match`` on ``model.type``, so "go to definition" works."""
from __future__ import annotations

from detcli.config.schema import DeFCNConfig, ModelConfig, NanoDetPlusConfig, Preset, RetinaNetConfig, RTMDetConfig
from detcli.errors import PresetError
from detcli.models.base import Detector


def build_model(preset: Preset, num_classes: int | None = None, pretrained: bool = True) -> Detector:
    """Build the detector a preset describes (its family's :meth:`~detcli.models.base.Detector.from_config`).

    Args:
        preset: a validated preset.
        num_classes: the dataset's class count; must agree with ``model.num_classes`` when that is set.
        pretrained: load the backbone's ImageNet weights named by the preset (when found locally).
    """
    cfg = preset.model
    return detector_class(preset).from_config(
        cfg, resolve_num_classes(preset, num_classes), test=preset.test, input_cfg=preset.input,
        backbone_weights=cfg.backbone_weights if pretrained else None)


def detector_class(preset: Preset | ModelConfig) -> type[Detector]:
    """The detector class of a preset or of its ``model`` section: the one registry of the families (a fifth
    family adds a case here). Its class attributes and classmethods are the family's facts, without a build."""
    cfg = preset.model if isinstance(preset, Preset) else preset
    match cfg:
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
    raise PresetError(f"model.type {cfg.type!r} has no detector")  # pragma: no cover - exhaustive


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
    """The preset's label assignment in one line (:meth:`~detcli.models.base.Detector.assigner_description`)."""
    return detector_class(preset).assigner_description(preset.model)


def strides_of(preset: Preset) -> list[int]:
    """The preset's level strides, without a build (:meth:`~detcli.models.base.Detector.strides_of`)."""
    return list(detector_class(preset).strides_of(preset.model))
