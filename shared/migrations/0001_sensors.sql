-- The sensor registry. Tokens are stored only as SHA-256 hashes (they are 256-bit random
-- secrets, so a fast hash is enough: there is nothing to brute-force).
CREATE TABLE sensors (
    sensor_id    text PRIMARY KEY,
    zone         text NOT NULL,
    lat          double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon          double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    alt_m        double precision NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    token_hash   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX sensors_zone ON sensors (zone);
CREATE UNIQUE INDEX sensors_token_hash ON sensors (token_hash);
