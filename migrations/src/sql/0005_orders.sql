-- Orders of every channel in one model, marketplace connections with their sync cursors, the
-- order timeline, and fulfilments (what ships together). Same isolation rules as 0001.

CREATE TABLE tenant_settings (
    tenant_id           uuid PRIMARY KEY REFERENCES tenants(id),
    merge_mode          text NOT NULL DEFAULT 'SUGGEST' CHECK (merge_mode IN ('OFF', 'SUGGEST', 'AUTO')),
    payment_minutes     int NOT NULL DEFAULT 15 CHECK (payment_minutes BETWEEN 1 AND 1440),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Pre-sale SKUs ship from a date; orders split by it.
ALTER TABLE skus ADD COLUMN presale_ships_on date;

CREATE TABLE channel_connections (
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    channel_id       uuid NOT NULL,
    credentials_ct   bytea NOT NULL,
    status           text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PAUSED', 'FAILING', 'AUTH_FAILED')),
    -- Everything modified before the cursor has been fetched and durably handed to the bus.
    sync_cursor      timestamptz NOT NULL,
    last_sync_at     timestamptz,
    last_success_at  timestamptz,
    last_error       text,
    last_error_at    timestamptz,
    orders_fetched   bigint NOT NULL DEFAULT 0,
    -- Lease: one syncer per connection across worker processes.
    lease_owner      uuid,
    lease_until      timestamptz,
    sync_requested   boolean NOT NULL DEFAULT false,
    -- Width of the next pull window: halved after a failed window, doubled after a good one.
    window_secs      int NOT NULL DEFAULT 1800 CHECK (window_secs BETWEEN 1 AND 1800),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel_id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES sales_channels (tenant_id, id)
);

CREATE TABLE fulfillments (
    tenant_id     uuid NOT NULL REFERENCES tenants(id),
    id            uuid NOT NULL,
    warehouse_id  uuid,
    -- Blind index of the normalized receiver (name + phone + address) or of the platform open id.
    receiver_key  bytea,
    kind          text NOT NULL CHECK (kind IN ('PHYSICAL', 'VIRTUAL')),
    ships_on      date,
    status        text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'SHIPPED', 'CANCELLED')),
    merged        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX fulfillments_open ON fulfillments (tenant_id, receiver_key, warehouse_id) WHERE status = 'OPEN';

CREATE TABLE orders (
    tenant_id            uuid NOT NULL REFERENCES tenants(id),
    id                   uuid NOT NULL,
    channel_id           uuid NOT NULL,
    channel_type         text NOT NULL,
    platform_order_id    text NOT NULL,
    status               text NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'PAID', 'PROCESSING', 'PARTIALLY_SHIPPED', 'SHIPPED', 'COMPLETED', 'CANCELLED')),
    platform_status      text NOT NULL DEFAULT '',
    platform_modified_at timestamptz NOT NULL,
    buyer_open_id        text,
    receiver_masked      jsonb NOT NULL DEFAULT '{}',
    receiver_ref         text NOT NULL DEFAULT '',
    receiver_ct          bytea,
    receiver_key         bytea,
    total_fen            bigint NOT NULL DEFAULT 0,
    post_fee_fen         bigint NOT NULL DEFAULT 0,
    currency             text NOT NULL DEFAULT 'CNY',
    campaign             text,
    placed_at            timestamptz NOT NULL,
    paid_at              timestamptz,
    -- Stock bookkeeping: what the engine holds for this order, and whether it must be settled.
    stock_state          text NOT NULL DEFAULT 'NONE' CHECK (stock_state IN ('NONE', 'RESERVED', 'CONFIRMED', 'RELEASED', 'SHORT')),
    stock_dirty          boolean NOT NULL DEFAULT false,
    reservation_id       uuid,
    needs_attention      text[] NOT NULL DEFAULT '{}',
    version              int NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, platform_order_id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES sales_channels (tenant_id, id)
);
CREATE INDEX orders_recent ON orders (tenant_id, placed_at DESC, id DESC);
CREATE INDEX orders_status ON orders (tenant_id, status, placed_at DESC);
CREATE INDEX orders_stock_dirty ON orders (tenant_id) WHERE stock_dirty;
CREATE INDEX orders_receiver ON orders (tenant_id, receiver_key) WHERE receiver_key IS NOT NULL;

CREATE TABLE order_lines (
    tenant_id         uuid NOT NULL REFERENCES tenants(id),
    order_id          uuid NOT NULL,
    id                uuid NOT NULL,
    line_no           int NOT NULL,
    platform_line_id  text NOT NULL,
    platform_item_id  text NOT NULL DEFAULT '',
    platform_sku_id   text NOT NULL DEFAULT '',
    outer_sku_code    text,
    sku_id            uuid,
    warehouse_id      uuid,
    title             text NOT NULL DEFAULT '',
    quantity          int NOT NULL CHECK (quantity > 0),
    unit_price_fen    bigint NOT NULL DEFAULT 0,
    paid_fen          bigint NOT NULL DEFAULT 0,
    after_sales       text NOT NULL DEFAULT 'NONE' CHECK (after_sales IN ('NONE', 'REFUND_REQUESTED', 'RETURNING', 'REFUNDED')),
    fulfillment_id    uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, order_id, platform_line_id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);
CREATE INDEX order_lines_order ON order_lines (tenant_id, order_id, line_no);
CREATE INDEX order_lines_fulfillment ON order_lines (tenant_id, fulfillment_id);
CREATE INDEX order_lines_unmapped ON order_lines (tenant_id) WHERE sku_id IS NULL;

-- The timeline: every status change, platform note, stock step, merge and split.
CREATE TABLE order_events (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    order_id    uuid NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    from_status text,
    to_status   text,
    detail      jsonb NOT NULL DEFAULT '{}',
    actor       text NOT NULL DEFAULT 'system',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX order_events_order ON order_events (tenant_id, order_id, at);

-- Which platform SKU is which of ours (besides the listing's platform ids and the outer code).
CREATE INDEX listings_platform_sku ON listings (tenant_id, channel_id, platform_sku_id) WHERE platform_sku_id IS NOT NULL;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenant_settings','channel_connections','fulfillments','orders','order_lines','order_events'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
