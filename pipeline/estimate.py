"""How much memory and time each training stage needs, said before training.

Rules of thumb, not measurements (no GPU was lent when this was written: check them with
``benchmarks/families.py`` on one):

* weights: 2 bytes a parameter in bf16/fp16 (4 in fp32 on CPU; about 0.55 in NF4 for QLoRA:
  4 bits and the block scales, the vision tower kept 16-bit);
* full fine-tuning adds gradients and AdamW's two moments in the weights' precision: 3 more
  copies (PyTorch keeps Adam's state in the parameter's dtype);
* LoRA trains ``r·(d_in + d_out)`` per adapted projection (q, k, v, o, gate, up, down of
  every text layer), with fp32 gradients and moments (16 bytes each);
* activations: ``34·s·b·h`` bytes a layer in 16-bit without recomputation (Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 2, dropping the
  attention-score term that fused attention does not store), doubled in fp32;
* time: ``6·N·tokens`` FLOPs a step (``2·N`` forward, ``4·N`` backward), at 35 % of the device's
  dense 16-bit peak (GRPO adds the generation: ``2·N`` a generated token, one token at a time).

``lora: "auto"`` turns LoRA on above :data:`LORA_AUTO_PARAMS`: full fine-tuning at ~8 bytes a
parameter plus activations puts a 1B model near 10 GB and a 3B one near 30 GB, past the 16-24 GB
cards (T4, L4, A10G) most users rent; below 1B (SmolVLM-256M/500M, Florence-2-base/large) full
fine-tuning fits them and learns more per step than a rank-16 adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LORA_AUTO_PARAMS = 1_000_000_000
GIB = 1024**3
# Dense 16-bit peak TFLOP/s (vendor data sheets) and memory as CUDA reports it, GiB (about 93 %
# of the data sheet's decimal GB) of Modal's GPU types: the one GPU table of the estimates.
GPUS: dict[str, tuple[float, float]] = {
    "T4": (65, 14.6), "L4": (121, 22.0), "A10": (125, 22.0), "A10G": (125, 22.0), "L40S": (362, 44.4),
    "A100": (312, 39.4), "A100-40GB": (312, 39.4), "A100-80GB": (312, 79.2), "RTX-PRO-6000": (500, 94.9),
    "H100": (989, 79.6), "H100!": (989, 79.6), "H200": (989, 139.8), "B200": (2250, 178.4), "B200+": (2250, 178.4),
}  # fmt: skip
CPU_TFLOPS = 0.05  # what two shared vCPUs sustained on the tiny models (FACTS.md)
MFU = 0.35
SLACK = 0.1  # the allocator's fragmentation and the CUDA context, as a share of the rest
# (parameters, hidden size, decoder layers, MLP width) of the language model, from each model's
# config.json on the Hub: the shape of a model that is not on this disk yet.
HUB_SHAPES: dict[str, tuple[float, int, int, int]] = {
    "HuggingFaceTB/SmolVLM-256M-Instruct": (0.256e9, 576, 30, 1536),
    "HuggingFaceTB/SmolVLM-500M-Instruct": (0.507e9, 960, 32, 2560),
    "HuggingFaceTB/SmolVLM-Instruct": (2.25e9, 2048, 24, 8192),
    "Qwen/Qwen2-VL-2B-Instruct": (2.21e9, 1536, 28, 8960),
    "Qwen/Qwen2-VL-7B-Instruct": (8.29e9, 3584, 28, 18944),
    "Qwen/Qwen2.5-VL-3B-Instruct": (3.75e9, 2048, 36, 11008),
    "Qwen/Qwen2.5-VL-7B-Instruct": (8.29e9, 3584, 28, 18944),
    "google/paligemma-3b-pt-224": (2.92e9, 2048, 18, 16384),
    "llava-hf/llava-1.5-7b-hf": (7.06e9, 4096, 32, 11008),
}
HUB_TOKENS = 1024  # image tokens plus prompt and answer of a hub model not on disk: an assumption, said


@dataclass
class ModelShape:
    params: int
    hidden: int
    layers: int
    intermediate: int


@dataclass
class StageEstimate:
    stage: str
    lora: bool
    qlora: bool
    trainable: int
    memory_gib: float
    step_seconds: float
    device: str
    capacity_gib: float | None
    terms: dict[str, float] = field(default_factory=dict)  # GiB by what holds it, the slack included

    def fits(self) -> bool:
        return self.capacity_gib is None or self.memory_gib <= self.capacity_gib

    def largest(self) -> tuple[str, float]:
        return max(self.terms.items(), key=lambda kv: kv[1])

    def line(self) -> str:
        mode = "QLoRA" if self.qlora else "LoRA" if self.lora else "full fine-tuning"
        mode = "inference" if self.stage == "evaluate" else mode
        cap = f" of {self.capacity_gib:.0f} GiB" if self.capacity_gib else ""
        return (f"stage {self.stage}: {mode}, {self.trainable / 1e6:.1f}M trainable parameters, about "
                f"{self.memory_gib:.1f} GiB{cap} on {self.device} and {self.step_seconds:.2g} s a step")  # fmt: skip


def lora_wanted(lora: bool | str, params: int) -> tuple[bool, str]:
    """Whether a stage trains LoRA adapters, and why."""
    if lora == "auto":
        on = params > LORA_AUTO_PARAMS
        return on, f"{params / 1e9:.2f}B parameters {'>' if on else '≤'} {LORA_AUTO_PARAMS / 1e9:.0f}B (lora: auto)"
    return bool(lora), "set in the config"


def lora_trainable(shape: ModelShape, r: int) -> int:
    h, i = shape.hidden, shape.intermediate
    return shape.layers * r * (4 * 2 * h + 2 * (h + i) + (i + h))


def estimate_stage(stage: str, shape: ModelShape, *, lora: bool, r: int, qlora: bool = False, batch: int, seq: int,
                   new_tokens: int, generations: int, gpu: str | None, cuda_gib: float | None,
                   bytes_per: int, reference: bool = False) -> StageEstimate:  # fmt: skip
    """One stage's memory (by term) and step time; ``gpu``: a Modal GPU hint, else ``cuda_gib``
    (the local card's memory) or the CPU. ``evaluate`` holds the weights and one batch's
    activations only; ``reference``: GRPO with ``beta > 0`` keeps a frozen copy of the model."""
    p = shape.params
    lora = (lora or qlora) and stage != "evaluate"
    terms: dict[str, float] = {}
    terms["4-bit weights (QLoRA)" if qlora and lora else f"weights ({8 * bytes_per}-bit)"] = p * (0.55 if qlora and lora else bytes_per)
    trainable = 0 if stage == "evaluate" else lora_trainable(shape, r) if lora else p
    if stage != "evaluate":
        if lora:
            terms["LoRA adapters with their gradients and AdamW state"] = trainable * 16
        else:
            terms["gradients and AdamW's two moments (3 copies of the weights)"] = p * bytes_per * 3
    if reference and stage == "reward":
        terms["the reference model (beta > 0)"] = p * bytes_per
    rows = batch * (generations if stage == "reward" else 1)
    per_token = 34 if stage != "evaluate" else 4  # inference keeps one layer's activations at a time
    terms[f"activations ({rows} examples × {seq} tokens)"] = per_token * seq * rows * shape.hidden * shape.layers * (bytes_per / 2)
    terms["allocator and CUDA context slack"] = SLACK * sum(terms.values())
    terms = {k: v / GIB for k, v in terms.items()}
    kind = (gpu or "").split(":")[0]
    tflops = GPUS[kind][0] if kind in GPUS else (None if cuda_gib else CPU_TFLOPS)
    tflops = tflops or 300.0
    passes = 2 if stage == "evaluate" else 6  # forward only, or forward and backward
    flops = passes * p * seq * rows + (2 * p * new_tokens * rows if stage in ("reward", "evaluate") else 0)
    step = flops / (tflops * 1e12 * (MFU if kind or cuda_gib else 1.0))
    capacity = GPUS[kind][1] if kind in GPUS else cuda_gib
    device = kind or ("cuda" if cuda_gib else "cpu")
    return StageEstimate(stage, lora, qlora and lora, int(trainable), round(sum(terms.values()), 2), step, device, capacity,
                         {k: round(v, 2) for k, v in terms.items()})  # fmt: skip


def count_params(folder) -> int:
    """Parameters of a saved model, from its safetensors headers (no weights read)."""
    import json
    import math
    import struct
    from pathlib import Path

    total = 0
    for f in Path(folder).glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def shape_from_config(cfg: dict[str, Any], params: int) -> ModelShape:
    """Hidden size, layers and MLP width of the language model from a saved config."""
    text = cfg.get("text_config") or cfg
    h = int(text.get("hidden_size") or text.get("d_model") or 1024)
    layers = int(text.get("num_hidden_layers") or text.get("decoder_layers") or 24)
    inter = int(text.get("intermediate_size") or text.get("decoder_ffn_dim") or 4 * h)
    return ModelShape(params, h, layers, inter)


def _shuffled_tokens(raw: dict[str, Any], folder) -> int | None:
    """Image tokens of an Idefics3-style model that does not split its image (the built-in
    one-token model): patches a side squared over the pixel shuffle's factor squared."""
    import json

    vision, scale = raw.get("vision_config") or {}, raw.get("scale_factor")
    proc = folder / "processor_config.json"
    if not (scale and vision.get("image_size") and vision.get("patch_size") and proc.exists()):
        return None
    image_processor = json.loads(proc.read_text()).get("image_processor") or {}
    if image_processor.get("do_image_splitting", True):
        return None  # crops and a global image: more than one image's worth, left to the default
    return max(1, (vision["image_size"] // vision["patch_size"]) ** 2 // scale**2)


def model_shape(model: str) -> tuple[ModelShape, int] | None:
    """The language model's shape and the tokens of one example: from the model's own folder
    (its config and safetensors headers; no weights read), else from :data:`HUB_SHAPES` for a hub
    model not on this disk; None for a model known to neither."""
    import json
    from pathlib import Path

    from pipeline.config import TINY_MODEL

    folder = Path(model)
    if model != TINY_MODEL and (folder / "config.json").exists() and (params := count_params(folder)):
        raw = json.loads((folder / "config.json").read_text())
        image_tokens = int(raw.get("image_seq_length") or (raw.get("vision_config") or {}).get("image_seq_length")
                           or _shuffled_tokens(raw, folder) or 256)  # fmt: skip
        return shape_from_config(raw, params), image_tokens + 64
    if model in HUB_SHAPES:
        p, h, layers, inter = HUB_SHAPES[model]
        return ModelShape(int(p), h, layers, inter), HUB_TOKENS
    return None


def stage_estimate(cfg, stage: str, *, model: str | None = None, gpu: str | None = None, cuda_gib: float | None = None,
                   max_new_tokens: int = 200) -> StageEstimate | None:  # fmt: skip
    """``stage`` of ``cfg`` on ``gpu`` (default: its ``compute`` hint) or this machine; None for a
    model of unknown shape. ``model``: the folder the stage starts from (default ``cfg.model``)."""
    from pipeline.stage_table import SECTION

    found = model_shape(model or cfg.model)
    if found is None:
        return None
    shape, tokens = found
    sc = getattr(cfg, SECTION[stage])
    gpu = gpu or sc.compute
    train = stage != "evaluate"
    lora, _ = lora_wanted(sc.lora, shape.params) if train else (False, "")
    generations = getattr(sc, "num_generations", 1) if stage == "reward" else 1
    return estimate_stage(
        stage, shape, lora=lora, qlora=bool(getattr(sc, "qlora", False)) and train, r=getattr(sc, "lora_r", 16),
        batch=max(1, sc.batch_size // generations), seq=tokens + max_new_tokens, new_tokens=max_new_tokens,
        generations=generations, gpu=gpu, cuda_gib=cuda_gib, bytes_per=4 if cuda_gib is None and not gpu else 2,
        reference=stage == "reward" and getattr(sc, "beta", 0) > 0,
    )  # fmt: skip


def stage_estimates(cfg, base, stages: set[str], cuda_gib: float | None, max_new_tokens: int) -> list[StageEstimate]:
    """An estimate for each training stage of ``cfg`` that will run, from ``base`` (a model folder
    or hub id). ``cuda_gib``: this machine's GPU memory, None on a CPU."""
    from pipeline.stage_table import SECTION

    out = []
    for stage in ("warm_start", "domain", "reward"):
        if stage in stages and getattr(cfg, SECTION[stage]).enabled:
            e = stage_estimate(cfg, stage, model=str(base), cuda_gib=cuda_gib, max_new_tokens=max_new_tokens)
            if e is not None:
                out.append(e)
    return out


def fit_problems(cfg) -> list[tuple[str, str]]:
    """``(field, message)`` for each stage whose ``compute`` hint names a GPU its estimate does
    not fit: what submit refuses (422), with the numbers, before anything is paid for."""
    from pipeline.stage_table import SECTION

    out = []
    for stage in ("warm_start", "domain", "reward", "evaluate"):
        sc = getattr(cfg, SECTION[stage])
        if not sc.enabled or not sc.compute:
            continue
        e = stage_estimate(cfg, stage)
        if e is not None and not e.fits():
            cause, gib = e.largest()
            out.append((f"{SECTION[stage]}.compute", f"{e.line()}: it does not fit; most of it is {cause} ({gib:.0f} GiB). "
                                                     f"{fix_for(cfg, stage, e)}"))  # fmt: skip
    return out


def fix_for(cfg, stage: str, e: StageEstimate) -> str:
    """What to change so ``stage`` fits: LoRA where it trains every weight, else a smaller batch,
    and a GPU that holds it."""
    fix = ("set lora: true for the stage (adapters instead of every weight's gradients and optimizer state)"
           if stage != "evaluate" and not e.lora else "a lower batch_size for the stage")
    n = int((getattr(cfg, _section(stage)).compute or "x:1").partition(":")[2] or 1)
    bigger = [g for g, (_, gib) in sorted(GPUS.items(), key=lambda kv: kv[1][1]) if gib >= e.memory_gib and "!" not in g and "+" not in g]
    fix += f", or a GPU with more memory ({bigger[0]})" if bigger else "; no single GPU holds it"
    return fix + (" (replicas on several GPUs do not share memory)" if n > 1 else "")


def _section(stage: str) -> str:
    from pipeline.stage_table import SECTION

    return SECTION[stage]
