"""A seccomp filter for jailed workers, handed to bubblewrap as a BPF program.

The filter allows everything a Python worker needs and refuses (``EPERM``) the system
calls that serve only to attack the kernel or to leave the jail: debugging other
processes, mounting, loading BPF or kernels, kernel keyrings, userfaultfd, perf events,
io_uring, new user namespaces, joining other namespaces, and faking terminal input.

It is built with `pyseccomp <https://pypi.org/project/pyseccomp/>`_ (a dependency of
mcphost, over the system's libseccomp), imported only when a filter is first needed.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

__all__ = [
    "CLONE_NEWUSER",
    "DENIED_SYSCALLS",
    "SeccompUnavailable",
    "filter_fd",
    "filter_program",
    "seccomp_status",
]

CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

#: Refused outright with EPERM. Names unknown to this kernel's architecture are skipped.
DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes' memory and registers
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    # the mount table and the root
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # namespaces of other processes
    "setns",
    # kernel attack surface a tool never needs
    "bpf",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "acct",
    "quotactl",
    "swapon",
    "swapoff",
    "reboot",
    "uselib",
)


class SeccompUnavailable(RuntimeError):
    """No seccomp filter can be built here (pyseccomp or libseccomp missing)."""


def _pyseccomp() -> Any:
    try:
        import pyseccomp
    except ImportError as exc:
        raise SeccompUnavailable(
            f"seccomp: unavailable: pyseccomp, a dependency of mcphost, is missing ({exc}); "
            "reinstall mcphost with its dependencies"
        ) from exc
    except (OSError, RuntimeError) as exc:
        # pyseccomp raises RuntimeError when it finds no libseccomp, OSError when it
        # cannot load the one it found.
        raise SeccompUnavailable(
            f"seccomp: unavailable: the libseccomp library cannot be loaded ({exc}); "
            "install it (Debian/Ubuntu: apt install libseccomp2, Fedora: dnf install "
            "libseccomp) for the seccomp filter"
        ) from exc
    return pyseccomp


def seccomp_status() -> tuple[bool, str]:
    """Whether a filter can be built, and what it does or why it cannot."""
    try:
        filter_program()
    except SeccompUnavailable as exc:
        return False, str(exc)
    return True, (
        "EPERM for ptrace, mount, bpf, kexec, keyrings, userfaultfd, perf events, "
        "io_uring, setns, pivot_root, new user namespaces, TIOCSTI"
    )


@functools.cache
def filter_program() -> bytes:
    """The filter as a BPF program (built once per process)."""
    sc = _pyseccomp()
    eperm = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    arch = sc.system_arch()

    def known(name: str) -> bool:
        return int(sc.resolve_syscall(arch, name)) >= 0

    try:
        for name in DENIED_SYSCALLS:
            if known(name):
                flt.add_rule(eperm, name)
        # New user namespaces: refuse the flag, keep ordinary fork and threads working.
        newuser = sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
        flt.add_rule(eperm, "unshare", newuser)
        flt.add_rule(eperm, "clone", newuser)
        # clone3 passes its flags in memory a filter cannot read: report it missing, so
        # the C library falls back to clone, whose flags the rule above sees.
        if known("clone3"):
            flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        # Faking input on a terminal; compare the low 32 bits only (the kernel does).
        for request in (TIOCSTI, TIOCLINUX):
            flt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
        fd = os.memfd_create("mcphost-seccomp-export", os.MFD_CLOEXEC)
        with os.fdopen(fd, "w+b") as buf:
            flt.export_bpf(buf)
            buf.seek(0)
            program = buf.read()
    except OSError as exc:
        raise SeccompUnavailable(f"seccomp: unavailable (libseccomp failed: {exc})") from exc
    return program


def filter_fd() -> int:
    """A fresh memfd holding the filter, positioned at its start, for ``bwrap --seccomp``.

    The caller passes it to the child and closes it afterwards. The fd is not
    inheritable; ``subprocess`` makes it so for the child when it is in ``pass_fds``.
    """
    program = filter_program()
    fd = os.memfd_create("mcphost-seccomp", os.MFD_CLOEXEC)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
