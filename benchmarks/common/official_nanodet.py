"""Import the official NanoDet model code from a checkout without its training dependencies.

``nanodet.util`` pulls in pytorch_lightning, matplotlib, termcolor, …; the model code needs only a few of
its helpers. A stand-in ``nanodet.util`` package is registered that loads just those submodules from the
checkout itself, so nothing from the official repo is copied and nothing extra is installed.
Used by the parity and latency benchmarks only (never by detcli).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import types
from pathlib import Path

import torch

OFFICIAL_CONFIGS = {
    ("1.0x", 320): "nanodet-plus-m_320.yml",
    ("1.0x", 416): "nanodet-plus-m_416.yml",
    ("1.5x", 320): "nanodet-plus-m-1.5x_320.yml",
    ("1.5x", 416): "nanodet-plus-m-1.5x_416.yml",
}

# No official config uses GhostNet (nanodet-g is a CustomCspNet): a NanoDet-Plus on it is an official config whose
# ``model.arch.backbone`` is replaced by this section (the official GhostNet's own arguments; ``pretrain`` off) and
# whose ``fpn.in_channels`` become the channels of its out_stages (1.0x: 40, 112, 960).
GHOSTNET_BACKBONE = {"name": "GhostNet", "width_mult": 1.0, "out_stages": [4, 6, 9], "activation": "LeakyReLU"}
GHOSTNET_FPN_IN_CHANNELS = [40, 112, 960]


def resolve_repo(repo: str | os.PathLike | None = None) -> Path:
    """The checkout given, else ``$NANODET_REPO``; raises when neither points at a NanoDet checkout."""
    repo = repo or os.environ.get("NANODET_REPO")
    if not repo:
        raise SystemExit("pass --repo /path/to/nanodet or set NANODET_REPO")
    path = Path(repo).expanduser().resolve()
    if not (path / "nanodet" / "model" / "arch" / "nanodet_plus.py").is_file():
        raise SystemExit(f"{path} is not a RangiLyu/nanodet checkout (nanodet/model/arch/nanodet_plus.py missing)")
    return path


def import_official(repo: str | os.PathLike | None = None) -> types.SimpleNamespace:
    """Make the checkout importable; returns ``build_model``, ``load_config`` (official functions) and ``cfg``."""
    path = resolve_repo(repo)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    if "nanodet.util" not in sys.modules:
        util = types.ModuleType("nanodet.util")
        util.__path__ = [str(path / "nanodet" / "util")]
        sys.modules["nanodet.util"] = util
        import nanodet  # noqa: F401  (the real package; its __init__ is light)

        nanodet.util = util
        from nanodet.util import box_transform, config, misc, util_mixins

        util.bbox2distance = box_transform.bbox2distance
        util.distance2bbox = box_transform.distance2bbox
        util.multi_apply = misc.multi_apply
        util.images_to_levels = misc.images_to_levels
        util.unmap = misc.unmap
        util.util_mixins = util_mixins
        util.cfg = config.cfg
        util.load_config = config.load_config
        util.overlay_bbox_cv = lambda *args, **kwargs: None  # visualisation only (needs matplotlib)
    from nanodet.model.arch import build_model
    from nanodet.util import cfg, load_config

    return types.SimpleNamespace(build_model=build_model, load_config=load_config, cfg=cfg, repo=path)


def build_official(official: types.SimpleNamespace, width: str, imgsz: int, backbone: dict | None = None,
                   fpn_in_channels: list[int] | None = None):
    """Official NanoDetPlus (with AGM) from the checkout's own config file; ImageNet download disabled.

    ``backbone`` (e.g. :data:`GHOSTNET_BACKBONE`) replaces the config's ``model.arch.backbone`` section and
    ``fpn_in_channels`` its neck's ``in_channels`` (the aux neck is the official deep copy of the neck).

    Returns (model, cfg_node).
    """
    cfg = official.cfg.clone()
    cfg.defrost()
    cfg.merge_from_file(str(official.repo / "config" / OFFICIAL_CONFIGS[(width, imgsz)]))
    if backbone is not None:
        cfg.model.arch.backbone = type(cfg)(dict(backbone))
    if fpn_in_channels is not None:
        cfg.model.arch.fpn.in_channels = list(fpn_in_channels)
    cfg.model.arch.backbone.pretrain = False
    with contextlib.redirect_stdout(io.StringIO()):  # the official constructors print progress
        model = official.build_model(cfg.model)
    return model, cfg


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter and BN buffer a non-trivial random value with O(1) activations, so that a parity
    check cannot pass by accident (the official init makes BN an identity and the head output ≈ constant)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        elif hasattr(m, "scale") and isinstance(m.scale, torch.nn.Parameter):
            m.scale.copy_(torch.rand((), generator=g) + 0.5)


@torch.no_grad()
def calibrate_bn_(model: torch.nn.Module, imgsz: int, seed: int = 0, batch: int = 4) -> None:
    """Set every BN's running statistics to the batch statistics of random images (main and AGM paths), so
    activations stay O(1) in eval mode after :func:`randomize_`."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration passes
    was_training = model.training
    model.train()
    images = torch.randn(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed + 1))
    feats = model.backbone(images)
    model.fpn(feats)
    model.aux_fpn(feats)
    model.head(model.fpn(feats))
    for bn in bns:
        bn.momentum = 0.1
    model.train(was_training)
