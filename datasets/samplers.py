"""Which indices each rank reads: shuffled training shards that also set the dataset's epoch, and evaluation shards
that cover every index exactly once over the ranks (no padding duplicates, so metrics are exact).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


class TrainSampler(DistributedSampler):
    """`DistributedSampler(shuffle=True, drop_last=False)` whose `set_epoch` also tells the dataset,
    so the frame offsets and augmentations of epoch e are a function of (seed, e, index) only."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int, seed: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ...: each index on exactly one rank, none repeated."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))

    def set_epoch(self, epoch: int) -> None:  # same order every epoch
        pass
