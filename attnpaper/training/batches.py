"""Batches for the training step: padded (every variant) or packed without padding (flash).

Everything that depends on sequence lengths (cu_seqlens, positions, where each [CLS] sits) is
computed here, on the CPU, where the lengths are known, so the GPU never has to report them back.
With ``static=True`` (a captured step) shapes come from a small set: padded batches are padded to a
length bucket, packed batches to a token bucket, and short batches get dummy rows labelled -100
(ignored by the loss), so a CUDA graph is recorded once per bucket and replayed after that.

We keep our own collator rather than transformers' ``DataCollatorWithPadding`` (which gives the
same padded tensors) or ``DataCollatorWithFlattening`` (packed rows, but no [CLS] index, no static
buckets and no dummy rows): the captured step needs all three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LAYOUTS = ("padded", "packed")
IGNORE = -100  # labels of dummy rows: CrossEntropyLoss leaves them out of the mean


def bucket_range(layout: str, max_length: int) -> tuple[int, int, int]:
    """(default, lowest, highest) bucket for a layout: padded buckets are lengths (<= max_length),
    packed buckets token counts (default 2 x max_length, at most 64 x max_length)."""
    if layout == "padded":
        return max_length, 1, max_length
    return 2 * max_length, 1, 64 * max_length


@dataclass
class Collator:
    """Turn token-id lists and labels into one batch of tensors.

    layout: 'padded' -> input_ids/attention_mask [B, N]; 'packed' -> input_ids/position_ids [T],
    cu_seqlens [S+1] int32, cls_index [B], max_seqlen (int). static: pad to buckets and to
    ``batch_size`` rows. bucket: length granularity (padded; default max_length, so always
    max_length) or token granularity (packed; default 2 * max_length: a batch of 32 IMDb reviews
    then takes one of 2-4 token counts, each compiled once). Packed filler tokens form sequences
    of at most max_length, so max_length bounds every sequence the kernel sees.
    """

    layout: str = "padded"
    pad_id: int = 0
    max_length: int = 128
    batch_size: int = 32
    static: bool = False
    bucket: int | None = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        default, low, high = bucket_range(self.layout, self.max_length)
        self.bucket = self.bucket or default
        if not low <= self.bucket <= high:
            raise ValueError(f"bucket must be in [{low}, {high}] for the {self.layout} layout, got {self.bucket}")
        self.fillers = math.ceil(self.bucket / self.max_length)  # filler sequences in a static packed batch

    def __call__(self, seqs, labels) -> dict:
        if self.static and len(seqs) > self.batch_size:
            raise ValueError(f"{len(seqs)} sequences for a static batch of {self.batch_size}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        rows = self.batch_size if self.static else len(seqs)
        if rows > len(seqs):  # dummy rows: ignored by the loss
            labels = torch.cat([labels, torch.full((rows - len(seqs),), IGNORE, dtype=torch.long)])
        pack = self._packed if self.layout == "packed" else self._padded
        return {**pack(seqs, rows), "labels": labels}

    def _padded(self, seqs, rows):
        longest = max(len(x) for x in seqs)
        n = min(self.max_length, self.bucket * math.ceil(longest / self.bucket)) if self.static else longest
        ids = torch.full((rows, n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, n), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.as_tensor(seq)
            mask[row, : len(seq)] = 1
        mask[len(seqs):, 0] = 1  # a dummy row holds one token, so no row is all padding
        return {"input_ids": ids, "attention_mask": mask}

    def _packed(self, seqs, rows):
        lengths = [len(x) for x in seqs]
        real = sum(lengths)
        total = self.bucket * math.ceil(real / self.bucket) if self.static else real
        fill = [min(self.max_length, total - real - i * self.max_length) for i in range(self.fillers)]
        fill = [n for n in fill if n > 0] if self.static else []  # pad tokens, in sequences <= max_length
        ids = torch.full((total,), self.pad_id, dtype=torch.long)
        ids[:real] = torch.as_tensor([t for x in seqs for t in x])
        pos = torch.cat([torch.arange(n) for n in lengths + fill])  # [T]
        cu = torch.full((rows + 1 + self.fillers if self.static else len(seqs) + 1,), total, dtype=torch.int32)
        cu[0] = 0
        cu[1: len(seqs) + len(fill) + 1] = torch.cumsum(torch.as_tensor(lengths + fill), 0)
        # then empty sequences: unused fillers and dummy rows, so the size of cu_seqlens never changes
        cls = torch.zeros(rows, dtype=torch.long)
        cls[: len(seqs)] = cu[: len(seqs)]  # each sequence's first token, its [CLS]
        # max_seqlen is an upper bound for the kernel: max_length always, so no shape or int changes per batch
        return {"input_ids": ids, "position_ids": pos, "cu_seqlens": cu, "cls_index": cls, "max_seqlen": self.max_length}


def real_tokens(batch) -> int:
    """Real (non-padding, non-filler) tokens in a collated batch, counted on the CPU."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"][batch["labels"] != IGNORE].sum())
    n = int((batch["labels"] != IGNORE).sum())
    return int(batch["cu_seqlens"][n])


