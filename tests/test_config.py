import json
import subprocess

import pytest

from pipeline.config import ConfigError, build_config, json_schema, load_config, preset_names
from tests.conftest import PY, ROOT


def test_presets_are_data_files_and_all_validate():
    assert {"generic", "medical-scan", "retail-shelf", "traffic-camera"} <= set(preset_names())
    for name in preset_names():
        cfg = build_config(preset=name)
        assert cfg.preset == name
        assert cfg.rl.batch_size % cfg.rl.num_generations == 0


def test_unknown_field_names_its_path_and_a_fix():
    with pytest.raises(ConfigError) as e:
        build_config({"rl": {"tmperature": 0.7}})
    assert "rl.tmperature" in str(e.value)
    assert "dreamforge schema" in str(e.value)


def test_ill_typed_field_names_its_path():
    with pytest.raises(ConfigError) as e:
        build_config({"domain": {"lr": "fast"}, "task": "classify"})
    msg = str(e.value)
    assert "domain.lr" in msg and "task" in msg and "2 problem(s)" in msg


def test_group_size_must_divide_batch_and_the_error_suggests_a_value():
    with pytest.raises(ConfigError) as e:
        build_config({"rl": {"batch_size": 12, "num_generations": 8}})
    assert "use batch_size 8" in str(e.value)


def test_min_steps_is_refused_on_the_rl_stage_it_never_applied_to():
    with pytest.raises(ConfigError) as e:
        build_config({"rl": {"min_steps": 50}})
    assert "remove rl.min_steps" in str(e.value) and e.value.errors[0]["loc"] == "rl"
    assert "min_steps" not in build_config({"rl": {"min_steps": None}}).rl.model_dump()  # an old dump still loads
    assert build_config({"domain": {"min_steps": 50}}).domain.min_steps == 50  # where it applies


def test_bad_gpu_hint_is_rejected():
    with pytest.raises(ConfigError, match="H100:2"):
        build_config({"rl": {"compute": "H100:two"}})


@pytest.mark.parametrize("section,hint,says", [
    ("rl", "H100:0", "from 1 to 8"), ("domain", "A10:5", "from 1 to 4"), ("warm_start", "H99", "not a Modal GPU"),
    ("evaluate", "V100", "not a Modal GPU"), ("rl", ":2", "not a Modal GPU"), ("rl", "H100:", "from 1 to 8"),
])  # fmt: skip
def test_a_gpu_modal_does_not_offer_is_refused_naming_the_field(section, hint, says):
    """Was: a count of 0 or an unknown type passed, and failed only at spawn, as infrastructure."""
    with pytest.raises(ConfigError, match=says) as e:
        build_config({section: {"compute": hint}})
    assert e.value.errors[0]["loc"] == f"{section}.compute" and hint in str(e.value)


def test_modal_gpu_hints_are_case_insensitive_and_normalised():
    cfg = build_config({"rl": {"compute": "h100:2"}, "domain": {"compute": "a10g"}, "evaluate": {"compute": "B200+"},
                        "warm_start": {"compute": "H100!"}})  # fmt: skip
    assert (cfg.rl.compute, cfg.domain.compute, cfg.evaluate.compute, cfg.warm_start.compute) == ("H100:2", "A10G", "B200+", "H100!")


def test_malformed_json_points_at_line_and_column(tmp_path):
    p = tmp_path / "dreamforge.config.json"
    p.write_text('{\n  "task": "detect",\n  "reward": iou\n}')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:3:13" in str(e.value)


def test_preset_values_are_overridden_by_the_config():
    cfg = build_config({"preset": "medical-scan", "rl": {"num_generations": 4, "batch_size": 8}})
    assert cfg.rl.num_generations == 4
    assert cfg.data.dataset.startswith("synthetic://medical-scan")  # from the preset


