"""The preset schema: one pydantic model shared by every detector family.

A preset is data. The family-specific parts (``model``, ``augment``) are discriminated unions on
their ``type``; ``detcli.models.build_model`` maps a validated preset to modules with a plain
``match`` on ``model.type``.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Pixels = Annotated[int, Field(ge=1)]
PixelValue = Annotated[float, Field(ge=0, le=255)]


class Strict(BaseModel):
    """Base of every preset section: unknown fields are errors, and so is a non-finite number (inf, nan)
    in any float field, from YAML or ``--set`` alike (a NaN learning rate trains to a NaN checkpoint)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- models
class DSLAssignerConfig(Strict):
    """Dynamic soft label assignment (NanoDet-Plus / RTMDet)."""

    topk: int = Field(13, ge=1)
    iou_factor: PositiveFloat = 3.0


class GFLLossConfig(Strict):
    """Loss weights of a GFL head (QFL + DFL + GIoU)."""

    qfl_weight: float = Field(1.0, ge=0)
    dfl_weight: float = Field(0.25, ge=0)
    giou_weight: float = Field(2.0, ge=0)


NanoDetActivation = Literal["LeakyReLU", "ReLU", "ReLU6", "SiLU", "Hardswish", "ELU", "GELU"]


class ShuffleNetV2BackboneConfig(Strict):
    """NanoDet-Plus' own backbone: ShuffleNetV2 of ``model.width``, outputs C3–C5 (stages 2, 3, 4; no conv5)."""

    type: Literal["shufflenetv2"] = "shufflenetv2"
    act: NanoDetActivation = Field("LeakyReLU", description="the official configs: LeakyReLU (slope 0.1)")


class GhostNetBackboneConfig(Strict):
    """GhostNet (Han et al., CVPR 2020) as NanoDet ships it (``nanodet/model/backbone/ghostnet.py``), width
    multiplier ``model.width`` (1.0x: the one with ImageNet weights)."""

    type: Literal["ghostnet"]
    out_stages: tuple[int, int, int] = Field(
        (4, 6, 9), description="the GhostNet stages (0..9) fed to the neck, one per stride 8, 16, 32: 3 or 4, 5 or "
        "6, then 9 (the last stage, so that every block trains)")
    act: NanoDetActivation = Field("LeakyReLU", description="stem, Ghost modules and last conv (SE keeps ReLU); "
                                   "the ImageNet weights were trained with ReLU")

    @field_validator("out_stages")
    @classmethod
    def _one_stage_per_stride(cls, stages: tuple[int, int, int]) -> tuple[int, int, int]:
        if stages[0] not in (3, 4) or stages[1] not in (5, 6) or stages[2] != 9:
            raise ValueError(f"{list(stages)}: one stage per stride 8, 16, 32 is needed: 3 or 4, then 5 or 6, then 9")
        return stages


NanoDetBackboneConfig = Annotated[Union[ShuffleNetV2BackboneConfig, GhostNetBackboneConfig],
                                  Field(discriminator="type")]


