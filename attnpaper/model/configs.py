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

from ..variants import TABLE
from ..variants import variant as variant_row
from .families import FAMILIES, HEADS, PREFIX

REMOTE_FILE = "attnpaper_model.py"
"""The module a saved flash/linear/hybrid model carries: a copy of remote_code.py, named in its auto_map."""


class _Portable:
    """Config mixin: says which attention each layer runs (``attnpaper``), and saves as a checkpoint that
    others can open (see attnpaper.model.auto's docstring)."""

    def __post_init__(self, attnpaper=None, **kwargs):
        """transformers' configs are dataclasses: extra keyword arguments (``attnpaper``) arrive here."""
        super().__post_init__(**kwargs)
        self.attnpaper = complete(attnpaper or {"variant": "sdpa"}, self.num_hidden_layers)

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
            d["auto_map"] = {"AutoConfig": f"{stem}.{type(self).__name__}"} | {
                auto: f"{stem}.{model_class_name(type(self), auto)}" for auto in HEADS
            }
        return d

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """A saved config, refused in one line (before any weights load) when its attnpaper settings are
        missing or do not fit the model: loaded anyway, it would run sdpa or fail at the first forward."""
        if not isinstance(config_dict.get("attnpaper"), dict):
            plain = cls.model_type.removeprefix(PREFIX)
            raise ValueError(
                f"this {cls.model_type} config has no 'attnpaper' settings (variant, layers), so which attention "
                f"its layers run is unknown; restore the 'attnpaper' key that save_pretrained wrote in config.json, "
                f"or set model_type to {plain!r} to load it as a plain {plain} with softmax attention"
            )
        variant_of(config_dict["attnpaper"], cls.model_type)  # before the config is built (and logged)
        out = super().from_dict(config_dict, **kwargs)
        check_settings(out[0] if isinstance(out, tuple) else out)
        return out

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


def complete(spec: dict, num_layers: int) -> dict:
    """Settings that name only a variant (``AutoConfig.for_model(..., attnpaper={"variant": "linear"})``)
    completed as build_model would: the variant's layer plan, seed 0, default options."""
    row = TABLE.get(spec.get("variant"))
    if row is None or row.layers == "builtin" or spec.get("layers") is not None:
        return spec
    return {"seed": 0, "options": {}, **spec, "layers": row.layer_plan(num_layers)}


def variant_of(spec: dict, model_type: str):
    """The variants.TABLE row that attnpaper settings name, or ValueError in one line naming the valid ones."""
    try:
        return variant_row(spec.get("variant"))
    except ValueError as err:
        raise ValueError(f"attnpaper.variant of this {model_type} config: {err}") from None


def check_settings(config) -> None:
    """ValueError in one line unless the config's attnpaper settings name a variant and, for an attnpaper
    variant, one layer kind per layer of the model."""
    spec = config.attnpaper
    row = variant_of(spec, config.model_type)
    if row.layers == "builtin":
        return
    layers, n = spec.get("layers"), config.num_hidden_layers
    if not isinstance(layers, list) or len(layers) != n:
        count = len(layers) if isinstance(layers, list) else "no list of"
        raise ValueError(
            f"attnpaper.layers gives {count} layer kinds for a model of {n} layers (num_hidden_layers); "
            f"a {row.name} model needs one kind ('exact' or 'linear') per layer"
        )


def model_class_name(config_class: type, auto: str = "AutoModelForSequenceClassification") -> str:
    """The model class that goes with a config class for one of HEADS' Auto classes (attnpaper.model.auto
    defines it under this name: AttnpaperBertForSequenceClassification, AttnpaperBertModel, ...)."""
    return config_class.__name__.removesuffix("Config") + HEADS[auto]


def register_configs() -> None:
    """Register every model type with AutoConfig (again after a reload of transformers: idempotent)."""
    for config in CONFIGS.values():
        AutoConfig.register(config.model_type, config, exist_ok=True)
