"""The contrastive baseline (docs/training.md#contrastive-baseline-train_ncepy, the original's train_nce.py):
the NCE / DS losses against a direct transcription of the original's code (one process and two
gloo processes), where the gradient flows, what `fix_text` freezes, the LR groups, the loss going
down, and the model with a text tower through the one evaluation path."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from datasets.transforms import normalize
from modules.model_builder import build_model
from utils.config import resolve, to_config
from utils.contrastive import contrastive_loss, make_objective
from utils.optim import build_optimizer, build_scheduler
from utils.training import EpochReport, StepRecipe, train_one_epoch

NAMES = ["red circle moving left", "red circle moving right", "blue square growing", "blue square shrinking"]
LABELS = torch.tensor([0, 1, 1, 3, 0, 2])
pytestmark = pytest.mark.filterwarnings("ignore:reduction. .mean. divides")


# ----------------------------------------------------------------------------- the original, transcribed
def gen_label(labels) -> np.ndarray:
    """utils/utils.py gen_label: gt[i, k] = 1 when labels k and i are equal."""
    num = len(labels)
    gt = np.zeros(shape=(num, num))
    for i, label in enumerate(labels):
        for k in range(num):
            if labels[k] == label:
                gt[i, k] = 1
    return gt


def nce_criterion(prediction, label):
    """utils/NCELoss.py NCELoss.forward."""
    batch_size = len(prediction)
    probs1 = F.log_softmax(prediction, 1)
    probs2 = F.softmax(label * 10, 1)
    return torch.nn.KLDivLoss(reduction="mean")(probs1, probs2) * batch_size


def ds_criterion(prediction, label, temp=1000):
    """utils/NCELoss.py DualLoss.forward."""
    batch_size = len(prediction)
    prediction = prediction * F.softmax(prediction / temp, dim=0) * batch_size
    return nce_criterion(prediction, label)


def original_loss(image_embedding, text_embedding, logit_scale, list_id, kind):
    """train_nce.py's NCE/DS branch with create_logits (one process)."""
    image_embedding = image_embedding / image_embedding.norm(dim=-1, keepdim=True)
    text_embedding = text_embedding / text_embedding.norm(dim=-1, keepdim=True)
    logits_per_image = logit_scale * image_embedding @ text_embedding.T
    logits_per_text = logit_scale * text_embedding @ image_embedding.T
    ground_truth = torch.tensor(gen_label(list_id), dtype=image_embedding.dtype)
    criterion = nce_criterion if kind == "NCE" else ds_criterion
    return (criterion(logits_per_image, ground_truth) + criterion(logits_per_text, ground_truth)) / 2


def fixed_embeddings(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).float(), torch.randn(n, d, generator=g).float()


@pytest.mark.parametrize("kind", ["NCE", "DS"])
def test_loss_and_gradients_equal_the_original_code(kind):
    video, text = fixed_embeddings()
    scale = torch.tensor(14.3)
    leaves = [t.clone().requires_grad_(True) for t in (video, text, scale)]
    ours = contrastive_loss(leaves[0], leaves[1], leaves[2], LABELS, kind)
    ours.backward()
    refs = [t.clone().requires_grad_(True) for t in (video, text, scale)]
    ref = original_loss(refs[0], refs[1], refs[2], LABELS.tolist(), kind)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    for a, b in zip(leaves, refs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert ours.item() > 0.1


def test_multi_positive_targets_make_the_loss_indifferent_to_same_class_columns():
    """Two videos of one class: the target spreads over both columns, so swapping their texts
    (same class) leaves the loss unchanged, while swapping with another class changes it."""
    video, text = fixed_embeddings()
    base = contrastive_loss(video, text, 10.0, LABELS)
    same = text.clone()
    same[[0, 4]] = text[[4, 0]]  # both class 0
    other = text.clone()
    other[[0, 1]] = text[[1, 0]]  # classes 0 and 1
    assert torch.isclose(contrastive_loss(video, same, 10.0, LABELS), base, rtol=1e-6)
    assert not torch.isclose(contrastive_loss(video, other, 10.0, LABELS), base, rtol=1e-3)


# ----------------------------------------------------------------------------- two gloo processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, path: str, kind: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from utils.distributed import cleanup, init_distributed

    init_distributed(device="cpu", timeout_s=60)
    try:
        video, text = fixed_embeddings()
        rows = slice(3 * rank, 3 * rank + 3)
        v = video[rows].clone().requires_grad_(True)
        t = text[rows].clone().requires_grad_(True)
        scale = torch.tensor(14.3, requires_grad=True)
        loss = contrastive_loss(v, t, scale, LABELS[rows], kind)
        loss.backward()
        torch.save({"loss": loss.detach(), "v": v.grad, "t": t.grad, "scale": scale.grad}, f"{path}.{rank}")
    finally:
        cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["NCE", "DS"])
