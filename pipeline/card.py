"""The model card: Hugging Face metadata (``base_model``, ``datasets``, ``pipeline_tag``,
``model-index`` with the held-out results), the evaluation table, and how to read the answers
in the output format the model was trained in.

Metadata fields follow the Hub's model card specification
(huggingface.co/docs/hub/model-cards, "Specifying a base model": ``base_model_relation`` is one
of adapter, merge, quantized, finetune). The YAML is written as JSON values, which YAML reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.codec import CODEC_FILE
from pipeline.config import TINY_MODEL, CurriculumConfig

# The Hub's task ids for model-index (huggingface.co/tasks).
HUB_TASKS = {"detect": ("object-detection", "Object Detection"), "segment": ("image-segmentation", "Image Segmentation"),
             "keypoints": ("keypoint-detection", "Keypoint Detection"), "caption": ("image-to-text", "Image Captioning")}  # fmt: skip
READING = {
    "loc": "Answers are `label<loc_x1><loc_y1><loc_x2><loc_y2>` objects joined by `;`, with `{bins}` location bins "
           "per axis over the original image: bin `b` spans `[b·W/{bins}, (b+1)·W/{bins})`.",
    "text": "Answers are `label [x1,y1,x2,y2]` objects joined by `; `, the integers being bins of `{bins}` per axis "
            "over the original image: bin `b` spans `[b·W/{bins}, (b+1)·W/{bins})`.",
    "qwen-json": "Answers are Qwen-VL's JSON, `[{{\"bbox_2d\": [x1, y1, x2, y2], \"label\": …}}]` in a ```json fence, "
                 "{qwen_scale}.",
    "florence": "Answers are Florence-2's `label<loc_x1><loc_y1><loc_x2><loc_y2>`, in thousandths of the image "
                "(bin `b` is read at `(b+0.5)·W/1000`); the processor's `post_process_generation` reads them too.",
    "paligemma": "Answers are PaliGemma's `<locY1><locX1><locY2><locX2> label` objects joined by ` ; `, in 1024ths of "
                 "the image, y before x (`y = b/1024·H`).",
}  # fmt: skip


def reading_guide(spec: dict[str, Any]) -> str:
    """How to read the model's answers, from its ``CODEC_FILE``."""
    fmt = spec.get("format", "loc")
    scale = ("in pixels of the image as the processor resized it (smart_resize: multiples of "
             f"{spec.get('factor', 28)}, {spec.get('min_pixels')}-{spec.get('max_pixels')} pixels); scale back with "
             "`x · width / input_width`") if spec.get("coords") == "pixels" else "on a 0-1000 scale of the image"  # fmt: skip
    guide = READING[fmt].format(bins=spec.get("num_bins", 32), qwen_scale=scale)
    return f"{guide} `pipeline.codecs.codec_from_spec` (from `{CODEC_FILE}`) or `dreamforge predict` decode them."


def metadata(cfg: CurriculumConfig, record: dict[str, Any], *, quantized: bool) -> str:
    ev = record["evaluation"]
    key = ev["primary_metric"]
    released = ev["models"].get((ev.get("release") or {}).get("stage", ""), {})
    if quantized and "4bit" in ev["models"]:
        released = ev["models"]["4bit"]
    task_id, task_name = HUB_TASKS[cfg.task]
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-text-to-text",
                            "tags": ["dreamforge", cfg.task], "datasets": [cfg.data.dataset]}  # fmt: skip
    if cfg.model != TINY_MODEL and not Path(cfg.model).exists():  # a hub id
        meta.update(base_model=cfg.model, base_model_relation="quantized" if quantized else "finetune")
    elif quantized:
        meta["base_model_relation"] = "quantized"
    metrics = [{"type": k, "value": round(float(released[k]), 4), "name": f"{k} (held-out {ev['split']})"}
               for k in dict.fromkeys((key, "parse_rate")) if isinstance(released.get(k), int | float)]  # fmt: skip
    meta["model-index"] = [{"name": cfg.name, "results": [{
        "task": {"type": task_id, "name": task_name},
        "dataset": {"name": cfg.data.dataset, "type": cfg.data.dataset, "split": ev["split"]},
        "metrics": metrics}]}]  # fmt: skip
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())


