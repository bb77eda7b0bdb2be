"""Training batches of one orientation (``data.aspect_ratio_grouping``), as MMDetection's RetinaNet and cvpods'
DeFCN recipes batch: :class:`detcli.data.samplers.GroupedBatchSampler` and its place in the loader."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from detcli.config.loader import load_preset
from detcli.data.samplers import GroupedBatchSampler, orientation_groups
from detcli.errors import PresetError

# --------------------------------------------------------------------------- the two rules

def test_rules_differ_only_on_square_images():
    sizes = [(640, 480), (480, 640), (500, 500), (501, 500), (500, 501)]  # (w, h)
    assert orientation_groups(sizes, "w>=h").tolist() == [1, 0, 1, 1, 0]  # MMDetection: w < h is portrait
    assert orientation_groups(sizes, "w>h").tolist() == [1, 0, 0, 1, 0]  # cvpods: w / h > 1 is landscape


# --------------------------------------------------------------------------- the sampler

GROUPS = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1])  # 4 portrait, 9 landscape


def _epoch(sampler: GroupedBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_batch_is_one_orientation_and_every_image_comes_once():
    sampler = GroupedBatchSampler(GROUPS, batch_size=3, seed=7)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler) == 2 + 3  # portrait 3 + 1, landscape 3 + 3 + 3
        assert all(len({int(GROUPS[i]) for i in b}) == 1 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(GROUPS)))
        assert sorted(len(b) for b in batches) == [1, 3, 3, 3, 3]


def test_order_is_fixed_by_seed_and_epoch():
    """A resumed run (a fresh sampler, set to the epoch it resumes at) repeats the batches."""
    a = _epoch(GroupedBatchSampler(GROUPS, batch_size=3, seed=7), 2)
    assert a == _epoch(GroupedBatchSampler(GROUPS, batch_size=3, seed=7), 2)
    assert a != _epoch(GroupedBatchSampler(GROUPS, batch_size=3, seed=7), 3)
    assert a != _epoch(GroupedBatchSampler(GROUPS, batch_size=3, seed=8), 2)


def test_drop_last_drops_remainders_but_never_a_whole_group():
    groups = np.array([0] * 7 + [1] * 2)  # 7 portrait (2 batches of 3 + 1), 2 landscape (less than a batch)
    batches = _epoch(GroupedBatchSampler(groups, batch_size=3, drop_last=True), 0)
    assert len(batches) == 3 and sorted(len(b) for b in batches) == [2, 3, 3]
    assert {7, 8} in [set(b) for b in batches]


@pytest.mark.parametrize("drop_last", [False, True])
def test_processes_share_the_batches_and_run_the_same_number_of_steps(drop_last):
    per_rank = [_epoch(GroupedBatchSampler(GROUPS, 3, seed=1, drop_last=drop_last, num_replicas=3, rank=r), 4)
                for r in range(3)]
    single = _epoch(GroupedBatchSampler(GROUPS, 3, seed=1, drop_last=drop_last), 4)
    assert [len(b) for b in per_rank] == [len(GroupedBatchSampler(GROUPS, 3, num_replicas=3))] * 3 == [2, 2, 2]
    dealt = [per_rank[k % 3][k // 3] for k in range(6)]  # batch k went to rank k % 3
    assert dealt[:len(single)] == single and dealt[len(single):] == single[:6 - len(single)]  # filled up


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        GroupedBatchSampler(GROUPS, 0)
    with pytest.raises(ValueError, match="rank 2"):
        GroupedBatchSampler(GROUPS, 2, num_replicas=2, rank=2)


# --------------------------------------------------------------------------- presets and the loader

def test_presets_group_as_their_official_recipes():
    expected = {"retinanet-r50-fpn": "w>=h", "retinanet-r18-fpn": "w>=h", "defcn-r50-fpn": "w>h",
                "rtmdet-tiny": "none", "nanodet-plus-m": "none"}  # RTMDet, NanoDet-Plus: one fixed input size
    assert {name: load_preset(name)[0].data.aspect_ratio_grouping for name in expected} == expected


def test_a_bad_rule_names_the_field():
    with pytest.raises(PresetError, match="aspect_ratio_grouping"):
        load_preset("retinanet-r18-fpn", ["data.aspect_ratio_grouping=sideways"])


def test_the_training_loader_batches_by_orientation(tiny_data):
    """The demo's training split through ``build_dataloader`` as ``detcli train`` builds it: one orientation per
    batch, ``len(loader)`` the steps it runs, and the trainer's per-epoch hook reshuffles it."""
    from detcli.config.loader import load_preset as load
    from detcli.data.build import build_dataset
    from detcli.data.collate import collate
    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.loader import build_dataloader
    from detcli.engine.trainer import _set_epoch

    preset = load("retinanet-r18-fpn", ["input.size=[128,96]"])[0]
    ds = build_dataset(preset, resolve_dataset(str(tiny_data)).train, train=True)
    loader = build_dataloader(ds, batch_size=3, workers=0, shuffle=True, drop_last=False, seed=0, distributed=False,
                              collate_fn=functools.partial(collate, size_divisor=32),
                              aspect_ratio_grouping=preset.data.aspect_ratio_grouping)
    sizes = [(ds.image_info(i)["width"], ds.image_info(i)["height"]) for i in range(len(ds))]
    groups = orientation_groups(sizes, "w>=h")
    assert 0 < groups.sum() < len(ds)  # the demo has both orientations
    _set_epoch(loader, 1)
    first = list(loader.batch_sampler)
    assert loader.batch_sampler.epoch == 1 and len(loader) == len(first)
    assert all(len(set(groups[b].tolist())) == 1 for b in first)
    batches = list(loader)
    assert len(batches) == len(loader) and sum(len(b.metas) for b in batches) == len(ds)
    _set_epoch(loader, 2)
    assert list(loader.batch_sampler) != first
