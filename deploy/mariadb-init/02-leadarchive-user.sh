# shellcheck shell=bash
# Sourced (not executed: keep this file without its execute bit) by the mariadb image's entrypoint
# on first start, after 01-vicidial.sql made the tables: creates the service's database user with
# exactly the privileges of deploy/grants.sql, which docker-compose.yml mounts at
# /leadarchive/grants.sql. docker_process_sql, docker_sql_escape_string_literal, mysql_note and
# mysql_error come from the entrypoint; docker_process_sql runs as root over the local socket.
# LEADARCHIVE_GRANTS_SQL may point elsewhere (tests/deploy runs this script outside the image).
#
# The demo stack enables grants.sql's [seed-demo] part, so that `docker compose run --rm seed`
# can load a dummy list; a production Vicidial server never gets it.

: "${LEADARCHIVE_DB_USER:?LEADARCHIVE_DB_USER is not set}"
: "${LEADARCHIVE_DB_PASSWORD:?LEADARCHIVE_DB_PASSWORD is not set}"
: "${MARIADB_DATABASE:?MARIADB_DATABASE is not set}"

case "$LEADARCHIVE_DB_USER$MARIADB_DATABASE" in
    *[!A-Za-z0-9_]*)
        mysql_error "LEADARCHIVE_DB_USER and MARIADB_DATABASE may only use letters, digits and _"
        ;;
esac

mysql_note "creating database user '$LEADARCHIVE_DB_USER' with deploy/grants.sql's privileges"
docker_process_sql --database=mysql <<EOSQL
CREATE USER IF NOT EXISTS '${LEADARCHIVE_DB_USER}'@'%'
  IDENTIFIED BY '$(docker_sql_escape_string_literal "$LEADARCHIVE_DB_PASSWORD")';
EOSQL

# The containers reach MariaDB over the compose network, from addresses that change: host '%'.
sed -e "s/@@DATABASE@@/${MARIADB_DATABASE}/g" \
    -e "s/@@USER@@/${LEADARCHIVE_DB_USER}/g" \
    -e "s/@@HOST@@/%/g" \
    -e 's/^-- \[seed-demo\] //' \
    "${LEADARCHIVE_GRANTS_SQL:-/leadarchive/grants.sql}" | docker_process_sql --database=mysql
