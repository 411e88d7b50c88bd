"""The data order and the DataLoader that feeds the step: which rows each step takes, collated off the
main thread, pinned ahead of the step."""

from __future__ import annotations

import torch

from . import batches as P


def index_batches(n, batch_size, shuffle=False, generator=None):
    """Lists of row indices, batch_size at a time (the last may be shorter)."""
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


class _Rows(torch.utils.data.Dataset):
    """A split as a map-style dataset: row i -> (token ids, label)."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return self.split.ids[i], int(self.split.labels[i])


class _CollateRows:
    """DataLoader collate_fn: our Collator, plus the real and slot token counts (ints, kept on the CPU)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        b = self.collate([r[0] for r in rows], [r[1] for r in rows])
        return {**b, "_real": P.real_tokens(b), "_slots": P.slot_tokens(b)}


def loader(split, plan, collate, device):
    """Batches in the order of ``plan`` (lists of row indices). On a GPU two worker processes collate
    and a pinning thread pins ahead of the step, so the host's only work per step is the launches.
    Its own generator: the global random stream (dropout) is left as it was, so a resumed run matches."""
    workers = 2 if device.type == "cuda" else 0
    return torch.utils.data.DataLoader(
        _Rows(split),
        batch_sampler=plan,
        collate_fn=_CollateRows(collate),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=8 if workers else None,
        generator=torch.Generator().manual_seed(0),
    )


def step_plan(n, batch_size, total, generator) -> list[list[int]]:
    """The row indices of every training step: a fresh shuffle per epoch, cut at ``total`` steps."""
    plan = []
    while len(plan) < total:
        plan += list(index_batches(n, batch_size, shuffle=True, generator=generator))
    return plan[:total]
