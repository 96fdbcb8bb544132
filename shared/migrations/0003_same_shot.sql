-- Incidents of other zones that reported the same shot (heard across a zone boundary):
-- filled by dispatch when it stores either one, both ways. Oversight counts shots, not
-- incidents, by these links; routing alerts a subscriber to only one of them.
ALTER TABLE dispatch_incidents ADD COLUMN same_shot_as text[] NOT NULL DEFAULT '{}';
