"""A small generated action dataset for the demo and the tests (`python -m datasets.synthetic`).

Each class is an object (colour + shape) doing a motion. Classes come in pairs that differ only
in the direction of time (moving left / right, growing / shrinking, rotating clockwise /
anticlockwise, moving up / down), so a model that averages frames cannot tell a pair apart and
the temporal heads matter; appearance (colour, shape) separates the pairs. Every video has its
own random start position, speed, size, background colour and noise, and validation videos are
drawn from other seeds than training videos.

Output (DIR = --out):
  DIR/labels.csv                       `id,name` with short English class names
  DIR/frames/<class>/<video>/img_00001.jpg ...   (frames format, 1-based, `img_{:05d}.jpg`)
  DIR/train.txt, DIR/val.txt           frames lists `<class>/<video> <num_frames> <label>`
  DIR/videos/<class>/<video>.mp4       (video format, MPEG-4 Part 2, yuv420p, qscale 2)
  DIR/train_video.txt, DIR/val_video.txt  video lists `<class>/<video>.mp4 <label>`
Roots: `data.train_root`/`val_root` = DIR/frames (frames) or DIR/videos (video).
The same seed writes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from utils.cli import cli_parser
from utils.errors import UserError, run_cli

COLOURS = {
    "red": (220, 40, 40),
    "blue": (40, 80, 230),
    "green": (40, 180, 60),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}

# (colour, shape, motion pair); the class list interleaves the two directions of each pair.
_OBJECTS = [
    ("red", "circle", "horizontal"),
    ("blue", "square", "scale"),
    ("green", "triangle", "rotate"),
    ("yellow", "square", "vertical"),
    ("blue", "circle", "horizontal"),
    ("red", "triangle", "scale"),
    ("purple", "bar", "rotate"),
    ("orange", "circle", "vertical"),
    ("green", "square", "horizontal"),
    ("yellow", "triangle", "scale"),
    ("orange", "bar", "rotate"),
    ("purple", "square", "vertical"),
]
_DIRECTIONS = {
    "horizontal": ("moving left", "moving right"),
    "vertical": ("moving up", "moving down"),
    "scale": ("growing", "shrinking"),
    "rotate": ("rotating clockwise", "rotating anticlockwise"),
    "fade": ("fading in", "fading out"),
    "light": ("lighting up", "going dark"),
}
MAX_CLASSES = 2 * len(_OBJECTS)
MOTIONS = tuple(_DIRECTIONS)
IMAGE_TMPL = "img_{:05d}.jpg"


@dataclass(frozen=True)
class ActionClass:
    colour: str
    shape: str
    motion: str  # one of the _DIRECTIONS phrases

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape} {self.motion}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "_")


def class_list(num_classes: int | None = None, motions: Sequence[str] | None = None) -> list[ActionClass]:
    """The first `num_classes` classes; consecutive pairs differ only in temporal direction.

    `motions` (pair kinds from MOTIONS, repeats allowed) replaces the default motion of each
    object in turn, so `("horizontal", "fade")` gives a red circle moving left / right and a blue
    square fading in / out. `num_classes` defaults to every class of the chosen pairs."""
    objects = _OBJECTS
    if motions is not None:
        motions = list(motions)
        unknown = [m for m in motions if m not in _DIRECTIONS]
        if unknown or not 1 <= len(motions) <= len(_OBJECTS):
            raise UserError(f"--motions takes 1..{len(_OBJECTS)} of {', '.join(MOTIONS)}; got {','.join(motions)}")
        objects = [(colour, shape, m) for (colour, shape, _), m in zip(_OBJECTS, motions, strict=False)]
    available = 2 * len(objects)
    num_classes = available if num_classes is None else num_classes
    if not 1 <= num_classes <= available:
        raise UserError(f"--classes must be between 1 and {available}, got {num_classes}")
    out = []
    for colour, shape, pair in objects:
        for motion in _DIRECTIONS[pair]:
            out.append(ActionClass(colour, shape, motion))
    return out[:num_classes]


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        corners = [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)]
    elif shape == "square":
        corners = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    elif shape == "bar":  # an asymmetric bar with a notch so that rotation is visible in every phase
        corners = [(-1.0, -0.35), (1.0, -0.35), (1.0, 0.35), (0.2, 0.35), (0.2, 0.1), (-1.0, 0.1)]
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in corners]


def render_video(cls: ActionClass, frames: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames (H, W, 3) uint8 of one video of `cls`, with per-video random jitter."""
    bg = rng.integers(80, 176) + rng.integers(-25, 26, size=3)  # greyish, so every colour stands out
    # Smooth background noise: a coarse random grid, upsampled (codec-friendly, not memorisable).
    coarse = rng.normal(0.0, 18.0, size=(8, 8, 3))
    noise = (
        np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
                (size, size), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        - 128.0
    )
    base = np.clip(bg[None, None, :] + noise, 0, 255).astype(np.uint8)
    colour = COLOURS[cls.colour]
    r0 = size * rng.uniform(0.10, 0.16)
    speed = rng.uniform(0.35, 0.6) * size / max(frames - 1, 1)  # pixels per frame
    cx0, cy0 = rng.uniform(0.35, 0.65) * size, rng.uniform(0.35, 0.65) * size
    angle0 = rng.uniform(0, 2 * math.pi)
    spin = rng.uniform(1.2, 2.0) * math.pi / 2 / max(frames - 1, 1)  # radians per frame (< 180° total)
    growth = rng.uniform(1.8, 2.4) ** (1.0 / max(frames - 1, 1))
    span = rng.uniform(0.75, 0.9)  # fade / light: how far the opacity or the brightness travels
    out = []
    for t in range(frames):
        tc = t - (frames - 1) / 2.0  # centred time: motion goes through the start position
        cx, cy, r, angle = cx0, cy0, r0, angle0
        if cls.motion == "moving left":
            cx = cx0 - speed * tc
        elif cls.motion == "moving right":
            cx = cx0 + speed * tc
        elif cls.motion == "moving up":
            cy = cy0 - speed * tc
        elif cls.motion == "moving down":
            cy = cy0 + speed * tc
        elif cls.motion == "growing":
            r = r0 * growth**tc
        elif cls.motion == "shrinking":
            r = r0 * growth ** (-tc)
        elif cls.motion == "rotating clockwise":  # image y points down: +angle turns clockwise on screen
            angle = angle0 + spin * tc
        elif cls.motion == "rotating anticlockwise":
            angle = angle0 - spin * tc
        # fade / light: opacity or brightness goes from 1 - span to 1 (or back)
        phase = 0.5 + tc / max(frames - 1, 1)  # 0 at the first frame, 1 at the last
        level = 1.0 - span * (phase if cls.motion in ("fading out", "going dark") else 1.0 - phase)
        img = Image.fromarray(base.copy())
        mask = Image.new("L", img.size, 0)
        draw = ImageDraw.Draw(mask)
        if cls.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        else:
            draw.polygon(_shape_points(cls.shape, cx, cy, r, angle), fill=255)
        opacity = level if cls.motion in ("fading in", "fading out") else 1.0
        img.paste(Image.new("RGB", img.size, colour), mask=mask.point(lambda v, o=opacity: int(v * o)))
        arr = np.asarray(img)
        if cls.motion in ("lighting up", "going dark"):
            arr = (arr.astype(np.float32) * level).astype(np.uint8)
        out.append(arr)
    return out


