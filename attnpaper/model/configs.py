"""attnpaper's config classes ("attnpaper-bert", "attnpaper-distilbert"), apart from the models.

They import no torch and no modeling code, so they can be registered with AutoConfig the moment
transformers' configuration_auto loads, which happens midway through transformers' own modeling_utils
import (see attnpaper.model.after_import); attnpaper.model.auto holds the models and the rest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers.models.auto.configuration_auto import AutoConfig
from transformers.models.bert.configuration_bert import BertConfig
from transformers.models.distilbert.configuration_distilbert import DistilBertConfig

from ..variants import variant as variant_row

REMOTE_FILE = "attnpaper_model.py"
"""The module a saved flash/linear/hybrid model carries: a copy of remote_code.py, named in its auto_map."""


class _Portable:
    """Config mixin: save as a checkpoint that others can open (see attnpaper.model.auto's docstring)."""

    def to_dict(self):
        d = super().to_dict()
        d.pop("auto_map", None)
        row = variant_row(self.attnpaper["variant"])
        if row.layers == "builtin":  # transformers' own attention: a plain model
            d["model_type"] = type(self).model_type.removeprefix("attnpaper-")
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


class AttnpaperBertConfig(_Portable, BertConfig):
    """A BERT config that also says which attention each layer runs (``attnpaper``)."""

    model_type = "attnpaper-bert"

    def __init__(self, attnpaper=None, **kwargs):
        super().__init__(**kwargs)
        self.attnpaper = attnpaper or {"variant": "sdpa"}


class AttnpaperDistilBertConfig(_Portable, DistilBertConfig):
    """A DistilBERT config that also says which attention each layer runs (``attnpaper``)."""

    model_type = "attnpaper-distilbert"

    def __init__(self, attnpaper=None, **kwargs):
        super().__init__(**kwargs)
        self.attnpaper = attnpaper or {"variant": "sdpa"}


CONFIGS = {"bert": AttnpaperBertConfig, "distilbert": AttnpaperDistilBertConfig}


def model_class_name(config_class: type) -> str:
    """The classifier that goes with a config class (attnpaper.model.auto defines it under this name)."""
    return config_class.__name__.removesuffix("Config") + "ForSequenceClassification"


def register_configs() -> None:
    """Register both model types with AutoConfig (again after a reload of transformers: idempotent)."""
    for config in CONFIGS.values():
        AutoConfig.register(config.model_type, config, exist_ok=True)
