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


# Each method that sends a request body, the schema of that body, and the method's parameters
# that are not body fields (paths, headers).
REQUEST_METHODS = [
    ("create_webhook", "CreateWebhook", set()),
    ("update_webhook", "PatchWebhook", {"webhook_id"}),
    ("publish", "CreateEvent", {"idempotency_key"}),
    ("create_operation", "CreateOperation", {"idempotency_key"}),
    ("replay_webhook", "Replay", {"webhook_id"}),
    ("claim", "ClaimRequest", set()),
    ("heartbeat", "Heartbeat", {"operation"}),
    ("create_key", "CreateKey", set()),
]


def test_request_parameters_are_the_documents_fields_and_enums(herald: Server) -> None:
    import inspect

    from herald_client import Herald

    schemas = fetch_document(herald)["components"]["schemas"]
    for method_name, schema_name, extra in REQUEST_METHODS:
        method = getattr(Herald, method_name)
        params = set(inspect.signature(method).parameters) - {"self"} - extra
        props = schemas[schema_name]["properties"]
        assert params == set(props), f"{method_name} vs {schema_name}: {sorted(params ^ set(props))}"
        hints = typing.get_type_hints(method)
        for field, prop in props.items():
            if "enum" in prop:
                assert literals(hints[field]) == set(prop["enum"]), f"{method_name}({field}) vs {schema_name}.{field}"


def literals(hint: object) -> set[object]:
    """The values of a Literal, also inside `Literal[...] | None`."""
    if typing.get_origin(hint) is typing.Literal:
        return set(typing.get_args(hint))
    return {v for arg in typing.get_args(hint) for v in literals(arg)}
