"""Import the official DeFCN model (POTO + 3DMF + Aux, R-50-FPN) from checkouts, without building cvpods.

Sources: ``$DEFCN_REPO`` (Megvii-BaseDetection/DeFCN: the playground config ``CONFIG_DIR`` with its
``config.py``, ``net.py`` and ``fcos.py``) and ``$CVPODS_REPO`` (Megvii-BaseDetection/cvpods: the framework the
playground imports). Nothing is copied and nothing is compiled: stand-in packages are registered in
``sys.modules`` for ``cvpods`` and the subpackages the model touches, and each is given only the real
submodules of the checkout that the model needs (loaded from the checkout's own files). What is *not* the
official code (everything else is):

- ``cvpods`` (the top package) is a bare namespace: its ``__init__`` (``setup_environment()``,
  ``set_megfile()``) is skipped. The subpackage ``__init__`` files (``cvpods.layers``, ``.modeling``,
  ``.modeling.backbone``, ``.modeling.losses``, ``.modeling.meta_arch``, ``.modeling.nn_utils``,
  ``.structures``, ``.utils``, ``.configs``) are skipped too: they import every model of the zoo;
- ``cvpods._C``: a fake compiled extension; any attribute is a function that raises. This model calls
  none of them (they are deformable convs, ``ml_nms`` and rotated-box IoU; the NMS used is
  ``cvpods.layers.batched_nms``, which calls torchvision's ``batched_nms``);
- ``cvpods.modeling.basenet.basenet``: an identity class decorator (the real one adds a visualiser to
  ``RetinaNet``; ``meta_arch/retinanet.py`` is loaded only for ``permute_to_N_HWA_K``);
- ``cvpods.modeling.backbone.timm_backbone.build_timm_backbone``: raises (``fpn.py`` imports it; needs timm);
- ``cvpods.utils.log_first_n``: logs through ``logging`` (only on the deprecated ``targets`` input key);
- ``megfile``: an empty module (``cvpods/utils/dump/events.py`` imports it for its JSON writer only).

The pure-Python packages the config system and the model import (``loguru``, ``easydict``, ``colorama``,
``tabulate``, ``six``) are real: install them into a separate folder and point ``$CVPODS_DEPS`` at it
(``pip install --no-deps --target /tmp/ref/cvpods-deps loguru easydict colorama tabulate six``), or have them
importable. scipy (``linear_sum_assignment``) must be importable.

Used by ``benchmarks/fixtures/make_golden_fixtures.py`` only (never by detcli).

    DEFCN_REPO=/tmp/ref/defcn CVPODS_REPO=/tmp/ref/cvpods CVPODS_DEPS=/tmp/ref/cvpods-deps \\
        python -m benchmarks.common.official_defcn   # builds the model, prints and checks its parameter counts
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

import torch

CONFIG_DIR = "playground/detection/coco/poto.res50.fpn.coco.800size.3x_ms.3dmf.aux"
# the reference sheet's counts (FrozenBN affine weights are buffers, not parameters); FREEZE_AT=2
EXPECTED_PARAMS = 32_834_842
EXPECTED_TRAINABLE = 32_612_442

STUBS = [
    "cvpods (top package): bare namespace, its __init__ (setup_environment, set_megfile) skipped; the "
    "subpackage __init__s of cvpods.layers/.modeling/.modeling.backbone/.modeling.losses/.modeling.meta_arch/"
    ".modeling.nn_utils/.structures/.utils/.configs skipped, each given only the real submodules the model needs",
    "cvpods._C: fake compiled extension, every attribute raises (none is called: deformable conv, ml_nms, "
    "rotated IoU)",
    "cvpods.modeling.basenet.basenet: identity class decorator (meta_arch/retinanet.py is loaded only for "
    "permute_to_N_HWA_K)",
    "cvpods.modeling.backbone.timm_backbone.build_timm_backbone: raises (needs timm; imported by fpn.py)",
    "cvpods.utils.log_first_n: logging stand-in (only used for the deprecated 'targets' input key)",
    "megfile: empty module (imported by cvpods/utils/dump/events.py for its JSON writer only)",
]


def _resolve(value: str | os.PathLike | None, env: str, probe: str, what: str) -> Path:
    value = value or os.environ.get(env)
    if not value:
        raise SystemExit(f"set {env} to a {what} checkout")
    path = Path(value).expanduser().resolve()
    if not (path / probe).is_file():
        raise SystemExit(f"{path} is not a {what} checkout ({probe} missing)")
    return path


def _package(name: str, path: Path | None = None) -> types.ModuleType:
    """A stand-in package (its ``__init__`` is not run) whose submodules load from ``path``."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)] if path is not None else []
    mod.__package__ = name
    sys.modules[name] = mod
    parent, _, leaf = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], leaf, mod)
    return mod


