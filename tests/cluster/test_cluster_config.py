"""The [cluster] table and per-plugin placement: clear errors for what cannot work, and
Ray kept off every start path of a host with no plugin placed on it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcphost.host.config import load_config
from mcphost.sdk.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_placement_on_ray_without_a_cluster_table_says_what_to_add(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugins.mathkit]\nplacement = "ray"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert 'plugins mathkit have placement = "ray" but there is no [cluster] table' in message
    assert 'backend = "ray"' in message


def test_a_cluster_address_must_be_auto_local_or_a_ray_client_address(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\nbackend = "ray"\naddress = "10.0.0.1:6379"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert '"auto", "local" or "ray://host:port"' in info.value.message


def test_ray_replicas_cannot_be_more_than_replicas(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [cluster]
        address = "local"
        [plugins.mathkit]
        placement = "ray"
        replicas = 2
        ray_replicas = 3
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "ray_replicas (3) must not be above replicas (2)" in info.value.message


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("zone", "a b", "label zone = 'a b': write a value"),
        ("zone", "in(a,)", "label zone = 'in(a,)': write a value"),
        ("zone", "in(a ,b)", "label zone = 'in(a ,b)': write a value"),
        ("-zone", "a", "label key '-zone': a name is at most 63"),
        ("bad_prefix!/zone", "a", "label key 'bad_prefix!/zone': its prefix"),
    ],
)
def test_a_label_selector_ray_would_refuse_is_refused_at_load(
    tmp_path: Path, key: str, value: str, why: str
) -> None:
    path = write(
        tmp_path,
        f"""
        [cluster]
        backend = "ray"
        [plugins.mathkit]
        placement = "ray"
        labels = {{ "{key}" = "{value}" }}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert why in info.value.message


def test_label_selectors_match_as_rays_do() -> None:
    from mcphost.host.cluster.labels import label_error, selector_matches

    node = {"zone": "a", "ray.io/node-id": "abc"}
    for selector, matches in (
        ({"zone": "a"}, True),
        ({"zone": "b"}, False),
        ({"zone": "!b"}, True),
        ({"zone": "!a"}, False),
        ({"zone": "in(b, a)"}, True),
        ({"zone": "!in(a,b)"}, False),
        ({"disk": "!ssd"}, True),  # absent: not equal
        ({"disk": "ssd"}, False),
        ({"zone": "a", "ray.io/node-id": "abc"}, True),
    ):
        assert all(label_error(k, v) is None for k, v in selector.items()), selector
        assert selector_matches(selector, node) is matches, selector


def test_a_valid_cluster_configuration_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [cluster]
        backend = "ray"
        address = "ray://head:10001"
        [plugins.mathkit]
        placement = "ray"
        num_cpus = 2
        resources = { gpu_node = 1 }
        """,
    )
    config = load_config(path)
    assert config.cluster is not None and config.cluster.address == "ray://head:10001"
    mathkit = config.plugins["mathkit"]
    assert (mathkit.placement, mathkit.num_cpus, mathkit.resources) == ("ray", 2, {"gpu_node": 1})


_NO_RAY = """
import asyncio, sys
from mcphost.host import Host, HostConfig, PluginSource

async def main() -> None:
    config = HostConfig(
        allow_unsigned=True, isolation="rlimits", cluster={"address": "local"},
        plugins={"local": {"placement": "local"}},
    )
    source = PluginSource(name="local", version="1", entry="local:plugin",
                          paths=[sys.argv[1]], origin="directory", root=sys.argv[1])
    async with Host(sys.argv[2], config=config, sources=[source], environment=False,
                    registry=False, status=False, metrics=False) as host:
        assert await host.call("local.ping", {}) == "pong"
    print("ray imported" if "ray" in sys.modules else "no ray")

asyncio.run(main())
"""


def test_a_host_with_no_plugin_on_ray_never_imports_ray(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "local.py").write_text(
        "from mcphost.sdk import Plugin\nplugin = Plugin('local')\n\n"
        "@plugin.tool\ndef ping() -> str:\n    return 'pong'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", _NO_RAY, str(code), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no ray"


_WITHOUT_RAY = """
import sys
from pathlib import Path

sys.modules["ray"] = None  # as where Ray is not installed: it cannot be imported
from mcphost.host.config import load_config
from mcphost.sdk.errors import ConfigError
try:
    load_config(Path(sys.argv[1]))
except ConfigError as exc:
    print(exc.message)
"""


def test_placement_on_ray_without_ray_installed_says_what_to_install(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\naddress = "auto"\n[plugins.mathkit]\nplacement = "ray"\n')
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_RAY, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Ray is not installed; install it with `pip install 'mcphost[ray]'`" in out.stdout
