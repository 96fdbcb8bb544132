"""Ingest's OpenAPI document is valid, every reference in it resolves, and real answers of
every kind match what it promises. Its docs pages load their assets from ingest itself."""

from __future__ import annotations

import orjson

from tests.integration.ingest.conftest import FrozenClock
from tests.integration.ingest.test_detections import NOW, detection
from tests.support.openapi import check_document, check_response, validator_at

PATH = "/v1/detections"


async def test_the_document_is_valid_and_real_answers_match_it(start_ingest, register, client):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW), max_body_bytes=4096)
    doc = (await client.get(f"{ingest.url}/openapi.json")).json()
    assert check_document(doc) > 0
    assert doc["components"]["securitySchemes"]["sensorToken"]["scheme"] == "bearer"
    post = doc["paths"][PATH]["post"]
    assert post["security"] == [{"sensorToken": []}]
    body_schema = validator_at(
        doc, "paths", PATH, "post", "requestBody", "content", "application/json", "schema"
    )
    for example in post["requestBody"]["content"]["application/json"]["examples"].values():
        body_schema.validate(example["value"])  # the examples obey the schema
    # the request schema is the model's: a bool is no number, position is described
    assert not body_schema.is_valid(
        {"detections": [detection("s-1", 1, position={"lat": True, "lon": 0})]}
    )
    assert body_schema.is_valid({"detections": [detection("s-1", 1)]})

    url = f"{ingest.url}{PATH}"
    json_headers = {**sensor.headers, "content-type": "application/json"}
    cases = [
        # (headers, body) -> documented status
        (json_headers, {"detections": [detection("s-1", 1), {"detection_id": 5}]}, 202),
        (json_headers, {"detections": [detection("s-1", 2, peak_db=-5)]}, 422),
        (json_headers, {"nope": []}, 422),
        ({**sensor.headers, "content-type": "text/plain"}, {"detections": []}, 415),
        ({"content-type": "application/json"}, {"detections": []}, 401),
        (json_headers, {"detections": [detection("s-1", i) for i in range(60)]}, 413),
    ]
    for headers, body, status in cases:
        answer = await client.post(url, content=orjson.dumps(body), headers=headers)
        assert answer.status_code == status, answer.text
        check_response(doc, PATH, "post", status, answer.json())
    for probe in ("/healthz", "/readyz"):
        answer = await client.get(f"{ingest.url}{probe}")
        check_response(doc, probe, "get", answer.status_code, answer.json())


async def test_swagger_ui_and_redoc_are_served_without_a_cdn(start_ingest, client):
    ingest = await start_ingest()
    for page in ("/docs", "/redoc"):
        html = (await client.get(f"{ingest.url}{page}")).text
        assert "cdn." not in html and "unpkg" not in html, page
    html = (await client.get(f"{ingest.url}/docs")).text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in html
        served = await client.get(f"{ingest.url}/static-offline-docs/{asset}")
        assert served.status_code == 200 and len(served.content) > 10_000