class NanoDetPlusConfig(Strict):
    """NanoDet-Plus: a backbone (ShuffleNetV2, or GhostNet) + GhostPAN + NanoDetPlusHead, AGM during training."""

    # family facts the schema needs without torch (the detector class refers to them: ``RetinaNet.display_name``)
    display_name: ClassVar[str] = "NanoDet-Plus"
    augment_type: ClassVar[str] = "nanodet"  # the one ``augment.type`` this family trains with

    type: Literal["nanodet_plus"]
    num_classes: int | None = Field(None, ge=1, description="None: taken from the dataset")
    width: Literal["1.0x", "1.5x"] = Field(
        "1.0x", description="backbone width: ShuffleNetV2's model size, GhostNet's width multiplier (1.0x = 1.0)")
    backbone: NanoDetBackboneConfig = Field(
        default_factory=ShuffleNetV2BackboneConfig, description="type: shufflenetv2 (NanoDet-Plus) or ghostnet")
    neck_channels: int = Field(96, ge=8)
    head_kernel: Literal[3, 5] = 5
    stacked_convs: int = Field(2, ge=0)
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=4, max_length=4)
    reg_max: int = Field(7, ge=1)
    aux_channels: int = Field(192, ge=32)
    aux_stacked_convs: int = Field(4, ge=1)
    detach_epoch: int = Field(10, ge=0, description="AGM inputs detached from this 0-indexed epoch on")
    backbone_weights: str | None = Field(
        "imagenet", description="'imagenet' (the backbone's ImageNet file in the torch hub cache: torchvision's "
        "ShuffleNetV2, Huawei's GhostNet state_dict_73.98.pth), a path to such a file, or null for random init"
    )
    assigner: DSLAssignerConfig = Field(default_factory=DSLAssignerConfig)
    loss: GFLLossConfig = Field(default_factory=GFLLossConfig)


class AnchorConfig(Strict):
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128], min_length=1)
    ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    octave_base_scale: PositiveFloat = 4.0
    scales_per_octave: int = Field(3, ge=1)


class MaxIoUAssignerConfig(Strict):
    """MMDetection's ``MaxIoUAssigner`` (``detcli.assigners.max_iou``), field for field."""

    pos_iou_thr: Probability = 0.5
    neg_iou_thr: Union[float, tuple[float, float]] = Field(
        0.4, description="background below this IoU, or [lo, hi]: background in [lo, hi), ignored below lo")
    min_pos_iou: Probability = 0.0
    match_low_quality: bool = Field(True, description="give every GT its best anchors, even below pos_iou_thr")
    gt_max_assign_all: bool = Field(True, description="low-quality match: all anchors tied at the GT's best IoU")
    ignore_iof_thr: float = Field(
        -1.0, ge=-1, le=1, description="anchors whose IoF with an ignore box exceeds this are ignored; ≤ 0: off "
        "(MMDetection's RetinaNet: -1). No data loader gives ignore boxes yet, so only ≤ 0 is accepted")
    ignore_wrt_candidates: bool = Field(True, description="IoF over the anchor's area (true) or the ignore box's")

    @field_validator("neg_iou_thr", mode="before")
    @classmethod
    def _number_or_range(cls, value: Any) -> float | tuple[float, float]:
        """One clear message for every wrong form (the union's own errors name internal types)."""
        pair = isinstance(value, (list, tuple))
        values = list(value) if pair else [value]
        is_iou = [isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values]
        if (pair and len(values) != 2) or not all(is_iou):
            raise ValueError("must be an IoU in [0, 1] or a pair [lo, hi] of them")
        if len(values) == 1:
            return float(values[0])
        if not values[0] < values[1]:
            raise ValueError("[lo, hi]: lo must be below hi (else no anchor is background)")
        return float(values[0]), float(values[1])

    @field_validator("ignore_iof_thr")
    @classmethod
    def _ignore_boxes_available(cls, value: float) -> float:
        # the assigner and RetinaNet take ignore boxes (Target.ignore_boxes), but the datasets leave COCO crowd
        # boxes out of the targets and give none: refuse rather than silently do nothing
        if value > 0:
            raise ValueError("no data loader gives ignore boxes yet (COCO crowd boxes are left out of the "
                             "targets), so only values ≤ 0 (off, as MMDetection's RetinaNet) are accepted")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "MaxIoUAssignerConfig":
        hi = self.neg_iou_thr[1] if isinstance(self.neg_iou_thr, tuple) else self.neg_iou_thr
        if hi > self.pos_iou_thr:
            raise ValueError(f"neg_iou_thr ({hi:g}) must not exceed pos_iou_thr ({self.pos_iou_thr:g})")
        return self


class FocalLossConfig(Strict):
    alpha: Probability = 0.25
    gamma: float = Field(2.0, ge=0)
    cls_weight: float = Field(1.0, ge=0)
    bbox_weight: float = Field(1.0, ge=0)


