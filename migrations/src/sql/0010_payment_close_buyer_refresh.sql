-- Issue 5 follow-ups: provider trades closed when an unpaid order times out, payment rows a
-- refused provider call leaves behind, and rotating refresh tokens for storefront buyers.

-- CLOSED: the provider trade was closed (the order timed out unpaid). FAILED: the provider
-- refused to open the trade (not retryable); nothing exists there to pay or close.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('CREATED', 'PAID', 'CLOSED', 'FAILED'));

-- Closing the provider trade is a persisted retry state, not a call inside the deadline sweep:
-- the sweep marks the order's open payments PENDING in its own transaction, and the close
-- sweeper claims due rows (close_next_at doubles as its lease), calls the provider and backs
-- off on outages. DONE: closed or never opened there; FAILED: the provider refused for good
-- (e.g. paid just before the close: the payment notice then takes the refund path).
ALTER TABLE payments ADD COLUMN close_state text
    CHECK (close_state IN ('PENDING', 'DONE', 'FAILED'));
ALTER TABLE payments ADD COLUMN close_attempts int NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN close_next_at timestamptz;
ALTER TABLE payments ADD COLUMN close_error text;
CREATE INDEX payments_close_due ON payments (close_next_at) WHERE close_state = 'PENDING';

-- Buyer sessions, like staff refresh_tokens (a family is one login; reuse of a used token
-- revokes the family) but their own table, so neither kind of token can refresh the other.
CREATE TABLE buyer_refresh_tokens (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    buyer_id    uuid NOT NULL,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, buyer_id) REFERENCES buyers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX buyer_refresh_tokens_family ON buyer_refresh_tokens (tenant_id, family_id);

ALTER TABLE buyer_refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE buyer_refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON buyer_refresh_tokens
    USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id());
DO $$ BEGIN
  EXECUTE format('CREATE POLICY owner_all ON buyer_refresh_tokens TO %I USING (true) WITH CHECK (true)', current_user);
END $$;
