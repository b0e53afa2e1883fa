import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def tiny_job_config(task: str = "detect", kind: str = "retail-shelf", **over) -> dict:
    """A curriculum that runs all four stages in seconds: the knobs are shrunk, not removed."""
    cfg = {
        "name": f"tiny-{task}",
        "task": task,
        "data": {
            "dataset": f"synthetic://{kind}?n=24&seed=1",
            "warm_start_dataset": "synthetic://generic?n=32&seed=7",
            "split": [0.5, 0.17, 0.33],
        },
        "warm_start": {"max_steps": 6, "batch_size": 8, "lr": 0.002},
        "domain": {"max_steps": 4, "batch_size": 8, "lr": 0.001},
        # 2 prompts x 4 samples: the smallest batch where GRPO groups have a spread
        "rl": {"max_steps": 2, "batch_size": 8, "num_generations": 4, "lr": 5e-5},
        # min_f1 0: a few steps move boxes towards the objects, not onto them; tests of the
        # verdict set it (tests/test_real_images.py)
        "evaluate": {"max_samples": 6, "batch_size": 6, "min_f1": 0.0},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# Module-scoped stacks are each module's own (their settings differ); the fixtures over them are shared.
@pytest.fixture(scope="module")
def db(stack):
    """The stack's database, through pymongo (for asserting what was stored)."""
    from dreamforge.store import client

    with client(stack.uri) as c:
        yield c["dreamforge"]


@pytest.fixture(scope="module")
def gh():
    """A loopback stand-in for GitHub's REST API that records every request."""
    from fake_github import FakeGitHub

    with FakeGitHub() as fake:
        yield fake
