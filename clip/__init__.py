"""CLIP through open_clip: the original's arch names (QuickGELU), weights loading that fails fast
offline, and the in-backbone temporal options (`tm`, `joint_st`, drop path). See docs/clip.md.

Which module does what, and who calls it: docs/map.md.
"""

from .archs import arch_names, resolve_arch
from .factory import VisualTraining, WeightFiles, create_clip, embed_dim, get_tokenizer, new_param_names, text_width
from .pretrained import normalise_keys, read_state_dict, weights_id
from .temporal import drop_rates, full_lr_param_names

__all__ = [
    "VisualTraining",
    "WeightFiles",
    "arch_names",
    "create_clip",
    "drop_rates",
    "embed_dim",
    "full_lr_param_names",
    "get_tokenizer",
    "new_param_names",
    "normalise_keys",
    "read_state_dict",
    "resolve_arch",
    "text_width",
    "weights_id",
]
