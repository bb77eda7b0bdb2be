"""Reading checkpoints written by the official implementations."""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from detcli.errors import DetcliError


def official_nanodet_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """Plain ``{key: tensor}`` state dict of a NanoDet(-Plus) model from an official checkpoint.

    Accepts a Lightning checkpoint (``{"state_dict": {"model.…", "avg_model.…"}}``), the
    ``nanodet_model_best.pth`` form (``{"state_dict": {"backbone.…", …}}``), or a bare state dict.
    The EMA weights (``avg_model.``) are preferred over the raw ones (``model.``), as the official
    ``load_model_weight`` does; ``module.`` prefixes (DataParallel) are stripped.
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise DetcliError("not a NanoDet checkpoint: expected a dict with a non-empty 'state_dict'")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for prefix in ("avg_model.", "model."):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)
