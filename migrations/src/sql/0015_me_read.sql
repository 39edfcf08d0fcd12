-- The `me` read (every client start-up) in ONE prepared round trip. tenant_read sends the
-- tenant scope and its query as one simple-protocol message, which Postgres parses and plans
-- again on every call; a prepared statement cannot carry the scope in front of its query. This
-- function sets the same transaction-local scope and role first (SECURITY INVOKER: its query
-- then runs as the app role under the forced RLS policies, exactly like tenant_read's), so the
-- gateway can call it as a cached prepared statement and plpgsql keeps the query's plan.
-- Only the owner (the gateway's connecting role) may call it. `{APP_ROLE}` is replaced by
-- crate::APP_ROLE when the migration runs.
CREATE FUNCTION uphub_me(p_tenant uuid, p_user uuid)
RETURNS TABLE (
    email_cipher bytea, roles text[], status text,
    id uuid, slug text, name text, tstatus text, created_at timestamptz,
    wrapped_dek bytea
)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('app.tenant_id', p_tenant::text, true), set_config('role', '{APP_ROLE}', true);
  RETURN QUERY
    SELECT u.email_cipher, u.roles, u.status, t.id, t.slug, t.name, t.status, t.created_at,
           k.wrapped_dek
      FROM staff_users u
      JOIN tenants t ON t.id = u.tenant_id
      JOIN tenant_keys k ON k.tenant_id = u.tenant_id
     WHERE u.tenant_id = p_tenant AND u.id = p_user;
END $$;

REVOKE ALL ON FUNCTION uphub_me(uuid, uuid) FROM PUBLIC;
