"""Checking a model's tool arguments against the tool's JSON schema.

Only the subset our schemas use: an object with typed properties, required names, no extra
names, and integer minimums. Unambiguous near-misses are accepted rather than bounced back
("12" for an integer, "true" for a boolean, null for an omitted optional argument), because a
wasted turn costs more than the leniency; everything else becomes a message that names the
argument, what was expected, and what arguments exist.
"""

from __future__ import annotations

from typing import Any

from tools.base import ToolError

_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "object": "an object", "array": "an array"}  # fmt: skip


def validate_args(schema: dict[str, Any], args: Any) -> dict[str, Any]:
    """Return the (coerced) arguments or raise ToolError describing the first problem."""
    props: dict[str, Any] = schema.get("properties", {})
    signature = ", ".join(
        name + ("" if name in schema.get("required", []) else "?") for name in props
    )
    if not isinstance(args, dict):
        raise ToolError(f"arguments must be a JSON object with: {signature}")
    clean: dict[str, Any] = {}
    unknown = [name for name in args if name not in props]
    if unknown and schema.get("additionalProperties") is False:
        raise ToolError(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the arguments are: {signature}"
        )
    for name, spec in props.items():
        if name not in args or args[name] is None:
            continue
        clean[name] = _coerce(name, spec, args[name])
    missing = [name for name in schema.get("required", []) if name not in clean]
    if missing:
        raise ToolError(
            f"missing required argument{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}; the arguments are: {signature}"
        )
    return clean


def _coerce(name: str, spec: dict[str, Any], value: Any) -> Any:
    kind = spec.get("type")
    expected = _TYPE_NAMES.get(kind, kind)
    ok = True
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        ok = isinstance(value, bool)
    elif kind in ("integer", "number"):
        if isinstance(value, str):
            try:
                value = float(value.strip()) if kind == "number" else int(value.strip())
            except ValueError:
                ok = False
        if isinstance(value, float) and kind == "integer" and value.is_integer():
            value = int(value)
        ok = ok and isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (kind == "number" or isinstance(value, int))
        if ok and "minimum" in spec and value < spec["minimum"]:
            raise ToolError(f"argument '{name}' must be at least {spec['minimum']}, got {value}")
    if not ok:
        raise ToolError(f"argument '{name}' must be {expected}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
