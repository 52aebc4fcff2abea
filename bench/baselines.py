"""The baselines the ingest benchmark compares relay with, as WSGI apps for gunicorn
(under relay's settings, :mod:`bench.gunicorn_conf`):

    gunicorn bench.baselines:lpush -c python:bench.gunicorn_conf         # LPUSH, plain WSGI
    gunicorn bench.baselines:lpush_flask -c python:bench.gunicorn_conf   # LPUSH in Flask
    gunicorn bench.baselines:delay -c python:bench.gunicorn_conf         # Celery delay() by hand

Each answers ``POST /webhooks/webex-connect`` (relay's path) and uses ``BENCH_REDIS_URL``.

- ``lpush``: the floor of a durable accept — one ``LPUSH`` of the raw body into a Redis
  list, then 200. No parsing, no validation, no dedupe. A plain WSGI callable, as relay's
  webhook endpoint is (:mod:`relay.web.ingest` answers before Flask is reached), reading
  the body as it does (``werkzeug.Request.get_data``);
- ``lpush_flask``: the same view in Flask, the floor relay was first measured against
  (a second line: what Flask's routing and response cost on top);
- ``delay``: what a team would write by hand — ``request.get_json()`` then
  ``task.delay(payload)`` on a trivial task, Celery on the same Redis as broker, JSON
  serializer, results ignored. Nothing consumes its queue during the benchmark.
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from flask import Flask, jsonify, request
from werkzeug import Request

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LPUSH_KEY = "bench:lpush"
DELAY_QUEUE = "bench.delay"

# -- LPUSH ------------------------------------------------------------------------------

PATH = "/webhooks/webex-connect"
ACCEPTED = b'{"accepted":1}'
_redis = redis.Redis.from_url(REDIS_URL)


def lpush(environ: dict, start_response) -> list[bytes]:
    if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    _redis.lpush(LPUSH_KEY, Request(environ).get_data())
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ACCEPTED)))]
    )
    return [ACCEPTED]


lpush_flask = Flask("bench-lpush")


@lpush_flask.post(PATH)
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


@delay.post(PATH)
def delay_receive():
    result = noop.delay(request.get_json())
    return jsonify(accepted=[result.id])
