"""The ops console at ``/ui``: overview, events, dead letters, rules (README: "Console").

Server-rendered pages (Jinja, autoescaped) with a little plain JavaScript, all shipped in
this package: nothing is loaded from elsewhere. Who may see and do what:
:mod:`relay.web.console.access`.
"""

from relay.web.console import access, dead_letters, events, overview, rules
from relay.web.console.blueprint import bp

__all__ = ["bp", "access", "dead_letters", "events", "overview", "rules"]