class RetinaNetConfig(Strict):
    """RetinaNet as in MMDetection 3.x: ResNet + FPN (P3–P7) + RetinaHead."""

    # family facts the schema needs without torch (the detector class refers to them: ``RetinaNet.display_name``)
    display_name: ClassVar[str] = "RetinaNet"
    augment_type: ClassVar[str] = "resize_flip"  # the one ``augment.type`` this family trains with

    type: Literal["retinanet"]
    num_classes: int | None = Field(None, ge=1, description="None: taken from the dataset")
    depth: Literal[18, 50] = 50
    frozen_stages: int = Field(1, ge=-1, le=4)
    norm_eval: bool = True
    fpn_channels: int = Field(256, ge=8)
    stacked_convs: int = Field(4, ge=0)
    backbone_weights: str | None = "imagenet"
    anchor: AnchorConfig = Field(default_factory=AnchorConfig)
    assigner: MaxIoUAssignerConfig = Field(default_factory=MaxIoUAssignerConfig)
    loss: FocalLossConfig = Field(default_factory=FocalLossConfig)


class RTMDetAssignerConfig(DSLAssignerConfig):
    """Dynamic soft label assignment with mmdet's soft centre prior ``10 ** (d / stride - radius)``."""

    soft_center_radius: PositiveFloat = 3.0


class RTMDetLossConfig(Strict):
    """QFL + GIoU, both divided by the sum of the IoU targets."""

    qfl_weight: float = Field(1.0, ge=0)
    giou_weight: float = Field(2.0, ge=0)
    qfl_beta: float = Field(2.0, ge=0)


class RTMDetConfig(Strict):
    """RTMDet as in MMDetection 3.x: CSPNeXt P5 + CSPNeXtPAFPN + RTMDetSepBNHead."""

    # family facts the schema needs without torch (the detector class refers to them: ``RetinaNet.display_name``)
    display_name: ClassVar[str] = "RTMDet"
    augment_type: ClassVar[str] = "rtmdet"  # the one ``augment.type`` this family trains with

    type: Literal["rtmdet"]
    num_classes: int | None = Field(None, ge=1, description="None: taken from the dataset")
    deepen_factor: PositiveFloat = Field(description="CSPNeXt blocks per stage = max(round(n · deepen_factor), 1)")
    widen_factor: PositiveFloat = Field(description="CSPNeXt channels = int(c · widen_factor)")
    neck_channels: int = Field(ge=8, description="CSPNeXtPAFPN output = head width")
    num_csp_blocks: int = Field(ge=1, description="CSPNeXt blocks per neck CSPLayer")
    exp_on_reg: bool = Field(description="distances = exp(reg) · stride (m/l/x) instead of reg · stride (tiny/s)")
    stacked_convs: int = Field(2, ge=1)
    backbone_weights: str | None = Field(
        None, description="'imagenet' (tiny/s: the official CSPNeXt file in the torch hub cache), a path to CSPNeXt "
        "ImageNet weights under MMDetection key names (backbone.*), or null for random init"
    )
    assigner: RTMDetAssignerConfig = Field(default_factory=RTMDetAssignerConfig)
    loss: RTMDetLossConfig = Field(default_factory=RTMDetLossConfig)


class MaxFilteringConfig(Strict):
    """DeFCN's 3D Max Filtering."""

    kernel_size: int = Field(3, ge=1, description="spatial window")
    tau: int = Field(2, ge=0, description="level window: tau + 1 neighbouring levels")
    norm: bool = Field(True, description="GroupNorm(32) after the residual (DeFCN's 'wo_gn' variant: false)")


class POTOAssignerConfig(Strict):
    """POTO one-to-one assignment and DeFCN's auxiliary one-to-many assignment."""

    alpha: Probability = Field(0.8, description="quality = p^(1-alpha) * IoU^alpha")
    centre_radius: float = Field(1.5, ge=0, description="centre-sampling radius in strides (0: the whole box)")
    aux_topk: int = Field(9, ge=1, description="auxiliary candidates per GT and level")


