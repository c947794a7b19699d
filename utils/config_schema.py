"""The config schema, written once as frozen dataclasses: one per section, each field with its
type, default, meaning, choices and valid range (docs/config.md says why dataclasses).

Everything else is derived from these classes: `SCHEMA` / `FLAT_SCHEMA` (each key's default,
accepted YAML types and doc, which `utils.config` checks against and the README's key table is
generated from), `RANGES` / `OPEN_ABOVE` / `POSITIVE` / `EACH` (the numeric checks), `SECTIONS`.
Also here: keys renamed since earlier versions and the keys a resumed run may change.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from utils.choices import CLASSIFIERS, LOSS_TYPES, SIM_HEADERS, TEMPORAL_MODULES


@dataclass(frozen=True)
class Key:
    """One config key: its default, the YAML types it accepts and what it means."""

    default: Any
    types: tuple[type, ...]
    doc: str
    choices: tuple[Any, ...] | None = None
    nullable: bool = False


def key(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    valid: tuple[float | None, float | None] | None = None,
    open_above: bool = False,
    positive: bool = False,
    each: bool = False,
) -> Any:
    """A config field: `default` (a list or dict is copied for every config), its `doc` (the README
    table's meaning), `choices`, and `valid=(lowest, highest)` (None = unbounded; every float must
    also be finite). `open_above`: strictly below highest; `positive`: strictly above lowest;
    `each`: for a list value the range holds for each element."""
    meta = {"doc": doc, "choices": choices, "valid": valid, "open_above": open_above, "positive": positive}
    meta["each"] = each
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: Callable[[], Any]) -> Any:
    """A nested section (its own dataclass, all defaults)."""
    return field(default_factory=cls, metadata={"section": True})


@dataclass(frozen=True)
class RandAugConfig:
    """RandAugment, applied before the crop when enabled."""

    N: int = key(2, "RandAugment: number of operations.", valid=(0, None))
    M: int = key(9, "RandAugment: magnitude.", valid=(0, 30))
    enable: bool = key(
        False,
        "Apply RandAugment(N, M) before the crop. The original's code ignored `randaug`; its released K400 logs"
        " used it.",
    )


@dataclass(frozen=True)
class DataConfig:
    """What to read and how to sample, crop and augment it."""

    dataset: str = key("k400", "Dataset name: used in the output folder and the class-embedding cache name.")
    modality: str = key("RGB", "`RGB` = frame folders, `video` = video files.", choices=("RGB", "video"))
    num_segments: int = key(8, "T, frames sampled per clip.", valid=(1, None))
    seg_length: int = key(
        1, "Frames per segment; only 1 is supported (the original ignored other values).", choices=(1,)
    )
    batch_size: int = key(32, "Clips per process (per GPU) for training and validation.", valid=(1, None))
    workers: int = key(4, "DataLoader worker processes per process.", valid=(0, None))
    reuse_freed_memory: bool = key(
        True,
        "Loader workers keep freed clip buffers in their heap (glibc mallopt: no fresh pages per clip; up to "
        "20-30 % more clips/s, docs/data.md) at the cost of up to 128 MB of freed memory each.",
    )
    num_classes: int | None = key(
        None, "Expected number of classes; checked against the label CSV when set.", valid=(1, None)
    )
    image_tmpl: str = key("img_{:05d}.jpg", "Frame file name template, formatted with the frame index.")
    index_bias: int = key(1, "Index of the first frame file (1 as the original: `img_00001.jpg`).", valid=(0, None))
    train_root: str = key("", "Folder prepended to the paths of the training list.")
    val_root: str = key("", "Folder prepended to the paths of the validation/test list.")
    train_list: str = key("", "Training annotation list (frames: `dir num_frames label`; video: `file label`).")
    val_list: str = key("", "Validation/test annotation list.")
    label_list: str = key("", "Class-name CSV with header `id,name`; row i is class i.")
    input_size: int = key(224, "Crop size fed to the model.", valid=(1, None))
    scale_size: int | list[int] | None = key(
        None,
        "Short side before cropping, or [H, W] to resize every frame to that size (the original's `something` "
        "datasets: [240, 320]); default 256 when input_size is 224, else input_size (as the original).",
        valid=(1, None),
        each=True,
    )
    random_shift: bool = key(True, "Random frame within each segment for training (False: first frame).")
    dense: bool = key(False, "Dense sampling (128-frame window, stride 128 // T) instead of segments.")
    shot: int | None = key(None, "Few-shot: K training videos per class, chosen with the seed.", valid=(1, None))
    min_frames: int = key(
        8,
        "Training and train-time validation drop videos whose list gives fewer frames (as the original); "
        "test.py keeps all videos.",
        valid=(0, None),
    )
    num_frames_from: str = key(
        "dir",
        "Frame count of a frame folder: `dir` counts files (as the original), `list` trusts the list (no "
        "directory listing per sample).",
        choices=("dir", "list"),
    )
    decoder: str = key(
        "auto",
        "Video decoder: `auto` (the best installed: torchcodec, then decord, then PyAV), `torchcodec`, "
        "`decord`, `pyav`. All give the same pixels (docs/data.md).",
        choices=("auto", "torchcodec", "decord", "pyav"),
    )
    decode_device: str = key(
        "cpu",
        "`cuda` decodes videos with NVDEC (torchcodec) in the main process (the loader then runs without worker"
        " processes).",
        choices=("cpu", "cuda"),
    )
    transform_device: str = key(
        "cpu",
        "`cuda`: the loader yields decoded clips with their random parameters and the crop/resize/flip/colour "
        "transforms run batched on the GPU (`datasets.device_transforms`), with the same draws as on the CPU.",
        choices=("cpu", "cuda"),
    )
    format: str = key(
        "files",
        "`files`: the lists' frame folders or videos; `shards`: tar shards written by `python -m "
        "datasets.shards` (data.train_shards / data.val_shards).",
        choices=("files", "shards"),
    )
    train_shards: str = key(
        "",
        "`format: shards`: the training shards' index (`*.json` written with them), a path or URL; shard URLs "
        "in it are relative to it.",
    )
    val_shards: str = key("", "`format: shards`: the validation/test shards' index.")
    shuffle_buffer: int = key(
        128,
        "`format: shards`: samples each loader worker shuffles among (besides the per-epoch shard order); 0 "
        "keeps the shard order.",
        valid=(0, 100000),
    )
    on_bad_sample: str = key(
        "error",
        "A sample that cannot be read: `error` stops with its path; `skip` logs it and uses another sample "
        "deterministically.",
        choices=("error", "skip"),
    )
    max_bad_samples: int | None = key(
        None,
        "With `skip`: stop once more samples than this failed (default 0.1 % of the dataset, at least 1).",
        valid=(0, None),
    )
    randaug: RandAugConfig = section(RandAugConfig)
    randaug_per_frame: bool = key(
        True, "RandAugment draws its operations per frame (as the released logs) instead of once per clip."
    )
    flip_prob: float = key(0.5, "Probability of a horizontal flip of the whole clip.", valid=(0, 1))
    grayscale_prob: float = key(0.2, "Probability of turning the whole clip to grayscale.", valid=(0, 1))
    color_jitter_prob: float = key(
        0.0,
        "Probability of colour jitter (brightness .4, contrast .4, saturation .2, hue .1) on the clip.",
        valid=(0, 1),
    )
    blur_prob: float = key(0.0, "Probability of Gaussian blur (sigma 0.1-2.0) on the clip.", valid=(0, 1))
    solarize_prob: float = key(0.0, "Probability of solarization (threshold 128) on the clip.", valid=(0, 1))
    train_crop: str = key(
        "random_resized",
        "`random_resized` (CLIP/Inception crop, as the original) or `multiscale` (TSN multi-scale crop used for"
        " `something` datasets).",
        choices=("random_resized", "multiscale"),
    )
    flip_label_map: dict[int, int] | None = key(
        None,
        "Labels swapped by a horizontal flip (`{86: 87, 87: 86}` for Something-Something); empty = labels unchanged.",
    )
    metric: str = key("top1", "Main validation metric: `top1`, or `mAP` (ActivityNet).", choices=("top1", "mAP"))


@dataclass(frozen=True)
class NetworkConfig:
    """The CLIP backbone, the temporal head and the class embeddings."""

    arch: str = key(
        "ViT-B/32",
        "CLIP architecture: `RN50`, `ViT-B/32`, `ViT-B/16`, `ViT-L/14`, `ViT-L/14-336px`, or a tiny test model "
        "(`tiny`).",
    )
    pretrained: str = key("openai", "open_clip pretrained tag, a local weights file, or `none` for random weights.")
    init: bool = key(True, "Load all CLIP weights (True) or only the visual encoder's (False).")
    tm: bool | str = key(
        False, "In-backbone temporal module: False, `tsm`, `tokenshift`, `tokent1d`.", choices=TEMPORAL_MODULES
    )
    joint_st: bool = key(False, "Joint space-time attention over all frames (the fusion head is bypassed).")
    drop_out: float = key(
        0.0, "Maximum stochastic-depth and attention-dropout rate, linear over depth.", valid=(0, 1), open_above=True
    )
    emb_dropout: float = key(0.0, "Dropout after the patch and position embeddings.", valid=(0, 1), open_above=True)
    sim_header: str = key(
        "Transf",
        "Temporal fusion head: `None`/`meanP` (mean), `Transf`, `Conv_1D`, `LSTM`, `Transf_cls`.",
        choices=SIM_HEADERS,
    )
    type: str | None = key(None, "Ignored name tag kept from the original configs (e.g. `clip_k400`).")
    drop: int | float = key(0, "Ignored; kept from the original configs.", valid=(0, 1), open_above=True)
    fix_text: bool = key(
        True,
        "Class embeddings frozen (True) or a trainable parameter (False); with `text_tower` the text tower is "
        "frozen (True) or fine-tuned at `lr × clip_ratio` (False).",
    )
    text_tower: bool | None = key(
        None,
        "Keep CLIP's text tower in the model and encode the class prompts with it at every step, as the "
        "original's train_nce.py (class embeddings recomputed from it at every validation); null = only when "
        "`solver.loss_type` needs it (NCE, DS).",
    )
    fix_video: bool = key(False, "Freeze the visual encoder (only the head and logit scale train).")
    classifier: str = key(
        "text", "Class-embedding source: `text`, `random`, `orthogonal`, `lda`, `file`.", choices=CLASSIFIERS
    )
    classifier_file: str | None = key(None, "(C, D) tensor file for `classifier: lda` or `file`.")
    n_emb: int | None = key(
        None, "Width of `random`/`orthogonal` class embeddings (default: the CLIP embedding width).", valid=(1, None)
    )
    templates: str | list[str] = key(
        "a video of a person {}.",
        "Prompt template, a list of templates whose embeddings are averaged, or `kinetics28`.",
    )
    text_cache: str = key(
        ".cache/text_feats",
        "Folder for cached class embeddings (keyed by arch, weights and class list); empty string disables the cache.",
    )
    grad_checkpointing: bool = key(False, "Recompute each visual block in backward to save memory.")
    eval_logit_scale: float = key(
        100.0,
        "Scale of the cosine logits at evaluation (100 as the original); null uses the learned logit_scale.",
        valid=(0, None),
        positive=True,
    )


@dataclass(frozen=True)
class SolverConfig:
    """Optimiser, LR schedule, loss and training-loop settings."""

    type: str = key(
        "cosine", "LR schedule: `cosine` or `multistep`, both after a linear warm-up.", choices=("cosine", "multistep")
    )
    epochs: int = key(30, "Training epochs.", valid=(1, None))
    start_epoch: int = key(
        0, "First epoch, below `epochs` (a resumed run takes it from the checkpoint).", valid=(0, None)
    )
    epoch_offset: int = key(0, "Ignored; kept from the original configs.", valid=(0, None))
    optim: str = key("adamw", "Optimiser; the original's train.py always used AdamW.", choices=("adamw",))
    lr: float = key(
        5e-05,
        "Base LR of the new modules (fusion head). AdamW moves each weight by about the LR per step, so above 1"
        " no run trains.",
        valid=(0, 1),
    )
    clip_ratio: float = key(0.1, "LR multiplier for the visual encoder and logit_scale.", valid=(0, 10))
    lr_warmup_step: int | float = key(5, "Linear warm-up length in epochs.", valid=(0, None))
    lr_decay_step: int | list[int] = key(
        15, "`multistep`: epoch interval or list of milestones.", valid=(1, None), each=True
    )
    lr_decay_factor: float = key(0.1, "`multistep`: LR factor at each milestone.", valid=(0, 1), positive=True)
    lr_step_every: int = key(
        10, "Iterations between LR updates (10 as the original; 1 = every iteration).", valid=(1, None)
    )
    weight_decay: float = key(0.2, "AdamW weight decay.", valid=(0, None))
    no_decay_norm_bias: bool = key(False, "Exclude biases, norms, embeddings and logit_scale from weight decay.")
    betas: list[float] = key(
        [0.9, 0.999],
        "AdamW betas, two numbers (the released models may have used [0.9, 0.98]).",
        valid=(0, 1),
        open_above=True,
        each=True,
    )
    eps: float = key(1e-08, "AdamW epsilon.", valid=(0, None), positive=True)
    momentum: float = key(0.9, "Ignored (SGD was used only by the original's contrastive baseline).", valid=(0, 1))
    loss_type: str = key(
        "CE",
        "`CE`: cross-entropy over the classes (train.py); `NCE` / `DS`: the video-text contrastive KL loss of "
        "the original's train_nce.py over the batch (DS with dual softmax).",
        choices=LOSS_TYPES,
    )
    evaluate: bool = key(False, "Validate once and exit.")
    grad_accumulation_steps: int = key(1, "Batches accumulated per optimiser step.", valid=(1, None))
    clip_grad_norm: float | None = key(
        None, "Clip the gradient norm to this value (off by default).", valid=(0, None), positive=True
    )
    skip_nonfinite: int = key(
        0,
        "Steps with a non-finite loss or gradient a run may skip in all (each logged and counted in "
        "metrics.csv's `nonfinite_skipped`) before it stops; 0 stops at the first. With fp16 `amp` the loss "
        "scaler's own skipped steps do not count.",
        valid=(0, None),
    )
    compile: bool = key(
        False,
        "torch.compile the visual encoder and temporal head (`utils.compile.compile_model`); the first steps "
        "are slower while it compiles.",
    )


@dataclass(frozen=True)
class LoggingConfig:
    """Log lines, validation frequency, TensorBoard and the run report."""

    print_freq: int = key(10, "Iterations between log lines.", valid=(0, None))
    eval_freq: int = key(1, "Epochs between validations (and checkpoints).", valid=(1, None))
    tensorboard: bool = key(False, "Write TensorBoard scalars (needs the tensorboard package).")
    data_wait_alarm: float = key(
        0.1,
        "Warn (naming the remedy) when waiting for data takes more than this fraction of the training step "
        "time; 0 disables.",
        valid=(0, 1),
    )
    report: bool = key(
        True,
        "Write report.html (python -m app.report: one offline page of the run) into the run or results folder "
        "at the end of train.py, test.py and test_zeroshot.py; a failure is one warning line.",
    )


@dataclass(frozen=True)
class Config:
    """A whole resolved config: three top-level keys and one object per section."""

    seed: int = key(1024, "Base seed; rank r seeds torch, numpy and `random` with seed + r.", valid=(0, 2**32 - 1))
    resume: str | None = key(
        None,
        "Checkpoint to continue from exactly (model, optimiser, scheduler, scaler, RNG, epoch), or `auto` for "
        "the newest `last_model.pt` in the output folder.",
    )
    pretrain: str | None = key(
        None,
        "Checkpoint whose model weights initialise training (ours or the original's layout); nothing else is restored.",
    )
    data: DataConfig = section(DataConfig)
    network: NetworkConfig = section(NetworkConfig)
    solver: SolverConfig = section(SolverConfig)
    logging: LoggingConfig = section(LoggingConfig)


RENAMED = {"data.video_backend": "data.decoder"}

# Keys a resumed run may change: they do not change what the checkpoint's training did (where the
# data lies, logging, speed) or they extend it (solver.epochs). Any other difference is refused.
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "pretrain",
        "solver.epochs",
        "solver.evaluate",
        "data.workers",
        "data.train_root",
        "data.val_root",
        "data.on_bad_sample",
        "data.max_bad_samples",
        "network.text_cache",
        "network.pretrained",
        "logging.print_freq",
        "logging.eval_freq",
        "logging.tensorboard",
        "logging.report",
        "solver.skip_nonfinite",
    }
)


def flatten(tree: dict[str, Any], is_section: Callable[[str], bool] | None = None, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}. `is_section(dotted_key)` says which mappings to open (default:
    every dict; a config passes its sections so that dict-valued keys stay whole)."""
    out: dict[str, Any] = {}
    for name, val in tree.items():
        dotted = f"{prefix}{name}"
        if isinstance(val, dict) and (is_section is None or is_section(dotted)):
            out.update(flatten(val, is_section, dotted + "."))
        else:
            out[dotted] = val
    return out


