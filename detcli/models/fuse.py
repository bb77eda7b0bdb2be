"""The fastest eager form of any detector, equal to float32 rounding, for inference only (``predict`` / ``eval``).

:func:`fuse_for_inference` returns a new model, the input model is left untouched:

1. the modules only training runs are dropped (those outside :meth:`Detector.inference_state_dict`, e.g.
   NanoDet-Plus' AGM);
2. a module registered under several names (RTMDet's head convs, shared across levels, each level with its own
   BatchNorm) gets its own copy under each name, so each copy can take its level's BatchNorm;
3. every BatchNorm whose input is the output of a conv and nothing else is folded into that conv
   (``w' = w·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``, per output channel, so depthwise and grouped convs
   fold alike; a conv without bias gets one) and replaced by ``nn.Identity``. The pairs are found by running
   the model once (see :func:`conv_bn_pairs`), not from module names, so any detector folds without code of
   its own. FrozenBatchNorm2d (DeFCN's backbone) folds the same way. GroupNorm (statistics of each input) and
   BatchNorm without running statistics cannot fold;
4. on CPU the weights and the input are channels_last (NHWC): PyTorch's oneDNN kernels are faster in that
   layout for the depthwise convs and max-pooling these detectors are made of (measured in
   ``benchmarks/speed/inference_latency.py``);
5. :meth:`InferenceDetector.predict` runs under ``torch.inference_mode()``.

Outputs equal the original model's to float rounding (``tests/unit/test_fuse.py``: ≤ 1e-4), not bit for bit: steps
1, 2 and 5 (and the priors cache) change no number, steps 3 and 4 each reorder float32 sums. On the golden
fixtures (``benchmarks/parity/inference_exactness.py``, 1 thread) channels_last alone moves 40–96 % of the raw outputs,
by up to 4e-6 relative (RTMDet, NanoDet-Plus) and 3e-5 (RetinaNet, DeFCN: ResNet backbones, 256-channel heads);
folding alone (float64 fold, one float32 rounding) 60–92 %, by up to 3e-6 and 1.5e-5; no fold of a trained
network's statistics is bit-exact (the BatchNorm's ``y·s + t`` and the folded conv's ``Σ x·(w·s) + b'`` round
differently). ``fuse_for_inference(model, channels_last=False, fold=False)`` is exact. The result cannot train
(``train()`` raises) and is never saved: checkpoints keep the original modules.

``detcli predict`` / ``eval`` run it through :func:`detcli.inference.paths.inference_model`; ``--exact`` (or
``DETCLI_NO_FUSE=1``) runs the model as loaded instead.
"""
from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

from detcli.assigners.assignment import Assignment
from detcli.errors import DetcliError
from detcli.models.base import Detector
from detcli.structures import HeadOutput, Priors
from detcli.postprocess import PostprocessConfig
from detcli.structures import Detections, ImageMeta, Target

PRIORS_KEPT = 8  # input sizes whose priors an InferenceDetector keeps
NORMS = (_BatchNorm, FrozenBatchNorm2d)  # what folds into a conv


def fuse_for_inference(model: Detector, channels_last: bool | None = None, fold: bool = True) -> InferenceDetector:
    """A new inference-only detector equal to ``model`` in eval mode, BatchNorms folded (module docstring).

    Args:
        model: any detector (its mode and weights are not changed).
        channels_last: NHWC weights and input; default: on CPU.
        fold: fold the BatchNorms (steps 2–3). ``fold=False, channels_last=False`` is the exact form: the
            network as loaded (steps 1 and 5 and the priors cache only, none of which changes a number).
    """
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = device.type == "cpu"
    side = max(32, max(model.strides))  # the smallest input every level of every family accepts
    with torch.inference_mode(False):  # normal tensors (also when called in inference mode): autograd pairs them
        fused = copy.deepcopy(_without_training_modules(model)).eval()
        if fold:
            unshare_modules_(fused)
            probe = torch.zeros(1, 3, side, side, device=device, dtype=next(model.parameters()).dtype)
            fold_batchnorms_(fused, probe)
    for p in fused.parameters():
        p.requires_grad_(False)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    return InferenceDetector(fused, channels_last)


