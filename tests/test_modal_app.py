"""The Modal app as deployed, inspected offline: it builds without a token, and every function
is registered with the resources, limits and secrets production relies on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from dreamforge.executors.local import stage_command
from dreamforge.executors.modal_executor import DEFAULT_GPU, stage_gpu
from dreamforge.executors.modal_limits import GPU_WAIT_S, STAGE_TIMEOUT_S, stage_budget_s
from dreamforge.executors.modal_stage import gpu_count
from pipeline.stage_table import STAGES

VOLUMES = {"/data/artifacts": "dreamforge-artifacts", "/hf": "dreamforge-hf-cache"}


@pytest.fixture(scope="module")
def deployed():
    import modal_app.app as deployed

    return deployed


def test_app_imports_without_torch_or_a_modal_token(tmp_path):
    """Like modal-examples' CI: the module loads on a CPU machine with no credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))  # no ~/.modal.toml either
    code = ("import sys, modal_app.app as m; assert m.app.name == 'dreamforge'; "
            "heavy = [x for x in ('torch', 'transformers', 'trl') if x in sys.modules]; "
            "assert not heavy, heavy")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("stage", STAGES)  # the executor looks each stage up by its name
def test_every_stage_is_a_gpu_function_with_timeout_retries_volumes_and_secrets(deployed, stage):
    info = getattr(deployed, stage).info()
    assert info.gpus == [(DEFAULT_GPU[stage], 1)]
    assert info.timeout == STAGE_TIMEOUT_S[stage] >= 2 * 3600
    assert info.startup_timeout == 20 * 60  # set, so the CUDA image's cold start is not the stage's timeout
    assert info.max_retries == 3  # a preempted or crashed stage restarts on the same input
    assert {path: v.name for path, v in info.volumes.items()} == VOLUMES
    assert sorted(info.secrets) == ["modal.Secret.from_name('dreamforge-huggingface')",
                                    "modal.Secret.from_name('dreamforge-mongodb')"]  # fmt: skip
    assert info.single_use_containers  # each retry starts clean
    # Not Modal's default 0.125 cores / 128 MiB (which also sets OMP_NUM_THREADS from it): data
    # loading for the GPU would be throttled.
    assert (info.cpu, info.memory_mib) == (4.0, 16 * 1024)


@pytest.mark.parametrize("stage", STAGES)
def test_the_orchestrator_gives_each_stage_its_modal_timeout_on_every_try(deployed, stage):
    """Modal restarts the timeout per retry (modal.com/docs/guide/timeouts), so the budget the
    executor polls against is the registered function's own (startup + timeout) × tries: an 8 h
    warm start or a 12 h RL stage is not cut at the local executor's 6 h."""
    from dreamforge.executors.modal_executor import ModalExecutor
    from dreamforge.settings import Settings

    info = getattr(deployed, stage).info()
    assert stage_budget_s(stage) == (info.startup_timeout + info.timeout) * (info.max_retries + 1) + GPU_WAIT_S
    assert ModalExecutor.__init__.__kwdefaults__["budget_s"] is stage_budget_s
    assert stage_budget_s(stage) > Settings().stage_timeout_s  # the local limit (6 h) no longer applies


def test_rl_gets_the_largest_gpu_and_a_jobs_compute_hint_wins():
    assert DEFAULT_GPU["reward"] == "H100"
    assert stage_gpu({}, "reward") == "H100"
    assert stage_gpu({"rl": {"compute": "H100:2"}}, "reward") == "H100:2"
    assert stage_gpu({"domain": {"compute": "A10G"}, "rl": {"compute": "H100:2"}}, "domain") == "A10G"
    assert stage_gpu({"evaluate": {"compute": None}}, "evaluate") == DEFAULT_GPU["evaluate"]


def test_orchestrator_sweep_and_web_endpoint(deployed):
    orch = deployed.orchestrate.info()
    assert orch.gpus == [] and orch.timeout == 24 * 3600 and orch.max_retries == 3
    assert {p: v.name for p, v in orch.volumes.items()} == {"/data/artifacts": "dreamforge-artifacts"}
    assert "modal.Secret.from_name('dreamforge-mongodb')" in orch.secrets
    sweep = deployed.sweep.info()
    assert sweep.gpus == [] and sweep.schedule == "Period(minutes=1)"
    # Both drain the GitHub outboxes (statuses, comments, deliveries read later): they need the token.
    assert "modal.Secret.from_name('dreamforge-github')" in orch.secrets
    assert sorted(sweep.secrets) == ["modal.Secret.from_name('dreamforge-github')",
                                     "modal.Secret.from_name('dreamforge-mongodb')"]  # fmt: skip
    web = deployed.web.info()
    assert web.gpus == [] and web.web_info is not None
    # Webhook secrets are per project, in the database (POST /api/github/link): no deployment-wide one.
    assert sorted(web.secrets) == ["modal.Secret.from_name('dreamforge-github')",
                                   "modal.Secret.from_name('dreamforge-mongodb')"]  # fmt: skip