def test_schema_cli_publishes_the_json_schema(tmp_path):
    out = subprocess.run([PY, "-m", "dreamforge.cli", "schema"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema == json.loads(json.dumps(json_schema()))
    assert "rl" in schema["properties"] and "additionalProperties" in json.dumps(schema)
    assert schema["properties"]["task"]["enum"] == ["detect", "segment", "keypoints", "caption"]


def _int_fields(model, prefix=""):
    """(path, field) of every int field, through nested models."""
    import typing

    from pydantic import BaseModel

    for name, f in model.model_fields.items():
        args = typing.get_args(f.annotation) or (f.annotation,)
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                yield from _int_fields(a, f"{prefix}{name}.")
        if int in args:
            yield f"{prefix}{name}", f


def test_every_int_field_has_bounds_that_fit_bson_int64():
    """An unbounded int takes 2**70, which validates and then cannot be stored (a 500)."""
    from pipeline.config import CurriculumConfig

    fields = dict(_int_fields(CurriculumConfig))
    assert {"seed", "domain.max_steps", "rl.batch_size", "evaluate.max_samples"} <= set(fields)
    for path, f in fields.items():
        upper = [m.le for m in f.metadata if getattr(m, "le", None) is not None]
        assert upper and upper[0] < 2**63, f"{path} has no upper bound below 2**63"


@pytest.mark.parametrize(("over", "loc"), [
    ({"warm_start": {"epochs": float("inf")}}, "warm_start.epochs"),
    ({"domain": {"max_seconds": float("inf")}}, "domain.max_seconds"),
    ({"rl": {"beta": float("inf")}}, "rl.beta"),
    ({"rl": {"reward_sample_timeout_ms": float("inf")}}, "rl.reward_sample_timeout_ms"),
    ({"rl": {"temperature": float("nan")}}, "rl.temperature"),
    ({"data": {"split": [float("nan"), 0.5, 0.5]}}, "data.split.0"),
    ({"export": {"max_metric_drop": float("nan")}}, "export.max_metric_drop"),
    ({"domain": {"max_steps": 10**12}}, "domain.max_steps"),
    ({"seed": 2**70}, "seed"),
    ({"seed": -1}, "seed"),
])  # fmt: skip
def test_non_finite_and_out_of_range_numbers_name_their_field(over, loc):
    with pytest.raises(ConfigError) as e:
        build_config(over)
    assert [p["loc"] for p in e.value.errors] == [loc]


def test_nan_learning_rate_says_what_is_wrong():
    with pytest.raises(ConfigError) as e:
        build_config({"domain": {"lr": float("nan")}})
    assert e.value.errors == [{"loc": "domain.lr", "msg": "Input should be a finite number"}]


def test_examples_resolve_by_name_from_the_shipped_list():
    from pipeline.config import EXAMPLE_REWARDS
    from pipeline.rewards.base import RewardError
    from pipeline.rewards.js import EXAMPLES, load_js_reward

    assert sorted(p.stem for p in EXAMPLES.glob("*.js")) == sorted(EXAMPLE_REWARDS)
    assert build_config({"reward": "example:iou"}).reward == "example:iou"
    for bad in ("example:../js_prelude", "example:../../../etc/passwd", "example:"):
        with pytest.raises(ConfigError, match="not a shipped example"):
            build_config({"reward": bad})
        with pytest.raises(RewardError, match="no such example"):  # the loader checks the same list
            load_js_reward(bad)


def test_runner_classes_a_non_finite_config_as_the_users_mistake(tmp_path):
    """Exit 2 (a user error: the worker fails the job at once, never retries it), naming the field."""
    cfg = tmp_path / "dreamforge.config.json"
    cfg.write_text('{"domain": {"epochs": Infinity}}')  # Python's json reads it; the schema must not
    out = subprocess.run([PY, "-m", "pipeline.run", "--config", str(cfg), "--output", str(tmp_path / "out"), "--stages", "4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "domain.epochs: Input should be a finite number" in out.stderr
