"""detcli's ``MaxIoUAssigner`` against MMDetection 3.x's on every combination of its options, run side by side.

Options crossed: ``neg_iou_thr`` (a number and three (lo, hi) ranges), ``match_low_quality``, ``gt_max_assign_all``,
``ignore_iof_thr`` (off, 0.3, 0.7) with random ignore boxes, ``ignore_wrt_candidates`` and ``min_pos_iou``;
random anchors with exact duplicates (ties), random GTs. Compared: ``gt_inds`` and ``labels`` (``quality`` differs
on purpose for anchors ignored through an ignore box: detcli keeps their IoU, MMDetection writes −1). The random
GTs always overlap some anchor, so detcli's one deliberate difference (open-mmlab/mmdetection#8289, a GT with best
IoU 0) does not arise here; ``retinanet_parity.py`` checks it separately.

MMDetection is imported as in ``benchmarks/parity/retinanet_parity.py`` (an unpacked wheel, ``MMDET_SRC``):

    MMDET_SRC=/tmp/mmsrc python -m benchmarks.parity.max_iou_options_parity [--trials 6] [--seed 0]

Prints the number of identical cases and ``PARITY OK`` when all agree; exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

from benchmarks.common.official_mmdet import import_mmdet
from benchmarks.parity.retinanet_parity import random_gts


NEG_IOU_THRS = (0.4, (0.0, 0.4), (0.1, 0.4), (0.3, 0.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="random images per option combination")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    src = os.environ.get("MMDET_SRC")
    if not src:
        print("set MMDET_SRC to the folder holding mmdet/, mmengine/ and mmcv/")
        return 2
    import_mmdet(src)
    from mmengine.structures import InstanceData
    from mmdet.models.task_modules import MaxIoUAssigner as OfficialMaxIoU

    from detcli.assigners.max_iou import MaxIoUAssigner

    gen = torch.Generator().manual_seed(args.seed)
    total = same = 0
    for neg, low_quality, assign_all, iof_thr, wrt, min_pos in itertools.product(
            NEG_IOU_THRS, (True, False), (True, False), (-1.0, 0.3, 0.7), (True, False), (0.0, 0.1)):
        options = dict(pos_iou_thr=0.5, neg_iou_thr=neg, min_pos_iou=min_pos, match_low_quality=low_quality,
                       gt_max_assign_all=assign_all, ignore_iof_thr=iof_thr, ignore_wrt_candidates=wrt)
        ours, official = MaxIoUAssigner(**options), OfficialMaxIoU(**options)
        for _ in range(args.trials):
            anchors, _ = random_gts(gen, 200, 200, 300, 3)
            anchors = torch.cat([anchors, anchors[:20]])  # exact duplicates create ties
            gts, labels = random_gts(gen, 200, 200, int(torch.randint(1, 12, (1,), generator=gen)), 3)
            ignore, _ = random_gts(gen, 200, 200, int(torch.randint(0, 4, (1,), generator=gen)), 3)
            got = ours.assign(anchors, gts, labels, ignore)
            want = official.assign(InstanceData(priors=anchors), InstanceData(bboxes=gts, labels=labels),
                                   InstanceData(bboxes=ignore))
            total += 1
            if torch.equal(got.gt_inds, want.gt_inds) and torch.equal(got.labels, want.labels):
                same += 1
            else:
                print(f"[FAIL] {options}: {int((got.gt_inds != want.gt_inds).sum())} anchors differ")
    print(f"MaxIoUAssigner options: {same}/{total} cases identical (gt_inds and labels)")
    if same == total:
        print("PARITY OK")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
