"""The standalone runner: ``python -m pipeline.run --preset retail-shelf --output models/job-1``.

Runs in a GPU container with nothing but the job's config, data and reward, so it never
imports the service. Rerunning on the same output resumes at the first unfinished stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from pipeline.config import ConfigError, build_config, read_config
from pipeline.fence import LOST_EXIT, Fence, FenceLost
from pipeline.sealed import is_sealed, open_sealed
from pipeline.stage_table import TRAINED_SECTIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.run", description=__doc__)
    p.add_argument("--config", type=Path, help="dreamforge.config.json")
    p.add_argument("--preset", help="generic, medical-scan, retail-shelf or traffic-camera")
    p.add_argument("--dataset", help="dataset URI (folder, .zip, synthetic://…)")
    p.add_argument("--reward", help="built-in reward name or a .js file")
    p.add_argument("--model", help="model id or path (default dreamforge-tiny)")
    p.add_argument("--epochs", type=float, nargs="+", metavar="N", help="epochs of stage 1, 2 and 3")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    p.add_argument("--output", type=Path, required=True, help="output folder (resumes if it exists)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--fence", nargs=2, metavar=("OWNER_FILE", "ATTEMPT"),
                   help="(the service) write only while OWNER_FILE names ATTEMPT; stop when it does not")  # fmt: skip
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    over: dict = {}
    if args.dataset:
        over.setdefault("data", {})["dataset"] = args.dataset
    if args.reward:
        over["reward"] = args.reward
    if args.model:
        over["model"] = args.model
    if args.epochs:
        if len(args.epochs) > 3:
            raise ConfigError("--epochs takes at most three numbers: stage 1, stage 2 and the RL stage")
        for key, n in zip(TRAINED_SECTIONS, args.epochs, strict=False):
            over[key] = {"epochs": n}
    if args.config:
        raw = read_config(args.config)
        if is_sealed(raw):  # validated at submit: opened with its hash check, never validated again
            if over or args.preset:
                raise ConfigError(f"{args.config}: a sealed config takes no --preset, --dataset, --reward, --model "
                                  "or --epochs; it runs as it was submitted")  # fmt: skip
            return open_sealed(raw, where=str(args.config))
        from pipeline.config import deep_merge

        return build_config(deep_merge(raw, over), preset=args.preset, source=str(args.config))
    return build_config(over, preset=args.preset or ("retail-shelf" if not over.get("data") else None))


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except Exception:  # noqa: BLE001 — cosmetics only
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    from pipeline.data.errors import DataError
    from pipeline.job import run_job
    from pipeline.ranks import is_main
    from pipeline.reporter import PAUSED_EXIT, ConsoleReporter, MetricsFileReporter, MultiReporter, PauseRequest
    from pipeline.rewards.base import RewardError
    from pipeline.stages.common import StageCancelled, StagePaused

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 2
    fence = Fence(Path(args.fence[0]), int(args.fence[1])) if args.fence else None
    # Events carry the attempt, so the new owner's worker skips what a stale process still appends.
    tag = {"attempt": fence.token} if fence else {}
    # Under accelerate launch only the main process logs and writes events (pipeline.ranks); the
    # others still stop when the fence or a pause request says so.
    writers = [ConsoleReporter(quiet=args.quiet), MetricsFileReporter(args.output / "events.jsonl", tag=tag)] \
        if is_main() else []
    reporter = MultiReporter(*writers, fence, PauseRequest(args.output) if fence else None)
    for note in cfg.deprecations:  # old spellings the config was read with (pipeline.deprecations)
        reporter.log(note, level="warning")
    try:
        record = run_job(cfg, args.output, stages=args.stages, reporter=reporter, fence=fence)
    except (ConfigError, DataError, RewardError) as e:  # the user's to fix: exit 2, never retried
        reporter.close()
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 2
    except StagePaused as e:  # checkpointed: the service resumes the stage when the cap is raised
        print(f"paused: {e}", file=sys.stderr)  # noqa: T201
        return PAUSED_EXIT
    except (FenceLost, StageCancelled) as e:  # only a fence stops a standalone stage
        print(f"stopped: {e}", file=sys.stderr)  # noqa: T201
        return LOST_EXIT
    finally:
        reporter.close()
    summary = {"output": str(args.output), "wall_seconds": record["wall_seconds"]}
    ev = record.get("evaluation")
    if ev:
        key = ev["primary_metric"]
        summary[key] = {name: round(m[key], 4) for name, m in ev["models"].items()}
        summary["release"] = ev["release"].get("release_dir")
        summary["released"] = ev["release"].get("reason")
        summary["verdict"] = (ev.get("verdict") or {}).get("verdict")
    print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
