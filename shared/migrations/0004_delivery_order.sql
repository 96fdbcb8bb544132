-- Delivery order and render-once bodies.
--
-- * 'superseded': a pending row made stale by a newer version of its incident to the same
--   subscriber (collapsed into the newest), a version older than one already sent, anything
--   after a cancel, or a rendered row whose subscription changed format or URL (it is
--   re-planned as a new row of the next generation: a webhook-id names one body only).
-- * generation: 0 for the row a version is planned as; n+1 for the row that replaces a
--   rendered generation-n row after a subscription change (its own webhook-id).
-- * body ... rendered_at: the request body exactly as first sent (every retry and replay of
--   the webhook-id sends these bytes), the format and URL it was rendered for, and the CAP
--   reference (sender,identifier,sent) of the message, for later Updates and Cancels.
ALTER TABLE dispatch_deliveries DROP CONSTRAINT dispatch_deliveries_status_check;
ALTER TABLE dispatch_deliveries ADD CONSTRAINT dispatch_deliveries_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'dead', 'superseded'));
ALTER TABLE dispatch_deliveries
    ADD COLUMN generation      integer NOT NULL DEFAULT 0,
    ADD COLUMN body            bytea,
    ADD COLUMN content_type    text,
    ADD COLUMN rendered_format text,
    ADD COLUMN rendered_url    text,
    ADD COLUMN message_ref     text,
    ADD COLUMN rendered_at     timestamptz;
ALTER TABLE dispatch_deliveries
    DROP CONSTRAINT dispatch_deliveries_subscription_id_incident_id_version_key;
ALTER TABLE dispatch_deliveries
    ADD CONSTRAINT dispatch_deliveries_pair_version_generation
    UNIQUE (subscription_id, incident_id, version, generation);
-- Claims walk the due rows in (next_attempt_at, delivery_id) order and stop at their limit
-- (the pair checks probe the unique index above for each row they look at).
DROP INDEX dispatch_deliveries_due;
CREATE INDEX dispatch_deliveries_due ON dispatch_deliveries (next_attempt_at, delivery_id)
    WHERE status = 'pending';
