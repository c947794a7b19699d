"""IJCV `lda` classifier: class directions fitted by Linear Discriminant Analysis on video features.

    python -m app.lda --config CFG --weights W --out lda.pt [--shrinkage 0.1] [--opts k=v ...]
    python -m app.lda --features train_emb.npz --out lda.pt       # from `python -m app.extract --split train`

runs the model (any weights file `app.load_weights.load_model` reads; the config is the checkpoint's
unless `--config` is given) over the *training* list with the deterministic evaluation transform
(single centre view), fits LDA (`modules.lda_directions.fit_lda`) on the un-normalised video embeddings and
saves its (C, D) coefficient matrix. `--features` fits it on the embeddings file of `app.extract`
instead (any number of processes, resumable; rows with label -1 are left out). Use it with `network.classifier: lda` and
`network.classifier_file: lda.pt`.
"""

from __future__ import annotations

import argparse
import math

from utils.choices import DEVICES
from utils.cli import add_allow_pipe_arg, add_config_args, add_trust_arg, cli_parser, help_before_imports


def shrinkage_arg(text: str) -> float | str | None:
    """--shrinkage: a number in [0, 1], 'auto' (Ledoit-Wolf) or 'none'; refused at parsing otherwise."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1], 'auto' or 'none'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m app.lda", __doc__.split("\n\n")[0])
    add_config_args(parser, "YAML config (default: the config stored in our checkpoint)")
    parser.add_argument("--weights", default=None, help="checkpoint (ours or the original's layout)")
    parser.add_argument(
        "--features", default=None, help="embeddings file of python -m app.extract (instead of --weights)"
    )
    parser.add_argument("--out", required=True, help="output file, a (C, D) tensor (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--shrinkage", default=0.1, type=shrinkage_arg, help="LDA shrinkage: a number in [0, 1], 'auto' or 'none'"
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present, else CPU")
    add_trust_arg(parser)
    add_allow_pipe_arg(parser)
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

from collections.abc import Collection, Sequence

import torch

from app.load_weights import input_normalize, load_model, open_weights
from app.outputs import refuse_existing_file
from datasets import build_dataset, config_loader
from datasets.device_transforms import clips_to_device
from datasets.shard_dataset import allowed_pipes, check_sources
from modules.lda_directions import fit_lda
from utils.checkpoint import save_checkpoint
from utils.config import Config, replace
from utils.distributed import select_device
from utils.errors import UserError, run_cli
from utils.evaluate import ViewSet, collect
from utils.progress import Progress, track


@torch.no_grad()
def extract_features(
    cfg: Config,
    weights: str,
    device: torch.device | str = "cpu",
    trusted_pickles: Sequence[str] = (),
    allow_pipe: Collection[str] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised video embeddings and labels of the training list (one centre view each)."""
    wf = open_weights(weights)  # a bad file fails before the data is read
    data = cfg.data  # the test pipeline on the training list (val_shards: data.format shards)
    cfg = replace(cfg, **{"data.val_list": data.train_list, "data.val_root": data.train_root})
    cfg = replace(cfg, **{"data.val_shards": data.train_shards})
    dataset = build_dataset(cfg, "test", allow_pipe=allow_pipe)
    loader = config_loader(dataset, cfg, train=False)
    model = load_model(wf, cfg=cfg, device=device, trusted_pickles=trusted_pickles).model
    with Progress(len(dataset), "lda features", "video") as shown:  # on stderr (utils.progress)
        out = collect(
            model,
            track(loader, shown, size=lambda batch: len(batch[1])),
            ViewSet(1, cfg.data.num_segments, device, input_normalize(model), prepare=clips_to_device(dataset, device)),
        )
    return out.embeddings, out.labels


def read_features(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of an `app.extract` file (rows without a label left out)."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        emb, labels = data["embeddings"], data["labels"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"--features {path}: not an embeddings file of python -m app.extract ({err})") from None
    keep = labels >= 0
    if not keep.any():
        raise UserError(f"--features {path}: no row has a label (extract a list or --split with labels)")
    return torch.from_numpy(emb[keep]).float(), torch.from_numpy(labels[keep]).long()


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if bool(args.weights) == bool(args.features):
        raise UserError("give --weights (features computed here) or --features (a file of python -m app.extract)")
    refuse_existing_file(args.out, "--out", args.overwrite)
    if args.features:
        feats, labels = read_features(args.features)
    else:
        cfg = open_weights(args.weights).config(args.config, args.opts)
        check_sources(cfg.data, args.config or f"{args.weights} (stored config)", allowed_pipes(args))
        device = select_device(args.device)
        feats, labels = extract_features(cfg, args.weights, device, args.trust_pickle, allowed_pipes(args))
    print(f"fitting LDA on {len(labels)} videos of dimension {feats.shape[1]}", flush=True)
    directions = fit_lda(feats, labels, shrinkage=args.shrinkage)
    save_checkpoint(directions, args.out)
    print(f"saved LDA class directions {tuple(directions.shape)} from {len(labels)} videos to {args.out}")


if __name__ == "__main__":
    run_cli(main)
