"""What runs on a cluster node: the actor that supervises one remote worker.

A :class:`NodeWorker` is the body of one Ray actor (the host wraps it with
``ray.remote``; this module never imports Ray). Asked to start a plugin version it

1. checks the wheel it was given against the digest it was asked for (content
   addressing: the node runs only what it was given, never what it finds);
2. verifies the wheel against the trust store that came with the request, with the
   registry's own check (:func:`mcphost.registry.wheels.check_wheel`), unpacks exactly
   the verified bytes into a cache keyed by the digest, and verifies that tree again
   before each start (:func:`mcphost.security.verify.verify_tree`), as a local start does;
   the plugin's dependencies (which no signature covers) are named by the sha256 of
   every file the host's registry recorded at install (:func:`deps_digest`): the node
   asks for their archive once (when its cache under that digest lacks them), unpacks
   it checking each file against that record, and checks the unpacked files against it
   again before each start, as a local start checks ``deps/``;
3. starts the worker under the isolation backend the host uses, refusing when the node
   cannot give it (a node's sandbox is never weaker than the host's);
4. listens on a TCP port for one connection that proves itself with the token the host
   sent, and splices bytes between it and the worker's channel socket: the host speaks
   the worker protocol over it, exactly as over a local socketpair;
5. sends the worker's stdout and stderr to the host over a second connection (proved
   with the request's ``output_token``), in :func:`output_frame` frames, so its lines
   reach the host's log as a local worker's do; without that connection (a host that
   did not ask for it, or gone) they go to the actor's log (Ray's worker logs).

The worker's whole process group is killed when the host's connection drops, when the
actor is asked to or ends, and (through the worker's own parent-death signal and
bubblewrap's ``--die-with-parent``) when the actor's process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from mcphost.sandbox.isolation import Grants, LaunchPlan, Limits, WorkerSpec
from mcphost.sdk.errors import MCPHostError, VerificationError, WorkerCrashed

__all__ = [
    "NODE_DIR_VARIABLE",
    "OUTPUT_STREAMS",
    "NodeWorker",
    "StartRequest",
    "deps_digest",
    "node_dir",
    "output_frame",
    "trust_digest",
]

log = logging.getLogger("mcphost.cluster.node")

#: Environment variable naming the node's working directory (wheel cache, plugin data,
#: scratch directories); default: ``mcphost-node-<uid>`` under the temporary directory.
NODE_DIR_VARIABLE = "MCPHOST_NODE_DIR"
#: Seconds the node waits for the host to connect after a start.
CONNECT_TIMEOUT = 30.0
_RELAY_CHUNK = 256 * 1024
#: The longest output line logged here (the rest is cut).
_LOG_LINE = 4096
#: The worker's output streams by their tag in an output frame.
OUTPUT_STREAMS = {1: "stdout", 2: "stderr"}
_OUTPUT_TAGS = {name: tag for tag, name in OUTPUT_STREAMS.items()}


def output_frame(name: str, data: bytes) -> bytes:
    """One chunk of the worker's ``name`` stream on the output connection: its tag (one
    byte), the chunk's length (4 bytes, big-endian), the chunk."""
    return bytes([_OUTPUT_TAGS[name]]) + len(data).to_bytes(4, "big") + data


class StartRequest(msgspec.Struct, frozen=True):
    """What the host sends to start one remote worker (the wheel, and when the node
    asks for it the archive of the dependencies, travel beside it)."""

    plugin: str
    version: str
    entry: str
    #: sha256 of the wheel, as the host's registry recorded it at install.
    wheel_sha256: str
    #: The host's trust store: file name -> bytes (public keys, their records, the
    #: revocation list); verified against on the node, never the node's own.
    trust: dict[str, bytes]
    allow_unsigned: bool
    #: The host's isolation backend and its level: the node gives at least as much.
    isolation: str
    level: str
    limits: Limits
    grants: Grants
    max_frame: int
    threads: int
    #: The secret the host's connection proves itself with.
    token: bytes
    #: The secret of the host's output connection (the worker's stdout and stderr);
    #: empty: the host does not want them (they go to the actor's log).
    output_token: bytes = b""
    #: The version's dependencies: relative path under ``deps/`` -> sha256 (or the
    #: registry's marker of a symlink), as the host's registry recorded them at install;
    #: ``None``: nothing was recorded (a version installed before the registry did).
    deps_files: dict[str, str] | None = None


