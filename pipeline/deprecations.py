"""Old spellings users already wrote, accepted with a deprecation message instead of a 422.

The naming, resolved: the third stage is ``reward`` (stage files, job documents, metrics, the
API's ``?stage=``); its settings are the config's ``rl`` section; the top-level ``reward`` field
names the reward function it trains against. Configs and clients written before that was settled
spell it the other ways round: a ``reward`` *section* holding the stage's settings, the reward
function as ``rl.reward``, or ``rl`` as the stage's name. Each is rewritten to today's spelling
here, once, where the config or the request enters, and the caller shows the message (the job's
log and the API's answer), so nothing downstream ever sees the old spelling.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.stage_table import BY_NAME, SECTION, STAGES

# Stage names clients used before the stage table fixed them (the section's name for its stage).
STAGE_ALIASES: dict[str, str] = {"rl": "reward"}


def resolve_stage(name: str) -> tuple[str, str | None]:
    """``(stage name, deprecation message or None)``; KeyError with the known names for the rest."""
    if name in BY_NAME:
        return name, None
    if name in STAGE_ALIASES:
        new = STAGE_ALIASES[name]
        return new, (f"stage {name!r} is deprecated: the stage is named {new!r} (its settings are the config's "
                     f"{SECTION[new]!r} section); send {new!r}")  # fmt: skip
    raise KeyError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")


def upgrade_config(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` in today's spelling, and a deprecation message per old spelling it used. Raises
    ValueError (naming the fields) where an old and a new spelling say different things."""
    out, notes = dict(raw), []
    section = out.get("reward")
    if isinstance(section, dict):  # the stage's settings under the stage's name
        if "rl" in out:
            raise ValueError("reward and rl: both hold the reward stage's settings; keep them in rl only (reward "
                             "names the reward function, e.g. \"reward\": \"iou\")")  # fmt: skip
        out["rl"] = out.pop("reward")
        notes.append("config: a 'reward' section is deprecated: the reward stage's settings are the 'rl' section "
                     "(the top-level 'reward' names the reward function); rename the section to 'rl'")  # fmt: skip
    rl = out.get("rl")
    if isinstance(rl, dict) and isinstance(rl.get("reward"), str):  # the function inside the stage's section
        name = rl["reward"]
        if "reward" in out and out["reward"] != name:
            raise ValueError(f"reward and rl.reward name different rewards ({out['reward']!r}, {name!r}); keep the "
                             "top-level reward only")  # fmt: skip
        out["rl"] = {k: v for k, v in rl.items() if k != "reward"}
        out["reward"] = name
        notes.append(f"config: rl.reward is deprecated: the reward function is the top-level 'reward' field; write "
                     f"\"reward\": {json.dumps(name)} at the top level")  # fmt: skip
    return out, notes
