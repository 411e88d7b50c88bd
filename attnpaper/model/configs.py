"""attnpaper's config classes (attnpaper-bert, -distilbert, -roberta: one per model.families entry), apart
from the models.

They import no torch and no modeling code, so they can be registered with AutoConfig the moment
transformers' configuration_auto loads, which happens midway through transformers' own modeling_utils
import (see attnpaper.model.after_import); attnpaper.model.auto holds the models and the rest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers.models.auto.configuration_auto import CONFIG_MAPPING, AutoConfig

from ..variants import variant as variant_row
from .families import FAMILIES, PREFIX

REMOTE_FILE = "attnpaper_model.py"
"""The module a saved flash/linear/hybrid model carries: a copy of remote_code.py, named in its auto_map."""


class _Portable:
    """Config mixin: says which attention each layer runs (``attnpaper``), and saves as a checkpoint that
    others can open (see attnpaper.model.auto's docstring)."""

    def __init__(self, attnpaper=None, **kwargs):
        super().__init__(**kwargs)
        self.attnpaper = attnpaper or {"variant": "sdpa"}

    def to_dict(self):
        d = super().to_dict()
        d.pop("auto_map", None)
        row = variant_row(self.attnpaper["variant"])
        if row.layers == "builtin":  # transformers' own attention: a plain model
            d["model_type"] = type(self).model_type.removeprefix(PREFIX)
            d["architectures"] = [a.removeprefix("Attnpaper") for a in d.get("architectures") or []] or None
            d["attn_implementation"] = row.implementation
        else:
            stem = Path(REMOTE_FILE).stem
            d["auto_map"] = {
                "AutoConfig": f"{stem}.{type(self).__name__}",
                "AutoModelForSequenceClassification": f"{stem}.{model_class_name(type(self))}",
            }
        return d

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save config.json; a variant also gets the module its auto_map names (model saves come here too)."""
        if variant_row(self.attnpaper["variant"]).layers != "builtin":
            os.makedirs(save_directory, exist_ok=True)
            shutil.copyfile(Path(__file__).with_name("remote_code.py"), Path(save_directory) / REMOTE_FILE)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoConfig"):
        """Ignored: after a trust_remote_code load transformers calls this, and each later save would then
        copy auto.py (whose package-relative imports cannot run alone) beside the weights."""


def _config_class(model_type: str) -> type:
    """Attnpaper<Name>Config: transformers' config of ``model_type`` that also carries the variant."""
    base = CONFIG_MAPPING[model_type]
    name = f"Attnpaper{base.__name__}"
    doc = f"A {base.__name__} that also says which attention each layer runs (``attnpaper``)."
    return type(name, (_Portable, base), {"model_type": PREFIX + model_type, "__module__": __name__, "__doc__": doc})


CONFIGS = {name: _config_class(name) for name in FAMILIES}
"""The config class of each family, by transformers' model type; each is also a name of this module."""
globals().update({c.__name__: c for c in CONFIGS.values()})  # AttnpaperBertConfig, ...: saved auto_maps name them


def model_class_name(config_class: type) -> str:
    """The classifier that goes with a config class (attnpaper.model.auto defines it under this name)."""
    return config_class.__name__.removesuffix("Config") + "ForSequenceClassification"


def register_configs() -> None:
    """Register every model type with AutoConfig (again after a reload of transformers: idempotent)."""
    for config in CONFIGS.values():
        AutoConfig.register(config.model_type, config, exist_ok=True)
