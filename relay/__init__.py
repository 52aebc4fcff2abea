"""relay: a Celery-backed relay and router for Webex Connect SMS callbacks."""

__version__ = "0.1.0"
