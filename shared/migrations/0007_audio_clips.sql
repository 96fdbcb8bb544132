-- A detection's audio clip (the impulse with at most 1 s either side), uploaded by its sensor
-- after ingest accepted the detection. Deleted after the retention unless an incident holds
-- it (held_by: the incident ids whose alerts link it). No continuous audio is ever stored.
CREATE TABLE audio_clips (
    sensor_id    text        NOT NULL,
    detection_id text        NOT NULL,
    sha256       text        NOT NULL,
    wav          bytea       NOT NULL,
    sample_rate  integer     NOT NULL,
    duration_s   real        NOT NULL,
    received_at  timestamptz NOT NULL,
    held_by      text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (sensor_id, detection_id)
);
CREATE INDEX audio_clips_unheld_by_age ON audio_clips (received_at) WHERE held_by = '{}';
