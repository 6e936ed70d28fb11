#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the tests and prints its URL on the last line.
# Installs PostgreSQL with apt-get when the machine has none. Usage: .ci/postgres.sh start|restart|stop
# It runs with fsync off (tests need no durability) unless SEATKEEPER_TEST_PG_DURABLE=1.
# SEATKEEPER_TEST_PG_OPTS adds server options (for a benchmark's look inside, say
# "-c shared_preload_libraries=pg_stat_statements").
# With SEATKEEPER_TEST_PG_TLS=1 the server has ssl = on, with a CA, a server certificate for
# localhost and 127.0.0.1, and a client certificate for the role `certuser` (which must sign in
# with it), all made here with openssl; the client's files are copied to $PGDATA-tls (ca.crt,
# client.crt, client.key).
set -euo pipefail

PGPORT="${SEATKEEPER_TEST_PGPORT:-55432}"
PGDATA="${SEATKEEPER_TEST_PGDATA:-/tmp/seatkeeper-ci-pg}"
PGUSER_OS=postgres

find_bin() {
  for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /usr/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su "$PGUSER_OS" -s /bin/bash -c "$*"
  else
    bash -c "$*"
  fi
}

case "${1:-start}" in
  start)
    if ! BIN=$(find_bin); then
      echo "installing PostgreSQL with apt-get" >&2
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
      BIN=$(find_bin)
    fi
    if [ "$(id -u)" = 0 ]; then
      id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash "$PGUSER_OS"
    else
      PGUSER_OS=$(id -un)
    fi
    if ! as_pg "$BIN/pg_ctl -D $PGDATA status" >/dev/null 2>&1; then
      rm -rf "$PGDATA"
      mkdir -p "$PGDATA"
      [ "$(id -u)" = 0 ] && chown "$PGUSER_OS" "$PGDATA"
      as_pg "$BIN/initdb -D $PGDATA -U postgres -A trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null"
      TLS_OPTS=""
      # Tests need no durability; benchmarks ask for PostgreSQL's defaults (fsync on).
      FSYNC_OPT="-c fsync=off"
      [ "${SEATKEEPER_TEST_PG_DURABLE:-}" = 1 ] && FSYNC_OPT=""
      if [ "${SEATKEEPER_TEST_PG_TLS:-}" = 1 ]; then
        command -v openssl >/dev/null 2>&1 || {
          SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
          $SUDO apt-get update -qq >&2
          DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >&2
        }
        T="$PGDATA/tls"
        as_pg "mkdir -p $T && cd $T && umask 077 \
          && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
               -subj '/CN=seatkeeper test CA' -keyout ca.key -out ca.crt 2>/dev/null \
          && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -subj '/CN=localhost' -keyout server.key -out server.csr 2>/dev/null \
          && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext \
          && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
               -extfile server.ext -out server.crt 2>/dev/null \
          && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -subj '/CN=certuser' -keyout client.key -out client.csr 2>/dev/null \
          && printf 'extendedKeyUsage=clientAuth\n' > client.ext \
          && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
               -extfile client.ext -out client.crt 2>/dev/null \
          && chmod 644 ca.crt client.crt"
        rm -rf "$PGDATA-tls" && mkdir -p "$PGDATA-tls"
        cp "$T/ca.crt" "$T/client.crt" "$T/client.key" "$PGDATA-tls/"
        chmod 600 "$PGDATA-tls/client.key"
        # certuser signs in only with its certificate; everyone else as before.
        as_pg "printf 'hostssl all certuser 127.0.0.1/32 cert\nhost all certuser 127.0.0.1/32 reject\n' > $PGDATA/hba.tmp \
          && cat $PGDATA/pg_hba.conf >> $PGDATA/hba.tmp && mv $PGDATA/hba.tmp $PGDATA/pg_hba.conf"
        TLS_OPTS="-c ssl=on -c ssl_cert_file=$T/server.crt -c ssl_key_file=$T/server.key -c ssl_ca_file=$T/ca.crt"
      fi
      as_pg "$BIN/pg_ctl -D $PGDATA -l $PGDATA/server.log -o '-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 $FSYNC_OPT -c max_connections=300 $TLS_OPTS ${SEATKEEPER_TEST_PG_OPTS:-}' -w start >/dev/null"
      if [ "${SEATKEEPER_TEST_PG_TLS:-}" = 1 ]; then
        "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE ROLE certuser LOGIN SUPERUSER" >/dev/null
      fi
    fi
    for _ in $(seq 1 30); do
      if "$BIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" >/dev/null 2>&1; then break; fi
      sleep 1
    done
    "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'seatkeeper_test'" | grep -q 1 \
      || "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE seatkeeper_test" >/dev/null
    echo "postgres://postgres@127.0.0.1:$PGPORT/seatkeeper_test"
    ;;
  restart)
    # A fast restart (the fault tests: connections cut, the server back with its options).
    BIN=$(find_bin)
    as_pg "$BIN/pg_ctl -D $PGDATA -m fast -w restart" >/dev/null
    ;;
  stop)
    BIN=$(find_bin)
    as_pg "$BIN/pg_ctl -D $PGDATA -m fast stop" >/dev/null 2>&1 || true
    rm -rf "$PGDATA-tls"
    ;;
esac
