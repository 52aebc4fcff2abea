"""The web tier: the Flask app that accepts callbacks, the admin API, health, metrics
and the API description, and how gunicorn runs it."""
