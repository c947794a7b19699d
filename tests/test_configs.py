"""The experiment configs under configs/: they load through the schema, keep the original's values,
describe a model that can be built (arch resolves, head and classifier valid, class count matches
the label CSV), and point at lists that exist and fit their CSV."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from clip.archs import model_config
from datasets.lists import read_label_csv, read_list
from modules import model_builder as builder
from modules.heads import MeanHead, TransfHead, build_head, transf_param_count
from utils.config import load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL = sorted(str(p.relative_to(REPO)) for p in CONFIGS.rglob("*.yaml"))
EXPERIMENTS = [p for p in ALL if not p.startswith("configs/demo/")]

# The original's 24 configs (docs/recipes.md#2-the-configs):
# path -> (arch, T, input, batch, accum, sim_header, eval_freq, workers, shot, has_pretrain)
ORIGINAL = {
    "k400/k400_train_rgb_rn50": ("RN50", 8, 224, 32, 1, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitb-32-f8": ("ViT-B/32", 8, 224, 32, 1, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitb-32-f16": ("ViT-B/32", 16, 224, 32, 1, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitb-16-f8": ("ViT-B/16", 8, 224, 32, 1, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitb-16-f16": ("ViT-B/16", 16, 224, 16, 2, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitl-14-f8": ("ViT-L/14", 8, 224, 8, 2, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitl-14-336-f8": ("ViT-L/14-336px", 8, 336, 2, 4, "Transf", 1, 4, None, False),
    "k400/k400_train_rgb_vitl-14-336-f32": ("ViT-L/14-336px", 32, 336, 1, 8, "Transf", 1, 4, None, False),
    "k400/k400_few_shot": ("ViT-L/14", 8, 224, 8, 1, "None", 1, 4, 2, False),
    "ucf101/ucf_few_shot": ("ViT-L/14", 8, 224, 8, 1, "None", 5, 4, 2, False),
    "hmdb51/hmdb_few_shot": ("ViT-L/14", 8, 224, 8, 1, "None", 5, 4, 2, False),
    "anet/anet_few_shot": ("ViT-L/14", 8, 224, 8, 1, "None", 5, 4, 2, False),
    "ucf101/ucf_k400_finetune": ("ViT-L/14", 16, 224, 4, 2, "Transf", 5, 4, None, True),
    "ucf101/ucf_k400_finetune_336": ("ViT-L/14-336px", 16, 336, 1, 8, "Transf", 5, 4, None, True),
    "hmdb51/hmdb_k400_finetune": ("ViT-L/14", 16, 224, 4, 2, "Transf", 5, 4, None, True),
    "hmdb51/hmdb_k400_finetune_336": ("ViT-L/14-336px", 16, 336, 1, 8, "Transf", 5, 4, None, True),
    "anet/anet_k400_finetune": ("ViT-L/14", 16, 224, 4, 2, "Transf", 5, 4, None, True),
    "anet/anet_k400_finetune_336": ("ViT-L/14-336px", 16, 336, 1, 8, "Transf", 5, 4, None, True),
    "ucf101/ucf_zero_shot": ("ViT-L/14", 8, 224, 16, 1, "Transf", 1, 8, None, False),
    "hmdb51/hmdb_zero_shot": ("ViT-L/14", 8, 224, 16, 1, "Transf", 1, 8, None, False),
    "anet/anet_zero_shot": ("ViT-L/14", 8, 224, 32, 1, "Transf", 5, 4, None, False),
    "k600/k600_zero_shot_split1": ("ViT-L/14", 8, 224, 8, 1, "Transf", 1, 4, None, False),
    "k600/k600_zero_shot_split2": ("ViT-L/14", 8, 224, 8, 1, "Transf", 1, 4, None, False),
    "k600/k600_zero_shot_split3": ("ViT-L/14", 8, 224, 8, 1, "Transf", 1, 4, None, False),
}

# dataset -> (num_classes, image_tmpl, label CSV)
DATASETS = {
    "k400": (400, "img_{:05d}.jpg", "lists/kinetics_400_labels.csv"),
    "ucf101": (101, "image_{:04d}.jpg", "lists/ucf_labels.csv"),
    "hmdb51": (51, "image_{:06d}.jpg", "lists/hmdb51_labels.csv"),
    "anet": (200, "image_{:06d}.jpg", "lists/anet1.3_labels.csv"),
    "k600": (160, "img_{:05d}.jpg", None),
}

# The K400 training list is referenced by the original's configs but was never released.
NOT_SHIPPED = {"lists/k400/kinetics_rgb_train_se320.txt"}

# Variant -> values that differ from its repository config (docs/recipes.md#2-the-configs, the original's logs).
LOG_VARIANT_CHANGES = {
    "vitb-32-f8": {},
    "vitb-32-f16": {},
    "vitb-16-f8": {},
    "vitb-16-f16": {"solver.grad_accumulation_steps": 1},
    "vitl-14-f8": {"solver.grad_accumulation_steps": 1},
    "vitl-14-336-f8": {},
    "vitl-14-336-f32": {"solver.grad_accumulation_steps": 4},
}
LOG_COMMON = {
    "data.randaug.enable": True,
    "data.blur_prob": 0.0,
    "data.solarize_prob": 0.0,
    "solver.betas": [0.9, 0.98],
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "flip_label_map":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_original_24_configs_exist():
    assert sorted(f"configs/{k}.yaml" for k in ORIGINAL) == sorted(p for p in EXPERIMENTS if "/log_variants/" not in p)
    assert len(ORIGINAL) == 24


@pytest.mark.parametrize("path", ALL)
def test_config_loads_through_the_schema(path):
    cfg = load_config(REPO / path)
    assert cfg.data.num_segments >= 1 and cfg.data.batch_size >= 1


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_original_values(name):
    arch, t, size, batch, accum, head, eval_freq, workers, shot, has_pretrain = ORIGINAL[name]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (
        cfg.network.arch,
        cfg.data.num_segments,
        cfg.data.input_size,
        cfg.data.batch_size,
        cfg.solver.grad_accumulation_steps,
        cfg.network.sim_header,
    ) == (arch, t, size, batch, accum, head)
    assert (cfg.logging.eval_freq, cfg.logging.print_freq, cfg.data.workers) == (eval_freq, 10, workers)
    assert cfg.data.shot == shot
    assert (cfg.pretrain is not None) == has_pretrain
    assert cfg.resume is None and cfg.seed == 1024
    # common training values (also the schema defaults, so zero-shot configs agree)
    assert (
        cfg.solver.type,
        cfg.solver.epochs,
        cfg.solver.lr,
        cfg.solver.lr_warmup_step,
        cfg.solver.weight_decay,
        cfg.solver.clip_ratio,
    ) == ("cosine", 30, 5e-5, 5, 0.2, 0.1)
    assert cfg.solver.betas == [0.9, 0.999] and not cfg.data.randaug.enable
    assert (cfg.data.blur_prob, cfg.data.solarize_prob) == (0.0, 0.0)
    assert cfg.data.random_shift and not cfg.data.dense and cfg.data.seg_length == 1
    assert cfg.network.pretrained == "openai" and cfg.network.init
    assert not cfg.network.tm and not cfg.network.joint_st
    assert cfg.network.drop_out == 0.0 and cfg.network.emb_dropout == 0.0
    num_classes, tmpl, csv = DATASETS[cfg.data.dataset]
    assert cfg.data.num_classes == num_classes and cfg.data.image_tmpl == tmpl
    if csv:
        assert cfg.data.label_list == csv
    assert cfg.data.modality == ("video" if cfg.data.dataset == "k600" else "RGB")
    assert cfg.data.metric == ("mAP" if "anet_k400_finetune" in name else "top1")
    raw = (CONFIGS / f"{name}.yaml").read_text()
    if "zero_shot" in name:
        assert not re.search(r"^solver:", raw, re.M), "zero-shot configs are evaluation only"
    if cfg.data.dataset == "k400" and "few_shot" not in name:
        assert re.search(r"^    randaug:\n        N: 2\n        M: 9$", raw, re.M)


@pytest.mark.parametrize("model", sorted(LOG_VARIANT_CHANGES))
def test_log_variants_change_only_the_documented_keys(model):
    base = _flat(to_dict(load_config(CONFIGS / f"k400/k400_train_rgb_{model}.yaml")))
    variant = _flat(to_dict(load_config(CONFIGS / f"k400/log_variants/k400_train_rgb_{model}.yaml")))
    expected = dict(base, **LOG_COMMON, **LOG_VARIANT_CHANGES[model])
    assert variant == expected
    assert (
        base["data.batch_size"] * base["solver.grad_accumulation_steps"]
        >= variant["data.batch_size"] * variant["solver.grad_accumulation_steps"]
    )


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_data_roots_are_marked_placeholders(path):
    cfg = load_config(REPO / path)
    raw = (REPO / path).read_text()
    for key in ("train_root", "val_root"):
        value = getattr(cfg.data, key)
        if value:
            assert value.startswith("/path/to/"), f"{key}={value!r} is not an obvious placeholder"
            assert re.search(rf"^    {key}: \S+  # EDIT, or --opts data\.{key}=", raw, re.M)
    if cfg.pretrain is not None:
        assert cfg.pretrain.startswith("/path/to/") and re.search(r"^pretrain: \S+  # EDIT", raw, re.M)
    assert cfg.data.val_root, "every experiment evaluates"


@pytest.mark.parametrize("path", EXPERIMENTS)  # demo configs point at generated data
def test_labels_and_lists_fit(path):
    cfg = load_config(REPO / path)
    names = read_label_csv(REPO / cfg.data.label_list)
    assert len(names) == cfg.data.num_classes
    for key in ("train_list", "val_list"):
        rel = getattr(cfg.data, key)
        if not rel or rel in NOT_SHIPPED:
            continue
        records = read_list(REPO / rel, num_classes=len(names))
        fmt = "video" if records[0].num_frames is None else "RGB"
        assert fmt == cfg.data.modality, f"{rel} is a {fmt} list but the config says {cfg.data.modality}"


def _vision(arch: str) -> tuple[int, int, int]:
    """(embed dim D, Transf heads = text width // 64, image size) of an arch, without building it."""
    mc = model_config(arch)
    return mc["embed_dim"], mc["text_cfg"]["width"] // 64, mc["vision_cfg"]["image_size"]


@pytest.mark.parametrize("path", ALL)
def test_model_settings_are_valid(path):
    cfg = load_config(REPO / path)
    dim, heads, image_size = _vision(cfg.network.arch)
    if not str(cfg.network.arch).startswith("tiny"):  # test-sized models run at any resolution
        assert cfg.data.input_size == image_size, "input size must match the CLIP model's resolution"
    # Build the head on the meta device: full-size shapes and parameter count, no memory or init cost.
    with torch.device("meta"):
        head = build_head(cfg.network.sim_header, dim, cfg.data.num_segments, heads)
        out = head(torch.empty(2, cfg.data.num_segments, dim))
    assert tuple(out.shape) == (2, dim)
    if cfg.network.sim_header == "Transf":
        assert isinstance(head, TransfHead) and dim % heads == 0
        assert sum(p.numel() for p in head.parameters()) == transf_param_count(dim)
    elif cfg.network.sim_header == "None":
        assert isinstance(head, MeanHead)
    if path not in EXPERIMENTS:
        return
    # the classifier is the original's: frozen text embeddings of one prompt
    assert cfg.network.classifier == "text" and cfg.network.classifier_file is None
    assert cfg.network.fix_text and not cfg.network.fix_video
    assert cfg.network.templates == "a video of a person {}."


# Published released-checkpoint head shapes: D and heads of the original's fusion_model.
@pytest.mark.parametrize(
    "arch,dim,heads",
    [("RN50", 1024, 8), ("ViT-B/32", 512, 8), ("ViT-B/16", 512, 8), ("ViT-L/14", 768, 12), ("ViT-L/14-336px", 768, 12)],
)
def test_arch_dimensions(arch, dim, heads):
    assert _vision(arch)[:2] == (dim, heads)


BUILD = [
    "configs/k400/k400_train_rgb_vitb-32-f8.yaml",
    "configs/ucf101/ucf_few_shot.yaml",
    "configs/k600/k600_zero_shot_split2.yaml",
]


@pytest.mark.parametrize("path", BUILD)
def test_build_model_at_reduced_size(path):
    cfg = load_config(
        REPO / path,
        [
            "network.arch=tiny",
            "network.pretrained=none",
            "data.input_size=112",
            "data.num_segments=4",
            "network.text_cache=",
        ],
    )
    names = read_label_csv(REPO / cfg.data.label_list)
    torch.manual_seed(0)
    model = builder.build_model(cfg, names, device="cpu").eval()
    assert tuple(model.class_embeddings.shape) == (cfg.data.num_classes, 256)
    head_type = TransfHead if cfg.network.sim_header == "Transf" else MeanHead
    assert isinstance(model.fusion_model, head_type)
    x = torch.randn(2, 4, 3, 112, 112)
    with torch.no_grad():
        logits = model(x, scale=100.0)
        emb = model.encode_video(x)
    assert tuple(logits.shape) == (2, cfg.data.num_classes)
    # logits are 100 x cosine of the video embedding and the class embeddings
    ref = (
        100.0
        * torch.nn.functional.normalize(emb, dim=-1)
        @ torch.nn.functional.normalize(model.class_embeddings, dim=-1).T
    )
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_recipe_configs_run_end_to_end(tmp_path):
    """A K400 config (frames) and a K600 zero-shot config (videos) evaluate through test.py on
    generated data at a reduced size, with lists written by make_list."""
    import json

    import test as test_entry
    from datasets.make_list import make_list
    from datasets.synthetic import generate

    data = tmp_path / "syn"
    generate(data, classes=3, videos_per_class=1, val_videos_per_class=2, frames=6, size=32, fmt="both")
    make_list(data / "frames", tmp_path / "val.txt", labels=data / "labels.csv")
    make_list(data / "videos", tmp_path / "val_video.txt", labels=data / "labels.csv")
    common = [
        "network.arch=tiny",
        "network.pretrained=none",
        "data.input_size=112",
        "data.num_segments=4",
        "data.batch_size=4",
        "data.workers=0",
        "network.text_cache=",
        f"data.label_list={data / 'labels.csv'}",
        "data.num_classes=3",
        "data.image_tmpl=img_{:05d}.jpg",
    ]
    cfg = load_config(CONFIGS / "k400/k400_train_rgb_vitb-32-f8.yaml", common)
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(builder.build_model(cfg, read_label_csv(data / "labels.csv")).state_dict(), weights)
    runs = {
        "k400/k400_train_rgb_vitb-32-f8.yaml": [
            f"data.val_root={data / 'frames'}",
            f"data.val_list={tmp_path / 'val.txt'}",
        ],
        "k600/k600_zero_shot_split1.yaml": [
            f"data.val_root={data / 'videos'}",
            f"data.val_list={tmp_path / 'val_video.txt'}",
        ],
    }
    for i, (config, extra) in enumerate(runs.items()):
        out = tmp_path / f"out{i}"
        test_entry.main(
            [
                "--config",
                str(CONFIGS / config),
                "--weights",
                str(weights),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--opts",
                *common,
                *extra,
            ]
        )
        results = json.loads((out / "results.json").read_text())
        assert results["num_videos"] == 9  # 3 classes x (1 train + 2 val videos): the whole tree
        assert 0.0 <= results["top1"] <= 100.0