def _verdict_md(verdict: dict[str, Any]) -> str:
    from pipeline.verdict import DID_NOT_LEARN, verdict_line

    if verdict.get("verdict") != DID_NOT_LEARN:
        return f"Verdict: {verdict_line(verdict)}." if verdict else ""
    causes = "".join(f"\n- {c['cause']}. Try: {c['fix']}" for c in verdict.get("causes") or [])
    return f"**Verdict: {verdict_line(verdict)}.**{causes}\n"


def _usage_md(cfg: CurriculumConfig, out: Path) -> str:
    """How to use the model: ``dreamforge serve`` speaks Moondream Station's API, so curl and
    Moondream's client work against it."""
    if cfg.task == "caption":
        skill, extra, call = "caption", "", 'model.caption(image)["caption"]'
    else:
        codec = out / "model" / CODEC_FILE
        names = (json.loads(codec.read_text()).get("categories") if codec.exists() else None) or ["object"]
        skill, extra, call = "detect", f', \\"object\\": \\"{names[0]}\\"', f'model.detect(image, "{names[0]}")["objects"]'
    return f"""## Use it

Serve it over Moondream Station's API (port 2020): `dreamforge serve JOB_ID` (or this job's
output folder), then

```bash
curl -s localhost:2020/v1/{skill} -H 'Content-Type: application/json' \\
  -d "{{\\"image_url\\": \\"data:image/jpeg;base64,$(base64 -w0 photo.jpg)\\"{extra}}}"
```

```python
import moondream as md
from PIL import Image

model = md.vl(endpoint="http://localhost:2020/v1")
image = Image.open("photo.jpg")
print({call})
```
"""


def write_model_card(out: Path, cfg: CurriculumConfig, record: dict[str, Any]) -> None:
    ev = record["evaluation"]
    key = ev["primary_metric"]
    rows = "\n".join(
        f"| {name} | {m.get(key, 0):.3f} | {m.get('parse_rate', 0):.2f} |" for name, m in ev["models"].items()
    )
    rel = ev.get("release", {})
    fit = ev.get("train_fit") or {}
    fit_line = "".join(
        f"\nOn {fit['n']} of its training images the {name} model scores {fit[name][key]:.3f} {key}"
        f" ({fit[name]['gap']:+.3f} against held-out)."
        for name in ("domain", "reward") if name in fit
    )
    spec_file = out / "model" / CODEC_FILE
    spec = json.loads(spec_file.read_text()) if spec_file.exists() else {"format": "loc", "num_bins": cfg.num_bins}
    body = f"""# {cfg.name}

Fine-tuned by DreamForge from `{cfg.model}` for **{cfg.task}** on `{cfg.data.dataset}`
with the `{record['reward']}` reward.

Held-out split `{ev['split']}` ({ev['n']} images):

| model | {key} | parse rate |
|---|---|---|
{rows}

`base` is `{cfg.model}` before training, prompted and read in the same output format.{fit_line}

Released: {rel.get('reason', 'the last trained stage')}.
{_verdict_md(ev.get('verdict') or {})}
Release artifact: `{Path(rel.get('release_dir', 'model')).name}` ({rel.get('release_format', '16-bit')}).
4-bit size ratio: {rel.get('size_ratio', 'n/a')}, metric drop: {rel.get('metric_drop', 'n/a')}.

## Reading its answers

Output format `{spec.get('format', 'loc')}`. {reading_guide(spec)}

{_usage_md(cfg, out)}"""
    for d in ("model", "model-4bit"):
        if (out / d).exists():
            (out / d / "README.md").write_text(f"---\n{metadata(cfg, record, quantized=d == 'model-4bit')}\n---\n{body}")
    (out / "MODEL_CARD.md").write_text(f"---\n{metadata(cfg, record, quantized=False)}\n---\n{body}")
