"""Tiny random models of the families that already ground objects, each with its family's real
special tokens, so ``codec: "auto"`` meets the vocabulary it would meet on the hub:

* Qwen2.5-VL: ChatML (``<|im_start|>`` …) and the grounding tokens ``<|object_ref_start|>``,
  ``<|box_start|>`` … (Qwen/Qwen2.5-VL-3B-Instruct ``tokenizer_config.json``); it answers in JSON.
* PaliGemma: ``PaliGemmaProcessor`` itself adds ``<image>``, ``<loc0000>`` … ``<loc1023>`` and
  ``<seg000>`` … ``<seg127>`` (``processing_paligemma.py: EXTRA_TOKENS``).
* Florence-2: ``<loc_0>`` … ``<loc_999>`` and its task tags (microsoft/Florence-2-base
  ``tokenizer.json`` added tokens), a BART encoder-decoder behind a DaViT vision tower.
"""

from __future__ import annotations

from pipeline.models.tiny import _siglip_kwargs, _text_kwargs, train_tokenizer

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
# Qwen's ChatML, cut to what an image-and-text turn needs (the shipped template's system line and
# tool calls dropped); prefix-consistent, as TRL's completion-only loss needs.
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FLORENCE_TAGS = ["<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<poly>", "</poly>", "<sep>"]


def build_qwen2_5_vl(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from .qwen_compat import Qwen2VLImageOnlyProcessor, qwen_image_processor

    tok = train_tokenizer(extra_words, QWEN_SPECIALS, added_tokens=special_tokens)
    tok.eos_token = "<|im_end|>"  # an assistant turn ends there, as in the real tokenizer_config
    head_dim = hidden // 4
    quarter = head_dim // 2 // 4
    config = Qwen2_5_VLConfig(
        text_config=dict(model_type="qwen2_5_vl_text", **{**_text_kwargs(tok, hidden, layers), "eos_token_id": tok.eos_token_id},
                         rope_scaling={"type": "mrope", "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]}),
        vision_config=dict(depth=vision_layers, hidden_size=vision_hidden, out_hidden_size=hidden,
                           intermediate_size=vision_hidden * 2, num_heads=4, patch_size=patch, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=patch * 4, fullatt_block_indexes=[vision_layers - 1]),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )  # fmt: skip
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = Qwen2VLImageOnlyProcessor(image_processor=qwen_image_processor(image_size, patch), tokenizer=tok,
                                          chat_template=QWEN_TEMPLATE)  # fmt: skip
    return model, processor


def build_paligemma(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch):
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = train_tokenizer(extra_words, [], added_tokens=special_tokens)
    ip = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, do_resize=True)
    ip.image_seq_length = (image_size // patch) ** 2
    # The processor adds <image>, <loc0000>…<loc1023> and <seg000>…<seg127> itself, as on the hub.
    # No chat template, as on the hub: the processor puts the image tokens and <bos> before the prompt.
    processor = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    text = GemmaConfig(**{**_text_kwargs(tok, hidden, layers), "head_dim": hidden // 4})
    config = PaliGemmaConfig(
        vision_config=_siglip_kwargs(vision_hidden, vision_layers, image_size, patch) | {"projection_dim": hidden},
        text_config=text.to_dict(), image_token_id=processor.image_token_id, projection_dim=hidden,
    )  # fmt: skip
    return PaliGemmaForConditionalGeneration(config), processor


def build_florence2(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    locs = [f"<loc_{i}>" for i in range(1000)]
    # As in Florence-2's own processor code, the location tokens are special tokens.
    tok = train_tokenizer(extra_words, ["<image>", *FLORENCE_TAGS, *locs], added_tokens=list(special_tokens))
    # Florence2Processor reads tokenizer.image_token; as an extra special token it is saved and reloaded.
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    tok.padding_side = "left"
    side = image_size // 32  # DaViT's four stages downsample by 4·2·2·2
    ip = CLIPImageProcessorPil(size={"height": image_size, "width": image_size}, do_center_crop=False)
    ip.image_seq_length = side * side + 1  # one pooled token, then the grid
    vision = dict(depths=(1, 1, 1, 1), embed_dim=(16, 32, 32, 64), num_heads=(1, 2, 2, 4), num_groups=(1, 2, 2, 4),
                  window_size=2, projection_dim=hidden, drop_path_rate=0.0, max_position_embeddings=side * side + 8)
    text = BartConfig(vocab_size=len(tok), d_model=hidden, encoder_layers=layers, decoder_layers=layers,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=hidden * 2,
                      decoder_ffn_dim=hidden * 2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id)
    config = Florence2Config(vision_config=vision, text_config=text.to_dict(), image_token_id=tok.image_token_id)
    processor = Florence2Processor(image_processor=ip, tokenizer=tok)
    return Florence2ForConditionalGeneration(config), processor  # fmt: skip
