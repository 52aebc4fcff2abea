"""Memory per open message: what the message lifecycle keeps in Redis for each message
waiting for its final receipt (its record and its deadline), with 1,000,000 of them.

A private Redis (no persistence) is loaded through relay's own code: each message's
``Submitted`` receipt is built from the seed payload by relay's parser (a UUID
``transid``, a 12-digit number, no callbackData or correlationid, as in most traffic)
and applied by the same Lua the routing call runs (``relay.state.lifecycle.LIBRARY``,
with ``receipt_args``), pipelined. The figure is Redis's ``used_memory`` after, less
before, divided by the messages: their records (a field each in the day's hash) and
their deadlines (an entry each in the list of their second).

    python -m bench lifecycle [--messages N]
"""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from relay.cli.embedded import EmbeddedRedis
from relay.parsing import build_events
from relay.state import connect
from relay.state import keys as state_keys
from relay.state.lifecycle import LIBRARY, Lifecycle, receipt_args

SEEDS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
BATCH = 2000
WITHIN = 900.0  #: final_receipt_within: 15m
TTL = 7 * 86400  #: RELAY_HISTORY_TTL's default

#: the routing call's lifecycle part alone (the arguments start at ARGV[1])
_APPLY = LIBRARY + "\nreturn l_receipt(KEYS[1], ARGV, 1)\n"


def run(messages: int = 1_000_000, progress=print, keep: bool = False) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-lifecycle-"))
    server = EmbeddedRedis(directory / "redis", appendonly=False).start()
    try:
        client = connect(server.url, timeout=30.0)
        apply = client.register_script(_APPLY)
        payload = json.loads((SEEDS / "receipt-submitted.json").read_text())
        info = payload["deliveryInfoNotification"]["deliveryInfo"]
        info["timeStamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        (template,), _ = build_events(payload, "default", set())  # sent as it arrives
        client.execute_command("MEMORY", "PURGE")
        before = int(client.info("memory")["used_memory"])
        for start in range(0, messages, BATCH):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(BATCH, messages - start)):
                event = {**template, "transid": str(uuid.uuid4())}
                apply(keys=[state_keys.PREFIX], args=receipt_args(event, WITHIN, TTL), client=pipe)
            pipe.execute()
            if start and start % 200_000 == 0:
                progress(f"  lifecycle: {start:,} open messages …")
        after = int(client.info("memory")["used_memory"])
        open_now = Lifecycle(client).due_count()
        client.close()
    finally:
        server.stop()
        if not keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    return {
        "messages": messages,
        "open": open_now,
        "bytes_per_message": (after - before) / messages,
        "used_mb": (after - before) / 1e6,
    }
