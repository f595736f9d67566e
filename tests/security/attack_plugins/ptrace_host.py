"""Tries to trace the host process and to read its memory."""

from __future__ import annotations

import ctypes
import os
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_ptrace_host", description="Attaches a debugger to the host")

_PTRACE_ATTACH = 16
_PTRACE_SEIZE = 0x4206


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


@plugin.tool
def attack(host_pid: int) -> dict[str, Any]:
    """PTRACE_ATTACH/SEIZE the host and the jail's init, process_vm_readv the host."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    got: dict[str, Any] = {}
    for name, request, pid in (
        ("attach host", _PTRACE_ATTACH, host_pid),
        ("seize host", _PTRACE_SEIZE, host_pid),
        ("attach init", _PTRACE_ATTACH, 1),
        ("attach parent", _PTRACE_ATTACH, os.getppid()),
    ):
        rc = libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None)
        got[name] = "attached" if rc == 0 else ctypes.get_errno()
    buf = ctypes.create_string_buffer(64)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), 64)
    remote = _IoVec(ctypes.c_void_p(0x400000), 64)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    n = libc.process_vm_readv(
        host_pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, ctypes.c_ulong(0)
    )
    got["process_vm_readv host"] = "read" if n >= 0 else ctypes.get_errno()
    try:
        with open(f"/proc/{host_pid}/mem", "rb") as f:
            f.read(1)
        got["/proc/host/mem"] = "read"
    except OSError as exc:
        got["/proc/host/mem"] = exc.errno
    return got
