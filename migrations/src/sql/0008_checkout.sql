-- Own-channel checkout and payments: idempotency keys, carts, per-tenant payment settings,
-- payments and their provider callbacks, refunds, and what a paid virtual order entitles to.

-- One row per (tenant, actor, scope, key): the first request's input hash and answer. A replay
-- with the same input gets the stored answer; other input under the same key is a CONFLICT.
-- `response` is NULL while the first request is still running. Kept 24 h (the sweeper deletes).
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants(id),
    actor_id      uuid NOT NULL,
    scope         text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, actor_id, scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

CREATE TABLE cart_lines (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    buyer_id    uuid NOT NULL,
    sku_id      uuid NOT NULL,
    quantity    int NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, buyer_id, sku_id),
    FOREIGN KEY (tenant_id, buyer_id) REFERENCES buyers (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, sku_id) REFERENCES skus (tenant_id, id)
);

-- Merchant credentials. Secrets (merchant private keys, the APIv3 key) are AES-GCM ciphertexts
-- under the tenant data key; ids, serials and platform public keys are not secret. Base URLs
-- are NULL for production endpoints and set only (outside prod) to point at the mocks.
CREATE TABLE payment_settings (
    tenant_id                   uuid NOT NULL REFERENCES tenants(id),
    notify_base_url             text,
    wechat_mchid                text,
    wechat_appid                text,
    wechat_serial_no            text,
    wechat_private_key_ct       bytea,
    wechat_apiv3_key_ct         bytea,
    wechat_platform_serial      text,
    wechat_platform_public_key  text,
    wechat_base_url             text,
    alipay_app_id               text,
    alipay_private_key_ct       bytea,
    alipay_public_key           text,
    alipay_gateway_url          text,
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id),
    CHECK ((wechat_mchid IS NULL) = (wechat_private_key_ct IS NULL)),
    CHECK ((alipay_app_id IS NULL) = (alipay_private_key_ct IS NULL))
);

-- One attempt to pay an order with a provider. out_trade_no is what the provider knows.
CREATE TABLE payments (
    tenant_id          uuid NOT NULL REFERENCES tenants(id),
    id                 uuid NOT NULL,
    order_id           uuid NOT NULL,
    buyer_id           uuid NOT NULL,
    provider           text NOT NULL CHECK (provider IN ('WECHAT_PAY', 'ALIPAY')),
    out_trade_no       text NOT NULL,
    amount_fen         bigint NOT NULL CHECK (amount_fen > 0),
    status             text NOT NULL DEFAULT 'CREATED' CHECK (status IN ('CREATED', 'PAID')),
    provider_trade_no  text,
    paid_at            timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, out_trade_no),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);
CREATE INDEX payments_order ON payments (tenant_id, order_id);

-- Provider callbacks already applied: WeChat Pay notification id / Alipay notify_id.
CREATE TABLE payment_notifications (
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    provider         text NOT NULL,
    notification_id  text NOT NULL,
    out_trade_no     text NOT NULL,
    kind             text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider, notification_id)
);

-- Money going back. PENDING until the provider accepted the request, then PROCESSING until its
-- notice (or answer) says SUCCEEDED / FAILED. `auto` = a payment that landed on a cancelled order.
CREATE TABLE refunds (
    tenant_id           uuid NOT NULL REFERENCES tenants(id),
    id                  uuid NOT NULL,
    payment_id          uuid NOT NULL,
    order_id            uuid NOT NULL,
    out_refund_no       text NOT NULL,
    amount_fen          bigint NOT NULL CHECK (amount_fen > 0),
    status              text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCEEDED', 'FAILED')),
    reason              text NOT NULL DEFAULT '',
    auto                boolean NOT NULL DEFAULT false,
    provider_refund_id  text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, out_refund_no),
    FOREIGN KEY (tenant_id, payment_id) REFERENCES payments (tenant_id, id)
);
CREATE INDEX refunds_payment ON refunds (tenant_id, payment_id);
CREATE INDEX refunds_pending ON refunds (created_at) WHERE status = 'PENDING';

-- What a paid virtual order line grants: course access or a membership. Once per line.
CREATE TABLE entitlements (
    tenant_id           uuid NOT NULL REFERENCES tenants(id),
    id                  uuid NOT NULL,
    buyer_id            uuid NOT NULL,
    order_id            uuid NOT NULL,
    order_line_id       uuid NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('COURSE', 'MEMBERSHIP')),
    course_id           text,
    membership_plan_id  uuid,
    starts_at           timestamptz NOT NULL DEFAULT now(),
    ends_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, order_line_id)
);
CREATE INDEX entitlements_buyer ON entitlements (tenant_id, buyer_id);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['idempotency_keys', 'cart_lines', 'payment_settings', 'payments',
                           'payment_notifications', 'refunds', 'entitlements'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
