"""Evaluate a checkpoint on the config's validation/test list, single- or multi-view.

    python test.py --config CFG --weights W [--test_crops 3 --test_clips 4]
    torchrun --nproc_per_node=N test.py --config CFG --weights W ...   (bash scripts/run_test.sh)

Views are fused as the original (average of the un-normalised video embeddings over crops x
clips, then cosine x 100; `--fuse scores` averages the per-view softmax instead). Every video is
counted once over all processes. Prints the metrics and writes `<output>/results.json`
(`--save_predictions` adds `predictions.npz` with the per-video class probabilities), and the
per-class analysis: `analysis.json` (per-class top-1 with support, worst classes, most confused
pairs), `per_class.csv`, `per_video.csv`, `confusion.npz`, `confusion.png` and
`per_class_accuracy.png` (`--no_analysis` skips them; docs/after_training.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from utils.cli import add_eval_args, cli_parser
from utils.errors import run_cli

if TYPE_CHECKING:
    from app.eval_run import EvalRun


def log_analysis(run: EvalRun, summary: dict) -> None:
    """The worst classes and most confused pairs in one line, and where the per-class files are."""
    worst = ", ".join(f"{c['name']} {c['top1']:.1f}% (n={c['support']})" for c in summary["worst_classes"][:3])
    pairs = ", ".join(
        f"{p['true_name']} -> {p['predicted_name']} ({p['count']})" for p in summary["most_confused_pairs"][:3]
    )
    if summary["most_confused_pairs"]:
        run.log.info(f"worst classes: {worst}; most confused: {pairs}")
    else:
        run.log.info("every video is classified right (no confused pair)")
    run.log.info(
        f"per-class analysis: {run.output}/ analysis.json, per_class.csv, per_video.csv, "
        f"confusion.npz, confusion.png, per_class_accuracy.png"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("test.py", __doc__.split("\n\n")[0])
    add_eval_args(parser)
    parser.add_argument(
        "--metric",
        default=None,
        choices=("top1", "map"),
        help="also report ActivityNet mAP with `map` (default: data.metric of the config)",
    )
    parser.add_argument(
        "--no_analysis",
        action="store_true",
        help="skip the per-class files (analysis.json, per_class.csv, per_video.csv, confusion.npz, "
        "confusion.png, per_class_accuracy.png)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # torch and open_clip: seconds to import, so only once the command line is known to be good
    from app.eval_run import EvalRun
    from utils.metrics import classification_report

    run = EvalRun(args, "test", {"metric": args.metric})
    try:
        run.build()
        out = run.collect()
        with_map = (args.metric or run.cfg.data.metric).lower() == "map"
        scores = out.scores(run.class_embeddings(), run.scale())
        report = classification_report(scores, out.labels, with_map=with_map)
        n = report["num_videos"]
        if n != len(run.dataset):
            raise RuntimeError(f"evaluated {n} videos but the dataset has {len(run.dataset)}")
        report.update(seconds=out.seconds, seconds_per_video=out.seconds / n if n else 0.0)
        if run.dist.is_main:
            results = {**run.header(), **report}
            path = run.write_json("results.json", results)
            line = (
                f"Overall Prec@1 {report['top1']:.3f}% Prec@5 {report['top5']:.3f}% "
                f"mean class acc {report['mean_class_accuracy']:.3f}%"
            )
            if with_map:
                line += f" mAP {report['mAP']:.3f}%"
                if report["mAP_classes_without_videos"]:
                    run.log.warning(
                        f"{report['mAP_classes_without_videos']} classes have no video in the list; "
                        f"each counts as AP 0 in the mAP (torchnet's convention)"
                    )
            run.log.info(line)
            run.log.info(
                f"{n} videos, {run.views} views each, {report['seconds_per_video']:.4f} s/video; results: {path}"
            )
            if args.save_predictions:
                run.log.info(f"predictions: {run.save_predictions(out, scores)}")
            if not args.no_analysis and n:
                log_analysis(run, run.write_analysis(out, scores))
            from app.report import after_run

            after_run(run.output, "test.py", run.cfg.logging.report)
    finally:
        run.close()


if __name__ == "__main__":
    run_cli(main)
