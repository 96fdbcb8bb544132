"""Checks of an OpenAPI document and of real answers against it (used by both APIs' tests)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_BASE = "urn:shotline:openapi"


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are expected, not {ref!r}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref!r}"
        node = node[part]
    return node


def check_document(doc: dict[str, Any]) -> int:
    """The document is valid OpenAPI (openapi-spec-validator) and every ``$ref`` in it
    resolves from the document's root. Returns how many references were followed."""
    validate_spec(doc)
    count = 0

    def walk(node: Any) -> None:
        nonlocal count
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                _pointer(doc, ref)
                count += 1
            for key, value in node.items():
                if key != "example":  # literal data, not part of the document's structure
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return count


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def validator_at(doc: dict[str, Any], *pointer: str) -> Draft202012Validator:
    """A validator of the schema at ``pointer`` inside ``doc`` (its refs resolve in doc)."""
    _pointer(doc, "#/" + "/".join(_escape(p) for p in pointer))
    registry = Registry().with_resource(
        _BASE, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    ref = f"{_BASE}#/" + "/".join(_escape(p) for p in pointer)
    return Draft202012Validator({"$ref": ref}, registry=registry, format_checker=FormatChecker())


def check_response(
    doc: dict[str, Any],
    path: str,
    method: str,
    status: int,
    body: Any,
    media_type: str = "application/json",
) -> None:
    """``body`` is what the document promises for ``method path`` answering ``status``."""
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented"
    content = responses[str(status)].get("content", {})
    assert media_type in content, f"{method} {path} {status}: no {media_type} documented"
    validator_at(
        doc,
        "paths",
        path,
        method.lower(),
        "responses",
        str(status),
        "content",
        media_type,
        "schema",
    ).validate(body)
