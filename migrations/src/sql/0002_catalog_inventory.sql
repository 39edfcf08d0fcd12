-- Catalog, channels and the one stock pool. Same isolation rules as 0001: tenant_id leads every
-- key, RLS forced, one tenant policy plus the owner's.

CREATE TABLE membership_plans (
    tenant_id     uuid NOT NULL REFERENCES tenants(id),
    id            uuid NOT NULL,
    name          text NOT NULL,
    duration_days int  NOT NULL CHECK (duration_days > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE products (
    tenant_id          uuid NOT NULL REFERENCES tenants(id),
    id                 uuid NOT NULL,
    title              text NOT NULL,
    description        text NOT NULL DEFAULT '',
    kind               text NOT NULL CHECK (kind IN ('PHYSICAL', 'COURSE', 'ACTIVATION_CODE', 'MEMBERSHIP')),
    status             text NOT NULL DEFAULT 'DRAFT' CHECK (status IN ('DRAFT', 'ACTIVE', 'ARCHIVED')),
    tags               text[] NOT NULL DEFAULT '{}',
    course_id          text,
    membership_plan_id uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX products_title ON products (tenant_id, lower(title));

CREATE TABLE skus (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    id           uuid NOT NULL,
    product_id   uuid NOT NULL,
    code         text NOT NULL,
    name         text NOT NULL,
    options      jsonb NOT NULL DEFAULT '{}',
    weight_grams int CHECK (weight_grams IS NULL OR weight_grams >= 0),
    price_fen    bigint NOT NULL CHECK (price_fen >= 0),
    currency     text NOT NULL DEFAULT 'CNY',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, code),
    FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);
CREATE INDEX skus_product ON skus (tenant_id, product_id);

CREATE TABLE sales_channels (
    tenant_id  uuid NOT NULL REFERENCES tenants(id),
    id         uuid NOT NULL,
    type       text NOT NULL CHECK (type IN ('WECHAT_MINI', 'ALIPAY_MINI', 'H5', 'TAOBAO', 'DOUYIN', 'XIAOHONGSHU')),
    shop_id    text NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, type, shop_id)
);

CREATE TABLE listings (
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    sku_id           uuid NOT NULL,
    channel_id       uuid NOT NULL,
    price_fen        bigint NOT NULL CHECK (price_fen >= 0),
    compare_at_fen   bigint CHECK (compare_at_fen IS NULL OR compare_at_fen >= 0),
    currency         text NOT NULL DEFAULT 'CNY',
    listed           boolean NOT NULL DEFAULT true,
    platform_item_id text,
    platform_sku_id  text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sku_id, channel_id),
    FOREIGN KEY (tenant_id, sku_id) REFERENCES skus (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES sales_channels (tenant_id, id)
);

CREATE TABLE warehouses (
    tenant_id  uuid NOT NULL REFERENCES tenants(id),
    id         uuid NOT NULL,
    code       text NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, code)
);

-- One row per SKU and warehouse. available = on_hand - reserved - held, never negative: the
-- CHECK is the last fence behind the guarded UPDATEs.
CREATE TABLE inventory_levels (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    sku_id       uuid NOT NULL,
    warehouse_id uuid NOT NULL,
    on_hand      int NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved     int NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    held         int NOT NULL DEFAULT 0 CHECK (held >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sku_id, warehouse_id),
    CHECK (on_hand - reserved - held >= 0),
    FOREIGN KEY (tenant_id, sku_id) REFERENCES skus (tenant_id, id),
    FOREIGN KEY (tenant_id, warehouse_id) REFERENCES warehouses (tenant_id, id)
);

-- Append-only: the app role may insert and read, never change or delete.
CREATE TABLE inventory_ledger (
    tenant_id      uuid NOT NULL REFERENCES tenants(id),
    id             uuid NOT NULL,
    sku_id         uuid NOT NULL,
    warehouse_id   uuid NOT NULL,
    kind           text NOT NULL,
    delta_on_hand  int NOT NULL DEFAULT 0,
    delta_reserved int NOT NULL DEFAULT 0,
    delta_held     int NOT NULL DEFAULT 0,
    reason         text,
    owner_kind     text,
    owner_id       text,
    actor_id       uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX inventory_ledger_sku ON inventory_ledger (tenant_id, sku_id, id);

CREATE TABLE stock_holds (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    id           uuid NOT NULL,
    sku_id       uuid NOT NULL,
    warehouse_id uuid NOT NULL,
    campaign     text NOT NULL,
    quantity     int NOT NULL CHECK (quantity > 0),
    remaining    int NOT NULL CHECK (remaining >= 0),
    status       text NOT NULL CHECK (status IN ('ACTIVE', 'RELEASED', 'EXPIRED')),
    expires_at   timestamptz NOT NULL,
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX stock_holds_active ON stock_holds (expires_at) WHERE status = 'ACTIVE';
CREATE INDEX stock_holds_campaign ON stock_holds (tenant_id, sku_id, warehouse_id, campaign) WHERE status = 'ACTIVE';

CREATE TABLE reservations (
    tenant_id  uuid NOT NULL REFERENCES tenants(id),
    id         uuid NOT NULL,
    owner_kind text NOT NULL,
    owner_id   text NOT NULL,
    campaign   text,
    status     text NOT NULL CHECK (status IN ('ACTIVE', 'CONFIRMED', 'RELEASED', 'EXPIRED')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, owner_kind, owner_id)
);
CREATE INDEX reservations_active ON reservations (expires_at) WHERE status = 'ACTIVE';

CREATE TABLE reservation_lines (
    tenant_id      uuid NOT NULL REFERENCES tenants(id),
    reservation_id uuid NOT NULL,
    line_no        int NOT NULL,
    sku_id         uuid NOT NULL,
    warehouse_id   uuid NOT NULL,
    quantity       int NOT NULL CHECK (quantity > 0),
    hold_id        uuid,
    PRIMARY KEY (tenant_id, reservation_id, line_no)
);

-- Activation codes: the pool is the stock; a sold code is never issued again.
CREATE TABLE activation_codes (
    tenant_id      uuid NOT NULL REFERENCES tenants(id),
    id             uuid NOT NULL,
    sku_id         uuid NOT NULL,
    code           text NOT NULL,
    status         text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'ISSUED')),
    reservation_id uuid,
    issued_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, sku_id, code),
    UNIQUE (tenant_id, reservation_id, id)
);
CREATE INDEX activation_codes_available ON activation_codes (tenant_id, sku_id) WHERE status = 'AVAILABLE';

-- SKUs whose availability changed and whose `inventory.available_changed` event is due: one row
-- per SKU however many changes, drained by the worker (the debounce).
CREATE TABLE inventory_dirty (
    tenant_id  uuid NOT NULL REFERENCES tenants(id),
    sku_id     uuid NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sku_id)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['membership_plans','products','skus','sales_channels','listings','warehouses',
                           'inventory_levels','inventory_ledger','stock_holds','reservations',
                           'reservation_lines','activation_codes','inventory_dirty'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
