"""Training and testing from tar shards (`data.format: shards`), read with the webdataset library.

`python -m datasets.shards` writes the shards and an index (`<name>.json`: every shard's URL, its
sample count and the list positions it holds, and the list's records). Knowing the counts, each
epoch is split exactly:

1. the shard order is a permutation drawn from (seed, epoch) for training, the written order for
   evaluation; concatenating the shards' samples in that order gives the epoch's sequence;
2. rank r takes a contiguous part of that sequence: for training ceil(N / world) positions, the
   last rank wrapping around to the start as DistributedSampler pads (every rank then runs the
   same number of steps); for evaluation N·r/world .. N·(r+1)/world, each video exactly once;
3. a rank's part is cut into batches and loader worker w reads a contiguous run of whole batches,
   so the DataLoader's batch count is exact and each worker opens only the shards it needs;
4. training shuffles inside each worker with a buffer of `data.shuffle_buffer` samples, seeded by
   (seed, epoch, rank, worker).

The epoch's order is therefore a function of (seed, epoch, world size, workers, batch size): an
epoch re-run after a resume is the same. Frame offsets and augmentation come from the same
`default_rng([seed, epoch, index, attempt])` as the file dataset, so a sample decodes to the same
clip from a shard as from its file. Items are `(uint8 clip, label, index)` as `VideoDataset`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlparse

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from datasets.clip_options import LoaderOptions
from datasets.decoding import BadSampleError
from datasets.lists import VideoRecord
from datasets.source_base import TarSampleReader
from datasets.video_dataset import VideoDataset
from utils.cli import PIPE_FLAG
from utils.config_schema import DataConfig
from utils.errors import UserError

log = logging.getLogger(__name__)

INDEX_KIND = "wids-shard-index-v1"  # webdataset's shard index layout, extended with a `text4vis` section
_META = re.compile(r"__[^/]*__($|/)")  # members webdataset's tar iterator skips (its `skip_meta`)


@dataclass
class ShardIndex:
    """What `python -m datasets.shards` wrote: shard URLs, the list positions each holds (in
    order), the list's records, and whether the samples are videos or frame sets."""

    url: str
    shards: list[str]
    keys: list[list[int]]
    records: list[VideoRecord]
    content: str  # "video" | "frames"
    cfr: bool  # written from a `datasets.preprocess` folder: constant frame rate

    @property
    def modality(self) -> str:
        return "video" if self.content == "video" else "RGB"


def runs_a_command(url: str) -> bool:
    """Whether webdataset would open `url` by running the command it holds (its `pipe:` opener,
    also after the user's GOPEN_REWRITE rules). Other schemes run fixed programs (curl, gsutil,
    ais) with the URL as one argument, no shell."""
    from webdataset.gopen import gopen_pipe, gopen_schemes, rewrite_url

    with contextlib.suppress(ValueError):  # webdataset's secure mode refuses to rewrite (and to open)
        url = rewrite_url(url)
    scheme = urlparse(url).scheme
    return scheme == "pipe" or gopen_schemes.get(scheme) is gopen_pipe


def allowed_pipes(args: Any) -> frozenset[str]:
    """The `pipe:` URLs the user's command line gives in --opts, when it passes --allow-pipe."""
    if not getattr(args, "allow_pipe", False):
        return frozenset()
    from utils.config import parse_opts

    return frozenset(v for _, v in parse_opts(getattr(args, "opts", [])) if isinstance(v, str) and runs_a_command(v))


def check_source(url: str, key: str, allowed: Collection[str] = ()) -> None:
    """Refuse a shard index URL that would run a command unless the command line gave it with
    --allow-pipe (`allowed`): a config file or a checkpoint is data and never starts a process."""
    if runs_a_command(url) and url not in allowed:
        raise UserError(
            f"{key} is {url!r}, which would run a shell command (webdataset's pipe: opener): a URL "
            f"from a config file or a checkpoint never starts a process; to run it, give it on the "
            f"command line (--opts {key}=...) together with {PIPE_FLAG}"
        )


def check_sources(data: DataConfig, where: str, allowed: Collection[str] = ()) -> None:
    """`check_source` of a config's shard indexes before anything is built, naming the config
    (`where`: the file, or the weights file whose stored config it is). Both keys are checked
    whatever `data.format` says: a config that names a command is refused even where it is unused."""
    for key in ("train_shards", "val_shards"):
        try:
            check_source(str(getattr(data, key) or ""), f"data.{key}", allowed)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None


