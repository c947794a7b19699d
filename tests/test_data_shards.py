"""Tar shards (`data.format: shards`): the writer, the same clips as the file dataset, every video
exactly once across ranks and workers, a deterministic per-epoch order, URLs, clear errors."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from datasets import build_dataset, build_loader
from datasets.decoding import BadSampleError
from datasets.shard_dataset import ShardDataset, ShardLoader
from datasets.shards import ShardLayout, write_shards
from datasets.shards import main as shards_main
from datasets.synthetic import generate
from utils.config import replace, resolve, to_config
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    generate(out, classes=4, videos_per_class=4, val_videos_per_class=3, frames=10, size=48, fmt="both", seed=3)
    for split in ("train", "val"):
        for video in (False, True):
            kind = "video" if video else "frames"
            lst = out / (f"{split}_video.txt" if video else f"{split}.txt")
            root = str(out / ("videos" if video else "frames"))
            write_shards(
                str(lst),
                root,
                str(out / "shards" / f"{kind}_{split}"),
                labels=str(out / "labels.csv"),
                layout=ShardLayout(maxcount=5),
                progress=False,
            )
    return out


def cfg_for(syn: Path, video: bool = False, shards: bool = True, **data):
    kind = "video" if video else "frames"
    d = {
        "dataset": "syn",
        "num_segments": 4,
        "input_size": 32,
        "label_list": str(syn / "labels.csv"),
        "train_root": str(syn / ("videos" if video else "frames")),
        "val_root": str(syn / ("videos" if video else "frames")),
        "train_list": str(syn / ("train_video.txt" if video else "train.txt")),
        "val_list": str(syn / ("val_video.txt" if video else "val.txt")),
        "modality": "video" if video else "RGB",
    }
    if shards:
        d.update(
            format="shards",
            train_shards=str(syn / "shards" / f"{kind}_train.json"),
            val_shards=str(syn / "shards" / f"{kind}_val.json"),
        )
    d.update(data)
    return to_config(resolve({"seed": 5, "data": d}, "test"))


def test_writer_output(syn):
    index = json.loads((syn / "shards" / "frames_train.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["text4vis"]["content"] == "frames"
    shards = index["shardlist"]
    assert [s["nsamples"] for s in shards] == [5, 5, 5, 1]
    assert sorted(k for s in shards for k in s["keys"]) == list(range(16))
    assert [s["keys"] for s in shards] != [list(range(i, min(i + 5, 16))) for i in range(0, 16, 5)]  # shuffled
    assert all((syn / "shards" / s["url"]).is_file() for s in shards)
    import tarfile

    with tarfile.open(syn / "shards" / shards[0]["url"]) as tar:
        names = tar.getnames()
    key = f"{shards[0]['keys'][0]:09d}"
    assert {f"{key}.cls", f"{key}.json", f"{key}.000000.jpg", f"{key}.000009.jpg"} <= set(names)
    video = json.loads((syn / "shards" / "video_val.json").read_text())
    assert video["text4vis"]["content"] == "video" and sum(s["nsamples"] for s in video["shardlist"]) == 12


@pytest.mark.parametrize("video", [False, True])
def test_shards_give_the_same_clips_as_files(syn, video):
    for split, kw in (("test", {"test_crops": 3, "test_clips": 2}), ("train", {}), ("val", {})):
        files = build_dataset(cfg_for(syn, video, shards=False), split, **kw)
        shards = build_dataset(cfg_for(syn, video), split, **kw)
        assert isinstance(shards, ShardDataset) and len(shards) == len(files)
        shards.set_epoch(2)
        files.set_epoch(2)
        loader = build_loader(shards, 3, 0, train=split == "train", seed=5, epoch=2)
        seen = []
        for clips, labels, idx in loader:
            for c, lab, i in zip(clips, labels.tolist(), idx.tolist(), strict=True):
                ref, ref_label, _ = files[i]
                assert torch.equal(c, ref) and lab == ref_label
                seen.append(i)
        assert sorted(seen) == list(range(len(files)))


def test_deferred_transforms_from_shards(syn):
    from datasets.device_transforms import ClipsToDevice, RawClips

    files = build_dataset(cfg_for(syn, True, shards=False), "train")
    shards = build_dataset(cfg_for(syn, True, transform_device="cuda"), "train")
    move = ClipsToDevice(shards.transform, "cpu")
    seen = []
    for raw, labels, idx in build_loader(shards, 4, 0, train=True, seed=5):
        assert isinstance(raw, RawClips)
        clips = move(raw)
        for c, lab, i in zip(clips, labels.tolist(), idx.tolist(), strict=True):
            assert torch.equal(c, files[i][0]) and lab == files[i][1]
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(files)))  # every training clip, once


def _plan_indices(ds: ShardDataset, rank: int, world: int, batch: int, workers: int) -> list[list[int]]:
    """Per worker: the record positions it will yield (in read order, before the shuffle buffer)."""
    ds.configure(rank=rank, world_size=world, batch_size=batch, train=ds.train)
    out = []
    for w in range(max(1, workers)):
        plan = ds.plan(ds.worker_positions(w, max(1, workers)))
        out.append([p for _, wanted in plan for p in sorted(wanted)])
    return out


def test_every_video_once_across_ranks_and_workers(syn):
    for split in ("train", "test"):
        ds = build_dataset(cfg_for(syn), split)
        n = len(ds)
        for world in (1, 2, 3, 5):
            for workers in (0, 1, 2, 3):
                for batch in (1, 2, 4):
                    per_rank = [_plan_indices(ds, r, world, batch, workers) for r in range(world)]
                    flat = [i for rank in per_rank for w in rank for i in w]
                    counts = Counter(flat)
                    assert set(counts) == set(range(n)), (split, world, workers, batch)
                    if split == "test":
                        assert len(flat) == n  # each video exactly once
                    else:  # DistributedSampler's padding: equal steps on every rank
                        assert len(flat) == world * -(-n // world) and len(flat) - n < world
                        sizes = {sum(len(w) for w in rank) for rank in per_rank}
                        assert len(sizes) == 1
                    for rank in per_rank:  # workers hold whole batches, except the last
                        assert all(len(w) % batch == 0 for w in rank[:-1] if w)


def test_loader_batches_order_and_epochs(syn):
    def run(epoch, workers, world=1, rank=0):
        ds = build_dataset(cfg_for(syn), "train")
        loader = build_loader(ds, 3, workers, train=True, rank=rank, world_size=world, seed=5)
        assert isinstance(loader, ShardLoader)
        loader.sampler.set_epoch(epoch)
        batches = [idx.tolist() for _, _, idx in loader]
        assert len(batches) == len(loader)
        return batches

    a = run(1, 2)
    assert a == run(1, 2)  # deterministic: a re-run (resume) of epoch 1 is the same
    assert sorted(i for b in a for i in b) == list(range(16))
    assert run(2, 2) != a  # another epoch, another order
    b = run(1, 0)
    assert sorted(i for x in b for i in x) == list(range(16))
    r0, r1 = run(1, 2, world=2, rank=0), run(1, 2, world=2, rank=1)
    assert len(r0) == len(r1)
    assert sorted(i for x in r0 + r1 for i in x) == list(range(16))


def test_min_frames_filter_and_skip_bad_writer(syn, tmp_path):
    lst = tmp_path / "train.txt"
    lines = (syn / "train.txt").read_text().splitlines()
    first = lines[0].split()
    lines[0] = f"{first[0]} 3 {first[2]}"  # listed with 3 frames: dropped by min_frames=8 in training
    lines[1] = "missing/folder 10 " + lines[1].split()[2]
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadSampleError, match=rf"frame folder not found: .*missing/folder \({lst}:2; --skip-bad"):
        write_shards(str(lst), str(syn / "frames"), str(tmp_path / "s" / "t"), progress=False)
    index = write_shards(str(lst), str(syn / "frames"), str(tmp_path / "s" / "t"), skip_bad=True, progress=False)
    assert index["text4vis"]["skipped"][0].startswith(f"{lst}:2: frame folder not found")
    cfg = cfg_for(syn, train_shards=str(tmp_path / "s" / "t.json"))
    train = build_dataset(cfg, "train")
    assert len(train) == 14 and {r.line for r in train.records} == set(range(3, 17))
    seen = sorted(i for _, _, idx in build_loader(train, 4, 0, train=True) for i in idx.tolist())
    assert seen == list(range(14))
    assert len(build_dataset(cfg_for(syn, val_shards=str(tmp_path / "s" / "t.json")), "test")) == 15


def test_shards_over_http_and_pipe(syn):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(syn / "shards"))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/video_val.json"
        ds = build_dataset(cfg_for(syn, True, val_shards=url), "test")
        assert ds.index.shards[0].startswith("http://127.0.0.1:")
        seen = sorted(i for _, _, idx in build_loader(ds, 4, 0, train=False) for i in idx.tolist())
        assert seen == list(range(12))
    finally:
        server.shutdown()


def test_pipe_urls_only_from_the_command_line(syn, tmp_path):
    """A pipe: shard URL in an index never runs; a pipe: index URL runs only when `allow_pipe` (the
    command line's --allow-pipe URLs) holds it, and then its shards must be absolute."""
    local = syn / "shards" / "frames_val.json"
    marker = tmp_path / "ran"
    piped = json.loads(local.read_text())
    piped["shardlist"][1]["url"] = f"pipe:touch {marker}"
    (tmp_path / "piped.json").write_text(json.dumps(piped))
    for allowed in ((), (f"pipe:touch {marker}",)):
        with pytest.raises(
            UserError, match=r"piped\.json: shard URL 'pipe:touch .*ran' would run a shell command.*--allow-pipe"
        ):
            build_dataset(cfg_for(syn, val_shards=str(tmp_path / "piped.json")), "val", allow_pipe=allowed)
    absolute = json.loads(local.read_text())
    for s in absolute["shardlist"]:
        s["url"] = str(syn / "shards" / s["url"])
    (tmp_path / "abs.json").write_text(json.dumps(absolute))
    url = f"pipe:touch {marker}; cat {tmp_path / 'abs.json'}"
    with pytest.raises(
        UserError, match=r"data.val_shards is 'pipe:touch .*', which would run a shell command.*--allow-pipe"
    ):
        build_dataset(cfg_for(syn, val_shards=url), "val", allow_pipe=("pipe:other",))
    assert not marker.exists()
    ds = build_dataset(cfg_for(syn, val_shards=url), "val", allow_pipe=(url,))
    assert marker.exists()
    assert sorted(i for _, _, idx in build_loader(ds, 4, 0, train=False) for i in idx.tolist()) == list(range(12))
    with pytest.raises(UserError, match="is relative, but an index read through a pipe: command"):
        build_dataset(cfg_for(syn, val_shards=f"pipe:cat {local}"), "val", allow_pipe=(f"pipe:cat {local}",))
    for scheme in ("PIPE:", "Pipe:"):  # webdataset dispatches on the lower-cased scheme
        with pytest.raises(UserError, match="would run a shell command"):
            build_dataset(cfg_for(syn, val_shards=f"{scheme}touch {marker}2"), "val")
    assert not Path(f"{marker}2").exists()


def test_errors(syn, tmp_path):
    with pytest.raises(UserError, match="data.val_shards is not set"):
        build_dataset(cfg_for(syn, val_shards=""), "val")
    with pytest.raises(UserError, match="data.train_shards: shard index not found: .*nope.json"):
        build_dataset(cfg_for(syn, train_shards=str(tmp_path / "nope.json")), "train")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="is not a shard index written by python -m datasets.shards"):
        build_dataset(cfg_for(syn, train_shards=str(tmp_path / "other.json")), "train")
    with pytest.raises(UserError, match="is a frames shard index but data.modality is 'video'"):
        build_dataset(cfg_for(syn, modality="video"), "train")
    with pytest.raises(UserError, match="data.shot .* needs data.format: files"):
        cfg_for(syn, shot=2)
    broken = json.loads((syn / "shards" / "frames_val.json").read_text())
    broken["shardlist"][0]["url"] = "missing-000000.tar"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    ds = build_dataset(cfg_for(syn, val_shards=str(tmp_path / "broken.json")), "val")
    with pytest.raises(BadSampleError, match=r"cannot read shard .*missing-000000\.tar"):
        list(build_loader(ds, 4, 0, train=False))
    with pytest.raises(UserError, match="--root is not a folder"):
        shards_main([str(syn / "val.txt"), "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])


@pytest.mark.slow
def test_two_processes_see_each_sample_once(syn, tmp_path):
    """torchrun, 2 gloo processes, 2 workers each: every training sample once per epoch (plus
    DistributedSampler-style padding to equal steps), every test video exactly once."""
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        from utils import distributed as D
        from datasets import build_dataset, build_loader
        from utils.config import resolve, to_config
        info = D.init_distributed(device="cpu")
        d = {{"num_segments": 4, "input_size": 32, "label_list": {str(syn / "labels.csv")!r}, "format": "shards",
              "train_shards": {str(syn / "shards" / "video_train.json")!r},
              "val_shards": {str(syn / "shards" / "video_val.json")!r}, "modality": "video"}}
        cfg = to_config(resolve({{"seed": 5, "data": d}}, "t"))
        train = build_loader(build_dataset(cfg, "train"), 3, 2, train=True, rank=info.rank, world_size=2, seed=5)
        for epoch in (0, 1):
            train.sampler.set_epoch(epoch)
            idx = [i for _, _, b in train for i in b.tolist()]
            steps = D.all_gather_object(len(idx))
            allidx = sum(D.all_gather_object(idx), [])
            assert steps[0] == steps[1] == 8 and len(train) * 3 >= len(idx), steps
            assert sorted(allidx) == list(range(16)), sorted(allidx)
        test = build_loader(build_dataset(cfg, "test"), 2, 2, train=False, rank=info.rank, world_size=2)
        idx = [i for _, _, b in test for i in b.tolist()]
        allidx = sum(D.all_gather_object(idx), [])
        assert sorted(allidx) == list(range(12)), sorted(allidx)
        D.cleanup()
        print(f"rank{{info.rank}}-ok", flush=True)
    """)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(script),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rank0-ok" in proc.stdout and "rank1-ok" in proc.stdout


@pytest.mark.slow
def test_same_top1_from_shards_as_from_files(syn, tmp_path):
    """A model evaluated on the shards gives exactly the files' embeddings and top-1."""
    from datasets.transforms import normalize
    from modules.model_builder import build_model
    from utils.evaluate import ViewSet, evaluate

    names = [line.split(",", 1)[1] for line in (syn / "labels.csv").read_text().splitlines()[1:]]
    reports = []
    for shards in (False, True):
        cfg = cfg_for(syn, True, shards=shards, input_size=112)
        cfg = replace(
            cfg, **{"network.arch": "tiny", "network.pretrained": "none", "network.text_cache": str(tmp_path / "cache")}
        )
        torch.manual_seed(0)
        model = build_model(cfg, names).eval()
        loader = build_loader(build_dataset(cfg, "test", test_crops=3), 4, 0, train=False)
        report, out = evaluate(model, loader, ViewSet(3, 4, "cpu", normalize))
        reports.append((report, out))
    (a, out_a), (b, out_b) = reports
    assert torch.equal(out_a.indices, out_b.indices) and torch.allclose(out_a.embeddings, out_b.embeddings)
    assert a["top1"] == b["top1"] and a["num_videos"] == b["num_videos"] == 12


def test_shards_of_preprocessed_videos_seek_like_the_preprocessed_files(syn, tmp_path):
    """The index records that the videos came from `datasets.preprocess` (its marker file): their
    shards then decode with torchcodec's approximate seek mode, as the files would, and the data-bound
    remedy does not ask to pre-process them again."""
    import shutil

    from datasets.data_builder import data_remedy
    from datasets.video_reader import CFR_MARKER

    pre = tmp_path / "pre"
    shutil.copytree(syn / "videos", pre)
    (pre / CFR_MARKER).write_text("{}")
    out = tmp_path / "s" / "pre_train"
    write_shards(str(syn / "train_video.txt"), str(pre), str(out), labels=str(syn / "labels.csv"), progress=False)
    cfr = build_dataset(cfg_for(syn, True, train_shards=str(out) + ".json"), "train")
    plain = build_dataset(cfg_for(syn, True), "train")
    assert cfr.samples.seek_mode == "approximate" and plain.samples.seek_mode == "exact"
    assert "datasets.preprocess" not in data_remedy(cfr, workers=1, cpus=2)
    assert "datasets.preprocess" in data_remedy(plain, workers=1, cpus=2)


def _tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def test_local_shards_are_read_as_webdataset_streams_them(syn, tmp_path):
    from webdataset.tariterators import tarfile_samples

    from datasets.shard_dataset import local_path, shard_samples

    odd = _tar(
        tmp_path / "odd.tar",
        [
            ("__info__", b"meta"),
            ("dir", None),
            ("000001.mp4", b"video one"),
            ("000001.JSON", b"{}"),
            ("__x__/000009.cls", b"skipped meta folder"),
            ("sub/000002.0.jpg", b"frame"),
            ("sub/000002.1.jpg", b"frame 2"),
            ("000003.cls", b"7"),
        ],
    )
    shards = sorted((syn / "shards").glob("*.tar")) + [odd]
    for shard in shards:
        assert local_path(str(shard)) == str(shard) and local_path(f"file://{shard}") == str(shard)
        streamed = list(tarfile_samples([{"url": str(shard)}]))
        assert streamed and list(shard_samples(str(shard), lambda key: True)) == streamed
        some = {s["__key__"] for s in streamed[::2]}
        assert list(shard_samples(str(shard), some.__contains__)) == [s for s in streamed if s["__key__"] in some]
        assert list(shard_samples(f"pipe:cat {shard}", some.__contains__)) == [
            {**s, "__url__": f"pipe:cat {shard}"} for s in streamed if s["__key__"] in some
        ]
    assert [s["__key__"] for s in shard_samples(str(odd), lambda key: True)] == ["000001", "sub/000002", "000003"]
    assert local_path("http://host/x.tar") is None and local_path(str(tmp_path / "missing.tar")) is None


def test_a_truncated_local_shard_is_named(syn, tmp_path):
    index = json.loads((syn / "shards" / "video_val.json").read_text())
    first = syn / "shards" / index["shardlist"][0]["url"]
    cut = tmp_path / "cut-000000.tar"
    cut.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    index["shardlist"] = index["shardlist"][:1]
    index["shardlist"][0]["url"] = str(cut)
    (tmp_path / "cut.json").write_text(json.dumps(index))
    ds = build_dataset(cfg_for(syn, video=True, val_shards=str(tmp_path / "cut.json")), "val")
    with pytest.raises(BadSampleError, match=r"cannot read shard .*cut-000000\.tar: truncated or damaged tar"):
        list(build_loader(ds, 4, 0, train=False))
