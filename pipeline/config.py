"""``dreamforge.config.json``: the one schema for a curriculum, shared by the runner, the API,
the CLI, the GitHub Action and the database.

Every field's ``description`` is the single source for the published JSON Schema, the API
docs and ``--help``. Unknown fields are errors (a typo in a config must never be silently
ignored) and validation errors name the field path and say how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.config_sections import (  # noqa: F401 — pipeline.config's public names, defined there
    AUTO_MAX_OBJECTS,
    BOXED,
    EXAMPLE_REWARDS,
    MAX_STAGE_SECONDS,
    MAX_STEPS,
    MODAL_GPUS,
    PRESETS,
    REWARD_SCOPES,
    SEED_MAX,
    TINY_MODEL,
    DataConfig,
    DomainConfig,
    EvalConfig,
    ExportConfig,
    RewardScope,
    RLConfig,
    StageConfig,
    SupervisedConfig,
    WarmStartConfig,
    _Strict,
    modal_gpu,
    reward_problem,
)
from pipeline.deprecations import upgrade_config
from pipeline.gate import GateConfig
from pipeline.stage_table import SECTION, STAGES  # noqa: F401 — STAGES re-exported for callers of the config

BUILTIN_PATCHES = 8  # vision_layout one_token: the built-in model cuts its image into 8x8 patches


class CurriculumConfig(_Strict):
    """A DreamForge curriculum: what to train, on what, against which reward."""

    model_config = ConfigDict(title="dreamforge.config.json")  # merged over _Strict's

    schema_: str | None = Field(None, alias="$schema", description="Editor hint; ignored.")
    name: str = Field("dreamforge-job", max_length=200, description="Human name of the job.")
    preset: str | None = Field(None, description="Preset this config started from (informational).")
    task: Literal["detect", "segment", "keypoints", "caption"] = Field("detect", description="What the model outputs.")
    model: str = Field(
        "dreamforge-tiny",
        max_length=2048,
        description="Hugging Face model id or local path loaded with AutoModelForImageTextToText, or "
        "'dreamforge-tiny' (built locally, CPU-sized).",
    )
    reward: str = Field(
        "default",
        max_length=2048,
        description="Built-in reward name (iou, f1, mask_iou, oks, format, caption; points and count score "
        "clicked and counted images of detect and segment tasks), 'default' for the task's "
        "own, a path to a JavaScript file defining reward(out, gt), or example:NAME for a shipped JavaScript "
        f"example ({', '.join(EXAMPLE_REWARDS)}).",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed for data order, sampling and initialisation.")
    budget_minutes: float | None = Field(
        10.0, gt=0, le=MAX_STAGE_SECONDS / 60,
        description="Wall-clock budget of the whole job. Each training stage gets a share of what is left when it "
        "starts (warm start 30 %, domain SFT 50 %, RL 20 %, among the stages still to run; 10 % kept for "
        "evaluation), capped by its own max_seconds. null: only the stages' own budgets.",
    )  # fmt: skip
    codec: Literal["auto", "loc", "qwen-json", "florence", "paligemma", "text"] = Field(
        "auto",
        description="The output format the model is trained and read in. auto: the model's own (Qwen-VL: "
        "qwen-json; Florence-2: florence; PaliGemma: paligemma), else loc; the job logs which and why. loc: "
        "<loc_N> tokens over num_bins; text: the same bins as plain numbers, adding no tokens. A format that "
        "would reuse one of the model's tokens with another meaning is refused.",
    )  # fmt: skip
    num_bins: Annotated[int, Field(ge=4, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="Location bins per axis of the loc and text formats (the others have their model's own), 4-4096. "
        "auto: 32, or the power of two that gives the smallest tenth of the training boxes two bins each, at most "
        "128 and at most the built-in model's image_size; the job logs the choice and why.",
    )  # fmt: skip
    image_size: Annotated[int, Field(ge=16, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="Side of the square image the built-in model sees, 16-4096 px. auto: the training images' "
        "median side rounded to a multiple of 8, within 32-128 px; the job logs the choice and why.",
    )  # fmt: skip
    vision_layout: Literal["auto", "one_token", "patch_tokens"] = Field(
        "auto",
        description="How the built-in model hands its image to the language model. one_token: Idefics3's pixel "
        "shuffle folds 8x8 patches into one token, so where an object is reads straight off the token (small "
        "objects: one blob per image 0.16 held-out IoU against 0.02; coins 0.48-0.52 against 0.34-0.44). "
        "patch_tokens: LLaVA's 16 patch tokens, better where categories must be told apart (4 retail products: "
        "0.34 against 0.23-0.26). auto: one_token for a dataset of one category whose image_size is a "
        "multiple of 8, else patch_tokens; the job logs which and why. Ignored for other models.",
    )  # fmt: skip
    data: DataConfig = Field(default_factory=DataConfig)
    # A config that leaves the warm start out skips it; one that configures it, and every preset,
    # runs it. On real photographs the generic (flat shapes) warm start cost held-out IoU: coins
    # 0.368 / 0.375 with it against 0.434 / 0.410 without (2 seeds), galaxies level (README).
    warm_start: WarmStartConfig = Field(default_factory=lambda: WarmStartConfig(enabled=False))
    domain: DomainConfig = Field(default_factory=DomainConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    gate: GateConfig | None = Field(
        None, description="Preview gate, read from the default branch's config: when a branch's model passes against "
        "the default branch's released one. A project's own gate setting (PUT /api/gate) wins.",
    )  # fmt: skip

    # The source of a stored JavaScript reward (``reward: stored:<sha256>/<name>``): it travels beside
    # the config in the sealed document (pipeline.sealed), never inside the schema.
    _reward_source: str | None = PrivateAttr(None)

    # Old spellings build_config rewrote (pipeline.deprecations): shown to the user, never stored.
    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @property
    def reward_source(self) -> str | None:
        return self._reward_source

    @property
    def deprecations(self) -> list[str]:
        return self._deprecations

    @model_validator(mode="after")
    def _count(self) -> CurriculumConfig:
        # A test hook (tests/test_config_once.py): with DREAMFORGE_VALIDATION_LOG set, every full
        # validation of a curriculum appends a line there, in whichever process it runs, so a test
        # can count them along a job's whole way. Unset (always, outside that test): nothing.
        log = os.environ.get("DREAMFORGE_VALIDATION_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {self.name}\n")
        return self

    @field_validator("vision_layout")
    @classmethod
    def _one_token_size(cls, v: str, info: ValidationInfo) -> str:
        size = info.data.get("image_size", "auto")
        n = BUILTIN_PATCHES
        if v == "one_token" and isinstance(size, int) and size % n:
            raise ValueError(f"one_token cuts the image into {n}x{n} patches: image_size {size} is not a multiple of "
                             f"{n}; use {size // n * n or n} or {size // n * n + n}, or patch_tokens")  # fmt: skip
        return v

    @field_validator("reward")
    @classmethod
    def _example_name(cls, v: str) -> str:
        if v.startswith("example:") and v.removeprefix("example:") not in EXAMPLE_REWARDS:
            known = ", ".join("example:" + n for n in EXAMPLE_REWARDS)
            raise ValueError(f"{v!r} is not a shipped example; use one of {known}")
        return v

    @field_validator("reward")
    @classmethod
    def _reward_fits_task(cls, v: str, info: ValidationInfo) -> str:
        problem = reward_problem(v, info.data.get("task", "detect"))
        if problem:
            raise ValueError(f"{problem}; choose a reward for {info.data.get('task', 'detect')} (or 'default')")
        return v

    @field_validator("rl")
    @classmethod
    def _reward_scores_label_kinds(cls, v: RLConfig, info: ValidationInfo) -> RLConfig:
        problem = reward_problem(info.data.get("reward", ""), info.data.get("task", "detect"), v.label_kinds)
        if v.label_kinds and problem:
            raise ValueError(f"label_kinds: {problem}; remove label_kinds or choose a reward that scores them")
        return v

    def stage(self, name: str) -> StageConfig | EvalConfig:
        """The settings of stage ``name`` (``reward`` lives in the ``rl`` section)."""
        return getattr(self, SECTION[name])


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and the fix.

    ``errors`` lists ``{"loc": "rl.beta", "msg": …}`` per problem for machine readers (the API's 422).
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [{"loc": "", "msg": message}]


_HINTS = {
    "extra_forbidden": "remove it, or check its spelling against `dreamforge schema`",
    "literal_error": "use one of the allowed values",
    "missing": "add it",
}


def format_validation_error(err: ValidationError, source: str = "dreamforge.config.json") -> str:
    lines = [f"{source}: {err.error_count()} problem(s):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        hint = _HINTS.get(e["type"], "")
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - {path}: {msg}" + (f" ({hint})" if hint else ""))
    return "\n".join(lines)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipeline.presets").iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict[str, Any]:
    path = resources.files("pipeline.presets") / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return json.loads(path.read_text())


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(
    raw: dict[str, Any] | None = None, *, preset: str | None = None, source: str = "dreamforge.config.json"
) -> CurriculumConfig:
    """Preset (if any, or the one the config names) deep-merged under the raw config, validated."""
    try:
        raw, notes = upgrade_config(dict(raw or {}))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}", [{"loc": "rl", "msg": str(e)}]) from None
    name = preset or raw.get("preset")
    merged = deep_merge(load_preset(name), raw) if name else raw
    if name:
        merged["preset"] = name
    try:
        cfg = CurriculumConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source), validation_errors(err)) from None
    cfg._deprecations = notes
    return cfg


def validation_errors(err: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in err.errors():
        hint = _HINTS.get(e["type"], "")
        msg = e["msg"].removeprefix("Value error, ") + (f" ({hint})" if hint else "")
        out.append({"loc": ".".join(str(p) for p in e["loc"]), "msg": msg})
    return out


def load_config(path: str | Path, *, preset: str | None = None) -> CurriculumConfig:
    return build_config(read_config(path), preset=preset, source=str(path))


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's JSON object, not yet validated; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a JSON object, got {type(raw).__name__}")
    return raw


def json_schema() -> dict[str, Any]:
    schema = CurriculumConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def config_hash(cfg: CurriculumConfig) -> str:
    """A stable short hash of a validated config (resume checks, dedupe of pushes). The gate and
    the baseline change what a job is compared with, not what it trains: left out, so a job
    resumed after the default branch released a newer model is still the same job."""
    dump = cfg.model_dump_json(exclude=HASH_EXCLUDE)
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


HASH_EXCLUDE: dict[str, Any] = {"gate": True, "evaluate": {"baseline"}}
