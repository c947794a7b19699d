"""clip/pretrained.py: loading local files (state dict, safetensors, TorchScript, video checkpoints),
clear errors, the fast offline failure, and weights_id."""

from __future__ import annotations

import os
import shutil
import time

import open_clip
import pytest
import torch

import clip
from clip import pretrained as W
from clip.archs import model_config
from utils.errors import UserError

X = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
TEXT = clip.get_tokenizer("tiny")(["a video of a person dancing.", "a video of a person abseiling."])


@pytest.fixture(scope="module")
def source() -> open_clip.CLIP:
    """A tiny QuickGELU CLIP with weights unlike create_clip's seeded random ones."""
    torch.manual_seed(1234)
    model = open_clip.CLIP(**model_config("tiny")).eval()
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    return model


@pytest.fixture(scope="module")
def source_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(source.state_dict(), path)
    return path


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a.visual(X), b.visual(X)) and torch.equal(a.encode_text(TEXT), b.encode_text(TEXT))


def test_state_dict_file_loads_exactly(tmp_path, source, source_file):
    path = source_file
    model = clip.create_clip("tiny", str(path))
    assert _same_outputs(model, source)
    assert model.logit_scale.item() == pytest.approx(4.6052)


def test_safetensors_and_wrapped_state_dicts_load(tmp_path, source):
    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    assert _same_outputs(clip.create_clip("tiny", str(st)), source)
    wrapped = tmp_path / "wrapped.pt"  # open_clip training checkpoint: {'state_dict': {'module.*'}}
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    assert _same_outputs(clip.create_clip("tiny", str(wrapped)), source)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_archive_loads_exactly(tmp_path, source):
    """An OpenAI-style TorchScript archive: the scripted model plus input_resolution & co."""
    scripted_src = open_clip.CLIP(**model_config("tiny"))
    scripted_src.load_state_dict(source.state_dict())
    for name, value in (("input_resolution", 112), ("context_length", 77), ("vocab_size", 49408)):
        scripted_src.__dict__.pop(name, None)  # plain ints in open_clip, tensors in OpenAI's archives
        scripted_src.register_buffer(name, torch.tensor(value))
    path = tmp_path / "tiny_jit.pt"
    torch.jit.script(scripted_src).save(str(path))
    assert W._is_torchscript(path)
    assert _same_outputs(clip.create_clip("tiny", str(path)), source)


def test_video_checkpoint_loads_visual_and_logit_scale(tmp_path, source):
    """Our / the original's checkpoint: model_state_dict with visual.*, fusion_model.*, logit_scale."""
    sd = {f"module.{k}": v for k, v in source.state_dict().items() if k.startswith("visual.")}
    sd["module.logit_scale"] = torch.tensor(3.0)
    sd["module.fusion_model.frame_position_embeddings.weight"] = torch.zeros(77, 256)
    path = tmp_path / "video.pt"
    torch.save({"epoch": 1, "model_state_dict": sd}, path)
    model = clip.create_clip("tiny", str(path)).eval()
    random_text = clip.create_clip("tiny", "none").eval()
    with torch.no_grad():
        assert torch.equal(model.visual(X), source.visual(X))
        assert torch.equal(model.encode_text(TEXT), random_text.encode_text(TEXT))
    assert model.logit_scale.item() == 3.0


def test_init_false_loads_visual_only(tmp_path, source, source_file):
    path = source_file
    model = clip.create_clip("tiny", str(path), init=False).eval()
    random = clip.create_clip("tiny", "none").eval()
    with torch.no_grad():
        assert torch.equal(model.visual(X), source.visual(X))
        assert torch.equal(model.encode_text(TEXT), random.encode_text(TEXT))
        assert not torch.equal(model.encode_text(TEXT), source.encode_text(TEXT))
    assert model.logit_scale.item() == pytest.approx(random.logit_scale.item())


