"""Whether a worker on this host is alive, for an orchestrator's liveness probe
(``relay worker --check``).

A worker node beats into Redis every :data:`relay.state.pending.HEARTBEAT` seconds from a
thread of its main process; a node silent for :data:`relay.state.pending.NODE_TTL` seconds
is dead to the other workers, which take over what it held. The probe asks the same
question of this host's nodes: alive when the freshest beat is younger than ``NODE_TTL``.
A worker that is hung (its heartbeat thread starved or stopped), stopped, or cut off from
Redis is not alive; restarting it is what the probe is for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.state import Store
from relay.state.pending import NODE_TTL


@dataclass(frozen=True)
class Liveness:
    alive: bool
    message: str  #: one line for the probe's output


def worker_liveness(store: Store, host: str, now: float | None = None) -> Liveness:
    """Is a worker node of ``host`` beating? (RedisError when Redis does not answer.)"""
    beats = store.pending.beats(host)
    if not beats:
        return Liveness(False, f"no worker of host {host} has a heartbeat in Redis")
    node, last = max(beats.items(), key=lambda item: item[1])
    if last <= 0:
        return Liveness(False, f"worker {node} stopped (no worker of host {host} beats)")
    age = (time.time() if now is None else now) - last
    if age >= NODE_TTL:
        return Liveness(
            False,
            f"worker {node} last beat {age:.0f} s ago (alive means within {NODE_TTL:.0f} s)",
        )
    return Liveness(True, f"worker {node} alive: last beat {max(age, 0.0):.1f} s ago")
