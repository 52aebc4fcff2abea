"""The WSGI entry point gunicorn loads: ``gunicorn relay.wsgi:app``."""

import sys

from relay.errors import ConfigError

try:
    from relay.app import create_app

    app = create_app()
except ConfigError as exc:  # one line naming the variable, not a traceback
    print(f"relay: {exc}", file=sys.stderr)
    sys.exit(2)
