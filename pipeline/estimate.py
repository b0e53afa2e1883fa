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

from dataclasses import dataclass
from typing import Any

LORA_AUTO_PARAMS = 1_000_000_000
GIB = 1024**3
# Dense 16-bit peak TFLOP/s and memory (GiB) of Modal's GPU types (vendor data sheets).
GPUS: dict[str, tuple[float, float]] = {
    "T4": (65, 16), "L4": (121, 24), "A10": (125, 24), "A10G": (125, 24), "L40S": (362, 48),
    "A100": (312, 40), "A100-40GB": (312, 40), "A100-80GB": (312, 80), "RTX-PRO-6000": (500, 96),
    "H100": (989, 80), "H100!": (989, 80), "H200": (989, 141), "B200": (2250, 180), "B200+": (2250, 180),
}  # fmt: skip
CPU_TFLOPS = 0.05  # what two shared vCPUs sustained on the tiny models (FACTS.md)
MFU = 0.35


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

    def fits(self) -> bool:
        return self.capacity_gib is None or self.memory_gib <= self.capacity_gib

    def line(self) -> str:
        mode = "QLoRA" if self.qlora else "LoRA" if self.lora else "full fine-tuning"
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
                   bytes_per: int) -> StageEstimate:  # fmt: skip
    """One stage's memory and step time; ``gpu``: a Modal GPU hint, else ``cuda_gib`` (the
    local card's memory) or the CPU."""
    p = shape.params
    weights = p * (0.55 if qlora else bytes_per)
    lora = lora or qlora
    trainable = lora_trainable(shape, r) if lora else p
    state = trainable * 16 if lora else p * bytes_per * 3
    rows = batch * (generations if stage == "reward" else 1)
    acts = 34 * seq * rows * shape.hidden * shape.layers * (bytes_per / 2)
    memory = (weights + state + acts) * 1.1 / GIB  # allocator and CUDA context slack
    kind = (gpu or "").split(":")[0]
    tflops = GPUS[kind][0] if kind in GPUS else (None if cuda_gib else CPU_TFLOPS)
    tflops = tflops or 300.0
    flops = 6 * p * seq * rows + (2 * p * new_tokens * rows if stage == "reward" else 0)
    step = flops / (tflops * 1e12 * (MFU if kind or cuda_gib else 1.0))
    capacity = GPUS[kind][1] if kind in GPUS else cuda_gib
    return StageEstimate(stage, lora or qlora, qlora, int(trainable), round(memory, 2), step, kind or ("cuda" if cuda_gib else "cpu"),
                         capacity)  # fmt: skip


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


def stage_estimates(cfg, base, stages: set[str], cuda_gib: float | None, max_new_tokens: int) -> list[StageEstimate]:
    """An estimate for each training stage of ``cfg`` that will run, on ``base`` (a model folder;
    a hub id not on disk gives none). ``cuda_gib``: this machine's GPU memory, None on a CPU."""
    import json
    from pathlib import Path

    from pipeline.stage_table import SECTION

    folder = Path(base)
    if not (folder / "config.json").exists():
        return []
    params = count_params(folder)
    if not params:
        return []
    shape = shape_from_config(json.loads((folder / "config.json").read_text()), params)
    raw = json.loads((folder / "config.json").read_text())
    image_tokens = int(raw.get("image_seq_length") or (raw.get("vision_config") or {}).get("image_seq_length") or 256)
    out = []
    for stage in ("warm_start", "domain", "reward"):
        sc = getattr(cfg, SECTION[stage])
        if stage not in stages or not sc.enabled:
            continue
        lora, _ = lora_wanted(sc.lora, params)
        out.append(estimate_stage(
            stage, shape, lora=lora, qlora=sc.qlora, r=sc.lora_r, batch=sc.batch_size // (sc.num_generations if stage == "reward" else 1),
            seq=image_tokens + 64 + max_new_tokens, new_tokens=max_new_tokens,
            generations=getattr(sc, "num_generations", 1), gpu=sc.compute, cuda_gib=cuda_gib,
            bytes_per=4 if cuda_gib is None and not sc.compute else 2,
        ))  # fmt: skip
    return out
