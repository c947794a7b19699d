"""Where CLIP weights come from (`network.pretrained`) and how they get into the model.

* `none`: random weights, on purpose.
* an open_clip tag (`openai`, ...): taken from the local cache if it is there; otherwise downloaded.
  With no network the user gets a clear error within seconds (instead of open_clip's minute of
  hub retries): with `HF_HUB_OFFLINE=1` nothing is attempted, and otherwise a 3-second TCP probe
  of the download host (or of the HTTPS proxy) decides before any download starts.
* a local file: an OpenAI TorchScript archive (`ViT-B-32.pt`), an OpenAI/open_clip state dict
  (.pt/.pth/.bin/.safetensors), or a Text4Vis checkpoint (ours or the original's:
  `model_state_dict` with `visual.*`, `fusion_model.*`, `logit_scale`) of which the CLIP parts load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import warnings
import zipfile
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
from safetensors.torch import load_file as load_safetensors

from utils.cli import TRUST_FLAG
from utils.errors import UserError

log = logging.getLogger(__name__)

NONE_VALUES = ("none", "None", "")
PROBE_TIMEOUT_S = 3.0
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Keys of a Text4Vis video model that are not CLIP's (ignored when loading CLIP weights).
_NOT_CLIP_PREFIXES = ("fusion_model.", "class_embeddings")
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")


def is_random(pretrained: str | None) -> bool:
    """True for the values that mean 'random weights on purpose'."""
    return pretrained is None or pretrained is False or str(pretrained).strip() in NONE_VALUES


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_FILE_SUFFIXES) or value.startswith(("~", "."))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------
# Resolving `pretrained` to a file
# ----------------------------------------------------------------------------------------------


def resolve_pretrained(model_name: str, arch: str, pretrained: str | None, cache_dir: str | None = None) -> Path | None:
    """Return the weights file for `pretrained` (None for random weights); errors are UserErrors."""
    if is_random(pretrained):
        return None
    value = str(pretrained).strip()
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"network.pretrained: '{value}' is a folder; give the weights file inside it")
    tag_cfg = get_pretrained_cfg(model_name, value)
    if tag_cfg:
        return _tag_file(model_name, arch, value, tag_cfg, cache_dir)
    if _looks_like_path(value):
        raise UserError(f"network.pretrained: weights file '{value}' not found")
    tags = list_pretrained_tags_by_model(model_name)
    known = f"its tags: {', '.join(tags)}" if tags else "it has no pretrained tags"
    raise UserError(
        f"network.pretrained: '{value}' is neither a file nor a pretrained tag of network.arch '{arch}' "
        f"(open_clip model {model_name}; {known}). "
        f"Use a local weights file, or `none` for random weights."
    )


def _tag_file(model_name: str, arch: str, tag: str, cfg: dict, cache_dir: str | None) -> Path:
    cached = _cached_file(cfg, cache_dir)
    if cached is not None:
        return cached
    source = _describe_source(cfg)
    if _offline():
        raise UserError(_no_weights_message(arch, tag, source, "HF_HUB_OFFLINE is set and they are not in the cache"))
    host, port = _probe_target(cfg)
    if not _reachable(host, port):
        raise UserError(
            _no_weights_message(
                arch, tag, source, f"no network: {host}:{port} did not answer within {PROBE_TIMEOUT_S:.0f} s"
            )
        )
    try:
        target = download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as err:  # network errors come in many types
        raise UserError(_no_weights_message(arch, tag, source, f"download failed: {err}")) from err
    if not target or not Path(target).is_file():
        raise UserError(_no_weights_message(arch, tag, source, "download gave no file"))
    return Path(target)


def _hf_candidates(cfg: dict) -> list[tuple[str, str]]:
    repo_id, filename = os.path.split(cfg.get("hf_hub", "").rstrip())
    if not repo_id:
        return []
    names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    return [(repo_id, n) for n in names]


def _cached_file(cfg: dict, cache_dir: str | None) -> Path | None:
    """The tag's weights if already on disk (Hugging Face cache or OpenAI's ~/.cache/clip)."""
    for repo_id, filename in _hf_candidates(cfg):
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    url = cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file() and _sha_ok(local, url):
            return local
    return None


def _sha_ok(path: Path, url: str) -> bool:
    """OpenAI's URLs carry the file's SHA256 as the second-to-last path component."""
    if "openaipublic" not in url:
        return True
    expected = url.split("/")[-2]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(expected)


def _probe_target(cfg: dict) -> tuple[str, int]:
    """Host and port a download would connect to first (the HTTPS proxy when one is set)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 80
    p = urlparse(hf_constants.ENDPOINT if cfg.get("hf_hub") else cfg.get("url", ""))
    return p.hostname or "", p.port or (80 if p.scheme == "http" else 443)


