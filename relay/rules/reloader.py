"""The rules a process runs by, reloaded when the file changes (README: "Hot reload").

Every web and worker process holds a :class:`RulesHolder`. A watcher thread looks at the
file every second (and at once when asked, e.g. on SIGHUP); a changed file that loads
replaces the running rules, one that fails is logged with every error and ignored — the
running rules stay, and the holder's ``failure`` says so (``/readyz``) until a version
loads. A file that fails while it is still changing (an editor or ``cp`` half-way through
writing it) is not a failure yet: it is read again at the next look. Deliveries carry the
version that routed them, and the holder keeps the last few versions, so in-flight
deliveries finish under the rules that routed them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from relay.errors import RulesError
from relay.rules import Ruleset

log = logging.getLogger("relay.rules")

KEEP_VERSIONS = 16  #: older rulesets kept for in-flight deliveries
WATCH_INTERVAL = 1.0  #: seconds between looks at the file
SETTLE = 0.15  #: seconds a file that failed to load is given to show it is still being written
WATCHER_THREAD = "relay-rules-watcher"  #: the name of each watcher's thread


@dataclass(frozen=True)
class ReloadFailure:
    """The last change to the rules file did not load: its errors, and the version kept."""

    errors: tuple[str, ...]  #: every "file:line: path: message"
    version: str  #: the version still in force

    def __str__(self) -> str:
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        first = self.errors[0] if self.errors else "unknown error"
        return f"reload failed: {first}{more}, still running version {self.version}"


class RulesHolder:
    def __init__(
        self,
        path: str,
        load: Callable[[str], Ruleset],
        on_change: Callable[[Ruleset | None, bool], None] | None = None,
    ) -> None:
        """``load(path)`` raises RulesError/OSError; ``on_change(ruleset, ok)`` is told of
        every reload attempt (for metrics)."""
        self.path = path
        self._load = load
        self._on_change = on_change or (lambda ruleset, ok: None)
        self._lock = threading.Lock()
        self._versions: OrderedDict[str, Ruleset] = OrderedDict()
        #: set when the file in place failed to load; None once a version loads
        self.failure: ReloadFailure | None = None
        self._watcher_pid: int | None = None
        self._stop_watching: threading.Event | None = None
        self._digest = self._file_digest()
        self.current = load(path)  # at start, a bad file is fatal: let it raise
        self._remember(self.current)
        self._on_change(self.current, True)

    def get(self, version: str | None) -> Ruleset:
        """The ruleset of ``version`` if still known, else the current one."""
        with self._lock:
            return self._versions.get(version or "", self.current)

    def check(self) -> bool:
        """Reload if the file changed; True when new rules were taken."""
        digest = self._file_digest()
        if digest is None or digest == self._digest:
            return False
        try:
            ruleset = self._load(self.path)
        except (RulesError, OSError) as exc:
            if self._still_changing(digest):
                return False  # being written: read again at the next look
            self._digest = digest
            self._failed(exc.errors if isinstance(exc, RulesError) else [str(exc)])
            return False
        self._digest = digest
        with self._lock:
            previous, self.current = self.current, ruleset
            self._remember(ruleset)
            self.failure = None
        log.info(
            "rules reloaded: version %s (was %s)",
            ruleset.version,
            previous.version,
            extra={"rules_version": ruleset.version},
        )
        self._on_change(ruleset, True)
        return True

    def _still_changing(self, digest: str) -> bool:
        """Whether the file differs, SETTLE seconds on, from what ``digest`` was taken of."""
        time.sleep(SETTLE)
        return self._file_digest() != digest

    def _failed(self, errors: list[str]) -> None:
        self.failure = ReloadFailure(tuple(errors), self.current.version)
        log.error(
            "rules reload failed; keeping version %s:\n%s",
            self.current.version,
            "\n".join(errors),
            extra={"rules_version": self.current.version},
        )
        self._on_change(None, False)

    def _remember(self, ruleset: Ruleset) -> None:
        self._versions[ruleset.version] = ruleset
        self._versions.move_to_end(ruleset.version)
        while len(self._versions) > KEEP_VERSIONS:
            self._versions.popitem(last=False)

    def _file_digest(self) -> str | None:
        try:
            with open(self.path, "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            return None  # a file being replaced: look again next time

    def ensure_watching(self) -> None:
        """Start the watcher in this process unless it runs already (cheap: call it often).

        Threads do not survive a fork, so a gunicorn or Celery child starts its own."""
        if self._watcher_pid != os.getpid():
            self._watcher_pid = os.getpid()
            self._on_change(self.current, True)  # this process's own gauges
            self._stop_watching = self.watch()
            _watching.add(self)

    def stop_watching(self) -> None:
        """End the watcher ensure_watching started (the next call starts another)."""
        if self._stop_watching is not None:
            self._stop_watching.set()
        self._stop_watching, self._watcher_pid = None, None
        _watching.discard(self)

    def watch(self, interval: float = WATCH_INTERVAL) -> threading.Event:
        """Check now, then every ``interval`` seconds, in a daemon thread; set the event to
        stop."""
        stop = threading.Event()

        def loop() -> None:
            while True:
                try:
                    self.check()
                except Exception:  # the watcher must outlive any surprise
                    log.exception("rules watcher")
                if stop.wait(interval):
                    return

        threading.Thread(target=loop, name=WATCHER_THREAD, daemon=True).start()
        return stop


#: the holders whose watcher runs in this process
_watching: weakref.WeakSet[RulesHolder] = weakref.WeakSet()


def stop_watchers() -> None:
    """End every watcher of this process (the tests, after each one; the threads are
    daemons, so a process that exits needs not)."""
    for holder in list(_watching):
        holder.stop_watching()


class StaticRules:
    """A RulesHolder for one ruleset that never changes (tools and tests)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.current = ruleset

    def get(self, version: str | None) -> Ruleset:
        return self.current
