"""Export a trained model: one self-contained file that every tool loads with no other file.

    python -m app.export --weights W --out model.pt            # checkpoint without training state
    python -m app.export --weights W --out model.ts            # TorchScript (torch.jit.trace)
    python -m app.export --weights W --out model.onnx          # ONNX (torch.onnx, needs the export extra)
    python -m app.export --weights W --format onnx --out F     # the format named, whatever the suffix

`--weights` is any weights file `app.load_weights` reads (ours, a run folder, a converted original with
`--config`). The three formats hold the resolved config, the class names and the class embeddings:
* `pt`: our checkpoint format without optimiser, scheduler, scaler or RNG state;
* `torchscript` / `onnx`: the whole video classifier as one graph, uint8 frames (B, T, 3, S, S)
  in (after the test transform's resize and crop; CLIP normalisation inside), `logits` (B, C) at
  `network.eval_logit_scale` (100, as test.py) and `embeddings` (B, D) out; B is dynamic. The
  metadata is described in `app.exported`. After writing, the export is run on a second input and
  compared with PyTorch; a model whose trace does not reproduce it (Python control flow that
  depends on the input) is refused with a UserError and no file is left.
`predict.py`, `test.py`, `app.extract` and `app.load_weights.load_model` load all three.
"""

from __future__ import annotations

import argparse

from utils.cli import add_config_args, add_trust_arg, cli_parser, help_before_imports

FORMATS = ("pt", "torchscript", "onnx")
TOLERANCE = 1e-3  # max |logit difference| (logits are 100 x cosine) accepted by the check after export


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m app.export", __doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint or run folder (ours, or converted with --config)")
    parser.add_argument("--out", required=True, help="output file (.pt, .ts or .onnx); refused if it exists")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--format", default=None, choices=FORMATS, help="default: from the suffix of --out")
    add_config_args(parser, "YAML config (default: the one stored in the checkpoint)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"max |logit difference| from PyTorch accepted by the check (default {TOLERANCE:g})",
    )
    add_trust_arg(parser)
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.exported import EXTRA_HINT, FORMAT, INPUT, META_KEY, OUTPUTS, VERSION, ExportedModel, encode_array, read_export
from app.load_weights import LoadedModel, load_model, open_weights
from app.outputs import refuse_existing_file
from datasets.transforms import normalize
from modules.video_model import VideoCLIP
from utils.checkpoint import export_state, save_checkpoint
from utils.config import Config, to_dict
from utils.errors import UserError, run_cli
from utils.evaluate import eval_scale
from utils.fileio import atomic_write

SUFFIXES = {
    ".pt": "pt",
    ".pth": "pt",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".jit": "torchscript",
    ".onnx": "onnx",
}
OPSET = 18


class VideoClassifier(nn.Module):
    """The graph that is exported: uint8 frames -> (logits, embeddings)."""

    def __init__(self, model: VideoCLIP, scale: float):
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.encode_video(normalize(frames))
        return self.model.logits_from_embeddings(emb, self.scale), emb


def format_of(out: str | Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"cannot tell the export format from '{Path(out).name}': name it .pt, .ts or .onnx, "
            f"or pass --format {'|'.join(FORMATS)}"
        )
    return SUFFIXES[suffix]


def metadata(loaded: LoadedModel, kind: str, scale: float) -> dict[str, Any]:
    model = loaded.model
    assert isinstance(model, VideoCLIP)
    cfg = loaded.cfg
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "source": str(loaded.weights.path),
        "config": to_dict(cfg),
        "class_names": list(loaded.class_names),
        "num_frames": int(cfg.data.num_segments),
        "input_size": int(cfg.data.input_size),
        "eval_logit_scale": scale,
        "logit_scale": float(model.logit_scale.detach()),
        "input": {INPUT: "uint8 (B, T, 3, S, S) RGB frames after the test transform's resize and crop"},
        "outputs": {
            OUTPUTS[0]: "(B, C) eval_logit_scale * cos(video, class)",
            OUTPUTS[1]: "(B, D) un-normalised video embeddings",
        },
        "class_embeddings": encode_array(model.class_embeddings),
    }


def example_frames(meta: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t, s = meta["num_frames"], meta["input_size"]
    return torch.randint(0, 256, (batch, t, 3, s, s), dtype=torch.uint8, generator=g)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:400]


def _what(cfg: Config) -> str:
    net = cfg.network
    return f"network.sim_header={net.sim_header}, tm={net.tm}, joint_st={net.joint_st}"


def trace_torchscript(graph: VideoClassifier, example: torch.Tensor, cfg: Config) -> torch.jit.ScriptModule:
    try:
        with torch.no_grad(), _quiet():
            return torch.jit.trace(graph, (example,), check_trace=False)
    except Exception as err:  # noqa: BLE001 - the tracer raises many types
        raise UserError(f"cannot trace the model ({_what(cfg)}) to TorchScript: {_first_line(err)}") from None


