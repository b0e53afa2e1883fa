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


def test_bad_gpu_hint_is_rejected():
    with pytest.raises(ConfigError, match="H100:2"):
        build_config({"rl": {"compute": "H100:two"}})


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
    out = subprocess.run([PY, "-m", "dreamforge.cli_entry", "schema"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema == json.loads(json.dumps(json_schema()))
    assert "rl" in schema["properties"] and "additionalProperties" in json.dumps(schema)
    assert schema["properties"]["task"]["enum"] == ["detect", "segment", "keypoints", "caption"]
