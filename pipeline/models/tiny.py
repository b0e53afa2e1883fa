"""Tiny real VLM architectures built from transformers configs, with a locally trained tokenizer.

No model hub is reachable from our machines, so the default model ``dreamforge-tiny`` and
the test models are built here: real architectures (Llava, Idefics3/SmolVLM, Qwen2-VL) with
random weights, a byte-level BPE trained on the task vocabulary, and an image processor
built from the PIL classes (no torchvision on CPU machines, see shared/FACTS.md). After
``save_pretrained`` they reload through ``AutoModelForImageTextToText`` /
``AutoProcessor`` like any hub model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

FAMILIES = ("llava", "idefics3", "qwen2_vl", "qwen2_5_vl", "paligemma", "florence2")

# One template for every family: it only needs to place the image placeholder where the
# processor expands it, and to be prefix-consistent (prompt + generation prompt is a
# prefix of prompt + completion) so TRL's completion-only loss can find the answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{% elif message['role'] == 'system' %}<|system|>"
    "{% else %}<|assistant|>{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ image_placeholder }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

BASE_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]

_CORPUS_WORDS = (
    "detect all objects segment find keypoints of each object describe the image caption "
    "a an one two three four five and on in at of with left right top bottom upper lower middle "
    "center front rear red blue green yellow white black gray bright dark small large long "
    "square circle triangle cola water chips soap lesion car truck bus shelf scan road product "
    "products vehicle vehicles lesions shapes none image there is are"
)


def train_tokenizer(
    extra_words: list[str] | None = None,
    special_tokens: list[str] | None = None,
    vocab_size: int = 512,
    added_tokens: list[str] | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the task vocabulary, with the given special tokens."""
    words = _CORPUS_WORDS.split() + list(extra_words or [])
    corpus = [" ".join(words)] * 4 + words + [w.capitalize() for w in words]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BASE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    extra = [t for t in (special_tokens or []) if t not in fast.get_vocab()]
    # Location tokens and image placeholders must be atomic: one id each, never split.
    fast.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
    # Location tokens are atomic but NOT special: TRL decodes completions with
    # skip_special_tokens=True, which would strip them before the reward parses the answer.
    fast.add_tokens([t for t in (added_tokens or []) if t not in fast.get_vocab()])
    fast.padding_side = "left"  # generation batches pad on the left
    return fast


def _template(placeholder: str) -> str:
    return CHAT_TEMPLATE.replace("{{ image_placeholder }}", placeholder)


def build_tiny_vlm(
    out_dir: str | Path,
    *,
    family: str = "llava",
    special_tokens: list[str] | None = None,
    extra_words: list[str] | None = None,
    image_size: int = 64,
    hidden: int = 128,
    layers: int = 3,
    vision_hidden: int = 96,
    vision_layers: int = 2,
    patch: int = 8,
    seed: int = 0,
    merge: int = 2,
) -> Path:
    """Build a tiny random VLM of ``family`` and save model + processor to ``out_dir``.
    ``merge`` (idefics3): its pixel shuffle's factor, ``merge``×``merge`` patches to a token."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from pipeline.models import tiny_families as tf

    builder = {"llava": _build_llava, "idefics3": _build_idefics3, "qwen2_vl": _build_qwen2_vl,
               "qwen2_5_vl": tf.build_qwen2_5_vl, "paligemma": tf.build_paligemma,
               "florence2": tf.build_florence2}[family]  # fmt: skip
    extra = {"merge": merge} if family == "idefics3" else {}
    model, processor = builder(
        **extra,
        special_tokens=list(special_tokens or []),
        extra_words=extra_words,
        image_size=image_size,
        hidden=hidden,
        layers=layers,
        vision_hidden=vision_hidden,
        vision_layers=vision_layers,
        patch=patch,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "dreamforge_model.json").write_text(
        json.dumps({"family": family, "image_size": image_size, "built_by": "dreamforge", **_loc_bins(special_tokens)},
                   indent=1)
    )
    return out_dir


def _loc_bins(tokens: list[str] | None) -> dict:
    """The loc grammar's bins the model was built for (``codec: "auto"`` reads them back)."""
    n = sum(1 for t in tokens or [] if t.startswith("<loc_"))
    return {"loc_bins": n} if n else {}


def _text_kwargs(tok, hidden: int, layers: int) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        # RoPE: no weights depend on it. Room for the longest answer a config allows (100 objects
        # of ~10 tokens) after the image and the prompt; job_checks.check_answer_length says when not.
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )


def _siglip_kwargs(hidden: int, layers: int, image_size: int, patch: int) -> dict:
    """The SigLIP vision tower Llava and Idefics3 share."""
    return dict(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
    )


def _build_llava(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = train_tokenizer(extra_words, ["<image>"], added_tokens=special_tokens)
    vision = SiglipVisionConfig(**_siglip_kwargs(vision_hidden, vision_layers, image_size, patch))
    text = LlamaConfig(**_text_kwargs(tok, hidden, layers))
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        image_seq_length=(image_size // patch) ** 2,
    )
    model = LlavaForConditionalGeneration(config)
    ip = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, do_resize=True)
    processor = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=_template("<image>"),
    )
    return model, processor


def _build_idefics3(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch, merge=2):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    scale = merge
    if (image_size // patch) % scale:
        raise ValueError(f"idefics3: {image_size // patch} patches a side do not merge {scale} by {scale}")
    extra = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    extra += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = train_tokenizer(extra_words, extra, added_tokens=special_tokens)
    seq_len = (image_size // patch) ** 2 // scale**2
    config = Idefics3Config(
        vision_config=_siglip_kwargs(vision_hidden, vision_layers, image_size, patch),
        text_config=dict(model_type="llama", **_text_kwargs(tok, hidden, layers)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    model = Idefics3ForConditionalGeneration(config)
    ip = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=ip, tokenizer=tok, image_seq_len=seq_len, chat_template=_template("<image>")
    )
    return model, processor


def _build_qwen2_vl(*, special_tokens, extra_words, image_size, hidden, layers, vision_hidden, vision_layers, patch):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from .qwen_compat import Qwen2VLImageOnlyProcessor, qwen_image_processor

    extra = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = train_tokenizer(extra_words, extra, added_tokens=special_tokens)
    heads = 4
    head_dim = hidden // heads
    quarter = head_dim // 2 // 4
    config = Qwen2VLConfig(
        text_config=dict(
            model_type="qwen2_vl_text",
            **_text_kwargs(tok, hidden, layers),
            rope_scaling={"type": "mrope", "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]},
        ),
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden,
            hidden_size=hidden,
            num_heads=4,
            mlp_ratio=2,
            patch_size=patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_chans=3,
        ),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    model = Qwen2VLForConditionalGeneration(config)
    ip = qwen_image_processor(image_size, patch)
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=ip, tokenizer=tok, chat_template=_template("<|vision_start|><|image_pad|><|vision_end|>")
    )
    return model, processor