def test_images_install_the_projects_own_dependencies_split_by_what_runs_there(deployed):
    gpu = {deployed._name(d) for d in deployed.project_dependencies()}
    cpu = {deployed._name(d) for d in deployed.project_dependencies(training=False)}
    assert {"transformers", "trl", "accelerate", "bitsandbytes", "peft", "fastapi", "pymongo", "mini-racer"} <= gpu
    assert "torch" not in gpu and deployed.TORCH == "torch==2.13.0"  # pinned on its own: the CUDA wheel
    # Modal mounts its own client; the embedded database and the dashboard are not deployed
    assert not gpu & {"modal", "secantusdb", "streamlit", "pandas"} and not cpu & {"modal", "secantusdb", "streamlit", "pandas"}
    assert not cpu & set(deployed.TRAINING) and {"fastapi", "pymongo", "pygithub", "mini-racer", "pycocotools"} <= cpu
    from modal._utils.async_utils import synchronizer

    def image_of(name: str):  # the image a function was declared with (modal 1.6.4 keeps it in _spec_)
        return getattr(deployed, name)._spec_.image

    cpu, gpu_image = synchronizer._translate_in(deployed.cpu_image), synchronizer._translate_in(deployed.image)
    assert all(image_of(n) is cpu for n in ("web", "orchestrate", "sweep"))
    assert all(image_of(s) is gpu_image for s in STAGES)
    assert deployed.WEB_WARM_CONTAINERS == 1  # warm for GitHub's 10 s webhook deadline


# What the slim image lacks: a function of its own cannot import it (the finder refuses), so any
# code path web, orchestrate or sweep runs that needs it fails here as it would on Modal.
CPU_PATHS = """
import importlib.abc, json, sys
import modal_app.app as m
BLOCKED = set(m.TRAINING) | {"secantus", "streamlit", "pandas"}
for name in list(sys.modules):
    assert name.split(".")[0] not in BLOCKED, f"modal_app.app imported {name}"
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the CPU image")
sys.meta_path.insert(0, Missing())
from dreamforge.api.app import create_app
from dreamforge.executors.modal_executor import ModalExecutor
from dreamforge.settings import Settings
from dreamforge.worker import Worker, cleanup_temporary
from pipeline.config import build_config
from pipeline.preflight import run_preflight
from pipeline.rewards.js import JsReward
from pipeline.rewards.probe import dataset_targets, load_any_reward, probe_reward
create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1"))
targets = dataset_targets("synthetic://retail-shelf?n=4&seed=1", "detect", 4)
rows = probe_reward(load_any_reward("iou"), targets) + probe_reward(JsReward(sys.argv[1]), targets)
report = run_preflight(build_config(json.loads(sys.argv[2])), samples=4)
print(json.dumps({"probe_rows": len(rows), "findings": len(report["findings"])}))
"""


def test_the_cpu_functions_code_runs_without_the_training_stack(tmp_path):
    """web (its routes' heavy paths: reward tests, preflight), orchestrate and sweep run on the
    slim image: nothing they run imports torch, transformers or the rest of TRAINING."""
    import json

    from conftest import tiny_job_config

    js = "function reward(out, gt) { return out.boxes.length === gt.boxes.length ? 1 : 0; }"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "DREAMFORGE_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", CPU_PATHS, js, json.dumps(tiny_job_config())], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["probe_rows"] > 0


def test_a_multi_gpu_stage_launches_through_accelerate(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    from dreamforge.executors.modal_limits import stage_resources

    assert stage_resources("H100:4") == {"cpu": 16.0, "memory": 4 * 16 * 1024}  # per GPU

    assert gpu_count("H100:4") == 4 and gpu_count("H100") == 1 and gpu_count(None) == 1
    cfg, out = tmp_path / "config.json", tmp_path / "out"
    assert stage_command("py", cfg, "reward", out) == [
        "py", "-m", "pipeline.run", "--config", str(cfg), "--stages", "3", "--output", str(out), "--quiet"]  # fmt: skip
    cmd = stage_command("py", cfg, "reward", out, num_processes=gpu_count("H100:4"))
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    # What accelerate itself makes of the command line: 4 processes on one machine, running
    # the pipeline module with the stage's own arguments.
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.num_processes, args.num_machines, args.multi_gpu, args.module) == (4, 1, True, True)
    assert args.training_script == "pipeline.run"
    assert args.training_script_args == ["--config", str(cfg), "--stages", "3", "--output", str(out), "--quiet"]
