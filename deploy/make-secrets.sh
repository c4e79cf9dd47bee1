#!/bin/sh
# Generate the secrets docker-compose.yml mounts, once: random passwords for Redis and
# PostgreSQL, the Redis ACL file, and the two backend URLs the service reads.
# Usage: deploy/make-secrets.sh [DIR]   (default: secrets/ next to docker-compose.yml)
# Existing files are kept, so rerunning never rotates a password under a running stack.
set -eu
dir=${1:-$(dirname "$0")/../secrets}
# The folder is private to its owner; the files inside are world-readable so that the
# containers' own users (redis, postgres, featurestore) can read their bind mounts.
mkdir -p "$dir"
chmod 700 "$dir"
umask 022

random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
keep() { [ -s "$dir/$1" ]; }

keep redis_password || random >"$dir/redis_password"
keep postgres_password || random >"$dir/postgres_password"
redis_password=$(cat "$dir/redis_password")
postgres_password=$(cat "$dir/postgres_password")

# Only the service's own user may touch data; the health check may only PING.
keep redis_users.acl || cat >"$dir/redis_users.acl" <<ACL
user default off
user featurestore on >$redis_password ~* &* +@all
user healthcheck on nopass -@all +ping
ACL
keep featurestore_redis_url ||
    printf 'redis://featurestore:%s@redis:6379/0' "$redis_password" >"$dir/featurestore_redis_url"
keep featurestore_registry_url ||
    printf 'postgresql+psycopg://featurestore:%s@postgres:5432/featurestore?connect_timeout=5' \
        "$postgres_password" >"$dir/featurestore_registry_url"
# Airflow (compose profile `airflow`): its own metadata database and the key its API
# server signs task tokens with.
keep airflow_postgres_password || random >"$dir/airflow_postgres_password"
keep airflow_jwt_secret || random >"$dir/airflow_jwt_secret"
keep airflow_db_url ||
    printf 'postgresql+psycopg://airflow:%s@airflow-postgres:5432/airflow' \
        "$(cat "$dir/airflow_postgres_password")" >"$dir/airflow_db_url"
echo "secrets in $dir (keep them out of version control)" >&2
