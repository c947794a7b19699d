"""datasets.build_dataset / build_loader on generated data: frames and videos agree, both video
backends agree, sampling is reproducible whatever the worker count, every bad input is reported."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import build_dataset, build_loader
from datasets.decoding import BadSampleError
from datasets.samplers import ShardSampler
from datasets.video_reader import VideoReader
from utils.config import resolve, to_config
from utils.errors import UserError


def make_cfg(syn: Path, video=False, **data):
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
    d.update(data)
    return to_config(resolve({"seed": 5, "data": d}, "test"))


def test_shapes_and_labels(syn):
    cfg = make_cfg(syn)
    train = build_dataset(cfg, "train")
    clip, label, idx = train[7]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8
    assert (label, idx) == (train.records[7].label, 7)
    test = build_dataset(cfg, "test", test_crops=3, test_clips=2)
    clip, _, _ = test[0]
    assert clip.shape == (3 * 2 * 4, 3, 32, 32)
    assert len(test) == 8 and len(train) == 12


def test_frames_and_video_datasets_match(syn):
    for split, kw in (("val", {}), ("test", {"test_crops": 3, "test_clips": 2})):
        frames = build_dataset(make_cfg(syn), split, **kw)
        video = build_dataset(make_cfg(syn, video=True), split, **kw)
        assert [r.label for r in frames.records] == [r.label for r in video.records]
        for i in range(len(frames)):
            a, la, _ = frames[i]
            b, lb, _ = video[i]
            assert la == lb and a.shape == b.shape
            assert (a.float() - b.float()).abs().mean() < 4.5  # JPEG q95 vs MPEG-4 yuv420p
    # a different video is far away: the tolerance above really identifies the same clip
    assert (frames[0][0].float() - video[1][0].float()).abs().mean() > 15
    # training: same seed, same draws -> same crops from both formats
    a, _, _ = build_dataset(make_cfg(syn), "train")[3]
    b, _, _ = build_dataset(make_cfg(syn, video=True), "train")[3]
    assert (a.float() - b.float()).abs().mean() < 4.5


def test_decord_and_pyav_return_the_same_frames(syn):
    path = next((syn / "videos").rglob("*.mp4"))
    d, p = VideoReader(path, "decord"), VideoReader(path, "pyav")
    assert d.num_frames == p.num_frames == 10
    idx = [9, 0, 4, 4, 7]
    a, b = d.read(idx), p.read(idx)
    assert a.shape == (5, 3, 64, 64)
    assert (a.int() - b.int()).abs().max() <= 2
    assert torch.equal(a[2], a[3])


def test_decord_geometry_bug_falls_back_to_pyav(tmp_path):
    # decord returns a 4-channel frame for 48-px-wide videos; the reader then decodes with PyAV
    from datasets.synthetic import class_list, render_video, write_mp4

    frames = render_video(class_list(1)[0], 6, 48, np.random.default_rng(0))
    write_mp4(tmp_path / "v.mp4", frames)
    a = VideoReader(tmp_path / "v.mp4", "decord").read([0, 5])
    b = VideoReader(tmp_path / "v.mp4", "pyav").read([0, 5])
    assert a.shape == (2, 3, 48, 48) and torch.equal(a, b)
    ref = torch.from_numpy(np.stack([frames[0], frames[5]])).permute(0, 3, 1, 2)
    assert (a.float() - ref.float()).abs().mean() < 4.5


def test_sampling_reproducible_per_seed_epoch_and_index(syn):
    ds = build_dataset(make_cfg(syn), "train")
    a, _, _ = ds[2]
    assert torch.equal(a, ds[2][0])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2][0])
    ds.set_epoch(0)
    assert torch.equal(a, ds[2][0])
    other = build_dataset(make_cfg(syn), "train", seed=6)
    assert not torch.equal(a, other[2][0])


def test_loader_same_samples_whatever_the_worker_count(syn):
    def collect(workers, epoch):
        ds = build_dataset(make_cfg(syn), "train")
        loader = build_loader(ds, 4, workers, train=True, rank=0, world_size=1, seed=5)
        loader.sampler.set_epoch(epoch)
        out = {}
        for clips, _labels, idx in loader:
            assert clips.shape[1:] == (4, 3, 32, 32)
            for c, i in zip(clips, idx.tolist(), strict=True):
                out[i] = c
        return out

    a, b = collect(0, 1), collect(2, 1)
    assert sorted(a) == list(range(12))
    assert all(torch.equal(a[i], b[i]) for i in a)
    c = collect(0, 2)
    assert not all(torch.equal(a[i], c[i]) for i in a)


def test_shard_sampler_covers_every_index_once():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            seen = [i for r in range(world) for i in ShardSampler(n, r, world)]
            assert sorted(seen) == list(range(n))
            assert sum(len(ShardSampler(n, r, world)) for r in range(world)) == n


def test_eval_loader_shards(syn):
    ds = build_dataset(make_cfg(syn), "val")
    seen = []
    for rank in range(3):
        for _, _, idx in build_loader(ds, 3, 0, train=False, rank=rank, world_size=3, seed=0):
            seen += idx.tolist()
    assert sorted(seen) == list(range(len(ds)))


def test_index_bias_and_num_frames_from(syn, tmp_path):
    rec = build_dataset(make_cfg(syn), "val").records[0]
    src = syn / "frames" / rec.path
    dst = tmp_path / "frames" / rec.path
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):  # rename to 0-based frame_0.png ... frame_9.png
        n = int(f.stem.split("_")[1]) - 1
        shutil.copy(f, dst / f"frame_{n}.jpg")
    (tmp_path / "one.txt").write_text(f"{rec.path} 10 {rec.label}\n")
    cfg = make_cfg(
        syn,
        val_root=str(tmp_path / "frames"),
        val_list=str(tmp_path / "one.txt"),
        image_tmpl="frame_{}.jpg",
        index_bias=0,
    )
    assert torch.equal(build_dataset(cfg, "val")[0][0], build_dataset(make_cfg(syn), "val")[0][0])
    # `list` trusts the list's count: 9 frames gives other indices than the 10 files in the folder
    (tmp_path / "nine.txt").write_text(f"{rec.path} 9 {rec.label}\n")
    nine = dict(val_list=str(tmp_path / "nine.txt"))
    by_list = build_dataset(make_cfg(syn, num_frames_from="list", **nine), "test", test_clips=1)[0][0]
    by_dir = build_dataset(make_cfg(syn, num_frames_from="dir", **nine), "test", test_clips=1)[0][0]
    assert not torch.equal(by_list, by_dir)
    # a list count larger than the folder: the missing frame is named
    (tmp_path / "many.txt").write_text(f"{rec.path} 40 {rec.label}\n")
    ds = build_dataset(make_cfg(syn, num_frames_from="list", val_list=str(tmp_path / "many.txt")), "test")
    with pytest.raises(BadSampleError, match=r"frame not found: .*img_00011\.jpg"):
        ds[0]


def test_min_frames_filter_train_and_val_only(syn, tmp_path):
    lines = (syn / "val.txt").read_text().splitlines()
    lines[0] = lines[0].replace(" 10 ", " 5 ")
    (tmp_path / "v.txt").write_text("\n".join(lines) + "\n")
    cfg = make_cfg(syn, val_list=str(tmp_path / "v.txt"), train_list=str(tmp_path / "v.txt"))
    assert len(build_dataset(cfg, "val")) == 7
    assert len(build_dataset(cfg, "train")) == 7
    assert len(build_dataset(cfg, "test")) == 8


def test_flip_label_map(syn):
    ds = build_dataset(make_cfg(syn, flip_prob=1.0, flip_label_map={0: 1, 1: 0}), "train")
    for i, rec in enumerate(ds.records):
        assert ds[i][1] == {0: 1, 1: 0}.get(rec.label, rec.label)


def _bad_copy(syn, tmp_path, video=False):
    root = tmp_path / "root"
    shutil.copytree(syn / ("videos" if video else "frames"), root)
    lst = syn / ("val_video.txt" if video else "val.txt")
    return root, build_dataset(make_cfg(syn, video=video, val_root=str(root), val_list=str(lst)), "val")


def test_missing_folder_and_frames(syn, tmp_path):
    root, ds = _bad_copy(syn, tmp_path)
    folder = root / ds.records[0].path
    # 9 files left: the dir count gives n=9, T=4 -> indices 0,2,4,6 -> img_00001/3/5/7
    (folder / "img_00003.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"frame not found: .*img_00003\.jpg \(list .*val\.txt, line 1;"):
        ds[0]
    (folder / "img_00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadSampleError, match=r"cannot decode frame .*img_00001\.jpg"):
        ds.frames.read(str(folder), [0])
    (folder / "img_00002.jpg").write_bytes(b"")
    with pytest.raises(BadSampleError, match=r"frame file is empty: .*img_00002\.jpg"):
        ds.frames.read(str(folder), [1])
    jpg = folder / "img_00005.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(BadSampleError, match=r"cannot decode frame .*img_00005\.jpg.*truncated"):
        ds.frames.read(str(folder), [4])
    shutil.rmtree(root / ds.records[1].path)
    with pytest.raises(BadSampleError, match=rf"frame folder not found: .*{ds.records[1].path}.*line 2"):
        ds[1]
    empty = root / ds.records[2].path
    shutil.rmtree(empty)
    empty.mkdir()
    with pytest.raises(BadSampleError, match=rf"frame folder is empty: .*{ds.records[2].path}"):
        ds[2]


def test_bad_videos(syn, tmp_path):
    root, ds = _bad_copy(syn, tmp_path, video=True)
    p0 = root / ds.records[0].path
    p0.write_bytes(p0.read_bytes()[: p0.stat().st_size // 2])  # truncated
    with pytest.raises(BadSampleError, match=rf"cannot open video .*{ds.records[0].path}"):
        ds[0]
    (root / ds.records[1].path).unlink()
    with pytest.raises(BadSampleError, match=rf"video not found: .*{ds.records[1].path}"):
        ds[1]
    import av

    zero = root / ds.records[2].path
    zero.unlink()
    with av.open(str(zero), "w", format="mp4") as c:  # a container without a single frame
        s = c.add_stream("libx264", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        c.start_encoding()  # write the header although no frame follows
    for backend in ("torchcodec", "decord", "pyav"):
        with pytest.raises(BadSampleError, match=rf"video has no frames.*{ds.records[2].path}"):
            VideoReader(zero, backend)
    (root / ds.records[3].path).write_bytes(b"")
    with pytest.raises(BadSampleError, match="video file is empty"):
        ds[3]


def test_on_bad_sample_skip_is_deterministic_and_bounded(syn, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(syn / "frames", root)
    base = build_dataset(make_cfg(syn), "val")
    shutil.rmtree(root / base.records[0].path)
    skip = make_cfg(syn, val_root=str(root), on_bad_sample="skip", max_bad_samples=1)
    ds = build_dataset(skip, "val")
    clip, label, idx = ds[0]
    assert idx == 0
    again, _, _ = build_dataset(skip, "val")[0]
    assert torch.equal(clip, again)  # the same replacement every time
    assert any(torch.equal(clip, base[j][0]) and label == base.records[j].label for j in range(1, len(base)))
    shutil.rmtree(root / base.records[1].path)
    ds = build_dataset(skip, "val")
    ds[0]
    with pytest.raises(BadSampleError, match="more than data.max_bad_samples=1"):
        ds[1]
    default = build_dataset(make_cfg(syn, val_root=str(root)), "val")
    with pytest.raises(BadSampleError, match="on_bad_sample: skip"):
        default[0]


def test_config_level_errors(syn, tmp_path):
    with pytest.raises(UserError, match="list file not found"):
        build_dataset(make_cfg(syn, val_list=str(tmp_path / "none.txt")), "val")
    bad = tmp_path / "bad.txt"
    bad.write_text("a 10 0\nb 10 9\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: label 9 is outside the 4 classes"):
        build_dataset(make_cfg(syn, val_list=str(bad)), "val")
    with pytest.raises(UserError, match="is a frames list but data.modality is 'video'"):
        build_dataset(make_cfg(syn, modality="video"), "val")
    with pytest.raises(UserError, match="data.num_classes is 5"):
        build_dataset(make_cfg(syn, num_classes=5), "val")
    with pytest.raises(UserError, match="data.val_root is not a folder"):
        build_dataset(make_cfg(syn, val_root=str(tmp_path / "nowhere")), "val")


def test_video_truncated_after_an_intact_header(tmp_path):
    import av

    from datasets.synthetic import class_list, render_video

    frames = render_video(class_list(1)[0], 30, 64, np.random.default_rng(0))
    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as c:  # index first
        s = c.add_stream("mpeg4", rate=8, options={"qscale": "2", "g": "5"})
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for t, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            f.pts = t
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    for backend in ("torchcodec", "decord", "pyav"):
        with pytest.raises(BadSampleError, match=r"(cannot open video|video is truncated:) .*fs\.mp4"):
            VideoReader(path, backend).read([0, 15, 29])
