"""Device and precision, chosen from the hardware rather than assumed.

TRL's configs default to bf16 and gradient checkpointing even on CPU; on our CPUs (no native
bf16) that made GRPO 8.7 s/step instead of 1.0 (shared/FACTS.md). fp32 on CPU, bf16 on GPUs
that have it, fp16 otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" | "cpu"
    bf16: bool
    fp16: bool

    @property
    def use_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32


def pick_device() -> Device:
    if torch.cuda.is_available() and os.environ.get("DREAMFORGE_FORCE_CPU") != "1":
        bf16 = torch.cuda.is_bf16_supported()
        return Device("cuda", bf16=bf16, fp16=not bf16)
    # Two vCPUs give about one core of matmul; more threads only contend (FACTS.md).
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return Device("cpu", bf16=False, fp16=False)
