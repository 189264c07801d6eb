"""The SDK's wire types are generated from /openapi.json; this fails when the committed
types and the document a running Herald serves disagree (a field added, renamed or made
required, an enum changed). Fix: python scripts/gen_types.py URL > src/herald_client/_types.py"""

from __future__ import annotations

import importlib.util
import json
import typing
import urllib.request
from pathlib import Path

import herald_client
from herald_client import _types

from .conftest import Server

ROOT = Path(__file__).resolve().parent.parent


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_types", ROOT / "scripts" / "gen_types.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fetch_document(herald: Server) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(herald.url + "/openapi.json") as answer:
        return json.load(answer)  # type: ignore[no-any-return]


def test_types_are_what_the_served_document_generates(herald: Server) -> None:
    document = fetch_document(herald)
    expected = load_generator().generate(document)
    committed = (ROOT / "src" / "herald_client" / "_types.py").read_text()
    assert committed == expected, "the SDK's types and /openapi.json disagree: regenerate _types.py"


def test_required_fields_and_enums_match_the_document(herald: Server) -> None:
    # The same check read from the importable types, so an edit of _types.py by hand
    # that keeps the text generator-shaped still cannot drift from the document.
    schemas = fetch_document(herald)["components"]["schemas"]
    for name, schema in schemas.items():
        if not schema.get("properties") or schema.get("type") != "object":
            continue
        td = getattr(_types, name)
        assert set(td.__annotations__) == set(schema["properties"]), name
        assert td.__required_keys__ == frozenset(schema.get("required", [])), name
        hints = typing.get_type_hints(td)
        for field, prop in schema["properties"].items():
            if "enum" in prop:
                assert set(typing.get_args(hints[field])) == set(prop["enum"]), f"{name}.{field}"


def test_the_routes_the_client_calls_are_in_the_document(herald: Server) -> None:
    paths = fetch_document(herald)["paths"]
    used = {
        ("post", "/tenants"), ("get", "/tenants/{id}"), ("post", "/tenants/{id}/keys"), ("post", "/keys"),
        ("delete", "/keys/{id}"), ("post", "/events"), ("get", "/events"), ("get", "/events/{id}"),
        ("put", "/event-types/{name}"), ("get", "/event-types"), ("post", "/webhooks"), ("get", "/webhooks"),
        ("get", "/webhooks/{id}"), ("patch", "/webhooks/{id}"), ("delete", "/webhooks/{id}"),
        ("post", "/webhooks/{id}:rotateSecret"), ("post", "/webhooks/{id}:replay"),
        ("get", "/deliveries"), ("get", "/deliveries/{id}"), ("post", "/deliveries/{id}:redeliver"),
        ("post", "/deliveries/{id}:skip"),
        ("post", "/operations"), ("get", "/operations"), ("get", "/operations/{id}"), ("delete", "/operations/{id}"),
        ("post", "/operations/{id}:cancel"), ("post", "/operations/{id}:wait"), ("post", "/operations:claim"),
        ("post", "/operations/{id}:heartbeat"), ("post", "/operations/{id}:complete"),
        ("post", "/operations/{id}:fail"), ("post", "/videos"),
    }
    missing = sorted(f"{m.upper()} {p}" for m, p in used if m not in paths.get(p, {}))
    assert not missing, f"the SDK calls routes the document does not have: {missing}"
    # And the package exports what it documents.
    for name in herald_client.__all__:
        assert hasattr(herald_client, name), name
