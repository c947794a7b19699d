"""The config schema: defaults, unknown keys with hints, types, overrides and the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils.config import (
    Config,
    defaults,
    dump,
    from_dict,
    keys_markdown,
    load_config,
    parse_opts,
    replace,
    resolve,
    to_dict,
)
from utils.config_schema import (
    EACH,
    FLAT_SCHEMA,
    POSITIVE,
    RANGES,
    SECTIONS,
    DataConfig,
    LoggingConfig,
    NetworkConfig,
    RandAugConfig,
    SolverConfig,
    flatten,
)
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

ORIGINAL_STYLE = """
resume:
pretrain:
seed: 1024
data:
    dataset: k400
    modality: RGB
    num_segments: 8
    seg_length: 1
    batch_size: 32
    workers: 4
    num_classes: 400
    image_tmpl: 'img_{:05d}.jpg'
    train_root: '/data/k400/train'
    val_root: '/data/k400/val'
    train_list: 'lists/k400/kinetics_rgb_train_se320.txt'
    val_list: 'lists/k400/kinetics_rgb_val_se320.txt'
    label_list: 'lists/kinetics_400_labels.csv'
    input_size: 224
    random_shift: True
    randaug:
        N: 2
        M: 9
network:
    arch: ViT-B/32
    init: True
    tm: False
    drop_out: 0.0
    emb_dropout: 0.0
    type: clip_k400
    sim_header: Transf
    joint_st: False
    drop: 0
    fix_text: True
    fix_video: False
solver:
    type: cosine
    epochs: 30
    start_epoch: 0
    epoch_offset: 0
    optim: adamw
    lr: 5.e-5
    lr_warmup_step: 5
    weight_decay: 0.2
    loss_type: CE
    evaluate: False
    clip_ratio: 0.1
    grad_accumulation_steps: 1
logging:
    print_freq: 10
    eval_freq: 1
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "k400.yaml"
    path.write_text(ORIGINAL_STYLE)
    return path


def test_original_style_config_loads_with_defaults(cfg_file: Path) -> None:
    cfg = load_config(cfg_file)
    assert cfg.data.num_segments == 8
    assert cfg.solver.lr == pytest.approx(5e-5)
    assert cfg.network.sim_header == "Transf"
    assert cfg.resume is None and cfg.pretrain is None
    # keys absent from the file come from the schema
    assert cfg.network.pretrained == "openai"
    assert cfg.solver.lr_step_every == 10
    assert cfg.data.scale_size == 256
    assert cfg.data.randaug.enable is False and cfg.data.randaug.N == 2


def test_every_schema_key_is_present(cfg_file: Path) -> None:
    cfg = load_config(cfg_file)
    for key in FLAT_SCHEMA:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)


def test_missing_key_access_raises_instead_of_an_empty_value(cfg_file: Path) -> None:
    cfg = load_config(cfg_file)
    with pytest.raises((AttributeError, KeyError)):
        cfg.data.not_a_key  # noqa: B018