def _video_seed(seed: int, split: str, label: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if split == "train" else 1, label, k])


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int = 8) -> None:
    """MPEG-4 Part 2 (FFmpeg's own encoder, yuv420p, qscale 2) in an .mp4 container.

    Chosen over libx264 because its bytes are reproducible: x264 encodes of small frames differed
    from run to run depending on what had been loaded into the process before PyAV (measured)."""
    import av
    from av.codec.context import Flags

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "2"})
        stream.width, stream.height = int(w), int(h)
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.thread_type = "NONE"
        ctx.time_base = Fraction(1, fps)
        ctx.qscale = 2
        ctx.flags |= Flags.bitexact  # no encoder version string in the file
        for t, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass(frozen=True)
class ClassChoice:
    """The classes of a generated dataset: the first `count` (None: every class of the chosen
    pairs), with `motions` replacing each object's default motion in turn (see `class_list`)."""

    count: int | None = None
    motions: Sequence[str] | None = None


def generate(
    out: str | Path,
    *,
    classes: int | ClassChoice = 10,
    videos_per_class: int = 24,
    val_videos_per_class: int | None = None,
    frames: int = 16,
    size: int = 128,
    fmt: str = "both",
    seed: int = 0,
) -> dict[str, Path]:
    """Write the dataset under `out`; returns the paths of the lists and the CSV. `classes`: the
    first N classes of the default motions, or a `ClassChoice`."""
    choice = classes if isinstance(classes, ClassChoice) else ClassChoice(classes)
    if fmt not in ("frames", "video", "both"):
        raise UserError(f"--format must be frames, video or both, got {fmt!r}")
    if frames < 1 or size < 16 or videos_per_class < 1:
        raise UserError("need --frames >= 1, --size >= 16 and --videos-per-class >= 1")
    cls_list = class_list(choice.count, choice.motions)  # validates before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_val = max(1, videos_per_class // 3) if val_videos_per_class is None else val_videos_per_class
    paths: dict[str, Path] = {"labels": out / "labels.csv"}
    paths["labels"].write_text("id,name\n" + "".join(f"{i},{c.name}\n" for i, c in enumerate(cls_list)))
    for split, count in (("train", videos_per_class), ("val", n_val)):
        frame_lines, video_lines = [], []
        for label, cls in enumerate(cls_list):
            for k in range(count):
                vid = f"{split}_{k:03d}"
                imgs = render_video(cls, frames, size, _video_seed(seed, split, label, k))
                rel = f"{cls.slug}/{vid}"
                if fmt in ("frames", "both"):
                    folder = out / "frames" / rel
                    folder.mkdir(parents=True, exist_ok=True)
                    for t, arr in enumerate(imgs):
                        Image.fromarray(arr).save(folder / IMAGE_TMPL.format(t + 1), quality=95)
                    frame_lines.append(f"{rel} {frames} {label}\n")
                if fmt in ("video", "both"):
                    write_mp4(out / "videos" / f"{rel}.mp4", imgs)
                    video_lines.append(f"{rel}.mp4 {label}\n")
        if frame_lines:
            paths[split] = out / f"{split}.txt"
            paths[split].write_text("".join(frame_lines))
        if video_lines:
            paths[f"{split}_video"] = out / f"{split}_video.txt"
            paths[f"{split}_video"].write_text("".join(video_lines))
    return paths


