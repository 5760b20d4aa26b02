"""Helpers for the Python backend models: config parameters and per-request errors."""

from __future__ import annotations

import json


def config_parameters(args: dict) -> dict[str, str]:
    """``parameters { key: ... value: { string_value: ... } }`` of the model config as a plain dict."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def request_parameters(request) -> dict:
    """Per-request parameters (JSON object) sent by the client, or {}."""
    raw = request.parameters()
    return json.loads(raw) if raw else {}


def error_response(pb_utils, message: str):
    """A response carrying an INVALID_ARG error for one request; the others are unaffected."""
    try:
        error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    except (AttributeError, TypeError):  # older stubs take the message only
        error = pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
