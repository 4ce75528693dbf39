"""A model of how Azure Automation hands a job's parameters to a PowerShell runbook.

Automation keeps each parameter value as JSON text and decodes it before binding it to the runbook's
`param()` block (azure-powershell issue 7977: a value that is not JSON fails with "Conversion from JSON
failed with error: Unexpected character encountered while parsing value"; the issue's own text: a JSON
object given as a value reaches a `[string]` parameter as an object, not as text). The model is the
strict reading of that: a value that parses as JSON is converted (an object to a hashtable, an array to
an array, a number to a number, a JSON string to that string); anything else fails the job. What a
`[string]` parameter then holds is PowerShell's string conversion of the decoded value: a string stays
itself, a number is its digits, anything else is not the text that was sent (`object_text`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ConversionError(Exception):
    """Automation could not decode a parameter value: the job fails before the runbook runs."""


def decode(value: str) -> Any:
    """One parameter value as Automation decodes it."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"Conversion from JSON failed with error: Unexpected character encountered while parsing value: "
            f"{value[:1]}. Path '', line {exc.lineno - 1}, position {exc.colno - 1}."
        ) from None


def object_text(value: Any) -> str:
    """What `[string]` makes of a decoded non-string value: PowerShell's ToString(), not the JSON sent
    (a hashtable becomes "System.Collections.Hashtable", an array its items joined by spaces)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "System.Collections.Hashtable"
    if isinstance(value, list):
        return " ".join(object_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def string_parameters(body: Mapping[str, Any]) -> dict[str, str]:
    """What each `[string]` parameter of the runbook receives from a Jobs - Create request body."""
    received = {}
    for name, value in (body.get("properties", {}).get("parameters") or {}).items():
        decoded = decode(value)
        received[name] = decoded if isinstance(decoded, str) else object_text(decoded)
    return received
