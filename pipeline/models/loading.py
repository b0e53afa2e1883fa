"""Load any supported VLM by Hugging Face id or local path through the Auto classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipeline.config import TINY_MODEL  # noqa: F401 — re-exported for the stages
from pipeline.device import Device


def _register_compat(path: Path) -> None:
    cfg = path / "processor_config.json"
    if cfg.exists() and "Qwen2VLImageOnlyProcessor" in cfg.read_text():
        import transformers

        from pipeline.models import qwen_compat

        # AutoProcessor resolves the class by name from the transformers namespace.
        transformers.Qwen2VLImageOnlyProcessor = qwen_compat.Qwen2VLImageOnlyProcessor


def load_model(path: str | Path, device: Device, *, quantization_config: Any = None):
    """Model + processor from a folder or hub id, on the device, in the device's precision."""
    p = Path(path)
    if p.exists():
        _register_compat(p)
    kwargs: dict[str, Any] = {}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map="cpu" if device.use_cpu else "auto")
    else:
        kwargs["dtype"] = torch.float32 if device.use_cpu else device.dtype
    model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
    processor = prepared(AutoProcessor.from_pretrained(str(path)), encoder_decoder=model.config.is_encoder_decoder)
    if quantization_config is None and not device.use_cpu:
        model.to(device.kind)
    return model, processor


def four_bit_config(quant_type: str, device: Device, keep_16bit: list[str]):
    """bitsandbytes 4-bit weights for the language model; ``keep_16bit`` module prefixes (the
    vision tower, the projector, lm_head) stay in 16-bit. Prefixes match from the start of the
    full module name (FACTS.md): "model.vision_tower", not "vision_tower"."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_compute_dtype=torch.float32 if device.use_cpu else device.dtype,
        llm_int8_skip_modules=list(keep_16bit),
    )


def load_processor(path: str | Path):
    """The processor alone (``dreamforge data show``), prepared as :func:`load_model` prepares it."""
    from transformers import AutoConfig

    if Path(path).exists():
        _register_compat(Path(path))
    encoder_decoder = bool(getattr(AutoConfig.from_pretrained(str(path)), "is_encoder_decoder", False))
    return prepared(AutoProcessor.from_pretrained(str(path)), encoder_decoder=encoder_decoder)


def prepared(processor, *, encoder_decoder: bool):
    """A PaliGemma processor that tokenises completions alone, and a bare chat template for a
    decoder family that ships none (an encoder-decoder takes the task prompt as is)."""
    if type(processor).__name__ == "PaliGemmaProcessor":
        from pipeline.models.paligemma_compat import adapt

        processor = adapt(processor)
    if not getattr(processor, "chat_template", None) and not encoder_decoder:
        processor.chat_template = bare_template(processor.tokenizer.eos_token)
    return processor


def bare_template(eos: str) -> str:
    """A chat template for a family that has none (PaliGemma): the user's text as is, the
    answer then end of text. TRL's trainers take chat messages; this renders them as the
    family's own prompt (``detect cola ; soap``), and its processor adds the image and <bos>."""
    return (
        "{% for message in messages %}{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
        "{% endif %}{% endfor %}{% endif %}{% if message['role'] == 'assistant' %}" + eos + "{% endif %}{% endfor %}"
    )


def ensure_tokens(model, processor, tokens: list[str]) -> int:
    """Add the codec's tokens to a pretrained model's tokenizer (as normal, unsplittable tokens)."""
    tok = processor.tokenizer
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing)
        model.resize_token_embeddings(len(tok), mean_resizing=True)
    return len(missing)


def model_family(path: str | Path) -> str:
    meta = Path(path) / "dreamforge_model.json"
    if meta.exists():
        return json.loads(meta.read_text()).get("family", "unknown")
    cfg = Path(path) / "config.json"
    if cfg.exists():
        return json.loads(cfg.read_text()).get("model_type", "unknown")
    return "unknown"
