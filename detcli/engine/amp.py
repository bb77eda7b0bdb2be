"""Mixed precision: which dtype per device, whether ``train.amp`` turns it on here, and what the run says why.

float16 with loss scaling on CUDA; bfloat16 (float32's exponent range, no scaling) on CPU. ``train.amp: auto``
turns bfloat16 on for a CPU only where it was measured to pay: with AMX, the NanoDet-Plus-m training step ran
1.63× faster than fp32 (an Intel Xeon, benchmarks/speed/cpu_amp_step.py); with AVX512-BF16 but no AMX it ran only
1.08× faster (an AMD EPYC), not worth bfloat16's lost precision; without either, oneDNN emulates bfloat16 and
it is slower than fp32.
"""
from __future__ import annotations

from typing import Literal

import torch

AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}

CpuBfloat16 = Literal["amx", "native", "none"]


def cpu_bfloat16() -> CpuBfloat16:
    """How this CPU runs bfloat16 matrix products: on AMX tiles (``amx``), with other native bfloat16
    instructions (``native``: AVX512-BF16, Arm BF16), or emulated (``none``)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.8; older: the private checks
    if capabilities is not None:
        caps = capabilities()
        amx, avx512 = bool(caps.get("amx_bf16")), bool(caps.get("avx512_bf16"))
    else:
        amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        avx512 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    if amx:
        return "amx"
    if avx512 or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "native"
    return "none"


def amp_decision(amp: bool | str, device: torch.device) -> tuple[bool, str | None]:
    """(whether a run autocasts, why, for ``auto``): ``train.amp`` true on CUDA or CPU, false off; ``"auto"`` on
    CUDA, and on a CPU only with AMX. Other devices never autocast."""
    if device.type not in AMP_DTYPES:
        return False, None
    if amp != "auto":
        return bool(amp), None
    if device.type == "cuda":
        return True, "CUDA"
    kind = cpu_bfloat16()
    if kind == "amx":
        return True, "this CPU has AMX, where bfloat16 trains about 1.6× faster than fp32"
    if kind == "native":
        return False, ("this CPU has native bfloat16 but no AMX, where bfloat16 trained only about 1.1× faster "
                       "(AVX512-BF16); --amp turns it on")
    return False, "no native bfloat16 on this CPU"


def amp_enabled(amp: bool | str, device: torch.device) -> bool:
    """Whether a run with ``train.amp`` = ``amp`` autocasts on ``device`` (:func:`amp_decision`)."""
    return amp_decision(amp, device)[0]


def amp_warning(amp: bool | str, enabled: bool, device: torch.device) -> str | None:
    """The warning for an explicit ``--amp`` that cannot be, or will likely be slow; None for ``auto``."""
    if amp is True and not enabled:
        return f"AMP runs on CUDA (float16) and CPU (bfloat16); training in fp32 on {device.type}"
    if amp is True and device.type == "cpu" and cpu_bfloat16() == "none":
        return ("AMP on this CPU: it has no native bfloat16 (AVX512-BF16 / AMX), so bfloat16 is emulated and "
                "likely slower than fp32; --no-amp turns it off")
    return None


def amp_note(amp: bool | str, enabled: bool, device: torch.device) -> str:
    """The schedule line's AMP part: ``on (bfloat16)``, ``off``, with the reason when ``amp`` is ``auto``."""
    note = f"on ({str(AMP_DTYPES[device.type]).removeprefix('torch.')})" if enabled else "off"
    reason = amp_decision(amp, device)[1] if amp == "auto" else None
    return f"{note} (auto: {reason})" if reason else note


__all__ = ["AMP_DTYPES", "amp_decision", "amp_enabled", "amp_note", "amp_warning", "cpu_bfloat16"]
