"""The CUDA paths: mixed-precision training steps (bf16 autocast; fp16 autocast with the GradScaler),
the deferred transforms on the GPU against the CPU ones, a checkpoint written on the GPU resumed on
the CPU and back, and the ONNX export of a model that lives on the GPU.

Tests and parameters marked `cuda` are skipped on a machine without CUDA (this project's CPU
machines and CI); `bash bench/gpu_check.sh` runs them on a GPU (`pytest -m cuda`). Where the check
means something on the CPU too (transforms, checkpoints, export, the training loop in fp32), it is
parametrized over the devices, so the test's own logic runs everywhere.

Tolerances on the GPU: the deferred transforms resize uint8 frames through float32 there (the CPU has
a uint8 kernel), so evaluation views may differ by 1 grey level and training clips (then colour
jitter, which scales a difference by up to 1.4) by up to 3, with a mean |difference| under 0.25 of a
grey level; on the CPU they are equal. ONNX Runtime (CPU) against PyTorch on the GPU: logits (100 x
cosine) within 1e-3, as `app.export` checks every export, with cuDNN's TF32 convolutions turned off.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from datasets.device_transforms import ClipsToDevice, RawClips
from datasets.transforms import EvalTransform, TrainTransform, normalize
from modules.model_builder import build_model
from utils.checkpoint import (
    RunPosition,
    load_checkpoint,
    restore_training_state,
    rng_state,
    save_checkpoint,
    training_state,
)
from utils.config import resolve, to_config
from utils.optim import build_optimizer, build_scheduler
from utils.precision import grad_scaler, resolve_precision
from utils.training import StepRecipe, train_one_epoch

NO_CUDA = "no CUDA device here: bash bench/gpu_check.sh runs the cuda-marked tests on a GPU (docs/gpu.md)"
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA)]
NAMES = ["moving left", "moving right", "growing", "shrinking"]
FRAMES, SIZE = 2, 112
TRAIN_MAX_DIFF, TRAIN_MEAN_DIFF, EVAL_MAX_DIFF = 3, 0.25, 1  # grey levels, on the GPU (module docstring)
ONNX_TOLERANCE = 1e-3


def _cfg() -> Any:
    raw = {
        "seed": 0,
        "data": {"dataset": "cuda", "num_segments": FRAMES, "input_size": SIZE},
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "classifier": "orthogonal"},
    }
    return to_config(resolve(raw, "test_cuda"))


def _model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_cfg(), NAMES, device=device)


def _clips(batch: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, FRAMES, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    y = torch.arange(batch) % len(NAMES)
    return x.to(device), y.to(device)


NO_SCHEDULE = SimpleNamespace(step=lambda: None)  # a constant learning rate


def _steps(model: torch.nn.Module, opt: Any, scaler: Any, precision: str, device: str, steps: int) -> list[float]:
    """`steps` passes of the training loop over one fixed batch (it can only go down by learning)."""
    x, y = _clips(4, 1)
    losses = []
    for _ in range(steps):
        stats = train_one_epoch(
            model,
            [(x, y, None)],
            opt,
            NO_SCHEDULE,
            scaler,
            StepRecipe(device=torch.device(device), num_frames=FRAMES, normalize=normalize, precision=precision),
        )
        losses.append(stats.loss)
    return losses


@pytest.mark.parametrize(
    "device,precision",
    [
        pytest.param("cpu", "fp32", id="cpu-fp32"),
        pytest.param("cuda", "bf16", id="cuda-bf16", marks=CUDA),
        pytest.param("cuda", "amp", id="cuda-fp16-scaler", marks=CUDA),
    ],
)
@pytest.mark.slow
def test_training_steps_in_each_precision_lower_the_loss(device, precision):
    assert resolve_precision(precision, device) == precision
    model = _model(device)
    opt = build_optimizer(model, lr=1e-4, clip_ratio=1.0, weight_decay=0.0, device=device)
    scaler = grad_scaler(precision, device)
    assert scaler.is_enabled() == (precision == "amp")  # the scaler exactly for fp16 autocast on CUDA
    seen: list[torch.dtype] = []
    hook = model.visual.transformer.resblocks[0].mlp.c_fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = _steps(model, opt, scaler, precision, device, steps=10)
    hook.remove()
    assert all(math.isfinite(v) for v in losses), losses
    # learns the fixed batch (not monotonically: logits are 100 x cosine; fp16 may skip its first steps)
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], losses
    want = {"fp32": torch.float32, "bf16": torch.bfloat16, "amp": torch.float16}[precision]
    assert set(seen) == {want}  # the matmuls ran in the precision asked for
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    if precision == "amp":
        assert 1.0 <= scaler.get_scale() <= 2.0**16  # dynamic loss scaling active, not collapsed to 0


@contextmanager
def _no_tf32_convs():
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


def _source_clips(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    # channels-last strides, as the decoders return them; one size so the batch stacks
    return [torch.randint(0, 256, (4, 48, 64, 3), generator=g, dtype=torch.uint8).permute(0, 3, 1, 2) for _ in range(n)]


def _diff(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (got.cpu().int() - want.int()).abs()


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_train_transform_on_the_device_equals_the_cpu_one(device):
    tf = TrainTransform(input_size=32, scale_size=40, color_jitter_prob=0.8, grayscale_prob=0.2)
    clips = _source_clips(8)
    ref = torch.stack([tf(c, np.random.default_rng([2, i]))[0] for i, c in enumerate(clips)])
    params = [tf.draw(48, 64, np.random.default_rng([2, i])) for i in range(len(clips))]
    assert any(p.jitter for p in params) and any(p.flip for p in params)  # the random parts were exercised
    raw = RawClips(torch.stack(clips), params)
    got = ClipsToDevice(tf, device)(raw.pin_memory() if device == "cuda" else raw)
    assert got.device.type == device and got.dtype == torch.uint8 and got.shape == ref.shape
    d = _diff(got, ref)
    if device == "cpu":
        assert int(d.max()) == 0
    else:
        assert int(d.max()) <= TRAIN_MAX_DIFF and float(d.float().mean()) <= TRAIN_MEAN_DIFF, (
            d.max(),
            d.float().mean(),
        )


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_eval_transform_on_the_device_equals_the_cpu_one(device):
    tf = EvalTransform(input_size=32, scale_size=40, crops=3)
    clips = _source_clips(3)
    ref = torch.stack([tf(c)[0] for c in clips])
    got = ClipsToDevice(tf, device)(RawClips(torch.stack(clips), [None] * len(clips)))
    assert got.device.type == device and got.shape == (3, 3 * 4, 3, 32, 32)
    assert int(_diff(got, ref).max()) <= (0 if device == "cpu" else EVAL_MAX_DIFF)


def _state(model, opt, sched, scaler) -> dict:
    return training_state(
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=scaler,
        at=RunPosition(epoch=1, iteration=3, best_top1=12.5),
        rng=[rng_state()],
        config={"network": {"arch": "tiny"}},
        class_names=NAMES,
    )


def _fresh(device: str, precision: str) -> tuple[Any, Any, Any, Any]:
    model = _model(device)
    opt = build_optimizer(model, lr=1e-3, clip_ratio=1.0, weight_decay=0.1, device=device)
    sched = build_scheduler(opt, kind="cosine", epochs=4, warmup_epochs=1, iters_per_epoch=2, step_every=1)
    return model, opt, sched, grad_scaler(precision, device)


def _tensors(model, opt) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        out.update({f"opt.{i}.{k}": torch.as_tensor(v).cpu() for k, v in st.items()})
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.slow
def test_checkpoint_saved_on_the_device_resumes_on_the_cpu_and_back(device, tmp_path: Path):
    precision = resolve_precision(None, device)  # what train.py uses: amp (with the scaler) on CUDA
    model, opt, sched, scaler = _fresh(device, precision)
    _steps(model, opt, scaler, precision, device, steps=2)
    sched.step()
    want = _tensors(model, opt)
    assert any(k.startswith("opt.") for k in want)  # AdamW's moments are part of what travels
    first = save_checkpoint(_state(model, opt, sched, scaler), tmp_path / "device.pt")

    ckpt = load_checkpoint(first)  # as train.py reads it: onto the CPU, on a machine without a GPU too
    leaves = [v for v in ckpt["model"].values()] + [t for s in ckpt["optimizer"]["state"].values() for t in s.values()]
    assert all(t.device.type == "cpu" for t in leaves if isinstance(t, torch.Tensor))
    cpu = _fresh("cpu", resolve_precision(precision, "cpu"))
    got = restore_training_state(ckpt, model=cpu[0], optimizer=cpu[1], scheduler=cpu[2], scaler=cpu[3])
    assert got == {"epoch": 1, "iteration": 3, "best_top1": 12.5}
    on_cpu = _tensors(cpu[0], cpu[1])
    assert on_cpu.keys() == want.keys() and all(torch.equal(on_cpu[k], want[k]) for k in want)
    assert cpu[2].state_dict() == sched.state_dict()

    second = save_checkpoint(_state(*cpu), tmp_path / "cpu.pt")
    back = _fresh(device, precision)
    restore_training_state(load_checkpoint(second), model=back[0], optimizer=back[1], scheduler=back[2], scaler=back[3])
    again = _tensors(back[0], back[1])
    assert all(torch.equal(again[k], want[k]) for k in want)
    assert all(p.device.type == device for p in back[0].parameters())
    assert all(t.device.type == device for s in back[1].state.values() for t in s.values() if t.dim() > 0)
    if scaler.is_enabled():  # the scale survives a resume on the GPU
        direct = _fresh(device, precision)
        restore_training_state(
            load_checkpoint(first), model=direct[0], optimizer=direct[1], scheduler=None, scaler=direct[3]
        )
        assert direct[3].get_scale() == scaler.get_scale()


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_onnx_export_of_a_model_on_the_device_matches_pytorch(device):
    ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    from app.export import VideoClassifier, export_onnx

    graph = VideoClassifier(_model(device), 100.0).eval()
    example, _ = _clips(2, 3, device)
    with _no_tf32_convs():
        data = export_onnx(graph, example, _cfg(), {"kind": "onnx", "test": "cuda"})
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for batch, seed in ((1, 4), (3, 5)):  # not the traced batch
            x, _ = _clips(batch, seed, device)
            with torch.no_grad():
                want_logits, want_emb = graph(x)
            logits, emb = session.run(["logits", "embeddings"], {"frames": x.cpu().numpy()})
            assert logits.shape == (batch, len(NAMES))
            assert np.abs(logits - want_logits.float().cpu().numpy()).max() <= ONNX_TOLERANCE
            assert np.abs(emb - want_emb.float().cpu().numpy()).max() <= ONNX_TOLERANCE
