"""Batches for the training step: padded (every variant) or packed without padding (flash, linear, hybrid).

Everything that depends on sequence lengths (cu_seqlens, positions, where each [CLS] sits, which
sequence each chunk of tokens belongs to) is computed here, on the CPU, where the lengths are
known, so the GPU never has to report them back.
With ``static=True`` (a captured step) shapes come from a small set: padded batches are padded to a
length bucket, packed batches to a token bucket, and short batches get dummy rows labelled -100
(ignored by the loss), so a CUDA graph is recorded once per bucket and replayed after that.

We keep our own collator rather than transformers' ``DataCollatorWithPadding`` (which gives the
same padded tensors) or ``DataCollatorWithFlattening`` (packed rows, but no [CLS] index, no static
buckets and no dummy rows): the captured step needs all three.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import variants as V
from ..model.families import family_of
from ..variants import LAYOUTS

PACKED_BUCKET = 1024
"""Packed batches hold a multiple of max(PACKED_BUCKET, 2 x max_length) tokens. Each token count is a
batch shape, and each shape costs one recording, and up to 845abc3 one compile too (2-12 s with the
whole step's per-layer compile on the H200; now a run of several shapes compiles once, with symbolic
sizes: training/loop.py ``planned_shapes``), so this trades padding for shapes. On IMDb's token counts (batch 32,
chunks of 64 for linear layers; 2,000 random batches): at 128 tokens every batch has one shape and
3.3% of the slots are padding; at 512, 6 shapes and 13% (4096-token buckets: 3 shapes and 28%, which
every layer computes on). Pass ``bucket`` to choose otherwise."""
IGNORE = -100  # labels of dummy rows: CrossEntropyLoss leaves them out of the mean
LINEAR_CHUNK = 64
"""Tokens per chunk of packed linear attention (attention.linear.packed_linear_attention; at most
max_length): each sequence is padded to a multiple of it, and every layer computes on that padding,
while the transient per-chunk key-value sums take D / chunk of phi(Q)'s size. Measured on the H200
(scripts/chunk_sweep.py, whole step, batch 32, IMDb lengths, GPU busy ms per step; the files are
results/h200/issue18/chunks-*-a540b23.json at commit 4d43dd6, in git history) at chunks of
16 / 32 / 64 / 128: MiniLM at 128 tokens linear 5.52 / 4.81 / 4.49 / 4.52, hybrid 4.11 / 3.77 /
3.58 / 3.60; DistilBERT at 512 linear 27.6 / 23.5 / 20.7 / 19.3, in equal 4096-token buckets, so
without the padding that larger chunks add: on IMDb 0.6 / 1.2 / 2.4 / 3.4% of the real tokens at 128,
2.3 / 4.8 / 9.7 / 20.1% at 512."""


def _repeated(items, rows: int) -> list:
    """``items`` then its first ones again, cyclically, up to ``rows``: a static packed batch's dummy rows."""
    return list(items) + [items[i % len(items)] for i in range(rows - len(items))]


def chunk_for(variant: str, layout: str, max_length: int) -> int:
    """The Collator's ``chunk``: min(LINEAR_CHUNK, max_length) where packed batches meet linear layers, else 1."""
    linear = layout == "packed" and V.variant(variant).layers in ("linear", "hybrid")
    return min(LINEAR_CHUNK, max_length) if linear else 1


def bucket_range(layout: str, max_length: int) -> tuple[int, int, int]:
    """(default, lowest, highest) bucket for a layout: padded buckets are lengths (<= max_length),
    packed buckets token counts (default max(PACKED_BUCKET, 2 x max_length), at most 64 x max_length)."""
    if layout == "padded":
        return max_length, 1, max_length
    return max(PACKED_BUCKET, 2 * max_length), 1, 64 * max_length


