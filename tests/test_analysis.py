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


def synthetic_400(seed=0, per_class=20, c=400):
    """400 classes, odd classes often predicted as their even neighbour (a K400-sized test picture)."""
    rng = np.random.default_rng(seed)
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


@pytest.fixture()
def figures(monkeypatch):
    """The matplotlib figures utils.plots draws (drawn, so ticks are final), still saved as PNG."""
    from utils import plots

    made = []
    save = plots._save

    def keep(fig, plt, path, dpi=100):
        fig.canvas.draw()
        made.append(fig)
        return save(fig, plt, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return made


@pytest.mark.parametrize("epochs", [[0], [0, 1], [0, 1, 2], list(range(30))])
def test_curves_have_whole_epoch_ticks(figures, tmp_path, epochs):
    from utils.plots import plot_curves

    rows = [{"epoch": str(e), "train_loss": 2.0 / (e + 1), "lr": 1e-5, "val_top1": 10.0 + e} for e in epochs]
    assert plot_curves(rows, tmp_path / "curves.png").stat().st_size > 5000
    for ax in figures[0].axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        if len(epochs) <= 3:
            assert ticks == epochs  # every epoch of a short run, nothing in between


def test_every_confusion_panel_has_a_colour_bar(figures, tmp_path):
    logits, labels, names = synthetic_400()
    conf = analysis.confusion_matrix(logits, labels)
    plot_confusion(conf, names, tmp_path / "c400.png")
    plot_confusion(conf[:6, :6], names[:6], tmp_path / "c6.png")
    big, small = figures
    for fig, panels in ((big, 2), (small, 1)):
        images = [im for ax in fig.axes for im in ax.images]
        assert len(images) == panels
        for im in images:
            assert im.colorbar is not None and "fraction of the true class" in im.colorbar.ax.get_ylabel()
    right = big.axes[1].images[0]  # the whole 400-class matrix: square-root scale, bar in fractions
    assert right.norm(np.array([0.25]))[0] == pytest.approx(0.5)


@pytest.mark.parametrize("classes", [8, 400])
def test_per_class_bar_colours_are_explained(figures, tmp_path, classes):
    import matplotlib.colors as mcolors

    logits, labels, names = synthetic_400(c=classes)
    table = analysis.per_class(logits, labels)
    plot_class_accuracy(table["top1"], table["support"], names, tmp_path / "acc.png")
    (fig,) = figures
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1  # one legend for the picture
    explained = {
        mcolors.to_hex(h.get_facecolor()): t.get_text()
        for h, t in zip(legends[0].legend_handles, legends[0].get_texts(), strict=True)
        if hasattr(h, "get_width")
    }
    assert sorted(explained.values()) == ["top-1 < 50 %", "top-1 ≥ 50 %"]
    assert any(t.get_text().startswith("mean class accuracy") for t in legends[0].get_texts())
    used = {mcolors.to_hex(p.get_facecolor()) for ax in fig.axes for p in ax.patches}
    assert used <= set(explained)  # every bar colour is in the legend
    low = {mcolors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches if p.get_width() < 50}
    assert {explained[c] for c in low} == ({"top-1 < 50 %"} if classes == 400 else set())  # 8: all above


@pytest.mark.parametrize("stride", [1.0, 2.0, 4.0])
def test_timeline_band_and_line_are_aligned(figures, tmp_path, stride):
    """Windows of 4 s every `stride` s (overlapping for 1 and 2): each window's band and step
    cover the same stretch, centred on the window's centre (where its dot is)."""
    starts = np.arange(0, 57, stride)
    starts[-1] = 56.0  # the last window moved back to end at 60 s, as plan_windows does
    ends = starts + 4
    names = ["walk" if s < 20 else "run" if s < 40 else "jump" for s in starts]
    probs = np.linspace(0.3, 0.9, len(starts))
    plot_timeline(starts, ends, names, probs, tmp_path / "t.png")
    (fig,) = figures
    band_ax, line_ax = fig.axes
    bands = sorted((p.get_x(), p.get_x() + p.get_width()) for p in band_ax.patches)
    (steps,) = [p for p in line_ax.patches if hasattr(p, "get_data")]
    values, edges, _ = steps.get_data()
    np.testing.assert_allclose([b[0] for b in bands], edges[:-1])
    np.testing.assert_allclose([b[1] for b in bands], edges[1:])
    np.testing.assert_allclose(values, probs)
    dots = line_ax.lines[0].get_xdata()
    mids = (starts + ends) / 2
    np.testing.assert_allclose(dots, mids)
    for (a, b), m in zip(bands[1:-1], mids[1:-1], strict=True):
        assert a < m < b  # the dot lies inside its band
    assert bands[0][0] == 0 and bands[-1][1] == 60  # the whole input, nothing beyond
    assert line_ax.get_xlim() == (0.0, 60.0)
