"""marshmallow schemas for Webex Connect notifications, tolerant of real-world variants.

Keys are matched case-insensitively (``Description``/``description``), known misspellings
are aliases (``userld`` for ``userId``), ``code`` may be a number, optional fields may be
absent, and unknown fields are ignored here (the event keeps the whole payload in ``raw``).
Errors name fields by their documented spelling, with a dotted path.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from relay.errors import PayloadError


class Text(fields.Field[str]):
    """A string; numbers are accepted and turned into their decimal text."""

    default_error_messages = {"invalid": "Not a string or number."}

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.make_error("invalid")
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.make_error("invalid")
            return str(int(value)) if value.is_integer() else repr(value)
        return str(value)


class _Tolerant(Schema):
    """Renames keys to their documented spelling before validation."""

    ALIASES: Mapping[str, str] = {}

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def canonical_keys(self, data: object, **kwargs: Any) -> object:
        if not isinstance(data, Mapping):
            return data  # marshmallow reports "Invalid input type."
        spelled = self._spelled
        out: dict[object, Any] = {}
        for key, value in data.items():
            name = spelled.get(str(key).lower(), key)
            if name not in out or str(key) == name:  # the exact spelling wins
                out[name] = value
        return out

    @cached_property
    def _spelled(self) -> dict[str, str]:
        """Each accepted spelling, lower-cased, and the documented one it stands for."""
        documented = [f.data_key or name for name, f in self.fields.items()]
        spelled = {name.lower(): name for name in documented}
        spelled.update({alias.lower(): name for alias, name in self.ALIASES.items()})
        return spelled


def _text(data_key: str, required: bool = False) -> Text:
    if required:
        return Text(data_key=data_key, required=True, validate=validate.Length(min=1))
    return Text(data_key=data_key, load_default="")


class DeliveryInfoSchema(_Tolerant):
    status = _text("deliveryStatus", required=True)
    code = _text("code")
    description = _text("Description")
    additional_info = _text("additionalInfo")
    destination = _text("destination")
    destination_type = _text("destinationType")
    channel = _text("deliveryChannel")
    timestamp = _text("timeStamp")


class ReceiptSchema(_Tolerant):
    delivery_info = fields.Nested(DeliveryInfoSchema, data_key="deliveryInfo", required=True)
    transid = _text("transid")
    subtid = _text("subtid")
    correlation_id = _text("correlationid")
    callback_data = _text("callbackData")


class InboundSchema(_Tolerant):
    ALIASES = {"userld": "userId", "Channel": "channel", "timeStamp": "datetime"}

    oa = _text("oa", required=True)
    da = _text("da", required=True)
    text = Text(data_key="message", required=True)
    tid = _text("tid")
    user_id = _text("userId")
    channel = _text("channel")
    network_id = _text("x_networkid")
    datetime = _text("datetime")
    ts = _text("ts")


RECEIPT_KEY = "deliveryInfoNotification"  #: what wraps a receipt (the one key read from its level)
_RECEIPT = ReceiptSchema()
_INBOUND = InboundSchema()
_INBOUND_KEYS = {"oa", "da", "message", "tid"}


def parse_notification(item: object, path: str = "") -> tuple[str, dict[str, Any]]:
    """``("receipt" | "inbound", fields)`` for one notification, or a PayloadError."""
    if not isinstance(item, Mapping):
        raise PayloadError(f"{path or 'body'}: expected a JSON object", field=path or "body")
    keys = {str(key).lower() for key in item}
    if RECEIPT_KEY.lower() in keys:
        where = f"{path}.{RECEIPT_KEY}" if path else RECEIPT_KEY
        receipt = _spelled_any_case(item, RECEIPT_KEY)
        if not isinstance(receipt, Mapping):
            raise PayloadError(f"{where}: expected a JSON object", field=where)
        data = _load(_RECEIPT, receipt, where)
        info = data.pop("delivery_info")
        return "receipt", {**info, **data}
    if keys & _INBOUND_KEYS:
        data = _load(_INBOUND, item, path)
        datetime_, ts = data.pop("datetime"), data.pop("ts")
        data["timestamp"] = datetime_ or ts
        return "inbound", data
    raise PayloadError(
        field=path or "body",
        detail=f"{path or 'body'}: unknown payload shape: expected a delivery receipt "
        "(deliveryInfoNotification) or an inbound message (oa, da, message)",
    )


def _spelled_any_case(item: Mapping[str, Any], name: str) -> object:
    """``item[name]``, else the value of the first key that is ``name`` in another case
    (as :meth:`_Tolerant.canonical_keys` picks)."""
    if name in item:
        return item[name]
    lowered = name.lower()
    return next(value for key, value in item.items() if str(key).lower() == lowered)


def _load(schema: Schema, item: Mapping[str, Any], path: str) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(item)
        return loaded
    except ValidationError as exc:
        field, message = _first_error(exc.messages, path)
        raise PayloadError(f"{field}: {message}", field=field) from None


def _first_error(messages: object, path: str) -> tuple[str, str]:
    """``(a.b.c, message)`` for the first field marshmallow complained about."""
    while isinstance(messages, Mapping) and messages:
        key, messages = next(iter(messages.items()))
        if key != "_schema":
            path = f"{path}.{key}" if path else str(key)
    if isinstance(messages, list) and messages:
        messages = messages[0]
    return path or "body", str(messages)
