-- Storefront buyers (fans) of a tenant: one identity across the tenant's own channels.
CREATE TABLE buyers (
    tenant_id      uuid NOT NULL REFERENCES tenants(id),
    id             uuid NOT NULL,
    wechat_openid  text,
    wechat_unionid text,
    alipay_user_id text,
    -- Phone: AES-GCM ciphertext under the tenant key, HMAC blind index for lookups, mask to show.
    phone_ct       bytea,
    phone_index    bytea,
    phone_masked   text,
    nickname       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX buyers_wechat ON buyers (tenant_id, wechat_openid) WHERE wechat_openid IS NOT NULL;
CREATE UNIQUE INDEX buyers_alipay ON buyers (tenant_id, alipay_user_id) WHERE alipay_user_id IS NOT NULL;
CREATE UNIQUE INDEX buyers_phone ON buyers (tenant_id, phone_index) WHERE phone_index IS NOT NULL;

-- Own-channel orders belong to a buyer and must be paid by a deadline.
ALTER TABLE orders ADD COLUMN buyer_id uuid;
ALTER TABLE orders ADD COLUMN payment_due_at timestamptz;
CREATE INDEX orders_payment_due ON orders (payment_due_at) WHERE status = 'PENDING_PAYMENT' AND payment_due_at IS NOT NULL;
CREATE INDEX orders_buyer ON orders (tenant_id, buyer_id, id DESC) WHERE buyer_id IS NOT NULL;

DO $$
BEGIN
  ALTER TABLE buyers ENABLE ROW LEVEL SECURITY;
  ALTER TABLE buyers FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON buyers USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id());
  EXECUTE format('CREATE POLICY owner_all ON buyers TO %I USING (true) WITH CHECK (true)', current_user);
END $$;
