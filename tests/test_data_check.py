"""datasets.check: every problem of a dataset in one report."""
import shutil

from datasets.check import check_split
from datasets.synthetic import generate
from utils.config import resolve, to_dotmap


def test_check_reports_every_problem(tmp_path):
    d = tmp_path / "d"
    generate(d, classes=2, videos_per_class=3, val_videos_per_class=1, frames=6, size=32, fmt="both")
    data = {"train_root": str(d / "frames"), "val_root": str(d / "videos"), "train_list": str(d / "train.txt"),
            "val_list": str(d / "val_video.txt"), "label_list": str(d / "labels.csv"), "modality": "RGB",
            "min_frames": 4}
    cfg = to_dotmap(resolve({"data": data}, "test"))
    assert check_split(cfg.data, "train") == (6, [])
    lines = (d / "train.txt").read_text().splitlines()
    shutil.rmtree(d / "frames" / lines[0].split()[0])
    (d / "frames" / lines[1].split()[0] / "img_00002.jpg").unlink()
    (d / "frames" / lines[2].split()[0] / "img_00006.jpg").write_bytes(b"broken")
    lines.append("x/y 6 7")
    lines.append("x/z six 1")
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    n, problems = check_split(cfg.data, "train")
    assert n == 6
    text = "\n".join(problems)
    assert "train.txt:1: frame folder not found" in text
    assert "train.txt:2: " in text and "1 of the 5 frames that sampling can read are missing (img_00002.jpg" in text
    assert "train.txt:3: cannot decode frame" in text and "img_00006.jpg" in text
    assert "train.txt:7: label 7 is outside the 2 classes" in text
    assert "train.txt:8: frame count 'six' is not an integer" in text
    # videos: a truncated file and a missing one
    cfg.data.modality = "video"
    vids = (d / "val_video.txt").read_text().split()
    (d / "videos" / vids[0]).write_bytes((d / "videos" / vids[0]).read_bytes()[:100])
    (d / "videos" / vids[2]).unlink()
    n, problems = check_split(cfg.data, "val")
    assert n == 2 and len(problems) == 2
    assert "val_video.txt:1: cannot open video" in problems[0] and "val_video.txt:2: video not found" in problems[1]
