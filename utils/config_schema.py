"""The config schema: every key with its default, accepted types, choices and meaning; the valid
ranges of numeric keys; keys renamed since earlier versions; and the keys a resumed run may change.

Data only (plus `flatten`, which reads it): `utils.config` checks a config against it, and the
README's key table is generated from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


def _k(default, types, doc, choices=None, nullable=None) -> Key:
    types = types if isinstance(types, tuple) else (types,)
    if nullable is None:
        nullable = default is None
    return Key(default, types, doc, tuple(choices) if choices else None, nullable)


NUM = (int, float)
BOOL_OR_STR = (bool, str)

SCHEMA: dict[str, Any] = {
    "seed": _k(1024, int, "Base seed; rank r seeds torch, numpy and `random` with seed + r."),
    "resume": _k(
        None,
        str,
        "Checkpoint to continue from exactly (model, optimiser, scheduler, "
        "scaler, RNG, epoch), or `auto` for the newest `last_model.pt` in the output folder.",
    ),
    "pretrain": _k(
        None,
        str,
        "Checkpoint whose model weights initialise training (ours or the original's layout); nothing else is restored.",
    ),
    "data": {
        "dataset": _k("k400", str, "Dataset name: used in the output folder and the class-embedding cache name."),
        "modality": _k("RGB", str, "`RGB` = frame folders, `video` = video files.", choices=("RGB", "video")),
        "num_segments": _k(8, int, "T, frames sampled per clip."),
        "seg_length": _k(
            1, int, "Frames per segment; only 1 is supported (the original ignored other values).", choices=(1,)
        ),
        "batch_size": _k(32, int, "Clips per process (per GPU) for training and validation."),
        "workers": _k(4, int, "DataLoader worker processes per process."),
        "reuse_freed_memory": _k(
            True,
            bool,
            "Loader workers keep freed clip buffers in their heap (glibc mallopt: no fresh pages "
            "per clip; up to 20-30 % more clips/s, docs/data.md) at the cost of up to 128 MB of freed memory each.",
        ),
        "num_classes": _k(None, int, "Expected number of classes; checked against the label CSV when set."),
        "image_tmpl": _k("img_{:05d}.jpg", str, "Frame file name template, formatted with the frame index."),
        "index_bias": _k(1, int, "Index of the first frame file (1 as the original: `img_00001.jpg`)."),
        "train_root": _k("", str, "Folder prepended to the paths of the training list."),
        "val_root": _k("", str, "Folder prepended to the paths of the validation/test list."),
        "train_list": _k("", str, "Training annotation list (frames: `dir num_frames label`; video: `file label`)."),
        "val_list": _k("", str, "Validation/test annotation list."),
        "label_list": _k("", str, "Class-name CSV with header `id,name`; row i is class i."),
        "input_size": _k(224, int, "Crop size fed to the model."),
        "scale_size": _k(
            None,
            (int, list),
            "Short side before cropping, or [H, W] to resize every frame to "
            "that size (the original's `something` datasets: [240, 320]); default 256 when "
            "input_size is 224, else input_size (as the original).",
        ),
        "random_shift": _k(True, bool, "Random frame within each segment for training (False: first frame)."),
        "dense": _k(False, bool, "Dense sampling (128-frame window, stride 128 // T) instead of segments."),
        "shot": _k(None, int, "Few-shot: K training videos per class, chosen with the seed."),
        "min_frames": _k(
            8,
            int,
            "Training and train-time validation drop videos whose list gives fewer "
            "frames (as the original); test.py keeps all videos.",
        ),
        "num_frames_from": _k(
            "dir",
            str,
            "Frame count of a frame folder: `dir` counts files (as the original), "
            "`list` trusts the list (no directory listing per sample).",
            choices=("dir", "list"),
        ),
        "decoder": _k(
            "auto",
            str,
            "Video decoder: `auto` (the best installed: torchcodec, then decord, then PyAV), "
            "`torchcodec`, `decord`, `pyav`. All give the same pixels (docs/data.md).",
            choices=("auto", "torchcodec", "decord", "pyav"),
        ),
        "decode_device": _k(
            "cpu",
            str,
            "`cuda` decodes videos with NVDEC (torchcodec) in the main process "
            "(the loader then runs without worker processes).",
            choices=("cpu", "cuda"),
        ),
        "transform_device": _k(
            "cpu",
            str,
            "`cuda`: the loader yields decoded clips with their random parameters "
            "and the crop/resize/flip/colour transforms run batched on the GPU "
            "(`datasets.device_transforms`), with the same draws as on the CPU.",
            choices=("cpu", "cuda"),
        ),
        "format": _k(
            "files",
            str,
            "`files`: the lists' frame folders or videos; `shards`: tar shards written by "
            "`python -m datasets.shards` (data.train_shards / data.val_shards).",
            choices=("files", "shards"),
        ),
        "train_shards": _k(
            "",
            str,
            "`format: shards`: the training shards' index (`*.json` written with them), "
            "a path or URL; shard URLs in it are relative to it.",
        ),
        "val_shards": _k("", str, "`format: shards`: the validation/test shards' index."),
        "shuffle_buffer": _k(
            128,
            int,
            "`format: shards`: samples each loader worker shuffles among (besides the "
            "per-epoch shard order); 0 keeps the shard order.",
        ),
        "on_bad_sample": _k(
            "error",
            str,
            "A sample that cannot be read: `error` stops with its path; `skip` logs "
            "it and uses another sample deterministically.",
            choices=("error", "skip"),
        ),
        "max_bad_samples": _k(
            None,
            int,
            "With `skip`: stop once more samples than this failed (default 0.1 % of the dataset, at least 1).",
        ),
        "randaug": {
            "N": _k(2, int, "RandAugment: number of operations."),
            "M": _k(9, int, "RandAugment: magnitude."),
            "enable": _k(
                False,
                bool,
                "Apply RandAugment(N, M) before the crop. The original's code ignored "
                "`randaug`; its released K400 logs used it.",
            ),
        },
        "randaug_per_frame": _k(
            True, bool, "RandAugment draws its operations per frame (as the released logs) instead of once per clip."
        ),
        "flip_prob": _k(0.5, float, "Probability of a horizontal flip of the whole clip."),
        "grayscale_prob": _k(0.2, float, "Probability of turning the whole clip to grayscale."),
        "color_jitter_prob": _k(
            0.0, float, "Probability of colour jitter (brightness .4, contrast .4, saturation .2, hue .1) on the clip."
        ),
        "blur_prob": _k(0.0, float, "Probability of Gaussian blur (sigma 0.1-2.0) on the clip."),
        "solarize_prob": _k(0.0, float, "Probability of solarization (threshold 128) on the clip."),
        "train_crop": _k(
            "random_resized",
            str,
            "`random_resized` (CLIP/Inception crop, as the original) or "
            "`multiscale` (TSN multi-scale crop used for `something` datasets).",
            choices=("random_resized", "multiscale"),
        ),
        "flip_label_map": _k(
            None,
            dict,
            "Labels swapped by a horizontal flip (`{86: 87, 87: 86}` for "
            "Something-Something); empty = labels unchanged.",
        ),
        "metric": _k("top1", str, "Main validation metric: `top1`, or `mAP` (ActivityNet).", choices=("top1", "mAP")),
    },
    "network": {
        "arch": _k(
            "ViT-B/32",
            str,
            "CLIP architecture: `RN50`, `ViT-B/32`, `ViT-B/16`, `ViT-L/14`, `ViT-L/14-336px`, "
            "or a tiny test model (`tiny`).",
        ),
        "pretrained": _k(
            "openai", str, "open_clip pretrained tag, a local weights file, or `none` for random weights."
        ),
        "init": _k(True, bool, "Load all CLIP weights (True) or only the visual encoder's (False)."),
        "tm": _k(
            False,
            BOOL_OR_STR,
            "In-backbone temporal module: False, `tsm`, `tokenshift`, `tokent1d`.",
            choices=TEMPORAL_MODULES,
        ),
        "joint_st": _k(False, bool, "Joint space-time attention over all frames (the fusion head is bypassed)."),
        "drop_out": _k(0.0, float, "Maximum stochastic-depth and attention-dropout rate, linear over depth."),
        "emb_dropout": _k(0.0, float, "Dropout after the patch and position embeddings."),
        "sim_header": _k(
            "Transf",
            str,
            "Temporal fusion head: `None`/`meanP` (mean), `Transf`, `Conv_1D`, `LSTM`, `Transf_cls`.",
            choices=SIM_HEADERS,
        ),
        "type": _k(None, str, "Ignored name tag kept from the original configs (e.g. `clip_k400`)."),
        "drop": _k(0, NUM, "Ignored; kept from the original configs."),
        "fix_text": _k(
            True,
            bool,
            "Class embeddings frozen (True) or a trainable parameter (False); with "
            "`text_tower` the text tower is frozen (True) or fine-tuned at `lr × clip_ratio` (False).",
        ),
        "text_tower": _k(
            None,
            bool,
            "Keep CLIP's text tower in the model and encode the class prompts with it "
            "at every step, as the original's train_nce.py (class embeddings recomputed from it at "
            "every validation); null = only when `solver.loss_type` needs it (NCE, DS).",
        ),
        "fix_video": _k(False, bool, "Freeze the visual encoder (only the head and logit scale train)."),
        "classifier": _k(
            "text", str, "Class-embedding source: `text`, `random`, `orthogonal`, `lda`, `file`.", choices=CLASSIFIERS
        ),
        "classifier_file": _k(None, str, "(C, D) tensor file for `classifier: lda` or `file`."),
        "n_emb": _k(None, int, "Width of `random`/`orthogonal` class embeddings (default: the CLIP embedding width)."),
        "templates": _k(
            "a video of a person {}.",
            (str, list),
            "Prompt template, a list of templates whose embeddings are averaged, or `kinetics28`.",
        ),
        "text_cache": _k(
            ".cache/text_feats",
            str,
            "Folder for cached class embeddings (keyed by arch, weights "
            "and class list); empty string disables the cache.",
        ),
        "grad_checkpointing": _k(False, bool, "Recompute each visual block in backward to save memory."),
        "eval_logit_scale": _k(
            100.0,
            float,
            "Scale of the cosine logits at evaluation (100 as the original); null uses the learned logit_scale.",
        ),
    },
    "solver": {
        "type": _k(
            "cosine",
            str,
            "LR schedule: `cosine` or `multistep`, both after a linear warm-up.",
            choices=("cosine", "multistep"),
        ),
        "epochs": _k(30, int, "Training epochs."),
        "start_epoch": _k(0, int, "First epoch, below `epochs` (a resumed run takes it from the checkpoint)."),
        "epoch_offset": _k(0, int, "Ignored; kept from the original configs."),
        "optim": _k("adamw", str, "Optimiser; the original's train.py always used AdamW.", choices=("adamw",)),
        "lr": _k(
            5.0e-5,
            float,
            "Base LR of the new modules (fusion head). AdamW moves each weight by about the LR per step, "
            "so above 1 no run trains.",
        ),
        "clip_ratio": _k(0.1, float, "LR multiplier for the visual encoder and logit_scale."),
        "lr_warmup_step": _k(5, NUM, "Linear warm-up length in epochs."),
        "lr_decay_step": _k(15, (int, list), "`multistep`: epoch interval or list of milestones."),
        "lr_decay_factor": _k(0.1, float, "`multistep`: LR factor at each milestone."),
        "lr_step_every": _k(10, int, "Iterations between LR updates (10 as the original; 1 = every iteration)."),
        "weight_decay": _k(0.2, float, "AdamW weight decay."),
        "no_decay_norm_bias": _k(False, bool, "Exclude biases, norms, embeddings and logit_scale from weight decay."),
        "betas": _k([0.9, 0.999], list, "AdamW betas, two numbers (the released models may have used [0.9, 0.98])."),
        "eps": _k(1.0e-8, float, "AdamW epsilon."),
        "momentum": _k(0.9, float, "Ignored (SGD was used only by the original's contrastive baseline)."),
        "loss_type": _k(
            "CE",
            str,
            "`CE`: cross-entropy over the classes (train.py); `NCE` / `DS`: the video-text "
            "contrastive KL loss of the original's train_nce.py over the batch (DS with dual softmax).",
            choices=LOSS_TYPES,
        ),
        "evaluate": _k(False, bool, "Validate once and exit."),
        "grad_accumulation_steps": _k(1, int, "Batches accumulated per optimiser step."),
        "clip_grad_norm": _k(None, float, "Clip the gradient norm to this value (off by default)."),
        "skip_nonfinite": _k(
            0,
            int,
            "Steps with a non-finite loss or gradient a run may skip in all (each logged and counted in "
            "metrics.csv's `nonfinite_skipped`) before it stops; 0 stops at the first. With fp16 `amp` the "
            "loss scaler's own skipped steps do not count.",
        ),
        "compile": _k(
            False,
            bool,
            "torch.compile the visual encoder and temporal head "
            "(`utils.compile.compile_model`); the first steps are slower while it compiles.",
        ),
    },
    "logging": {
        "print_freq": _k(10, int, "Iterations between log lines."),
        "eval_freq": _k(1, int, "Epochs between validations (and checkpoints)."),
        "tensorboard": _k(False, bool, "Write TensorBoard scalars (needs the tensorboard package)."),
        "data_wait_alarm": _k(
            0.1,
            float,
            "Warn (naming the remedy) when waiting for data takes more than this "
            "fraction of the training step time; 0 disables.",
        ),
        "report": _k(
            True,
            bool,
            "Write report.html (python -m app.report: one offline page of the run) into the run or results "
            "folder at the end of train.py, test.py and test_zeroshot.py; a failure is one warning line.",
        ),
    },
}

RENAMED = {"data.video_backend": "data.decoder"}


# Valid ranges of every numeric key, checked at load before anything runs: (lowest, highest), None =
# unbounded. Every float must also be finite. A key in OPEN_ABOVE must stay strictly below its
# highest value, one in POSITIVE strictly above its lowest; for a key in EACH (a list) the range
# holds for each element. `tests/test_config.py` checks that every numeric key is listed here.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),
    "data.num_segments": (1, None),
    "data.batch_size": (1, None),
    "data.workers": (0, None),
    "data.num_classes": (1, None),
    "data.index_bias": (0, None),
    "data.input_size": (1, None),
    "data.scale_size": (1, None),
    "data.shot": (1, None),
    "data.min_frames": (0, None),
    "data.shuffle_buffer": (0, 100000),
    "data.max_bad_samples": (0, None),
    "data.randaug.N": (0, None),
    "data.randaug.M": (0, 30),
    "data.flip_prob": (0, 1),
    "data.grayscale_prob": (0, 1),
    "data.color_jitter_prob": (0, 1),
    "data.blur_prob": (0, 1),
    "data.solarize_prob": (0, 1),
    "network.drop_out": (0, 1),
    "network.emb_dropout": (0, 1),
    "network.drop": (0, 1),
    "network.n_emb": (1, None),
    "network.eval_logit_scale": (0, None),
    "solver.epochs": (1, None),
    "solver.start_epoch": (0, None),
    "solver.epoch_offset": (0, None),
    "solver.lr": (0, 1),
    "solver.clip_ratio": (0, 10),
    "solver.lr_warmup_step": (0, None),
    "solver.lr_decay_step": (1, None),
    "solver.lr_decay_factor": (0, 1),
    "solver.lr_step_every": (1, None),
    "solver.weight_decay": (0, None),
    "solver.betas": (0, 1),
    "solver.eps": (0, None),
    "solver.momentum": (0, 1),
    "solver.grad_accumulation_steps": (1, None),
    "solver.clip_grad_norm": (0, None),
    "solver.skip_nonfinite": (0, None),
    "logging.print_freq": (0, None),
    "logging.eval_freq": (1, None),
    "logging.data_wait_alarm": (0, 1),
}
OPEN_ABOVE = {"network.drop_out", "network.emb_dropout", "network.drop", "solver.betas"}
POSITIVE = {"network.eval_logit_scale", "solver.eps", "solver.clip_grad_norm", "solver.lr_decay_factor"}
EACH = {"data.scale_size", "solver.lr_decay_step", "solver.betas"}

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
    f"data.{k}" for k, v in SCHEMA["data"].items() if isinstance(v, dict)
}