@dataclass
class Collator:
    """Turn token-id lists and labels into one batch of tensors.

    layout: 'padded' -> input_ids/attention_mask [B, N]; 'packed' -> input_ids/position_ids [T],
    cu_seqlens [S+1] int32, cls_index [B], max_seqlen (int). static: pad to buckets and to
    ``batch_size`` rows. bucket: length granularity (padded; default max_length, so always
    max_length) or token granularity (packed; default ``bucket_range``'s: see PACKED_BUCKET).
    Packed filler tokens form sequences of at most max_length, so max_length bounds every sequence
    the kernel sees.

    chunk (packed, > 1 for linear layers; ``chunk_for``): each sequence is followed by pad tokens
    up to a multiple of ``chunk`` (a sequence of their own in cu_seqlens, so exact layers ignore
    them) and fillers are whole chunks; the batch then also holds chunk_seq [T / chunk] (each
    chunk's sequence slot: row i, or batch_size + j for filler j), key_mask bool [T] (False on the
    chunk padding) and segments (int: the slots, fixed for a static collator).
    """

    layout: str = "padded"
    pad_id: int = 0
    max_length: int = 128
    batch_size: int = 32
    static: bool = False
    bucket: int | None = None
    chunk: int = 1

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        top = self.max_length if self.layout == "packed" else 1
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or not 1 <= self.chunk <= top:
            raise ValueError(
                f"chunk must be an int in [1, {top}] for the {self.layout} layout "
                f"(max_length={self.max_length}), got {self.chunk!r}"
            )
        default, low, high = bucket_range(self.layout, self.max_length)
        self.bucket = self.bucket or self.chunk * math.ceil(default / self.chunk)
        if not low <= self.bucket <= high:
            raise ValueError(f"bucket must be in [{low}, {high}] for the {self.layout} layout, got {self.bucket}")
        if self.bucket % self.chunk:
            raise ValueError(f"bucket must be a multiple of chunk={self.chunk}, got {self.bucket}")
        self.piece = self.max_length - self.max_length % self.chunk  # tokens of a filler sequence, at most
        self.fillers = math.ceil(self.bucket / self.piece)  # filler sequences in a static packed batch

    def __call__(self, seqs, labels) -> dict:
        if self.static and len(seqs) > self.batch_size:
            raise ValueError(f"{len(seqs)} sequences for a static batch of {self.batch_size}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        rows = self.batch_size if self.static else len(seqs)
        if rows > len(seqs):  # dummy rows: ignored by the loss
            labels = torch.cat([labels, torch.full((rows - len(seqs),), IGNORE, dtype=torch.long)])
            if self.layout == "packed":  # they repeat the real reviews, so a short last batch has about a
                # full batch's tokens and reuses a shape the full batches compiled instead of adding its own
                seqs = _repeated(seqs, rows)
        batch = self._packed(seqs) if self.layout == "packed" else self._padded(seqs, rows)
        return {**batch, "labels": labels}

    def shape(self, lengths) -> tuple:
        """The shape of the input_ids a batch of sequences of these lengths gets, without building it
        (the training loop counts a run's batch shapes from its plan: several compile dynamically)."""
        rows = self.batch_size if self.static else len(lengths)
        if self.layout == "padded":
            return (rows, self._width(max(lengths)))
        return (self._tokens(_repeated(lengths, rows))[1],)

    def _width(self, longest: int) -> int:
        """Padded: the batch's length, its longest sequence rounded up to the bucket when static."""
        return min(self.max_length, self.bucket * math.ceil(longest / self.bucket)) if self.static else longest

    def _tokens(self, lengths) -> tuple[int, int]:
        """Packed: (tokens used by the sequences and their chunk padding, the batch's token count T)."""
        used = sum(n + (-n % self.chunk) for n in lengths)
        return used, self.bucket * math.ceil(used / self.bucket) if self.static else used

    def _padded(self, seqs, rows):
        lengths = torch.as_tensor([len(x) for x in seqs])
        n = self._width(int(lengths.max()))
        ids = torch.full((rows, n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, n), dtype=torch.long)
        real = torch.arange(n)[None] < lengths[:, None]  # [len(seqs), n]: row-major, as the tokens come
        ids[: len(seqs)][real] = _flat(seqs, int(lengths.sum()))
        mask[: len(seqs)][real] = 1
        mask[len(seqs) :, 0] = 1  # a dummy row holds one token, so no row is all padding
        return {"input_ids": ids, "attention_mask": mask}

    def _packed(self, seqs):
        """seqs: every row of the batch, dummy rows included (they repeat real reviews, see __call__)."""
        c, rows = self.chunk, len(seqs)
        lengths = [len(x) for x in seqs]
        pads = [-n % c for n in lengths]  # chunk padding after each sequence (none when chunk = 1)
        used, total = self._tokens(lengths)
        fill = [min(self.piece, total - used - i * self.piece) for i in range(self.fillers)]
        fill = [n for n in fill if n > 0] if self.static else []  # pad tokens, in sequences <= max_length
        pieces = [n for pair in zip(lengths, pads) for n in pair if n] + fill  # cu_seqlens' sequences
        ids = torch.full((total,), self.pad_id, dtype=torch.long)
        row_len = torch.as_tensor([n + p for n, p in zip(lengths, pads)])  # each sequence with its chunk padding
        starts = torch.cumsum(row_len, 0) - row_len  # each sequence's first token, its [CLS]
        seq_len = torch.as_tensor(lengths)
        ids[_runs(starts, seq_len)] = _flat(seqs, sum(lengths))
        piece_t = torch.as_tensor(pieces)
        ends = torch.cumsum(piece_t, 0)
        pos = torch.arange(total) - torch.repeat_interleave(ends - piece_t, piece_t)  # [T]: place in its piece
        slots = rows * (2 if c > 1 else 1) + (self.fillers if self.static else 0)
        cu = torch.full((slots + 1,), total, dtype=torch.int32)
        cu[0] = 0
        cu[1 : len(pieces) + 1] = ends
        # then empty sequences (unused fillers), so the size of cu_seqlens never changes
        # max_seqlen is an upper bound for the kernel: max_length always, so no shape or int changes per batch
        out = {
            "input_ids": ids,
            "position_ids": pos,
            "cu_seqlens": cu,
            "cls_index": starts,
            "max_seqlen": self.max_length,
        }
        if c > 1:  # packed linear attention: chunks inside one sequence each
            chunk_seq = torch.cat(
                [
                    torch.repeat_interleave(torch.arange(rows), row_len // c),  # each sequence's chunks
                    torch.repeat_interleave(
                        rows + torch.arange(len(fill)), torch.as_tensor(fill, dtype=torch.long) // c
                    ),
                ]
            )  # [T / c]
            key_mask = torch.ones(total, dtype=torch.bool)
            key_mask[_runs(starts + seq_len, torch.as_tensor(pads))] = False  # chunk padding: no keys there
            out.update(chunk_seq=chunk_seq, key_mask=key_mask, segments=rows + (self.fillers if self.static else 0))
        return out


def _runs(starts, counts) -> torch.Tensor:
    """The positions of runs of ``counts[i]`` slots from ``starts[i]``, run after run: [sum(counts)]."""
    first = torch.cumsum(counts, 0) - counts  # where each run begins in the output
    return torch.arange(int(counts.sum())) + torch.repeat_interleave(starts - first, counts)


def _flat(seqs, count) -> torch.Tensor:
    """Every sequence's token ids, one after another, as int64 [count]: one conversion for the batch
    (numpy reads a Python list about ten times faster than a tensor per sequence does)."""
    return torch.from_numpy(np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=count))


def real_tokens(batch) -> int:
    """Real (non-padding, non-filler) tokens in a collated batch, counted on the CPU."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"][batch["labels"] != IGNORE].sum())
    n = int((batch["labels"] != IGNORE).sum())
    if "chunk_seq" in batch:  # chunk padding follows each sequence: count the keys of rows < n
        per_chunk = batch["input_ids"].numel() // batch["chunk_seq"].numel()
        return int((batch["key_mask"] & (batch["chunk_seq"].repeat_interleave(per_chunk) < n)).sum())
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


def packed_forward(
    model,
    input_ids,
    position_ids,
    cu_seqlens,
    cls_index,
    max_seqlen,
    labels=None,
    chunk_seq=None,
    key_mask=None,
    segments=None,
):
    """Padding-free forward of a classifier of any family in model.families (as FlashAttention's BERT and
    ModernBERT do).

    The packed tokens go through the embeddings and every layer as one row [1, T, H], each sequence numbered
    from its family's first position (RoBERTa's start after the padding index); the attention gets
    ``cu_seq_lens_q/k`` and ``max_length_q/k`` (exact layers) and ``chunk_seq``, ``key_mask``, ``segments``
    (linear layers; from a Collator with chunk > 1) through transformers' attention kwargs; the [CLS] rows
    go to the family's head. Returns (loss or None, logits [B, num_labels]).
    """
    family = family_of(model.config)  # ValueError for an unsupported family
    kw = {
        "cu_seq_lens_q": cu_seqlens,
        "cu_seq_lens_k": cu_seqlens,
        "max_length_q": max_seqlen,
        "max_length_k": max_seqlen,
    }
    if chunk_seq is not None:
        kw.update(chunk_seq=chunk_seq, key_mask=key_mask, segments=segments)
    first = family.first_position(model.config)
    positions = position_ids + first if first else position_ids  # BERT's and DistilBERT's graphs stay as they were
    hidden = family.embed(model.base_model, input_ids[None], positions[None])  # [1, T, H]
    hidden = family.encode(model, hidden, **kw)
    logits = family.head(model, hidden[0].index_select(0, cls_index))  # the [CLS] rows [B, H]
    loss = None
    if labels is not None:
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    return loss, logits


EXPANDED_MASK_IMPLEMENTATIONS = ("eager", "sdpa")
"""transformers' attention implementations that get ``expanded_mask`` in the whole step: their mask builder
(masking_utils.create_bidirectional_mask) drops a [B, N] mask with no padding (None) except while tracing,
which includes CUDA-graph capture, so a graph's warm-up and its capture would hand the layers different masks.
A 4D mask is passed through unchanged either way. attnpaper's own mask function never drops the mask."""


