-- Buyer identity on the creator's own channels: per-tenant platform credentials for buyer login,
-- and buyers' delivery addresses.

-- One row per tenant. Secrets (WeChat app secret, Alipay app private key, SMS key secret) are
-- AES-GCM ciphertexts under the tenant data key; appids and public keys are not secret. Base
-- URLs are NULL for the platforms' production endpoints and set only to point at mocks.
CREATE TABLE buyer_channel_settings (
    tenant_id              uuid NOT NULL REFERENCES tenants(id),
    wechat_appid           text,
    wechat_secret_ct       bytea,
    wechat_base_url        text,
    alipay_app_id          text,
    alipay_private_key_ct  bytea,
    alipay_public_key      text,
    alipay_gateway_url     text,
    sms_base_url           text,
    sms_access_key_id      text,
    sms_secret_ct          bytea,
    sms_sign_name          text,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id),
    CHECK ((wechat_appid IS NULL) = (wechat_secret_ct IS NULL)),
    CHECK ((alipay_app_id IS NULL) = (alipay_private_key_ct IS NULL)),
    CHECK ((sms_access_key_id IS NULL) = (sms_secret_ct IS NULL))
);

-- A buyer's delivery addresses. Receiver name, phone and the street line are ciphertexts bound
-- to the row (AAD names table, column and id); the masked copies are what staff screens show.
-- Province/city/district stay clear: the masked address shows them anyway and shipping needs them.
CREATE TABLE buyer_addresses (
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    id               uuid NOT NULL,
    buyer_id         uuid NOT NULL,
    name_ct          bytea NOT NULL,
    phone_ct         bytea NOT NULL,
    detail_ct        bytea NOT NULL,
    name_masked      text NOT NULL,
    phone_masked     text NOT NULL,
    province         text NOT NULL,
    city             text NOT NULL,
    district         text NOT NULL,
    detail_masked    text NOT NULL,
    is_default       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, buyer_id) REFERENCES buyers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX buyer_addresses_buyer ON buyer_addresses (tenant_id, buyer_id, created_at);
-- At most one default address per buyer.
CREATE UNIQUE INDEX buyer_addresses_default ON buyer_addresses (tenant_id, buyer_id) WHERE is_default;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['buyer_channel_settings', 'buyer_addresses'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
