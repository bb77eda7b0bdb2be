"""MMDetection 3.x imported from an unpacked source tree (``MMDET_SRC``), its compiled mmcv ops replaced
by torchvision's NMS (what the parity scripts need) or by a clear error."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import torch


class _MissingOp:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: compiled mmcv op not available in this parity run")


def _ops_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (_MissingOp,), {})


def _batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
    from torchvision.ops import batched_nms

    keep = batched_nms(boxes, scores, idxs * (0 if class_agnostic else 1), float(nms_cfg["iou_threshold"]))
    return torch.cat([boxes[keep], scores[keep, None]], dim=1), keep


def _nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
    from torchvision.ops import nms

    keep = nms(boxes, scores, float(iou_threshold))
    return torch.cat([boxes[keep], scores[keep, None]], dim=1), keep


class _OpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "mmcv.ops" or fullname.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = types.ModuleType(spec.name)
        mod.__path__ = []
        mod.__getattr__ = _ops_getattr
        mod.batched_nms = _batched_nms
        mod.nms = _nms
        return mod

    def exec_module(self, module):
        pass


def import_mmdet(src: str):
    sys.path.insert(0, src)
    sys.meta_path.insert(0, _OpsFinder())
    import mmdet  # noqa: F401
    from mmdet.utils import register_all_modules

    register_all_modules()
    return mmdet
