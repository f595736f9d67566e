"""Landlock: a second wall for files and TCP ports, applied by the jailed worker itself.

bubblewrap decides what a worker can see; Landlock (Linux 5.13+) decides, inside that
view, what it may do: read and execute its code, write only its data directory, scratch
directory, ``/tmp`` and granted paths, and (ABI 4+) connect only to granted TCP ports.
With ABI 6+ it also cannot signal processes or reach abstract unix sockets outside its
own domain. The rules are applied before the worker imports anything of the plugin, and
hold for everything the worker starts.

This module is also where the worker's first steps in the jail live: :data:`BOOTSTRAP`
moves it into its cgroups, then :func:`main` checks that, applies the rules and runs the
worker in the same interpreter (or executes another program, for tests).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Any

import msgspec

from .cgroups import check_member

__all__ = [
    "BOOTSTRAP",
    "JailStart",
    "LandlockRules",
    "abi_version",
    "main",
    "restrict",
    "rules_for",
]

# Syscall numbers are the same on every architecture that has Landlock (generic table).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
WRITE |= MAKE_SYM | REFER | TRUNCATE


class LandlockRules(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a worker may touch; everything else Landlock handles is refused."""

    read: list[str] = []
    write: list[str] = []
    #: Devices: read, write and ioctl on files beneath (e.g. /dev).
    devices: list[str] = []
    #: ``None``: TCP is not restricted by Landlock. Otherwise the only ports it may connect to.
    connect_ports: list[int] | None = []


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if not sys.platform.startswith("linux") or platform.machine() not in (
        "x86_64",
        "aarch64",
        "riscv64",
        "armv7l",
        "ppc64le",
        "s390x",
    ):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION))
    return max(abi, 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(rules: LandlockRules) -> int:
    """Apply ``rules`` to this process and its future children; returns the ABI used.

    Raises :class:`OSError` when the kernel refuses; returns 0 (nothing applied) when it
    has no Landlock.
    """
    abi = abi_version()
    if abi <= 0:
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled_fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled_fs)
    size = 8
    if abi >= 4 and rules.connect_ports is not None:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        raise _error("create a Landlock ruleset")
    try:
        for paths, access in (
            (rules.read, READ),
            (rules.devices, READ | WRITE_FILE | IOCTL_DEV),
            (rules.write, WRITE),
        ):
            for path in paths:
                _add_path(libc, ruleset, path, access & handled_fs)
        if attr.handled_access_net:
            for port in rules.connect_ports or []:
                rule = _NetPort(allowed_access=NET_CONNECT_TCP, port=port)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, ctypes.byref(rule), 0):
                    raise _error(f"allow TCP port {port}")
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise _error("set no_new_privs")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0):
            raise _error("enforce the Landlock ruleset")
    finally:
        os.close(ruleset)
    return abi


def _add_path(libc: Any, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            access &= _FILE_ONLY
        rule = _PathBeneath(allowed_access=access, parent_fd=fd)
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
            raise _error(f"allow {path}")
    finally:
        os.close(fd)


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"Landlock: cannot {what}: {os.strerror(err)}")


def rules_for(
    read: list[str],
    write: list[str],
    network: list[str] | None,
) -> LandlockRules:
    """Rules for a worker: ``network`` is the grant (``None``: none, ``"*"``: any)."""
    if network is None:
        ports: list[int] | None = []
    elif "*" in network:
        ports = None
    else:
        suffixes = [entry.rpartition(":")[2] for entry in network]
        # An entry without a port leaves TCP open: Landlock cannot express host names.
        ports = sorted({int(s) for s in suffixes}) if all(map(str.isdigit, suffixes)) else None
    return LandlockRules(
        read=[*read, "/usr", "/etc", "/proc"],
        write=[*write, "/tmp"],
        devices=["/dev"],
        connect_ports=ports,
    )


class JailStart(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the worker checks and applies first, inside the jail, before any plugin code."""

    #: The name of the worker's cgroups, and how many it must be in (0: none).
    cgroup: str = ""
    cgroups: int = 0
    landlock: LandlockRules | None = None


#: The jail's first Python code, run as ``python -c BOOTSTRAP FDS ARGS...``. The move
#: into the worker's cgroups (writes to the ``cgroup.procs`` fds in FDS) waits for the
#: kernel, about one RCU grace period (~10 ms) when no cgroup move happened lately; so
#: the imports the worker needs anyway run on a thread meanwhile. Then :func:`main`
#: checks the move, applies Landlock and runs the worker; no plugin code runs before.
BOOTSTRAP = (
    "import os, sys, threading\n"
    "t = threading.Thread(target=__import__, args=('mcphost.sandbox.worker',))\n"
    "t.start()\n"
    "for fd in [int(x) for x in sys.argv[1].split(',') if x]:\n"
    "    os.write(fd, b'0')\n"
    "    os.close(fd)\n"
    "t.join()\n"
    "from mcphost.sandbox.landlock import main\n"
    "main(sys.argv[2:])\n"
)


def main(argv: list[str] | None = None) -> None:
    """Check the cgroups, apply Landlock, then run the worker here (or ``--exec`` a program).

    ``argv`` is the worker's ``CONFIG_JSON`` (with a ``jail`` entry), or ``--exec
    JAIL_JSON -- PROGRAM ARGS...``. A failed check ends the process before the plugin.
    """
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--exec":
        start = msgspec.json.decode(args[1], type=JailStart)
    else:
        start = msgspec.convert(msgspec.json.decode(args[0]).get("jail", {}), type=JailStart)
    if start.cgroups:
        check_member(start.cgroup, start.cgroups)
    # Landlock binds the calling thread and the threads it starts later: the only one left.
    if start.landlock is not None:
        restrict(start.landlock)
    if args[0] == "--exec":
        program = args[args.index("--") + 1 :]
        os.execv(program[0], program)
    from mcphost.sandbox.worker import main as worker_main

    sys.argv[1:] = args
    worker_main(args)


if __name__ == "__main__":
    main()
