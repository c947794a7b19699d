"""utils.evaluate: view fusion against a hand computation, 2-process gathering (zero-shot: test_zeroshot.py)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from utils.evaluate import ViewSet, collect, evaluate

T, V, S, D, C = 2, 6, 4, 5, 7


class StubVideoModel(torch.nn.Module):
    """encode_video = linear map of the per-channel mean of the clip; known class embeddings."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, D, generator=g))
        self.register_buffer("class_embeddings", torch.randn(C, D, generator=g))
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.0))

    def encode_video(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 5 and x.shape[1] == T and x.dtype == torch.float32
        return x.mean(dim=(1, 3, 4)) @ self.w


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


VIEWS = ViewSet(V, T, "cpu", to_float)  # V views of T frames on the CPU


def make_items(n: int, seed: int = 1) -> list[tuple[torch.Tensor, int, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 256, (V * T, 3, S, S), generator=g, dtype=torch.uint8),
            int(torch.randint(0, C, (1,), generator=g)),
            i,
        )
        for i in range(n)
    ]


def batches(items, batch_size: int, rank: int = 0, world: int = 1):
    mine = items[rank::world]
    out = []
    for s in range(0, len(mine), batch_size):
        chunk = mine[s : s + batch_size]
        out.append(
            (
                torch.stack([c for c, _, _ in chunk]),
                torch.tensor([y for _, y, _ in chunk]),
                torch.tensor([i for _, _, i in chunk]),
            )
        )
    return out


def hand_embedding(model: StubVideoModel, clip: torch.Tensor) -> torch.Tensor:
    """Views are crop-major, then clip, then frame: view v = frames v*T .. v*T+T-1."""
    views = [model.encode_video(to_float(clip[v * T : (v + 1) * T])[None])[0] for v in range(V)]
    return torch.stack(views).mean(0)


def test_fusion_equals_hand_computation():
    model = StubVideoModel()
    items = make_items(5)
    out = collect(model, batches(items, 2)[::-1], VIEWS)
    assert out.indices.tolist() == [0, 1, 2, 3, 4]  # sorted although batches came reversed
    assert out.labels.tolist() == [y for _, y, _ in items]
    with torch.no_grad():
        expected = torch.stack([hand_embedding(model, c) for c, _, _ in items])
        torch.testing.assert_close(out.embeddings, expected, rtol=1e-5, atol=1e-6)
        # original: average un-normalised, then normalise, x100 cosine, softmax
        cos = F.normalize(expected, dim=-1) @ F.normalize(model.class_embeddings, dim=-1).t()
        torch.testing.assert_close(out.scores(model.class_embeddings), (100 * cos).softmax(-1))


def test_score_fusion_averages_view_probabilities():
    model = StubVideoModel()
    items = make_items(3)
    out = collect(model, batches(items, 3), VIEWS, fuse="scores")
    with torch.no_grad():
        clip = items[1][0]
        probs = []
        for v in range(V):
            e = model.encode_video(to_float(clip[v * T : (v + 1) * T])[None])
            probs.append(
                (100 * F.normalize(e, dim=-1) @ F.normalize(model.class_embeddings, dim=-1).t()).softmax(-1)[0]
            )
    torch.testing.assert_close(out.scores(model.class_embeddings)[1], torch.stack(probs).mean(0))
    assert out.view_embeddings.shape == (3, V, D)


def test_duplicates_from_padding_sampler_counted_once():
    model = StubVideoModel()
    items = make_items(3)
    loader = batches(items, 2) + batches(items[:1], 1)  # video 0 seen twice
    out = collect(model, loader, VIEWS)
    assert out.indices.tolist() == [0, 1, 2]


def test_evaluate_report_and_mode_restored():
    model = StubVideoModel().train()
    items = make_items(4)
    rep, out = evaluate(model, batches(items, 3), VIEWS, with_map=True)
    assert model.training
    assert rep["num_videos"] == 4 and rep["views"] == V and "mAP" in rep
    pred = out.scores(model.class_embeddings).argmax(1)
    assert rep["top1_correct"] == int((pred == out.labels).sum())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, path: str, n: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from utils.distributed import cleanup, init_distributed

    init_distributed(device="cpu", timeout_s=60)
    try:
        model = StubVideoModel()
        rep, out = evaluate(
            model,
            batches(make_items(n), 2, rank, world),
            VIEWS,
            with_map=True,
        )
        torch.save({"rep": rep, "emb": out.embeddings, "idx": out.indices, "lab": out.labels}, f"{path}.{rank}")
    finally:
        cleanup()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_odd_dataset(tmp_path):
    n = 7
    rep1, out1 = evaluate(
        StubVideoModel(),
        batches(make_items(n), 2),
        VIEWS,
        with_map=True,
    )
    path = str(tmp_path / "res")
    mp.start_processes(_worker, args=(2, _free_port(), path, n), nprocs=2, start_method="spawn")
    for rank in range(2):
        res = torch.load(f"{path}.{rank}")
        assert res["idx"].tolist() == list(range(n))
        torch.testing.assert_close(res["emb"], out1.embeddings)
        assert res["lab"].tolist() == out1.labels.tolist()
        for key in ("top1", "top5", "top1_correct", "top5_correct", "mean_class_accuracy", "mAP", "num_videos"):
            assert res["rep"][key] == pytest.approx(rep1[key]), key


def test_default_normalisation_equals_the_clip_formula():
    from datasets.transforms import CLIP_MEAN, CLIP_STD, normalize

    x = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(normalize(x), (x.float() / 255.0 - mean) / std, rtol=0, atol=1e-6)
    assert x.dtype == torch.uint8  # input untouched
