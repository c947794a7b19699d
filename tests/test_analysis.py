"""utils.analysis (per-class numbers, exact counts) and utils.plots (legible pictures up to K400's
400 classes), on hand-made and generated score matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import analysis
from utils.metrics import mean_class_accuracy as metrics_mca
from utils.plots import plot_class_accuracy, plot_confusion, plot_timeline

NAMES = ["run", "walk", "jump", "swim"]


def _onehot_scores(pred, c=4):
    s = np.full((len(pred), c), 0.01)
    s[np.arange(len(pred)), pred] = 0.97
    return s


def test_confusion_per_class_pairs_and_worst_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 1, 0])
    scores = _onehot_scores(pred)
    conf = analysis.confusion_matrix(scores, labels)
    assert conf.tolist() == [[1, 2, 0, 0], [1, 1, 0, 0], [1, 1, 2, 0], [0, 0, 0, 0]]
    table = analysis.per_class(scores, labels, k=2)
    assert table["support"].tolist() == [3, 2, 4, 0]
    assert table["top1_correct"].tolist() == [1, 1, 2, 0]
    np.testing.assert_allclose(table["top1"][:3], [100 / 3, 50.0, 50.0])
    assert np.isnan(table["top1"][3])
    assert analysis.mean_class_accuracy(table["top1"]) == pytest.approx(metrics_mca(scores, labels))
    pairs = analysis.most_confused_pairs(conf, k=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [(0, 1, 2), (1, 0, 1), (2, 0, 1)]
    assert pairs[0]["fraction"] == pytest.approx(2 / 3)
    # worst: lowest accuracy; ties (walk and jump at 50 %) -> more videos first; class 3 has none
    assert analysis.worst_classes(table["top1"], table["support"], k=10) == [0, 2, 1]


def test_class_analysis_json_and_per_video_rows():
    labels = torch.tensor([0, 1, 2, 3])
    scores = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.1, 0.7]])
    summary = analysis.class_analysis(scores, labels, NAMES, k=2)
    assert summary["num_videos"] == 4 and summary["classes_without_videos"] == 0
    assert summary["mean_class_accuracy"] == pytest.approx(50.0)
    assert [c["name"] for c in summary["worst_classes"]] == ["walk", "jump", "run", "swim"]
    assert summary["per_class"][1] == {
        "index": 1,
        "name": "walk",
        "support": 1,
        "top1_correct": 0,
        "top1": 0.0,
        "top2": 100.0,
    }
    assert summary["most_confused_pairs"][0]["true_name"] == "walk"
    rows = analysis.per_video_rows(scores, labels, ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], NAMES, k=2)
    assert rows[1] == {
        "id": "b.mp4",
        "label": 1,
        "label_name": "walk",
        "correct": 0,
        "in_topk": 1,
        "label_rank": 2,
        "label_prob": pytest.approx(0.3),
        "pred1": "run",
        "pred1_prob": pytest.approx(0.5),
        "pred2": "walk",
        "pred2_prob": pytest.approx(0.3),
    }
    assert rows[2]["label_rank"] == 2 and rows[2]["in_topk"] == 1 and rows[2]["pred1"] == "swim"
    with pytest.raises(ValueError, match="3 class names for 4 score columns"):
        analysis.class_analysis(scores, labels, NAMES[:3])
    with pytest.raises(ValueError, match="labels must lie in"):
        analysis.confusion_matrix(scores, torch.tensor([0, 1, 2, 9]))


def test_confused_block_keeps_pairs_together():
    rng = np.random.default_rng(0)
    c = 100
    conf = np.diag(rng.integers(5, 10, c))
    conf[10, 11], conf[50, 3], conf[77, 76] = 9, 7, 5
    block = analysis.confused_block(conf, size=6)
    assert block == [10, 11, 50, 3, 77, 76]
    assert analysis.confused_block(conf[:5, :5], size=6) == [0, 1, 2, 3, 4]
    assert len(analysis.confused_block(np.diag(np.arange(1, 101)), size=30)) == 30  # nothing confused


def synthetic_400(seed=0, per_class=20):
    """400 classes, odd classes often predicted as their even neighbour (a K400-sized test picture)."""
    rng = np.random.default_rng(seed)
    c = 400
    labels = np.repeat(np.arange(c), per_class)
    logits = rng.normal(0, 1, (len(labels), c))
    logits[np.arange(len(labels)), labels] += 3.0
    for i in range(1, c, 2):
        logits[labels == i, i - 1] += rng.uniform(0, 4)
    names = [f"class {i} playing an instrument loudly" for i in range(c)]
    return logits, labels, names


def test_pictures_at_400_classes_name_at_most_30(tmp_path):
    import matplotlib.image

    logits, labels, names = synthetic_400()
    conf = analysis.confusion_matrix(logits, labels)
    table = analysis.per_class(logits, labels)
    p1 = plot_confusion(conf, names, tmp_path / "confusion.png")
    p2 = plot_class_accuracy(table["top1"], table["support"], names, tmp_path / "acc.png")
    for p in (p1, p2):
        img = matplotlib.image.imread(p)
        assert 800 <= img.shape[0] <= 2000 and 1200 <= img.shape[1] <= 3000  # big enough to read, not a poster
    small = plot_confusion(conf[:6, :6], names[:6], tmp_path / "six.png")
    assert small is not None and small.stat().st_size > 5000


def test_timeline_picture(tmp_path):
    starts = np.arange(0, 58, 2.0)
    names = ["walk" if s < 20 else "run" if s < 40 else "jump" for s in starts]
    p = plot_timeline(starts, starts + 4, names, np.linspace(0.3, 0.9, len(starts)), tmp_path / "t.png")
    assert p is not None and p.stat().st_size > 5000
