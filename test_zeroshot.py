"""Zero-shot evaluation (UCF101 / HMDB51 / ActivityNet): full classes, then the half-classes protocol.

    python test_zeroshot.py --config configs/ucf101/ucf_zero_shot.yaml --weights k400-vitl-14-f8.pt
    bash scripts/run_test_zeroshot.sh configs/hmdb51/hmdb_zero_shot.yaml k400-vitl-14-f8.pt

One pass over the data (utils.evaluate.collect), then on the gathered embeddings:
* full classes: top-1/top-5 over all C classes of the label CSV;
* half classes: 10 repetitions; repetition s seeds numpy's legacy global generator with s, keeps
  the classes `np.random.permutation(C)[:C // 2]`, the videos of those classes, re-indexes the
  labels to positions in the sorted selection and restricts the classifier to those rows;
  reports mean ± population std of top-1 and top-5.
A selected class with no video stays in the restricted classifier (the original dropped it and
shifted the labels after it, SPEC §11.4). Results go to `<output>/results.json`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

from app.eval_run import EvalRun, add_eval_args
from utils.cli import cli_parser
from utils.errors import run_cli
from utils.zeroshot import zero_shot_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli_parser("test_zeroshot.py", __doc__.split("\n\n")[0])
    add_eval_args(parser)
    parser.add_argument("--repeats", type=int, default=10, help="half-classes repetitions (seeds 0..N-1)")
    args = parser.parse_args(argv)
    run = EvalRun(args)
    try:
        run.build()
        out = run.collect()
        scale = run.scale()
        with warnings.catch_warnings(record=True) as caught:  # into the run's log (log.txt) instead
            warnings.simplefilter("always")
            report = zero_shot_report(out, run.class_embeddings(), scale=scale, repeats=args.repeats)
        if run.dist.is_main:
            full, half = report["full_classes"], report["half_classes"]
            n = full["num_videos"]
            results = {**run.header(), "protocol": "full-classes + half-classes", **report,
                       "seconds": out.seconds, "seconds_per_video": out.seconds / n if n else 0.0}
            path = run.write_json("results.json", results)
            run.log.info(f"Full classes ({len(run.class_names)}): Top1 {full['top1']:.3f}% Top5 {full['top5']:.3f}% "
                         f"({n} videos)")
            for s in half["splits"]:
                run.log.info(f"  half split {s['seed']}: {s['num_videos']} videos, Top1 {s['top1']:.3f}% "
                             f"Top5 {s['top5']:.3f}%")
            run.log.info(f"Half classes ({half['classes_per_split']} x {half['repeats']}): "
                         f"Top1 {half['top1_mean']:.3f} ± {half['top1_std']:.3f}% "
                         f"Top5 {half['top5_mean']:.3f} ± {half['top5_std']:.3f}%")
            for w in caught:
                run.log.warning(f"warning: {w.message}")
            run.log.info(f"results: {path}")
            if args.save_predictions:
                scores = out.scores(run.class_embeddings(), scale)
                run.log.info(f"predictions: {run.save_predictions(out, scores)}")
    finally:
        run.close()


if __name__ == "__main__":
    run_cli(main)
