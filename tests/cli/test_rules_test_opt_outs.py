"""``relay rules test`` decides opt-outs as the worker does (relay.rules.replies), on a
simulated state that starts with nobody opted out: ``opt_out_ambiguous`` and
``sender_opted_out`` are set before matching, and a reply the worker would skip says so."""

from __future__ import annotations

import json
import os

from tests.cli.test_rules_commands import relay
from tests.harness import ROOT


def readme_rule(name: str) -> str:
    """The route ``name`` as config/README.md writes it (one flow-style line)."""
    lines = (ROOT / "config" / "README.md").read_text().splitlines()
    (line,) = [line for line in lines if f"{{name: {name}," in line]
    return line.strip()


def rules_with(route: str, extra_routes: str = "") -> str:
    return (
        "version: 1\n"
        "destinations:\n"
        "  ops-email: {type: log}\n"
        "  trace: {type: log}\n"
        '  help-reply: {type: sms_reply, text: "ACME: reply STOP to opt out."}\n'
        "routes:\n"
        f"  {route}\n"
        f"{extra_routes}"
        "default: {to: [trace]}\n"
    )


def env() -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    # sms_reply needs the service key and authenticated callbacks to load
    return {**environ, "RELAY_WEBEX_SERVICE_KEY": "k", "RELAY_WEBEX_HUB_SECRET": "h"}


def sms(sender: str, text: str) -> dict:
    return {"oa": sender, "da": "12345", "message": text}


def dry_run(tmp_path, rules: str, payload: object) -> list[dict]:
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "payload.json").write_text(json.dumps(payload))
    done = relay(
        "rules",
        "test",
        str(tmp_path / "rules.yaml"),
        "--event",
        str(tmp_path / "payload.json"),
        "--json",
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_readme_example_routes_an_ambiguous_opt_out_in_a_dry_run(tmp_path):
    rules = rules_with(readme_rule("unclear-stop"))
    (report,) = dry_run(tmp_path, rules, sms("447700900123", "please stop texting me"))
    assert report["routes"] == ["unclear-stop"]
    assert report["event"]["opt_out_ambiguous"] is True
    assert report["event"]["sender_opted_out"] is False


def test_a_dry_run_shows_a_stop_opting_out_and_the_reply_the_worker_would_skip(tmp_path):
    rules = rules_with(
        "- {name: stopped, match: {sender_opted_out: true}, to: [trace], continue: true}",
        "  - {name: help, match: {keyword: HELP}, to: [help-reply]}\n",
    )
    batch = [sms("447700900123", "STOP"), sms("447700900123", "HELP"), sms("447700900124", "HELP")]
    stop, help_after_stop, other = dry_run(tmp_path, rules, batch)
    assert stop["event"]["sender_opted_out"] is True and stop["routes"] == ["stopped"]
    assert help_after_stop["event"]["sender_opted_out"] is True
    (reply,) = help_after_stop["deliveries"][1:]
    assert reply["destination"] == "help-reply" and reply["skipped"] == "sender opted out"
    assert other["event"]["sender_opted_out"] is False and other["routes"] == ["help"]
    (reply,) = other["deliveries"]
    assert "skipped" not in reply and reply["request"]["to"] == "+447700900124"


def test_the_text_form_says_which_reply_the_worker_would_skip(tmp_path):
    rules = rules_with("- {name: help, match: {keyword: HELP}, to: [help-reply]}")
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "payload.json").write_text(json.dumps(sms("12345", "HELP")))
    rules_file, payload = str(tmp_path / "rules.yaml"), str(tmp_path / "payload.json")
    done = relay("rules", "test", rules_file, "--event", payload, env=env())
    assert done.returncode == 0, done.stderr
    assert "skipped by the worker: sender is a short code" in done.stdout


def test_rule_cases_see_the_opt_out_fields(tmp_path):
    rules = rules_with(
        readme_rule("unclear-stop"),
        "  - {name: stopped, match: {sender_opted_out: true}, to: [trace]}\n",
    )
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "cases.yaml").write_text(
        "- name: an ambiguous opt-out goes to a person\n"
        "  payload: {oa: '447700900123', da: '12345', message: please stop texting me}\n"
        "  routes: [unclear-stop]\n"
        "- name: a STOP is an opt-out, and so is the sender's next message\n"
        "  payload:\n"
        "    - {oa: '447700900123', da: '12345', message: STOP}\n"
        "    - {oa: '447700900123', da: '12345', message: hello}\n"
        "  routes: [stopped]\n"
        "- name: each case starts with nobody opted out\n"
        "  payload: {oa: '447700900123', da: '12345', message: hello}\n"
        "  routes: [default]\n"
    )
    done = relay(
        "rules",
        "test",
        str(tmp_path / "rules.yaml"),
        "--cases",
        str(tmp_path / "cases.yaml"),
        env=env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "3 passed, 0 failed"
