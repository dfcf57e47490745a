"""Poll slots: the wall-clock windows in which an agent may be polled once.

In dynamic cluster mode every replica places agent X's polls at the same
instants, `k * interval + offset(X)` seconds since the epoch, so "interval k
of agent X" means the same window on every replica (clocks kept by NTP). A
lease covers whole slots; the replica that polls X in slot k is the one whose
lease covered all of slot k (the leases of poller.cluster.node). The offset spreads a
fleet's polls evenly over the interval and is the same on every replica.

>>> s = slot_at("edge-1", 1_000.0, 30.0)
>>> s.start <= 1_000.0 < s.end and s.end == slot_start("edge-1", s.index + 1, 30.0)
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from poller.cluster.assign import _hash64

__all__ = ["Slot", "slot_at", "slot_offset", "slot_start"]

_SCALE = float(1 << 64)


@functools.lru_cache(maxsize=1 << 18)  # asked at every slot of every agent; the answer never changes
def slot_offset(agent: str, interval: float) -> float:
    """Where in each interval agent's slots begin: in [0, interval), from its name."""
    return _hash64("slot:" + agent) / _SCALE * interval


def slot_start(agent: str, index: int, interval: float) -> float:
    """The epoch second at which slot `index` of `agent` begins."""
    return index * interval + slot_offset(agent, interval)


@dataclass(frozen=True, slots=True)
class Slot:
    """Slot `index` of one agent: the window [start, end) in epoch seconds."""

    index: int
    start: float
    end: float


def slot_at(agent: str, when: float, interval: float) -> Slot:
    """The slot of `agent` that contains the epoch second `when`."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    index = int((when - slot_offset(agent, interval)) // interval)
    # Float rounding can leave `when` a hair outside [start, end); step to the right slot.
    while slot_start(agent, index + 1, interval) <= when:
        index += 1
    while slot_start(agent, index, interval) > when:
        index -= 1
    return Slot(index, slot_start(agent, index, interval), slot_start(agent, index + 1, interval))
