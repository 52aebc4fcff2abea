"""Ingest: the webhook endpoint — verify, parse, dedupe, enqueue, answer fast."""
