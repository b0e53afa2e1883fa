"""Trainer checkpoints that resume to the very weights they saved.

transformers 5 saves a model in its checkpoint's *original* key names (``save_pretrained``
reverts the renamings ``from_pretrained`` applied: ``language_model.model.layers.0…`` for a
Llava whose modules are ``model.language_model.layers.0…``), but ``Trainer._load_from_checkpoint``
loads that file with a plain, non-strict ``load_state_dict``: no key matches, nothing loads,
and the only sign is a warning. A resumed stage then trained on from the stage's *input* weights
with the checkpoint's optimizer state (measured: loss of steps 31-40 5.50 resumed against 2.17
uncapped). transformers issue #43701; the fix proposed upstream (PR #44366) renames on load.

Here the checkpoint is written in the model's own key names (``save_original_format=False``),
which is what a plain ``load_state_dict`` reads, and a load that leaves any weight out raises
instead of warning. Checkpoints are for resuming only; the stage's final model is saved by
``common.save_model`` in the usual format.

The rest of the state the trainer restores itself: optimizer, scheduler, RNG states (Python,
NumPy, torch CPU and CUDA: dropout, sampling), and the data order (accelerate's seedable sampler
draws each epoch's order from ``data_seed`` and the epoch, and a resume mid-epoch skips the
batches already trained). What it does not keep is the running loss: a resumed trainer logs its
first loss over the steps since the resume only, and its ``train_loss`` over the resumed steps.
The loss window is saved beside the RNG states and restored with them, so the resumed stage logs
and returns the numbers an uninterrupted one would (measured on CPU without a time budget:
identical to the last bit).
"""

from __future__ import annotations

import json
import os

import torch
from transformers import PreTrainedModel
from transformers.trainer import TRAINING_ARGS_NAME

LOSS_FILE = "dreamforge_loss.json"


class ExactResume:
    """Mixed into every trainer a stage uses, before the trainer class."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        # LoRA (PeftModel) saves and reloads its adapters through peft, in one naming
        if not isinstance(model, PreTrainedModel) or getattr(model, "_hf_peft_config_loaded", False):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, state_dict=state_dict, save_original_format=False)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _issue_warnings_after_load(self, load_result) -> None:
        tied = getattr(self.model, "_tied_weights_keys", None) or ()
        missing = [k for k in load_result.missing_keys if k not in tied]
        if missing or load_result.unexpected_keys:
            raise RuntimeError(f"the checkpoint does not hold this model's weights: missing {missing[:5]}, "
                               f"unexpected {list(load_result.unexpected_keys)[:5]}")  # fmt: skip

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        window = {"sum": float(self._tr_loss.item()), "since": self._globalstep_last_logged,
                  "total": self._total_loss_scalar}  # fmt: skip
        with open(os.path.join(output_dir, LOSS_FILE), "w") as f:
            json.dump(window, f)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """Called once, before the resumed run's first step: the loss window comes back with the RNG."""
        super()._load_rng_state(checkpoint)
        path = os.path.join(checkpoint or "", LOSS_FILE)
        if checkpoint and os.path.isfile(path):
            with open(path) as f:
                window = json.load(f)
            self._tr_loss = torch.tensor(window["sum"], device=self.args.device)
            self._globalstep_last_logged = int(window["since"])
            self._total_loss_scalar = float(window["total"])
            self._initial_global_step = 0  # train_loss: the whole stage's mean, as uninterrupted
