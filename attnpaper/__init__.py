"""attnpaper: the attention variants of the paper, plugged into transformers, and the experiment around them.

Importing the package registers its model types with transformers' Auto classes (attnpaper.model.auto),
so ``AutoModelForSequenceClassification.from_pretrained`` reloads a saved attnpaper model. The
command line (``python -m attnpaper``, ``attnpaper``) skips that import: its --help stays instant,
and each command imports what it needs. Telling the two apart is the one place where the package
reads process state (``sys.argv``, below): Python imports this file before ``__main__`` runs.
"""

import importlib
import sys
import warnings
from pathlib import Path

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


# While `python -m attnpaper ...` locates its module, sys.argv[0] is "-m"; the console script is "attnpaper".
if sys.argv[:1] != ["-m"] and Path(sys.argv[0] if sys.argv else "").name != "attnpaper":
    from .analysis.notebook import quiet

    with warnings.catch_warnings():  # transformers imports tqdm.auto, whose notice a notebook would print
        quiet()
        from .model import auto  # noqa: F401  (registers attnpaper-bert and attnpaper-distilbert)
