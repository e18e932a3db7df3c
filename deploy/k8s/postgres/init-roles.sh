#!/bin/sh
# Run once by the postgres image (/docker-entrypoint-initdb.d/) when it creates the cluster; the
# same roles and rights as the embedded stack's (libs/launcher/postgres_roles.py):
#   envstore         the API's: owns the database and its public schema (creates, drops and
#                    writes the read model; `envstore projection rebuild` uses it too)
#   envstore_reader  the registry's: may connect and SELECT the read model's tables, including
#                    tables the API creates later, and nothing else
# The passwords are read from the files POSTGRES_WRITER_PASSWORD_FILE and
# POSTGRES_READER_PASSWORD_FILE by psql itself (\set with backquotes), so they appear in no
# command line. Changing one later: ALTER ROLE ... PASSWORD in the database (docs/SECURITY.md).
# The image runs it (it is executable; a sourced script's `set -u` would leak into the image's
# entrypoint, so none is used).
set -e
for file in "${POSTGRES_WRITER_PASSWORD_FILE:?names the envstore role's password file}" \
            "${POSTGRES_READER_PASSWORD_FILE:?names the envstore_reader role's password file}"; do
    # An unreadable file would make psql set an empty password, which logs nobody in.
    if [ ! -r "$file" ] || [ ! -s "$file" ]; then
        echo "init-roles.sh: cannot read a password from $file" >&2
        exit 1
    fi
done
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v database="$POSTGRES_DB" <<'SQL'
\set writer_password `cat "$POSTGRES_WRITER_PASSWORD_FILE"`
\set reader_password `cat "$POSTGRES_READER_PASSWORD_FILE"`
SET password_encryption = 'scram-sha-256';
CREATE ROLE envstore LOGIN PASSWORD :'writer_password';
CREATE ROLE envstore_reader LOGIN PASSWORD :'reader_password';
ALTER DATABASE :"database" OWNER TO envstore;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO envstore_reader;
ALTER SCHEMA public OWNER TO envstore;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO envstore_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE envstore IN SCHEMA public GRANT SELECT ON TABLES TO envstore_reader;
SQL
