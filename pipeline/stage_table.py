"""The curriculum's stages, defined once: every other module, the API's ``GET /api/meta``, the
dashboard and the GitHub Action read this table instead of spelling stages out.

Imports nothing but the standard library, so the Action and the dashboard can use it without the
training code. The stage that trains against the reward is named ``reward`` (stage files, job
documents, metrics) while its hyperparameters live in the config's ``rl`` section: ``section``
maps one to the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str  # stage files, job documents, metrics, logs
    number: int  # ``python -m pipeline.run --stages N``
    title: str  # what people read
    section: str  # the CurriculumConfig field holding the stage's settings
    weight: float  # share of the job's progress bar (roughly its share of the demo's time)
    trains: bool  # produces a model of its own

    @property
    def label(self) -> str:
        """``1 · warm-start SFT``: the title with its place in the curriculum."""
        return f"{self.number} · {self.title}"


STAGE_TABLE: tuple[Stage, ...] = (
    Stage("warm_start", 1, "warm-start SFT", "warm_start", 45.0, True),
    Stage("domain", 2, "domain SFT", "domain", 10.0, True),
    Stage("reward", 3, "reward RL", "rl", 25.0, True),
    Stage("evaluate", 4, "evaluate & 4-bit", "evaluate", 20.0, False),
)
STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_TABLE)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGE_TABLE}
BY_NUMBER: dict[int, Stage] = {s.number: s for s in STAGE_TABLE}
SECTION: dict[str, str] = {s.name: s.section for s in STAGE_TABLE}
# Stages that produce a model, in curriculum order (each continues the one before).
TRAINED: tuple[str, ...] = tuple(s.name for s in STAGE_TABLE if s.trains)
# Their config sections: what ``--epochs A B C`` and the API's ``epochs`` list set, in order.
TRAINED_SECTIONS: tuple[str, ...] = tuple(SECTION[s] for s in TRAINED)


def models_newest_first(released: str | None = None, *, base: bool = False) -> list[str]:
    """The models of a job to show when "the job's model" is meant: the released one first (a
    job may release an earlier stage's model when a later one did worse), then the trained
    stages from the last back, then the untrained base model if asked for."""
    order = [released] if released else []
    order += [s for s in reversed(TRAINED) if s != released]
    return order + (["base"] if base else [])


def key_metric(job: dict[str, Any]) -> tuple[str, float] | None:
    """The number a person compares jobs by (the dashboard's lists, GitHub's status and
    previews): the primary held-out metric of the job's model (``models_newest_first``) once
    evaluated, else the latest reward or loss of the running stage (named by its key), then
    of the stages trained before it (``"domain loss"``). None before any number exists."""
    result = job.get("result") or {}
    key, models = result.get("primary_metric"), result.get("models") or {}
    for name in models_newest_first((result.get("release") or {}).get("stage"), base=True):
        if key and isinstance((models.get(name) or {}).get(key), int | float):
            return key, float(models[name][key])
    running = job.get("stage")
    for stage in dict.fromkeys([running, *models_newest_first()]):
        values = (job.get("metrics") or {}).get(stage or "") or {}
        for k in ("reward", "loss", "train_loss"):
            if isinstance(values.get(k), int | float):
                return (k if stage == running else f"{stage} {k}"), float(values[k])
    return None


def as_json() -> list[dict[str, Any]]:
    return [{**asdict(s), "label": s.label} for s in STAGE_TABLE]


# The held-out mean of the job's own reward per model (pipeline/stages/evaluate.py), and the
# title every held-out table gives it: the reward's name (metrics.json's "reward"), because for a
# user who wrote a business reward that is the number they know it by.
REWARD_SCORE = "reward_score"


def metric_title(key: str, reward: str | None) -> str:
    """``reward: retail_facings`` for the reward score of a job whose reward is retail_facings.js;
    any other metric keeps its key."""
    if key != REWARD_SCORE:
        return key
    name = (reward or "").removesuffix(".js")
    return f"reward: {name}" if name else "reward score"


# What a trained model answers, by the task it was trained for, in Moondream Station's words:
# boxes answer ``detect`` and ``point`` (the box centres), polygons also ``segment``, captions
# ``caption``. ``dreamforge serve`` refuses the rest; the dashboard's "Try it" offers these.
SKILLS: dict[str, tuple[str, ...]] = {
    "detect": ("detect", "point"),
    "keypoints": ("detect", "point"),
    "segment": ("detect", "point", "segment"),
    "caption": ("caption",),
}