def _resolve(base: str, url: str) -> str:
    if runs_a_command(url):
        raise UserError(
            f"{base}: shard URL {url!r} would run a shell command (webdataset's pipe: opener); a shard "
            f"index never starts a process ({PIPE_FLAG} covers only a URL given on the command line): "
            f"list the shards by path or http(s) URL"
        )
    if urlparse(url).scheme or url.startswith("/"):
        return url
    if runs_a_command(base):
        raise UserError(
            f"{base}: shard URL {url!r} is relative, but an index read through a pipe: command has no "
            f"folder to resolve it against: list the shards by absolute path or URL"
        )
    if urlparse(base).scheme and not base.startswith("file:"):
        return urljoin(base, url)
    from pathlib import Path

    return str(Path(base).resolve().parent / url)


def read_shard_index(url: str, key: str = "data.train_shards", allowed: Collection[str] = ()) -> ShardIndex:
    """Read an index (local path or any URL webdataset's `gopen` opens) and check it. A `pipe:` URL
    is opened only when it is one of `allowed` (given on the command line with --allow-pipe); the
    shard URLs in the index never may be."""
    if not url:
        raise UserError(f"{key} is not set (data.format is shards)")
    check_source(url, key, allowed)
    from webdataset.gopen import gopen

    try:
        with gopen(url, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"{key}: shard index not found: {url}") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{key}: cannot read the shard index {url}: {err}") from None
    ours = data.get("text4vis") if isinstance(data, dict) else None
    if not isinstance(ours, dict) or data.get("__kind__") != INDEX_KIND:
        raise UserError(f"{key}: {url} is not a shard index written by python -m datasets.shards")
    try:
        records = [
            VideoRecord(str(p), None if n is None else int(n), int(lab), int(line))
            for p, n, lab, line in ours["records"]
        ]
        shards = [_resolve(url, str(s["url"])) for s in data["shardlist"]]
        keys = [[int(k) for k in s["keys"]] for s in data["shardlist"]]
        counts = [int(s["nsamples"]) for s in data["shardlist"]]
        content = str(ours["content"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{key}: {url} is incomplete or damaged ({err!r})") from None
    if any(len(k) != c for k, c in zip(keys, counts, strict=True)) or content not in ("video", "frames"):
        raise UserError(f"{key}: {url} is inconsistent (sample counts or content)")
    return ShardIndex(url, shards, keys, records, content, bool(ours.get("cfr", False)))


def split_range(total: int, parts: int, part: int) -> tuple[int, int]:
    """[start, end) of `part` when `total` items are cut into `parts` contiguous runs (sizes differ by <= 1)."""
    return total * part // parts, total * (part + 1) // parts


class ShardDataset(IterableDataset):
    """Samples of the shards in `index`, decoded by `reader` and transformed by `samples` (a
    `VideoDataset` over the kept records: it holds the sampling, the transform, the RNG and the
    bad-sample policy).

    `keys[i]` is the index-list position of `samples.records[i]`; samples of other positions (the
    `min_frames` filter) are skipped. `configure` (done by `build_loader`) sets the rank, world
    size, batch size and train/eval split before iterating."""

    def __init__(
        self,
        index: ShardIndex,
        samples: VideoDataset,
        keys: list[int],
        *,
        reader: TarSampleReader,
        shuffle_buffer: int = 128,
    ):
        self.index = index
        self.samples = samples
        self.reader = reader
        self.records = samples.records
        self.position = {k: i for i, k in enumerate(keys)}
        self.shuffle_buffer = shuffle_buffer
        self.seed = samples.seed
        self.epoch = 0
        self.rank, self.world_size, self.batch_size, self.train = 0, 1, 1, samples.mode == "train"
        # positions (into self.records) of each shard, in the shard's order
        self.shard_positions = [[self.position[k] for k in ks if k in self.position] for ks in index.keys]

    # --------------------------------------------------------------------------- set-up
    def configure(self, *, rank: int, world_size: int, batch_size: int, train: bool) -> None:
        self.rank, self.world_size, self.batch_size, self.train = rank, world_size, max(1, batch_size), train

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.samples.set_epoch(epoch)

    def __len__(self) -> int:
        """Videos in the dataset (all ranks), as `VideoDataset`."""
        return len(self.records)

    @property
    def transform(self) -> Any:
        return self.samples.transform

    @property
    def defer_transform(self) -> bool:
        return self.samples.defer_transform

    @property
    def decode_device(self) -> str:
        return self.samples.decode_device

    # --------------------------------------------------------------------------- the epoch's plan
    def shard_order(self) -> list[int]:
        n = len(self.index.shards)
        if not self.train:
            return list(range(n))
        return [int(i) for i in np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 7]).permutation(n)]

    def rank_positions(self) -> range:
        """This rank's positions in the epoch's sequence (they may exceed N: wrap modulo N)."""
        total = len(self.records)
        if self.train:
            per = math.ceil(total / self.world_size)
            return range(self.rank * per, (self.rank + 1) * per)
        return range(*split_range(total, self.world_size, self.rank))

    def rank_length(self) -> int:
        return len(self.rank_positions())

    def worker_positions(self, worker: int, workers: int) -> range:
        """Whole batches of this rank's positions for one loader worker (contiguous)."""
        mine = self.rank_positions()
        batches = math.ceil(len(mine) / self.batch_size)
        b0, b1 = split_range(batches, max(1, workers), worker)
        return mine[b0 * self.batch_size : b1 * self.batch_size]

    def plan(self, positions: range) -> list[tuple[int, set[int]]]:
        """(shard, wanted record positions) to read, in order, for sequence positions `positions`."""
        order = self.shard_order()
        seq_shards: list[tuple[int, int]] = []  # (shard, count) along the epoch's sequence
        for s in order:
            seq_shards.append((s, len(self.shard_positions[s])))
        total = len(self.records)
        wanted: list[tuple[int, set[int]]] = []
        if total == 0 or not len(positions):
            return wanted
        starts = np.cumsum([0] + [c for _, c in seq_shards])
        for p in positions:
            q = p % total
            j = int(np.searchsorted(starts, q, side="right")) - 1
            shard = seq_shards[j][0]
            pos = self.shard_positions[shard][q - int(starts[j])]
            if wanted and wanted[-1][0] == shard and pos not in wanted[-1][1]:
                wanted[-1][1].add(pos)
            else:
                wanted.append((shard, {pos}))
        return wanted

    # --------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = self._read(self.plan(self.worker_positions(worker, workers)))
        if self.train and self.shuffle_buffer > 0:
            from webdataset.filters import shuffle

            ss = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch, self.rank, worker])
            rng = random.Random(int(ss.generate_state(1)[0]))
            stream = shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(stream)
        yield from self._decode_all(stream)

    def _read(self, plan: list[tuple[int, set[int]]]) -> Iterator[tuple[int, dict]]:
        """(record position, raw sample) for the planned samples, reading each shard once per visit
        and closing it after the last wanted sample."""
        for shard, wanted in plan:
            url = self.index.shards[shard]
            left = set(wanted)
            try:
                for sample in shard_samples(url, self._wants(url, left)):
                    key = _sample_key(sample["__key__"], url)
                    pos = self.position.get(key)
                    if pos in left:
                        left.discard(pos)
                        yield pos, sample
                        if not left:
                            break
            except tarfile.TarError as err:
                raise BadSampleError(f"cannot read shard {url}: truncated or damaged tar ({err})") from None
            except (OSError, ValueError, EOFError) as err:
                raise BadSampleError(f"cannot read shard {url}: {err}") from None
            except Exception as err:  # tarfile / gopen errors of many kinds
                raise BadSampleError(f"cannot read shard {url}: {type(err).__name__}: {err}") from None
            if left:
                raise BadSampleError(
                    f"shard {url} lacks {len(left)} sample(s) its index lists (e.g. list "
                    f"line {self.records[min(left)].line}); rewrite the shards"
                )

    def _wants(self, url: str, left: set[int]) -> Callable[[str], bool]:
        """Whether a sample key of shard `url` is one of the positions still to read."""
        return lambda key: self.position.get(_sample_key(key, url)) in left

    def _decode_all(self, stream: Iterator[tuple[int, dict]]) -> Iterator[tuple[Any, ...]]:
        ds = self.samples
        last_good: tuple[Any, ...] | None = None
        pending = 0
        bad = 0
        threads = torch.get_num_threads()
        for pos, sample in stream:
            try:
                if threads != 1:
                    torch.set_num_threads(1)  # as VideoDataset: small per-clip ops are faster on one thread
                item = self.decode(pos, sample)
            except BadSampleError as err:
                if ds.on_bad_sample == "error":
                    raise BadSampleError(
                        f"{err} (list line {self.records[pos].line}; set data.on_bad_sample: "
                        f"skip to replace bad samples)"
                    ) from None
                bad += 1
                log.warning("skipping bad sample %d: %s", pos, err)
                if bad > ds.max_bad_samples:
                    raise BadSampleError(
                        f"more than data.max_bad_samples={ds.max_bad_samples} bad samples; last: {err}"
                    ) from None
                if last_good is None:
                    pending += 1
                else:
                    yield last_good  # the batch count stays exact: the previous good sample again
                continue
            finally:
                if threads != 1:
                    torch.set_num_threads(threads)
            last_good = item
            for _ in range(pending + 1):
                yield item
            pending = 0

    def decode(self, pos: int, sample: dict) -> tuple[Any, ...]:
        """One raw shard sample → the item `VideoDataset` would give for record `pos`."""
        ds = self.samples
        rng = ds.rng(pos, 0)  # attempt 0: a shard sample is never replaced by another
        where = f"{sample.get('__url__', '?')}:{sample['__key__']}"
        clip = self.reader.read_tar_sample(sample, where, lambda n: ds.frame_indices(n, rng))
        clip, label, params = ds.finish(clip, self.records[pos].label, rng)
        return (clip, label, pos, params) if ds.defer_transform else (clip, label, pos)

    def make_loader(self, opts: LoaderOptions, **kwargs: Any) -> ShardLoader:
        """This rank's loader (`kwargs`: workers, pinning, worker init and collate, as `build_loader` sets them)."""
        self.configure(rank=opts.rank, world_size=opts.world_size, batch_size=opts.batch_size, train=opts.train)
        self.set_epoch(opts.epoch)
        return ShardLoader(self, batch_size=opts.batch_size, **kwargs)