def main(argv: list[str] | None = None) -> None:
    p = cli_parser("python -m datasets.synthetic", __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--classes",
        type=int,
        default=None,
        help=f"number of classes (1..{MAX_CLASSES}; default 10, or every class of --motions)",
    )
    p.add_argument(
        "--motions",
        default=None,
        help=f"comma-separated pair kinds, one per object ({', '.join(MOTIONS)}); default: each object's own motion",
    )
    p.add_argument("--videos-per-class", type=int, default=24, help="training videos per class")
    p.add_argument(
        "--val-videos-per-class",
        type=int,
        default=None,
        help="validation videos per class (default: videos-per-class // 3, at least 1)",
    )
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--size", type=int, default=128, help="frame height and width in pixels")
    p.add_argument(
        "--format",
        default="both",
        choices=("frames", "video", "both"),
        help="frame folders (JPEG), video files (mp4), or both",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (same seed, same bytes)")
    a = p.parse_args(argv)
    motions = a.motions.split(",") if a.motions else None
    classes = a.classes if a.classes is not None or motions else 10
    paths = generate(
        a.out,
        classes=ClassChoice(classes, motions),
        videos_per_class=a.videos_per_class,
        val_videos_per_class=a.val_videos_per_class,
        frames=a.frames,
        size=a.size,
        fmt=a.format,
        seed=a.seed,
    )
    for key, path in paths.items():
        print(f"{key}: {path}")


if __name__ == "__main__":
    run_cli(main)
