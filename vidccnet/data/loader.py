"""DataLoader construction with reproducible, resumable sample order and augmentation.

`EpochSampler` yields `(index, seed)` pairs: the order is a function of (seed, epoch) only and
the per-sample augmentation seed a function of (seed, epoch, index), so batches do not depend on
the number of workers and a run resumed at (epoch, position) sees exactly the same data:

    loader = build_loader(ds, batch_size=8, shuffle=True, num_workers=2, seed=0)
    loader.sampler.set_epoch(epoch, start=batches_done * 8)   # before iterating the epoch

Datasets of this package accept such pairs in `__getitem__`. In distributed runs the sampler
splits each epoch's order between the ranks like `torch.utils.data.DistributedSampler`
(padding by wrapping around, or dropping the tail with `drop_last`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

_MASK63 = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Deterministic 63-bit augmentation seed of sample `index` in `epoch`."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) & _MASK63
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK63
    return x ^ (x >> 29)


def order_seed(seed: int, epoch: int) -> int:
    """Seed of the sample order of `epoch`: `seed` itself in epoch 0 (the order runs of earlier
    versions drew, documented results included), then a hash of (seed, epoch), so that no two
    runs share an epoch's order (`seed + epoch` gave seed 1's epoch 0 seed 0's epoch 1)."""
    return seed if epoch == 0 else sample_seed(seed, epoch, -1)  # -1: no sample's index


class EpochSampler(Sampler):
    """Sample order determined by (seed, epoch); yields `(index, augmentation_seed)`.

    Args:
        size: dataset length.
        shuffle: random permutation per epoch (else 0..size-1).
        seed: base seed.
        num_replicas, rank: distributed split (default: from torch.distributed if initialised,
            else 1 and 0).
        drop_last: drop the tail that does not split evenly between replicas (else pad).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None,
                 drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (
                dist.get_world_size() if on else 1)
            rank = rank if rank is not None else (dist.get_rank() if on else 0)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.size, self.shuffle, self.seed = int(size), shuffle, int(seed)
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch, self.start = 0, 0
        if drop_last:
            self.num_samples = self.size // num_replicas
        else:
            self.num_samples = math.ceil(self.size / num_replicas)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; `start` skips that many of this rank's samples (resume mid-epoch).
        The skip applies to the next iteration only."""
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        """This rank's dataset indices for the current epoch, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(order_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.num_samples * self.num_replicas
        if total > len(order):
            order += (order * math.ceil(total / max(len(order), 1)))[: total - len(order)]
        order = order[:total]
        return order[self.rank:total:self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0
        for i in self.indices()[start:]:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seed numpy and `random` from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def collate_clips(samples: list[dict]) -> dict:
    """``default_collate`` for clip samples, with a clear error when the clips of a batch differ
    in size (no ``data.crop_size`` with a random rescale, or frames of different sizes)."""
    sizes = sorted({tuple(s["clip"].shape[-2:]) for s in samples if "clip" in s})
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
        raise ValueError(
            f"the clips of one batch have different sizes ({shown}) and cannot be stacked; set "
            "data.crop_size [H, W] (at most the frames' size; it applies with data.augment: "
            "true) or data.batch_size=1"
        )
    return default_collate(samples)


def build_loader(
    dataset: Dataset, batch_size: int, shuffle: bool = True, num_workers: int = 0,
    distributed: bool = False, seed: int = 0, drop_last: bool = True,
    pin_memory: bool | None = None, persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A DataLoader over a dataset of this package with an `EpochSampler` (`loader.sampler`).

    Call `loader.sampler.set_epoch(epoch)` before each epoch. `distributed=True` splits the
    samples between the ranks of the initialised process group. Batches are dicts
    `{"clip": (B, 3, T, H, W), "labels": (B, T, H, W)}`. `pin_memory` defaults to CUDA being
    available, `persistent_workers` to `num_workers > 0`.
    """
    if distributed:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("build_loader(distributed=True) needs an initialised process "
                               "group (torch.distributed.init_process_group)")
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed,
                               drop_last=drop_last)
    else:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, num_replicas=1, rank=0)
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if num_workers > 0 and prefetch_factor is not None:
        kw["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=(num_workers > 0) if persistent_workers is None else (
            persistent_workers and num_workers > 0),
        drop_last=drop_last, worker_init_fn=seed_worker, generator=g, collate_fn=collate_clips,
        **kw)
