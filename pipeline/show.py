"""``dreamforge data show``: what a model would be trained on, sample by sample: the prompt it
sees and the exact text it is trained to answer, in the output format its codec picks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.codecs.auto import codec_for_model
from pipeline.config import TINY_MODEL
from pipeline.data import load_dataset


def show_samples(dataset: str, model: str, *, task: str = "detect", n: int = 3, codec: str = "auto",
                 num_bins: int = 32, max_objects: int = 16) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """``(rows, why)``: the first ``n`` fully labelled training samples of ``dataset`` as
    ``{"file", "width", "height", "input_width", "input_height", "prompt", "target", "canonical"}``
    for ``model`` (a model folder, a hub id, a family name or ``dreamforge-tiny``), and why
    its output format was chosen."""
    ds = load_dataset(dataset, task)
    c, why = codec_for_model(None if model == TINY_MODEL else model, codec, task, ds.categories, num_bins=num_bins,
                             max_objects=max_objects, keypoint_names=ds.keypoint_names or None)  # fmt: skip
    prompt = _prompt(model, c)
    samples = [s for split in ("train", "val", "test") for s in ds.splits.get(split) or [] if s.label_kind == "full"]
    rows = []
    for s in samples[:n]:
        iw, ih = c.input_size(s.width, s.height)
        canonical = {k: v for k, v in s.target.items() if v not in ([], None, "")}
        rows.append({"file": s.file_name, "width": s.width, "height": s.height, "input_width": iw, "input_height": ih,
                     "prompt": prompt, "target": c.encode(s.target), "canonical": canonical})  # fmt: skip
    return rows, f"{c.format}: {why}"


def _prompt(model: str, codec) -> str:
    """Through the model's own chat template when its folder is here; else the task prompt."""
    if not Path(model).is_dir():
        return codec.prompt()
    from pipeline.models.loading import load_processor
    from pipeline.stages.common import prompt_text

    return prompt_text(load_processor(model), codec)
