"""attnpaper models as transformers models that save and reload with their attention.

Each variant's classifier is a registered model type ("attnpaper-bert", "attnpaper-distilbert"),
transformers' documented way to add a model: its config holds the variant and the layer options,
and its weights hold each FAVOR+ layer's random features. After ``import attnpaper``,
``AutoModelForSequenceClassification.from_pretrained(path)`` rebuilds the same model (same kernels,
same logits); ``save_pretrained`` and ``push_to_hub`` work as for any transformers model.
"""
from __future__ import annotations

import torch
from transformers import (
    AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, DistilBertConfig,
    DistilBertForSequenceClassification,
)

from ..attention import ATTN_NAME, LayerAttention, register
from ..variants import EXACT, LINEAR
from ..variants import variant as variant_row

LAYER_OPTIONS = EXACT + LINEAR
"""The options each attnpaper layer is built with (saved in the config, so a reload rebuilds them)."""


class AttnpaperBertConfig(BertConfig):
    """A BERT config that also says which attention each layer runs (``attnpaper``)."""

    model_type = "attnpaper-bert"

    def __init__(self, attnpaper=None, **kwargs):
        super().__init__(**kwargs)
        self.attnpaper = attnpaper or {"variant": "sdpa"}


class AttnpaperDistilBertConfig(DistilBertConfig):
    """A DistilBERT config that also says which attention each layer runs (``attnpaper``)."""

    model_type = "attnpaper-distilbert"

    def __init__(self, attnpaper=None, **kwargs):
        super().__init__(**kwargs)
        self.attnpaper = attnpaper or {"variant": "sdpa"}


def implementation(variant: str) -> str:
    """The transformers attention implementation a variant runs under."""
    impl = variant_row(variant).implementation
    if impl == ATTN_NAME:
        register()
    return impl


def attach(model, redraw=True) -> None:
    """Give each attention module the LayerAttention its config asks for (fresh features from the seed).

    Called when a model is built; a reloaded model then overwrites the features with the saved ones.
    """
    spec = model.config.attnpaper
    model.config.attnpaper_variant = spec["variant"]
    if spec.get("layers") is None:
        return
    model.config.attnpaper_layers = spec["layers"]
    mods = attention_modules(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads  # DistilBERT: dim / n_heads
    opts = {k: spec["options"][k] for k in LAYER_OPTIONS if k in spec["options"]}
    device = next(model.parameters()).device
    for i, (mod, kind) in enumerate(zip(mods, spec["layers"])):
        mod.attnpaper = LayerAttention(kind, head_dim, seed=spec["seed"] * 1000 + i, **opts).to(device)


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention module of each encoder layer, in layer order."""
    mods = [m for m in model.modules() if type(m).__name__.endswith("SelfAttention") and hasattr(m, "config")]
    n = model.config.num_hidden_layers
    if len(mods) != n:
        raise ValueError(f"found {len(mods)} self-attention modules for {n} layers in {type(model).__name__}; "
                         "only BERT-family encoders (BERT, DistilBERT, MiniLM) are supported")
    return mods


class _Reloadable:
    """Mixin: build the variant's attention modules in __init__, so from_pretrained can fill them."""

    _keys_to_ignore_on_load_missing = [r"attnpaper\.proj"]  # a plain BERT checkpoint has no features: drawn

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        attach(self)
        self.config._attn_implementation = implementation(config.attnpaper["variant"])


class AttnpaperBertForSequenceClassification(_Reloadable, BertForSequenceClassification):
    config_class = AttnpaperBertConfig


class AttnpaperDistilBertForSequenceClassification(_Reloadable, DistilBertForSequenceClassification):
    config_class = AttnpaperDistilBertConfig


CONFIGS = {"bert": AttnpaperBertConfig, "distilbert": AttnpaperDistilBertConfig}
MODELS = {AttnpaperBertConfig: AttnpaperBertForSequenceClassification,
          AttnpaperDistilBertConfig: AttnpaperDistilBertForSequenceClassification}
for _config, _model in MODELS.items():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForSequenceClassification.register(_config, _model, exist_ok=True)


def wrap_config(config, spec: dict):
    """The attnpaper config of a BERT or DistilBERT config, carrying ``spec`` (variant, layers, options)."""
    base = {"attnpaper-bert": "bert", "attnpaper-distilbert": "distilbert"}.get(config.model_type, config.model_type)
    if base not in CONFIGS:
        raise ValueError(f"a {config.model_type} model; attnpaper supports {', '.join(CONFIGS)} encoders")
    d = config.to_dict()
    d.pop("model_type", None)
    d.pop("attnpaper", None)
    return CONFIGS[base](attnpaper=spec, **d)