def test_two_processes_loss_over_the_global_batch_gradient_through_local_rows(tmp_path, kind):
    """Each rank's loss is the original's loss over the 6 gathered videos; its gradient reaches its
    own 3 rows only, and equals the gradient of that global loss with respect to those rows."""
    path = str(tmp_path / "res")
    mp.start_processes(_worker, args=(2, _free_port(), path, kind), nprocs=2, start_method="spawn")
    video, text = fixed_embeddings()
    v, t = video.clone().requires_grad_(True), text.clone().requires_grad_(True)
    scale = torch.tensor(14.3, requires_grad=True)
    ref = original_loss(v, t, scale, LABELS.tolist(), kind)
    ref.backward()
    for rank in range(2):
        res = torch.load(f"{path}.{rank}", weights_only=True)
        rows = slice(3 * rank, 3 * rank + 3)
        torch.testing.assert_close(res["loss"], ref.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(res["v"], v.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res["t"], t.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res["scale"], scale.grad, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- the model
def make_cfg(**solver_network):
    network = {k: v for k, v in solver_network.items() if k != "loss_type"}
    raw = {
        "seed": 3,
        "data": {"num_segments": 2, "input_size": 112},
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "text_cache": "", **network},
        "solver": {"loss_type": solver_network.get("loss_type", "NCE")},
    }
    return to_config(resolve(raw, "test"))


@pytest.fixture(scope="module")
def clips():
    return torch.randint(0, 256, (6, 2, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("fix_text", [True, False])
@pytest.mark.parametrize("loss_type", ["NCE", "DS", "CE"])
def test_gradients_reach_what_section_12_trains(clips, fix_text, loss_type):
    cfg = make_cfg(fix_text=fix_text, loss_type=loss_type, text_tower=True)
    torch.manual_seed(0)
    model = build_model(cfg, NAMES)
    loss = make_objective(loss_type, text_tower=True)(model, normalize(clips), LABELS % 4)
    loss.backward()
    grads = _grads(model)
    text = {n: g for n, g in grads.items() if n.startswith("text.")}
    rest = {n: g for n, g in grads.items() if not n.startswith("text.")}
    assert text and all((g is None) == fix_text for g in text.values()), "fix_text freezes exactly the text tower"
    assert all(g is not None for g in rest.values())  # visual, fusion head, logit_scale
    assert float(grads["logit_scale"].abs()) > 0
    assert "class_embeddings" not in grads  # a buffer: the tower, not a matrix, is what trains
    if not fix_text:
        assert float(grads["text.token_embedding.weight"].abs().sum()) > 0


def test_fix_video_freezes_the_visual_encoder_only(clips):
    cfg = make_cfg(fix_text=False, fix_video=True)
    model = build_model(cfg, NAMES)
    make_objective("NCE", text_tower=True)(model, normalize(clips), LABELS % 4).backward()
    for name, grad in _grads(model).items():
        assert (grad is None) == name.startswith("visual."), name


def test_text_tower_trains_at_the_clip_learning_rate():
    model = build_model(make_cfg(fix_text=False), NAMES)
    opt = build_optimizer(model, lr=1e-3, clip_ratio=0.1, weight_decay=0.2)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    slow = {n for n, p in model.named_parameters() if id(p) in groups["visual"]}
    assert {n for n, _ in model.named_parameters() if n.startswith("text.")} <= slow
    assert "logit_scale" in slow and not any(n.startswith("fusion_model.") for n in slow)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4) and opt.param_groups[1]["lr"] == pytest.approx(1e-3)
    frozen = build_model(make_cfg(fix_text=True), NAMES)
    ids = {
        id(p)
        for g in build_optimizer(frozen, lr=1e-3, clip_ratio=0.1, weight_decay=0.2).param_groups
        for p in g["params"]
    }
    assert not any(id(p) in ids for n, p in frozen.named_parameters() if n.startswith("text."))


@pytest.mark.slow
def test_short_nce_training_run_lowers_the_loss(clips):
    cfg = make_cfg(fix_text=False)
    torch.manual_seed(0)
    model = build_model(cfg, NAMES)
    opt = build_optimizer(model, lr=1e-4, clip_ratio=1.0, weight_decay=0.0)
    sched = build_scheduler(
        opt, kind="multistep", epochs=1, warmup_epochs=0, iters_per_epoch=16, step_every=1, decay_step=[100]
    )
    losses: list[float] = []
    train_one_epoch(
        model,
        [(clips, LABELS % 4, None)] * 16,
        opt,
        sched,
        torch.amp.GradScaler("cpu", enabled=False),
        StepRecipe(
            device=torch.device("cpu"),
            num_frames=2,
            normalize=normalize,
            objective=make_objective("NCE", text_tower=True),
        ),
        report=EpochReport(on_iteration=lambda step, loss, lrs: losses.append(loss)),
    )
    assert len(losses) == 16 and sum(losses[-3:]) / 3 < 0.3 * losses[0], losses


def test_class_embeddings_follow_the_trained_tower():
    """refresh_class_embeddings = the tower's embeddings of every prompt; logits use them."""
    model = build_model(make_cfg(fix_text=False), NAMES).eval()
    with torch.no_grad():
        for p in model.text.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.refresh_class_embeddings()
        direct = model.text.encode_text(model.prompt_tokens[:, 0])  # open_clip's full 77-token path
    torch.testing.assert_close(model.class_embeddings, direct, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 2, 3, 112, 112)
    with torch.no_grad():
        want = 100 * F.normalize(model.encode_video(x), dim=-1) @ F.normalize(direct, dim=-1).t()
        torch.testing.assert_close(model(x, 100.0), want, rtol=1e-4, atol=1e-4)


def test_config_rules():
    from utils.errors import UserError

    assert make_cfg(loss_type="NCE").network.text_tower is True  # null -> needed by the loss
    assert make_cfg(loss_type="CE").network.text_tower is False
    with pytest.raises(UserError, match="needs network.text_tower"):
        make_cfg(loss_type="DS", text_tower=False)
    with pytest.raises(UserError, match="network.classifier 'text'"):
        make_cfg(loss_type="NCE", classifier="orthogonal")


# ----------------------------------------------------------------------------- checkpoints with a text tower
def _perturbed(model):
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def original_nce_checkpoint(model):
    """train_nce.py / ActionCLIP's layout: the whole CLIP (text keys at the top level) and the head
    saved on its own from DDP (`module.`)."""
    sd = model.state_dict()
    clip_sd = {
        k.removeprefix("text."): v for k, v in sd.items() if k.startswith(("visual.", "text.")) or k == "logit_scale"
    }
    fusion = {f"module.{k.removeprefix('fusion_model.')}": v for k, v in sd.items() if k.startswith("fusion_model.")}
    return {"epoch": 7, "model_state_dict": clip_sd, "fusion_model_state_dict": fusion, "optimizer_state_dict": {}}


def original_validation_logits(model, x):
    """train_nce.py's validate(): text features of every prompt from the text tower, 100 · cos."""
    with torch.no_grad():
        text = model.text.encode_text(model.prompt_tokens[:, 0])
        video = model.encode_video(x)
    video = video / video.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return 100.0 * video @ text.T


@pytest.mark.parametrize("head", ["Transf", "Transf_cls"])
def test_original_nce_checkpoint_evaluates_as_the_original(tmp_path, head):
    """Loaded through app.load_weights.load_model with a plain CE config: the tower in the file is used."""
    from app.load_weights import load_model

    source = _perturbed(build_model(make_cfg(fix_text=False, sim_header=head), NAMES))
    ckpt = original_nce_checkpoint(source)
    if head == "Transf_cls":  # ActionCLIP: its head under `transformer.` and an unused position table
        ckpt["fusion_model_state_dict"] = {
            k.replace("module.", "module.transformer.", 1): v for k, v in ckpt["fusion_model_state_dict"].items()
        }
        ckpt["fusion_model_state_dict"]["module.frame_position_embeddings.weight"] = torch.randn(77, 256)
    torch.save(ckpt, tmp_path / "nce.pt")
    loaded = load_model(tmp_path / "nce.pt", cfg=make_cfg(loss_type="CE", sim_header=head), class_names=NAMES)
    assert loaded.model.has_text_tower and "train_nce" in loaded.weights.layout
    x = torch.randn(2, 2, 3, 112, 112)
    with torch.no_grad():
        got = loaded.model(x, 100.0)
    torch.testing.assert_close(got, original_validation_logits(source, x), rtol=0, atol=2e-4)
    for k, v in source.state_dict().items():
        if k != "class_embeddings":
            assert torch.equal(loaded.model.state_dict()[k], v), k


def test_our_nce_checkpoint_scores_new_names_with_its_own_tower(tmp_path):
    from app.load_weights import load_model
    from utils.checkpoint import RunPosition, save_checkpoint, training_state
    from utils.config import to_dict

    cfg = make_cfg(fix_text=False)
    model = _perturbed(build_model(cfg, NAMES))
    model.refresh_class_embeddings()
    state = training_state(
        model=model,
        optimizer=None,
        scheduler=None,
        scaler=None,
        at=RunPosition(epoch=0, iteration=1, best_top1=0.0),
        rng=None,
        config=to_dict(cfg),
        class_names=NAMES,
    )
    path = save_checkpoint(state, tmp_path / "ours.pt")
    same = load_model(path, class_names=NAMES[::-1])
    torch.testing.assert_close(same.model.class_embeddings, model.class_embeddings.flip(0), rtol=0, atol=0)
    new = ["green triangle moving up", "green triangle moving down"]
    other = load_model(path, class_names=new).model
    tokens = other.prompt_tokens[:, 0]
    with torch.no_grad():
        want = model.text.encode_text(tokens)
    torch.testing.assert_close(other.class_embeddings, want, rtol=1e-5, atol=1e-5)


def test_train_validation_scores_with_the_current_text_tower(clips, monkeypatch):
    """train.py's validation re-encodes the class prompts with the tower as trained so far."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("text4vis_train_script", Path(__file__).parents[1] / "train.py")
    train = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, train)  # dataclasses look their module up
    spec.loader.exec_module(train)
    model = build_model(make_cfg(fix_text=False), NAMES)
    stale = model.class_embeddings.clone()
    with torch.no_grad():
        for p in model.text.parameters():
            p.add_(0.05 * torch.randn_like(p))
        fresh = model.text.encode_text(model.prompt_tokens[:, 0])
    labels = LABELS % 4
    validate = train.Validation(
        [(clips, labels, torch.arange(6))], 2, torch.device("cpu"), 100.0, False, 0, lambda _m: None
    )
    report = validate(model)
    torch.testing.assert_close(model.class_embeddings, fresh, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stale, fresh, atol=1e-3)
    with torch.no_grad():
        pred = (F.normalize(model.encode_video(normalize(clips)), dim=-1) @ F.normalize(fresh, dim=-1).t()).argmax(1)
    assert report["top1_correct"] == int((pred == labels).sum())
