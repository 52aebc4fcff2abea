"""The API description: ``GET /openapi.json`` serves ``relay/web/openapi.yaml`` as JSON."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify

bp = Blueprint("docs", __name__)


@cache
def openapi() -> dict[str, Any]:
    """The OpenAPI document shipped with the package (read once per process)."""
    text = files("relay.web").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@bp.route("/openapi.json", methods=["GET", "HEAD"])
def openapi_json() -> Response:
    return jsonify(openapi())
