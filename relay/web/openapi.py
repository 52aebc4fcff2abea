"""The API description: ``GET /openapi.json`` serves ``relay/web/openapi.yaml`` as JSON."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml
from flask import Blueprint, jsonify

bp = Blueprint("docs", __name__)


@cache
def openapi() -> dict:
    """The OpenAPI document shipped with the package (read once per process)."""
    return yaml.safe_load(files("relay.web").joinpath("openapi.yaml").read_text(encoding="utf-8"))


@bp.route("/openapi.json", methods=["GET", "HEAD"])
def openapi_json():
    return jsonify(openapi())
