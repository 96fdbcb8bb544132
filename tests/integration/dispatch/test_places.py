"""The city's layers, loaded from the command line into the real database, name the place in
the alerts dispatch sends; reloads take no downtime and never change a stored version's words."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from pathlib import Path

import asyncpg
import numpy as np
import orjson
import pytest

from services.dispatch import formats, geofiles, geostore, metrics
from services.dispatch.places import PlaceIndex
from services.dispatch.push.webpush import generate_vapid_private_key
from tests.integration.dispatch.helpers import admin, eventually, incident, square
from tests.support.push_receivers import FcmReceiver, WebPushReceiver, running
from tests.unit.dispatch import city

CLI = [sys.executable, "-c", "from services.cli import app; app()"]
ADDRESS_COLUMNS = [
    "--number", "HOUSE_NO", "--street", "ST_NAME,ST_TYPE", "--unit", "APT", "--city", "MUNI",
    "--postcode", "ZIP", "--lon", "X", "--lat", "Y",
]  # fmt: skip


async def _cli(database_url: str, *args: str | Path) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "250"}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *map(str, args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def _load_city(database_url: str, folder: Path) -> None:
    files = city.write_files(folder)
    for args in (
        ("areas", "load", files["beats.geojson"], "--layer", "beat", "--name-field", "BEAT"),
        ("areas", "load", files["districts.geojson"], "--layer", "district", "--name-field",
         "DIST_NAME"),
        ("streets", "load", files["streets.geojson"], "--name-field", "FULL_NAME"),
        ("addresses", "load", files["addresses.csv"], *ADDRESS_COLUMNS),
    ):  # fmt: skip
        code, out, err = await _cli(database_url, *args)
        assert code == 0, err
        assert "loaded" in out


async def _add_sensors(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for i, (lat, lon) in enumerate(city.SENSORS["z1"]):
            await conn.execute(
                "INSERT INTO sensors (sensor_id, zone, lat, lon, token_hash) "
                "VALUES ($1, 'z1', $2, $3, $4)",
                f"s{i}",
                lat,
                lon,
                secrets.token_bytes(32),
            )
    finally:
        await conn.close()


async def test_layers_load_from_the_command_line_and_are_listed(
    database_url: str, tmp_path: Path
) -> None:
    await _load_city(database_url, tmp_path)
    code, out, _ = await _cli(database_url, "areas", "list")
    assert code == 0 and "beat" in out and "district" in out
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        layers = {(r.kind, r.layer): r.features for r in await geostore.list_layers(pool)}
        # the alley without a name and the CSV row without street or position are left out
        assert layers == {
            ("area", "beat"): 2,
            ("area", "district"): 1,
            ("street", "streets"): 8,
            ("address", "addresses"): 5,
        }
        attributes = await pool.fetchval(
            "SELECT attributes::text FROM geo_areas WHERE layer = 'district'"
        )
        assert orjson.loads(attributes) == {"population": 12000}
        index = PlaceIndex()
        assert await index.refresh(pool)
        assert not await index.refresh(pool)  # nothing changed: no rebuild
        place = index.gazetteer.describe(*city.lat_lon(30, 5), "z1")
        assert place is not None
        assert place.text == "10 Main St, 21 m W · near Main St & 2nd Ave"
        assert place.areas_text == "beat B"
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("areas", "load", "beats.geojson", "--layer", "beat", "--name-field", "NAME"),
         "feature 0: no property 'NAME' (the --name-field)"),
        (("areas", "load", "streets.geojson", "--layer", "beat", "--name-field", "FULL_NAME"),
         "geometry must be one of Polygon, MultiPolygon, not 'LineString'"),
        (("addresses", "load", "addresses.csv", "--street", "STREET"),
         "no column 'number', 'STREET'"),
        (("areas", "load", "beats.geojson", "--layer", "bad layer", "--name-field", "BEAT"),
         "--layer 'bad layer' must be"),
    ],
)  # fmt: skip
async def test_bad_layer_files_are_refused_with_a_line_naming_the_problem(
    database_url: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    city.write_files(tmp_path)
    code, _, err = await _cli(database_url, *args[:2], tmp_path / args[2], *args[3:])
    assert code == 2
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err


async def test_a_bad_coordinate_names_its_line_and_keeps_the_loaded_layer(
    database_url: str, tmp_path: Path
) -> None:
    await _load_city(database_url, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("number,street,lon,lat\n1,Main St,-79.99,40.44\n2,Main St,-79.99,north\n")
    code, _, err = await _cli(database_url, "addresses", "load", bad)
    assert code == 2 and "line 3: column 'lat' is not a number: 'north'" in " ".join(err.split())
    code, out, _ = await _cli(database_url, "addresses", "list")
    assert " 5 " in out  # still the five points loaded before


async def test_lookups_keep_answering_while_a_layer_reloads(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        rng = np.random.default_rng(7)

        def rows(street: str) -> list[geofiles.AddressRow]:
            east, north = rng.uniform(-2000, 2000, 100_000), rng.uniform(-2000, 2000, 100_000)
            lat, lon, _ = city.FRAME.to_geodetic(np.column_stack([east, north]))
            return [
                geofiles.AddressRow(str(i), street, "", "", "", float(x), float(y))
                for i, (x, y) in enumerate(zip(lon, lat, strict=True))
            ]

        await geostore.replace_addresses(pool, "addresses", rows("Old St"), source="old")
        index = PlaceIndex()
        await index.refresh(pool)
        old_version = index.version
        await geostore.replace_addresses(pool, "addresses", rows("New St"), source="new")

        answers: list[str] = []
        refreshing = asyncio.create_task(index.refresh(pool))
        here = city.lat_lon(10, 10)
        while not refreshing.done():
            place = index.gazetteer.describe(*here, "z1")
            assert place is not None and place.address is not None
            answers.append(place.address.street)
            await asyncio.sleep(0)
        assert await refreshing
        # Lookups answered all along the reload (from the old layer), then from the new one.
        assert len(answers) > 10 and set(answers) == {"Old St"}
        assert index.version != old_version
        assert index.gazetteer.describe(*here, "z1").address.street == "New St"  # type: ignore[union-attr]
    finally:
        await pool.close()


async def test_alerts_name_the_place_and_a_replay_after_a_reload_sends_the_same_bytes(
    make_settings, services, receivers, publish, database_url, tmp_path
) -> None:
    await _load_city(database_url, tmp_path)
    await _add_sensors(database_url)
    service = await services(make_settings(max_attempts=1))
    receiver = await receivers(script=[500])  # the first attempt fails: a dead letter
    async with admin(service) as client:
        response = await client.post(
            "/v1/subscriptions",
            json={"name": "cad", "channel": "webhook", "url": receiver.url,
                  "geofence": square(-79.99, 40.44)},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        record = incident(*city.lat_lon(30, 5))
        await publish(record)
        (first,) = await receiver.wait_for(1)
        place = orjson.loads(first.body)["data"]["place"]
        assert place["text"] == "10 Main St, 21 m W · near Main St & 2nd Ave"
        assert place["areas"] == [{"layer": "beat", "name": "B"}]
        assert place["outside_coverage"] is False
        stored = (await client.get(f"/v1/incidents/{record.incident_id}")).json()
        assert stored["versions"][0]["place"] == place

        # Reload the addresses (one new point right by the incident): new incidents use it...
        moved = tmp_path / "moved.csv"
        lat, lon = city.lat_lon(30, 6)
        moved.write_text(f"number,street,lon,lat\n1,Close St,{lon!r},{lat!r}\n")
        before = service.places.version
        code, _, err = await asyncio.wait_for(_cli(database_url, "addresses", "load", moved), 60)
        assert code == 0, err

        async def reloaded() -> bool:
            return service.places.version != before

        await eventually(reloaded, what="the dispatch index to take the reload")
        later = incident(*city.lat_lon(30, 5))
        await publish(later)
        bodies = await receiver.wait_for(2)
        assert orjson.loads(bodies[1].body)["data"]["place"]["address"]["street"] == "Close St"

        # ... while a replay of the stored version sends the very same bytes as before.
        dead = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
        assert [d["incident_id"] for d in dead] == [record.incident_id]
        response = await client.post(f"/v1/deliveries/{dead[0]['delivery_id']}/replay")
        assert response.status_code == 200, response.text
        bodies = await receiver.wait_for(3)
        assert bodies[2].body == first.body
        assert bodies[2].headers["webhook-id"] == first.headers["webhook-id"]


async def test_a_review_decision_sends_the_place_words_of_the_version_decided_on(
    make_settings, services, receivers, publish, database_url, tmp_path
) -> None:
    await _load_city(database_url, tmp_path)
    await _add_sensors(database_url)
    service = await services(make_settings(review_deadline_s=60))
    receiver = await receivers()
    async with admin(service) as client:
        response = await client.post(
            "/v1/subscriptions",
            json={"name": "cad", "channel": "webhook", "url": receiver.url, "review": "required",
                  "geofence": square(-79.99, 40.44)},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        record = incident(*city.lat_lon(30, 5))
        await publish(record)

        async def queued() -> bool:
            return bool((await client.get("/v1/reviews")).json())

        await eventually(queued, what="the incident to wait for review")
        response = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "confirm", "reviewed_by": "ana", "reason": "heard it"},
        )
        assert response.status_code == 201, response.text
        (alert,) = await receiver.wait_for(1)
        data = orjson.loads(alert.body)["data"]
        assert (data["version"], data["review"]["status"]) == (2, "confirmed")
        assert data["place"]["text"] == "10 Main St, 21 m W · near Main St & 2nd Ave"
        stored = (await client.get(f"/v1/incidents/{record.incident_id}")).json()
        assert [v["place"] for v in stored["versions"]] == [data["place"]] * 2


async def test_without_layers_alerts_are_as_before(
    make_settings, services, receivers, publish, database_url
) -> None:
    await _add_sensors(database_url)  # sensors alone are no city layer
    settings = make_settings()
    service = await services(settings)
    receiver = await receivers()
    async with admin(service) as client:
        for fmt in ("json", "cap", "eido"):
            response = await client.post(
                "/v1/subscriptions",
                json={"name": fmt, "channel": "webhook", "url": receiver.url, "format": fmt,
                      "geofence": square(-79.99, 40.44)},
            )  # fmt: skip
            assert response.status_code == 201, response.text
        record = incident(*city.lat_lon(30, 5))
        await publish(record)
        received = await receiver.wait_for(3)
        # each body as rendered without places (CAP names its message by the webhook-id)
        for r in received:
            fmt = "cap" if b"<alert" in r.body else "eido" if b"eidoVersion" in r.body else "json"
            expected = formats.render(
                fmt,  # type: ignore[arg-type]
                record,
                "created",
                sender=settings.sender,
                message_id=r.headers["webhook-id"] if fmt == "cap" else None,
            )
            assert r.body == expected.body, fmt
        assert len({r.body for r in received}) == 3
        stored = (await client.get(f"/v1/incidents/{record.incident_id}")).json()
        assert stored["versions"][0]["place"] is None


async def test_a_layer_that_cannot_be_indexed_leaves_the_previous_index_answering(
    database_url: str, tmp_path: Path
) -> None:
    await _load_city(database_url, tmp_path)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    index = PlaceIndex()
    runner = asyncio.create_task(index.run(pool, database_url, interval_s=0.05))
    try:
        await eventually(_has_version(index), what="the first index")
        good = index.version
        failures = metrics.PLACES_REFRESHES.labels("failed")._value.get()
        # a hand-edited row that is no geometry, in a layer whose version moves
        await pool.execute("UPDATE geo_areas SET geometry = '\\x00'::bytea WHERE layer = 'beat'")
        await pool.execute(
            "UPDATE geo_layers SET version = nextval('geo_layer_version') WHERE layer = 'beat'"
        )

        async def failed() -> bool:
            return metrics.PLACES_REFRESHES.labels("failed")._value.get() > failures

        await eventually(failed, what="a failed refresh")
        assert not runner.done()  # the refresher lives on, and the old index answers
        assert index.version == good
        place = index.gazetteer.describe(*city.lat_lon(30, 5), "z1")
        assert place is not None and place.areas_text == "beat B"
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await pool.close()


def _has_version(index: PlaceIndex):
    async def check() -> bool:
        return index.version != ""

    return check


async def test_officers_phones_show_the_short_address_line(
    make_settings, services, publish, database_url, tmp_path
) -> None:
    await _load_city(database_url, tmp_path)
    with running(WebPushReceiver(), FcmReceiver()) as (push_service, fcm_service):
        settings = make_settings(
            vapid_private_key=generate_vapid_private_key(),
            vapid_subject="mailto:ops@shotline.test",
            fcm_service_account=orjson.dumps(fcm_service.service_account()).decode(),
            fcm_base_url=fcm_service.base_url,
        )
        service = await services(settings)
        browser = push_service.subscribe()
        phone = fcm_service.register_device()
        async with admin(service) as client:
            for target in ({"webpush": browser.as_json()}, {"fcm": {"token": phone.token}}):
                response = await client.post(
                    "/v1/subscriptions",
                    json={"name": "officer", "channel": "push", "push": target,
                          "geofence": square(-79.99, 40.44)},
                )  # fmt: skip
                assert response.status_code == 201, response.text
            await publish(incident(*city.lat_lon(30, 5)))
            await push_service.until(1)
            await fcm_service.until(1)
    line = "10 Main St, 21 m W · near Main St & 2nd Ave"
    pushed = push_service.received[0].json()  # decrypted with the browser's keys
    assert pushed["body"].startswith(f"{line} · zone z1 · shot at ")
    assert pushed["data"]["address"] == line
    notification = fcm_service.received[0].message
    assert notification["notification"]["body"].startswith(line)
    assert notification["data"]["address"] == line


async def test_csv_addresses_join_street_columns_and_skip_rows_without_street_or_position(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(
        "\ufeffNO,PRE,NAME,TYPE,X,Y\r\n"  # a byte-order mark and CRLF, as spreadsheets write
        '142," E ",Main,St,-79.99,40.44\r\n'
        "7,,Oak,Ave,-79.98,40.45\r\n"
        "9,,,,-79.98,40.45\r\n"  # no street: skipped
        "10,,Elm,St,,\r\n"  # no position: skipped
        "\r\n".encode()  # a trailing blank line
    )
    columns = geofiles.AddressColumns(number="NO", street=("PRE", "NAME", "TYPE"), lon="X", lat="Y")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        loaded = await geostore.replace_addresses_csv(pool, "a", path, columns, source="a.csv")
        assert (loaded.kept, loaded.skipped) == (2, 2)
        rows = await pool.fetch(
            "SELECT number, street, unit, city, postcode, lon, lat FROM geo_address_points "
            "ORDER BY number"
        )
        assert [tuple(r) for r in rows] == [
            ("142", "E Main St", "", "", "", -79.99, 40.44),
            ("7", "Oak Ave", "", "", "", -79.98, 40.45),
        ]
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,Main St,-79.99,91", "line 3: column 'lat' = 91.0 is outside [-90, 90]"),
        ("1,Main St,nan,40", "line 3: column 'lon' = nan is outside"),
        ("1,Main St,-79.99,north", "line 3: column 'lat' is not a number: 'north'"),
        ("1,Main St,-79.99", "not a CSV PostgreSQL can read: missing data for column"),
    ],
)
async def test_bad_csv_rows_name_the_line_and_keep_the_loaded_layer(
    database_url: str, tmp_path: Path, row: str, message: str
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(f"number,street,lon,lat\n2,Main St,-79.99,40.44\n{row}\n")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        good = tmp_path / "good.csv"
        good.write_text("number,street,lon,lat\n5,Oak St,-79.99,40.44\n")
        columns = geofiles.AddressColumns()
        await geostore.replace_addresses_csv(pool, "a", good, columns, source="good.csv")
        with pytest.raises(ValueError) as raised:
            await geostore.replace_addresses_csv(pool, "a", path, columns, source="a.csv")
        assert message in str(raised.value)
        assert await pool.fetchval("SELECT street FROM geo_address_points") == "Oak St"
    finally:
        await pool.close()


async def test_the_command_line_says_what_an_alert_would_say_at_a_point(
    database_url: str, tmp_path: Path
) -> None:
    code, _, err = await _cli(database_url, "places", "at", "--lat", "40.44", "--lon", "-79.99")
    assert code == 2 and "no area, address or street layer is loaded" in err
    await _load_city(database_url, tmp_path)
    await _add_sensors(database_url)
    lat, lon = city.lat_lon(30, 5)
    code, out, err = await _cli(
        database_url, "places", "at", "--lat", repr(lat), "--lon", repr(lon), "--zone", "z1"
    )
    assert code == 0, err
    assert out.splitlines()[0] == "10 Main St, 21 m W · near Main St & 2nd Ave"
    words = orjson.loads(out.split("\n", 1)[1])
    assert words["areas"] == [{"layer": "beat", "name": "B"}]
    assert words["outside_coverage"] is False


async def test_dispatch_starts_and_alerts_without_words_when_no_layer_can_be_indexed(
    make_settings, services, receivers, publish, database_url, tmp_path
) -> None:
    await _load_city(database_url, tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE geo_areas SET geometry = '\\x00'::bytea")
    finally:
        await conn.close()
    service = await services(make_settings())
    receiver = await receivers()
    async with admin(service) as client:
        response = await client.post(
            "/v1/subscriptions",
            json={"name": "cad", "channel": "webhook", "url": receiver.url,
                  "geofence": square(-79.99, 40.44)},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        await publish(incident(*city.lat_lon(30, 5)))
        (received,) = await receiver.wait_for(1)
    assert "place" not in orjson.loads(received.body)["data"]
