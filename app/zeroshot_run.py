"""The zero-shot protocols of test_zeroshot.py over one EvalRun
(docs/evaluation.md#zero-shot-test_zeroshotpy-every-protocol-in-one-command):

* `full`: top-1/top-5 over every class of the config's label CSV, on its list;
* `half`: the original's 10 random half-class splits of the same pass (utils.zeroshot_scores);
* `splits`: the official test splits, full classes each, mean ± population std over them:
  UCF101 / HMDB51 `lists/<dataset>/val_rgb_split_{1,2,3}.txt` (the config's classes), Kinetics-600
  `configs/k600/k600_zero_shot_split{1,2,3}.yaml` (160 classes each, its own list and label CSV).
  A split is a list file (the config's classes) or a config file (its own `data.val_list` and
  `data.label_list`; the command's `--opts` apply to it too).

A split whose videos were all in the full pass (UCF101 / HMDB51: the `*_full_for_zeroshot.txt`
lists hold every split video) is taken from it by path, without a second pass; any other split
gets a pass of its own. Every video counts once in each number, over all processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.eval_run import EvalRun
from app.load_weights import load_model
from datasets.data_builder import read_class_names
from datasets.lists import read_list
from modules.classifier import resolve_templates
from utils.choices import ZEROSHOT_PROTOCOLS
from utils.config import Config, load_config, replace
from utils.distributed import rank_zero_first
from utils.errors import UserError
from utils.evaluate import EvalOutput, class_embeddings_of
from utils.metrics import classification_report
from utils.zeroshot_scores import mean_std, zero_shot_report

PROTOCOLS = ZEROSHOT_PROTOCOLS
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPLITS = {
    "ucf101": [f"lists/ucf101/val_rgb_split_{i}.txt" for i in (1, 2, 3)],
    "hmdb51": [f"lists/hmdb51/val_rgb_split_{i}.txt" for i in (1, 2, 3)],
    "k600": [f"configs/k600/k600_zero_shot_split{i}.yaml" for i in (1, 2, 3)],
}


@dataclass
class Split:
    """One official test split: what the user named, and the config that describes its data."""

    spec: str
    cfg: Config


def resolve_protocols(names: list[str]) -> list[str]:
    """`all` = every protocol; the order is always full, half, splits."""
    chosen = set(PROTOCOLS) if "all" in names else set(names)
    return [p for p in PROTOCOLS if p in chosen]


def default_split_specs(dataset: str) -> list[str]:
    """The shipped split files of `dataset` (absolute paths under the repository)."""
    if dataset not in DEFAULT_SPLITS:
        raise UserError(
            f"--protocol splits: no official splits are known for data.dataset '{dataset}' "
            f"(known: {', '.join(DEFAULT_SPLITS)}); name them with --splits LIST_OR_CONFIG ..."
        )
    return [str(ROOT / s) for s in DEFAULT_SPLITS[dataset]]


def resolve_splits(specs: list[str], cfg: Config, opts: list[str]) -> list[Split]:
    """A list file takes the config's classes; a YAML config brings its own list and label CSV."""
    splits = []
    for spec in specs:
        if spec.endswith((".yaml", ".yml")):
            split_cfg = replace(load_config(spec, opts), network=cfg.network)  # the model being tested
        else:
            if not Path(spec).is_file():
                raise UserError(f"--splits: list file not found: {spec}")
            split_cfg = replace(cfg, **{"data.val_list": spec})
        splits.append(Split(spec, split_cfg))
    return splits


def _subset_by_path(run: EvalRun, main: EvalOutput, split: Split) -> EvalOutput | None:
    """The split's videos taken from the main pass when every one of them is there with the same
    label (same class list), else None."""
    if read_class_names(split.cfg.data) != run.class_names:
        return None
    records = read_list(split.cfg.data.val_list, len(run.class_names))
    where = {run.dataset.records[int(i)].path: n for n, i in enumerate(main.indices)}
    rows = []
    for rec in dict.fromkeys((r.path, r.label) for r in records):
        n = where.get(rec[0])
        if n is None or int(main.labels[n]) != rec[1]:
            return None
        rows.append(n)
    mask = torch.zeros(len(main), dtype=torch.bool)
    mask[rows] = True
    return main.subset(mask)


def _own_pass(run: EvalRun, split: Split) -> tuple[EvalOutput, torch.Tensor]:
    """A pass over the split's list, with class embeddings of the split's classes."""
    names = read_class_names(split.cfg.data)
    model = run.model
    if names != run.class_names:
        with rank_zero_first():
            model = load_model(
                run.weights,
                cfg=split.cfg,
                class_names=names,
                device=run.dist.device,
                trusted_pickles=run.args.trust_pickle,
            ).model
    return run.collect(split.cfg, model, f"zero-shot split {Path(split.spec).name}"), class_embeddings_of(model)


def split_reports(run: EvalRun, main: EvalOutput | None, splits: list[Split], scale: float) -> dict[str, Any]:
    """Full-class top-1/top-5 on every split, and their mean ± population std."""
    per_split = []
    for split in splits:
        out = _subset_by_path(run, main, split) if main is not None else None
        source = "subset of the full pass"
        if out is None:
            out, emb = _own_pass(run, split)
            source = "own pass"
        else:
            emb = run.class_embeddings()
        rep = classification_report(out.scores(emb, scale), out.labels)
        per_split.append(
            {
                "split": split.spec,
                "list": str(split.cfg.data.val_list),
                "label_list": str(split.cfg.data.label_list),
                "num_classes": int(emb.shape[0]),
                "videos_from": source,
                **{k: rep[k] for k in ("num_videos", "top1", "top5", "mean_class_accuracy")},
            }
        )
    return {
        "protocol": "official test splits, full classes each",
        "std": "population (ddof 0)",
        **mean_std(per_split),
        "per_split": per_split,
    }


def run_protocols(
    run: EvalRun, protocols: list[str], split_specs: list[str] | None, repeats: int
) -> tuple[dict[str, Any], EvalOutput | None]:
    """Every requested number in one report (and the main pass, for --save_predictions)."""
    scale = run.scale()
    report: dict[str, Any] = {
        "protocols": protocols,
        "templates": resolve_templates(run.cfg.network.templates),
        "eval_logit_scale": scale,
    }
    main = None
    if "full" in protocols or "half" in protocols:
        main = run.collect(label="zero-shot")
        both = zero_shot_report(main, run.class_embeddings(), scale=scale, repeats=repeats)
        if "full" in protocols:
            report["full_classes"] = both["full_classes"]
        if "half" in protocols:
            report["half_classes"] = both["half_classes"]
        report["seconds"] = main.seconds
    if "splits" in protocols:
        specs = split_specs or default_split_specs(str(run.cfg.data.dataset))
        report["splits"] = split_reports(run, main, resolve_splits(specs, run.cfg, list(run.args.opts)), scale)
    return report, main
