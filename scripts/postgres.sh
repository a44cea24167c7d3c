#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: installs Debian's postgresql if it is missing, then runs a
# server as an unprivileged user on 127.0.0.1 on a free port, with its data in DIR.
#
#   bash scripts/postgres.sh install         # only make sure the server binaries are there
#   bash scripts/postgres.sh start DIR       # prints the URL: postgresql://postgres@127.0.0.1:PORT/postgres
#                                            (as root DIR is handed to the server user: use a fresh folder
#                                             whose parents it can traverse, e.g. one made by mktemp -d)
#   bash scripts/postgres.sh stop DIR
set -euo pipefail

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

install_pg() {
  pg_bin >/dev/null && return 0
  if [[ "$(id -u)" != 0 ]]; then
    echo "postgres.sh: PostgreSQL is not installed and installing it needs root" >&2
    return 1
  fi
  echo "postgres.sh: installing postgresql (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
    apt-get update -q >&2  # only when the lists are missing or stale
    apt-get install -y -q --no-install-recommends postgresql >&2
  fi
  pg_bin >/dev/null
}

as_user() {  # run as the unprivileged server user when we are root (the server refuses to run as root)
  if [[ "$(id -u)" == 0 ]]; then
    local user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd="${1:-}"
case "$cmd" in
  install)
    install_pg
    ;;
  start)
    dir="${2:?usage: postgres.sh start DIR}"
    install_pg
    bin="$(pg_bin)"
    mkdir -p "$dir"
    if [[ "$(id -u)" == 0 ]]; then
      user=postgres; id "$user" >/dev/null 2>&1 || user=nobody
      chown "$user" "$dir"
      chmod 0700 "$dir"
    fi
    as_user "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    for _ in 1 2 3; do
      port="$(free_port)"
      if as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 30 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >&2; then
        echo "$port" > "$dir/port"
        echo "postgresql://postgres@127.0.0.1:$port/postgres"
        exit 0
      fi
    done
    tail -n 20 "$dir/data/server.log" >&2 || true
    exit 1
    ;;
  stop)
    dir="${2:?usage: postgres.sh stop DIR}"
    bin="$(pg_bin)"
    [[ -d "$dir/data" ]] && as_user "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >&2 || true
    ;;
  *)
    echo "usage: postgres.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