def slot_tokens(batch) -> int:
    """Token slots the GPU computes on (real, padding and filler)."""
    return batch["input_ids"].numel()


def to_device(batch, device) -> dict:
    """Copy tensors to ``device`` from pinned memory without blocking the host; ints stay ints."""
    device = torch.device(device)
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and device.type == "cuda":
            v = (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True)
        elif torch.is_tensor(v):
            v = v.to(device)
        out[k] = v
    return out


def packed_forward(model, input_ids, position_ids, cu_seqlens, cls_index, max_seqlen, labels=None):
    """Padding-free forward of a BERT or DistilBERT classifier (as FlashAttention's BERT and ModernBERT do).

    The packed tokens go through the embeddings and every layer as one row [1, T, H]; the attention
    gets ``cu_seq_lens_q/k`` and ``max_length_q/k`` through transformers' attention kwargs; the [CLS]
    rows are gathered for the head. Returns (loss or None, logits [B, num_labels]).
    """
    kind = model.config.model_type.removeprefix("attnpaper-")  # attnpaper-bert is a bert
    kw = {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": max_seqlen,
          "max_length_k": max_seqlen}
    if kind == "bert":
        hidden = model.bert.embeddings(input_ids=input_ids[None], position_ids=position_ids[None],
                                       token_type_ids=torch.zeros_like(input_ids)[None])  # [1, T, H]
        hidden = model.bert.encoder(hidden, attention_mask=None, **kw).last_hidden_state
        cls = hidden[0].index_select(0, cls_index)  # [B, H]
        pooled = model.bert.pooler(cls[:, None]) if model.bert.pooler is not None else cls
        logits = model.classifier(model.dropout(pooled))
    elif kind == "distilbert":
        hidden = model.distilbert.embeddings(input_ids[None], None, position_ids[None])  # [1, T, H]
        hidden = model.distilbert.transformer(hidden, attention_mask=None, **kw).last_hidden_state
        cls = hidden[0].index_select(0, cls_index)  # [B, H]
        pooled = model.dropout(torch.relu(model.pre_classifier(cls)))
        logits = model.classifier(pooled)
    else:
        raise ValueError(f"the packed path supports bert and distilbert classifiers, not {kind!r}")
    loss = None
    if labels is not None:
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    return loss, logits


def forward(model, batch, labels=True):
    """(loss, logits) for a collated batch of either layout."""
    y = batch["labels"] if labels else None
    if "cu_seqlens" in batch:
        return packed_forward(model, batch["input_ids"], batch["position_ids"], batch["cu_seqlens"],
                              batch["cls_index"], batch["max_seqlen"], y)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=y)
    return out.loss, out.logits
