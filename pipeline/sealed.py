"""A curriculum validated once and sealed for the road.

A config is validated where it enters (``POST /api/train`` and every entry point that submits
through ``dreamforge.jobs.submit``, or the standalone runner's own ``--config``). What travels on
from there (the job document in MongoDB, the worker's ``config.json``, the Modal call, the stage
process) is the *sealed* form: the validated config dumped in full, every default written out,
with the SHA-256 of that JSON and of the job's stored JavaScript reward. Each hop opens it with a
hash check instead of validating it again, so defaults cannot drift between hops (a field whose
default changed in a newer release keeps the value the job was submitted with) and a document
changed after submit is refused with a clear error, never run.

A stored JavaScript reward has one form from submit to the stage: its source text in the sealed
document, named in the config by ``stored:<sha256>/<file name>`` (``reward_ref``).
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from pipeline.config import ConfigError, CurriculumConfig

SEALED = "dreamforge.sealed-config/1"  # the document's kind; a later layout gets a new number
STORED = "stored:"


class SealError(ConfigError):
    """A sealed config that does not match its hash, or is not a sealed config at all."""


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def reward_ref(file_name: str, source: str) -> str:
    """How a config names a stored JavaScript reward: ``stored:<sha256 of its source>/<file name>``
    (the file name is what metrics and tables show the reward as)."""
    return f"{STORED}{source_sha256(source)}/{file_name}"


def parse_reward_ref(ref: str) -> tuple[str, str] | None:
    """``(sha256, file name)`` of a ``stored:`` reward reference, or None for any other reward."""
    if not ref.startswith(STORED):
        return None
    sha, _, name = ref.removeprefix(STORED).partition("/")
    return sha, name


# ``$schema`` is an editor hint, ignored by the schema: left out (a "$" key is an operator to MongoDB).
UNSEALED = {"schema_"}


def canonical(cfg: CurriculumConfig) -> dict[str, Any]:
    """The validated config as JSON with every field written out, defaults included."""
    return cfg.model_dump(mode="json", by_alias=True, exclude=UNSEALED)


def digest(config: dict[str, Any], reward_source: str | None) -> str:
    text = json.dumps({"config": config, "reward_source": reward_source}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(cfg: CurriculumConfig, reward_source: str | None = None) -> dict[str, Any]:
    """The sealed document of a validated config (and the source of its stored reward, if any)."""
    _check_reward(cfg.reward, reward_source, "the config")
    config = canonical(cfg)
    return {"kind": SEALED, "config": config, "reward_source": reward_source, "sha256": digest(config, reward_source)}


def is_sealed(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == SEALED


def open_sealed(doc: Any, *, where: str = "the job's config") -> CurriculumConfig:
    """The config of a sealed document, after its hash check; built without validating it again
    (it was validated when it was sealed). The stored reward's source rides on the result
    (``cfg.reward_source``). Raises SealError naming ``where``."""
    if not is_sealed(doc):
        raise SealError(f"{where} is not a sealed config (kind {SEALED!r}); submit the job again")
    config, source = doc.get("config"), doc.get("reward_source")
    if not isinstance(config, dict) or not (source is None or isinstance(source, str)):
        raise SealError(f"{where}: the sealed config is malformed; submit the job again")
    if digest(config, source) != doc.get("sha256"):
        raise SealError(f"{where} does not match its sha256: it was changed after it was validated at submit; "
                        "submit the job again instead of editing a stored one")  # fmt: skip
    try:
        cfg = _construct(CurriculumConfig, config)
    except (KeyError, TypeError) as e:
        # A document sealed by another release of the schema: its fields are not this one's.
        raise SealError(f"{where} was sealed by another version of the config schema ({e}); submit the job again") from None
    _check_reward(cfg.reward, source, where)
    cfg._reward_source = source  # noqa: SLF001 — the one place that sets it
    return cfg


def _check_reward(ref: str, source: str | None, where: str) -> None:
    parsed = parse_reward_ref(ref)
    if parsed is None:
        if source is not None:
            raise SealError(f"{where}: a reward source came with reward {ref!r}, which names no stored reward")
        return
    if source is None:
        raise SealError(f"{where}: reward {ref!r} names a stored reward, but its source is missing")
    if source_sha256(source) != parsed[0]:
        raise SealError(f"{where}: the stored reward's source does not match the sha256 in {ref!r}")


def _construct(cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``cls`` from its own full dump, nested models included, without running validators:
    ``model_construct`` alone leaves nested models as dicts. Every field must be present (the
    dump writes them all), so a document of another schema is refused, not filled in."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} needs an object, got {type(data).__name__}")
    fields = {n: f for n, f in cls.model_fields.items() if not (cls is CurriculumConfig and n in UNSEALED)}
    names = {f.alias or n for n, f in fields.items()}
    if extra := set(data) - names:
        raise KeyError(f"unknown field(s) {', '.join(sorted(extra))} in {cls.__name__}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = field.alias or name
        if key not in data:
            raise KeyError(f"{cls.__name__} lacks {key!r}")
        values[name] = _value(field.annotation, data[key])
    return cls.model_construct(_fields_set=set(values), **values)


def _value(annotation: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and isinstance(value, dict):
                return _construct(arg, value)
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _construct(annotation, value)
    if origin is tuple:
        return tuple(value)
    return value
