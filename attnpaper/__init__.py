"""attnpaper: the attention variants of the paper, plugged into transformers, and the experiment around them."""
from .models import (
    MODEL_ALIASES, OFFLINE_MODEL, RANDOM_DISTILBERT, VARIANTS, attention_modules, build_model, kernels_used,
    layer_plan, offline_model_dir,
)

__version__ = "0.1.0"
__all__ = [
    "MODEL_ALIASES", "OFFLINE_MODEL", "RANDOM_DISTILBERT", "VARIANTS", "attention_modules", "build_model",
    "kernels_used", "layer_plan", "offline_model_dir",
]
