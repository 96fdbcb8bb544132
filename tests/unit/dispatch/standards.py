"""Validators built from the official artefacts vendored in tests/standards (see its README)."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import xmlschema
import yaml
from jsonschema import Draft4Validator, Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from services.dispatch.formats.json import SCHEMA_PATH
from tests.conftest import REPO_ROOT

STANDARDS = REPO_ROOT / "tests" / "standards"
CAP_XSD = STANDARDS / "cap-1.2" / "CAP-v1.2.xsd"
EIDO_DIR = STANDARDS / "eido"
_EIDO_ROOT = "urn:nena:eido:openapi"


@cache
def _cap_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(CAP_XSD))


def cap_schema() -> xmlschema.XMLSchema:
    """The OASIS CAP 1.2 XSD (parsed once per session)."""
    return _cap_schema()


def fix_eido_defects(node: Any) -> Any:
    """openapi.yaml line 218 reads ``minItems: 1,`` (a string); a validator needs 1."""
    if isinstance(node, dict):
        return {
            k: int(v.rstrip(","))
            if k in ("minItems", "maxItems") and isinstance(v, str)
            else fix_eido_defects(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [fix_eido_defects(v) for v in node]
    return node


@cache
def _eido_validator() -> Draft4Validator:
    raw = yaml.safe_load((EIDO_DIR / "openapi.yaml").read_text())
    agent = raw["components"]["schemas"]["AgentType"]["allOf"][1]["properties"]
    assert agent["agentRoleRegistryText"]["minItems"] == "1,", "upstream fixed? drop the patch"
    doc = fix_eido_defects(raw)
    # OpenAPI 3.0 schema objects are a JSON Schema draft 4/5 dialect; resolve the
    # #/components/schemas/... references inside the whole document
    registry = Registry().with_resource(_EIDO_ROOT, Resource.from_contents(doc, DRAFT4))
    schema = {"$ref": f"{_EIDO_ROOT}#/components/schemas/EmergencyIncidentDataObjectType"}
    return Draft4Validator(schema, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER)


def eido_validator() -> Draft4Validator:
    """NENA's EIDO schema (from the OpenAPI document, defect patched in memory)."""
    return _eido_validator()


@cache
def alert_validator() -> Draft202012Validator:
    """Our own alert.schema.json, with date-time formats checked."""
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    Draft202012Validator.check_schema(schema)
    checker = FormatChecker()
    # without rfc3339-validator installed jsonschema silently skips date-time checks
    assert "date-time" in checker.checkers, "pip install rfc3339-validator"
    return Draft202012Validator(schema, format_checker=checker)
