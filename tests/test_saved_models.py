"""The models an engine keeps for the engine that replaces it: written whole, and a file that
cannot be read means the configuration's models, never a failed start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bertserve.api import ModelSpec, Pooling
from bertserve.app.saved_models import read_models, write_models


def test_models_written_are_read_back_as_they_were(tmp_path: Path) -> None:
    specs = [
        ModelSpec(name="a", plugin="bert", source="./a", default_pooling=Pooling.MEAN, options={"k": [1, 2]}),
        ModelSpec(name="b", plugin="albert", source="albert-base-v2", max_input_tokens=40),
    ]
    path = tmp_path / "engine-cpu.models"
    assert read_models(path) is None  # a first start
    write_models(path, specs)
    assert read_models(path) == specs
    write_models(path, specs[1:])
    assert read_models(path) == specs[1:]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_file_that_cannot_be_read_is_logged_and_left_for_the_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "engine-cpu.models"
    path.write_bytes(b"\x80\x05cut short")
    with caplog.at_level(logging.WARNING):
        assert read_models(path) is None
    assert f"the models kept in {path} are unreadable; starting from the configuration's" in caplog.text
    write_models(path, [])
    assert read_models(path) == []
    write_models(tmp_path / "missing" / "engine-cpu.models", [])  # logged, not raised
    assert "could not keep the engine's models in" in caplog.text
