"""Calls the system calls that serve only to attack the kernel or to leave the jail."""

from __future__ import annotations

import ctypes
import platform
from typing import Any

from mcphost.sdk import Plugin

plugin = Plugin("attack_kernel_surface", description="Pokes at the kernel's rare interfaces")

CLONE_NEWUSER = 0x10000000
#: Syscall numbers: x86_64, then the generic table (aarch64 and the other newer ports).
_NUMBERS = {
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "setns": (308, 268),
    "unshare": (272, 97),
    "bpf": (321, 280),
    "userfaultfd": (323, 282),
    "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "open_by_handle_at": (304, 265),
    "syslog": (103, 116),
}


@plugin.tool
def attack() -> dict[str, Any]:
    """Each call with harmless arguments; 0 when it went through, else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    column = 0 if platform.machine() == "x86_64" else 1
    got: dict[str, Any] = {}
    for name, numbers in _NUMBERS.items():
        arg = CLONE_NEWUSER if name == "unshare" else 0
        rc = libc.syscall(ctypes.c_long(numbers[column]), ctypes.c_long(arg), 0, 0, 0, 0)
        got[name] = 0 if rc >= 0 else ctypes.get_errno()
    return got
