"""Old spellings of the reward stage's names (pipeline.deprecations): accepted with a message that
says today's spelling, never a 422 for a config or a client written before the naming settled."""

from __future__ import annotations

import pytest
from conftest import tiny_job_config

from pipeline.config import ConfigError, build_config
from pipeline.deprecations import resolve_stage


def test_a_reward_section_is_read_as_the_rl_section_with_a_deprecation():
    cfg = tiny_job_config()
    cfg["reward"] = {**cfg.pop("rl"), "beta": 0.02}
    built = build_config(cfg)
    assert built.rl.beta == 0.02 and built.rl.num_generations == 4 and built.reward == "default"
    (note,) = built.deprecations
    assert "'reward' section is deprecated" in note and "'rl'" in note
    assert build_config(tiny_job_config()).deprecations == []  # today's spelling: nothing said


def test_the_reward_function_inside_rl_moves_to_the_top_level():
    built = build_config(tiny_job_config(rl={"reward": "f1"}))
    assert built.reward == "f1"
    assert built.deprecations == ['config: rl.reward is deprecated: the reward function is the top-level \'reward\' '
                                  'field; write "reward": "f1" at the top level']  # fmt: skip


def test_old_and_new_spellings_that_disagree_are_refused_naming_both():
    with pytest.raises(ConfigError, match="reward and rl: both hold the reward stage's settings"):
        build_config({"reward": {"lr": 0.01}, "rl": {"lr": 0.02}})
    with pytest.raises(ConfigError, match=r"reward and rl.reward name different rewards \('iou', 'f1'\)"):
        build_config({"reward": "iou", "rl": {"reward": "f1"}})


def test_a_stage_is_found_by_its_old_name_with_a_message_and_an_unknown_one_is_named():
    assert resolve_stage("reward") == ("reward", None)
    name, note = resolve_stage("rl")
    assert name == "reward" and "stage 'rl' is deprecated" in note
    with pytest.raises(KeyError, match="unknown stage 'grpo'; the stages are warm_start, domain, reward, evaluate"):
        resolve_stage("grpo")
