#!/usr/bin/env bash
# The secrets compose.yaml hands to envstore's containers, generated once into deploy/secrets/
# (a directory only its owner may open; kept if present: delete a file and run again to rotate
# it, see docs/SECURITY.md).
set -euo pipefail
directory="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$directory"
chmod 700 "$directory"
for name in admin-token auth-secret auth-password; do
    if [ ! -s "$directory/$name" ]; then
        (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$directory/$name")
        echo "generated $directory/$name"
    fi
done
# Compose bind-mounts each file into the containers, which run as another user (uid 10001):
# the files are readable, the directory (0700) keeps other users of this machine out.
chmod 644 "$directory"/*
echo "log in to http://localhost:8080/ui/ with any user name and the password in $directory/auth-password"
