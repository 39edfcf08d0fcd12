-- A version per tenant for everything a products page shows: products, their SKUs, listings
-- and sales channels. Statement-level triggers bump it in the same transaction as the write,
-- so no write path can forget it. Gateways cache pages with the version they were read at and
-- compare it on every read (services/src/catalog_cache.rs): a cached page is served only while
-- no catalog write has committed since it was read.
CREATE TABLE catalog_versions (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    version   bigint NOT NULL
);

DO $$
BEGIN
  ALTER TABLE catalog_versions ENABLE ROW LEVEL SECURITY;
  ALTER TABLE catalog_versions FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON catalog_versions
    USING (tenant_id = uphub_tenant_id()) WITH CHECK (tenant_id = uphub_tenant_id());
  EXECUTE format('CREATE POLICY owner_all ON catalog_versions TO %I USING (true) WITH CHECK (true)', current_user);
END $$;

-- One bump per tenant touched by the statement (a statement may carry rows of several tenants
-- only when run by the owner, e.g. a migration).
CREATE FUNCTION uphub_bump_catalog_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO catalog_versions (tenant_id, version)
      SELECT DISTINCT tenant_id, 1 FROM old_rows
      ON CONFLICT (tenant_id) DO UPDATE SET version = catalog_versions.version + 1;
  ELSE
    INSERT INTO catalog_versions (tenant_id, version)
      SELECT DISTINCT tenant_id, 1 FROM new_rows
      ON CONFLICT (tenant_id) DO UPDATE SET version = catalog_versions.version + 1;
  END IF;
  RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['products','skus','listings','sales_channels'] LOOP
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION uphub_bump_catalog_version()', t || '_catalog_version_ins', t);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION uphub_bump_catalog_version()', t || '_catalog_version_upd', t);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION uphub_bump_catalog_version()', t || '_catalog_version_del', t);
  END LOOP;
END $$;
