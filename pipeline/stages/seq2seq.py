"""Supervised steps for an encoder-decoder VLM (Florence-2).

TRL's ``SFTTrainer`` concatenates prompt and completion into one causal sequence, which an
encoder-decoder does not read: the image and task prompt go to the encoder, the answer is the
decoder's labels (transformers ``Florence2ForConditionalGeneration.forward`` shifts them right
behind ``decoder_start_token_id``). The rest of the stage — schedule, callbacks, validation,
location-aware loss — is the decoder-only stage's.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from pipeline.codec import Codec
from pipeline.stages.loc_loss import soft_location_loss
from pipeline.stages.resume import ExactResume
from pipeline.structures import Sample


def seq2seq_rows(samples: list[Sample], codec: Codec) -> list[dict[str, Any]]:
    """The answers to train on, without their images (``common.with_images`` adds them as rows are read)."""
    return [{"target": codec.encode(s.target)} for s in samples]


class Seq2SeqCollator:
    """Encoder inputs from the image and the family's task prompt; labels from the answer
    (the tokenizer adds <s> … </s>, as the model generates them)."""

    def __init__(self, processor, codec: Codec) -> None:
        self.processor, self.prompt = processor, codec.prompt()

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.processor(images=[r["image"] for r in rows], text=[self.prompt] * len(rows), return_tensors="pt",
                             padding=True)  # fmt: skip
        lab = self.processor.tokenizer([r["target"] for r in rows], return_tensors="pt", padding=True)
        return {**enc, "labels": lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)}


class LocationAwareSeq2SeqTrainer(ExactResume, Trainer):
    def __init__(self, *args, loc_ids: list[int], loc_sigma: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._loc_ids = torch.tensor(loc_ids, dtype=torch.long)
        self._loc_sigma = loc_sigma

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loc_ids = self._loc_ids.to(outputs.logits.device)
        loss = soft_location_loss(outputs.logits, inputs["labels"], loc_ids, self._loc_sigma, shift=False)
        return (loss, outputs) if return_outputs else loss
