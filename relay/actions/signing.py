"""Standard Webhooks signatures for outbound HTTP deliveries.

``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one ``v1,…``
per secret, space-separated, so a receiver can rotate secrets. How a secret is written
(``whsec_<base64>`` or raw text) is the rules file's business: :func:`secret_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping

from relay.rules.model import secret_key

__all__ = ["secret_key", "signature", "standard_webhooks_signer"]


def signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def standard_webhooks_signer(secrets: str) -> Callable[[str, int, bytes], Mapping[str, str]]:
    """A signer for ``send_http``: ``secrets`` holds one or more space-separated secrets."""
    keys = [secret_key(secret) for secret in secrets.split()]

    def sign(delivery_id: str, timestamp: int, body: bytes) -> Mapping[str, str]:
        return {
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                signature(key, delivery_id, timestamp, body) for key in keys
            ),
        }

    return sign
