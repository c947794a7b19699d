"""The names a config or a command line may use for each closed option, declared once.

The config schema (`utils.config`) and the command-line parsers check values against these
tuples; the builders that dispatch on a name (`modules.heads`, `clip.temporal`,
`datasets.transforms`, `utils.precision`) import the same tuples, so a new option is added here
and in its builder, nowhere else.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("amp", "fp16", "bf16", "fp32")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
TEST_CROPS: tuple[int, ...] = (1, 3, 5, 10)
FUSIONS: tuple[str, ...] = ("embeddings", "scores")
SIM_HEADERS: tuple[str, ...] = ("None", "meanP", "Transf", "Conv_1D", "LSTM", "Transf_cls")
TEMPORAL_MODULES: tuple[bool | str, ...] = (False, "tsm", "tokenshift", "tokent1d")
CLASSIFIERS: tuple[str, ...] = ("text", "random", "orthogonal", "lda", "file")
LOSS_TYPES: tuple[str, ...] = ("CE", "NCE", "DS")
CONTRASTIVE_LOSSES: tuple[str, ...] = ("NCE", "DS")
ZEROSHOT_PROTOCOLS: tuple[str, ...] = ("full", "half", "splits")
