"""How busy the machine was during a benchmark run: these machines are shared and noisy, so
every benchmark records it next to its numbers."""

from __future__ import annotations


def cpu_ticks() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal)."""
    try:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def cpu_share(start: list[int], end: list[int]) -> dict[str, float] | None:
    """Busy / idle / stolen shares of all CPUs between two ``cpu_ticks``: how noisy the run was."""
    if len(start) != 8 or len(end) != 8:
        return None
    d = [b - a for a, b in zip(start, end, strict=True)]
    total = max(1, sum(d))
    busy = d[0] + d[1] + d[2] + d[5] + d[6]
    return {"busy": busy / total, "idle": (d[3] + d[4]) / total, "steal": d[7] / total}
