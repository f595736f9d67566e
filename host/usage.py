"""A worker's resource use as a whole, and whether it is over its limits.

The reading comes from the worker's cgroup where the isolation backend has one;
otherwise memory is the proportional set size of its process tree, so pages that forked
processes share are counted once, not once per process.
"""

from __future__ import annotations

import contextlib

import psutil

from mcphost.sandbox.client import WorkerClient
from mcphost.sandbox.isolation import Limits, ResourceUsage

__all__ = ["MIB", "Meter", "over_limits"]

MIB = 1024 * 1024


class Meter:
    """Reads a worker's memory and CPU use as a whole: from its launch plan (the
    kernel's accounting for its cgroup) where the backend offers it, else from its
    process tree: proportional set size, CPU time of the live processes."""

    def __init__(self, worker: WorkerClient) -> None:
        self.plan_usage = worker.plan.usage
        self.proc: psutil.Process | None = None
        if getattr(worker, "node", None) is not None:
            return  # on another machine: its plan reads it there; a local pid means nothing
        try:
            self.proc = psutil.Process(worker.pid)
        except psutil.Error:
            self.proc = None

    def read(self) -> ResourceUsage:
        usage = self.plan_usage() if self.plan_usage is not None else ResourceUsage()
        complete = usage.memory is not None and usage.cpu_seconds is not None
        if complete or self.proc is None:
            return usage
        tree = _tree_usage(self.proc)
        if usage.memory is not None:
            return ResourceUsage(
                memory=usage.memory,
                memory_source=usage.memory_source,
                cpu_seconds=usage.cpu_seconds
                if usage.cpu_seconds is not None
                else tree.cpu_seconds,
            )
        return ResourceUsage(
            memory=tree.memory,
            memory_source=tree.memory_source,
            cpu_seconds=usage.cpu_seconds if usage.cpu_seconds is not None else tree.cpu_seconds,
        )


def _tree_usage(proc: psutil.Process) -> ResourceUsage:
    """Proportional set size of a process and its live descendants (``"pss"``; ``"rss"``
    when a page map could not be read), and their CPU seconds with those of the
    descendants that have ended."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return ResourceUsage()
    memory = 0
    source = "pss"
    cpu = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            try:
                memory += p.memory_full_info().pss
            except psutil.AccessDenied:
                memory += p.memory_info().rss  # no access to its page map: the upper bound
                source = "rss"
            t = p.cpu_times()
            # children_*: processes it started that have ended and been reaped.
            cpu += t.user + t.system + t.children_user + t.children_system
    return ResourceUsage(memory=memory, memory_source=source, cpu_seconds=cpu)


def over_limits(usage: ResourceUsage, limits: Limits) -> str | None:
    """Why a worker using ``usage`` must be stopped, or ``None`` while it is within limits.

    CPU time counts the whole worker, processes it started included: each process's own
    ``RLIMIT_CPU`` cannot see that a worker spreads its work over many processes.
    """
    memory, cpu = usage.memory, usage.cpu_seconds
    if limits.memory_mb is not None and memory is not None and memory > limits.memory_mb * MIB:
        return f"used {memory // MIB} MiB of memory, over its limit of {limits.memory_mb} MiB"
    if limits.cpu_seconds is not None and cpu is not None and cpu > limits.cpu_seconds:
        return (
            f"used {cpu:.1f} CPU seconds with the processes it started, over its limit "
            f"of {limits.cpu_seconds}"
        )
    return None
