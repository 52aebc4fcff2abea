"""Fallbacks in process: real Redis, a real HTTP receiver, a scheduler that records what
would be published. The end-to-end view is in test_e2e_fallback_and_notifications."""

from __future__ import annotations

import pytest

from relay.events import job_of
from relay.ops import dead_letters
from relay.state.keys import deliver_member
from relay.worker.delivery import deliver_job
from tests.harness import in_process_runtime, pending_job
from tests.httpsink import Answer

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{url}/crm"
    retry: {{attempts: 1}}
    fallback: ops-slack
  ops-slack:
    type: slack
    webhook_url: "{url}/slack"
    text: "{{{{ failure.destination }}}} x{{{{ failure.attempts }}}}: {{{{ failure.last_error }}}}"
    retry: {{attempts: 4, initial: 1s, max: 2s}}
    fallback: ops-hook
  ops-hook:
    type: http
    url: "{url}/hook"
    body:
      event: "{{{{ event.id }}}}"
      failed: "{{{{ failure.destination if failure else 'no' }}}}"
      error: "{{{{ failure.last_error if failure else '' }}}}"
  plain-hook:
    type: http
    url: "{url}/plain"
routes: [{{name: all, to: [crm]}}]
"""


@pytest.fixture
def rig(redis_server, sink):
    runtime, store, scheduler = in_process_runtime(
        redis_server.url, RULES.format(url=sink.url("").rstrip("/"))
    )
    job = pending_job(runtime, "crm", {"attempts": 1, "initial": 1, "max": 1})
    return runtime, store, scheduler, job, sink


def test_a_dead_letter_registers_and_publishes_the_fallback_delivery(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(400, body="<!channel> & friends"))
    assert deliver_job(runtime, job) == "dead_lettered"
    ((fallback, countdown),) = scheduler.calls
    assert countdown == 0
    assert fallback["delivery_id"] == job["delivery_id"] + ":fallback"
    assert fallback["destination"] == "ops-slack" and fallback["route"] == "all"
    assert fallback["event"] == job["event"]
    assert fallback["retry"] == {"attempts": 4, "initial": 1.0, "max": 2.0}  # its own
    assert fallback["failure"] == {
        "destination": "crm",
        "delivery_id": job["delivery_id"],
        "attempts": 1,
        "last_error": "HTTP 400: <!channel> & friends",
    }
    # in the outbox with the dead letter: a worker that stops now loses neither
    assert store.pending.get(deliver_member(fallback["delivery_id"]))["args"] == [fallback]
    assert store.dead_letters.get(job["delivery_id"]) is not None

    sink.script(Answer(200, {"Content-Type": "text/plain"}, "ok"))
    assert deliver_job(runtime, fallback) == "delivered"
    slack = sink.requests[-1]
    assert slack.path == "/slack"
    # failure.* is data: Slack-escaped like the event's own values
    assert slack.json() == {"text": "crm x1: HTTP 400: &lt;!channel&gt; &amp; friends"}
    assert len(scheduler.calls) == 1


def test_a_delivery_to_a_fallback_never_falls_back_further(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(400))
    deliver_job(runtime, job)
    ((fallback, _),) = scheduler.calls
    sink.script(Answer(404, {"Content-Type": "text/plain"}, "channel_not_found"))
    assert deliver_job(runtime, fallback) == "dead_lettered"  # permanent: no retries
    assert len(scheduler.calls) == 1  # ops-slack has a fallback, but this is a fallback's
    record = store.dead_letters.get(fallback["delivery_id"])
    assert record["destination"] == "ops-slack" and record["failure"] == fallback["failure"]
    assert [r.path for r in sink.requests] == ["/crm", "/slack"]


def test_a_fallback_dead_letter_replays_to_the_fallback_with_its_failure(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(400), Answer(404, {"Content-Type": "text/plain"}, "no"))
    deliver_job(runtime, job)
    fallback = scheduler.calls[0][0]
    deliver_job(runtime, fallback)
    record = store.dead_letters.get(fallback["delivery_id"])
    again = job_of(record, 3)
    assert again["delivery_id"] == fallback["delivery_id"]
    assert again["destination"] == "ops-slack" and again["failure"] == fallback["failure"]

    class Publisher:
        sent: list = []

        def send_task(self, name, args):
            self.sent.append((name, args))

    publisher = Publisher()
    report = dead_letters.replay(store, publisher, [fallback["delivery_id"]])
    assert report.replayed[0]["destination"] == "ops-slack"
    ((task, (replayed,)),) = publisher.sent
    assert task == "relay.deliver" and replayed["failure"] == fallback["failure"]
    sink.script(Answer(200, {"Content-Type": "text/plain"}, "ok"))
    assert deliver_job(runtime, replayed) == "delivered"
    assert sink.requests[-1].json()["text"].startswith("crm x1: HTTP 400")


def test_each_failure_of_a_replayed_delivery_gets_a_fallback_of_its_own(rig):
    """A replayed delivery that dies again hands its event over again, as a fallback
    delivery with an id of its own (an http fallback's webhook-id): a receiver deduping
    by webhook-id takes each."""
    runtime, store, scheduler, job, sink = rig
    ok = Answer(200, {"Content-Type": "text/plain"}, "ok")
    sink.script(Answer(400), ok, Answer(400), ok, Answer(400), ok)

    class Publisher:
        def __init__(self):
            self.sent: list = []

        def send_task(self, name, args):
            self.sent.append(args[0])

    deliver_job(runtime, job)
    for replay in range(2):
        assert deliver_job(runtime, scheduler.calls[-1][0]) == "delivered"
        publisher = Publisher()
        dead_letters.replay(store, publisher, [job["delivery_id"]])
        ((replayed,),) = [publisher.sent]
        assert replayed["replays"] == replay + 1
        assert deliver_job(runtime, replayed) == "dead_lettered"
    assert deliver_job(runtime, scheduler.calls[-1][0]) == "delivered"
    fallbacks = [call[0]["delivery_id"] for call in scheduler.calls]
    did = job["delivery_id"]
    assert fallbacks == [f"{did}:fallback", f"{did}:fallback~2", f"{did}:fallback~3"]
    assert [r.path for r in sink.requests] == ["/crm", "/slack"] * 3


def test_templates_that_test_failure_work_for_both_kinds_of_delivery(rig):
    runtime, store, scheduler, job, sink = rig
    direct = {**job, "destination": "ops-hook", "delivery_id": job["event"]["id"] + ":ops-hook"}
    assert deliver_job(runtime, direct) == "delivered"
    assert sink.requests[-1].json() == {"event": job["event"]["id"], "failed": "no", "error": ""}
    failure = {"destination": "crm", "delivery_id": "d", "attempts": 2, "last_error": '"}, x'}
    handed = {**direct, "delivery_id": "x:fallback", "failure": failure}
    assert deliver_job(runtime, handed) == "delivered"
    assert sink.requests[-1].json() == {
        "event": job["event"]["id"],
        "failed": "crm",
        "error": '"}, x',  # a structured body: data stays data
    }


def test_an_http_fallback_with_the_default_body_gets_the_event_plus_failure(rig):
    runtime, store, scheduler, job, sink = rig
    direct = {**job, "destination": "plain-hook", "delivery_id": job["event"]["id"] + ":plain"}
    assert deliver_job(runtime, direct) == "delivered"
    assert sink.requests[-1].json() == job["event"]  # not a fallback: the event as it is
    failure = {"destination": "crm", "delivery_id": "d", "attempts": 3, "last_error": "HTTP 503"}
    handed = {**direct, "delivery_id": "x:fallback", "failure": failure}
    assert deliver_job(runtime, handed) == "delivered"
    assert sink.requests[-1].json() == {**job["event"], "failure": failure}
