"""YAML configs with the original's key names, checked against a schema that has a default for
every key.

`load_config(path, opts)` returns a `DotMap` (attribute access, as the original) holding every
key of `SCHEMA`, with the file's values and the `--opts key=value` overrides applied. An unknown
key, a value of the wrong type or a value outside its choices raises `UserError` naming the key,
the file and the closest valid key.

Run `python -m utils.config CFG [--opts k=v ...]` to print the resolved config, or
`python -m utils.config --keys-markdown` for the table of keys used in the README
(`--update-readme README.md` rewrites it there).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotmap import DotMap

from utils.choices import CLASSIFIERS, CONTRASTIVE_LOSSES, LOSS_TYPES, SIM_HEADERS, TEMPORAL_MODULES
from utils.cli import cli_parser
from utils.errors import UserError, run_cli


@dataclass(frozen=True)
class Key:
    """One config key: its default, the YAML types it accepts and what it means."""

    default: Any
    types: tuple[type, ...]
    doc: str
    choices: tuple[Any, ...] | None = None
    nullable: bool = False


def _k(default, types, doc, choices=None, nullable=None) -> Key:
    types = types if isinstance(types, tuple) else (types,)
    if nullable is None:
        nullable = default is None
    return Key(default, types, doc, tuple(choices) if choices else None, nullable)


NUM = (int, float)
BOOL_OR_STR = (bool, str)

SCHEMA: dict[str, Any] = {
    "seed": _k(1024, int, "Base seed; rank r seeds torch, numpy and `random` with seed + r."),
    "resume": _k(None, str, "Checkpoint to continue from exactly (model, optimiser, scheduler, "
                 "scaler, RNG, epoch), or `auto` for the newest `last_model.pt` in the output folder."),
    "pretrain": _k(None, str, "Checkpoint whose model weights initialise training (ours or the "
                   "original's layout); nothing else is restored."),
    "data": {
        "dataset": _k("k400", str, "Dataset name: used in the output folder and the class-embedding cache name."),
        "modality": _k("RGB", str, "`RGB` = frame folders, `video` = video files.", choices=("RGB", "video")),
        "num_segments": _k(8, int, "T, frames sampled per clip."),
        "seg_length": _k(1, int, "Frames per segment; only 1 is supported (the original ignored other values).",
                         choices=(1,)),
        "batch_size": _k(32, int, "Clips per process (per GPU) for training and validation."),
        "workers": _k(4, int, "DataLoader worker processes per process."),
        "num_classes": _k(None, int, "Expected number of classes; checked against the label CSV when set."),
        "image_tmpl": _k("img_{:05d}.jpg", str, "Frame file name template, formatted with the frame index."),
        "index_bias": _k(1, int, "Index of the first frame file (1 as the original: `img_00001.jpg`)."),
        "train_root": _k("", str, "Folder prepended to the paths of the training list."),
        "val_root": _k("", str, "Folder prepended to the paths of the validation/test list."),
        "train_list": _k("", str, "Training annotation list (frames: `dir num_frames label`; video: `file label`)."),
        "val_list": _k("", str, "Validation/test annotation list."),
        "label_list": _k("", str, "Class-name CSV with header `id,name`; row i is class i."),
        "input_size": _k(224, int, "Crop size fed to the model."),
        "scale_size": _k(None, (int, list), "Short side before cropping, or [H, W] to resize every frame to "
                         "that size (the original's `something` datasets: [240, 320]); default 256 when "
                         "input_size is 224, else input_size (as the original)."),
        "random_shift": _k(True, bool, "Random frame within each segment for training (False: first frame)."),
        "dense": _k(False, bool, "Dense sampling (128-frame window, stride 128 // T) instead of segments."),
        "shot": _k(None, int, "Few-shot: K training videos per class, chosen with the seed."),
        "min_frames": _k(8, int, "Training and train-time validation drop videos whose list gives fewer "
                         "frames (as the original); test.py keeps all videos."),
        "num_frames_from": _k("dir", str, "Frame count of a frame folder: `dir` counts files (as the original), "
                              "`list` trusts the list (no directory listing per sample).", choices=("dir", "list")),
        "decoder": _k("auto", str, "Video decoder: `auto` (the best installed: torchcodec, then decord, then PyAV), "
                      "`torchcodec`, `decord`, `pyav`. All give the same pixels (docs/data.md).",
                      choices=("auto", "torchcodec", "decord", "pyav")),
        "decode_device": _k("cpu", str, "`cuda` decodes videos with NVDEC (torchcodec) in the main process "
                            "(the loader then runs without worker processes).", choices=("cpu", "cuda")),
        "transform_device": _k("cpu", str, "`cuda`: the loader yields decoded clips with their random parameters "
                               "and the crop/resize/flip/colour transforms run batched on the GPU "
                               "(`datasets.device_transforms`), with the same draws as on the CPU.",
                               choices=("cpu", "cuda")),
        "format": _k("files", str, "`files`: the lists' frame folders or videos; `shards`: tar shards written by "
                     "`python -m datasets.shards` (data.train_shards / data.val_shards).", choices=("files", "shards")),
        "train_shards": _k("", str, "`format: shards`: the training shards' index (`*.json` written with them), "
                           "a path or URL; shard URLs in it are relative to it."),
        "val_shards": _k("", str, "`format: shards`: the validation/test shards' index."),
        "shuffle_buffer": _k(128, int, "`format: shards`: samples each loader worker shuffles among (besides the "
                             "per-epoch shard order); 0 keeps the shard order. Range 0-100000."),
        "on_bad_sample": _k("error", str, "A sample that cannot be read: `error` stops with its path; `skip` logs "
                            "it and uses another sample deterministically.", choices=("error", "skip")),
        "max_bad_samples": _k(None, int, "With `skip`: stop once more samples than this failed "
                              "(default 0.1 % of the dataset, at least 1)."),
        "randaug": {
            "N": _k(2, int, "RandAugment: number of operations."),
            "M": _k(9, int, "RandAugment: magnitude."),
            "enable": _k(False, bool, "Apply RandAugment(N, M) before the crop. The original's code ignored "
                         "`randaug`; its released K400 logs used it."),
        },
        "randaug_per_frame": _k(True, bool, "RandAugment draws its operations per frame (as the released logs) "
                                "instead of once per clip."),
        "flip_prob": _k(0.5, float, "Probability of a horizontal flip of the whole clip."),
        "grayscale_prob": _k(0.2, float, "Probability of turning the whole clip to grayscale."),
        "color_jitter_prob": _k(0.0, float, "Probability of colour jitter (brightness .4, contrast .4, "
                                "saturation .2, hue .1) on the clip."),
        "blur_prob": _k(0.0, float, "Probability of Gaussian blur (sigma 0.1-2.0) on the clip."),
        "solarize_prob": _k(0.0, float, "Probability of solarization (threshold 128) on the clip."),
        "train_crop": _k("random_resized", str, "`random_resized` (CLIP/Inception crop, as the original) or "
                         "`multiscale` (TSN multi-scale crop used for `something` datasets).",
                         choices=("random_resized", "multiscale")),
        "flip_label_map": _k(None, dict, "Labels swapped by a horizontal flip (`{86: 87, 87: 86}` for "
                             "Something-Something); empty = labels unchanged."),
        "metric": _k("top1", str, "Main validation metric: `top1`, or `mAP` (ActivityNet).", choices=("top1", "mAP")),
    },
    "network": {
        "arch": _k("ViT-B/32", str, "CLIP architecture: `RN50`, `ViT-B/32`, `ViT-B/16`, `ViT-L/14`, `ViT-L/14-336px`, "
                   "or a tiny test model (`tiny`)."),
        "pretrained": _k("openai", str, "open_clip pretrained tag, a local weights file, or `none` for random "
                         "weights."),
        "init": _k(True, bool, "Load all CLIP weights (True) or only the visual encoder's (False)."),
        "tm": _k(False, BOOL_OR_STR, "In-backbone temporal module: False, `tsm`, `tokenshift`, `tokent1d`.",
                 choices=TEMPORAL_MODULES),
        "joint_st": _k(False, bool, "Joint space-time attention over all frames (the fusion head is bypassed)."),
        "drop_out": _k(0.0, float, "Maximum stochastic-depth and attention-dropout rate, linear over depth."),
        "emb_dropout": _k(0.0, float, "Dropout after the patch and position embeddings."),
        "sim_header": _k("Transf", str, "Temporal fusion head: `None`/`meanP` (mean), `Transf`, `Conv_1D`, "
                         "`LSTM`, `Transf_cls`.", choices=SIM_HEADERS),
        "type": _k(None, str, "Ignored name tag kept from the original configs (e.g. `clip_k400`)."),
        "drop": _k(0, NUM, "Ignored; kept from the original configs."),
        "fix_text": _k(True, bool, "Class embeddings frozen (True) or a trainable parameter (False); with "
                       "`text_tower` the text tower is frozen (True) or fine-tuned at `lr × clip_ratio` (False)."),
        "text_tower": _k(None, bool, "Keep CLIP's text tower in the model and encode the class prompts with it "
                         "at every step, as the original's train_nce.py (class embeddings recomputed from it at "
                         "every validation); null = only when `solver.loss_type` needs it (NCE, DS)."),
        "fix_video": _k(False, bool, "Freeze the visual encoder (only the head and logit scale train)."),
        "classifier": _k("text", str, "Class-embedding source: `text`, `random`, `orthogonal`, `lda`, `file`.",
                         choices=CLASSIFIERS),
        "classifier_file": _k(None, str, "(C, D) tensor file for `classifier: lda` or `file`."),
        "n_emb": _k(None, int, "Width of `random`/`orthogonal` class embeddings (default: the CLIP embedding width)."),
        "templates": _k("a video of a person {}.", (str, list),
                        "Prompt template, a list of templates whose embeddings are averaged, or `kinetics28`."),
        "text_cache": _k(".cache/text_feats", str, "Folder for cached class embeddings (keyed by arch, weights "
                         "and class list); empty string disables the cache."),
        "grad_checkpointing": _k(False, bool, "Recompute each visual block in backward to save memory."),
        "eval_logit_scale": _k(100.0, float, "Scale of the cosine logits at evaluation (100 as the original); "
                               "null uses the learned logit_scale."),
    },
    "solver": {
        "type": _k("cosine", str, "LR schedule: `cosine` or `multistep`, both after a linear warm-up.",
                   choices=("cosine", "multistep")),
        "epochs": _k(30, int, "Training epochs."),
        "start_epoch": _k(0, int, "First epoch (a resumed run takes it from the checkpoint)."),
        "epoch_offset": _k(0, int, "Ignored; kept from the original configs."),
        "optim": _k("adamw", str, "Optimiser; the original's train.py always used AdamW.", choices=("adamw",)),
        "lr": _k(5.0e-5, float, "Base LR of the new modules (fusion head)."),
        "clip_ratio": _k(0.1, float, "LR multiplier for the visual encoder and logit_scale."),
        "lr_warmup_step": _k(5, NUM, "Linear warm-up length in epochs."),
        "lr_decay_step": _k(15, (int, list), "`multistep`: epoch interval or list of milestones."),
        "lr_decay_factor": _k(0.1, float, "`multistep`: LR factor at each milestone."),
        "lr_step_every": _k(10, int, "Iterations between LR updates (10 as the original; 1 = every iteration)."),
        "weight_decay": _k(0.2, float, "AdamW weight decay."),
        "no_decay_norm_bias": _k(False, bool, "Exclude biases, norms, embeddings and logit_scale from weight decay."),
        "betas": _k([0.9, 0.999], list, "AdamW betas (the released models may have used [0.9, 0.98])."),
        "eps": _k(1.0e-8, float, "AdamW epsilon."),
        "momentum": _k(0.9, float, "Ignored (SGD was used only by the original's contrastive baseline)."),
        "loss_type": _k("CE", str, "`CE`: cross-entropy over the classes (train.py); `NCE` / `DS`: the video-text "
                        "contrastive KL loss of the original's train_nce.py over the batch (DS with dual softmax).",
                        choices=LOSS_TYPES),
        "evaluate": _k(False, bool, "Validate once and exit."),
        "grad_accumulation_steps": _k(1, int, "Batches accumulated per optimiser step."),
        "clip_grad_norm": _k(None, float, "Clip the gradient norm to this value (off by default)."),
        "compile": _k(False, bool, "torch.compile the visual encoder and temporal head "
                      "(`utils.compile.compile_model`); the first steps are slower while it compiles."),
    },
    "logging": {
        "print_freq": _k(10, int, "Iterations between log lines."),
        "eval_freq": _k(1, int, "Epochs between validations (and checkpoints)."),
        "tensorboard": _k(False, bool, "Write TensorBoard scalars (needs the tensorboard package)."),
        "data_wait_alarm": _k(0.1, float, "Warn (naming the remedy) when waiting for data takes more than this "
                              "fraction of the training step time; 0 disables. Range 0-1."),
    },
}

RENAMED = {"data.video_backend": "data.decoder"}


# Valid ranges of the numeric keys, checked at load: (lowest, highest), None = unbounded; a key
# listed in OPEN_ABOVE must stay strictly below its highest value.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.num_segments": (1, None), "data.batch_size": (1, None), "data.workers": (0, None),
    "data.num_classes": (1, None), "data.index_bias": (0, None), "data.input_size": (1, None),
    "data.scale_size": (1, None), "data.shot": (1, None), "data.min_frames": (0, None),
    "data.max_bad_samples": (0, None), "data.randaug.N": (0, None), "data.randaug.M": (0, 30),
    "data.flip_prob": (0, 1), "data.grayscale_prob": (0, 1), "data.color_jitter_prob": (0, 1),
    "data.blur_prob": (0, 1), "data.solarize_prob": (0, 1),
    "network.drop_out": (0, 1), "network.emb_dropout": (0, 1), "network.n_emb": (1, None),
    "network.eval_logit_scale": (0, None),
    "solver.epochs": (1, None), "solver.start_epoch": (0, None), "solver.lr": (0, None),
    "solver.clip_ratio": (0, None), "solver.lr_warmup_step": (0, None), "solver.lr_decay_factor": (0, None),
    "solver.lr_step_every": (1, None), "solver.weight_decay": (0, None), "solver.eps": (0, None),
    "solver.grad_accumulation_steps": (1, None), "solver.clip_grad_norm": (0, None),
    "logging.print_freq": (0, None), "logging.eval_freq": (1, None),
}
OPEN_ABOVE = {"network.drop_out", "network.emb_dropout"}
POSITIVE = {"network.eval_logit_scale", "solver.eps", "solver.clip_grad_norm", "solver.lr_decay_factor"}

# Keys a resumed run may change: they do not change what the checkpoint's training did (where the
# data lies, logging, speed) or they extend it (solver.epochs). Any other difference is refused.
RESUME_MAY_CHANGE = frozenset({
    "resume", "pretrain", "solver.epochs", "solver.evaluate", "data.workers", "data.train_root", "data.val_root",
    "data.on_bad_sample", "data.max_bad_samples", "network.text_cache", "network.pretrained",
    "logging.print_freq", "logging.eval_freq", "logging.tensorboard",
})


def flatten(tree: dict, is_section: Callable[[str], bool] | None = None, prefix: str = "") -> dict[str, Any]:
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


FLAT_SCHEMA: dict[str, Key] = flatten(SCHEMA)
SECTIONS = {k for k, v in SCHEMA.items() if isinstance(v, dict)} | {
    f"data.{k}" for k, v in SCHEMA["data"].items() if isinstance(v, dict)}


def defaults() -> dict:
    def build(schema: dict) -> dict:
        return {k: build(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}
    return build(SCHEMA)


def _closest(key: str) -> str:
    """'; did you mean X?': a key with the same last name in another section first (a key put in
    the wrong section, e.g. top-level `lr` -> `solver.lr`), else the closest spelling."""
    candidates = list(FLAT_SCHEMA) + sorted(SECTIONS)
    leaf = key.rsplit(".", 1)[-1]
    match = [c for c in FLAT_SCHEMA if c.rsplit(".", 1)[-1] == leaf][:1]
    if not match:
        match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:
        match = [c for c in FLAT_SCHEMA if difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1]], cutoff=0.8)][:1]
    return f"; did you mean '{match[0]}'?" if match else ""


def _check_range(key: str, value: Any, where: str) -> None:
    lo, hi = RANGES.get(key, (None, None))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low_ok = lo is None or (value > lo if key in POSITIVE else value >= lo)
    high_ok = hi is None or (value < hi if key in OPEN_ABOVE else value <= hi)
    if not (low_ok and high_ok):
        raise UserError(f"{where}: key '{key}' has value {value!r}; it must be {_range_text(key)}")


def _range_text(key: str) -> str:
    lo, hi = RANGES[key]
    low = f"{'>' if key in POSITIVE else '>='} {lo:g}" if lo is not None else ""
    high = f"{'<' if key in OPEN_ABOVE else '<='} {hi:g}" if hi is not None else ""
    return " and ".join(p for p in (low, high) if p)


def _check_value(key: str, value: Any, where: str) -> Any:
    spec = FLAT_SCHEMA[key]
    if value is None:
        if spec.nullable:
            return None
        raise UserError(f"{where}: key '{key}' may not be empty (expected {_type_names(spec)})")
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok and float in spec.types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok and float in spec.types and isinstance(value, str):
        with contextlib.suppress(ValueError):  # PyYAML reads `5.e-5` as a float but `5e-5` as a string
            value, ok = float(value), True
    if not ok and spec.types == (str,) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value, ok = str(value), True
    if not ok:
        raise UserError(f"{where}: key '{key}' has value {value!r} of type {type(value).__name__}; "
                        f"expected {_type_names(spec)}")
    if spec.choices is not None and value not in spec.choices:
        raise UserError(f"{where}: key '{key}' has value {value!r}; choose one of "
                        f"{', '.join(repr(c) for c in spec.choices)}")
    _check_range(key, value, where)
    return value


def _type_names(spec: Key) -> str:
    names = " or ".join(t.__name__ for t in spec.types)
    return names + (" or null" if spec.nullable else "")


def _merge(base: dict, update: dict, where: str, prefix: str = "") -> None:
    if not isinstance(update, dict):
        raise UserError(f"{where}: section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {update!r}")
    for name, value in update.items():
        key = f"{prefix}{name}"
        if key in SECTIONS:
            if value is None:
                continue
            _merge(base[name], value, where, key + ".")
        elif key in FLAT_SCHEMA:
            base[name] = _check_value(key, value, where)
        elif key in RENAMED:
            raise UserError(f"{where}: config key '{key}' is now '{RENAMED[key]}'")
        else:
            raise UserError(f"{where}: unknown config key '{key}'{_closest(key)}")


def parse_opts(opts: Sequence[str] | None) -> list[tuple[str, Any]]:
    """`key=value` strings → (dotted key, YAML-typed value)."""
    pairs = []
    for item in opts or []:
        if "=" not in item:
            raise UserError(f"--opts: '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise UserError(f"--opts: cannot parse the value of '{key}': {err}") from None
        pairs.append((key.strip(), value))
    return pairs


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--opts: '{key}' goes through a key that is not a section")
    node[parts[-1]] = value


def resolve(raw: dict | None, where: str, opts: Sequence[str] | None = None) -> dict:
    """Schema defaults ← file values ← `--opts` overrides, all checked; returns a plain dict."""
    cfg = defaults()
    _merge(cfg, raw or {}, where)
    overrides: dict = {}
    for key, value in parse_opts(opts):
        _set_dotted(overrides, key, value)
    _merge(cfg, overrides, f"--opts (over {where})")
    _check_consistency(cfg, where)
    return cfg


def _check_consistency(cfg: dict, where: str) -> None:
    if cfg["network"]["classifier"] in ("lda", "file") and not cfg["network"]["classifier_file"]:
        raise UserError(f"{where}: network.classifier '{cfg['network']['classifier']}' needs "
                        f"network.classifier_file")
    _check_text_tower(cfg, where)
    if cfg["solver"]["grad_accumulation_steps"] < 1:
        raise UserError(f"{where}: solver.grad_accumulation_steps must be >= 1")
    betas = cfg["solver"]["betas"]
    if len(betas) != 2 or not all(isinstance(b, (int, float)) for b in betas):
        raise UserError(f"{where}: solver.betas must be two numbers, got {betas!r}")
    if not 0 <= cfg["data"]["shuffle_buffer"] <= 100000:
        raise UserError(f"{where}: data.shuffle_buffer must be 0-100000, got {cfg['data']['shuffle_buffer']}")
    if not 0.0 <= cfg["logging"]["data_wait_alarm"] <= 1.0:
        raise UserError(f"{where}: logging.data_wait_alarm must be 0-1, got {cfg['logging']['data_wait_alarm']}")
    if cfg["data"]["format"] == "shards" and cfg["data"]["shot"]:
        raise UserError(f"{where}: data.shot (few-shot) needs data.format: files")
    data = cfg["data"]
    if data["scale_size"] is None:
        data["scale_size"] = 256 if data["input_size"] == 224 else data["input_size"]
    scale = data["scale_size"]
    if isinstance(scale, list) and (len(scale) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               and v >= 1 for v in scale)):
        raise UserError(f"{where}: data.scale_size must be a short side or [H, W] (two positive integers), "
                        f"got {scale!r}")
    smallest = min(scale) if isinstance(scale, list) else scale
    if smallest < data["input_size"]:
        raise UserError(f"{where}: data.scale_size {scale!r} is smaller than data.input_size {data['input_size']}: "
                        f"the crops would not fit in the resized frame")


def _check_text_tower(cfg: dict, where: str) -> None:
    """Resolve `network.text_tower: null` from the loss (the recorded config says what ran)."""
    net, loss = cfg["network"], cfg["solver"]["loss_type"]
    if net["text_tower"] is None:
        net["text_tower"] = loss in CONTRASTIVE_LOSSES
    if loss in CONTRASTIVE_LOSSES and not net["text_tower"]:
        raise UserError(f"{where}: solver.loss_type '{loss}' contrasts videos with texts: it needs "
                        f"network.text_tower true (or null)")
    if net["text_tower"] and net["classifier"] != "text":
        raise UserError(f"{where}: network.text_tower encodes the class names: it needs network.classifier "
                        f"'text', not '{net['classifier']}'")


def load_config(path: str | Path, opts: Sequence[str] | None = None) -> DotMap:
    """Read a YAML config, fill defaults, apply overrides and check every key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file (a YAML config was expected)") from None
    if raw is None:
        raise UserError(f"{path}: the config file is empty (start from one of configs/)")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of sections (data:, network:, solver:, ...), "
                        f"not a {type(raw).__name__}")
    return to_dotmap(resolve(raw, str(path), opts))