def _reachable(host: str, port: int) -> bool:
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _describe_source(cfg: dict) -> str:
    parts = []
    if cfg.get("hf_hub"):
        parts.append(f"Hugging Face repo {cfg['hf_hub'].rstrip('/')}")
    if cfg.get("url"):
        parts.append(cfg["url"])
    return " or ".join(parts) or "unknown source"


def _no_weights_message(arch: str, tag: str, source: str, reason: str) -> str:
    """How to get the weights; with HF_HUB_OFFLINE set, unsetting it is the first way."""
    if _offline():
        first = "Either unset HF_HUB_OFFLINE and run once with network access (the file is then cached)"
        skip = ""
    else:
        first = "Either run once with network access (the file is then cached)"
        skip = "Set HF_HUB_OFFLINE=1 to skip the network check entirely; "
    return (
        f"network.pretrained: cannot get the '{tag}' weights of {arch} ({reason}). "
        f"They come from {source}. {first}, or download it elsewhere and point to it, e.g. "
        f"`--opts network.pretrained=/path/to/weights.pt` (an OpenAI .pt archive, an open_clip "
        f".bin/.safetensors or a Text4Vis checkpoint). {skip}`network.pretrained=none` builds random "
        f"weights on purpose."
    )


# ----------------------------------------------------------------------------------------------
# Reading a weights file
# ----------------------------------------------------------------------------------------------


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def is_trusted(path: Path, trusted_pickles: Collection[str | os.PathLike]) -> bool:
    """True when the user named `path` with --trust_pickle on the command line."""
    return path.resolve() in {Path(t).expanduser().resolve() for t in trusted_pickles}


def _torch_load(path: Path, trusted_pickles: Collection[str | os.PathLike]) -> object:
    """weights_only=True; a file that needs full unpickling (it can run code) is loaded only when
    the user trusted it by name on the command line, never because a config or checkpoint says so."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not is_trusted(path, trusted_pickles):
            raise UserError(
                f"network.pretrained: '{path}' holds Python objects besides tensors and was not loaded: "
                f"unpickling it can run arbitrary code. If you trust this file, pass "
                f"`{TRUST_FLAG} {path}` on the command line, or re-save its tensors "
                f"(torch.save(obj.state_dict(), ...)) once in a trusted session"
            ) from None
        log.warning("%s: loading with weights_only=False as asked by %s", path, TRUST_FLAG)
        return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(
    path: str | os.PathLike, trusted_pickles: Collection[str | os.PathLike] = ()
) -> dict[str, torch.Tensor]:
    """Tensors of a weights file in open_clip/OpenAI key layout (prefixes `module.` removed).

    Accepts TorchScript archives, safetensors, plain state dicts and checkpoints that wrap one
    under `model_state_dict` (Text4Vis), `state_dict` (open_clip training) or `model`. Full
    unpickling only for files in `trusted_pickles` (the user's --trust_pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"network.pretrained: weights file '{path}' not found")
    try:
        if path.suffix == ".safetensors":
            obj: object = load_safetensors(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated but OpenAI ships such archives
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            obj = _torch_load(path, trusted_pickles)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"network.pretrained: cannot read '{path}': {err}") from err
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise UserError(f"network.pretrained: '{path}' holds a {type(obj).__name__}, not a state dict")
    sd = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor) or key in _JIT_EXTRA_KEYS or key.endswith("attn_mask"):
            continue  # attn_mask: a causal-mask buffer that scripted open_clip models save; never a weight
        key = key[len("module.") :] if key.startswith("module.") else key
        sd[key] = value
    if not sd:
        raise UserError(f"network.pretrained: '{path}' contains no tensors")
    return sd