def unshare_modules_(model: nn.Module) -> int:
    """Give a module registered under several names a copy of its own under every name after the first (in
    place; the copies no longer share weights, so this is for inference only). Returns how many were copied."""
    seen: set[int] = set()
    copies = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in seen:
                setattr(parent, name, copy.deepcopy(child))
                copies += 1
            else:
                seen.add(id(child))
    return copies


def fold_batchnorms_(model: nn.Module, images: Tensor) -> int:
    """Fold every BatchNorm of :func:`conv_bn_pairs` into its conv, in place (``model`` in eval mode);
    the BatchNorm becomes ``nn.Identity``. Returns how many were folded."""
    pairs = conv_bn_pairs(model, images)
    for conv, bn in pairs:
        dtype = conv.weight.dtype
        weight, bias = fuse_conv_bn_weights(  # in float64: the folded weights round once
            conv.weight.double(), None if conv.bias is None else conv.bias.double(), bn.running_mean.double(),
            bn.running_var.double(), bn.eps, _double(bn.weight), _double(bn.bias),
        )
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
    folded = {bn for _, bn in pairs}
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if child in folded:
                setattr(parent, name, nn.Identity())
    return len(pairs)


def conv_bn_pairs(model: nn.Module, images: Tensor) -> list[tuple[_ConvNd, _BatchNorm]]:
    """(conv, BatchNorm) pairs of ``model`` (eval mode) that fold exactly, found by one forward on ``images``.

    A pair: the BatchNorm's input is the conv's output, untouched (no in-place op in between), and used by
    nothing else that reaches the outputs (counted on the autograd graph); conv and BatchNorm each run once
    per forward (a module shared by several levels is left alone); the BatchNorm uses running statistics.
    Not seen: uses of the conv output outside autograd (a comparison, an index), which no detector here has.
    """
    produced_by: dict[torch.autograd.graph.Node, list[_ConvNd]] = {}
    bn_inputs: dict[_BatchNorm, list[torch.autograd.graph.Node | None]] = {}
    calls: Counter[nn.Module] = Counter()

    def record(module: nn.Module, args: tuple, output: Tensor) -> None:
        calls[module] += 1
        if isinstance(module, NORMS):
            bn_inputs.setdefault(module, []).append(args[0].grad_fn if args else None)
        else:
            produced_by.setdefault(output.grad_fn, []).append(module)

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, NORMS) or (isinstance(m, _ConvNd) and not m.transposed)]
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the autograd graph is the data flow
            outputs = model(images.detach().clone().requires_grad_())
    finally:
        for h in hooks:
            h.remove()
    users = _users(outputs)
    pairs = []
    for bn, inputs in bn_inputs.items():
        convs = produced_by.get(inputs[0], []) if inputs[0] is not None else []
        frozen = isinstance(bn, FrozenBatchNorm2d)  # always its stored statistics
        if (len(inputs) == 1 and (frozen or (bn.track_running_stats and bn.running_mean is not None and not bn.training))
                and len(convs) == 1 and calls[convs[0]] == 1 and users[inputs[0]] == 1):
            pairs.append((convs[0], bn))
    return pairs


def _users(outputs: object) -> Counter[torch.autograd.graph.Node]:
    """How many autograd nodes reachable from ``outputs`` (tensors, possibly nested in tuples) take each
    node's result as an input."""
    roots = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    users: Counter[torch.autograd.graph.Node] = Counter()
    seen, stack = set(roots), list(roots)
    while stack:
        node = stack.pop()
        for parent, _ in node.next_functions:
            if parent is None:
                continue
            users[parent] += 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return users


