"""What test.py, test_zeroshot.py and the evaluation tools share: command-line arguments, the
process group, the model from any weights file, the test data, and the output folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.load_weights import input_normalize, load_model, open_weights
from app.outputs import (
    config_identity,
    default_folder,
    file_identity,
    refuse_existing,
    safe_name,
    weights_name,
)
from datasets import build_dataset, config_loader
from datasets.data_builder import read_class_names
from datasets.device_transforms import clips_to_device
from datasets.samplers import ShardSampler
from datasets.shard_dataset import allowed_pipes, check_sources
from utils import analysis, plots
from utils.checkpoint import BEST, LAST
from utils.config import Config
from utils.distributed import cleanup, init_distributed, rank_zero_first
from utils.errors import UserError
from utils.evaluate import EvalOutput, ViewSet, class_embeddings_of, collect, eval_scale
from utils.fileio import atomic_write, atomic_write_text, write_csv
from utils.logger import setup_logger
from utils.precision import resolve_precision
from utils.progress import Progress, track

RESULT_FILES = (
    "results.json",
    "predictions.npz",
    "analysis.json",
    "per_class.csv",
    "per_video.csv",
    "confusion.npz",
    "confusion.png",
    "per_class_accuracy.png",
)


def default_output(config: str, weights: Path, readable: str, identity: dict[str, Any]) -> Path:
    """exp/test/<config>/<weights>_<readable>_<hash of `identity`> (app.outputs); a run's
    model_best.pt / last_model.pt is named with its run folder too."""
    name = weights_name(weights, (BEST, LAST))
    return default_folder(Path("exp") / "test" / safe_name(Path(config).stem), f"{name}_{readable}", identity)


class EvalRun:
    """Config, processes, model, data and output of one evaluation command."""

    def __init__(
        self, args: argparse.Namespace, tool: str = "test", options: dict[str, Any] | None = None, tag: str = ""
    ) -> None:
        """`tool`, `options` (the command's own options that change the numbers) and the rest of the
        evaluation name the default output folder; `tag` is added to its readable part."""
        if args.test_clips < 1:
            raise UserError(f"--test_clips must be >= 1, got {args.test_clips}")
        if args.output:  # before anything is loaded
            refuse_existing(args.output, RESULT_FILES, "--output", args.overwrite)
        self.args = args
        self.weights = open_weights(args.weights)  # fails before any process group or model exists
        self.cfg = self.weights.config(args.config, args.opts)
        check_sources(self.cfg.data, args.config or f"{self.weights.path} (stored config)", allowed_pipes(args))
        self.dense = bool(self.cfg.data.dense if args.dense is None else args.dense)
        self.frames = int(self.cfg.data.num_segments)
        self.views = args.test_crops * args.test_clips
        views = f"{self.frames}x{args.test_crops}x{args.test_clips}" + ("_dense" if self.dense else "")
        identity = {
            "tool": tool,
            "options": options or {},
            "config": config_identity(self.cfg),
            "weights": file_identity(self.weights.path),
            "views": views,
            "fuse": args.fuse,
            "precision": args.precision,
        }
        self.output = (
            Path(args.output)
            if args.output
            else default_output(
                args.config or self.cfg.data.dataset, self.weights.path, views + (f"_{tag}" if tag else ""), identity
            )
        )
        self.dist = init_distributed(device=args.device)
        self.precision = resolve_precision(args.precision, self.dist.device)  # amp/fp16 -> fp32 on CPU
        earlier = [p for p in RESULT_FILES if (self.output / p).exists()]
        if earlier and args.overwrite and self.dist.is_main:  # no earlier file stays beside the new results
            for name in earlier:
                (self.output / name).unlink(missing_ok=True)
        self.log = setup_logger(self.output, self.dist.rank)
        if earlier and not args.output:
            self.log.info(f"{self.output} holds the results of the same evaluation, run before: they are replaced")

    def build(self) -> None:
        cfg, a = self.cfg, self.args
        self.class_names = read_class_names(cfg.data)
        self.dataset, self.loader = self.test_data(cfg)
        with rank_zero_first():  # rank 0 computes (or caches) the class embeddings the others then read
            self.model = load_model(
                self.weights,
                cfg=cfg,
                class_names=self.class_names,
                device=self.dist.device,
                trusted_pickles=self.args.trust_pickle,
            ).model
        self.log.info(
            f"{len(self.dataset)} videos, {len(self.class_names)} classes, views "
            f"{self.frames}x{a.test_crops}x{a.test_clips}{' dense' if self.dense else ''}, "
            f"{self.dist.world_size} process(es) on {self.dist.device}, precision {self.precision}, "
            f"fuse {a.fuse}"
        )

    def test_data(self, cfg: Config) -> tuple[Any, Any]:
        """(dataset, loader) of `cfg`'s test list with this command's views, sharded over the ranks."""
        a = self.args
        dataset = build_dataset(
            cfg, "test", test_crops=a.test_crops, test_clips=a.test_clips, dense=self.dense, allow_pipe=allowed_pipes(a)
        )
        loader = config_loader(dataset, cfg, train=False, rank=self.dist.rank, world_size=self.dist.world_size)
        return dataset, loader

    def collect(
        self, cfg: Config | None = None, model: torch.nn.Module | None = None, label: str = "test"
    ) -> EvalOutput:
        """The engine's pass over the test list (of `cfg`, default the command's) with `model`;
        progress of rank 0's share under `label` (utils.progress: on stderr on a terminal, else
        lines in the log)."""
        dataset, loader = (self.dataset, self.loader) if cfg is None else self.test_data(cfg)
        sampler = getattr(loader, "sampler", None)
        total = len(sampler) if isinstance(sampler, ShardSampler) else -(-len(dataset) // self.dist.world_size)
        if self.dist.world_size > 1:
            label += f" (rank 0 of {self.dist.world_size})"
        with Progress(total, label, "video", write=self.log.info, enabled=self.dist.is_main) as shown:
            return collect(
                model or self.model,
                track(loader, shown, size=lambda batch: len(batch[1])),
                ViewSet(
                    self.views,
                    self.frames,
                    self.dist.device,
                    input_normalize(model or self.model),
                    self.precision,
                    prepare=clips_to_device(dataset, self.dist.device),
                ),
                fuse=self.args.fuse,
            )

    def class_embeddings(self) -> torch.Tensor:
        return class_embeddings_of(self.model)

    def scale(self) -> float:
        return eval_scale(self.model, self.cfg.network.eval_logit_scale)

    def header(self) -> dict[str, Any]:
        a = self.args
        return {
            "config": str(a.config) if a.config else f"{self.weights.path} (stored config)",
            "weights": str(self.weights.path),
            "dataset": self.cfg.data.dataset,
            "arch": self.cfg.network.arch,
            "num_classes": len(self.class_names),
            "frames": self.frames,
            "test_crops": a.test_crops,
            "test_clips": a.test_clips,
            "views": self.views,
            "view_layout": f"{self.frames}x{a.test_crops}x{a.test_clips}",
            "dense": self.dense,
            "fuse": a.fuse,
            "precision": self.precision,
            "world_size": self.dist.world_size,
            "device": str(self.dist.device),
            "opts": list(a.opts),
        }

    def write_json(self, name: str, data: dict) -> Path:
        return atomic_write_text(self.output / name, json.dumps(data, indent=2) + "\n")

    def save_predictions(self, out: EvalOutput, scores: torch.Tensor) -> Path:
        ids = np.array(self.video_ids(out))
        return atomic_write(
            self.output / "predictions.npz",
            lambda fh: np.savez_compressed(
                fh,
                scores=scores.numpy().astype(np.float32),
                labels=out.labels.numpy(),
                indices=out.indices.numpy(),
                video_ids=ids,
                class_names=np.array(self.class_names),
            ),
        )

    def video_ids(self, out: EvalOutput) -> list[str]:
        """The list paths of the output's videos, in its order."""
        return [self.dataset.records[int(i)].path for i in out.indices]

    def write_analysis(self, out: EvalOutput, scores: torch.Tensor, k: int = 5) -> dict[str, Any]:
        """The per-class files (docs/after_training.md): analysis.json, per_class.csv, per_video.csv,
        confusion.npz and the two pictures. Returns the JSON summary."""
        names = self.class_names
        summary = analysis.class_analysis(scores, out.labels, names, k=k)
        conf = analysis.confusion_matrix(scores, out.labels)
        table = analysis.per_class(scores, out.labels, k)
        self.write_json("analysis.json", summary)
        kk = min(k, len(names))
        rows = [{key: ("" if v is None else v) for key, v in c.items()} for c in summary["per_class"]]
        write_csv(self.output / "per_class.csv", rows, ["index", "name", "support", "top1_correct", "top1", f"top{kk}"])
        videos = analysis.per_video_rows(scores, out.labels, self.video_ids(out), names, k)
        write_csv(self.output / "per_video.csv", videos, list(videos[0]) if videos else ["id"])
        atomic_write(
            self.output / "confusion.npz",
            lambda fh: np.savez_compressed(
                fh, counts=conf, class_names=np.array(names), rows="true class", columns="predicted class (top-1)"
            ),
        )
        plots.plot_confusion(conf, names, self.output / "confusion.png")
        plots.plot_class_accuracy(table["top1"], table["support"], names, self.output / "per_class_accuracy.png")
        return summary

    def close(self) -> None:
        cleanup()