def resume_differences(recorded: dict, asked: dict) -> tuple[list[str], list[str]]:
    """(refused, allowed) changes between the config a checkpoint was trained with and the config a
    resumed run asks for, as 'key: old -> new' lines; allowed ones are in RESUME_MAY_CHANGE."""
    old = flatten(resolve(recorded, "checkpoint config"), SECTIONS.__contains__)
    new = flatten(asked, SECTIONS.__contains__)
    refused: list[str] = []
    allowed: list[str] = []
    for key in FLAT_SCHEMA:
        if old.get(key) != new.get(key):
            line = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            (allowed if key in RESUME_MAY_CHANGE else refused).append(line)
    return refused, allowed



def to_dotmap(cfg: dict) -> DotMap:
    # _dynamic=False: reading a missing key raises instead of silently returning an empty DotMap.
    return DotMap(cfg, _dynamic=False)


def to_dict(cfg: DotMap | dict) -> dict:
    return cfg.toDict() if isinstance(cfg, DotMap) else copy.deepcopy(cfg)


def dump(cfg: DotMap | dict) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def update_key_table(path: str | Path) -> None:
    """Replace the key table (from its header row to the first line that is not a table row)."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    header = keys_markdown().split("\n")[0]
    if header not in lines:
        raise UserError(f"{path}: no key table (a line '{header}') to replace")
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = keys_markdown().split("\n")
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def keys_markdown() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in FLAT_SCHEMA.items():
        default = "null" if spec.default is None else yaml.safe_dump(spec.default, default_flow_style=True).strip()
        default = default.removesuffix("\n...").strip()
        valid = f" Valid: {_range_text(key)}." if key in RANGES else ""
        rows.append(f"| `{key}` | `{default}` | {spec.doc}{valid} |")
    return "\n".join(rows)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "--cfg", dest="config", required=True, help="YAML config file")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --opts solver.epochs=1 data.batch_size=4")


def main(argv: Iterable[str] | None = None) -> None:
    parser = cli_parser("python -m utils.config", "Print a resolved config.")
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--keys-markdown", action="store_true", help="print the table of every key")
    parser.add_argument("--update-readme", metavar="README", help="replace the key table in this Markdown file")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.update_readme:
        update_key_table(args.update_readme)
        return
    if args.keys_markdown:
        print(keys_markdown())
        return
    if not args.config:
        parser.error("a config file is required")
    print(dump(load_config(args.config, args.opts)), end="")


if __name__ == "__main__":
    run_cli(main)
