"""Register attnpaper's model types with transformers' Auto classes without importing transformers.

``watch()`` (``import attnpaper`` calls it) puts a finder first on ``sys.meta_path`` that sees every
transformers and attnpaper module load. When the outermost such import finishes, none is half-done,
and it registers the types with the Auto classes loaded by then. Any process that reaches AutoConfig or
AutoModelForSequenceClassification finds them, however it started, and ``python -m attnpaper --help``,
which imports no transformers, stays instant. (Registering as each Auto module loads would import
half-done modules: configuration_auto loads midway through transformers' modeling_utils, say.)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import sys
import threading

CONFIGS_AT = "transformers.models.auto.configuration_auto"
"""Where AutoConfig lives: once loaded, the config classes are registered (attnpaper.model.configs)."""
MODELS_AT = "transformers.models.auto.modeling_auto"
"""Where AutoModelForSequenceClassification lives: once loaded, the models too (attnpaper.model.auto)."""
PACKAGES = ("transformers", "attnpaper")
"""The top-level packages whose imports are watched: registering imports from both."""


def register_loaded() -> None:
    """Register the types with the Auto classes loaded so far (idempotent, and cheap once imported)."""
    if CONFIGS_AT in sys.modules:
        importlib.import_module(".configs", __package__).register_configs()
    if MODELS_AT in sys.modules:
        importlib.import_module(".auto", __package__).register_auto_classes()


class _Loader(importlib.abc.Loader):
    """A module's own loader, run inside ``during()``, that counts imports in progress in this thread
    and registers when the outermost one finishes; the rest (get_source, ...) is the loader's."""

    def __init__(self, loader, finder, during):
        self.loader, self.finder, self.during = loader, finder, during

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        state = self.finder.state
        state.depth = getattr(state, "depth", 0) + 1
        try:
            with self.during():
                self.loader.exec_module(module)
        finally:
            state.depth -= 1
        if state.depth == 0 and not getattr(state, "registering", False):
            state.registering = True  # its own imports finish at depth 0 too: register once, here
            try:
                register_loaded()
            finally:
                state.registering = False

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module it wraps the spec the other finders return."""

    def __init__(self):
        self.state = threading.local()
        self.during = {}  # module name -> context manager factory its code runs in

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] not in PACKAGES and name not in self.during:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self, self.during.get(name, contextlib.nullcontext))
                return spec
        return None


_FINDER = _Finder()


def watch(during: dict | None = None) -> None:
    """Register now with whatever Auto classes are loaded, and from now on as they load.

    during: {module name: context manager factory} to run that module's code in when it loads
    (a warnings filter, say); such a module is watched even outside PACKAGES.
    """
    _FINDER.during.update(during or {})
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    register_loaded()
