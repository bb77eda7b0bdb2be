"""Reading checkpoints written by the official implementations (and checking any state dict read from a file)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from detcli.errors import DetcliError


def tensor_state_dict(obj: Any, what: str) -> dict[str, Tensor]:
    """``obj`` as a ``{name: tensor}`` state dict; non-tensor entries (an ``epoch`` beside the weights) are dropped.

    Raises:
        DetcliError: ``obj`` is not a mapping, has a key that is not a string, or holds no tensor.
    """
    if not isinstance(obj, Mapping):
        raise DetcliError(f"{what}: expected a state dict (tensor names → tensors), found {type(obj).__name__}")
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise DetcliError(
            f"{what}: {len(bad)} key(s) are not tensor names (e.g. {bad[0]!r}, a {type(bad[0]).__name__}); "
            "not a state dict"
        )
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise DetcliError(f"{what}: holds no tensors")
    return state


def official_nanodet_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """Plain ``{key: tensor}`` state dict of a NanoDet(-Plus) model from an official checkpoint.

    Accepts a Lightning checkpoint (``{"state_dict": {"model.…", "avg_model.…"}}``), the
    ``nanodet_model_best.pth`` form (``{"state_dict": {"backbone.…", …}}``), or a bare state dict.
    The EMA weights (``avg_model.``) are preferred over the raw ones (``model.``), as the official
    ``load_model_weight`` does; ``module.`` prefixes (DataParallel) are stripped.
    """
    if not isinstance(checkpoint, Mapping):
        raise DetcliError(f"not a NanoDet checkpoint: expected a dict, found {type(checkpoint).__name__}")
    state = tensor_state_dict(checkpoint.get("state_dict", checkpoint), "NanoDet checkpoint 'state_dict'")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in ("avg_model.", "model."):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return state


def official_nanodet_class_names(checkpoint: Any) -> list[str] | None:
    """``class_names`` of the NanoDet config stored in a checkpoint: Lightning ``hyper_parameters`` (its
    ``cfg`` or the dict itself) or a ``cfg`` entry beside the weights. None when none is stored."""
    if not isinstance(checkpoint, Mapping):
        return None
    hparams = checkpoint.get("hyper_parameters")
    for cfg in (_get(hparams, "cfg"), hparams, checkpoint.get("cfg")):
        names = _names(_get(cfg, "class_names"))
        if names:
            return names
    return None


def mmdet_class_names(checkpoint: Any) -> list[str] | None:
    """Class names of an MMDetection checkpoint: ``meta.dataset_meta.classes`` (3.x) or ``meta.CLASSES`` (2.x)."""
    meta = _get(checkpoint, "meta")
    return _names(_get(_get(meta, "dataset_meta"), "classes")) or _names(_get(meta, "CLASSES"))


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, Mapping) else None


def _names(value: Any) -> list[str] | None:
    """A non-empty list/tuple of strings as a list, else None."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(n, str) for n in value):
        return list(value)
    return None


def official_mmdet_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """Plain ``{key: tensor}`` state dict of an MMDetection model from its checkpoint: ``{"state_dict": …,
    "meta": …}`` (MMEngine, also published files) or a bare state dict; ``module.`` prefixes are stripped.

    EMA weights: MMEngine's ``EMAHook`` swaps the averaged weights into ``state_dict`` before every save and keeps
    the raw training weights in ``ema_state_dict`` (``module.<key>`` entries and ``steps``), so ``state_dict``
    already *is* the EMA model and ``ema_state_dict`` is never read (``publish_model.py`` drops it). ``ema_*``
    keys inside the state dict are mmcv 1.x ``EMAHook`` buffers (``ema_`` + the key with dots as underscores);
    that hook too swaps the EMA weights into the model keys at the epoch end before the checkpoint is written,
    so they are dropped as well.
    """
    if not isinstance(checkpoint, Mapping):
        raise DetcliError(f"not an MMDetection checkpoint: expected a dict, found {type(checkpoint).__name__}")
    state = tensor_state_dict(checkpoint.get("state_dict", checkpoint), "MMDetection checkpoint 'state_dict'")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("ema_")}
