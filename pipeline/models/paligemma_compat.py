"""PaliGemma under TRL's prompt-completion collator.

TRL tokenises the completions with ``processor(text=completions)`` and no images
(``trl/trainer/sft_trainer.py: _collate_prompt_completion``); ``PaliGemmaProcessor`` refuses a
call without images. Text alone is the tokenizer's job, with ``token_type_ids`` 1: PaliGemma's
suffix, which its attention mask makes causal while the image and prompt prefix stay fully
visible (``modeling_paligemma.py``; big_vision's prefix-LM).

The class keeps the name ``PaliGemmaProcessor``, so what it saves reloads as the stock class on
any machine; :func:`pipeline.models.loading.load_model` swaps it in after loading.
"""

from __future__ import annotations

from transformers import BatchFeature
from transformers import PaliGemmaProcessor as _Stock


class PaliGemmaProcessor(_Stock):
    def __call__(self, images=None, text=None, suffix=None, **kwargs):
        if images is not None or text is None:
            return super().__call__(images=images, text=text, suffix=suffix, **kwargs)
        keep = ("padding", "padding_side", "return_tensors", "add_special_tokens", "truncation", "max_length")
        enc = self.tokenizer(text, **{k: v for k, v in kwargs.items() if k in keep})
        ids = enc["input_ids"]
        enc["token_type_ids"] = ids.new_ones(ids.shape) if hasattr(ids, "new_ones") else [[1] * len(r) for r in ids]
        return BatchFeature(dict(enc), tensor_type=kwargs.get("return_tensors"))


def adapt(processor):
    """The processor, able to tokenise completions alone when it is a PaliGemma one."""
    if type(processor) is _Stock:
        processor.__class__ = PaliGemmaProcessor
    return processor