def export_onnx(graph: VideoClassifier, example: torch.Tensor, cfg: Config, meta: dict[str, Any]) -> bytes:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401  (the check after export runs the file)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(
            f"ONNX export needs onnx, onnxruntime and onnxscript ({err.name} is missing): {EXTRA_HINT}"
        ) from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    log = io.StringIO()
    try:
        with torch.no_grad(), _quiet(log):
            program = torch.onnx.export(
                graph,
                (example,),
                None,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamo=True,
                dynamic_shapes={"frames": {0: batch}},
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # noqa: BLE001 - torch.export and the ONNX translation raise many types
        raise UserError(f"cannot export the model ({_what(cfg)}) to ONNX: {_first_line(err)}") from None
    if program is None:
        raise UserError("torch.onnx.export returned no program")
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet(sink: io.StringIO | None = None) -> Any:
    """The exporters print progress and warnings: keep them out of the user's terminal."""
    sink = sink or io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def verify(
    path: Path, kind: str, graph: VideoClassifier, meta: dict[str, Any], cfg: Config, tolerance: float = TOLERANCE
) -> float:
    """Run the written export on inputs it was not traced with (batch 1 and 3) and compare its logits
    with PyTorch's; returns the max |difference|, a UserError (and no file) above `tolerance`."""
    meta_read, handle = read_export(path, kind)
    exported = ExportedModel(kind, handle, meta_read, torch.zeros(1, 1))
    worst = 0.0
    for batch, seed in ((1, 11), (3, 12)):
        x = example_frames(meta, batch, seed)
        with torch.no_grad():
            want = graph(x)[0]
            got = exported.run(x)[0]
        if got.shape != want.shape:
            worst = float("inf")
            break
        worst = max(worst, float((got - want).abs().max()))
    if not worst <= tolerance:
        path.unlink(missing_ok=True)
        raise UserError(
            f"the {kind} export of this model ({_what(cfg)}) does not reproduce PyTorch on a new input "
            f"(max |logit difference| {worst:.3g} > {tolerance:g}): a part of the model takes a "
            f"different path depending on its input, which tracing cannot record; nothing was written"
        )
    return worst


def export(
    weights: str | Path,
    out: str | Path,
    fmt: str | None = None,
    *,
    config: str | None = None,
    opts: Sequence[str] = (),
    tolerance: float = TOLERANCE,
    trusted_pickles: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the export; returns what was written (format, path, classes, check result)."""
    kind = format_of(out, fmt)
    out = Path(out)
    wf = open_weights(weights)
    if wf.kind != "checkpoint":
        raise UserError(f"{wf.path} is already a {wf.kind} export: export from the checkpoint it was made from")
    cfg = wf.config(config, opts)
    loaded = load_model(wf, cfg=cfg, device="cpu", trusted_pickles=trusted_pickles)
    model = loaded.model
    assert isinstance(model, VideoCLIP)
    if kind == "pt":
        ckpt = wf.content if isinstance(wf.content, dict) else {}
        state = export_state(
            model=model,
            config=to_dict(cfg),
            class_names=loaded.class_names,
            source=str(wf.path),
            epoch=ckpt.get("epoch"),
            best_top1=ckpt.get("best_top1"),
        )
        save_checkpoint(state, out)
        return {"format": kind, "path": str(out), "classes": len(loaded.class_names), "max_abs_diff": 0.0}
    scale = eval_scale(model, cfg.network.eval_logit_scale)
    meta = metadata(loaded, kind, scale)
    graph = VideoClassifier(model, scale).eval()
    example = example_frames(meta, 2, 10)
    if kind == "torchscript":
        traced = trace_torchscript(graph, example, cfg)
        extra = {META_KEY: json.dumps(meta)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 marks TorchScript deprecated
            atomic_write(out, lambda fh: torch.jit.save(traced, fh, _extra_files=extra))
    else:
        data = export_onnx(graph, example, cfg, meta)
        atomic_write(out, lambda fh: fh.write(data))
    diff = verify(out, kind, graph, meta, cfg, tolerance)
    return {"format": kind, "path": str(out), "classes": len(loaded.class_names), "max_abs_diff": diff}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_existing_file(args.out, "--out", args.overwrite)
    done = export(
        args.weights,
        args.out,
        args.format,
        config=args.config,
        opts=args.opts,
        tolerance=args.tolerance,
        trusted_pickles=args.trust_pickle,
    )
    size = os.path.getsize(done["path"]) / 2**20
    check = "" if done["format"] == "pt" else f"; logits match PyTorch within {done['max_abs_diff']:.2g}"
    print(
        f"wrote {done['path']} ({done['format']}, {size:.1f} MiB): weights, config, {done['classes']} class names "
        f"and embeddings{check}. Use it as --weights of predict.py / test.py / app.extract, no other file needed."
    )


if __name__ == "__main__":
    run_cli(main)
