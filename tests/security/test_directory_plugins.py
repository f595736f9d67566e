"""Signed plugins run from a directory (``pip install --target``, ``MCPHOST_PLUGIN_PATH``):
what runs is exactly what was verified; bytecode beside it is refused with advice."""

from __future__ import annotations

import asyncio
import importlib.util
import marshal
import shutil
from pathlib import Path

import pytest
from support.wheels import pip

from mcphost.host import Home, Host, HostConfig
from mcphost.sdk.errors import VerificationError
from mcphost.security import Permissions, PrivateKey, TrustStore, sign_wheel

INIT = "mcphost_textkit/__init__.py"


@pytest.fixture(scope="module")
def signed_textkit(
    built_wheels: dict[str, Path], signing_key: PrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("dir-signed")
    return sign_wheel(built_wheels["textkit"], signing_key, permissions=Permissions(), out=out)


@pytest.fixture(scope="module")
def clean_install(signed_textkit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """textkit installed as docs/operators.md says: ``pip install --no-compile``."""
    target = tmp_path_factory.mktemp("dir-installed") / "textkit"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), str(signed_textkit))
    return target


@pytest.fixture
def plugin_dir(clean_install: Path, tmp_path: Path) -> Path:
    target = tmp_path / "textkit"
    shutil.copytree(clean_install, target, symlinks=True)
    return target


@pytest.fixture
def home(tmp_path: Path, signing_key: PrivateKey) -> Home:
    home = Home(tmp_path / "home").ensure()
    TrustStore(home.keys_dir).trust(signing_key.public_key.pem(), "publisher")
    return home


def upper(home: Home, plugin_dir: Path, text: str) -> str:
    async def run() -> str:
        config = HostConfig(isolation="rlimits")
        async with Host(
            home, config=config, plugin_dirs=[plugin_dir], environment=False, registry=False
        ) as host:
            result = await host.call("textkit.upper", {"text": text})
            assert isinstance(result, str)
            return result

    return asyncio.run(run())


def test_a_signed_directory_plugin_installed_without_bytecode_runs(
    home: Home, plugin_dir: Path
) -> None:
    assert upper(home, plugin_dir, "hi") == "HI"


def test_bytecode_pip_wrote_beside_the_verified_source_is_refused_with_advice(
    home: Home, signed_textkit: Path, tmp_path: Path
) -> None:
    target = tmp_path / "compiled"
    pip("install", "--no-deps", "--target", str(target), str(signed_textkit))
    with pytest.raises(VerificationError) as info:
        upper(home, target, "hi")
    assert "mcphost_textkit/__pycache__/" in info.value.message
    assert "pip install --no-compile" in info.value.message


def test_bytecode_made_to_pass_for_the_verified_source_is_refused(
    home: Home, plugin_dir: Path
) -> None:
    # Bytecode of other code, with a header that matches the real source's mtime and size,
    # so an ordinary import would take it instead of the verified source.
    source = plugin_dir / INIT
    st = source.stat()
    evil = compile(source.read_text().replace("text.upper()", "'tampered'"), str(source), "exec")
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir()
    pyc.write_bytes(header + marshal.dumps(evil))
    with pytest.raises(VerificationError, match=r"__pycache__/__init__\.cpython"):
        upper(home, plugin_dir, "hi")


@pytest.mark.parametrize(
    ("dropped", "content"),
    [
        ("mcphost_textkit/extra.py", b"print('not signed')\n"),
        ("mcphost_textkit/extra.pyc", importlib.util.MAGIC_NUMBER + b"\0" * 12),
        ("mcphost_textkit/sub/evil.py", b"x = 1\n"),
    ],
)
def test_an_unlisted_module_in_the_plugins_own_package_is_refused(
    home: Home, plugin_dir: Path, dropped: str, content: bytes
) -> None:
    path = plugin_dir / dropped
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(VerificationError, match=dropped.replace(".", r"\.")):
        upper(home, plugin_dir, "hi")


def test_files_of_other_distributions_in_the_same_directory_are_not_the_plugins(
    home: Home, plugin_dir: Path
) -> None:
    other = plugin_dir / "otherdist"
    other.mkdir()
    (other / "__init__.py").write_text("x = 1\n")
    assert upper(home, plugin_dir, "hi") == "HI"