def test_temporal_models_load_plain_weights_and_keep_new_params(tmp_path, source, source_file):
    path = source_file
    t1d = clip.create_clip("tiny", str(path), tm="tokent1d", num_frames=2)
    assert torch.equal(t1d.visual.conv1.weight, source.visual.conv1.weight)
    assert t1d.visual.transformer.resblocks[0].control_point.conv.weight[0, 0].tolist() == [0.0, 0.0, 1.0]
    joint = clip.create_clip("tiny", str(path), joint_st=True, num_frames=2)
    assert torch.equal(joint.visual.proj, source.visual.proj)
    # a checkpoint that has the new parameters loads them too
    sd = joint.state_dict()
    sd["visual.time_embedding"] = torch.full((2, 256), 0.5)
    torch.save({"model_state_dict": sd}, tmp_path / "joint.pt")
    again = clip.create_clip("tiny", str(tmp_path / "joint.pt"), joint_st=True, num_frames=2)
    assert torch.equal(again.visual.time_embedding, torch.full((2, 256), 0.5))


def test_original_tsm_wrapper_names_are_mapped(tmp_path, source):
    """The original's TSM wrapped each ViT block as `resblocks.N.net.*`; such files still load."""
    sd = {
        k.replace("resblocks.0.", "resblocks.0.net.") if k.startswith("visual.") else k: v
        for k, v in source.state_dict().items()
    }
    assert "visual.transformer.resblocks.0.net.attn.in_proj_weight" in sd
    torch.save(sd, tmp_path / "orig_tsm.pt")
    model = clip.create_clip("tiny", str(tmp_path / "orig_tsm.pt"), tm="tsm", num_frames=2)
    assert torch.equal(
        model.visual.transformer.resblocks[0].attn.in_proj_weight,
        source.visual.transformer.resblocks[0].attn.in_proj_weight,
    )


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found") as err:
        clip.create_clip("tiny", str(tmp_path / "nope.pt"))
    assert "nope.pt" in str(err.value)
    with pytest.raises(UserError, match="is a folder"):
        clip.create_clip("tiny", str(tmp_path))


def test_file_for_another_arch_is_a_clear_error(tmp_path):
    rn = clip.create_clip("tiny-rn", "none")
    torch.save(rn.state_dict(), tmp_path / "rn.pt")
    with pytest.raises(UserError, match="does not fit network.arch 'tiny'") as err:
        clip.create_clip("tiny", str(tmp_path / "rn.pt"))
    assert "visual." in str(err.value)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(UserError, match="junk.pt"):
        clip.create_clip("tiny", str(tmp_path / "junk.pt"))
    torch.save({"fusion_model.x": torch.zeros(2)}, tmp_path / "head.pt")
    with pytest.raises(UserError, match="no `visual"):
        clip.create_clip("tiny", str(tmp_path / "head.pt"))


def test_unknown_tag_and_tiny_openai_are_clear_errors():
    with pytest.raises(UserError, match="none"):
        clip.create_clip("tiny", "openai")
    with pytest.raises(UserError, match="laion400m_e32"):  # lists the arch's tags
        clip.create_clip("ViT-B/32", "laion9000")


def test_openai_offline_fails_fast_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        clip.create_clip("ViT-B/32", "openai", files=clip.WeightFiles(str(tmp_path)))
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "network.pretrained=/path/to" in msg and "ViT-B/32" in msg
    assert "(HF_HUB_OFFLINE is set and they are not in the cache)" in msg
    assert "unset HF_HUB_OFFLINE and run once with network access" in msg
    assert "HF_HUB_OFFLINE=1" not in msg  # it is set already: never advised


def test_no_network_fails_fast_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    probed = []

    def refuse(address, timeout=None):
        probed.append((address, timeout))
        raise OSError("network unreachable")

    monkeypatch.setattr(W.socket, "create_connection", refuse)
    monkeypatch.setattr(W, "download_pretrained", lambda *a, **k: pytest.fail("must not try to download"))
    with pytest.raises(UserError, match="no network") as err:
        clip.create_clip("RN50", "openai", files=clip.WeightFiles(str(tmp_path)))
    assert probed and probed[0][1] == W.PROBE_TIMEOUT_S <= 5
    assert "Set HF_HUB_OFFLINE=1 to skip the network check entirely" in str(err.value)
    assert "unset HF_HUB_OFFLINE" not in str(err.value)


