"""What a running ``relay up`` tells the commands run beside it, through its data dir.

``relay up --rules FILE`` on the embedded Redis records FILE (absolute) with its process
id in ``RELAY_DATA_DIR/rules.path``, and removes it when it stops. A command run with the same
data dir and no ``RELAY_RULES`` of its own (``relay destinations pause``, ``relay events
reroute``, ``relay rules diff`` …) then reads the rules that ``relay up`` runs, not
``config/rules.yaml``. A record left by a ``relay up`` that was killed names a process that
is gone, and is ignored. (The embedded Redis's address is found the same way:
:func:`relay.cli.embedded.running_embedded_url`.)
"""

from __future__ import annotations

import os
from pathlib import Path

RULES_FILE = "rules.path"  #: in the data dir while ``relay up`` runs: "<pid>\n<path>\n"


def record_rules(data_dir: str | os.PathLike[str], rules_path: str) -> None:
    """This process (``relay up``) runs the rules at ``rules_path``."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RULES_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{os.getpid()}\n{os.path.abspath(rules_path)}\n")
    temporary.replace(path)


def forget_rules(data_dir: str | os.PathLike[str]) -> None:
    """``relay up`` stops: its record goes, if it is its own."""
    path = Path(data_dir) / RULES_FILE
    if _read(path)[0] == os.getpid():
        path.unlink(missing_ok=True)


def running_rules(data_dir: str | os.PathLike[str]) -> str | None:
    """The rules file a ``relay up`` running on ``data_dir`` runs, or None."""
    pid, rules_path = _read(Path(data_dir) / RULES_FILE)
    return rules_path if pid is not None and _alive(pid) else None


def _read(path: Path) -> tuple[int | None, str | None]:
    try:
        pid, rules_path = path.read_text().splitlines()[:2]
        return int(pid), rules_path
    except (OSError, ValueError):  # none, or not one we wrote
        return None, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