def node_dir() -> Path:
    """The node's working directory for mcphost."""
    configured = os.environ.get(NODE_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"mcphost-node-{os.getuid()}"


def trust_digest(trust: dict[str, bytes]) -> str:
    """The content address of a trust store's files."""
    h = hashlib.sha256()
    for name in sorted(trust):
        data = trust[name]
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def deps_digest(files: dict[str, str]) -> str:
    """The content address of a version's dependencies: the sha256 of the recorded
    hash of every file, by path. The node keeps them unpacked under it."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    return h.hexdigest()


def _node_name() -> str:
    return socket.gethostname()


def _write_trust(base: Path, trust: dict[str, bytes]) -> Path:
    """The trust store the host sent, written once under its digest."""
    target = base / "trust" / trust_digest(trust)
    if target.is_dir():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.time_ns()}")
    tmp.mkdir(parents=True)
    for name, data in trust.items():
        if "/" in name or name.startswith(".") or not name:
            shutil.rmtree(tmp, ignore_errors=True)
            raise VerificationError(f"the trust store sent holds a bad file name {name!r}")
        (tmp / name).write_bytes(data)
    try:
        os.rename(tmp, target)
    except OSError:  # another start wrote it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _unpack(base: Path, sha: str, members: dict[str, bytes]) -> Path:
    """The plugin tree of the verified ``members``, built once under the wheel's digest
    (the same mapping the registry installs with)."""
    from mcphost.registry.store import _sync_and_freeze, _tree_path, _write_file

    target = base / "trees" / sha
    if target.is_dir():
        return target
    tmp = target.with_name(f".{sha}.{os.getpid()}.{time.time_ns()}")
    plugin = tmp / "plugin"
    plugin.mkdir(parents=True)
    try:
        for name, data in sorted(members.items()):
            rel = _tree_path(name)
            if rel is not None:
                _write_file(plugin / rel, data)
        _sync_and_freeze(tmp)
        os.rename(tmp, target)
    except BaseException:
        _discard(tmp)
        if not target.is_dir():
            raise
    return target


def _discard(tmp: Path) -> None:
    """Remove a build that did not finish (its folders may be frozen read-only)."""
    with contextlib.suppress(OSError):
        for d, _, _ in os.walk(tmp):
            os.chmod(d, 0o755)
    shutil.rmtree(tmp, ignore_errors=True)


def prepare_tree(base: Path, req: StartRequest, wheel: bytes) -> tuple[Path, str]:
    """Check and unpack the wheel; return the plugin's tree and its dist-info name.
    Raises :class:`VerificationError` when the node must refuse it."""
    from mcphost.registry.wheels import check_wheel
    from mcphost.security.truststore import TrustStore
    from mcphost.security.verify import verify_tree

    node = _node_name()
    got = hashlib.sha256(wheel).hexdigest()
    if not hmac.compare_digest(got, req.wheel_sha256):
        raise VerificationError(
            f"plugin {req.plugin} {req.version} was refused on node {node}: the wheel it "
            f"received has sha256 {got}, not the {req.wheel_sha256} the host's registry "
            "recorded at install; the host's copy of the wheel was changed. Install the "
            "plugin's signed wheel again with `mcphost plugin install`",
            data={"plugin": req.plugin, "version": req.version, "reason": "digest", "node": node},
        )
    trust = TrustStore(_write_trust(base, req.trust))
    try:
        checked = check_wheel(
            wheel,
            source=f"{req.plugin}-{req.version}.whl",
            trust=trust,
            allow_unsigned=req.allow_unsigned,
        )
    except MCPHostError as exc:
        raise VerificationError(
            f"plugin {req.plugin} {req.version} was refused on node {node}: {exc.message}",
            data={**exc.data, "plugin": req.plugin, "version": req.version, "node": node},
        ) from None
    if checked.plugin != req.plugin or checked.version != req.version:
        raise VerificationError(
            f"plugin {req.plugin} {req.version} was refused on node {node}: the wheel is "
            f"{checked.plugin} {checked.version}",
            data={"plugin": req.plugin, "version": req.version, "reason": "identity"},
        )
    if checked.requires and req.deps_files is None:
        raise VerificationError(
            f"plugin {req.plugin} {req.version} depends on {', '.join(checked.requires)}, "
            "but the host's registry recorded no hashes of its installed dependencies (a "
            "version installed before it did), so a node cannot check them: remove that "
            "version and install its wheel again with `mcphost plugin install`, or run it "
            "locally",
            data={"plugin": req.plugin, "version": req.version, "reason": "dependencies_unknown"},
        )
    tree = _unpack(base, req.wheel_sha256, checked.members) / "plugin"
    if checked.signed:
        try:
            verify_tree(tree, trust, dist_info=checked.dist_info)
        except VerificationError as exc:
            raise VerificationError(
                f"plugin {req.plugin} {req.version} was refused on node {node}: its unpacked "
                f"tree {tree} changed: {exc.message}; remove that directory so the next "
                "start unpacks it again",
                data={**exc.data, "plugin": req.plugin, "version": req.version, "node": node},
            ) from None
    return tree, checked.dist_info


class DependenciesWanted(Exception):
    """The node has not got the dependencies of a start: the host is to send them."""

    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


def _deps_refusal(req: StartRequest, node: str, what: str, reason: str) -> VerificationError:
    return VerificationError(
        f"plugin {req.plugin} {req.version} was refused on node {node}: {what}",
        data={"plugin": req.plugin, "version": req.version, "reason": reason, "node": node},
    )


def _member_path(name: str) -> str | None:
    """``name`` as a relative path with no ``..``, ``.`` or empty part (else ``None``)."""
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return None
    return name


def _unpack_deps(base: Path, digest: str, archive: bytes, req: StartRequest) -> Path:
    """The dependencies in ``archive`` (a tar the host built from its ``deps/``),
    written once under their digest: every member must be a file or symlink the record
    lists, with the recorded hash, and every recorded file must come. Files are
    streamed to disk (hashed as they are written), symlinks made last (so nothing is
    ever written through one), then all of it frozen read-only."""
    import io
    import tarfile

    from mcphost.registry.store import _sync_and_freeze

    assert req.deps_files is not None
    node = _node_name()
    target = base / "deps" / digest
    if target.is_dir():
        return target
    tmp = target.with_name(f".{digest}.{os.getpid()}.{time.time_ns()}")
    root = tmp / "deps"
    root.mkdir(parents=True)
    expected = req.deps_files
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            for member in tar:
                rel = _member_path(member.name)
                want = expected.get(rel) if rel is not None else None
                if rel is None or want is None or rel in seen:
                    raise _deps_refusal(
                        req,
                        node,
                        f"the archive of its dependencies holds {member.name!r}, which the "
                        "host's registry did not record at install",
                        "dependency_changed",
                    )
                seen.add(rel)
                if member.issym() and want == "symlink:" + member.linkname:
                    links.append((rel, member.linkname))
                    continue
                src = tar.extractfile(member) if member.isreg() else None
                if src is None or want.startswith("symlink:"):
                    raise _deps_refusal(
                        req,
                        node,
                        f"its dependency {rel} in the archive the host sent is not what "
                        "the host's registry recorded at install",
                        "dependency_changed",
                    )
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                mode = 0o755 if member.mode & 0o111 else 0o644
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                h = hashlib.sha256()
                try:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                if not hmac.compare_digest(h.hexdigest(), want):
                    raise _deps_refusal(
                        req,
                        node,
                        f"its dependency {rel} in the archive the host sent has sha256 "
                        f"{h.hexdigest()}, not the {want} the host's registry recorded at "
                        "install",
                        "dependency_changed",
                    )
        missing = sorted(expected.keys() - seen)
        if missing:
            raise _deps_refusal(
                req,
                node,
                f"the archive of its dependencies lacks {', '.join(missing[:5])}"
                f"{' and more' if len(missing) > 5 else ''}",
                "dependency_changed",
            )
        linked = {rel for rel, _ in links}
        for rel in sorted(seen):
            # Nothing inside a link: it would be written where that link points.
            parts = rel.split("/")
            if any("/".join(parts[:i]) in linked for i in range(1, len(parts))):
                raise _deps_refusal(
                    req, node, f"its dependency {rel} lies inside a symlink", "dependency_changed"
                )
        for rel, dest in links:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(dest, root / rel)
        _sync_and_freeze(tmp)
        os.rename(tmp, target)
    except BaseException as exc:
        _discard(tmp)
        if not target.is_dir():
            if isinstance(exc, tarfile.TarError):
                raise _deps_refusal(
                    req,
                    node,
                    f"the archive of its dependencies the host sent cannot be read: {exc}",
                    "dependency_changed",
                ) from None
            raise
    return target


def prepare_deps(base: Path, req: StartRequest, archive: bytes | None) -> Path | None:
    """The directory of the version's dependencies on this node, checked against the
    hashes the host's registry recorded (``None``: it has none). Unpacked once from
    ``archive`` under their digest; :class:`DependenciesWanted` when the node has not
    got them and no archive came; :class:`VerificationError` when the cached files
    differ from the record (changed, added, missing), naming them and the node."""
    from mcphost.registry.store import tree_changes

    if not req.deps_files:
        return None
    digest = deps_digest(req.deps_files)
    target = base / "deps" / digest
    if not target.is_dir():
        if archive is None:
            raise DependenciesWanted(digest)
        _unpack_deps(base, digest, archive, req)
    deps = target / "deps"
    changes = tree_changes(deps, req.deps_files)
    if changes:
        node = _node_name()
        raise VerificationError(
            f"plugin {req.plugin} {req.version} was refused on node {node}: its "
            f"dependencies unpacked in {deps} changed since they were unpacked: "
            f"{', '.join(changes[:5])}{' and more' if len(changes) > 5 else ''}; remove "
            f"{target} so the next start unpacks them again",
            data={
                "plugin": req.plugin,
                "version": req.version,
                "reason": "dependency_changed",
                "node": node,
                "changes": changes[:20],
            },
        )
    return deps


def node_backend(req: StartRequest) -> Any:
    """The isolation backend the host asked for, or a refusal naming the node."""
    from mcphost.sandbox.jail import choose_backend

    node = _node_name()
    try:
        backend = choose_backend(req.isolation)
    except MCPHostError as exc:
        raise WorkerCrashed(
            f"node {node} cannot give plugin {req.plugin} the isolation the host uses "
            f"({req.isolation!r}): {exc.message}; install bubblewrap on every Ray node, or "
            "keep the plugin local",
            data={"plugin": req.plugin, "node": node, "reason": "isolation_unavailable"},
        ) from None
    if req.level == "namespaces" and backend.level != "namespaces":
        raise WorkerCrashed(
            f"node {node} offers only {backend.level!r} isolation, weaker than the host's "
            f"namespaces; install bubblewrap on the node",
            data={"plugin": req.plugin, "node": node, "reason": "isolation_unavailable"},
        )
    return backend


def _collect_children() -> None:
    """Let this process wait for its children again. Ray's worker processes ignore
    SIGCHLD (so the kernel reaps their children at once), which would report every
    worker's exit as status 0: a crash would read as a clean exit. The actor's process
    hosts only this actor, so the default disposition is restored for the whole process
    (with libc: Python's ``signal.signal`` works only in the main thread)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal(signal.SIGCHLD, ctypes.c_void_p(0))  # SIG_DFL


class NodeWorker:
    """One remote worker's supervisor on its node (the body of a Ray actor)."""

    def __init__(self) -> None:
        _collect_children()
        self._proc: Any = None
        self._plan: LaunchPlan | None = None
        self._spec: WorkerSpec | None = None
        self._server: socket.socket | None = None
        self._exited: asyncio.Future[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._sock: socket.socket | None = None
        #: The host's output connection, once it came (None: log output here).
        self._out: socket.socket | None = None
        self._out_ready = asyncio.Event()
        self._out_lock = asyncio.Lock()
        self._out_open = 0

    # -- start ---------------------------------------------------------------------
    async def start(
        self, request: bytes, wheel: bytes, deps: bytes | None = None
    ) -> dict[str, Any]:
        """Verify, start and listen; returns where to connect, or the error to raise
        (``{"error": {code, message, data}}``: errors cross Ray as data), or, when the
        version has dependencies this node has not got and ``deps`` (their archive) did
        not come, ``{"need_deps": digest}``: nothing was started, and the host asks
        again with the archive."""
        try:
            req = msgspec.msgpack.decode(request, type=StartRequest)
            return await self._start(req, wheel, deps)
        except DependenciesWanted as want:
            return {"need_deps": want.digest, "node": _node_name()}
        except MCPHostError as exc:
            self._kill()
            return {"error": {"code": exc.code, "message": exc.message, "data": exc.data}}
        except Exception as exc:
            self._kill()
            log.exception("remote worker start failed")
            return {
                "error": {
                    "code": "worker_crashed",
                    "message": f"could not start a worker on node {_node_name()}: {exc!r}",
                    "data": {"node": _node_name()},
                }
            }

    async def _start(self, req: StartRequest, wheel: bytes, deps: bytes | None) -> dict[str, Any]:
        from mcphost.sandbox.spawn import start_process

        base = node_dir()
        tree, _ = await asyncio.to_thread(prepare_tree, base, req, wheel)
        deps_dir = await asyncio.to_thread(prepare_deps, base, req, deps)
        backend = node_backend(req)
        work = base / "run" / f"{req.plugin}-{req.version}-{time.time_ns()}"
        spec = WorkerSpec(
            plugin=req.plugin,
            version=req.version,
            entry=req.entry,
            # As a local worker: its code, then its dependencies (each bound read-only).
            paths=[str(tree)] + ([str(deps_dir)] if deps_dir is not None else []),
            data_dir=str(base / "data" / req.plugin),
            work_dir=str(work),
            limits=req.limits,
            grants=req.grants,
            max_frame=req.max_frame,
            threads=req.threads,
        )
        os.makedirs(spec.work_dir, exist_ok=True)
        os.makedirs(spec.data_dir, exist_ok=True)
        self._spec = spec
        here, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            plan = await asyncio.to_thread(backend.prepare, spec, child.fileno())
            self._plan = plan
            proc = await start_process(
                plan.argv,
                env=plan.env,
                cwd=plan.cwd,
                pass_fds=plan.pass_fds,
                preexec_fn=plan.preexec_fn,
            )
        except BaseException:
            here.close()
            raise
        finally:
            child.close()
        self._proc = proc
        if plan.on_spawn is not None:
            plan.on_spawn(proc.pid)
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        server = socket.create_server(("0.0.0.0", 0))
        server.setblocking(False)
        self._server = server
        if not req.output_token:
            self._out_ready.set()  # nobody will connect for the output: log it here
        self._out_open = 2
        self._tasks += [
            asyncio.create_task(self._drain_output(proc.stdout, "stdout")),
            asyncio.create_task(self._drain_output(proc.stderr, "stderr")),
            asyncio.create_task(self._follow(proc)),
            asyncio.create_task(self._serve(server, here, req.token, req.output_token)),
        ]
        import ray  # present: this runs inside a Ray actor

        return {
            "ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "port": server.getsockname()[1],
            "pid": proc.pid,
            "node": _node_name(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "isolation": backend.name,
            "output": bool(req.output_token),
        }

    async def _drain_output(self, stream: asyncio.StreamReader | None, name: str) -> None:
        """Read the worker's ``name`` stream to its end: to the host's output connection
        while there is one, else to the actor's log (Ray's worker logs). The host
        connects right after the start; until then the pipe holds what was written."""
        try:
            if stream is None:
                return
            await self._out_ready.wait()
            spec = self._spec
            plugin = spec.plugin if spec is not None else "?"
            loop = asyncio.get_running_loop()
            pending = b""  # a line's start, when logging here
            while True:
                chunk = await stream.read(64 * 1024)
                out = self._out
                if chunk and out is not None:
                    try:
                        async with self._out_lock:
                            await loop.sock_sendall(out, output_frame(name, chunk))
                        continue
                    except OSError:  # the host went away: log here from now on
                        self._out = None
                        out.close()
                if not chunk:
                    if pending:
                        log.warning("[%s %s] %s", plugin, name, pending.decode(errors="replace"))
                    return
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()[:_LOG_LINE]
                for line in lines:
                    text = line[:_LOG_LINE].decode(errors="replace")
                    log.warning("[%s %s] %s", plugin, name, text)
        finally:
            self._out_open -= 1
            if self._out_open <= 0 and self._out is not None:
                # Both streams ended: the host reads the end of its output.
                self._out.close()
                self._out = None

    async def _follow(self, proc: Any) -> None:
        rc = await proc.wait()
        plan = self._plan
        status = plan.exit_status(rc) if plan is not None and plan.exit_status else rc
        oom = 0
        if plan is not None and plan.oom_kills is not None:
            with contextlib.suppress(OSError, ValueError):
                oom = await asyncio.to_thread(plan.oom_kills)
        self._kill()  # whatever it left in its group
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result({"rc": status, "oom_kills": oom})
        await asyncio.to_thread(self._release)

    async def _serve(
        self, server: socket.socket, here: socket.socket, token: bytes, output_token: bytes
    ) -> None:
        """Take one connection that proves itself with ``token``; then splice it with
        the worker's channel until either side ends; then kill the worker. A connection
        that proves itself with ``output_token`` before it gets the worker's output (the
        host opens it first)."""
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + CONNECT_TIMEOUT
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.error("the host did not connect within %ss", CONNECT_TIMEOUT)
                    return
                conn, _ = await asyncio.wait_for(loop.sock_accept(server), remaining)
                conn.setblocking(False)
                try:
                    proof = await asyncio.wait_for(_recv_exactly(loop, conn, len(token)), 5)
                except (TimeoutError, OSError, EOFError):
                    conn.close()
                    continue
                if hmac.compare_digest(proof, token):
                    break
                if output_token and self._out is None and hmac.compare_digest(proof, output_token):
                    self._out = conn
                    self._out_ready.set()
                    continue
                conn.close()  # not the host: wait for the right one
            server.close()
            self._out_ready.set()  # no output connection came first: log output here
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = conn
            here.setblocking(False)
            a = asyncio.create_task(_pump(loop, conn, here))
            b = asyncio.create_task(_pump(loop, here, conn))
            await asyncio.wait([a, b], return_when=asyncio.FIRST_COMPLETED)
            # The worker saw its channel close or the host went away: either way it ends.
            for t in (a, b):
                t.cancel()
        except (TimeoutError, OSError) as exc:
            log.error("relay ended: %r", exc)
        finally:
            self._out_ready.set()
            server.close()
            self._kill()
            here.close()
            if self._sock is not None:
                self._sock.close()

    # -- control -------------------------------------------------------------------
    async def wait(self) -> dict[str, Any]:
        """Once the worker has ended: its exit status (as for a direct child) and the
        out-of-memory kills of its cgroup."""
        assert self._exited is not None, "no worker was started"
        return await asyncio.shield(self._exited)

    def usage(self) -> tuple[int | None, str | None, float | None]:
        """The worker's memory (bytes), what counts it, and its CPU seconds, read here."""
        from types import SimpleNamespace

        from mcphost.host.usage import Meter

        if self._proc is None or self._plan is None or self._exited is None:
            return None, None, None
        if self._exited.done():
            return None, None, None
        meter = Meter(SimpleNamespace(plan=self._plan, pid=self._proc.pid))  # type: ignore[arg-type]
        u = meter.read()
        return u.memory, u.memory_source, u.cpu_seconds

    def kill(self) -> None:
        """SIGKILL the worker's process group now."""
        self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)

    def _release(self) -> None:
        plan, spec = self._plan, self._spec
        self._plan = None
        if plan is not None and plan.cleanup is not None:
            try:
                plan.cleanup()
            except Exception:
                log.exception("isolation cleanup failed")
        if spec is not None:
            shutil.rmtree(spec.work_dir, ignore_errors=True)


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def _pump(loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from ``src`` to ``dst`` until ``src`` ends."""
    while True:
        data = await loop.sock_recv(src, _RELAY_CHUNK)
        if not data:
            return
        await loop.sock_sendall(dst, data)
