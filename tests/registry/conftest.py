"""Fixtures for the registry suite: textkit in three versions, built with pip and signed
with a test key; a fresh home that trusts that key; the CLI run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from registry_helpers import CliFn, textkit_variant, trust_key
from support.cli import invoke
from support.wheels import build_wheel

from mcphost.host import Home
from mcphost.security import Permissions, PrivateKey, generate_key, sign_wheel


@pytest.fixture(scope="session")
def signing_key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory, signing_key: PrivateKey) -> dict[str, Path]:
    """Signed textkit wheels: "1.0" (as shipped), "1.1" (echo answers with " [1.1]"),
    "1.2" (no ``sleep`` tool), and "1.0-unsigned"."""
    src = tmp_path_factory.mktemp("textkit-src")
    raw = tmp_path_factory.mktemp("textkit-raw")
    out = tmp_path_factory.mktemp("textkit-signed")
    variants = {
        "1.0": textkit_variant(src / "v10", "1.0.0"),
        "1.1": textkit_variant(src / "v11", "1.1.0", echo_suffix=" [1.1]"),
        "1.2": textkit_variant(src / "v12", "1.2.0", echo_suffix=" [1.2]", drop_tool="sleep"),
    }
    result: dict[str, Path] = {}
    for seq, (name, project) in enumerate(variants.items(), start=10):
        wheel = build_wheel(project, raw / name)
        result[name + "-unsigned"] = wheel
        (out / name).mkdir()
        result[name] = sign_wheel(
            wheel, signing_key, permissions=Permissions(), sequence=seq, out=out / name
        )
    return result


@pytest.fixture
def home(tmp_path: Path, signing_key: PrivateKey) -> Home:
    """A fresh home whose trust store trusts the test key."""
    h = Home(tmp_path / "home").ensure()
    trust_key(h, signing_key)
    return h


@pytest.fixture
def cli(home: Home) -> CliFn:
    """Run ``mcphost --home HOME ARGS...`` in-process; returns click's Result."""

    def run(*args: str, input: str | None = None) -> Result:
        return invoke(*args, home=home, input=input)

    return run
