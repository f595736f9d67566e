"""A registry version starts only when its dependencies can be checked against the
hashes recorded at install."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import CliFn

from mcphost.host import Home, HostConfig
from mcphost.host.registry_link import source_for
from mcphost.host.verification import verify_source
from mcphost.registry import Registry
from mcphost.sdk.errors import RegistryDamaged


def test_a_registry_version_whose_dependency_record_cannot_be_read_is_refused(
    cli: CliFn, home: Home, wheels: dict[str, Path]
) -> None:
    result = cli("plugin", "install", str(wheels["1.0"]), "--yes")
    assert result.exit_code == 0, result.output
    reg = Registry.open(home)
    source = source_for(reg.version("textkit", "1.0"))
    reg.close()
    checks = verify_source(home, HostConfig(), source).checks
    assert [c.detail for c in checks if c.check == "dependencies"] == ["as installed"]
    # The version's files stay, its record goes: nothing to check its dependencies with.
    for path in home.root.glob(home.registry_db.name + "*"):
        path.unlink()
    # The start is refused (the registry is damaged: its versions outlived it), never
    # let through unchecked.
    with pytest.raises(RegistryDamaged) as info:
        verify_source(home, HostConfig(), source)
    assert "mcphost registry rebuild" in str(info.value)
