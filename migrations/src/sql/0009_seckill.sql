-- Flash sales (秒杀). Redis admits (quota, per-buyer limit, duplicates, token buckets); these
-- tables are what Postgres decided. Same isolation rules as 0001: tenant_id leads every key,
-- RLS forced, one tenant policy plus the owner's.

-- A quota of one SKU (from one warehouse's general stock) sold at a price in a time window on one
-- of the tenant's own channels. Immutable once created: Redis holds a warmed copy.
CREATE TABLE seckill_campaigns (
    tenant_id       uuid NOT NULL REFERENCES tenants(id),
    id              uuid NOT NULL,
    sku_id          uuid NOT NULL,
    warehouse_id    uuid NOT NULL,
    channel_id      uuid NOT NULL,
    quota           int NOT NULL CHECK (quota > 0),
    price_fen       bigint NOT NULL CHECK (price_fen >= 0),
    currency        text NOT NULL DEFAULT 'CNY',
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    per_buyer_limit int NOT NULL CHECK (per_buyer_limit > 0),
    payment_minutes int NOT NULL CHECK (payment_minutes BETWEEN 1 AND 1440),
    created_by      uuid,
    warmed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (ends_at > starts_at),
    FOREIGN KEY (tenant_id, sku_id) REFERENCES skus (tenant_id, id),
    FOREIGN KEY (tenant_id, warehouse_id) REFERENCES warehouses (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES sales_channels (tenant_id, id)
);
-- The worker's upkeep (re-warm, re-publish) looks across tenants for campaigns still running.
CREATE INDEX seckill_campaigns_ends ON seckill_campaigns (ends_at);

-- One row per admitted ticket, written by the order writer in the batch that decides it (the
-- primary key makes a redelivered ticket a no-op). Refusals at admission (sold out, limit,
-- rate limit) never reach Postgres.
CREATE TABLE seckill_tickets (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    campaign_id uuid NOT NULL,
    buyer_id    uuid NOT NULL,
    request_id  text NOT NULL,
    quantity    int NOT NULL CHECK (quantity > 0),
    -- QUEUED only inside the writer's transaction; WON carries its order; CANCELLED: the order
    -- was not paid in time and its units went back on sale.
    status      text NOT NULL CHECK (status IN ('QUEUED', 'WON', 'SOLD_OUT', 'LIMIT_EXCEEDED', 'CANCELLED')),
    order_id    uuid,
    admitted_at timestamptz NOT NULL,
    decided_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, buyer_id, request_id),
    CHECK (status <> 'WON' OR order_id IS NOT NULL),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES seckill_campaigns (tenant_id, id)
);
CREATE INDEX seckill_tickets_campaign ON seckill_tickets (tenant_id, campaign_id, status);
CREATE INDEX seckill_tickets_order ON seckill_tickets (tenant_id, order_id) WHERE order_id IS NOT NULL;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['seckill_campaigns','seckill_tickets'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
