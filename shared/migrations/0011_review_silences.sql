-- Human review per subscription, the reviewer's queue, silences and their audit trail.

ALTER TABLE dispatch_subscriptions
    ADD COLUMN review text NOT NULL DEFAULT 'none' CHECK (review IN ('none', 'required'));

-- One row per incident that a review-required subscription waits for. The decisions
-- themselves are incident versions (dispatch_incident_versions.record->'review').
CREATE TABLE dispatch_review_queue (
    incident_id  text PRIMARY KEY REFERENCES dispatch_incidents (incident_id),
    queued_at    timestamptz NOT NULL,
    deadline_at  timestamptz NOT NULL,
    decided_at   timestamptz,
    decision     text,            -- confirmed, reclassified, rejected, unreviewed
    reviewed_by  text,
    late         boolean NOT NULL DEFAULT false
);
CREATE INDEX dispatch_review_queue_open ON dispatch_review_queue (deadline_at)
    WHERE decided_at IS NULL;

CREATE TABLE dispatch_silences (
    silence_id           text PRIMARY KEY,
    area                 jsonb NOT NULL,
    starts_at            timestamptz NOT NULL,
    ends_at              timestamptz NOT NULL CHECK (ends_at > starts_at),
    classes              text[],           -- NULL: every class
    include_high_gunfire boolean NOT NULL DEFAULT false,
    author               text NOT NULL,
    reason               text NOT NULL,
    expired_at           timestamptz,
    -- when this silence's end was last acted on (held incidents released)
    released_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Every create / change / expire, with who and why and the silence as it became.
CREATE TABLE dispatch_silence_events (
    event_id    bigserial PRIMARY KEY,
    silence_id  text NOT NULL REFERENCES dispatch_silences (silence_id),
    action      text NOT NULL CHECK (action IN ('created', 'changed', 'expired')),
    actor       text NOT NULL,
    reason      text NOT NULL,
    snapshot    jsonb NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Incidents whose delivery a silence holds (released when no silence holds them any more).
CREATE TABLE dispatch_silence_holds (
    incident_id  text NOT NULL REFERENCES dispatch_incidents (incident_id),
    silence_id   text NOT NULL REFERENCES dispatch_silences (silence_id),
    held_at      timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    outcome      text,           -- delivered, cancelled, stale
    PRIMARY KEY (incident_id, silence_id)
);
CREATE INDEX dispatch_silence_holds_open ON dispatch_silence_holds (silence_id)
    WHERE released_at IS NULL;

-- The console's live feed reads versions in the order they were stored (a cursor that a
-- reconnecting browser hands back as Last-Event-ID).
ALTER TABLE dispatch_incident_versions ADD COLUMN feed_seq bigserial;
CREATE INDEX dispatch_incident_versions_feed ON dispatch_incident_versions (feed_seq);
CREATE INDEX dispatch_incident_versions_consumed ON dispatch_incident_versions (consumed_at);
