"""Standard Webhooks signatures for outbound HTTP deliveries.

``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one ``v1,…``
per secret, space-separated, so a receiver can rotate secrets. A secret written
``whsec_<base64>`` is the base64 of the key (the Standard Webhooks form); any other text
is used as the key's UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of one secret; ValueError for a ``whsec_`` secret that is not base64."""
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret[len(PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


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
