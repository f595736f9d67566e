"""Fixtures for the security suite: real wheels built with pip, a signing key, a trust
store, signed wheels and a signed plugin installed with ``pip install --target``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from security_helpers import EXAMPLES, SIGNED_AT
from support.wheels import build_wheel, pip

from mcphost.security import (
    Permissions,
    PrivateKey,
    TrustStore,
    generate_key,
    sign_wheel,
)


@pytest.fixture(scope="session")
def built_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unsigned wheels of textkit and mathkit, built once with ``pip wheel``."""
    out = tmp_path_factory.mktemp("security-wheels")
    return {name: build_wheel(EXAMPLES / name, out) for name in ("textkit", "mathkit")}


@pytest.fixture(scope="session")
def signing_key() -> PrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> PrivateKey:
    """A key no test trust store trusts."""
    return generate_key()


@pytest.fixture
def trust(tmp_path: Path, signing_key: PrivateKey) -> TrustStore:
    """A fresh trust store that trusts ``signing_key``."""
    store = TrustStore(tmp_path / "keys")
    store.trust(signing_key.public_key.pem(), "publisher")
    return store


@pytest.fixture(scope="session")
def signed_wheels(
    built_wheels: dict[str, Path],
    signing_key: PrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """name -> the wheel signed by ``signing_key`` at SIGNED_AT with sequence 5."""
    out = tmp_path_factory.mktemp("security-signed")
    perms = Permissions(network=["api.example.org:443"], env=["LANG"])
    return {
        name: sign_wheel(wheel, signing_key, permissions=perms, sequence=5, out=out, now=SIGNED_AT)
        for name, wheel in built_wheels.items()
    }


@pytest.fixture(scope="session")
def installed_pristine(
    signed_wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The signed textkit wheel installed by pip (no bytecode), never modified."""
    target = tmp_path_factory.mktemp("security-installed") / "textkit"
    pip(
        "install",
        "--no-deps",
        "--no-compile",
        "--target",
        str(target),
        str(signed_wheels["textkit"]),
    )
    return target


@pytest.fixture
def installed(installed_pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the installed textkit tree that a test may tamper with."""
    target = tmp_path / "installed"
    shutil.copytree(installed_pristine, target, symlinks=True)
    return target
