"""The encoder families the variants plug into, one entry each: where a classifier keeps its parts and how
a packed batch goes through them. The model types (configs, auto), the trust_remote_code file, the plan's
checks and the packed forward all read this table, so a new family is one entry here.

Pure Python (no torch, no transformers): AutoConfig reads it while it loads (attnpaper.model.configs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _bert_embed(base, input_ids, position_ids):
    """BERT and RoBERTa embeddings of packed ids [1, T] at positions [1, T] -> [1, T, H]."""
    return base.embeddings(
        input_ids=input_ids, position_ids=position_ids, token_type_ids=input_ids.new_zeros(input_ids.shape)
    )


def _distilbert_embed(base, input_ids, position_ids):
    """DistilBERT embeddings (no token types) of packed ids [1, T] -> [1, T, H]."""
    return base.embeddings(input_ids, None, position_ids)


def _bert_head(model, cls):
    """[CLS] rows [B, H] -> logits: BERT's pooler (dense + tanh; absent in some checkpoints), dropout, classifier."""
    pooler = model.base_model.pooler
    pooled = pooler(cls[:, None]) if pooler is not None else cls  # the pooler takes the sequence's first row
    return model.classifier(model.dropout(pooled))


def _distilbert_head(model, cls):
    """[CLS] rows [B, H] -> logits: DistilBERT's pre_classifier, ReLU, dropout, classifier."""
    return model.classifier(model.dropout(model.pre_classifier(cls).relu()))


def _roberta_head(model, cls):
    """[CLS] rows [B, H] -> logits: RobertaClassificationHead takes the sequence and reads its row 0 itself
    (dropout, dense, tanh, dropout, out_proj inside), so it gets each [CLS] as a one-token sequence [B, 1, H]."""
    return model.classifier(cls[:, None])


def _from_zero(config) -> int:
    return 0


def _after_padding_index(config) -> int:
    """RoBERTa numbers a sequence's tokens from padding_idx + 1 (transformers' create_position_ids_from_input_ids)."""
    return config.pad_token_id + 1


@dataclass(frozen=True)
class Family:
    """One encoder family. model_type: transformers' name (the config and classifier come from transformers'
    Auto mappings); base: the classifier's attribute holding the base model; encoder: the base model's
    attribute whose ``.layer`` is the stack of layers; attention: each layer's self-attention module (a
    dotted path inside the layer); dropout: the config's attention-dropout key; embed(base, ids [1, T],
    positions [1, T]) -> [1, T, H]; head(classifier, [CLS] rows [B, H]) -> logits; first_position(config):
    the position id of a sequence's first token."""

    model_type: str
    base: str
    encoder: str
    attention: str
    dropout: str
    embed: Callable
    head: Callable
    first_position: Callable = _from_zero

    def max_length(self, config) -> int:
        """The longest sequence the position embeddings can number."""
        return config.max_position_embeddings - self.first_position(config)

    def encode(self, model, hidden, **attention_kwargs):
        """The encoder's last hidden state over embedded tokens [1, T, H] (packed: no mask, the kwargs say where
        each sequence starts)."""
        stack = getattr(model.base_model, self.encoder)
        return stack(hidden, attention_mask=None, **attention_kwargs).last_hidden_state


FAMILIES = {
    f.model_type: f
    for f in (
        Family("bert", "bert", "encoder", "attention.self", "attention_probs_dropout_prob", _bert_embed, _bert_head),
        Family(
            "distilbert",
            "distilbert",
            "transformer",
            "attention",
            "attention_dropout",
            _distilbert_embed,
            _distilbert_head,
        ),
        Family(
            "roberta",
            "roberta",
            "encoder",
            "attention.self",
            "attention_probs_dropout_prob",
            _bert_embed,
            _roberta_head,
            _after_padding_index,
        ),
    )
}
"""Every supported family by transformers' model type (MiniLM is a BERT). ModernBERT is not one: its layers
have their own attention modules (fused Wqkv, rotary positions, local windows) that these locators do not fit."""
HEADS = {
    "AutoModel": "Model",
    "AutoModelForMaskedLM": "ForMaskedLM",
    "AutoModelForSequenceClassification": "ForSequenceClassification",
    "AutoModelForTokenClassification": "ForTokenClassification",
    "AutoModelForQuestionAnswering": "ForQuestionAnswering",
    "AutoModelForMultipleChoice": "ForMultipleChoice",
}
"""The Auto classes each family's attnpaper model type registers with, and the suffix of transformers' class
for it (BertModel, BertForMaskedLM, ...): the base model, for embeddings, and the usual encoder heads. Every
family in FAMILIES has them all."""
PREFIX = "attnpaper-"
"""attnpaper's model types are the family's with this prefix (attnpaper-bert is a bert)."""


def family(model_type: str) -> Family:
    """The entry of a model type (plain or attnpaper-), or ValueError in one line naming the supported ones."""
    name = model_type.removeprefix(PREFIX)
    if name not in FAMILIES:
        raise ValueError(f"a {model_type} model; attnpaper supports {', '.join(FAMILIES)} encoders")
    return FAMILIES[name]


def family_of(config) -> Family:
    """The entry of a transformers config (or anything with a ``model_type``)."""
    return family(config.model_type)
