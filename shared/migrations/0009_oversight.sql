-- Oversight: CAD linkage on outcomes, 911 calls, verified shootings, per-user API tokens,
-- the hash-chained audit log and the record of retention runs. Areas are i29's `areas`.

-- What a dispatch centre writes back per incident (API or CAD import), still one row per
-- outcome version. `finding` is confirmed / unconfirmed / unfounded (the NYC Comptroller's
-- split); `source` says whether the API or an import wrote it and `import_key` makes a
-- re-imported CAD row a no-op.
ALTER TABLE dispatch_incident_outcomes
    ADD COLUMN cad_event_number text,
    ADD COLUMN entry_time      timestamptz,
    ADD COLUMN dispatch_time   timestamptz,
    ADD COLUMN on_scene_time   timestamptz,
    ADD COLUMN clear_time      timestamptz,
    ADD COLUMN units           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN initial_priority text,
    ADD COLUMN final_priority  text,
    ADD COLUMN final_call_type text,
    ADD COLUMN finding         text CHECK (finding IN ('confirmed', 'unconfirmed', 'unfounded')),
    ADD COLUMN report_taken    boolean NOT NULL DEFAULT false,
    ADD COLUMN source          text NOT NULL DEFAULT 'api',
    ADD COLUMN import_key      text;
CREATE INDEX dispatch_incident_outcomes_import ON dispatch_incident_outcomes (import_key)
    WHERE import_key IS NOT NULL;

-- "Shots fired" calls for service, as the 911 centre exported them.
CREATE TABLE oversight_calls (
    call_id     text PRIMARY KEY,
    received_at timestamptz NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    call_type   text NOT NULL,
    coarse      boolean NOT NULL DEFAULT false,  -- exact position dropped by retention
    imported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oversight_calls_received ON oversight_calls (received_at);

-- Incidents known to be gunfire (RMS, a live-fire test, a medical examiner), with position.
CREATE TABLE oversight_shootings (
    shooting_id text PRIMARY KEY,
    shot_time   timestamptz NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    source      text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oversight_shootings_time ON oversight_shootings (shot_time);

-- Per-user API tokens (SHA-256 of a 256-bit random secret, shown once).
CREATE TABLE api_tokens (
    token_id     text PRIMARY KEY,
    user_name    text NOT NULL,
    role         text NOT NULL
                 CHECK (role IN ('admin', 'dispatcher', 'reviewer', 'analyst', 'auditor')),
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Append-only, hash-chained: hash = SHA-256(prev_hash || canonical row). seq has no gaps
-- (assigned under a lock, not by a sequence), so a deleted row shows as a gap.
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY,
    at        text NOT NULL,          -- RFC 3339, as hashed
    actor     text NOT NULL,
    role      text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    detail    text NOT NULL,          -- canonical JSON, as hashed
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, at);

-- Each retention run and what it removed (the counts outlive the rows).
CREATE TABLE retention_runs (
    run_id               bigserial PRIMARY KEY,
    ran_at               timestamptz NOT NULL,
    cutoff               timestamptz NOT NULL,
    incidents_coarsened  integer NOT NULL,
    versions_redacted    integer NOT NULL,
    detections_deleted   integer NOT NULL,
    attempts_deleted     integer NOT NULL,
    calls_coarsened      integer NOT NULL
);

-- When an incident's exact location and detections were removed by retention.
ALTER TABLE dispatch_incidents ADD COLUMN purged_at timestamptz;
