-- `GET /admin/users?q` (SPEC §15): an index for the name search, so a rare term is an index
-- lookup instead of a walk over every member (docs/back-office.md).
--
-- A trigram GIN index on `users.name_folded` (pg_trgm): it answers `name_folded LIKE '%term%'`
-- for a term of three or more characters. PostgreSQL keeps it in step inside the transaction
-- that writes the member. pg_trgm is a trusted extension (PostgreSQL 13+): the role running the
-- migrations needs CREATE on the database, or a superuser creates the extension beforehand.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- `fastupdate = off`: a new member's trigrams go straight into the index instead of the
-- pending list, which every search would read through until a vacuum merges it (and which
-- the planner prices high enough to prefer a sequential scan).
--
-- The operator class is named with the schema the extension lives in, which need not be on the
-- search path (an extension installed earlier into another schema).
DO $$
DECLARE
    ext_schema TEXT;
BEGIN
    SELECT n.nspname INTO STRICT ext_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX users_name_trgm ON users USING gin (name_folded %I.gin_trgm_ops) '
        'WITH (fastupdate = off)',
        ext_schema);
END
$$;
