-- The city's own layers for offline reverse geocoding ("where is it, in a dispatcher's
-- words"), loaded by `shotline areas|addresses|streets load`. Geometries are WKB in WGS84
-- lon/lat (GeoJSON's axis order); the dispatch service reads the tables into an in-memory
-- spatial index and rebuilds it when a layer's version changes.

-- One row per loaded layer. A load replaces the layer's features and bumps `version` in one
-- transaction, so readers see the old layer or the new one, never half of either.
CREATE SEQUENCE geo_layer_version;
CREATE TABLE geo_layers (
    kind       text NOT NULL CHECK (kind IN ('area', 'address', 'street')),
    layer      text NOT NULL,
    version    bigint NOT NULL DEFAULT nextval('geo_layer_version'),
    features   integer NOT NULL CHECK (features >= 0),
    source     text NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, layer)
);

-- Areas: districts, beats, sectors, neighbourhoods... (also the oversight report's areas).
CREATE TABLE geo_areas (
    layer      text NOT NULL,
    name       text NOT NULL,
    geometry   bytea NOT NULL,                 -- WKB Polygon / MultiPolygon
    attributes jsonb NOT NULL DEFAULT '{}',    -- the feature's other properties (population...)
    PRIMARY KEY (layer, name)
);

CREATE TABLE geo_address_points (
    layer    text NOT NULL,
    number   text NOT NULL,
    street   text NOT NULL,
    unit     text NOT NULL DEFAULT '',
    city     text NOT NULL DEFAULT '',
    postcode text NOT NULL DEFAULT '',
    lon      double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat      double precision NOT NULL CHECK (lat BETWEEN -90 AND 90)
);
CREATE INDEX geo_address_points_layer ON geo_address_points (layer);

-- Street centrelines (for the nearest intersection's two street names).
CREATE TABLE geo_streets (
    layer    text NOT NULL,
    name     text NOT NULL,
    geometry bytea NOT NULL                    -- WKB LineString / MultiLineString
);
CREATE INDEX geo_streets_layer ON geo_streets (layer);

-- The place words of each incident version, computed once when the version is stored and
-- rendered from here on every attempt and replay (NULL: no layer was loaded).
ALTER TABLE dispatch_incident_versions ADD COLUMN place jsonb;
