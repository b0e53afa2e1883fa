"""Generation + decoding: model output text → canonical structures in original pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList

from pipeline.codec import Codec
from pipeline.stages.common import prompt_text


@torch.no_grad()
def generate_texts(
    model,
    processor,
    images: Sequence[Any],
    codec: Codec,
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    num_samples: int = 1,
    temperature: float | None = None,
    grammar: bool = True,
) -> list[str]:
    """Answers for ``images`` (PIL), in order: greedy, or with a ``temperature`` ``num_samples``
    sampled answers per image, consecutive (image 0's first, …). ``batch_size`` counts answers.
    ``grammar``: only well-formed answers of the ``loc`` format (``pipeline.grammar``).
    ``images`` is read a batch at a time (slices), so a :class:`SampleImages` keeps at most one
    batch of a lazily loaded set decoded."""
    model.eval()
    tok = processor.tokenizer
    tok.padding_side = "left"  # generation appends on the right; pad the prompt on the left
    prompt = prompt_text(processor, codec)
    device = next(model.parameters()).device
    texts: list[str] = []
    cap = max_new_tokens or codec.max_new_tokens()
    # Special tokens are dropped from the answers, except the format's own: Florence-2's <loc_N>
    # are special tokens of its tokenizer, and its post-processor decodes with them kept.
    added = tok.added_tokens_decoder
    keep = {i for i in tok.convert_tokens_to_ids(codec.special_tokens()) if i in added and added[i].special}
    per_call = max(1, batch_size // num_samples)
    rules = None
    if grammar and not model.config.is_encoder_decoder:
        from pipeline.grammar import for_codec

        rules = for_codec(codec, tok, prompt)
    sampling = {"do_sample": False} if temperature is None else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    for i in range(0, len(images), per_call):
        chunk = images[i : i + per_call]
        inputs = processor(
            text=[prompt] * len(chunk), images=[[im] for im in chunk], return_tensors="pt", padding=True
        )
        inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype if model.dtype.is_floating_point else torch.float32)
        constrain = {} if rules is None else {"logits_processor": LogitsProcessorList([rules.after(inputs["input_ids"].shape[1])])}
        out = model.generate(
            **inputs,
            **constrain,
            max_new_tokens=cap,
            num_return_sequences=num_samples,
            **sampling,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        # an encoder-decoder (Florence-2) returns the decoder's tokens only; a decoder, prompt + answer
        new = out if model.config.is_encoder_decoder else out[:, inputs["input_ids"].shape[1] :]
        texts.extend(_decode(tok, row.tolist(), keep) for row in new)
    return texts


class SampleImages(Sequence):
    """The images of ``samples``, each read (decoded, for a lazily loaded set) only when
    indexed: ``[s.image for s in samples]`` would hold a whole held-out split of big photos."""

    def __init__(self, samples: Sequence[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [s.image for s in self.samples[index]]
        return self.samples[index].image


def _decode(tok, ids: list[int], keep: set[int]) -> str:
    """``tok.decode(ids, skip_special_tokens=True)``, but the ``keep`` tokens written out."""
    if not keep:
        return tok.decode(ids, skip_special_tokens=True)
    out, run = [], []
    for i in ids:
        if i in keep:
            out += [tok.decode(run, skip_special_tokens=True), tok.convert_ids_to_tokens(i)]
            run = []
        else:
            run.append(i)
    return "".join([*out, tok.decode(run, skip_special_tokens=True)])


def predict_targets(model, processor, samples, codec: Codec, *, batch_size: int = 32):
    """(targets, parsed flags, raw texts) for a list of ``Sample``."""
    texts = generate_texts(model, processor, SampleImages(samples), codec, batch_size=batch_size)
    targets, parsed = [], []
    for s, t in zip(samples, texts, strict=True):
        tgt, ok = codec.decode(t, s.width, s.height)
        targets.append(tgt)
        parsed.append(ok)
    return targets, parsed, texts
