"""What the benchmarks measure the same way: the whole machine's CPU time.

A benchmark's children often are not its waited-for children (a Spark driver's JVM, a
daemon), so their CPU does not show in ``resource.getrusage``: the benchmarks take the
machine's CPU time (user, nice, system, interrupts) before and after, on a quiet machine.
"""

from __future__ import annotations

import psutil

__all__ = ["machine_cpu_s"]


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent working since boot."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq
