"""The two baselines the ingest benchmark compares relay with, as WSGI apps for gunicorn:

    gunicorn bench.baselines:lpush -c python:relay.web.gunicorn_conf   # LPUSH the raw body
    gunicorn bench.baselines:delay -c python:relay.web.gunicorn_conf   # Celery delay() by hand

Both answer ``POST /webhooks/webex-connect`` (relay's path) and use ``BENCH_REDIS_URL``.

- ``lpush``: the floor of a durable accept — one ``LPUSH`` of the raw body into a Redis
  list, then 200. No parsing, no validation, no dedupe.
- ``delay``: what a team would write by hand — ``request.get_json()`` then
  ``task.delay(payload)`` on a trivial task, Celery on the same Redis as broker, JSON
  serializer, results ignored. Nothing consumes its queue during the benchmark.
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from flask import Flask, jsonify, request

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LPUSH_KEY = "bench:lpush"
DELAY_QUEUE = "bench.delay"

# -- LPUSH ------------------------------------------------------------------------------

lpush = Flask("bench-lpush")
_redis = redis.Redis.from_url(REDIS_URL)


@lpush.post("/webhooks/webex-connect")
def lpush_receive():
    _redis.lpush(LPUSH_KEY, request.get_data())
    return jsonify(accepted=1)


# -- Celery delay() ---------------------------------------------------------------------

celery = Celery("bench", broker=REDIS_URL)
celery.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=DELAY_QUEUE,
)


@celery.task(name="bench.noop")
def noop(payload) -> None:
    return None


delay = Flask("bench-delay")


@delay.post("/webhooks/webex-connect")
def delay_receive():
    result = noop.delay(request.get_json())
    return jsonify(accepted=[result.id])