class DeFCNLossConfig(Strict):
    focal_alpha: Probability = 0.25
    focal_gamma: float = Field(2.0, ge=0)
    reg_weight: float = Field(2.0, ge=0, description="GIoU loss weight")
    aux_weight: float = Field(1.0, ge=0, description="auxiliary one-to-many focal loss weight (0: off)")


class DeFCNConfig(Strict):
    """DeFCN (POTO + 3DMF + aux) on ResNet-50-FPN as Megvii's DeFCN on cvpods."""

    # family facts the schema needs without torch (the detector class refers to them: ``RetinaNet.display_name``)
    display_name: ClassVar[str] = "DeFCN"
    augment_type: ClassVar[str] = "resize_flip"  # the one ``augment.type`` this family trains with

    type: Literal["defcn"]
    num_classes: int | None = Field(None, ge=1, description="None: taken from the dataset")
    frozen_stages: int = Field(1, ge=-1, le=4, description="1: stem + res2 frozen (cvpods FREEZE_AT=2)")
    norm: Literal["frozen_bn", "bn"] = Field(
        "frozen_bn", description="backbone norm, cvpods MODEL.RESNETS.NORM: 'frozen_bn' (FrozenBN, the reference; "
        "needs ImageNet statistics) or 'bn' (BatchNorm trained on batch statistics, SyncBN with train.sync_bn; "
        "for a random backbone)"
    )
    fpn_channels: int = Field(256, ge=32)
    num_convs: int = Field(4, ge=1, description="head tower depth")
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128], min_length=5, max_length=5)
    prior_prob: Annotated[float, Field(gt=0, lt=1)] = 0.01
    filter: MaxFilteringConfig = Field(default_factory=MaxFilteringConfig)
    backbone_weights: str | None = Field(
        "imagenet", description="'imagenet' (the MSRA caffe-style R-50.pkl in the torch hub cache), a path to "
        "it, or null for random init"
    )
    assigner: POTOAssignerConfig = Field(default_factory=POTOAssignerConfig)
    loss: DeFCNLossConfig = Field(default_factory=DeFCNLossConfig)


ModelConfig = Annotated[Union[NanoDetPlusConfig, RetinaNetConfig, RTMDetConfig, DeFCNConfig], Field(discriminator="type")]


def model_config_types() -> dict[str, type[BaseModel]]:
    """Each family's ``model`` section class by its ``model.type``, in :data:`ModelConfig`'s order."""
    union = get_args(ModelConfig)[0]
    return {get_args(c.model_fields["type"].annotation)[0]: c for c in get_args(union)}


# --------------------------------------------------------------------------- input and augmentation
# Input sizes (input.size, --imgsz, sizes stored in checkpoints and run records): 32 px (the coarsest stride of
# most presets) to 4096 px, three times the largest official recipe (1333 × 800); one 4096² image is 192 MiB as
# float32 before any activation, and beyond that a size is a typo, not a recipe.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 4096


class InputConfig(Strict):
    """How an image becomes a tensor. Mean/std are in the channel order the network sees."""

    size: tuple[int, int] = Field(description="(w, h); for keep_ratio resizes: (long, short) scale")
    keep_ratio: bool
    channel_order: Literal["bgr", "rgb"]
    mean: tuple[float, float, float]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    size_divisor: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> "InputConfig":
        if min(self.size) < MIN_INPUT_SIZE or max(self.size) > MAX_INPUT_SIZE:
            raise ValueError(f"size {list(self.size)}: each side must be {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px")
        return self


