-- Media library. The bytes live in the object store under `<tenant>/<uuid>` keys chosen by the
-- server (never a client's file name); these rows are the index. Same isolation rules as 0001:
-- tenant_id leads every key, RLS forced, one tenant policy plus the owner's.

CREATE TABLE media_assets (
    tenant_id              uuid NOT NULL REFERENCES tenants(id),
    id                     uuid NOT NULL,
    kind                   text NOT NULL CHECK (kind IN ('IMAGE', 'VIDEO')),
    -- Sniffed from the file's magic bytes, not taken from the client.
    content_type           text NOT NULL,
    byte_size              bigint NOT NULL CHECK (byte_size > 0),
    -- Images only (after EXIF orientation); videos are stored as is, without probing.
    width                  int CHECK (width > 0),
    height                 int CHECK (height > 0),
    alt                    text,
    storage_key            text NOT NULL,
    thumbnail_key          text,
    thumbnail_content_type text,
    sha256                 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_by             uuid,
    created_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((thumbnail_key IS NULL) = (thumbnail_content_type IS NULL))
);

-- A product's gallery, in order. Replaced as a whole by productMediaSet.
CREATE TABLE product_media (
    tenant_id  uuid NOT NULL REFERENCES tenants(id),
    product_id uuid NOT NULL,
    media_id   uuid NOT NULL,
    position   int NOT NULL CHECK (position >= 0),
    PRIMARY KEY (tenant_id, product_id, media_id),
    UNIQUE (tenant_id, product_id, position),
    FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, media_id) REFERENCES media_assets (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX product_media_media ON product_media (tenant_id, media_id);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['media_assets','product_media'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id())', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
