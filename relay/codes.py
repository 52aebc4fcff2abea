"""Webex Connect SMS status codes and the statuses they come with."""

from __future__ import annotations

#: code → description, from the vendor's status-code table.
CODE_DESCRIPTIONS: dict[str, str] = {
    "7500": "Delivered",
    "7501": "Submitted to the network",
    "7528": "Link clicked",
    "7004": "Invalid parameters/values",
    "7006": "Internal error (may be temporary)",
    "7101": "Invalid sender id",
    "7102": "Invalid address",
    "7107": "Message length exceeded",
    "7109": "User on Do-Not-Disturb list",
    "7201": "Failed at operator",
    "7202": "Failed at platform",
    "7203": "Unknown subscriber",
    "7204": "Insufficient credits",
    "7205": "Error in binary message",
    "7206": "SIM full",
    "7207": "Out of coverage",
    "7208": "Message expired",
    "7209": "Multipart message failed",
    "7210": "Billing configuration error",
    "7211": "Billing error at operator",
    # US/Canada tenants
    "7111": "Spam",
    "7280": "Deleted",
    "7281": "10DLC campaign error",
    "7282": "Invalid route",
    "7283": "Landline",
    "7284": "Duplicate message",
    "7302": "Rate limit exceeded",
    "7513": "Unregistered device",
    "7518": "Unknown error",
    "7607": "Invalid message type",
    "7720": "Recipient blocked",
}

#: Statuses Webex Connect sends for SMS; every one but Submitted is final.
STATUSES = ("Submitted", "Delivered", "Un-Delivered", "Failed", "Clicked")
NON_FINAL_STATUSES = frozenset({"submitted"})


def normalize_status(status: str) -> str:
    """The comparison form of a status: ``Un-Delivered`` → ``undelivered``."""
    return "".join(ch for ch in status.lower() if ch not in "-_ ")


def is_final(status: str) -> bool:
    return normalize_status(status) not in NON_FINAL_STATUSES


_STATUS_LABELS = {normalize_status(status): status for status in STATUSES}


def status_label(status: str) -> str:
    """A metric's bounded ``status`` label: the documented spelling, else ``other``."""
    return _STATUS_LABELS.get(normalize_status(status), "other")


def code_label(code: str) -> str:
    """A metric's bounded ``code`` label: a documented code, else ``other``."""
    return code if code in CODE_DESCRIPTIONS else "other"