def local_path(url: str) -> str | None:
    """The file a shard URL names on this machine, or None (http, pipe:, other schemes)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return parsed.path
    return url if not parsed.scheme and os.path.isfile(url) else None


def shard_samples(url: str, wanted: Callable[[str], bool]) -> Iterator[dict[str, Any]]:
    """webdataset's samples of one shard (`__key__`, `__url__`, a field per member).

    Any URL streams through webdataset's `tarfile_samples`. A local file is read in random-access
    mode instead: the tar headers are walked (a seek each), and only the members of samples whose
    key `wanted` accepts are read, each with one read call. The stream reads members in 10 KB pieces
    through Python, which cost ~2 ms per 2.4 MB sample here, and reads every sample of the shard;
    webdataset's own `group_by_keys` builds the samples in both cases, so they are the same."""
    from webdataset.tariterators import base_plus_ext, group_by_keys, meta_prefix, meta_suffix, tarfile_samples

    path = local_path(url)
    if path is None:
        yield from (s for s in tarfile_samples([{"url": url}]) if wanted(s["__key__"]))
        return

    def members() -> Iterator[dict[str, Any]]:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                name = m.name
                top_meta = "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix)
                if not m.isreg() or top_meta or _META.match(name):
                    continue
                key, _ = base_plus_ext(name)
                if key is not None and wanted(key):
                    f = tar.extractfile(m)
                    assert f is not None  # a regular member
                    yield {"fname": name, "data": f.read(), "__url__": url}

    yield from group_by_keys(members())


