"""IJCV `lda` classifier: class directions fitted by Linear Discriminant Analysis on video features.

    python -m modules.lda --config CFG --weights W --out lda.pt [--shrinkage 0.1] [--opts k=v ...]

runs the model (built from CFG, weights from W: a checkpoint of ours or of the original) over the
*training* list with the deterministic evaluation transform (single centre view), fits sklearn's
`LinearDiscriminantAnalysis` on the un-normalised video embeddings and saves its (C, D)
coefficient matrix. Use it with `network.classifier: lda` and `network.classifier_file: lda.pt`.

The original's file was called `lda_0.1.pt`; how it was made is not in its repository. We read
"0.1" as the LDA shrinkage and use `solver="lsqr", shrinkage=0.1` by default (documented guess).
The rows are the discriminant directions `coef_` (Σ⁻¹ μ_k); the intercepts are dropped because the
model compares directions (cosine) only.
"""
from __future__ import annotations

import argparse
import copy
from typing import Sequence

import numpy as np
import torch

from utils.errors import UserError, run_cli


def fit_lda(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
            shrinkage: float | str | None = 0.1) -> torch.Tensor:
    """(N, D) features and (N,) integer labels 0..C-1 -> (C, D) float32 class directions."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = np.asarray(features.detach().cpu().double() if isinstance(features, torch.Tensor) else features,
                   dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"fit_lda needs (N, D) features and (N,) labels, got {x.shape} and {y.shape}")
    classes = np.unique(y)
    num_classes = int(y.max()) + 1
    if len(classes) != num_classes:
        missing = sorted(set(range(num_classes)) - set(classes.tolist()))
        raise UserError(f"LDA needs at least one training video of every class; none for classes {missing[:10]}")
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)
    lda.fit(x, y)
    coef = lda.coef_
    if num_classes == 2:  # sklearn keeps one direction (class 1 vs 0); give each class its own
        coef = np.concatenate([-coef, coef]) / 2
    return torch.from_numpy(coef).float()


@torch.no_grad()
def extract_features(cfg, weights: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised video embeddings and labels of the training list (one centre view each)."""
    from datasets import build_dataset, build_loader
    from datasets.lists import read_label_csv
    from modules.builder import build_model
    from modules.convert import load_weights, read_checkpoint
    from utils.evaluate import collect

    cfg = copy.deepcopy(cfg)
    class_names = read_label_csv(cfg.data.label_list)
    ckpt = read_checkpoint(weights)  # a bad file or list fails before the model is built
    # the training videos through the deterministic evaluation pipeline
    cfg.data.val_list, cfg.data.val_root = cfg.data.train_list, cfg.data.train_root
    dataset = build_dataset(cfg, "test")
    loader = build_loader(dataset, cfg.data.batch_size, cfg.data.workers, train=False, rank=0,
                          world_size=1, seed=cfg.seed)
    cfg.network.classifier = "random"  # the classifier is not used here; skip the text encoder
    cfg.network.pretrained = "none"  # every visual weight comes from `weights`
    model = build_model(cfg, class_names, device=device)
    load_weights(model, ckpt, strict=True, source=str(weights))
    del ckpt
    out = collect(model, loader, views=1, num_frames=cfg.data.num_segments, device=device)
    return out.embeddings, out.labels


def main(argv: Sequence[str] | None = None) -> None:
    from utils.config import add_config_args, load_config
    from modules.classifier import save_atomic

    parser = argparse.ArgumentParser(prog="python -m modules.lda", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--weights", required=True, help="checkpoint (ours or the original's layout)")
    parser.add_argument("--out", required=True, help="output file, a (C, D) tensor")
    parser.add_argument("--shrinkage", default="0.1", help="LDA shrinkage: a number in [0, 1], 'auto' or 'none'")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    shrink: float | str | None
    shrink = None if args.shrinkage == "none" else ("auto" if args.shrinkage == "auto" else float(args.shrinkage))
    cfg = load_config(args.config, args.opts)
    feats, labels = extract_features(cfg, args.weights, args.device)
    directions = fit_lda(feats, labels, shrinkage=shrink)
    save_atomic(directions, args.out)
    print(f"saved LDA class directions {tuple(directions.shape)} from {len(labels)} videos to {args.out}")


if __name__ == "__main__":
    run_cli(main)
