"""IJCV `file` classifier: embed class names with any Hugging Face text model (e.g. DistilBERT).

    python -m modules.hf_text_embed --labels lists/kinetics_400_labels.csv \\
        --model distilbert-base-uncased --out distilbert-k400.pt --dim 512 [--template "{}"]

Each prompt (template filled with the class name) is embedded as the attention-masked mean of the
model's last hidden states, giving (C, H). When H differs from the video embedding width D
(`--dim`), the matrix is multiplied by a fixed random H x D matrix with orthonormal rows or
columns (seeded): for H <= D it preserves every cosine exactly, for H > D approximately. Use the
file with `network.classifier: file` and `network.classifier_file: OUT`. Needs `transformers`.
"""

from __future__ import annotations

import argparse

from utils.cli import cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m modules.hf_text_embed", __doc__.split("\n\n")[0])
    parser.add_argument("--labels", required=True, help="label CSV (id,name)")
    parser.add_argument("--model", required=True, help="Hugging Face model name or local folder")
    parser.add_argument("--out", required=True, help="output (C, D) tensor file")
    parser.add_argument("--dim", type=int, default=None, help="D, the video embedding width (512 for ViT-B)")
    parser.add_argument("--template", default="{}", help="prompt template with one '{}' (default: the bare name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the projection matrix")
    parser.add_argument("--device", default="cpu", help="device of the text model")
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

from collections.abc import Sequence

import torch

from datasets.lists import read_label_csv
from utils.checkpoint import save_checkpoint
from utils.errors import UserError, run_cli


def projection_matrix(in_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """(in_dim, out_dim) random matrix with orthonormal columns (in >= out) or rows (in < out)."""
    g = torch.Generator().manual_seed(int(seed))
    big, small = max(in_dim, out_dim), min(in_dim, out_dim)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=g, dtype=torch.float64))  # orthonormal columns
    q = q.float()
    return q if in_dim >= out_dim else q.T


def project(emb: torch.Tensor, dim: int | None, seed: int = 0) -> torch.Tensor:
    """(C, H) -> (C, dim) by `projection_matrix`; unchanged when dim is None or H."""
    if dim is None or dim == emb.shape[1]:
        return emb
    return emb @ projection_matrix(emb.shape[1], dim, seed)


def _load_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(
            "modules.hf_text_embed needs the 'transformers' package: "
            "`.venv/bin/pip install transformers` (and the model files, or network access "
            "to the Hugging Face hub)"
        ) from None
    from transformers import AutoModel, AutoTokenizer

    return AutoModel, AutoTokenizer


@torch.no_grad()
def embed_texts(texts: Sequence[str], model_name: str, device: str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """(N, H) mean-pooled last hidden states of a Hugging Face encoder."""
    AutoModel, AutoTokenizer = _load_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model = AutoModel.from_pretrained(model_name).to(device).eval()
    except OSError as err:
        raise UserError(f"cannot load Hugging Face model '{model_name}': {str(err).splitlines()[0]}") from None
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt").to(
            device
        )
        hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu())
    return torch.cat(out)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.template.count("{}") != 1:
        raise UserError(f"--template {args.template!r} must contain exactly one '{{}}'")
    names = read_label_csv(args.labels)
    emb = embed_texts([args.template.format(n) for n in names], args.model, args.device)
    width = emb.shape[1]
    emb = project(emb, args.dim, args.seed)
    save_checkpoint(emb, args.out)
    how = f", projected from {width}" if emb.shape[1] != width else ""
    print(f"saved {tuple(emb.shape)} class embeddings ({args.model}{how}) to {args.out}")


if __name__ == "__main__":
    run_cli(main)
