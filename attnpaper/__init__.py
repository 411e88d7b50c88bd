"""attnpaper: the attention variants of the paper, plugged into transformers, and the experiment around them.

Importing the package registers its model types with transformers' Auto classes, so
``AutoModelForSequenceClassification.from_pretrained`` reloads a saved attnpaper model, in every
process, however it was started. It imports no transformers to do so (attnpaper.model.after_import):
it registers at once where transformers' Auto classes are loaded, else the moment they load. The
command line (``python -m attnpaper``) thus stays instant, and each command imports what it needs.
"""

import contextlib
import importlib
import warnings

from .analysis.notebook import quiet
from .model.after_import import watch
from .variants import MODEL_ALIASES, OFFLINE_MODEL, RANDOM_DISTILBERT, VARIANTS

__version__ = "0.1.0"
_LAZY = {
    "attention_modules": "model.auto",
    "build_model": "model.build",
    "kernels_used": "model.build",
    "layer_plan": "model.build",
    "offline_model_dir": "model.build",
}
__all__ = ["MODEL_ALIASES", "OFFLINE_MODEL", "RANDOM_DISTILBERT", "VARIANTS", *_LAZY]


def __getattr__(name):
    """Import the heavy parts (torch, transformers) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _quiet():
    """While tqdm.autonotebook loads (transformers imports it): its one notice, which a notebook would print."""
    with warnings.catch_warnings():
        quiet()
        yield


watch(during={"tqdm.autonotebook": _quiet})  # registers the attnpaper-* model types, now or later