def _sample_key(key: str, url: str) -> int:
    try:
        return int(key.rsplit("/", 1)[-1])
    except ValueError:
        raise BadSampleError(f"shard {url} holds a sample {key!r} not written by python -m datasets.shards") from None


class _EpochSampler(Sampler[None]):
    """What a DataLoader over an IterableDataset iterates (nothing), plus `set_epoch`, so
    `loader.sampler.set_epoch(e)` works for shards as for `TrainSampler`."""

    def __init__(self, dataset: ShardDataset):
        self.dataset = dataset

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


class ShardLoader(DataLoader):
    """A DataLoader over a `ShardDataset`: `len()` is this rank's exact batch count and
    `.sampler.set_epoch(e)` selects the epoch."""

    def __init__(self, dataset: ShardDataset, **kwargs: Any):
        self._epoch_sampler = _EpochSampler(dataset)
        super().__init__(dataset, persistent_workers=False, **kwargs)

    @property  # type: ignore[override]
    def sampler(self) -> _EpochSampler:
        return self._epoch_sampler

    @sampler.setter
    def sampler(self, value: Any) -> None:  # DataLoader's own infinite sampler is not needed
        pass

    def __len__(self) -> int:
        ds = self.dataset
        assert isinstance(ds, ShardDataset)
        return math.ceil(ds.rank_length() / ds.batch_size)
