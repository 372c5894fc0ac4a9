import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import ConfigError, FileSource, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "j.yaml").write_text("places: []\n", encoding="utf-8")
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_config_loads_with_seven_channels_and_resolved_paths():
    config = load_config(REPO / "config" / "demo.yaml")
    assert [c.id for c in config.channels] == [
        "ch-command", "ch-market", "ch-school", "ch-enterprise", "ch-police", "ch-volunteer", "ch-phone",
    ]
    assert config.jurisdiction == REPO / "config" / "jurisdiction.yaml"
    market = config.channels[1].source
    assert isinstance(market, FileSource)
    assert market.paths == [REPO / "var" / "demo-audio" / "ch-market"]
    assert config.storage.data_dir == REPO / "var"


def test_the_announcement_voice_model_is_found_relative_to_the_config(tmp_path):
    p = write(tmp_path, """
jurisdiction: j.yaml
channels: [{id: a, name: A, source: {type: rtp, port: 5004}}]
dispatch: {alerts: {announce_model: models/kokoro, announce_voice: zf_xiaoxiao}}
""")
    alerts = load_config(p).dispatch.alerts
    assert alerts.announce_model == tmp_path / "models" / "kokoro" and alerts.announce_voice == "zf_xiaoxiao"
    assert load_config(REPO / "config" / "demo.yaml").dispatch.alerts.announce_model is None  # found like the ASR model


def test_a_typo_is_an_error_naming_the_field_path(tmp_path):
    p = write(tmp_path, """
jurisdiction: j.yaml
channels:
  - {id: a, name: A, source: {type: rtp, port: 5004}}
  - {id: b, name: B, source: {type: rtp, port: 5005, jiter_ms: 40}}
""")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    # the path as written in the YAML: pydantic's union tag ("source.rtp.jiter_ms") is not a key the user wrote
    assert "  channels[1].source.jiter_ms: Extra inputs are not permitted" in str(err.value)
    assert "source.rtp" not in str(err.value)


def test_wrong_types_and_duplicate_channels_are_reported(tmp_path):
    bad_port = write(tmp_path, "jurisdiction: j.yaml\nchannels:\n  - {id: a, name: A, source: {type: rtp, port: 99999}}\n")
    with pytest.raises(ConfigError, match=r"channels\[0\]\.source\.port: Input should be less than"):
        load_config(bad_port)
    bad_line = write(tmp_path, "jurisdiction: j.yaml\nchannels:\n"
                     "  - {id: a, name: A, source: {type: pipe}, line: {type: serial, port: /dev/ttyUSB0, pt: rts}}\n")
    with pytest.raises(ConfigError, match=r"  channels\[0\]\.line\.pt: Extra inputs"):
        load_config(bad_line)
    dup = write(tmp_path, """
jurisdiction: j.yaml
channels:
  - {id: a, name: A, source: {type: pipe}}
  - {id: a, name: A2, source: {type: pipe}}
""")
    with pytest.raises(ConfigError, match="declared twice"):
        load_config(dup)


def test_unreadable_and_non_yaml_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("channels: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_every_config_field_has_a_description():
    from pydantic import BaseModel

    from bridge.config import Config

    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for t in _models_in(field.annotation):
                walk(t)

    walk(Config)
    assert len(seen) > 8


def _models_in(annotation) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def test_config_check_cli_prints_what_it_would_run_and_fails_cleanly(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "bridge.cli", "config", "check", str(REPO / "config/demo.yaml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "channel ch-police [警长]: source file" in ok.stdout
    bad = write(tmp_path, "jurisdiction: j.yaml\nchannels: []\n")
    res = subprocess.run([sys.executable, "-m", "bridge.cli", "config", "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "channels" in res.stderr and "Traceback" not in res.stderr
