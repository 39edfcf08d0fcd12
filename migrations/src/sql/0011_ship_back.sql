-- Issue 4 follow-ups: the operator ships a fulfilment (carrier + tracking number) and every
-- marketplace order in it is reported shipped to its platform; a line refunded before shipping
-- gives its reserved units back on its own.

ALTER TABLE fulfillments ADD COLUMN carrier text;
ALTER TABLE fulfillments ADD COLUMN tracking_no text;
ALTER TABLE fulfillments ADD COLUMN shipped_at timestamptz;

-- One row per (fulfilment, marketplace order): the platform call that reports the parcel, as a
-- persisted retry state. The sweeper claims due rows (next_at doubles as its lease), calls the
-- platform and backs off on outages and throttling. DONE: the platform has it shipped;
-- FAILED: the platform refused for good (the order is flagged SHIP_BACK_FAILED).
CREATE TABLE ship_backs (
    tenant_id          uuid NOT NULL REFERENCES tenants(id),
    id                 uuid NOT NULL,
    fulfillment_id     uuid NOT NULL,
    order_id           uuid NOT NULL,
    channel_id         uuid NOT NULL,
    platform_order_id  text NOT NULL,
    -- Platform line ids when only some lines of the order are in the parcel; empty: all.
    platform_line_ids  text[] NOT NULL DEFAULT '{}',
    carrier            text NOT NULL,
    tracking_no        text NOT NULL,
    state              text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DONE', 'FAILED')),
    attempts           int NOT NULL DEFAULT 0,
    next_at            timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, fulfillment_id, order_id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);
CREATE INDEX ship_backs_due ON ship_backs (next_at) WHERE state = 'PENDING';
CREATE INDEX ship_backs_order ON ship_backs (tenant_id, order_id);

ALTER TABLE ship_backs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ship_backs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ship_backs
    USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id());
DO $$ BEGIN
  EXECUTE format('CREATE POLICY owner_all ON ship_backs TO %I USING (true) WITH CHECK (true)', current_user);
END $$;

-- Partial release: the order lines whose units went back to the pool on their own (refunded
-- before shipping), and on the reservation the parts (order line ids) already given back, so a
-- repeated release is a no-op.
ALTER TABLE order_lines ADD COLUMN stock_released boolean NOT NULL DEFAULT false;
ALTER TABLE reservations ADD COLUMN released_parts uuid[] NOT NULL DEFAULT '{}';