class AugmentSwitch(Strict):
    """A second training stage of the augmentation, for any family (mmdet's ``PipelineSwitchHook``).

    From its first epoch on, the training pipeline is the one of the augment section with ``set`` merged in
    (nested sections merge key by key; ``null`` turns an optional step off). Give exactly one of
    ``epochs_from_end`` (RTMDet: 20, the last 20 epochs of whatever length the run has) and ``epoch``.
    """

    epochs_from_end: int | None = Field(None, ge=1, description="stage 2 = the last N epochs of the run")
    epoch: int | None = Field(None, ge=0, description="stage 2 from this 0-indexed epoch on")
    set: dict[str, Any] = Field(default_factory=dict, description="augment fields that change in stage 2")

    @model_validator(mode="after")
    def _one_start(self) -> "AugmentSwitch":
        if (self.epochs_from_end is None) == (self.epoch is None):
            raise ValueError("give exactly one of epochs_from_end and epoch")
        for key in ("type", "switch"):
            if key in self.set:
                raise ValueError(f"set.{key}: stage 2 keeps the augment type and cannot switch again")
        return self

    def start_epoch(self, epochs: int) -> int:
        """0-indexed first epoch of stage 2 in a run of ``epochs`` epochs (0 when the run is shorter)."""
        if self.epoch is not None:
            return self.epoch
        return max(0, epochs - int(self.epochs_from_end))


class AugmentBase(Strict):
    """What every family's augment section shares: the optional stage switch."""

    switch: AugmentSwitch | None = Field(None, description="a second augmentation stage (e.g. RTMDet's last 20 epochs)")

    @model_validator(mode="after")
    def _switch_is_valid(self) -> "AugmentBase":
        if self.switch is not None:
            self.switched()  # a bad stage-2 field fails when the preset loads, not 280 epochs in
        return self

    def switched(self) -> "AugmentBase":
        """The stage-2 section: this one with ``switch.set`` merged in and no switch of its own."""
        if self.switch is None:
            raise ValueError("this augment section has no switch")
        base = self.model_dump()
        base.pop("switch")
        try:
            return type(self).model_validate(_deep_merge(base, self.switch.set))
        except ValidationError as e:
            lines = "; ".join(f"switch.set.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ValueError(lines) from None


class NanoDetAugmentConfig(AugmentBase):
    """NanoDet's ShapeTransform + colour jitter (nanodet/data/transform)."""

    type: Literal["nanodet"]
    scale: tuple[PositiveFloat, PositiveFloat] = (0.6, 1.4)
    stretch: tuple[tuple[PositiveFloat, PositiveFloat], tuple[PositiveFloat, PositiveFloat]] = ((0.8, 1.2), (0.8, 1.2))
    flip: Probability = 0.5
    translate: Probability = 0.2
    rotation: float = Field(0.0, ge=0)
    shear: float = Field(0.0, ge=0)
    perspective: float = Field(0.0, ge=0)
    brightness: float = Field(0.2, ge=0)
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.5, 1.2)


class ResizeFlipAugmentConfig(AugmentBase):
    """MMDetection's Resize(keep_ratio) + RandomFlip; with ``short_sides``, detectron2's multi-scale
    ``ResizeShortestEdge(short_sides, max_size, "choice")`` in training."""

    type: Literal["resize_flip"]
    flip: Probability = 0.5
    short_sides: list[int] | None = Field(
        None, min_length=1, description="training only: each image's short side drawn from these (the long side "
        "capped at input.size's larger value); scaled with --imgsz like input.size"
    )
    resize_backend: Literal["cv2", "pil"] = Field(
        "cv2", description="bilinear resize (train and test): cv2 INTER_LINEAR as MMDetection, or PIL BILINEAR as "
        "cvpods/detectron2 (a low-pass filter when it shrinks)")
    size_rule: Literal["mmcv", "shortest_edge"] = Field(
        "mmcv", description="rounding of the resized size: mmcv rescale_size, or cvpods/detectron2 "
        "ResizeShortestEdge (short side first, then the long-side cap)")


