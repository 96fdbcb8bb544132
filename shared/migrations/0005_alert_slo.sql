-- The shot-to-alert SLO counts each alert once: when it is acknowledged within the SLO
-- (good), or as soon as it is older than the SLO without having been acknowledged (bad; a
-- receiver that is down is a breach while it lasts, not silence). slo_breached_at marks a
-- row already counted bad, so that several dispatch instances, a restart or the late
-- acknowledgement itself never count it twice.
ALTER TABLE dispatch_deliveries ADD COLUMN slo_breached_at timestamptz;
CREATE INDEX dispatch_deliveries_slo_open ON dispatch_deliveries (created_at)
    WHERE slo_breached_at IS NULL AND status IN ('pending', 'failed', 'dead');
-- Rows already undelivered when this ships were breaches before the SLI existed: mark them
-- (uncounted) so that an upgrade does not report the whole history as one burst of bad
-- events; the oldest-undelivered gauge still shows them until they are replayed.
UPDATE dispatch_deliveries SET slo_breached_at = now() WHERE status <> 'delivered';