def test_probe_goes_to_the_proxy_when_one_is_set(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert W._probe_target({"hf_hub": "timm/x/"}) == ("proxy.example", 3128)
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    assert W._probe_target({"url": "https://openaipublic.azureedge.net/clip/a/b.pt"}) == (
        "openaipublic.azureedge.net",
        443,
    )


def test_cached_openai_file_is_used_without_network(tmp_path, monkeypatch, source):
    """A tag's file already in the cache (here: OpenAI's ~/.cache/clip layout) needs no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"url": "https://example.org/weights/tiny.pt"}
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    assert W._cached_file(cfg, str(tmp_path)) == tmp_path / "tiny.pt"
    assert W._cached_file({"url": "https://example.org/weights/other.pt"}, str(tmp_path)) is None


def test_weights_id_is_stable_and_content_based(tmp_path, source):
    assert clip.weights_id("tiny", "none") == "none"
    assert clip.weights_id("ViT-B/32", "openai") == "openai"
    assert clip.weights_id("ViT-B/32", "openai", init=False) == "openai+visual-only"
    a = tmp_path / "a.pt"
    torch.save(source.state_dict(), a)
    ida = clip.weights_id("tiny", str(a))
    assert ida.startswith("file-") and ida == clip.weights_id("tiny", str(a))
    b = tmp_path / "b.pt"
    shutil.copy(a, b)
    assert clip.weights_id("tiny", str(b)) == ida  # same content, other path
    sd = source.state_dict()
    sd["logit_scale"] = torch.tensor(1.0)
    torch.save(sd, b)
    assert clip.weights_id("tiny", str(b)) != ida  # other content


def test_arch_given_as_a_weights_file_infers_the_architecture(tmp_path, source, source_file):
    """The original's `network.arch` could be a path: the arch comes from the tensor shapes."""
    assert clip.resolve_arch(str(source_file)) == "text4vis-tiny"
    model = clip.create_clip(str(source_file), "openai")  # the file is the weights
    assert _same_outputs(model, source)
    assert clip.weights_id(str(source_file), "openai") == clip.weights_id("tiny", str(source_file))
    assert clip.weights_id(str(source_file), "none") == "none"
    rn = clip.create_clip("tiny-rn", "none")
    torch.save(
        {"model_state_dict": {k: v for k, v in rn.state_dict().items() if k.startswith("visual.")}},
        tmp_path / "rn_video.pt",
    )
    assert clip.resolve_arch(str(tmp_path / "rn_video.pt")) == "text4vis-tiny-rn"
    assert clip.get_tokenizer(str(source_file))(["a"]).shape == (1, 77)
    torch.save({"visual.proj": torch.zeros(3, 3)}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="cannot tell the CLIP architecture"):
        clip.resolve_arch(str(tmp_path / "odd.pt"))


def test_extra_visual_blocks_in_the_file_are_not_dropped_silently(tmp_path, source):
    sd = dict(source.state_dict())
    for k, v in source.state_dict().items():
        if k.startswith("visual.transformer.resblocks.3."):
            sd[k.replace("resblocks.3.", "resblocks.4.")] = v  # a deeper model's weights
    torch.save(sd, tmp_path / "deeper.pt")
    for init in (True, False):
        with pytest.raises(UserError, match="not in the model: visual.transformer.resblocks.4"):
            clip.create_clip("tiny", str(tmp_path / "deeper.pt"), init=init)


class _Meta:  # a Python object next to the weights, as some training scripts save
    pass


class _Payload:  # what a crafted file holds: unpickling it calls open(marker, "w")
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_python_objects_are_refused_unless_trusted_on_the_command_line(tmp_path, source, caplog):
    path = tmp_path / "with_args.pt"
    torch.save({"args": _Meta(), "state_dict": source.state_dict()}, path)
    with pytest.raises(UserError, match=r"with_args.pt' holds Python objects.*--trust_pickle .*with_args.pt"):
        clip.create_clip("tiny", str(path))
    with pytest.raises(UserError, match="holds Python objects"):  # as network.arch too
        clip.create_clip(str(path), "none")
    # the user names the file: it loads (a relative spelling of the same file counts)
    model = clip.create_clip("tiny", str(path), files=clip.WeightFiles(trusted_pickles=[os.path.relpath(path)]))
    assert _same_outputs(model, source)
    assert "weights_only=False as asked by --trust_pickle" in caplog.text


def test_crafted_pickle_payload_never_runs(tmp_path, source):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload(marker), "state_dict": source.state_dict()}, evil)
    other = tmp_path / "other.pt"
    for pretrained in (str(evil),):
        with pytest.raises(UserError, match="holds Python objects"):
            clip.create_clip(
                "tiny", pretrained, files=clip.WeightFiles(trusted_pickles=[str(other)])
            )  # trusting another file is no help
    assert not marker.exists()