def _ordered(pair: tuple[float, float], name: str) -> None:
    if pair[0] > pair[1]:
        raise ValueError(f"{name} {tuple(pair)}: the first value must not exceed the second")


class CachedMosaicConfig(Strict):
    """mmdet ``CachedMosaic``: 4 images from the worker's cache of loaded samples on a 2·img_scale canvas."""

    img_scale: tuple[Pixels, Pixels] = Field((640, 640), description="(w, h) of one tile; the canvas is twice that")
    center_ratio_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    pad_val: PixelValue = 114.0
    prob: Probability = 1.0
    max_cached_images: int = Field(40, ge=4, description="cache size (mmdet requires at least 4)")
    random_pop: bool = Field(True, description="full cache: drop a random entry (False: the oldest, FIFO)")

    @model_validator(mode="after")
    def _check(self) -> "CachedMosaicConfig":
        _ordered(self.center_ratio_range, "center_ratio_range")
        return self


class RandomResizeConfig(Strict):
    """mmcv ``RandomResize``: target scale·r with r ~ U(ratio_range), keep-ratio fit (longer side)."""

    scale: tuple[Pixels, Pixels] = Field((1280, 1280), description="(w, h) before the ratio")
    ratio_range: tuple[PositiveFloat, PositiveFloat] = Field((0.1, 2.0), description="tiny/s: (0.5, 2.0)")
    keep_ratio: bool = True

    @model_validator(mode="after")
    def _check(self) -> "RandomResizeConfig":
        _ordered(self.ratio_range, "ratio_range")
        return self


class RandomCropConfig(Strict):
    """mmdet ``RandomCrop(crop_type='absolute')``."""

    crop_size: tuple[Pixels, Pixels] = Field((640, 640), description="(w, h); smaller images are not padded here")
    allow_negative_crop: bool = Field(False, description="False: a crop without any box drops the sample")


class YOLOXHSVConfig(Strict):
    """mmdet ``YOLOXHSVRandomAug``: additive OpenCV-HSV gains in ±delta, each kept with p = 0.5."""

    hue_delta: int = Field(5, ge=0, le=180)
    saturation_delta: int = Field(30, ge=0, le=255)
    value_delta: int = Field(30, ge=0, le=255)


class PadConfig(Strict):
    """mmdet ``Pad(size)`` bottom/right, before normalisation."""

    size: tuple[Pixels, Pixels] = Field((640, 640), description="(w, h)")
    pad_val: PixelValue = 114.0


class CachedMixUpConfig(Strict):
    """mmdet ``CachedMixUp``: a cached partner letterboxed, flipped, cropped/padded, blended 0.5/0.5."""

    img_scale: tuple[Pixels, Pixels] = Field((640, 640), description="(w, h) of the partner's letterbox")
    ratio_range: tuple[PositiveFloat, PositiveFloat] = Field((1.0, 1.0), description="scale jitter of the partner")
    flip_ratio: Probability = 0.5
    pad_val: PixelValue = 114.0
    max_iters: int = Field(15, ge=1, description="tries to draw a partner with boxes")
    max_cached_images: int = Field(20, ge=2, description="cache size (mmdet requires at least 2)")
    random_pop: bool = True
    prob: Probability = 1.0

    @model_validator(mode="after")
    def _check(self) -> "CachedMixUpConfig":
        _ordered(self.ratio_range, "ratio_range")
        return self


