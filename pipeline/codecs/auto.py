"""``codec: "auto"``: the output format a model already speaks, read from its files.

A model's existing token is never given a second meaning: when the vocabulary already holds a
token the chosen format writes, the format must be the one that token belongs to (its native
meaning is adopted), or the job is refused with an error naming the token. Florence-2's
``<loc_0>`` … ``<loc_999>`` mean thousandths of the image; reusing them as DreamForge's 32 bins
would have trained against the model's pretraining without a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.codec import CODEC_FILE, Codec

# model_type → (format, its options, why). Qwen2.5-VL writes absolute pixels of its resized
# input; Qwen2-VL and Qwen3-VL write 0-1000 (see pipeline.codecs.qwen_json).
_BY_TYPE: dict[str, tuple[str, dict[str, Any], str]] = {
    "qwen2_5_vl": ("qwen-json", {"coords": "pixels"},
                   "Qwen2.5-VL grounds objects as JSON bbox_2d in pixels of its resized input"),
    "qwen3_vl": ("qwen-json", {"coords": "norm1000"}, "Qwen3-VL grounds objects as JSON bbox_2d on a 0-1000 scale"),
    "qwen3_vl_moe": ("qwen-json", {"coords": "norm1000"}, "Qwen3-VL grounds objects as JSON bbox_2d on a 0-1000 scale"),
    "qwen2_vl": ("qwen-json", {"coords": "norm1000"},
                 "Qwen2-VL grounds objects on a 0-1000 scale (its pretraining wrote <|box_start|>(x1,y1),(x2,y2)"
                 "<|box_end|>; JSON keeps the scale)"),
    "florence2": ("florence", {}, "Florence-2 answers label<loc_x1><loc_y1><loc_x2><loc_y2> in thousandths"),
    "paligemma": ("paligemma", {}, "PaliGemma answers <locY1><locX1><locY2><locX2> label in 1024ths"),
}  # fmt: skip
# Families DreamForge knows by name (`dreamforge data show --model FAMILY`), without their files.
FAMILIES = {**{t: t for t in _BY_TYPE}, "llava": "llava", "idefics3": "idefics3", "smolvlm": "smolvlm",
            "dreamforge-tiny": "dreamforge-tiny"}  # fmt: skip
_LOC = re.compile(r"^<loc_(\d+)>$")


@dataclass
class ModelVocab:
    """What the format choice needs to know about a model."""

    model_type: str = "unknown"
    encoder_decoder: bool = False  # Florence-2: TRL's GRPO trains decoder-only models
    tokens: set[str] = field(default_factory=set)
    dreamforge: dict[str, Any] | None = None  # dreamforge_model.json: built here
    codec: dict[str, Any] | None = None  # CODEC_FILE: exported by DreamForge
    image_processor: dict[str, Any] = field(default_factory=dict)

    def native(self) -> tuple[str | None, int | None, str]:
        """``(format, bins, token)``: the grounding vocabulary the model has, with one of its tokens."""
        if self.codec:
            fmt = self.codec.get("format", "loc")
            return fmt, self.codec.get("num_bins"), f"{fmt} codec of the exported model"
        built = self.dreamforge or {}
        if built.get("loc_bins"):  # a model built here for DreamForge's loc grammar
            return "loc", int(built["loc_bins"]), f"<loc_0> … <loc_{int(built['loc_bins']) - 1}>"
        if "<loc1023>" in self.tokens:
            return "paligemma", 1024, "<loc1023>"
        locs = sorted(int(m.group(1)) for t in self.tokens if (m := _LOC.match(t)))
        if not locs:
            return None, None, ""
        if len(locs) == 1000 and locs[-1] == 999:
            return "florence", 1000, "<loc_0>"
        if self.dreamforge is not None:  # built here before loc_bins was recorded
            return "loc", len(locs), f"<loc_{locs[0]}>"
        return "unknown", len(locs), f"<loc_{locs[0]}>"


def read_vocab(model: str | Path) -> ModelVocab:
    """A local model folder's type, vocabulary and DreamForge metadata (no weights loaded). A
    hub id goes through the Auto classes (the cache, or the hub when reachable)."""
    p = Path(model)
    if not p.is_dir():
        return _hub_vocab(str(model))
    v = ModelVocab()
    cfg = _json(p / "config.json")
    v.model_type = str(cfg.get("model_type", "unknown"))
    v.encoder_decoder = bool(cfg.get("is_encoder_decoder")) or v.model_type == "florence2"
    v.dreamforge = _json(p / "dreamforge_model.json") or None
    v.codec = _json(p / CODEC_FILE) or None
    v.image_processor = _json(p / "preprocessor_config.json") or _json(p / "processor_config.json").get("image_processor", {})
    tj = _json(p / "tokenizer.json")
    v.tokens.update(t.get("content", "") for t in tj.get("added_tokens", []))
    vocab = (tj.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        v.tokens.update(vocab)
    elif isinstance(vocab, list):  # unigram (sentencepiece) vocabularies: [token, score] pairs
        v.tokens.update(t[0] for t in vocab if isinstance(t, list) and t)
    tc = _json(p / "tokenizer_config.json")
    v.tokens.update(t.get("content", "") for t in (tc.get("added_tokens_decoder") or {}).values() if isinstance(t, dict))
    return v


def _hub_vocab(model: str) -> ModelVocab:
    try:
        from transformers import AutoConfig, AutoTokenizer

        cfg = AutoConfig.from_pretrained(model)
        tok = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ValueError(f"model {model!r}: cannot read its config and vocabulary to choose the output format "
                         f"({e.__class__.__name__}); set codec to one of loc, qwen-json, florence, paligemma, text") from None  # fmt: skip
    return ModelVocab(model_type=cfg.model_type, tokens=set(tok.get_vocab()),
                      encoder_decoder=bool(getattr(cfg, "is_encoder_decoder", False)))


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_format(vocab: ModelVocab) -> tuple[str, dict[str, Any], str]:
    """``(format, options, why)`` for a model."""
    native, bins, token = vocab.native()
    if native == "florence":
        return "florence", {}, f"the vocabulary has Florence-2's location tokens ({token} … <loc_999>, thousandths)"
    if native == "paligemma":
        return "paligemma", {}, "the vocabulary has PaliGemma's <loc0000> … <loc1023> (1024 bins, y before x)"
    if vocab.codec:
        return native or "loc", _qwen_options(vocab.codec), f"the model was exported by DreamForge in the {native} format"
    if native == "loc":
        return "loc", {}, f"the model was built by DreamForge with {bins} location tokens"
    if vocab.model_type in _BY_TYPE:
        fmt, opts, why = _BY_TYPE[vocab.model_type]
        return fmt, format_options(fmt, vocab), why
    return "loc", {}, (f"a {vocab.model_type} model has no grounding vocabulary: DreamForge adds its <loc_N> "
                       "tokens (codec 'text' writes plain numbers instead)")  # fmt: skip


def format_options(fmt: str, vocab: ModelVocab) -> dict[str, Any]:
    """The options of format ``fmt`` on this model (qwen-json: its coordinate scale and resizing)."""
    if fmt != "qwen-json":
        return {}
    if vocab.codec:
        return _qwen_options(vocab.codec)
    coords = _BY_TYPE.get(vocab.model_type, ("", {"coords": "pixels"}, ""))[1].get("coords", "pixels")
    return {"coords": coords, **(resize_options(vocab.image_processor) if coords == "pixels" else {})}


def codec_for_model(model: str | Path | None, requested: str, task: str, categories: list[str],
                    **kw: Any) -> tuple[Codec, str]:  # fmt: skip
    """The codec a job uses on ``model`` (None: DreamForge's own, built for the codec) and why.
    ``requested``: the config's ``codec``; ``kw``: :class:`Codec`'s keyword arguments.
    Raises ValueError when the format cannot serve the task or would reuse a token."""
    from pipeline.codecs import make_format_codec

    if model is not None and str(model) in FAMILIES and not Path(model).exists():
        return _family_codec(str(model), requested, task, categories, **kw)
    if model is None:
        fmt = "loc" if requested == "auto" else requested
        why = "DreamForge's own model is built for it" if requested == "auto" else "set in the config"
        return make_format_codec(fmt, task, categories, **kw), why
    vocab = read_vocab(model)
    if requested == "auto":
        fmt, opts, why = choose_format(vocab)
    else:
        fmt, opts, why = requested, format_options(requested, vocab), "set in the config"
    codec = make_format_codec(fmt, task, categories, **kw, **opts)
    check_tokens(codec, vocab)
    return codec, why


def _family_codec(family: str, requested: str, task: str, categories: list[str], **kw: Any) -> tuple[Codec, str]:
    """A family's codec by name, with its published defaults (Qwen2.5-VL: its shipped resize)."""
    from pipeline.codecs import make_format_codec
    from pipeline.codecs.qwen_json import QWEN25_RESIZE

    fmt, opts, why = _BY_TYPE.get(family, ("loc", {}, f"{family} has no grounding vocabulary"))
    if requested != "auto":
        fmt, why = requested, "set in the config"
    opts = {**opts, **(QWEN25_RESIZE if opts.get("coords") == "pixels" else {})} if fmt == "qwen-json" else {}
    return make_format_codec(fmt, task, categories, **kw, **opts), f"{why} (the {family} family's defaults)"


def _qwen_options(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in ("coords", "factor", "min_pixels", "max_pixels") if k in spec}


def resize_options(ip: dict[str, Any]) -> dict[str, Any]:
    """``smart_resize``'s parameters from a Qwen image processor's saved config."""
    size = ip.get("size") or {}
    out: dict[str, Any] = {}
    if ip.get("patch_size") and ip.get("merge_size"):
        out["factor"] = int(ip["patch_size"]) * int(ip["merge_size"])
    lo, hi = ip.get("min_pixels") or size.get("shortest_edge"), ip.get("max_pixels") or size.get("longest_edge")
    if lo:
        out["min_pixels"] = int(lo)
    if hi:
        out["max_pixels"] = int(hi)
    return out


def check_tokens(codec: Codec, vocab: ModelVocab) -> None:
    """Refuse a codec that would give one of the model's existing tokens a new meaning."""
    wanted = set(codec.special_tokens())
    clash = sorted(wanted & vocab.tokens, key=lambda t: (len(t), t))
    if not clash:
        return
    native, bins, _ = vocab.native()
    if native == codec.format and (bins is None or bins == codec.num_bins):
        return  # the model's own tokens, in their own meaning
    meaning = {"florence": "thousandths of the image (Florence-2)", "paligemma": "1024ths of the image (PaliGemma)",
               "loc": f"{bins} bins (added by DreamForge)"}.get(native or "", "something this model learned")  # fmt: skip
    raise ValueError(
        f"codec {codec.format} (num_bins {codec.num_bins}) would reuse the model's token {clash[0]}, which already "
        f"means {meaning}; use codec 'auto' to adopt the model's own format, or codec 'text'"
    )