def test_config_is_frozen_and_typed_per_section(cfg_file: Path) -> None:
    cfg = load_config(cfg_file)
    assert isinstance(cfg, Config) and isinstance(cfg.data, DataConfig) and isinstance(cfg.data.randaug, RandAugConfig)
    assert isinstance(cfg.network, NetworkConfig) and isinstance(cfg.solver, SolverConfig)
    assert isinstance(cfg.logging, LoggingConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.batch_size = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 4  # type: ignore[misc]


def test_replace_makes_a_variant_and_leaves_the_original(cfg_file: Path) -> None:
    cfg = load_config(cfg_file)
    variant = replace(cfg, seed=7, **{"data.val_list": "other.txt", "data.randaug.N": 5, "network.tm": "tsm"})
    assert (variant.seed, variant.data.val_list, variant.data.randaug.N, variant.network.tm) == (
        7,
        "other.txt",
        5,
        "tsm",
    )
    assert (cfg.seed, cfg.data.val_list, cfg.data.randaug.N, cfg.network.tm) == (
        1024,
        "lists/k400/kinetics_rgb_val_se320.txt",
        2,
        False,
    )
    changed = {k for k, v in flatten(to_dict(variant)).items() if flatten(to_dict(cfg))[k] != v}
    assert changed == {"seed", "data.val_list", "data.randaug.N", "network.tm"}
    assert variant.solver is cfg.solver  # untouched sections are shared, not copied
    with pytest.raises(TypeError):
        replace(cfg, **{"data.batchsize": 4})


def test_to_dict_is_the_resolved_dict_and_from_dict_round_trips(cfg_file: Path) -> None:
    cfg = load_config(cfg_file, ["data.flip_label_map={86: 87, 87: 86}"])
    plain = to_dict(cfg)
    assert plain == resolve(yaml.safe_load(ORIGINAL_STYLE), "x", ["data.flip_label_map={86: 87, 87: 86}"])
    assert list(plain) == ["seed", "resume", "pretrain", "data", "network", "solver", "logging"]
    assert list(flatten(plain, SECTIONS.__contains__)) == list(FLAT_SCHEMA)
    assert from_dict(plain, "checkpoint") == cfg
    plain["data"]["batch_size"] = 3  # the dict is a copy: the frozen config is unchanged
    assert cfg.data.batch_size == 32
    assert yaml.safe_load(dump(cfg)) == to_dict(cfg)
    with pytest.raises(
        UserError, match=r"checkpoint: unknown config key 'data.batchsize'; did you mean 'data.batch_size'"
    ):
        from_dict({"data": {"batchsize": 4}}, "checkpoint")


def test_schema_is_derived_from_the_dataclasses() -> None:
    assert FLAT_SCHEMA["data.scale_size"].types == (int, list) and FLAT_SCHEMA["data.scale_size"].nullable
    assert FLAT_SCHEMA["network.tm"].types == (bool, str) and not FLAT_SCHEMA["network.tm"].nullable
    assert FLAT_SCHEMA["solver.betas"].default == [0.9, 0.999]
    assert Config().solver.betas == [0.9, 0.999] and Config().solver.betas is not Config().solver.betas
    assert RANGES["data.randaug.M"] == (0, 30) and "solver.betas" in EACH and "solver.eps" in POSITIVE
    assert {"data", "data.randaug", "network", "solver", "logging"} == SECTIONS
    assert to_dict(Config()) == {k: v for k, v in defaults().items()}


def test_typo_names_key_file_and_closest(cfg_file: Path) -> None:
    cfg_file.write_text(ORIGINAL_STYLE.replace("num_segments: 8", "num_segment: 8"))
    with pytest.raises(UserError) as err:
        load_config(cfg_file)
    msg = str(err.value)
    assert "data.num_segment'" in msg and str(cfg_file) in msg and "data.num_segments" in msg


def test_wrong_type_is_an_error(cfg_file: Path) -> None:
    cfg_file.write_text(ORIGINAL_STYLE.replace("batch_size: 32", "batch_size: thirty"))
    with pytest.raises(UserError, match=r"data\.batch_size.*expected int"):
        load_config(cfg_file)


def test_bad_choice_is_an_error(cfg_file: Path) -> None:
    cfg_file.write_text(ORIGINAL_STYLE.replace("sim_header: Transf", "sim_header: Transformer"))
    with pytest.raises(UserError, match="network.sim_header"):
        load_config(cfg_file)


def test_opts_override_nested_keys_with_yaml_types(cfg_file: Path) -> None:
    cfg = load_config(
        cfg_file,
        [
            "solver.epochs=1",
            "data.batch_size=4",
            "network.tm=tsm",
            "solver.betas=[0.9, 0.98]",
            "data.random_shift=false",
            "solver.lr=1e-3",
        ],
    )
    assert cfg.solver.epochs == 1 and isinstance(cfg.solver.epochs, int)
    assert cfg.data.batch_size == 4
    assert cfg.network.tm == "tsm"
    assert cfg.solver.betas == [0.9, 0.98]
    assert cfg.data.random_shift is False
    assert cfg.solver.lr == pytest.approx(1e-3)


def test_opts_unknown_key_and_bad_syntax(cfg_file: Path) -> None:
    with pytest.raises(UserError, match="solver.epoch'.*solver.epochs"):
        load_config(cfg_file, ["solver.epoch=3"])
    with pytest.raises(UserError, match="key=value"):
        load_config(cfg_file, ["solver.epochs"])


def test_parse_opts_types() -> None:
    assert parse_opts(["a=1", "b=1.5", "c=true", "d=abc", "e=null"]) == [
        ("a", 1),
        ("b", 1.5),
        ("c", True),
        ("d", "abc"),
        ("e", None),
    ]


def test_scale_size_follows_input_size(cfg_file: Path) -> None:
    assert load_config(cfg_file, ["data.input_size=336"]).data.scale_size == 336
    assert load_config(cfg_file, ["data.input_size=336", "data.scale_size=384"]).data.scale_size == 384


def test_classifier_file_required_for_lda(cfg_file: Path) -> None:
    with pytest.raises(UserError, match="classifier_file"):
        load_config(cfg_file, ["network.classifier=lda"])


def test_cli_prints_resolved_yaml_and_fails_cleanly(cfg_file: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "utils.config", str(cfg_file), "--opts", "solver.epochs=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    resolved = yaml.safe_load(out.stdout)
    assert resolved["solver"]["epochs"] == 2 and resolved["network"]["pretrained"] == "openai"
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  num_segment: 8\n")
    res = subprocess.run([sys.executable, "-m", "utils.config", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "did you mean 'data.num_segments'" in res.stderr


def test_keys_table_lists_every_key() -> None:
    table = keys_markdown()
    for key in FLAT_SCHEMA:
        assert f"| `{key}` |" in table


def test_readme_key_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert keys_markdown() in readme, "README key table is stale: run python -m utils.config --update-readme README.md"


@pytest.mark.parametrize(
    "opt,message",
    [
        ("solver.epochs=-1", "'solver.epochs' has value -1; it must be >= 1"),
        ("solver.epochs=0", "'solver.epochs' has value 0; it must be >= 1"),
        ("data.batch_size=0", "'data.batch_size' has value 0; it must be >= 1"),
        ("data.workers=-2", "'data.workers' has value -2; it must be >= 0"),
        ("solver.lr=-0.1", "'solver.lr' has value -0.1; it must be >= 0"),
        ("data.flip_prob=1.5", "'data.flip_prob' has value 1.5; it must be >= 0 and <= 1"),
        ("network.drop_out=1.0", "'network.drop_out' has value 1.0; it must be >= 0 and < 1"),
        ("solver.eps=0", "'solver.eps' has value 0.0; it must be > 0"),
        ("solver.grad_accumulation_steps=0", "'solver.grad_accumulation_steps' has value 0; it must be >= 1"),
        ("logging.eval_freq=0", "'logging.eval_freq' has value 0; it must be >= 1"),
        ("solver.lr=.inf", "'solver.lr' has value inf; it must be a finite number >= 0 and <= 1"),
        ("solver.lr=.nan", "'solver.lr' has value nan; it must be a finite number >= 0 and <= 1"),
        ("solver.lr=1e30", "'solver.lr' has value 1e+30; it must be >= 0 and <= 1"),
        ("solver.weight_decay=-.inf", "'solver.weight_decay' has value -inf; it must be a finite number >= 0"),
        ("solver.betas=[1.5,0.9]", "'solver.betas' has value [1.5, 0.9]; each element must be >= 0 and < 1"),
        ("solver.betas=[0.9,1]", "'solver.betas' has value [0.9, 1]; each element must be >= 0 and < 1"),
        ("solver.betas=[0.9,x]", "'solver.betas' has value [0.9, 'x']; each element must be a number >= 0 and < 1"),
        ("solver.lr_decay_step=[5,0]", "'solver.lr_decay_step' has value [5, 0]; each element must be >= 1"),
        ("solver.lr_decay_factor=2.0", "'solver.lr_decay_factor' has value 2.0; it must be > 0 and <= 1"),
        ("solver.skip_nonfinite=-1", "'solver.skip_nonfinite' has value -1; it must be >= 0"),
        ("data.shuffle_buffer=100001", "'data.shuffle_buffer' has value 100001; it must be >= 0 and <= 100000"),
        ("logging.data_wait_alarm=1.5", "'logging.data_wait_alarm' has value 1.5; it must be >= 0 and <= 1"),
        ("seed=-1", "'seed' has value -1; it must be >= 0 and <= 4294967295"),
    ],
)
def test_numeric_ranges_checked_at_load(tmp_path, opt, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  dataset: x\n")
    with pytest.raises(UserError) as err:
        load_config(cfg, [opt])
    assert message in str(err.value) and str(cfg) in str(err.value)


def test_every_range_names_a_numeric_key():
    from utils.config_schema import EACH, RANGES

    for key in RANGES:
        types = FLAT_SCHEMA[key].types
        assert key in FLAT_SCHEMA and (int in types or float in types or key in EACH), key


def test_every_numeric_key_has_a_range_checked_before_anything_runs():
    """Issue 20: every numeric key (and every list of numbers) has a documented range."""
    from utils.config_schema import EACH, RANGES

    numeric = {k for k, spec in FLAT_SCHEMA.items() if (int in spec.types or float in spec.types)}
    numeric -= {"data.seg_length"}  # a choice of one value, (1,)
    assert numeric - set(RANGES) == set()
    lists_of_numbers = {k for k, spec in FLAT_SCHEMA.items() if list in spec.types and k != "network.templates"}
    assert lists_of_numbers <= EACH <= set(RANGES)


def test_two_betas_and_a_start_epoch_below_the_epochs(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  dataset: x\n")
    with pytest.raises(UserError, match="'solver.betas' has value \\[0.9\\]; it must be two numbers"):
        load_config(cfg, ["solver.betas=[0.9]"])
    with pytest.raises(UserError, match="solver.start_epoch 3 must be below solver.epochs 3"):
        load_config(cfg, ["solver.epochs=3", "solver.start_epoch=3"])
    assert load_config(cfg, ["solver.betas=[0, 0.98]", "solver.lr=1"]).solver.betas == [0, 0.98]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "the config file is empty"),
        ("# only a comment\n", "the config file is empty"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("lr: 0.1\n", "unknown config key 'lr'; did you mean 'solver.lr'?"),
        ("data:\n  lr: 0.1\n", "unknown config key 'data.lr'; did you mean 'solver.lr'?"),
        ("batch_size: 4\n", "did you mean 'data.batch_size'?"),
        ("solver:\n  epoch: 3\n", "did you mean 'solver.epochs'?"),
        ("data: [1\n", "not valid YAML"),
    ],
)
def test_bad_config_files_one_clear_line(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(cfg)
    assert message in str(err.value) and str(cfg) in str(err.value)
    assert "\n" not in str(err.value)


def test_resume_differences_split_allowed_and_refused():
    from utils.config import resolve, resume_differences

    old = resolve({"solver": {"lr": 1e-3, "epochs": 2}}, "old")
    new = resolve({"solver": {"lr": 5e-2, "epochs": 4}, "data": {"workers": 0}, "resume": "auto"}, "new")
    refused, allowed = resume_differences(old, new)
    assert refused == ["solver.lr: 0.001 -> 0.05"]
    assert allowed == ["resume: None -> 'auto'", "data.workers: 4 -> 0", "solver.epochs: 2 -> 4"]


def test_update_readme_rewrites_only_the_table(tmp_path):
    from utils.config import update_key_table

    doc = tmp_path / "R.md"
    doc.write_text("# t\n\n| key | default | meaning |\n|---|---|---|\n| `old` | `1` | gone |\n\nafter\n")
    update_key_table(doc)
    text = doc.read_text()
    assert keys_markdown() in text and "`old`" not in text and text.endswith("\n\nafter\n")
