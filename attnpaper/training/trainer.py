"""transformers.Trainer support: redraw FAVOR+ features on attnpaper's schedule, counted in optimizer steps.

An uncompiled model redraws by itself, counting training forwards (``LayerAttention.count_training_forward``);
with gradient accumulation, or a Trainer that compiles the model, pass ``RedrawFeatures()`` in ``callbacks``.
"""

from __future__ import annotations

from transformers import TrainerCallback

from ..attention import redraw_features


class RedrawFeatures(TrainerCallback):
    """Before each optimizer step, redraw the FAVOR+ features of the layers whose ``redraw_every`` divides
    the step's number, as attnpaper's own loop does (``attention.redraw_features``)."""

    def __init__(self):
        self.redrawn = 0  # layer redraws so far, for a look at what happened

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.redrawn += redraw_features(model, state.global_step)