def _accepted(hint: Any) -> tuple[tuple[type, ...], bool]:
    """A field's annotation -> (the YAML types it accepts, in order; whether null is accepted)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    accepted = tuple(typing.get_origin(a) or a for a in args if a is not type(None))
    return accepted, type(None) in args


def _schema(cls: type, prefix: str = "") -> dict[str, Any]:
    """The nested {name: Key or section dict} of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            tree[f.name] = _schema(hints[f.name], f"{prefix}{f.name}.")
            continue
        accepted, nullable = _accepted(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        tree[f.name] = Key(default, accepted, f.metadata["doc"], f.metadata["choices"], nullable)
        dotted = prefix + f.name
        if f.metadata["valid"] is not None:
            RANGES[dotted] = f.metadata["valid"]
        for flag, keys in (("open_above", OPEN_ABOVE), ("positive", POSITIVE), ("each", EACH)):
            if f.metadata[flag]:
                keys.add(dotted)
    return tree


def _sections(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted names of every section (a nested dataclass) in the schema tree."""
    out: set[str] = set()
    for name, val in tree.items():
        if isinstance(val, dict):
            out |= {prefix + name} | _sections(val, f"{prefix}{name}.")
    return out


# Valid ranges of every numeric key, checked at load before anything runs: (lowest, highest), None =
# unbounded. A key in OPEN_ABOVE must stay strictly below its highest value, one in POSITIVE
# strictly above its lowest; for a key in EACH (a list) the range holds for each element.
# `tests/test_config.py` checks that every numeric key has a range.
RANGES: dict[str, tuple[float | None, float | None]] = {}
OPEN_ABOVE: set[str] = set()
POSITIVE: set[str] = set()
EACH: set[str] = set()
SCHEMA: dict[str, Any] = _schema(Config)
FLAT_SCHEMA: dict[str, Key] = flatten(SCHEMA)
SECTIONS: set[str] = _sections(SCHEMA)
