"""attnpaper models as transformers models that save and reload with their attention, and travel.

Each variant's classifier is a registered model type ("attnpaper-bert", "-distilbert", "-roberta": one per
entry of attnpaper.model.families),
transformers' documented way to add a model: its config holds the variant and the layer options,
and its weights hold each FAVOR+ layer's random features. After ``import attnpaper`` (which registers
them, attnpaper.model.after_import), ``AutoModelForSequenceClassification.from_pretrained(path)``
rebuilds the same model (same kernels, same logits); ``save_pretrained`` and ``push_to_hub`` work as
for any transformers model.

What a checkpoint says about itself, for those who never import attnpaper: baseline and sdpa run
transformers' own attention, so they save as plain ``bert``/``distilbert``/``roberta`` models (with their
``attn_implementation``); flash, linear and hybrid keep their model type and save an ``auto_map`` and
a small ``attnpaper_model.py`` (transformers' custom-code mechanism), so ``trust_remote_code=True``
loads them wherever attnpaper is installed and names ``pip install attnpaper`` where it is not.
"""

from __future__ import annotations

import torch
import transformers
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..attention import ATTN_NAME, LayerAttention, register
from ..variants import EXACT, LINEAR
from ..variants import variant as variant_row
from .configs import (
    CONFIGS,
    REMOTE_FILE,  # noqa: F401  (re-exported: remote_code and tests import it from here)
    check_settings,
    model_class_name,
    register_configs,
)
from .families import HEADS, family_of

LAYER_OPTIONS = EXACT + LINEAR
"""The options each attnpaper layer is built with (saved in the config, so a reload rebuilds them)."""
LABELS = {0: "negative", 1: "positive"}
"""IMDb's labels, for a 2-label classifier whose base config only had transformers' LABEL_0/LABEL_1."""


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
    check_settings(model.config)  # one layer kind per layer: zip below would drop the rest
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
    """The self-attention module of each encoder layer, in layer order (where its family's entry says)."""
    path = family_of(model.config).attention
    return [layer.get_submodule(path) for layer in encoder_layers(model)]


def encoder_layers(model) -> torch.nn.ModuleList:
    """The encoder's stack of layers (BERT's ``encoder.layer``, DistilBERT's ``transformer.layer``)."""
    stack = getattr(model.base_model, family_of(model.config).encoder, None)
    layers = getattr(stack, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) != model.config.num_hidden_layers:
        raise ValueError(
            f"found no stack of {model.config.num_hidden_layers} layers in {type(model).__name__}, "
            "where its family's entry (attnpaper.model.families) says"
        )
    return layers


class _Reloadable:
    """Mixin: build the variant's attention modules in __init__, so from_pretrained can fill them."""

    _keys_to_ignore_on_load_missing = [r"attnpaper\.proj"]  # a plain BERT checkpoint has no features: drawn

    def __init__(self, config, *args, **kwargs):
        check_implementation(config)
        super().__init__(config, *args, **kwargs)
        attach(self)
        self.config._attn_implementation = implementation(config.attnpaper["variant"])

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        """Ignored, as for the configs (see _Portable.register_for_auto_class)."""


def check_implementation(config) -> None:
    """ValueError in one line when an attn_implementation other than the variant's own was asked for
    (``from_pretrained(dir, attn_implementation="eager")``): the variant fixes each layer's attention."""
    variant = config.attnpaper["variant"]
    asked, own = config._attn_implementation, variant_row(variant).implementation
    if asked not in (None, own):
        raise ValueError(
            f"attn_implementation={asked!r} asked of a {variant} attnpaper model, whose variant fixes its "
            f"attention ({own!r}); for transformers' eager or sdpa attention over the same weights, "
            f"use attnpaper.build_model(path, 'baseline') or attnpaper.build_model(path, 'sdpa')"
        )


def _model_class(model_type: str, config: type, auto: str) -> type:
    """Attnpaper<Name><Head> (AttnpaperBertModel, AttnpaperBertForMaskedLM, ...): transformers' class of
    ``model_type`` for the Auto class ``auto`` that builds the variant's attention modules as it is built,
    and takes ``config``."""
    base = getattr(transformers, auto)._model_mapping[CONFIG_MAPPING[model_type]]
    return type(model_class_name(config, auto), (_Reloadable, base), {"config_class": config, "__module__": __name__})


CLASSES = {
    (config, auto): _model_class(model_type, config, auto) for model_type, config in CONFIGS.items() for auto in HEADS
}
"""(attnpaper config class, Auto class name) -> its model class: the base model and every head of HEADS."""
MODELS = {config: CLASSES[config, "AutoModelForSequenceClassification"] for config in CONFIGS.values()}
"""Each attnpaper config class -> its sequence classifier (what build_model builds)."""
REMOTE_CLASSES = {c.__name__: c for c in [*CONFIGS.values(), *CLASSES.values()]}
"""What a saved model's auto_map may name (attnpaper_model.py, a copy of remote_code.py, exports them); every
config and model class is also a name of this module."""
globals().update(REMOTE_CLASSES)


def wrap_config(config, spec: dict):
    """The attnpaper config of a config of a supported family, carrying ``spec`` (variant, layers, options).

    A 2-label config that only had transformers' LABEL_0/LABEL_1 gets IMDb's negative/positive.
    """
    base = family_of(config).model_type  # ValueError for an unsupported family
    d = config.to_dict()
    for key in ("model_type", "attnpaper", "auto_map", "attn_implementation", "architectures"):
        d.pop(key, None)
    wrapped = CONFIGS[base](attnpaper=spec, **d)
    if wrapped.id2label == {i: f"LABEL_{i}" for i in LABELS}:  # transformers' placeholder names
        wrapped.id2label, wrapped.label2id = dict(LABELS), {v: k for k, v in LABELS.items()}
    return wrapped


def register_auto_classes() -> None:
    """Register every model type with AutoConfig and each Auto class of HEADS (idempotent)."""
    register_configs()
    for (config, auto), model in CLASSES.items():
        getattr(transformers, auto).register(config, model, exist_ok=True)
