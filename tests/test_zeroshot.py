"""The zero-shot protocols of utils.zeroshot_scores: half-class selections equal the original's algorithm,
label re-indexing keeps classes without videos, and the report equals a direct computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from utils.evaluate import EvalOutput
from utils.similarity import class_probabilities as class_scores
from utils.zeroshot_scores import half_class_splits, restrict_to_classes, zero_shot_report


def make_output(n: int, num_classes: int, dim: int = 6, seed: int = 0) -> tuple[EvalOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randn(num_classes, dim, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    emb = classes[labels] + 0.9 * torch.randn(n, dim, generator=g)  # noisy: some errors
    return EvalOutput(emb, labels, torch.arange(n), seconds=1.0), classes


@pytest.mark.parametrize("num_classes", [101, 51, 200, 7])
def test_half_class_splits_equal_original_algorithm(num_classes):
    np.random.seed(12345)
    before = np.random.rand()
    np.random.seed(12345)
    splits = half_class_splits(num_classes)
    assert np.random.rand() == before  # the global RNG is left as it was
    assert len(splits) == 10
    for s, got in enumerate(splits):
        np.random.seed(s)
        np.testing.assert_array_equal(got, np.random.permutation(num_classes)[: num_classes // 2])


def test_restrict_keeps_class_without_video_and_reindexes():
    out, classes = make_output(6, 7)
    out.labels = torch.tensor([0, 2, 5, 2, 6, 0])
    sub, emb = restrict_to_classes(out, classes, [6, 1, 2])  # class 1 has no video
    assert sub.indices.tolist() == [1, 3, 4]
    assert sub.labels.tolist() == [1, 1, 2]  # positions in the sorted selection (1, 2, 6)
    torch.testing.assert_close(emb, classes[[1, 2, 6]])
    torch.testing.assert_close(sub.scores(emb), class_scores(out.embeddings[[1, 3, 4]], emb))
    assert len(out) == 6  # the input is not modified


def test_zero_shot_report_matches_direct_computation():
    c = 9
    out, classes = make_output(60, c)
    rep = zero_shot_report(out, classes)
    full = class_scores(out.embeddings, classes).argmax(1)
    assert rep["full_classes"]["top1_correct"] == int((full == out.labels).sum())
    top1, top5 = [], []
    for s in range(10):
        np.random.seed(s)
        cls = np.sort(np.random.permutation(c)[: c // 2])
        keep = np.isin(out.labels.numpy(), cls)
        sc = class_scores(out.embeddings[keep], classes[cls]).numpy()
        lab = np.searchsorted(cls, out.labels.numpy()[keep])
        top1.append(100 * float((sc.argmax(1) == lab).mean()))
        top5.append(100 * float((np.argsort(-sc, 1)[:, :5] == lab[:, None]).any(1).mean()))
        assert rep["half_classes"]["splits"][s]["classes"] == cls.tolist()
        assert rep["half_classes"]["splits"][s]["num_videos"] == int(keep.sum())
    half = rep["half_classes"]
    assert half["top1_mean"] == pytest.approx(np.mean(top1)) and half["top1_std"] == pytest.approx(np.std(top1))
    assert half["top5_mean"] == pytest.approx(np.mean(top5)) and half["top5_std"] == pytest.approx(np.std(top5))
    assert half["top1_std"] > 0  # the splits differ


def test_score_fusion_is_restricted_per_view():
    """With --fuse scores, a restricted class set renormalises each view's softmax over the kept classes."""
    out, classes = make_output(5, 6)
    views = torch.randn(5, 3, 6)
    out.view_embeddings, out.fuse = views, "scores"
    out.labels = torch.tensor([1, 3, 5, 1, 0])
    sub, emb = restrict_to_classes(out, classes, [5, 1, 3])
    kept = classes[[1, 3, 5]]
    per_view = torch.stack([class_scores(views[:4, v], kept) for v in range(3)], 1).mean(1)
    torch.testing.assert_close(sub.scores(emb), per_view)
    assert not torch.allclose(per_view, class_scores(views[:4].mean(1), kept))  # differs from embedding fusion


@pytest.mark.parametrize("num_classes", [2, 3])
def test_half_classes_below_four_classes_warns(num_classes):
    """One class per split: 100 ± 0 % whatever the embeddings, so the report says why."""
    out, classes = make_output(12, num_classes)
    with pytest.warns(UserWarning, match=f"half-classes protocol on {num_classes} classes: each split holds 1 class"):
        rep = zero_shot_report(out, classes)
    half = rep["half_classes"]
    assert half["top1_mean"] == 100.0 and half["top1_std"] == 0.0
    assert half["warning"].startswith(f"half-classes protocol on {num_classes} classes")
    assert "the full-classes numbers stand" in half["warning"]


def test_half_classes_from_four_classes_do_not_warn():
    out, classes = make_output(12, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = zero_shot_report(out, classes)
    assert "warning" not in rep["half_classes"]
