"""What routing and delivery need in a worker process, built once per process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.events import Job
from relay.rules.reloader import RulesHolder
from relay.settings import Settings
from relay.state import Store
from relay.worker.ownership import Holdings

#: (job, countdown seconds) → publish a ``relay.deliver`` task for it
Schedule = Callable[[Job, float], None]


@dataclass
class Runtime:
    settings: Settings
    store: Store
    rules: RulesHolder
    schedule: Schedule
    max_hop: float  #: longest countdown a task message may wait (half the visibility timeout)
    stopping: threading.Event = field(default_factory=threading.Event)  #: set at shutdown
    #: the pending members this process works on now (``relay.worker.ownership``)
    holdings: Holdings = field(default_factory=Holdings)
    #: set when a Redis call of this process failed (``relay.worker.failover``)
    interrupted: threading.Event = field(default_factory=threading.Event)
