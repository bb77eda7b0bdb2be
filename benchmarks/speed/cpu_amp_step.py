"""The training step on CPU in float32, in bfloat16 autocast as detcli runs it, and in bfloat16 autocast with
the depthwise convs in bfloat16 too (what plain ``nn.Conv2d`` does under autocast: the reference).

detcli's :class:`~detcli.models.layers.DepthwiseConv2d` keeps depthwise convs in float32 under CPU autocast,
because oneDNN's bfloat16 depthwise kernels (the weight gradient above all) are slower than its float32 ones.
This prints, for each preset, the median step (forward + losses + backward; batch ``--batch`` of demo images
at the preset's input size, channels_last, ``--threads`` threads) of the three settings, measured
interleaved in this one run, and the ratios to float32. It also times one depthwise conv's forward, input
gradient and weight gradient in both dtypes, the kernels the difference comes from.

Meaningful only on a CPU with native bfloat16 (AVX512-BF16 or AMX; ``lscpu`` flags ``avx512_bf16`` /
``amx_bf16``); elsewhere bfloat16 is emulated and slower than float32 whatever the policy.

    python -m benchmarks.speed.cpu_amp_step [--presets nanodet-plus-m,rtmdet-tiny] [--iters 5] [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn


from detcli.config.loader import load_preset
from detcli.data.build import build_dataset
from detcli.data.collate import collate
from detcli.data.dataset_config import resolve_dataset
from detcli.models import build_model
from detcli.models.layers import DepthwiseConv2d

SETTINGS = ("fp32", "bf16 (detcli: depthwise in fp32)", "bf16 (depthwise in bf16 too)")


@contextmanager
def depthwise_in_bf16():
    """DepthwiseConv2d behaves as a plain nn.Conv2d under autocast while inside."""
    kept = DepthwiseConv2d._conv_forward
    DepthwiseConv2d._conv_forward = nn.Conv2d._conv_forward
    try:
        yield
    finally:
        DepthwiseConv2d._conv_forward = kept


def step_seconds(model, images, batch, setting: str, iters: int) -> float:
    times = []
    for i in range(iters + 1):  # the first is a warm-up (oneDNN primitive creation)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting != SETTINGS[0]):
            losses = model.loss(images, batch.targets, batch.metas, 0)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_ms(shape: tuple[int, int, int, int], k: int, stride: int, dtype: torch.dtype) -> tuple[float, ...]:
    """(forward, input gradient, weight gradient) ms of one depthwise k×k conv, channels_last, best of 5."""
    b, c, h, w = shape
    x = torch.randn(b, c, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, dtype=dtype).contiguous(memory_format=torch.channels_last)
    pad = k // 2
    out = F.conv2d(x, weight, None, stride, pad, 1, c)
    grad = torch.randn_like(out)
    results = []
    for mask in (None, (True, False, False), (False, True, False)):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            if mask is None:
                F.conv2d(x, weight, None, stride, pad, 1, c)
            else:
                torch.ops.aten.convolution_backward(grad, x, weight, [0], [stride] * 2, [pad] * 2, [1, 1], False,
                                                    [0, 0], c, list(mask))
            best = min(best, time.perf_counter() - start)
        results.append(best * 1000)
    return tuple(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="nanodet-plus-m,rtmdet-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"torch {torch.__version__}, {args.threads} threads, native bfloat16: {native}")

    print("\none depthwise conv, channels_last, ms (forward / input grad / weight grad):")
    for shape, k, stride in (((8, 192, 40, 40), 5, 1), ((8, 96, 40, 40), 5, 2), ((8, 116, 40, 40), 3, 2)):
        fp32 = kernel_ms(shape, k, stride, torch.float32)
        bf16 = kernel_ms(shape, k, stride, torch.bfloat16)
        print(f"  {k}×{k} s{stride} on {tuple(shape)}: fp32 " + " / ".join(f"{t:.1f}" for t in fp32)
              + "   bf16 " + " / ".join(f"{t:.1f}" for t in bf16))

    data = resolve_dataset("demo")
    for name in args.presets.split(","):
        preset = load_preset(name)[0]
        dataset = build_dataset(preset, data.train, train=True, epochs=1)
        batch = collate([dataset[i] for i in range(args.batch)], size_divisor=32)
        images = batch.images.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(0)
        model = build_model(preset, dataset.num_classes, pretrained=False).to(memory_format=torch.channels_last)
        model.train()
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):  # interleaved, so a change of the machine's load hits all alike
            for setting in SETTINGS:
                with depthwise_in_bf16() if setting == SETTINGS[2] else nullcontext():
                    times[setting].append(step_seconds(model, images, batch, setting, args.iters))
        base = statistics.median(times[SETTINGS[0]])
        print(f"\n{name}: training step, batch {args.batch} at {tuple(images.shape[-2:])}, "
              f"median over {args.rounds} rounds × {args.iters} iterations")
        for setting in SETTINGS:
            t = statistics.median(times[setting])
            print(f"  {setting:34s} {t * 1000:7.0f} ms   {base / t:4.2f}× fp32's speed")


if __name__ == "__main__":
    main()
