"""Which process writes, when a stage runs as several under ``accelerate launch`` (``H100:N``).

Every process of the launch runs the whole stage (``python -m pipeline.run``) and trains its share
of each batch; only the main one writes what the stage leaves behind: stage folders and
``DONE.json``, models, the clock file in a trainer checkpoint, ``config.json``, ``metrics.json``,
the events (logs, metrics, progress) the service reads. The others wait at a barrier where the
main process writes something they read next (the base model, a stage's model).

Accelerate's ``PartialState`` decides (docs: huggingface.co/docs/accelerate, "Execution process":
``is_main_process``, ``main_process_first``, ``wait_for_everyone``); the Trainers of TRL and
transformers share that same state. A single process (``WORLD_SIZE`` unset or 1) never sets up a
process group, so the standalone runner and the tests stay free of ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import Any


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` (or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@cache
def _state() -> Any:
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate sets up the process group only when told it runs on the CPU
    # (accelerate/state.py, PartialState._prepare_backend: MULTI_CPU over gloo); else every
    # process would think itself the only one, and the main one. The Trainers reuse this state.
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return not launched() or _state().is_main_process


def wait_for_everyone() -> None:
    if launched():
        _state().wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the body first (e.g. builds a file), then the others (which find it)."""
    if not launched():
        yield
        return
    with _state().main_process_first():
        yield
