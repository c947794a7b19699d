"""Zero-shot evaluation (UCF101 / HMDB51 / ActivityNet / Kinetics-600) in every protocol of the literature.

    python test_zeroshot.py --config configs/ucf101/ucf_zero_shot.yaml --weights k400-vitl-14-f8.pt --protocol all
    python test_zeroshot.py --config configs/k600/k600_zero_shot_split1.yaml --weights W.pt --protocol splits
    bash scripts/run_test_zeroshot.sh configs/hmdb51/hmdb_zero_shot.yaml k400-vitl-14-f8.pt --protocol all

Protocols (`--protocol`, several allowed; default `full half` as the original's script):
* full: top-1/top-5 over all C classes of the label CSV, on the config's list;
* half: 10 repetitions; repetition s seeds numpy's legacy global generator with s, keeps the
  classes `np.random.permutation(C)[:C // 2]`, the videos of those classes, re-indexes the labels
  to positions in the sorted selection and restricts the classifier to those rows; mean ±
  population std of top-1 and top-5. A selected class with no video stays in the restricted
  classifier (the original dropped it and shifted the labels after it:
  docs/evaluation.md#zero-shot-test_zeroshotpy-every-protocol-in-one-command);
* splits: full classes on each official test split (`--splits`; default UCF101 / HMDB51
  `lists/<dataset>/val_rgb_split_{1,2,3}.txt`, Kinetics-600 the three 160-class split configs),
  mean ± population std;
* all: the three.
One report, `<output>/results.json`, holds every number, the templates and the views.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from utils.choices import ZEROSHOT_PROTOCOLS
from utils.cli import add_eval_args, cli_parser
from utils.errors import run_cli


def log_report(log: Callable[[str], None], report: dict, num_classes: int) -> None:
    """Every number of the report, one line each (results.json holds them all)."""
    if "full_classes" in report:
        full = report["full_classes"]
        log(
            f"Full classes ({num_classes}): Top1 {full['top1']:.3f}% Top5 {full['top5']:.3f}% "
            f"({full['num_videos']} videos)"
        )
    if "half_classes" in report:
        half = report["half_classes"]
        for s in half["splits"]:
            log(f"  half split {s['seed']}: {s['num_videos']} videos, Top1 {s['top1']:.3f}% Top5 {s['top5']:.3f}%")
        log(
            f"Half classes ({half['classes_per_split']} x {half['repeats']}): "
            f"Top1 {half['top1_mean']:.3f} ± {half['top1_std']:.3f}% "
            f"Top5 {half['top5_mean']:.3f} ± {half['top5_std']:.3f}%"
        )
    if "splits" in report:
        splits = report["splits"]
        for s in splits["per_split"]:
            log(
                f"  test split {s['split']}: {s['num_videos']} videos, {s['num_classes']} classes, "
                f"Top1 {s['top1']:.3f}% Top5 {s['top5']:.3f}% ({s['videos_from']})"
            )
        log(
            f"Official splits ({len(splits['per_split'])}): Top1 {splits['top1_mean']:.3f} ± "
            f"{splits['top1_std']:.3f}% Top5 {splits['top5_mean']:.3f} ± {splits['top5_std']:.3f}%"
        )
    log(f"templates: {report['templates']}")


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("test_zeroshot.py", __doc__.split("\n\n")[0])
    add_eval_args(parser)
    parser.add_argument(
        "--protocol",
        nargs="+",
        default=["full", "half"],
        choices=[*ZEROSHOT_PROTOCOLS, "all"],
        help="zero-shot protocols to report",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        default=None,
        metavar="LIST_OR_CONFIG",
        help="official test splits: list files (the config's classes) or configs (their own "
        "list and label CSV); default: the shipped splits of data.dataset",
    )
    parser.add_argument("--repeats", type=int, default=10, help="half-classes repetitions (seeds 0..N-1)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # torch and open_clip: seconds to import, so only once the command line is known to be good
    from app.eval_run import EvalRun
    from app.zeroshot_run import default_split_specs, resolve_protocols, resolve_splits, run_protocols

    protocols = resolve_protocols(args.protocol)
    splits = [str(Path(s).resolve()) for s in args.splits] if args.splits else None
    options = {"protocols": protocols, "splits": splits, "repeats": args.repeats}
    run = EvalRun(args, "test_zeroshot", options, tag="zs-" + "-".join(protocols))
    try:
        split_specs = args.splits
        if "splits" in protocols:  # refused now, before the model and data, not after the other protocols
            split_specs = args.splits or default_split_specs(str(run.cfg.data.dataset))
            resolve_splits(split_specs, run.cfg, list(args.opts))
        run.build()
        with warnings.catch_warnings(record=True) as caught:  # into the run's log (log.txt) instead
            warnings.simplefilter("always")
            report, main_out = run_protocols(run, protocols, split_specs, args.repeats)
        if run.dist.is_main:
            path = run.write_json("results.json", {**run.header(), **report})
            log_report(run.log.info, report, len(run.class_names))
            for w in caught:
                run.log.warning(f"warning: {w.message}")
            run.log.info(f"results: {path}")
            if args.save_predictions and main_out is not None:
                scores = main_out.scores(run.class_embeddings(), run.scale())
                run.log.info(f"predictions: {run.save_predictions(main_out, scores)}")
            from app.report import after_run

            after_run(run.output, "test_zeroshot.py", run.cfg.logging.report)
    finally:
        run.close()


if __name__ == "__main__":
    run_cli(main)
