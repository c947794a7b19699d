"""The data-source seam (datasets.sources): a fourth source is one class and one registration,
and build_dataset / build_loader serve it as they serve frames, videos and shards."""

from pathlib import Path

import pytest
import torch

from datasets import build_dataset, build_loader
from datasets.decoding import decode_frame
from datasets.lists import VideoRecord
from datasets.sources import SOURCES, source_name
from datasets.synthetic import generate
from utils.config import replace, resolve, to_config
from utils.errors import UserError


class StillReader:
    """One image shown as a video: every sampled frame is the image."""

    seek_mode = "exact"
    decode_device = "cpu"

    def read_clip(self, path, listed, choose):
        image = torch.from_numpy(decode_frame(path)).permute(2, 0, 1)
        return image[None][[0 for _ in choose(1)]]

    def remedies(self):
        return ["images: none"]


class ImageFolderSource:
    """`<root>/<label>/<name>.jpg`, the docs' fourth source."""

    def __init__(self, data, split, allow_pipe=()):
        self.root = data.train_root if split == "train" else data.val_root
        self.where = self.root

    def records(self, num_classes):
        files = sorted(Path(self.root).glob("*/*.jpg"))
        recs = [VideoRecord(str(f.relative_to(self.root)), 1, int(f.parent.name), i + 1) for i, f in enumerate(files)]
        return recs, list(range(len(recs)))

    def reader(self):
        return StillReader()

    def dataset(self, samples, keys):
        return samples


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    syn = tmp_path_factory.mktemp("syn")
    generate(syn, classes=3, videos_per_class=2, val_videos_per_class=2, frames=6, size=40, fmt="frames", seed=4)
    out = syn / "images"
    for line in (syn / "val.txt").read_text().splitlines():
        folder, _, label = line.split()
        (out / label).mkdir(parents=True, exist_ok=True)
        (out / label / f"{Path(folder).name}.jpg").write_bytes((syn / "frames" / folder / "img_00001.jpg").read_bytes())
    return syn, out


def _cfg(syn: Path, **data):
    d = {
        "dataset": "syn",
        "num_segments": 3,
        "input_size": 32,
        "label_list": str(syn / "labels.csv"),
        "train_root": str(syn / "frames"),
        "val_root": str(syn / "frames"),
        "train_list": str(syn / "train.txt"),
        "val_list": str(syn / "val.txt"),
    }
    d.update(data)
    return to_config(resolve({"seed": 5, "data": d}, "test"))


def test_a_registered_fourth_source_is_built_and_loaded(images, monkeypatch):
    syn, root = images
    monkeypatch.setitem(SOURCES, "images", ImageFolderSource)
    cfg = _cfg(syn, val_root=str(root))
    cfg = replace(cfg, **{"data.format": "images"})  # the schema would list the new name; the registry is what picks it
    assert source_name(cfg.data) == "images"
    ds = build_dataset(cfg, "test", test_crops=3)
    files = sorted(root.glob("*/*.jpg"))
    assert [r.path for r in ds.records] == [str(f.relative_to(root)) for f in files]
    assert [r.label for r in ds.records] == [int(f.parent.name) for f in files]
    for i, f in enumerate(files):
        clip, label, index = ds[i]
        image = torch.from_numpy(decode_frame(str(f))).permute(2, 0, 1)
        want, _ = ds.transform(image[None].repeat(3, 1, 1, 1))
        assert clip.shape == (3 * 3, 3, 32, 32) and torch.equal(clip, want)
        assert (label, index) == (int(f.parent.name), i)
    seen = sorted(i for _, _, idx in build_loader(ds, 4, 0, train=False) for i in idx.tolist())
    assert seen == list(range(len(files)))


def test_the_source_follows_format_and_modality(images):
    syn, _ = images
    assert source_name(_cfg(syn).data) == "frames"
    assert source_name(_cfg(syn, modality="video").data) == "videos"
    assert source_name(_cfg(syn, format="shards").data) == "shards"
    cfg = _cfg(syn)
    cfg = replace(cfg, **{"data.format": "nowhere"})
    with pytest.raises(UserError, match="data.format 'nowhere' names no data source"):
        build_dataset(cfg, "val")
