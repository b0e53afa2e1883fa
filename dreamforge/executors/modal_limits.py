"""What each stage gets on Modal, in one place: ``modal_app`` registers the stage functions with
these numbers, and ``ModalExecutor`` polls a stage's call against the budget they give.

Modal's ``timeout`` counts one execution attempt only: it restarts on every retry and leaves out
scheduling and container start (https://modal.com/docs/guide/timeouts: "This duration is also per
execution attempt, meaning Functions configured with modal.Retries will start new execution
timeouts on each retry"; ``startup_timeout`` is a separate clock since 1.1.4). So a stage's call
can rightly run for (startup + timeout) × (retries + 1), plus the wait for a GPU; only a call past
that is hung, and the orchestrator cancels it.
"""

from __future__ import annotations

HOURS = 3600.0

# GPU per stage when the job's config gives no ``compute`` hint. SFT of a small VLM fits an L40S
# (48 GB); RL holds the policy plus rollouts of num_generations samples per prompt, so it gets
# the largest; evaluation and 4-bit export are generation only.
DEFAULT_GPU = {"warm_start": "L40S", "domain": "L40S", "reward": "H100", "evaluate": "L4"}

STAGE_TIMEOUT_S = {"warm_start": 8 * HOURS, "domain": 6 * HOURS, "reward": 12 * HOURS, "evaluate": 2 * HOURS}
STAGE_RETRIES = 3  # preemptions and crashes; each retry resumes from the stage's newest checkpoint
# Pulling the CUDA image and importing torch on a cold GPU host; Modal's default is the timeout.
STARTUP_TIMEOUT_S = 20 * 60.0
GPU_WAIT_S = 1 * HOURS  # time to find a GPU, which Modal's clocks do not count


# Reserved per GPU (modal.com/docs/guide/resources): the default is 0.125 cores and 128 MiB, and
# Modal sets OMP_NUM_THREADS and friends from the reservation, so image decoding, augmentation and
# tokenisation for a GPU would crawl; a stage holds a model in host memory while loading it.
# Billed as the greater of reservation and use: 4 cores + 16 GiB ≈ $0.32/h per GPU at list prices.
CPU_PER_GPU = 4.0  # physical cores
MEMORY_MIB_PER_GPU = 16 * 1024


def gpu_count(gpu: str | None) -> int:
    """``"H100:2"`` → 2; a plain type or no GPU → 1."""
    _, _, count = (gpu or "").partition(":")
    return int(count) if count.isdigit() and int(count) > 0 else 1


def stage_resources(gpu: str | None) -> dict[str, float | int]:
    """The ``cpu`` and ``memory`` a stage on ``gpu`` reserves (Modal's function options)."""
    n = gpu_count(gpu)
    return {"cpu": CPU_PER_GPU * n, "memory": MEMORY_MIB_PER_GPU * n}


def stage_budget_s(stage: str) -> float:
    """How long a stage's call may take, from its spawn to its end, before it counts as hung."""
    return (STARTUP_TIMEOUT_S + STAGE_TIMEOUT_S[stage]) * (STAGE_RETRIES + 1) + GPU_WAIT_S
