"""utils.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, top_k_accuracy_score

from utils.metrics import (
    average_precision_per_class,
    classification_report,
    mean_average_precision,
    mean_class_accuracy,
    topk_accuracy,
    topk_correct,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n, c = 97, 13
    labels = rng.integers(0, c, n)
    labels[:c] = np.arange(c)  # every class has a positive (sklearn's macro AP needs it)
    scores = torch.from_numpy(rng.random((n, c))).softmax(dim=1).numpy()
    expected = 100 * average_precision_score(np.eye(c)[labels], scores, average="macro")
    assert mean_average_precision(scores, labels) == pytest.approx(expected, abs=1e-10)
    per_class = average_precision_per_class(scores, np.eye(c)[labels]).numpy()
    np.testing.assert_allclose(per_class, average_precision_score(np.eye(c)[labels], scores, average=None), atol=1e-12)


def test_map_hand_computed_and_zero_positive_class():
    # class 0: positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; class 1: positive at rank 2 -> 1/2;
    # class 2 has no positive video: AP 0 (torchnet), still counted in the mean.
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.5, 0.3, 0.2]])
    labels = np.array([0, 0, 1])
    ap = average_precision_per_class(scores, np.eye(3)[labels]).numpy()
    # class 1 scores: 0.8 (video 1, label 0), 0.3 (video 2, label 1), 0.1 -> positive at rank 2
    np.testing.assert_allclose(ap, [(1 + 2 / 3) / 2, 1 / 2, 0.0])
    assert mean_average_precision(scores, labels) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 3)


def test_map_ties_broken_by_video_order():
    scores = np.array([[0.5, 0.5], [0.5, 0.5]])
    labels = np.array([1, 0])
    # class 0: both tie; stable order puts video 0 (negative) first -> AP 1/2; class 1: AP 1.
    np.testing.assert_allclose(average_precision_per_class(scores, np.eye(2)[labels]).numpy(), [0.5, 1.0])


def test_topk_against_sklearn_and_exact_counts():
    rng = np.random.default_rng(3)
    n, c = 61, 9
    scores = rng.random((n, c))
    labels = rng.integers(0, c, n)
    counts = topk_correct(scores, labels, (1, 5))
    for k in (1, 5):
        assert counts[k] == round(top_k_accuracy_score(labels, scores, k=k, labels=range(c), normalize=False))
    acc = topk_accuracy(torch.from_numpy(scores), torch.from_numpy(labels), (1, 5))
    assert acc[1] == pytest.approx(100 * counts[1] / n)
    assert topk_correct(scores[:, :3], np.minimum(labels, 2), (5,))[5] == n  # k capped at C


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_mean_class_accuracy_skips_absent_classes():
    rng = np.random.default_rng(4)
    scores = rng.random((40, 6))
    labels = rng.integers(0, 5, 40)  # class 5 never occurs
    expected = 100 * balanced_accuracy_score(labels, scores.argmax(1))
    assert mean_class_accuracy(scores, labels) == pytest.approx(expected)


def test_report_fields():
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    rep = classification_report(scores, labels, with_map=True)
    assert rep["top1_correct"] == 2 and rep["num_videos"] == 3
    assert rep["top1"] == pytest.approx(200 / 3)
    assert rep["mean_class_accuracy"] == pytest.approx(75.0)
    assert "mAP" in rep and "mAP" not in classification_report(scores, labels)
    assert rep["mAP_classes_without_videos"] == 0
    three = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    rep3 = classification_report(three, np.array([0, 1]), with_map=True)
    assert rep3["mAP_classes_without_videos"] == 1 and rep3["mAP"] == pytest.approx(200 / 3)
