"""Numerical parity of detcli's NanoDet-Plus with the official implementation (RangiLyu/nanodet).

For each width (1.0x, 1.5x) and input size (320, 416): build the official model from the checkout's own
config, give it random non-trivial weights, load its state dict into detcli through
``NanoDetPlus.load_official_state_dict`` (as a Lightning-style checkpoint whose ``avg_model.`` entries hold
the weights and whose ``model.`` entries are zeros, so the EMA preference is exercised), then compare in
eval mode:

- the raw inference output (B, N, 112), must be ≤ 1e-4 max abs diff;
- the AGM (aux head) output;
- the training losses and the backbone gradient at epoch 0 and at epoch ≥ detach_epoch (informational:
  they also depend on the assigner and loss code).

Usage: ``python -m benchmarks.parity.nanodet_parity --repo /path/to/nanodet`` (default: $NANODET_REPO).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


from benchmarks.common.official_nanodet import build_official, calibrate_bn_, import_official, randomize_

from detcli.config.schema import NanoDetPlusConfig
from detcli.models.detectors.nanodet_plus import NanoDetPlus
from detcli.structures import Target

NECK_CHANNELS = {"1.0x": 96, "1.5x": 128}
OUTPUT_TOL = 1e-4


def build_pair(official, width: str, imgsz: int, seed: int = 0):
    """(official model, detcli model) with identical random weights, both in eval mode."""
    ref, cfg = build_official(official, width, imgsz)
    randomize_(ref, seed)
    calibrate_bn_(ref, imgsz, seed)
    ref.eval()
    nc = NECK_CHANNELS[width]
    ours = NanoDetPlus.from_config(NanoDetPlusConfig(type="nanodet_plus", width=width, neck_channels=nc,
                                                     aux_channels=2 * nc, detach_epoch=int(cfg.model.arch.detach_epoch)), 80)
    state = ref.state_dict()
    checkpoint = {"state_dict": {**{f"model.{k}": torch.zeros_like(v) for k, v in state.items()},
                                 **{f"avg_model.{k}": v for k, v in state.items()}}}
    if not ours.load_official_state_dict(checkpoint):
        raise AssertionError("AGM weights were not loaded")
    ours.eval()
    return ref, ours


def random_targets(batch: int, imgsz: int, seed: int) -> list[Target]:
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        n = 6
        xy = torch.rand(n, 2, generator=g) * imgsz * 0.7
        wh = torch.rand(n, 2, generator=g) * imgsz * 0.4 + 8
        boxes = torch.cat([xy, (xy + wh).clamp(max=imgsz)], dim=1)
        targets.append(Target(boxes, torch.randint(0, 80, (n,), generator=g)))
    return targets


def backbone_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None])


def compare_losses(ref, ours, images: torch.Tensor, targets: list[Target], epoch: int) -> tuple[float, ...]:
    """(max abs diff over the loss terms, max abs diff of the backbone gradient, official total loss,
    max abs official backbone gradient) at ``epoch``."""
    meta = {
        "img": images,
        "gt_bboxes": [t.boxes.numpy().astype(np.float32) for t in targets],
        "gt_labels": [t.labels.numpy().astype(np.int64) for t in targets],
        "gt_bboxes_ignore": None,
    }
    ref.zero_grad()
    ours.zero_grad()
    ref.set_epoch(epoch)
    _, ref_loss, ref_states = ref.forward_train(meta)
    ref_loss.backward()
    losses = ours.loss(images, targets, [], epoch)
    sum(losses.values()).backward()
    loss_diff = max(abs(float(ref_states[k].detach()) - float(v.detach())) for k, v in losses.items())
    grad_ref = backbone_grad(ref)
    grad_diff = float((grad_ref - backbone_grad(ours)).abs().max())
    return loss_diff, grad_diff, float(ref_loss.detach()), float(grad_ref.abs().max())


def run(repo: str | None, batch: int = 2, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    official = import_official(repo)
    rows = []
    for width in ("1.0x", "1.5x"):
        for imgsz in (320, 416):
            ref, ours = build_pair(official, width, imgsz, seed)
            images = torch.randn(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                out_ref, out_ours = ref(images), torch.cat(ours(images)[:2], dim=-1)  # (B, N, C + 4(R+1))
                feats = ref.backbone(images)
                fpn_feats = ref.fpn(feats)
                aux_ref = ref.aux_head([torch.cat([f, a], 1) for f, a in zip(fpn_feats, ref.aux_fpn(feats))])
                feats = ours.backbone(images)
                aux_ours = ours.agm_forward(feats, ours.fpn(feats), detach=False)
            targets = random_targets(batch, imgsz, seed)
            loss0 = compare_losses(ref, ours, images, targets, epoch=0)
            loss_detached = compare_losses(ref, ours, images, targets, epoch=ours.detach_epoch)
            rows.append({
                "width": width, "imgsz": imgsz, "shape": tuple(out_ours.shape),
                "out_diff": float((out_ref - out_ours).abs().max()), "out_scale": float(out_ref.abs().max()),
                "aux_diff": float((aux_ref - aux_ours).abs().max()),
                "loss_diff_e0": loss0[0], "grad_diff_e0": loss0[1],
                "loss_diff_detached": loss_detached[0], "grad_diff_detached": loss_detached[1],
                "loss": loss0[2], "grad_scale_e0": loss0[3], "grad_scale_detached": loss_detached[3],
            })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=None, help="RangiLyu/nanodet checkout (default: $NANODET_REPO)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.repo)
    print("Δ = max abs difference official vs detcli; e0 = epoch 0, det = epoch >= detach_epoch;")
    print("loss / max|grad| = official total loss and largest backbone gradient (scale of what is compared)")
    print(f"{'model':<11}{'output':>16}{'max|out|':>10}{'Δout':>10}{'Δaux':>10}{'loss':>10}{'Δloss e0':>10}"
          f"{'max|grad| e0':>13}{'Δgrad e0':>10}{'Δloss det':>10}{'max|grad| det':>14}{'Δgrad det':>10}")
    for r in rows:
        print(f"{r['width'] + ' @' + str(r['imgsz']):<11}{str(r['shape']):>16}{r['out_scale']:>10.2f}"
              f"{r['out_diff']:>10.1e}{r['aux_diff']:>10.1e}{r['loss']:>10.2f}{r['loss_diff_e0']:>10.1e}"
              f"{r['grad_scale_e0']:>13.2e}{r['grad_diff_e0']:>10.1e}{r['loss_diff_detached']:>10.1e}"
              f"{r['grad_scale_detached']:>14.2e}{r['grad_diff_detached']:>10.1e}")
    worst = max(r["out_diff"] for r in rows)
    print(f"worst inference-output max abs diff: {worst:.3e} (tolerance {OUTPUT_TOL:g}) -> "
          f"{'PASS' if worst <= OUTPUT_TOL else 'FAIL'}")
    return 0 if worst <= OUTPUT_TOL else 1


if __name__ == "__main__":
    raise SystemExit(main())
