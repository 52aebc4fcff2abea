"""A message's lifecycle as operators see it (``relay events show <transid>``): its
receipts in their own time order, the time from the first to the final one, and whether
it went overdue (its ``receipt_overdue`` event) and its final receipt came late."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relay.codes import is_final
from relay.events import DELIVERY_RECEIPT, RECEIPT_OVERDUE
from relay.state import Store
from relay.times import epoch, format_duration


def message_lifecycle(
    store: Store, ref: str, found: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The lifecycle of the message ``ref`` when it is a ``transid`` whose receipts were
    tracked (``lifecycle`` in the rules) and ``found`` (its events' timelines, in their
    own time order: ``relay.ops.history.event_history``) holds them; else None."""
    receipts = [item for item in found if _of(item, ref, DELIVERY_RECEIPT)]
    if not receipts:
        return None
    overdue = next((item for item in found if _of(item, ref, RECEIPT_OVERDUE)), None)
    final = next((item for item in receipts if is_final(item["event"].get("status", ""))), None)
    late = final is not None and overdue is not None and _arrival(final) > _arrival(overdue)
    record = store.lifecycle.message(ref)
    if record is None and overdue is None:
        return None  # not tracked: no lifecycle in the rules when its receipts came
    state = "late" if late else "final" if final else "overdue" if overdue else "open"
    return {
        "transid": ref,
        "state": record.state if record and record.state != "open" else state,
        "receipts": [_receipt(item) for item in receipts],
        "final": final["id"] if final else None,
        "time_to_final": _between(receipts[0], final) if final else None,
        "overdue": overdue["id"] if overdue else None,
        "late": late or bool(record and record.state == "late"),
    }


def _of(item: Mapping[str, Any], transid: str, kind: str) -> bool:
    return item.get("kind") == kind and item["event"].get("transid") == transid


def _own(item: Mapping[str, Any]) -> float | None:
    return epoch(item.get("timestamp")) or epoch(item.get("received_at"))


def _arrival(item: Mapping[str, Any]) -> float:
    return epoch(item.get("received_at")) or 0.0


def _between(first: Mapping[str, Any], final: Mapping[str, Any]) -> float | None:
    start, end = _own(first), _own(final)
    return round(end - start, 3) if start is not None and end is not None else None


def _receipt(item: Mapping[str, Any]) -> dict[str, Any]:
    event = item["event"]
    return {
        "id": item["id"],
        "status": event.get("status"),
        "code": event.get("code"),
        "timestamp": item.get("timestamp"),
        "received_at": item.get("received_at"),
    }


def format_lifecycle(life: Mapping[str, Any]) -> str:
    """The lifecycle as ``relay events show`` prints it, above the events."""
    lines = [f"message {life['transid']}: {life['state']}"]
    for receipt in life["receipts"]:
        what = " ".join(part for part in (receipt["status"], receipt["code"]) if part)
        lines.append(
            f"  {receipt['timestamp'] or '-':<29}  {what:<18}  received {receipt['received_at']}"
            f"  {receipt['id']}"
        )
    if life["time_to_final"] is not None:
        lines.append(f"  time to final: {format_duration(max(life['time_to_final'], 0))}")
    if life["overdue"]:
        after = ", then its final receipt came late" if life["late"] else ""
        lines.append(f"  overdue: receipt_overdue {life['overdue']}{after}")
    return "\n".join(lines)
