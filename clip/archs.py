"""Architecture names: the original's CLIP names -> open_clip model configs built with QuickGELU.

OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain configs (`ViT-B-32`, ...) build
nn.GELU, and OpenAI weights in a GELU model give subtly wrong features without any warning. Every
name below therefore resolves to a `-quickgelu` config (or one of our tiny configs, which also set
`quick_gelu: true`).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from copy import deepcopy
from pathlib import Path

import open_clip

from utils.errors import UserError

from .pretrained import read_state_dict

_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

# Our own configs registered with open_clip's model-config registry (file stem = model name).
TINY_VIT = "text4vis-tiny"
TINY_RN = "text4vis-tiny-rn"

# Name the user writes -> open_clip model config name. Keys are matched case-sensitively after
# normalisation (see `resolve_arch`).
_ARCHS: dict[str, str] = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14-336px": "ViT-L-14-336-quickgelu",
    "tiny": TINY_VIT,
    "tiny-rn": TINY_RN,
}
# open_clip spellings accepted as well (with or without the -quickgelu suffix).
_ALIASES: dict[str, str] = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "ViT-L-14-336": "ViT-L/14-336px",
    "ViT-L/14-336": "ViT-L/14-336px",
    "ViT-L-14-336px": "ViT-L/14-336px",
    TINY_VIT: "tiny",
    TINY_RN: "tiny-rn",
}


def _register_configs() -> None:
    if TINY_VIT not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


_register_configs()


def arch_names() -> list[str]:
    """The names `network.arch` accepts (the original's spelling; open_clip spellings work too)."""
    return list(_ARCHS)


def arch_file(arch: str) -> Path | None:
    """`arch` as an existing weights file (the original's `clip.load` accepted a path), else None."""
    path = Path(str(arch)).expanduser()
    return path if path.is_file() else None


def _signature_of_config(cfg: dict) -> tuple:
    v = cfg["vision_cfg"]
    if is_resnet(cfg):
        return ("rn", tuple(v["layers"]), v["width"], v["image_size"] // 32, cfg["embed_dim"])
    return ("vit", v["width"], v["layers"], v["patch_size"], v["image_size"], cfg["embed_dim"])


def _signature_of_weights(sd: dict) -> tuple | None:
    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

    if "visual.proj" in sd and "visual.conv1.weight" in sd:
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return ("vit", width, count("visual.transformer.resblocks."), patch, patch * grid, sd["visual.proj"].shape[1])
    if "visual.layer1.0.conv1.weight" in sd and "visual.attnpool.positional_embedding" in sd:
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        layers = tuple(count(f"visual.layer{b}.") for b in (1, 2, 3, 4))
        return (
            "rn",
            layers,
            sd["visual.layer1.0.conv1.weight"].shape[0],
            grid,
            sd["visual.attnpool.c_proj.weight"].shape[0],
        )
    return None


def infer_arch(sd: dict, source: str = "weights file") -> str:
    """The `network.arch` name whose visual tower has the shapes of state dict `sd`."""
    sig = _signature_of_weights(sd)
    for name, model_name in _ARCHS.items():
        if sig is not None and _signature_of_config(open_clip.get_model_config(model_name)) == sig:
            return name
    raise UserError(
        f"network.arch: cannot tell the CLIP architecture of {source} (visual tower {sig}); "
        f"set network.arch to one of {', '.join(_ARCHS)} and network.pretrained to the file"
    )


def resolve_arch(arch: str, trusted_pickles: Collection[str | os.PathLike] = ()) -> str:
    """Return the open_clip model-config name (always a QuickGELU config) for `arch`.

    `arch` is a name of `arch_names()` (or its open_clip spelling), or, as in the original, a
    CLIP weights file whose architecture is then read from its tensor shapes.
    """
    path = arch_file(arch)
    if path is not None:
        return _ARCHS[infer_arch(read_state_dict(path, trusted_pickles), source=str(path))]
    name = str(arch).strip()
    if name.endswith("-quickgelu"):
        name = name[: -len("-quickgelu")]
    name = _ALIASES.get(name, name)
    if name not in _ARCHS:
        raise UserError(
            f"network.arch: unknown architecture '{arch}'; valid names: "
            f"{', '.join(_ARCHS)} (open_clip spellings such as ViT-B-32 also work)"
        )
    model_name = _ARCHS[name]
    if open_clip.get_model_config(model_name) is None:  # pragma: no cover - broken install
        raise UserError(
            f"network.arch: open_clip has no model config '{model_name}' "
            f"(open_clip {open_clip.__version__}); is the installation complete?"
        )
    return model_name


def model_config(arch: str) -> dict:
    """The open_clip config dict (a copy) for `arch`, checked to use QuickGELU."""
    model_name = resolve_arch(arch)
    cfg = deepcopy(open_clip.get_model_config(model_name))
    if not cfg.get("quick_gelu", False):  # pragma: no cover - guards the table above
        raise AssertionError(f"{model_name} does not set quick_gelu")
    return cfg


def is_resnet(cfg: dict) -> bool:
    """True when the vision tower of an open_clip config is a ModifiedResNet."""
    return isinstance(cfg["vision_cfg"].get("layers"), (list, tuple))
