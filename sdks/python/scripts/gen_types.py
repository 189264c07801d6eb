"""Generates src/herald_client/_types.py from Herald's OpenAPI document.

    python scripts/gen_types.py openapi.json > src/herald_client/_types.py
    python scripts/gen_types.py http://127.0.0.1:8288/openapi.json > src/herald_client/_types.py

Every schema under `components.schemas` becomes a TypedDict (required fields plain,
optional ones `NotRequired`, enums `Literal`, `["x", "null"]` as `X | None`). The test
suite regenerates it from a running Herald and fails when the committed file differs.
Standard library only.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any

HEADER = '''"""Wire types generated from Herald's /openapi.json by scripts/gen_types.py. Do not edit.

tests/test_openapi.py regenerates this file from a running Herald and fails on any difference.
"""

from typing import Any, Literal, NotRequired, TypedDict
'''

SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


def py_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return '"' + str(schema["$ref"]).rsplit("/", 1)[-1] + '"'  # a forward reference
    if "enum" in schema:
        return "Literal[" + ", ".join(json.dumps(v) for v in schema["enum"]) + "]"
    if "const" in schema:
        return "Literal[" + json.dumps(schema["const"]) + "]"
    kinds = schema.get("type")
    if kinds is None:
        return "Any"
    if isinstance(kinds, str):
        kinds = [kinds]
    parts = []
    for kind in kinds:
        if kind == "array":
            parts.append("list[" + py_type(schema.get("items", {})) + "]")
        elif kind == "object":
            parts.append("dict[str, Any]")
        else:
            parts.append(SCALARS[kind])
    return " | ".join(parts)


def generate(document: dict[str, Any]) -> str:
    blocks = [HEADER.rstrip()]
    for name in sorted(document["components"]["schemas"]):
        schema = document["components"]["schemas"][name]
        props = schema.get("properties")
        if schema.get("type") != "object" or not props:
            blocks.append(f"{name} = {py_type(schema)}")
            continue
        required = set(schema.get("required", []))
        lines = [f"class {name}(TypedDict):"]
        if schema.get("description"):
            lines.append(f'    """{schema["description"]}"""')
            lines.append("")
        for field in props:  # the document's order
            t = py_type(props[field])
            lines.append(f"    {field}: {t}" if field in required else f"    {field}: NotRequired[{t}]")
        blocks.append("\n".join(lines))
    return "\n\n\n".join(blocks) + "\n"


def load(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source) as answer:  # noqa: S310 - a URL the caller gave
            return json.load(answer)  # type: ignore[no-any-return]
    with open(source, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_types.py OPENAPI_JSON_FILE_OR_URL")
    sys.stdout.write(generate(load(sys.argv[1])))
