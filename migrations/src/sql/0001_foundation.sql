-- Foundation: tenants, identity, audit, outbox. Every tenant table has tenant_id leading its
-- primary key, RLS ENABLED and FORCED, and one policy on the transaction-local app.tenant_id.

-- The tenant the current transaction works for; NULL (no rows visible) when unset.
CREATE OR REPLACE FUNCTION uphub_tenant_id() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'ACTIVE',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Wrapped per-tenant data key for PII (AES-256-GCM under the master key).
CREATE TABLE tenant_keys (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants(id),
    wrapped_dek bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE staff_users (
    tenant_id          uuid NOT NULL REFERENCES tenants(id),
    id                 uuid NOT NULL,
    email_cipher       bytea NOT NULL,
    email_bidx         bytea NOT NULL,
    email_masked       text NOT NULL,
    phone_cipher       bytea,
    phone_masked       text,
    password_hash      text,
    roles              text[] NOT NULL,
    status             text NOT NULL CHECK (status IN ('INVITED', 'ACTIVE', 'DEACTIVATED')),
    invite_token_hash  bytea,
    invited_by         uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email_bidx)
);

-- Rotating refresh tokens: a family is one login; reuse of a used token revokes the family.
CREATE TABLE refresh_tokens (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    user_id     uuid NOT NULL,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash)
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (tenant_id, family_id);

CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    id           uuid NOT NULL,
    name         text NOT NULL,
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE audit_events (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    actor_kind  text NOT NULL,
    actor_id    uuid,
    action      text NOT NULL,
    target      text,
    detail      jsonb NOT NULL DEFAULT '{}',
    ip          text,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Transactional outbox: written in the same transaction as the change it announces.
CREATE TABLE outbox (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    id           uuid NOT NULL,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     int NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- A consumer's record that it applied an event; written in the handler's own transaction.
CREATE TABLE processed_events (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, consumer, event_id)
);

-- Messages a consumer gave up on after its retries; listed and replayed by an operator.
CREATE TABLE dead_letters (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    consumer    text NOT NULL,
    event_id    uuid NOT NULL,
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    error       text NOT NULL,
    attempts    int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- Row-level security. The app role sees only the current tenant's rows; the owner (migrations,
-- outbox relay, tenant signup) keeps a policy of its own so FORCE does not lock it out.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenant_keys','staff_users','refresh_tokens','api_keys','audit_events',
                           'outbox','processed_events','dead_letters'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (id = uphub_tenant_id()) WITH CHECK (id = uphub_tenant_id());
DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON tenants TO %I USING (true) WITH CHECK (true)', current_user); END $$;
