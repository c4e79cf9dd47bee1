#!/bin/sh
# Container entrypoint: export each mounted secret named featurestore_<name> as
# FEATURESTORE_<NAME>, then run the command. Secrets stay out of the compose file, the
# image and `docker inspect`; Feast's feature_store.yaml reads them from the environment.
set -eu
for file in "${SECRETS_DIR:-/run/secrets}"/featurestore_*; do
    [ -f "$file" ] || continue
    name=$(basename "$file" | tr '[:lower:]' '[:upper:]')
    export "$name=$(cat "$file")"
done
exec "$@"
