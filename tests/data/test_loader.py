"""Loader: order and augmentation depend only on (seed, epoch); resume; distributed split."""

from __future__ import annotations

import torch

from vidccnet.data import build_dataset, build_loader
from vidccnet.data.loader import EpochSampler, sample_seed


def _ds():
    return build_dataset("synthetic", "train", clip_len=2, num_videos=2, num_frames=6,
                         height=24, width=32, augment=True, crop_size=(16, 16))


def _sums(loader):
    return [round(b["clip"].double().sum().item(), 4) for b in loader]


def test_order_is_a_function_of_seed_and_epoch():
    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(1)
    assert list(s) == a
    s.set_epoch(2)
    assert [i for i, _ in s] != [i for i, _ in a]
    assert sorted(i for i, _ in a) == list(range(10))
    assert a[0][1] == sample_seed(3, 1, a[0][0])
    assert EpochSampler(10, shuffle=False).indices() == list(range(10))


def test_resume_mid_epoch_and_workers_do_not_change_batches():
    ds = _ds()
    loader = build_loader(ds, batch_size=3, shuffle=True, num_workers=0, seed=5)
    assert len(loader) == 4
    loader.sampler.set_epoch(2)
    full = _sums(loader)
    loader.sampler.set_epoch(2, start=6)  # resume after two batches
    assert _sums(loader) == full[2:]
    loader.sampler.set_epoch(2)
    assert _sums(loader) == full  # the skip applied once
    w = build_loader(ds, batch_size=3, shuffle=True, num_workers=2, seed=5)
    assert w.persistent_workers
    w.sampler.set_epoch(2)
    assert _sums(w) == full
    batch = next(iter(w))
    assert batch["clip"].shape == (3, 3, 2, 16, 16) and batch["labels"].shape == (3, 2, 16, 16)


def test_distributed_split_covers_the_dataset_once():
    parts = [EpochSampler(11, shuffle=True, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for p in parts:
        p.set_epoch(4)
    idx = [i for p in parts for i, _ in p]
    assert len(idx) == 12 and set(idx) == set(range(11))  # padded by wrapping, like DDP
    drop = [EpochSampler(11, shuffle=True, seed=1, num_replicas=3, rank=r, drop_last=True)
            for r in range(3)]
    assert sum(len(list(p)) for p in drop) == 9
    # every rank's seeds depend on the sample, not on the rank
    seeds = {i: s for p in parts for i, s in p}
    assert all(seeds[i] == sample_seed(1, 4, i) for i in seeds)
    assert torch.distributed.is_available()


def test_distributed_split_is_torchs():
    """Epoch 0 (whose order seed is the seed itself, as DistributedSampler's): each rank gets
    exactly DistributedSampler's indices: the same permutation, padded by wrapping, then dealt
    out in turn (rank::replicas), not in contiguous blocks."""
    from torch.utils.data import DistributedSampler

    for n, drop_last in ((11, False), (11, True), (4, False)):
        for r in range(3):
            ours = EpochSampler(n, shuffle=True, seed=7, num_replicas=3, rank=r,
                                drop_last=drop_last)
            theirs = DistributedSampler(range(n), num_replicas=3, rank=r, shuffle=True, seed=7,
                                        drop_last=drop_last)
            assert ours.indices() == list(theirs), (n, drop_last, r)


def test_clips_of_different_sizes_in_one_batch_are_a_clear_error():
    """Without data.crop_size the random rescale gives each clip its own size: a batch of them
    cannot be stacked, and the error says which setting fixes it (torch's own stack error
    named none)."""
    import pytest

    class Sizes(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, item):
            i = item[0]
            return {"clip": torch.zeros(3, 2, 8 + i, 8), "labels": torch.zeros(2, 8 + i, 8)}

    loader = build_loader(Sizes(), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match=r"sizes .*9x8.*data.crop_size"):
        next(iter(loader))
    same = build_loader(Sizes(), batch_size=1, shuffle=False)
    assert next(iter(same))["clip"].shape == (1, 3, 2, 8, 8)


def test_seeds_do_not_share_their_epoch_orders():
    """Seed 1's first epoch is not seed 0's second (seed + epoch would make them equal): runs
    with different seeds draw independent orders."""
    def order(seed: int, epoch: int) -> list[int]:
        s = EpochSampler(50, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        return s.indices()

    assert order(1, 0) != order(0, 1)
    assert order(2, 0) != order(1, 1) != order(0, 2)
    # epoch 0 keeps the order of earlier versions (the documented runs stay in epoch 0)
    assert order(3, 0) == torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