class RTMDetAugmentConfig(AugmentBase):
    """RTMDet's training pipeline (mmdet configs/rtmdet, stage 1): CachedMosaic → RandomResize → RandomCrop →
    YOLOXHSVRandomAug → RandomFlip → Pad → CachedMixUp. Defaults are the m/l/x values; ``null`` turns
    ``mosaic``, ``hsv`` or ``mixup`` off (stage 2 sets ``mosaic: null, mixup: null, resize.scale: [640, 640]``).
    Pixel sizes scale with ``--imgsz`` (relative to ``input.size``)."""

    type: Literal["rtmdet"]
    mosaic: CachedMosaicConfig | None = Field(default_factory=CachedMosaicConfig)
    resize: RandomResizeConfig = Field(default_factory=RandomResizeConfig)
    crop: RandomCropConfig = Field(default_factory=RandomCropConfig)
    hsv: YOLOXHSVConfig | None = Field(default_factory=YOLOXHSVConfig)
    flip: Probability = 0.5
    pad: PadConfig = Field(default_factory=PadConfig)
    mixup: CachedMixUpConfig | None = Field(default_factory=CachedMixUpConfig)


AugmentConfig = Annotated[
    Union[NanoDetAugmentConfig, ResizeFlipAugmentConfig, RTMDetAugmentConfig], Field(discriminator="type")
]


class DataConfig(Strict):
    filter_empty: bool = Field(False, description="drop training images without boxes")
    min_size: int = Field(0, ge=0, description="drop training images smaller than this (px)")
    aspect_ratio_grouping: Literal["none", "w>=h", "w>h"] = Field(
        "none", description="training batches of one orientation (detcli.data.samplers): 'w>=h' landscape "
        "includes squares (MMDetection AspectRatioBatchSampler), 'w>h' it does not (cvpods DistributedGroupSampler); "
        "'none': batches mix orientations")


# --------------------------------------------------------------------------- training
class OptimizerConfig(Strict):
    type: Literal["sgd", "adamw"]
    lr: PositiveFloat
    base_batch: int | None = Field(None, ge=1, description="lr is scaled by batch/base_batch when set")
    momentum: Probability = 0.9
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    norm_decay: bool = Field(True, description="apply weight decay to norm weights/biases")
    bias_decay: bool = Field(True, description="apply weight decay to conv/linear biases")


class WarmupConfig(Strict):
    steps: int = Field(0, ge=0, description="iterations of linear warmup")
    ratio: Probability = Field(0.001, description="lr factor at iteration 0")


class ScheduleConfig(Strict):
    type: Literal["cosine", "step"]
    eta_min: float = Field(0.0, ge=0, description="cosine: final lr at optimizer.lr (scaled with the batch like "
                           "the lr when optimizer.base_batch is set)")
    flat_fraction: float = Field(
        0.0, ge=0, lt=1, description="cosine: share of the epochs at the full lr before the decay starts "
        "(RTMDet: 0.5, MMEngine CosineAnnealingLR begin=epochs/2)")
    per_iteration: bool = Field(
        False, description="cosine: update every iteration (MMEngine convert_to_iter_based) instead of once per "
        "epoch (NanoDet)")
    milestones: list[int] = Field(default_factory=list, description="step: epochs where lr *= gamma")
    gamma: PositiveFloat = 0.1


class EMAConfig(Strict):
    """ema ← ema·(1−d) + model·d with d = decay_to·exp(−(1+it)/gamma) + (1 − decay_to)."""

    decay: Annotated[float, Field(gt=0, lt=1)] = 0.9998
    gamma: PositiveFloat = 2000.0


class TrainConfig(Strict):
    epochs: int = Field(ge=1)
    batch: int = Field(ge=1, description="global batch (split over processes)")
    workers: int = Field(4, ge=0)
    optimizer: OptimizerConfig
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    schedule: ScheduleConfig
    grad_clip: PositiveFloat | None = None
    ema: EMAConfig | None = None
    val_interval: int = Field(1, ge=1)
    val_every_epoch_last: int = Field(
        0, ge=0, description="validate every epoch during the last N epochs (RTMDet: 20, MMEngine "
        "dynamic_intervals=[(280, 1)] of 300)")
    amp: bool | Literal["auto"] = Field(
        False, description="mixed precision: float16 on CUDA, bfloat16 on CPU; 'auto': on where it is fast (CUDA, "
        "or a CPU with native bfloat16: AVX512-BF16 / AMX), off elsewhere")
    sync_bn: bool = False
    patience: int | None = Field(
        None, ge=1, description="stop when the val AP50-95 (what best.pt keeps) has not improved for this many "
        "validations; null: off, as in MMDetection and NanoDet (Ultralytics stops after 100 epochs by default)")
    tensorboard: bool = Field(
        False, description="log losses, lr, val metrics and images to <run_dir>/tensorboard/ (pip install "
        "\"detcli[tensorboard]\")")


