"""The WSGI entry point gunicorn loads: ``gunicorn relay.web.wsgi:app``."""

import sys

from relay.errors import ConfigError

try:
    from relay.web.app import create_app

    app = create_app()
except ConfigError as exc:  # one line naming the variable, not a traceback
    print(f"relay: {exc}", file=sys.stderr)
    sys.exit(2)
