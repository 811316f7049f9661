"""Server configuration: one typed schema for the YAML file, the environment and the flags.

Precedence, highest first: command-line flags, ``BERTSERVE_*`` environment variables, the
YAML file, built-in defaults. Every value is checked against the schema at start (types
are strict: ``"5"`` is no number), and an error names its path and the problem, such as
``models[0].max_wait_ms: expected a number, got '5'``. The configuration reference (docs/configuration.md)
lists the same fields (a test holds them together). A plugin's ``options`` are checked against
that plugin's own schema (``EncoderPlugin.options_schema``) by :func:`check_options`.

The parts: :mod:`.values` (the checked configuration the server uses), :mod:`.schema` (the
file's typed schema), :mod:`.loading` (the file, the environment and the flags merged and
checked, and the tokens), :mod:`.entries` (a model entry sent at run time), :mod:`.options`
(plugins' options) and :mod:`.messages` (how a validation error reads).
"""

from __future__ import annotations

from .entries import parse_model_entry
from .loading import DEFAULT_CONFIG, TOKENS_ENV, load_config
from .options import OptionsT, check_options, parse_options
from .schema import (
    AdminSettings,
    AtLeastOne,
    AuthSettings,
    ModelSettings,
    NonNegative,
    Scope,
    ServerSettings,
    TlsSettings,
    TokenSettings,
    Whole,
)
from .values import AdminConfig, AuthConfig, ServerConfig, TlsConfig, TokenGrant

__all__ = [
    "DEFAULT_CONFIG",
    "TOKENS_ENV",
    "AdminConfig",
    "AdminSettings",
    "AtLeastOne",
    "AuthConfig",
    "AuthSettings",
    "ModelSettings",
    "NonNegative",
    "OptionsT",
    "Scope",
    "ServerConfig",
    "ServerSettings",
    "TlsConfig",
    "TlsSettings",
    "TokenGrant",
    "TokenSettings",
    "Whole",
    "check_options",
    "load_config",
    "parse_model_entry",
    "parse_options",
]
