#!/usr/bin/env bash
# The secrets envstore's deployments hand to their containers, generated once into a directory
# only its owner may open:
#   bash deploy/make-secrets.sh                     # deploy/secrets/      (compose.yaml)
#   bash deploy/make-secrets.sh deploy/k8s/secrets  # deploy/k8s/secrets/  (the Kustomize secretGenerator)
# Files that exist are kept: delete one and run again to rotate it (docs/SECURITY.md says what else
# each rotation needs; a PostgreSQL password must also be changed in the database).
set -euo pipefail
deploy="$(cd "$(dirname "$0")" && pwd)"
directory="${1:-$deploy/secrets}"
mkdir -p "$directory"
chmod 700 "$directory"
directory="$(cd "$directory" && pwd)"

generate() {  # generate NAME PYTHON-EXPRESSION (over the module secrets)
    if [ ! -s "$directory/$1" ]; then
        (umask 077; python3 -c "import secrets; print($2)" > "$directory/$1")
        echo "generated $directory/$1"
    fi
}

for name in admin-token auth-secret auth-password storage-url-secret webhook-secret-key; do
    generate "$name" "secrets.token_urlsafe(48)"
done
# token_urlsafe's alphabet needs no quoting inside a URL, so the passwords go into the DSNs as they are.
for role in superuser writer reader; do
    generate "postgres-$role-password" "secrets.token_urlsafe(32)"
done
generate s3-access-key "secrets.token_hex(10)"
generate s3-secret-key "secrets.token_urlsafe(30)"

# NATS: an nkey seed per identity (nats-<identity>.nk, kept if present) and the servers'
# authorization (nats-authorization.conf: public keys and each identity's permissions, written
# anew each run from envstore's event catalogue), made by envstore itself: `pip install .` first,
# or set ENVSTORE to the envstore command (e.g. ENVSTORE="/opt/envstore/bin/envstore").
envstore="${ENVSTORE:-envstore}"
if ! command -v "${envstore%% *}" >/dev/null; then
    echo "make-secrets.sh: the envstore command makes the NATS credentials and was not found; pip install . first, or set ENVSTORE" >&2
    exit 1
fi
$envstore nats-credentials "$directory"

# The services' connection strings, written anew from the passwords each run (the host `postgres`
# is the PostgreSQL service's name in compose.yaml and in the Kustomize manifests).
write_dsn() {  # write_dsn FILE ROLE PASSWORD-FILE
    (umask 077; printf 'postgresql://%s:%s@postgres:5432/envstore\n' "$2" "$(cat "$directory/$3")" > "$directory/$1")
}
write_dsn database-url envstore postgres-writer-password
write_dsn reader-database-url envstore_reader postgres-reader-password

# Compose bind-mounts each file into the containers, which run as other users (envstore: uid
# 10001, PostgreSQL: uid 70): the files are readable, the directory (0700) keeps other users of
# this machine out. Kubernetes reads them into Secrets (`kubectl apply -k`).
chmod 644 "$directory"/*
echo "secrets are in $directory; log in to the UI with any user name and the password in $directory/auth-password"
