"""The host's side of workers on a Ray cluster: one actor per remote worker.

:class:`RayReplica` is a :class:`~mcphost.host.supervisor.PluginSupervisor` whose worker
runs on a Ray node: everything else of supervision (health checks, restarts with
backoff, restart intensity, swaps with drain) is the supervisor's own. Its start asks a
new actor (:class:`~mcphost.host.cluster.node.NodeWorker`, scheduled by Ray with the
plugin's ``num_cpus`` and ``resources``) to verify and start the version on its node,
connects to the port the actor opened, proves itself with a one-time token, and from
there speaks the worker protocol over that connection: a :class:`RemoteWorkerClient` is
a :class:`~mcphost.sandbox.client.WorkerClient` whose channel is that socket, so calls,
streams, credits, cancels and pings work unchanged. A second connection brings the
worker's stdout and stderr, which reach the host's log (``on_log``) through the same
bounded folding as a local worker's (:func:`~mcphost.sandbox.output.pump_output`).

The wheel travels as a Ray object put once per digest; the trust store as bytes in the
request. A version's dependencies travel as the sha256 of each file the registry
recorded at install (in the request) and, only when the node answers that its cache
lacks them, as a deterministic tar built from that record (:func:`deps_archive`), put
into the object store once per digest for the starts that need it at that time.

A lost actor or node ends the worker like a crash: calls in flight fail with
``worker_crashed`` naming the node, and the supervisor starts the replica again, on
whichever node Ray then picks (elsewhere when that node is gone).

Ray is imported only here, and this module only when a plugin is placed on Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import ray

from mcphost.sandbox.channel import open_channel
from mcphost.sandbox.client import LogCallback, WorkerClient, complete_handshake
from mcphost.sandbox.isolation import LaunchPlan, ResourceUsage, WorkerSpec
from mcphost.sandbox.output import OutputBudget, pump_output
from mcphost.sandbox.protocol import FrameCodec
from mcphost.sandbox.reaper import process_birth, reap_if_adopted
from mcphost.sandbox.spawn import WorkerProcess
from mcphost.sdk.errors import (
    ConfigError,
    MCPHostError,
    VerificationError,
    WorkerCrashed,
    error_from_code,
)

from ..config import ClusterConfig, PluginSettings
from ..home import Home
from ..sources import PluginSource
from ..supervisor import PluginSupervisor
from ..supervisor_env import SupervisorEnv
from .labels import unmatched
from .node import OUTPUT_STREAMS, NodeWorker, StartRequest, _recv_exactly, deps_digest

__all__ = ["RayReplica", "RemoteWorkerClient", "connect", "deps_archive", "spawn_remote_worker"]

log = logging.getLogger("mcphost.cluster")

_connect_lock = threading.Lock()
#: Wheels put into the object store, by sha256 (a Ray object lives as long as its ref).
_wheels: dict[tuple[str, int, int], Any] = {}
_NodeActor: Any = None
#: Seconds the worker's last output may still arrive after its channel closed.
OUTPUT_GRACE = 2.0
#: The largest output frame a node sends (it sends chunks of at most 64 KiB).
_MAX_OUTPUT_FRAME = 1024 * 1024


def connect(cluster: ClusterConfig) -> None:
    """Join (or, with ``address = "local"``, start) the Ray cluster, once per process;
    a process already connected (``ray.init`` called by the embedding program) is
    used as it is. Blocking: call it in a thread."""
    global _NodeActor
    with _connect_lock:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": True,
                "configure_logging": False,
            }
            if cluster.address == "local":
                # Not Ray's raylet subreaper option: with it, bubblewrap jails started by
                # this process (local replicas) no longer finish. A worker dies with its
                # actor anyway (its parent-death signal, bubblewrap's --die-with-parent).
                if cluster.local_num_cpus is not None:
                    kwargs["num_cpus"] = cluster.local_num_cpus
            else:
                kwargs["address"] = cluster.address
            try:
                ray.init(**kwargs)
            except Exception as exc:
                raise ConfigError(
                    f"cannot connect to the Ray cluster at {cluster.address!r}: {exc}; start "
                    'it with `ray start --head`, or set [cluster] address = "local"'
                ) from exc
        if _NodeActor is None:
            # No restarts by Ray: the supervisor restarts a replica (with its backoff).
            _NodeActor = ray.remote(max_restarts=0, max_task_retries=0)(NodeWorker)


def _trust_files(home: Home) -> dict[str, bytes]:
    """The host's trust store as it is now: every key, record and the revocations."""
    out: dict[str, bytes] = {}
    keys = home.keys_dir
    if keys.is_dir():
        for p in sorted(keys.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                out[p.name] = p.read_bytes()
    return out


@dataclass(frozen=True)
class _Stored:
    """What the registry keeps of a version that a node is sent."""

    wheel_sha256: str
    wheel: Path
    deps_dir: Path
    #: The sha256 of every file of ``deps_dir`` recorded at install (``None``: none).
    deps_files: dict[str, str] | None


def _wheel_of(home: Home, source: PluginSource) -> _Stored:
    """The digest the registry recorded for ``source``'s wheel, its stored copy, and
    the record of its dependencies."""
    from ..registry_link import open_reader

    if source.origin != "registry":
        raise ConfigError(
            f'plugin {source.label} has placement = "ray" but comes from the {source.origin}; '
            "only plugins installed with `mcphost plugin install` (whose signed wheel the "
            "registry keeps) can run on a cluster node"
        )
    reg = open_reader(home)
    if reg is None:
        raise ConfigError(f"there is no registry in {home.root} to send {source.label} from")
    with reg:
        rec = reg.version(source.name, source.version)
    sha = rec.wheel_sha256
    path = home.store_dir / f"{sha}.whl"
    if not path.is_file():
        raise VerificationError(
            f"the registry's copy of {source.label}'s wheel ({path}) is missing; install the "
            "wheel again with `mcphost plugin install`",
            data={"plugin": source.name, "version": source.version, "reason": "missing_wheel"},
        )
    return _Stored(sha, path, Path(rec.deps_dir), rec.deps_files)


def _wheel_ref(sha: str, path: Path) -> Any:
    """The wheel in Ray's object store, put once per digest (and again when the file
    changed). The node checks the bytes against the digest itself: a wheel changed on
    this side is refused there."""
    st = path.stat()
    key = (sha, st.st_size, st.st_mtime_ns)
    ref = _wheels.get(key)
    if ref is None:
        for old in [k for k in _wheels if k[0] == sha]:
            del _wheels[old]
        ref = _wheels[key] = ray.put(path.read_bytes())
    return ref


def deps_archive(deps_dir: Path, files: dict[str, str], label: str) -> bytes:
    """A tar of the dependencies the registry recorded in ``files``, read from
    ``deps_dir``: exactly the recorded paths, sorted, with no owner, time or mode but
    the executable bit, so the same record always gives the same bytes. A file whose
    content is not the recorded one is refused here (the host's own check before the
    start refuses it first; this closes the gap of a change since)."""
    import hashlib
    import io
    import os
    import stat
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            want = files[rel]
            path = deps_dir / rel
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            try:
                st = os.lstat(path)
                if want.startswith("symlink:"):
                    if not stat.S_ISLNK(st.st_mode) or "symlink:" + os.readlink(path) != want:
                        raise _deps_changed(label, rel)
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, want[8:], 0o777
                    tar.addfile(info)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise _deps_changed(label, rel)
                info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    # Exactly st_size bytes are copied (fewer fail): the hash covers them.
                    tar.addfile(info, _Hashing(f, h))
                if h.hexdigest() != want:
                    raise _deps_changed(label, rel)
            except OSError as exc:
                raise _deps_changed(label, rel, exc.strerror or str(exc)) from None
    return buf.getvalue()


class _Hashing:
    """A file read through a hash (what ``tarfile`` copies is what is hashed)."""

    def __init__(self, f: Any, h: Any) -> None:
        self._f, self._h = f, h

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._f.read(size)
        self._h.update(data)
        return data


def _deps_changed(label: str, rel: str, why: str = "") -> VerificationError:
    detail = f" ({why})" if why else ""
    return VerificationError(
        f"plugin {label}: its installed dependency {rel} is not what the registry recorded "
        f"at install{detail}, so it cannot be sent to a Ray node; install its wheel again "
        "with `mcphost plugin install` to restore it",
        data={"reason": "dependency_changed", "file": rel},
    )


class _Shipment:
    """The archive of one digest's dependencies in Ray's object store, shared by the
    starts that need it at the same time and released when the last one is done (a
    node keeps what it was sent: it is not sent there again)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ref: Any = None
        self.size = 0
        self.users = 0


_shipments: dict[str, _Shipment] = {}
_shipments_lock = threading.Lock()


def _take_deps(digest: str, stored: _Stored, label: str) -> _Shipment:
    """The shipment of ``digest``, built (once) if no start holds it now. Blocking:
    call it in a thread; give it back with :func:`_give_back_deps`."""
    with _shipments_lock:
        shipment = _shipments.setdefault(digest, _Shipment())
        shipment.users += 1
    try:
        with shipment.lock:
            if shipment.ref is None:
                assert stored.deps_files is not None
                data = deps_archive(stored.deps_dir, stored.deps_files, label)
                shipment.size = len(data)
                # The only copy kept is the object store's.
                shipment.ref = ray.put(data)
                del data
    except BaseException:
        _give_back_deps(digest, shipment)
        raise
    return shipment


def _give_back_deps(digest: str, shipment: _Shipment) -> None:
    with _shipments_lock:
        shipment.users -= 1
        if shipment.users <= 0 and _shipments.get(digest) is shipment:
            del _shipments[digest]


class RemoteProcess(WorkerProcess):
    """A worker process on a node, as the client follows it: its end comes from the
    actor (its exit status) or from Ray (the actor or its node was lost)."""

    def __init__(self, actor: Any, pid: int, node: str) -> None:  # no Popen here
        self.pid = pid
        self.stdout = None
        self.stderr = None
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._pidfd = None
        self.actor = actor
        self.node = node
        #: Its parent and start time when it runs on this machine (a local cluster):
        #: an actor that dies leaves it to this process, its subreaper, to reap.
        self.birth = process_birth(pid) if node == socket.gethostname() else None
        self.oom_kills = 0
        #: Why it ended when Ray, not the worker, ended it.
        self.lost: str | None = None
        self._watch = asyncio.ensure_future(self._await_end())

    async def _await_end(self) -> None:
        try:
            result = await self.actor.wait.remote()
            rc, self.oom_kills = int(result["rc"]), int(result.get("oom_kills", 0))
        except Exception as exc:  # the actor died, or its node was lost
            self.lost = f"was lost with its Ray node {self.node} ({type(exc).__name__})"
            rc = -signal.SIGKILL
        if not self._exited.done():
            self._exited.set_result(rc)
        if self.lost is not None and self.birth is not None:
            await _reap_orphan(self.pid, self.birth)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(Exception):
                self.actor.kill.remote()


async def _reap_orphan(pid: int, birth: tuple[int, int]) -> None:
    """After its actor died, reap the worker it started on this machine once the worker
    is dead (its parent-death signal): this process adopted it as the subreaper of its
    jails, and an unreaped worker would stay a zombie for as long as the host runs."""
    for delay in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        await asyncio.sleep(delay)
        if reap_if_adopted(pid, birth):
            return


class RemoteWorkerClient(WorkerClient):
    """A worker on a Ray node, spoken to over the connection its actor relays."""

    def __init__(
        self,
        spec: WorkerSpec,
        proc: RemoteProcess,
        plan: LaunchPlan,
        on_log: LogCallback | None,
        node: str,
        node_id: str,
    ) -> None:
        super().__init__(spec, proc, plan, on_log)
        self.node = node
        self.node_id = node_id
        self.remote_proc = proc
        proc._exited.add_done_callback(self._on_remote_exit)

    @property
    def label(self) -> str:
        return f"{self.spec.plugin} {self.spec.version} (pid {self.pid} on node {self.node})"

    def _on_remote_exit(self, _: asyncio.Future[int]) -> None:
        lost = self.remote_proc.lost
        if lost is not None and self.alive:
            # The connection may hang on a lost node: end the channel now.
            self.kill(lost)

    def kill(self, reason: str | None = None) -> None:
        """End the remote worker's process group (the actor kills it) and the channel."""
        if reason is not None and self._kill_reason is None:
            self._kill_reason = reason
        self.remote_proc.kill()
        if self.channel is not None:
            self.channel.abort()


async def _demux_output(sock: socket.socket, readers: dict[str, asyncio.StreamReader]) -> None:
    """Feed the node's output frames into the worker's stdout and stderr readers until
    the node closes the connection (both streams ended) or this task is cancelled."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            head = await _recv_exactly(loop, sock, 5)
            size = int.from_bytes(head[1:], "big")
            if size > _MAX_OUTPUT_FRAME:
                log.error("a node sent an output frame of %d bytes; output ends here", size)
                return
            data = await _recv_exactly(loop, sock, size)
            reader = readers.get(OUTPUT_STREAMS.get(head[0], ""))
            if reader is not None:
                reader.feed_data(data)
    except (EOFError, OSError):
        pass
    finally:
        for reader in readers.values():
            reader.feed_eof()
        sock.close()


async def _connect_node(reply: dict[str, Any], proof: bytes) -> socket.socket:
    """A connection to the port the node's actor opened, proved with ``proof``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (reply["ip"], reply["port"])), 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_sendall(sock, proof)
    except BaseException:
        sock.close()
        raise
    return sock


def _end_actor(actor: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


async def spawn_remote_worker(
    env: SupervisorEnv,
    home: Home,
    source: PluginSource,
    settings: PluginSettings,
    *,
    handshake_timeout: float,
) -> RemoteWorkerClient:
    """Start a worker of ``source`` on a Ray node and complete its handshake."""
    cfg = env.config
    assert cfg.cluster is not None, "placement = 'ray' needs [cluster] (checked at load)"
    await asyncio.to_thread(connect, cfg.cluster)
    stored = await asyncio.to_thread(_wheel_of, home, source)
    wheel = await asyncio.to_thread(_wheel_ref, stored.wheel_sha256, stored.wheel)
    trust = await asyncio.to_thread(_trust_files, home)
    spec = env.worker_spec(source)
    token = secrets.token_bytes(32)
    output_token = secrets.token_bytes(32)
    request = StartRequest(
        plugin=source.name,
        version=source.version,
        entry=source.entry,
        wheel_sha256=stored.wheel_sha256,
        trust=trust,
        allow_unsigned=cfg.allow_unsigned,
        isolation=env.backend.name,
        level=env.backend.level,
        limits=spec.limits,
        grants=spec.grants,
        max_frame=spec.max_frame,
        threads=spec.threads,
        token=token,
        output_token=output_token,
        deps_files=stored.deps_files,
    )
    if settings.labels:
        await asyncio.to_thread(_check_labels, settings.labels, source)
    actor = _NodeActor.options(
        num_cpus=settings.num_cpus,
        resources=dict(settings.resources) or None,
        label_selector=dict(settings.labels) or None,
    ).remote()
    sock: socket.socket | None = None
    out: socket.socket | None = None
    try:
        encoded = msgspec.msgpack.encode(request)
        reply = await actor.start.remote(encoded, wheel)
        if "need_deps" in reply:
            reply = await _start_with_deps(actor, encoded, wheel, stored, source, reply)
        if "error" in reply:
            err = reply["error"]
            raise error_from_code(err["code"], err["message"], err.get("data"))
        node, node_id = str(reply["node"]), str(reply["node_id"])
        if reply.get("output"):  # a node that sends the worker's output (first)
            out = await _connect_node(reply, output_token)
        sock = await _connect_node(reply, token)
        proc = RemoteProcess(actor, int(reply["pid"]), node)
        plan = LaunchPlan(
            argv=[],
            env={},
            cwd="",
            cleanup=lambda: _end_actor(actor),
            usage=lambda: _remote_usage(actor),
            oom_kills=lambda: proc.oom_kills,
        )
        client = RemoteWorkerClient(spec, proc, plan, env.on_log, node, node_id)
        client._hello.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        client.channel = await open_channel(
            sock, FrameCodec(spec.max_frame), client._on_frame, client._on_close
        )
        sock = None  # the channel owns it
        if out is not None:
            readers = {name: asyncio.StreamReader() for name in OUTPUT_STREAMS.values()}
            proc.stdout, proc.stderr = readers["stdout"], readers["stderr"]
            demux = asyncio.create_task(_demux_output(out, readers))
            out = None  # the task owns it
            budget = OutputBudget()  # one per worker: stdout and stderr share it
            client._io_tasks += [
                demux,
                *(
                    asyncio.create_task(pump_output(r, spec.plugin, name, env.on_log, budget))
                    for name, r in readers.items()
                ),
            ]
            # A lost node may leave the connection open: end it a little after the worker.
            client.closed.add_done_callback(
                lambda _: asyncio.get_running_loop().call_later(OUTPUT_GRACE, demux.cancel)
            )
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if out is not None:
            out.close()
        _end_actor(actor)
        if isinstance(exc, MCPHostError | asyncio.CancelledError):
            raise
        if isinstance(exc, ray.exceptions.RayError | OSError | TimeoutError):
            raise WorkerCrashed(
                f"could not start a worker for {source.label} on the Ray cluster: {exc}",
                data={"plugin": source.name, "version": source.version, "reason": str(exc)},
            ) from exc
        raise
    await complete_handshake(client, handshake_timeout)
    return client


async def _start_with_deps(
    actor: Any,
    encoded: bytes,
    wheel: Any,
    stored: _Stored,
    source: PluginSource,
    reply: dict[str, Any],
) -> dict[str, Any]:
    """Start again, with the archive of the dependencies the node said it lacks."""
    digest = str(reply["need_deps"])
    if stored.deps_files is None or digest != deps_digest(stored.deps_files):
        raise VerificationError(
            f"node {reply.get('node')} asked for dependencies of {source.label} "
            f"({digest}) that are not the ones its registry recorded",
            data={"plugin": source.name, "version": source.version, "reason": "identity"},
        )
    shipment = await asyncio.to_thread(_take_deps, digest, stored, source.label)
    try:
        log.info(
            "sending the dependencies of %s (%d files, %d bytes, sha256 %s) to node %s, "
            "which has not got them",
            source.label,
            len(stored.deps_files),
            shipment.size,
            digest[:16],
            reply.get("node"),
        )
        result: dict[str, Any] = await actor.start.remote(encoded, wheel, shipment.ref)
        return result
    finally:
        _give_back_deps(digest, shipment)


def _check_labels(selector: dict[str, str], source: PluginSource) -> None:
    """Refuse a start whose label selector no live node satisfies (Ray would leave the
    actor pending until such a node joins). Blocking: call it in a thread."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    if unmatched(selector, [dict(n.get("Labels") or {}) for n in nodes]):
        wanted = ", ".join(f"{k} = {v!r}" for k, v in selector.items())
        raise ConfigError(
            f"no live node of the Ray cluster has the labels plugin {source.label} asks "
            f"for ({wanted}); give a node those labels (`ray start --labels`), or change "
            f"[plugins.{source.name}] labels (`mcphost doctor` shows each node's labels)",
            data={"plugin": source.name, "labels": dict(selector)},
        )


def _remote_usage(actor: Any) -> ResourceUsage:
    """The worker's use as its node reads it (called in a thread by the watcher)."""
    try:
        memory, source, cpu = ray.get(actor.usage.remote(), timeout=5)
    except Exception:
        return ResourceUsage()
    return ResourceUsage(memory=memory, memory_source=source, cpu_seconds=cpu)


class RayReplica(PluginSupervisor):
    """A supervisor whose worker runs on the Ray cluster."""

    def __init__(
        self, source: PluginSource, env: SupervisorEnv, settings: PluginSettings, home: Home
    ) -> None:
        super().__init__(source, env)
        self.settings = settings
        self.home = home

    async def _start_worker(self, source: PluginSource) -> WorkerClient:
        return await spawn_remote_worker(
            self.env,
            self.home,
            source,
            self.settings,
            handshake_timeout=self.env.config.handshake_timeout,
        )

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        w = self.worker
        out["placement"] = "ray"
        if isinstance(w, RemoteWorkerClient) and w.alive:
            out["node"] = w.node
        return out
