-- Dispatch: incidents as received, subscriptions, the delivery outbox and its attempts,
-- and the dispatch centre's outcome feedback.

-- The current state of each incident (highest version seen) ...
CREATE TABLE dispatch_incidents (
    incident_id                 text PRIMARY KEY,
    version                     integer NOT NULL CHECK (version >= 1),
    event                       text NOT NULL,
    zone                        text NOT NULL,
    classification              text NOT NULL,
    gunfire_probability         double precision NOT NULL,
    lat                         double precision NOT NULL,
    lon                         double precision NOT NULL,
    shot_time                   timestamptz NOT NULL,
    first_detection_received_at timestamptz NOT NULL,
    record                      jsonb NOT NULL,
    first_consumed_at           timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dispatch_incidents_shot_time ON dispatch_incidents (shot_time DESC);

-- ... and every version exactly as it arrived (what was received, provably).
CREATE TABLE dispatch_incident_versions (
    incident_id     text NOT NULL REFERENCES dispatch_incidents (incident_id),
    version         integer NOT NULL CHECK (version >= 1),
    event           text NOT NULL,
    record          jsonb NOT NULL,
    kafka_partition integer,
    kafka_offset    bigint,
    consumed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, version)
);

CREATE TABLE dispatch_subscriptions (
    subscription_id     text PRIMARY KEY,
    name                text NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('webhook', 'push')),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason     text,
    geofence            jsonb NOT NULL,
    classes             text[] NOT NULL,
    min_probability     double precision NOT NULL CHECK (min_probability BETWEEN 0 AND 1),
    events              text[] NOT NULL,
    format              text NOT NULL CHECK (format IN ('json', 'cap', 'eido')),
    url                 text,
    push                jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (channel <> 'webhook' OR url IS NOT NULL),
    CHECK (channel <> 'push' OR push IS NOT NULL)
);

-- Signing secrets must be kept in clear (HMAC needs them). valid_until NULL = current one;
-- a rotated-out secret keeps signing until its valid_until.
CREATE TABLE dispatch_subscription_secrets (
    secret_id       bigserial PRIMARY KEY,
    subscription_id text NOT NULL REFERENCES dispatch_subscriptions (subscription_id),
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    valid_until     timestamptz
);
CREATE INDEX dispatch_subscription_secrets_sub ON dispatch_subscription_secrets (subscription_id);

-- The outbox: one row per (subscription, incident version), written in the transaction that
-- stores the version. Workers claim rows with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE dispatch_deliveries (
    delivery_id      bigserial PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES dispatch_subscriptions (subscription_id),
    incident_id      text NOT NULL,
    version          integer NOT NULL,
    event            text NOT NULL,
    channel          text NOT NULL,
    endpoint         text NOT NULL,
    webhook_id       text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    -- attempts made before the latest replay: the retry budget restarts at a replay, the
    -- attempt numbers (and the webhook-id) do not
    replay_base      integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    claim_token      text,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,  -- of the current retry budget (reset by a replay)
    delivered_at     timestamptz,
    replayed_at      timestamptz,
    UNIQUE (subscription_id, incident_id, version),
    FOREIGN KEY (incident_id, version)
        REFERENCES dispatch_incident_versions (incident_id, version)
);
CREATE INDEX dispatch_deliveries_due ON dispatch_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX dispatch_deliveries_incident ON dispatch_deliveries (incident_id, version);
CREATE INDEX dispatch_deliveries_status ON dispatch_deliveries (status, created_at);

CREATE TABLE dispatch_delivery_attempts (
    delivery_id  bigint NOT NULL REFERENCES dispatch_deliveries (delivery_id),
    attempt_no   integer NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    status_code  integer,
    error        text,
    duration_s   double precision NOT NULL,
    outcome      text NOT NULL,
    PRIMARY KEY (delivery_id, attempt_no)
);

-- Feedback from the dispatch centre; every POST is a new version, nothing is overwritten.
CREATE TABLE dispatch_incident_outcomes (
    incident_id     text NOT NULL REFERENCES dispatch_incidents (incident_id),
    outcome_version integer NOT NULL,
    units_dispatched integer NOT NULL CHECK (units_dispatched >= 0),
    arrival_time    timestamptz,
    evidence        text[] NOT NULL,
    call_911        boolean NOT NULL,
    disposition     text NOT NULL DEFAULT '',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, outcome_version)
);
