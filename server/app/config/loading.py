"""The configuration read: the YAML file (or the packaged default), ``BERTSERVE_*`` variables and
flags merged over it, checked, and the tokens of a tokens file and ``BERTSERVE_TOKENS``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

from bertserve.app import event_loop
from bertserve.edge.tls import CertificateFiles, certificate_problem
from bertserve.errors import ConfigError

from .messages import describe
from .schema import AuthSettings, FileSettings, TokenSettings
from .values import AdminConfig, AuthConfig, ServerConfig, TlsConfig, TokenGrant

__all__ = ["DEFAULT_CONFIG", "TOKENS_ENV", "load_config"]

DEFAULT_CONFIG = "default_config.yaml"
#: The environment variable that may hold tokens, as a YAML list like a tokens file's.
TOKENS_ENV = "BERTSERVE_TOKENS"

# Environment variables of the settings that also have flags; their text is read as YAML reads a
# scalar, so that BERTSERVE_PORT=50053 is a number and the schema checks it like the file's.
_ENV = {
    "address": "BERTSERVE_ADDRESS",
    "port": "BERTSERVE_PORT",
    "log_level": "BERTSERVE_LOG_LEVEL",
    "processes": "BERTSERVE_PROCESSES",
}

_Tokens = pydantic.TypeAdapter(list[TokenSettings])


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> ServerConfig:
    """Read the YAML at path (``BERTSERVE_CONFIG``, else the packaged default), then apply env and overrides."""
    env = os.environ if environ is None else environ
    path = path or env.get("BERTSERVE_CONFIG")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    else:
        text = resources.files("bertserve").joinpath(DEFAULT_CONFIG).read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping with 'server' and 'models'")

    server = raw.get("server")
    basics = {key: _scalar(env[var]) for key, var in _ENV.items() if env.get(var)}
    basics.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if basics:
        raw = {**raw, "server": {**(server if isinstance(server, dict) else {}), **basics}}
    try:
        settings = FileSettings.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError("\n".join(describe(error) for error in e.errors())) from None
    return _checked(settings, env)


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _checked(settings: FileSettings, env: Mapping[str, str]) -> ServerConfig:
    names = [m.name for m in settings.models]
    if not names:
        raise ConfigError("models: the config lists no models")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"models: names must be unique; repeated: {repeated}")
    default = settings.server.default_model
    if default and default not in names:
        raise ConfigError(f"server.default_model: {default!r} is not among the models {names}")
    server = settings.server.model_dump(exclude={"tls", "auth", "admin"})
    event_loop.resolve(server["event_loop"])  # uvloop asked for where it is not installed: said now, not at start
    admin = settings.server.admin
    tls = settings.server.tls
    if tls is not None:
        for key, path in tls.model_dump().items():
            if path is not None:
                _readable(f"server.tls.{key}", path)
        ca = Path(tls.client_ca_file) if tls.client_ca_file else None
        if problem := certificate_problem(CertificateFiles(Path(tls.cert_file), Path(tls.key_file), ca)):
            raise ConfigError(f"server.tls: {problem}")
    return ServerConfig(
        **{**server, "default_model": default or names[0]},
        tls=TlsConfig(**tls.model_dump()) if tls else None,
        auth=_auth(settings.server.auth, env),
        admin=AdminConfig(**{**admin.model_dump(), "allowed_sources": tuple(admin.allowed_sources)}),
        models=tuple(m.spec() for m in settings.models),
    )


def _readable(where: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read {path!r}: {getattr(e, 'strerror', None) or e}") from None


def _auth(settings: AuthSettings, env: Mapping[str, str]) -> AuthConfig:
    """The tokens of the tokens file and of BERTSERVE_TOKENS (both YAML lists of TokenSettings)."""
    sources = []
    if settings.tokens_file:
        sources.append((f"{settings.tokens_file}", _readable("server.auth.tokens_file", settings.tokens_file)))
    if env.get(TOKENS_ENV):
        sources.append((TOKENS_ENV, env[TOKENS_ENV]))
    grants: list[TokenGrant] = []
    for where, text in sources:
        try:
            raw = yaml.safe_load(text) or []
        except yaml.YAMLError:
            raise ConfigError(f"{where}: not valid YAML (the tokens are not shown)") from None
        try:
            entries = _Tokens.validate_python(raw)
        except pydantic.ValidationError as e:  # never the token's value in the message
            raise ConfigError(
                "\n".join(describe(error, prefix=where, known=TokenSettings, secret=True) for error in e.errors())
            ) from None
        grants += [
            TokenGrant(
                e.name,
                hashlib.sha256(e.token.get_secret_value().encode()).digest(),
                tuple(dict.fromkeys(e.scopes)),
                tuple(e.models),
            )
            for e in entries
        ]
    names = [g.name for g in grants]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"tokens: names must be unique; repeated: {repeated}")
    digests = [g.digest for g in grants]
    if len(set(digests)) != len(digests):
        raise ConfigError("tokens: two entries hold the same token")
    return AuthConfig(settings.tokens_file, settings.protect_reflection, tuple(grants))