def additive_mask(mask, dtype=torch.float32):
    """[B, N] padding mask (1 = real) -> [B, 1, 1, N] additive mask: 0 on keys, dtype's minimum on padding.

    The values transformers' eager mask adds to the attention scores (it expands to [B, 1, N, N]);
    transformers passes a 4D mask through unchanged, and this one a CUDA graph can record."""
    return torch.where(mask[:, None, None, :].bool(), 0.0, torch.finfo(dtype).min).to(dtype)


def expanded_mask(mask, implementation, dtype=torch.float32):
    """[B, N] padding mask -> the 4D mask transformers' ``implementation`` builds, as [B, 1, 1, N] (it broadcasts
    over queries), which transformers passes through unchanged (see EXPANDED_MASK_IMPLEMENTATIONS for why).

    sdpa: bool, True on real tokens, as transformers' sdpa mask (which it expands to [B, 1, N, N]; whether SDPA
    then picks the same kernel for both on a GPU is not measured); eager: ``additive_mask``."""
    if implementation == "sdpa":
        return mask[:, None, None, :].bool()
    if implementation == "eager":
        return additive_mask(mask, dtype)
    valid = ", ".join(EXPANDED_MASK_IMPLEMENTATIONS)
    raise ValueError(f"no expanded mask for attention implementation {implementation!r}; valid: {valid}")


def forward(model, batch, labels=True, expand_mask=False):
    """(loss, logits) for a collated batch of either layout (expand_mask: padded batches get ``expanded_mask``
    instead of the [B, N] mask, the same mask in a CUDA graph's warm-up and capture; the same results)."""
    y = batch["labels"] if labels else None
    if "cu_seqlens" in batch:
        return packed_forward(
            model,
            batch["input_ids"],
            batch["position_ids"],
            batch["cu_seqlens"],
            batch["cls_index"],
            batch["max_seqlen"],
            y,
            batch.get("chunk_seq"),
            batch.get("key_mask"),
            batch.get("segments"),
        )
    mask = batch["attention_mask"]
    if expand_mask:
        mask = expanded_mask(mask, model.config._attn_implementation, model.dtype)
    out = model(input_ids=batch["input_ids"], attention_mask=mask, labels=y)
    return out.loss, out.logits
