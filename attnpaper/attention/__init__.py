"""The attention mechanisms: reference softmax, exact fused kernels, linear attention, and their plug."""

from ..variants import FEATURE_MAPS
from .exact import FLASH_BACKENDS, exact_attention, has_flash_attn, has_torch_varlen, unpad, varlen_attention
from .linear import elu_features, favor_features, linear_attention, orthogonal_gaussian
from .plug import ATTN_NAME, LayerAttention, redraw_features, register
from .softmax import softmax_attention

__all__ = [
    "ATTN_NAME",
    "FEATURE_MAPS",
    "FLASH_BACKENDS",
    "LayerAttention",
    "elu_features",
    "exact_attention",
    "favor_features",
    "has_flash_attn",
    "has_torch_varlen",
    "linear_attention",
    "orthogonal_gaussian",
    "redraw_features",
    "register",
    "softmax_attention",
    "unpad",
    "varlen_attention",
]
