-- The read-only role Superset queries the warehouse with (aq_superset: database aq, schema
-- gold, SELECT only), for the compose PostgreSQL. Run by create-databases.sh on first start,
-- as the superuser, connected to database aq, with the password as a psql variable:
--   psql --dbname aq -v password="$SUPERSET_READER_PASSWORD" -f superset-reader-role.sql
--
-- These are exactly the statements of `aqi dashboards role-sql` (aqi/services/superset.py,
-- what `aqi dashboards up` runs on the embedded server) for AQ_DATABASE_URL
-- postgresql://aq:...@postgres:5432/aq; tests/unit/test_compose.py fails when they differ.
-- Regenerate with:
--   AQ_DATABASE_URL=postgresql://aq@postgres:5432/aq aqi dashboards role-sql | grep -v '^--'
SELECT 'CREATE ROLE aq_superset LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aq_superset') \gexec
ALTER ROLE aq_superset WITH LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;
ALTER ROLE aq_superset SET default_transaction_read_only = on;
ALTER ROLE aq_superset SET statement_timeout = '120s';
GRANT CONNECT ON DATABASE aq TO aq_superset;
REVOKE TEMPORARY ON DATABASE aq FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS gold AUTHORIZATION aq;
GRANT USAGE ON SCHEMA gold TO aq_superset;
GRANT SELECT ON ALL TABLES IN SCHEMA gold TO aq_superset;
ALTER DEFAULT PRIVILEGES FOR ROLE aq IN SCHEMA gold GRANT SELECT ON TABLES TO aq_superset;