def normalise_keys(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Map the original's TSM wrapper names (`resblocks.N.net.attn...`, `conv1.net.weight`) onto
    ours when the model has no such key; other keys are left alone."""
    out = {}
    for key, value in sd.items():
        if key not in model_keys and ".net." in key and key.replace(".net.", ".") in model_keys:
            key = key.replace(".net.", ".")
        out[key] = value
    return out


def _list(keys: list[str] | set[str], n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(
    model: torch.nn.Module,
    path: Path,
    *,
    arch: str,
    visual_only: bool,
    new_param_names: set[str],
    trusted_pickles: Collection[str | os.PathLike] = (),
) -> None:
    """Load a weights file into a built CLIP model, checking names and shapes.

    `visual_only` (network.init: False) loads only `visual.*`. A checkpoint without a text encoder
    (a Text4Vis video checkpoint) loads its `visual.*` and `logit_scale`, leaving the text encoder
    as built. `new_param_names` are ours (tokent1d, joint_st) and may be absent from the file.
    """
    model_sd = model.state_dict()
    sd = normalise_keys(read_state_dict(path, trusted_pickles), set(model_sd))
    has_text = any(k.startswith(("transformer.", "token_embedding")) for k in sd)
    if not any(k.startswith("visual.") for k in sd):
        raise UserError(f"network.pretrained: '{path}' has no `visual.*` weights; is it a CLIP checkpoint?")
    # wanted: model keys to fill; considered: file keys that must all find a place in the model
    if visual_only:
        wanted = {k for k in model_sd if k.startswith("visual.")}
        considered = {k for k in sd if k.startswith("visual.")}
    elif not has_text:
        log.warning("%s has no text encoder; loading its visual encoder and logit_scale only", path)
        wanted = {k for k in model_sd if k.startswith("visual.") or k == "logit_scale"}
        considered = {k for k in sd if k.startswith("visual.") or k == "logit_scale"}
    else:
        wanted = set(model_sd)
        considered = {k for k in sd if not k.startswith(_NOT_CLIP_PREFIXES)}
    unexpected = considered - set(model_sd)
    missing = wanted - set(sd) - new_param_names
    sd = {k: sd[k] for k in wanted & set(sd)}
    if "logit_scale" in sd and sd["logit_scale"].numel() == 1:
        sd["logit_scale"] = sd["logit_scale"].reshape(model_sd["logit_scale"].shape)
    bad_shape = {k for k, v in sd.items() if v.shape != model_sd[k].shape}
    if missing or unexpected or bad_shape:
        detail = []
        if bad_shape:
            k = sorted(bad_shape)[0]
            detail.append(
                f"{len(bad_shape)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs model "
                f"{tuple(model_sd[k].shape)})"
            )
        if missing:
            detail.append(f"missing in the file: {_list(missing)}")
        if unexpected:
            detail.append(f"not in the model: {_list(unexpected)}")
        raise UserError(f"network.pretrained: '{path}' does not fit network.arch '{arch}': " + "; ".join(detail))
    model.load_state_dict(sd, strict=False)


# ----------------------------------------------------------------------------------------------
# Identity of weights, for caches
# ----------------------------------------------------------------------------------------------


def file_fingerprint(path: Path) -> str:
    """Content fingerprint: SHA256 of the size and the first and last MiB (fast on GB files)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read())
    return digest.hexdigest()[:16]


def effective_pretrained(arch: str, pretrained: str | None) -> str | None:
    """What `pretrained` means once `arch` may be a file: a file given as `network.arch` is the
    weights (as in the original) unless `pretrained` is `none` or another file."""
    arch_path = Path(str(arch)).expanduser()
    if arch_path.is_file() and not is_random(pretrained) and not Path(str(pretrained)).expanduser().is_file():
        return str(arch_path)
    return pretrained


def weights_id(arch: str, pretrained: str | None, init: bool = True) -> str:
    """A stable id of the CLIP weights `create_clip(arch, pretrained, init=init)` builds.

    `none` -> 'none' (random weights are seeded, hence reproducible); a tag -> the tag; a file ->
    'file-<fingerprint>' (content-based, so a moved file keeps its id and an edited one changes it).
    `init=False` appends '+visual-only' because its text encoder is the random one.
    """
    pretrained = effective_pretrained(arch, pretrained)
    if is_random(pretrained):
        ident = "none"
    else:
        value = str(pretrained).strip()
        path = Path(value).expanduser()
        ident = f"file-{file_fingerprint(path)}" if path.is_file() else value.lower().replace("-", "_")
    if not init and ident != "none":
        ident += "+visual-only"
    return ident


__all__ = [
    "effective_pretrained",
    "is_random",
    "resolve_pretrained",
    "read_state_dict",
    "load_weights",
    "weights_id",
    "normalise_keys",
    "file_fingerprint",
]
