"""Qwen2-VL without torchvision.

Qwen2-VL's processor insists on a video processor, whose import needs torchvision; PyPI's
torchvision for our torch is a CUDA build that fails to import on CPU machines (FACTS.md).
DreamForge is image-only, so we register a processor class without the video attribute.
This module must be imported in every process that loads such a processor
(``pipeline.models.loading`` does it).
"""

from __future__ import annotations

from transformers import Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    @classmethod
    def get_attributes(cls):
        return ["image_processor", "tokenizer"]


def qwen_image_processor(image_size: int, patch: int) -> Qwen2VLImageProcessorPil:
    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=pixels,
        max_pixels=pixels,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
