"""Peak GPU memory of each stage, estimated before anything runs, and whether it fits its GPU.

An estimate, by the usual accounting (each term is reported, so a wrong one can be seen):

- training all weights with AdamW keeps 16 bytes per parameter: the weights, their gradients and
  Adam's two moments (ZeRO, Rajbhandari et al. 2020, §3.1: 2+2+12 bytes in mixed precision;
  4+4+8 in fp32);
- LoRA keeps the frozen weights in 16-bit (2 bytes per parameter) and trains a few adapters;
- evaluation holds the 16-bit weights only; GRPO with ``beta > 0`` adds a 16-bit reference copy;
- activations: 34 bytes per token, hidden unit and layer (Korthikanti et al. 2022, "Reducing
  Activation Recomputation", per-layer ``34·s·b·h`` without recomputation, leaving out the
  attention-score term that fused attention does not store), for the stage's batch at
  ``TOKENS_PER_EXAMPLE`` tokens (image tokens dominate; an assumption, stated in the report);
- plus ``OVERHEAD`` for the CUDA context and the allocator's fragmentation.

Model shapes come from :data:`MODELS` (parameters, hidden size, layers); a model not in it is
reported as unknown rather than guessed.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import CurriculumConfig

GIB = 1024**3
# NVIDIA's memory per GPU, GiB as CUDA reports it (about 93 % of the decimal GB on the spec sheet).
GPU_GIB = {"H100": 79.6, "H100!": 79.6, "A100-80GB": 79.2, "A100": 39.4, "A100-40GB": 39.4, "L40S": 44.4, "L4": 22.0,
           "A10G": 22.0, "A10": 22.0, "T4": 14.6}  # fmt: skip
# (parameters, hidden size, decoder layers) from each model's config.json on the Hub (text model).
MODELS: dict[str, tuple[float, int, int]] = {
    "dreamforge-tiny": (2.8e6, 64, 2),  # FACTS.md: ~2.8M parameters, built locally
    "HuggingFaceTB/SmolVLM-256M-Instruct": (0.256e9, 576, 30),
    "HuggingFaceTB/SmolVLM-500M-Instruct": (0.507e9, 960, 32),
    "HuggingFaceTB/SmolVLM-Instruct": (2.25e9, 2048, 24),
    "Qwen/Qwen2-VL-2B-Instruct": (2.21e9, 1536, 28),
    "Qwen/Qwen2-VL-7B-Instruct": (8.29e9, 3584, 28),
    "Qwen/Qwen2.5-VL-3B-Instruct": (3.75e9, 2048, 36),
    "Qwen/Qwen2.5-VL-7B-Instruct": (8.29e9, 3584, 28),
    "google/paligemma-3b-pt-224": (2.92e9, 2048, 18),
    "llava-hf/llava-1.5-7b-hf": (7.06e9, 4096, 32),
}
TOKENS_PER_EXAMPLE = 1024  # image tokens plus the prompt and answer, an assumption for the Hub models
TINY_TOKENS = 40  # dreamforge-tiny: 16 image tokens plus text
OVERHEAD_GIB = 1.5
FIT_SHARE = 0.9  # more than this share of the GPU's memory is reported as not fitting


def stage_memory(cfg: CurriculumConfig, stage: str, gpu: str) -> dict[str, Any]:
    """``{peak_gib, gpu_gib, fits, terms}`` of ``stage`` on ``gpu``; peak None for an unknown model."""
    name = gpu.partition(":")[0].upper()
    shape = MODELS.get(cfg.model)
    out: dict[str, Any] = {"peak_gib": None, "gpu_gib": GPU_GIB.get(name), "fits": None, "terms": {}}
    if shape is None:
        return out
    params, hidden, layers = shape
    sc = cfg.stage(stage)
    lora = bool(getattr(sc, "lora", False))
    terms: dict[str, float] = {}
    if stage == "evaluate":
        terms["weights (16-bit)"] = 2 * params
        batch = cfg.evaluate.batch_size
    elif lora:
        terms["frozen weights (16-bit, LoRA)"] = 2 * params
        batch = sc.batch_size  # type: ignore[union-attr]
    else:
        terms["weights, gradients and AdamW state (16 bytes a parameter)"] = 16 * params
        batch = sc.batch_size  # type: ignore[union-attr]
    if stage == "reward" and cfg.rl.beta > 0:
        terms["reference model (16-bit)"] = 2 * params
    tokens = TINY_TOKENS if cfg.model == "dreamforge-tiny" else TOKENS_PER_EXAMPLE
    per_token = 34 * hidden * layers if stage != "evaluate" else 4 * hidden * layers  # inference keeps no activations
    terms[f"activations ({batch} examples × {tokens} tokens)"] = per_token * batch * tokens
    terms["CUDA context and fragmentation"] = OVERHEAD_GIB * GIB
    peak = sum(terms.values()) / GIB
    out.update(peak_gib=round(peak, 2), terms={k: round(v / GIB, 2) for k, v in terms.items()})
    if out["gpu_gib"] is not None:
        # Several GPUs run data-parallel replicas (accelerate launch): each holds the whole model.
        out["fits"] = peak <= FIT_SHARE * out["gpu_gib"]
    return out


def memory_findings(cfg: CurriculumConfig, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(severity, message, fix)`` for each stage whose estimate does not fit its GPU."""
    out = []
    for row in rows:
        mem = row.get("memory") or {}
        if mem.get("fits") is not False:
            continue
        stage, gpu = row["stage"], row["gpu"]
        cause, size = max(mem["terms"].items(), key=lambda kv: kv[1])
        sc = cfg.stage(stage)
        fix = ("set lora: true for the stage (2 bytes a parameter instead of 16)"
               if stage != "evaluate" and not getattr(sc, "lora", False) else "a lower batch_size for the stage")
        bigger = [g for g, gib in sorted(GPU_GIB.items(), key=lambda kv: kv[1]) if gib * FIT_SHARE >= mem["peak_gib"]]
        fix += f", or a GPU with more memory ({bigger[0]})" if bigger else "; no single GPU holds it (replicas do not share memory)"
        out.append(("error", f"stage {stage} does not fit its {gpu}: about {mem['peak_gib']:.0f} GiB at its peak against "
                             f"{mem['gpu_gib']:.0f} GiB; most of it is {cause}: {size:.0f} GiB for {cfg.model}",
                    fix))  # fmt: skip
    return out

