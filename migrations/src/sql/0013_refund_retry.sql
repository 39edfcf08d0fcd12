-- Refunds the provider did not take (an outage) are retried from a persisted state with back-off,
-- by a sweep beside the stock tick (never inside it): `next_at` is when the next attempt is due
-- and doubles as the claim lease; `attempts` counts the retries.
ALTER TABLE refunds ADD COLUMN attempts int NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN next_at timestamptz;