def _module(name: str, attrs: dict | None = None) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs or {})
    sys.modules[name] = mod
    parent, _, leaf = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], leaf, mod)
    return mod


def _load_file(name: str, path: Path) -> types.ModuleType:
    """Execute one file of a checkout as module ``name`` (a top-level playground file)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class _FakeC(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"cvpods._C.{name} is a stub (compiled op not built)")

        return missing


def import_official(defcn_repo=None, cvpods_repo=None, deps=None) -> types.SimpleNamespace:
    """Register the stand-ins and load the official modules. Returns a namespace with the playground
    modules ``config`` / ``net`` / ``fcos``, the cvpods modules used by the fixtures and the paths."""
    defcn = _resolve(defcn_repo, "DEFCN_REPO", f"{CONFIG_DIR}/fcos.py", "Megvii-BaseDetection/DeFCN")
    cvp = _resolve(cvpods_repo, "CVPODS_REPO", "cvpods/modeling/meta_arch/fcos.py", "Megvii-BaseDetection/cvpods")
    deps = deps or os.environ.get("CVPODS_DEPS")
    if deps and str(deps) not in sys.path:
        sys.path.append(str(Path(deps).expanduser().resolve()))
    if "cvpods" in sys.modules and getattr(sys.modules["cvpods"], "__defcn_stub__", False):
        return sys.modules["cvpods"].__defcn_stub__
    root = cvp / "cvpods"
    import importlib

    top = _package("cvpods", root)
    sys.modules["cvpods._C"] = _FakeC("cvpods._C")
    top._C = sys.modules["cvpods._C"]
    _module("megfile")

    # cvpods.utils: comm (distributed helpers), EventStorage (put_scalar in get_ground_truth)
    utils = _package("cvpods.utils", root / "utils")
    utils.log_first_n = lambda level, msg, n=1, *, name=None, key="caller": logging.getLogger("cvpods").log(level, msg)
    comm = importlib.import_module("cvpods.utils.distributed.comm")
    utils.comm = comm
    _package("cvpods.utils.dump", root / "utils" / "dump")
    events = importlib.import_module("cvpods.utils.dump.events")
    utils.EventStorage, utils.get_event_storage = events.EventStorage, events.get_event_storage
    importlib.import_module("cvpods.utils.compat_wrapper")
    importlib.import_module("cvpods.utils.apex_wrapper")

    # cvpods.layers
    layers = _package("cvpods.layers", root / "layers")
    for sub, names in [
        ("shape_spec", ["ShapeSpec"]),
        ("wrappers", ["cat", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ConvTranspose2d", "interpolate"]),
        ("batch_norm", ["FrozenBatchNorm2d", "NaiveSyncBatchNorm", "get_activation", "get_norm"]),
        ("deform_conv", ["DeformConv", "ModulatedDeformConv"]),
        ("nms", ["batched_nms", "generalized_batched_nms", "nms"]),
        ("mask_ops", ["paste_masks_in_image"]),
    ]:
        mod = importlib.import_module(f"cvpods.layers.{sub}")
        for n in names:
            setattr(layers, n, getattr(mod, n))

    # cvpods.structures
    structures = _package("cvpods.structures", root / "structures")
    boxes = importlib.import_module("cvpods.structures.boxes")
    for n in ("Boxes", "BoxMode", "pairwise_iou", "pairwise_ioa"):
        setattr(structures, n, getattr(boxes, n))
    structures.Instances = importlib.import_module("cvpods.structures.instances").Instances
    structures.ImageList = importlib.import_module("cvpods.structures.image_list").ImageList
    structures.RotatedBoxes = importlib.import_module("cvpods.structures.rotated_boxes").RotatedBoxes

    # cvpods.modeling
    _package("cvpods.modeling", root / "modeling")
    nn_utils = _package("cvpods.modeling.nn_utils", root / "modeling" / "nn_utils")
    nn_utils.weight_init = importlib.import_module("cvpods.modeling.nn_utils.weight_init")
    _module("cvpods.modeling.basenet", {"basenet": lambda cls: cls})
    losses = _package("cvpods.modeling.losses", root / "modeling" / "losses")
    for sub, names in [("focal_loss", ["sigmoid_focal_loss", "sigmoid_focal_loss_jit"]),
                       ("iou_loss", ["IOULoss", "iou_loss"]), ("smooth_l1_loss", ["smooth_l1_loss"])]:
        mod = importlib.import_module(f"cvpods.modeling.losses.{sub}")
        for n in names:
            setattr(losses, n, getattr(mod, n))
    backbone = _package("cvpods.modeling.backbone", root / "modeling" / "backbone")
    backbone.Backbone = importlib.import_module("cvpods.modeling.backbone.backbone").Backbone

    def no_timm(*args, **kwargs):
        raise NotImplementedError("timm backbones are stubbed out")

    _module("cvpods.modeling.backbone.timm_backbone", {"build_timm_backbone": no_timm})
    fpn = importlib.import_module("cvpods.modeling.backbone.fpn")
    resnet = importlib.import_module("cvpods.modeling.backbone.resnet")
    _package("cvpods.modeling.meta_arch", root / "modeling" / "meta_arch")
    importlib.import_module("cvpods.modeling.meta_arch.retinanet")
    importlib.import_module("cvpods.modeling.meta_arch.fcos")
    box_regression = importlib.import_module("cvpods.modeling.box_regression")
    anchor_generator = importlib.import_module("cvpods.modeling.anchor_generator")
    postprocessing = importlib.import_module("cvpods.modeling.postprocessing")

    # cvpods.configs (only the chain the playground config inherits)
    _package("cvpods.configs", root / "configs")
    importlib.import_module("cvpods.configs.fcos_config")

    # the playground: ``net.py`` does ``from fcos import FCOS``
    play = defcn / CONFIG_DIR
    fcos = _load_file("fcos", play / "fcos.py")
    net = _load_file("defcn_poto_3dmf_aux_net", play / "net.py")
    config = _load_file("defcn_poto_3dmf_aux_config", play / "config.py")

    ns = types.SimpleNamespace(
        config=config, net=net, fcos=fcos, comm=comm, events=events, structures=structures, boxes=boxes,
        box_regression=box_regression, anchor_generator=anchor_generator, postprocessing=postprocessing,
        fpn=fpn, resnet=resnet, defcn_repo=defcn, cvpods_repo=cvp, stubs=list(STUBS),
    )
    top.__defcn_stub__ = ns
    return ns


def official_cfg(official: types.SimpleNamespace, num_classes: int = 80):
    """The playground's own config object (``CustomFCOSConfig``), on CPU, no pretrained download."""
    cfg = official.config.config
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.FCOS.NUM_CLASSES == num_classes
    return cfg


def build_official(official: types.SimpleNamespace, num_classes: int = 80):
    """The official ``FCOS`` (POTO + 3DMF + Aux) of the playground's ``net.build_model(cfg)``, eval mode.

    Returns (model, cfg)."""
    cfg = official_cfg(official, num_classes)
    logging.getLogger(official.net.__name__).setLevel(logging.WARNING)  # build_model logs the whole model
    model = official.net.build_model(cfg)
    return model.eval(), cfg


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters (FrozenBN affine weights are buffers: not counted), trainable ones, and the state-dict size."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state = sum(v.numel() for k, v in model.state_dict().items())
    per_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    return {"params": params, "trainable": trainable, "state_dict_numel": state,
            **{f"params.{k}": v for k, v in per_module.items()}}


def main() -> int:
    official = import_official()
    model, _ = build_official(official)
    counts = param_counts(model)
    for k, v in counts.items():
        print(f"{k:28s} {v:>12,d}")
    ok = counts["params"] == EXPECTED_PARAMS and counts["trainable"] == EXPECTED_TRAINABLE
    print(f"expected params {EXPECTED_PARAMS:,d}, trainable {EXPECTED_TRAINABLE:,d}: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