class TestConfig(Strict):
    """Test-time post-processing (``detcli.postprocess``); None = the family's own default."""

    score_thr: Probability = 0.05
    iou_thr: Probability = 0.6
    max_det: int = Field(100, ge=1)
    nms: Literal["class_aware", "none"] = Field("class_aware", description="'none' for NMS-free heads")
    nms_pre: int | None = Field(None, ge=1, description="per level: best pairs kept after the score filter")
    min_bbox_size: float | None = Field(None, ge=0, description="drop boxes whose width or height is <= this")


class ZooFigures(Strict):
    """A built-in recipe's figures on COCO val2017 (80 classes), listed by ``detcli presets``; nothing else reads
    them. ``params`` and ``gflops`` are counted as the family's reference counts them (the detector's
    ``param_count_convention`` / ``flop_count_convention``); tests check them against a count of the model.
    A preset built on another (``base:``) does not inherit them."""

    coco_ap: float | None = Field(None, ge=0, le=100, description="box AP (0–100) the official recipe publishes")
    params: int | None = Field(None, ge=1, description="inference-graph parameters, in the family's convention")
    gflops: float | None = Field(None, gt=0, description="one image at input.size, in the family's convention")


class Preset(Strict):
    name: str
    description: str = ""
    reference: str = Field("", description="where the recipe comes from, and its published figures")
    zoo: ZooFigures | None = Field(None, description="the built-in recipe's COCO figures (detcli presets)")
    model: ModelConfig
    input: InputConfig
    augment: AugmentConfig
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig
    demo: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of `train` used on the built-in demo data (a shorter schedule)",
    )
    test: TestConfig = Field(default_factory=TestConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "Preset":
        if type(self.model).augment_type != self.augment.type:
            raise ValueError(f"augment.type {self.augment.type!r} does not fit model.type {self.model.type!r}")
        if self.model.type == "nanodet_plus" and self.input.keep_ratio:
            raise ValueError("NanoDet-Plus uses a stretch resize: input.keep_ratio must be false")
        if self.augment.type == "rtmdet" and not self.input.keep_ratio:
            raise ValueError("RTMDet resizes keeping the aspect ratio (then pads): input.keep_ratio must be true")
        if self.demo:
            try:
                self.demo_train()  # validates the overrides now, not at the end of a run
            except ValidationError as e:
                raise _located_under("demo", e) from None
        return self

    def train_with(self, explicit: dict[str, Any] | None = None, demo: bool = False) -> TrainConfig:
        """The training config a run uses (validated): ``train``, then the ``demo`` overrides when ``demo``
        (the built-in demo data), then ``explicit``.

        ``explicit``: the ``train`` fields the user set for this run (``--set train.…``, ``--batch``…), nested
        like ``train``; they win over the demo schedule.
        """
        merged = _deep_merge(self.train.model_dump(), self.demo) if demo else self.train.model_dump()
        return TrainConfig.model_validate(_deep_merge(merged, explicit or {}))

    def demo_train(self) -> TrainConfig:
        """The training config with the ``demo`` overrides applied (validated)."""
        return self.train_with(demo=True)


def _located_under(field: str, err: ValidationError) -> ValidationError:
    """``err`` (from validating a nested section on its own) with ``field`` prepended to every location."""
    return ValidationError.from_exception_data(
        err.title,
        [{**{k: e[k] for k in ("type", "input", "ctx") if k in e}, "loc": (field, *e["loc"])} for e in err.errors()],
    )


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