def _tensors(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _double(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.double()


def _without_training_modules(model: Detector) -> Detector:
    """``model`` itself, or a shallow copy whose children outside ``inference_state_dict`` (modules only
    training runs) are None, so the deep copy that follows skips them."""
    keep = model.inference_state_dict().keys()
    unused = [name for name, child in model.named_children()
              if child.state_dict() and not any(k.startswith(f"{name}.") for k in keep)]
    if not unused:
        return model
    shallow = copy.copy(model)
    shallow._modules = {k: (None if k in unused else v) for k, v in model._modules.items()}
    return shallow


class InferenceDetector(Detector):
    """A detector prepared by :func:`fuse_for_inference`: the contract of the wrapped ``model``, inference only.

    ``forward`` makes the input channels_last when the weights are; ``predict`` runs under inference mode. Every
    step of the test-time pass that a family may make its own (decoding, ``detections``, ``postprocess``,
    ``to_original``: e.g. RTMDet's un-padding rule) is the wrapped model's (``tests/e2e/test_exact_path.py`` checks it).
    """

    def __init__(self, model: Detector, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.strides, self.num_classes = model.strides, model.num_classes
        self.postprocess_cfg, self.select_on_logits = model.postprocess_cfg, model.select_on_logits
        self.to_original_rule = model.to_original_rule  # type: ignore[misc]  # the family's, for exports
        self._priors: dict[tuple, Priors] = {}
        self.eval()

    def forward(self, images: Tensor) -> HeadOutput:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def priors(self, image_size: tuple[int, int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Priors:
        """The wrapped model's priors, kept for the last few (size, device, dtype): the sizes of a run repeat."""
        key = (int(image_size[0]), int(image_size[1]), str(device), dtype)
        if key not in self._priors:
            if len(self._priors) >= PRIORS_KEPT:
                self._priors.pop(next(iter(self._priors)))
            with torch.inference_mode(False):  # normal tensors: usable in and outside inference mode
                self._priors[key] = self.model.priors(image_size, device, dtype)
        return self._priors[key]

    def decode_boxes(self, outputs: HeadOutput, priors: Priors) -> Tensor:
        return self.model.decode_boxes(outputs, priors)

    def encode_boxes(self, boxes: Tensor, priors: Priors) -> Tensor:
        return self.model.encode_boxes(boxes, priors)

    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        return self.model.decode_scores(outputs)

    def detections(self, outputs: HeadOutput, batch_shape: tuple[int, ...], metas: list[ImageMeta],
                   cfg: PostprocessConfig) -> list[Detections]:
        """The family's own ``detections`` where it has one (DeFCN: boxes not clipped), else the shared one with
        the cached priors."""
        if type(self.model).detections is not Detector.detections:
            return self.model.detections(outputs, batch_shape, metas, cfg)
        return super().detections(outputs, batch_shape, metas, cfg)

    def postprocess(self, boxes: Tensor, scores: Tensor, priors: Priors, cfg: PostprocessConfig | None = None,
                    scores_are_logits: bool = False) -> list[Detections]:
        return self.model.postprocess(boxes, scores, priors, cfg, scores_are_logits)

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        return self.model.to_original(det, meta)

    def assign(self, outputs: HeadOutput, priors: Priors, targets: list[Target],
               metas: list[ImageMeta] | None = None) -> Assignment:
        return self.model.assign(outputs, priors, targets, metas)

    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        raise DetcliError("a model prepared for inference (BatchNorms folded) cannot train; train the original")

    def train(self, mode: bool = True) -> InferenceDetector:
        if mode:
            raise DetcliError("a model prepared for inference (BatchNorms folded) cannot train; train the original")
        return super().train(False)

    def predict(self, images: Tensor, metas: list[ImageMeta], cfg: PostprocessConfig | None = None) -> list[Detections]:
        with torch.inference_mode():
            return super().predict(images, metas, cfg)
