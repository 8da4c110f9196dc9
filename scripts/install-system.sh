#!/usr/bin/env bash
# Installs the system packages oximon runs on: PostgreSQL with TimescaleDB, Mosquitto, Chromium.
# Idempotent: a second run installs nothing and builds nothing. Debian 12 and 13 (root or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm) PG=15 ;;
  trixie)   PG=17 ;;
  *) echo "oximon: unsupported distribution '${PRETTY_NAME:-unknown}' (need Debian 12 or 13)" >&2; exit 1 ;;
esac

# prometheus: for promtool, which the suite runs on deploy/prometheus (config and rule tests).
PACKAGES=(python3 python3-venv postgresql-$PG postgresql-client-$PG mosquitto mosquitto-clients openssl chromium prometheus)
if [ "$PG" = 17 ]; then PACKAGES+=(postgresql-17-timescaledb); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "oximon: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Only promtool is wanted from the prometheus package: where systemd started its server, stop it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled prometheus >/dev/null 2>&1; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# Debian's postgresql package starts a system cluster on 5432; oximon never uses it (it runs
# private instances on free ports), so leaving it running is harmless.

PG_SHARE=$(/usr/lib/postgresql/$PG/bin/pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/$PG)
if [ ! -f "$PG_SHARE/extension/timescaledb.control" ]; then
  # Debian 12 ships no TimescaleDB: build Debian 13's source package (Apache-2 edition) against
  # PostgreSQL 15. Takes well under a minute on two cores.
  echo "oximon: building TimescaleDB from Debian 13's source package for PostgreSQL $PG"
  $SUDO apt-get install -y -qq --no-install-recommends postgresql-server-dev-$PG cmake \
    build-essential dpkg-dev libssl-dev libkrb5-dev
  if ! grep -rqs "deb-src .*trixie main" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb-src http://deb.debian.org/debian trixie main" | $SUDO tee /etc/apt/sources.list.d/oximon-trixie-src.list >/dev/null
    $SUDO apt-get update -qq
  fi
  BUILD=$(mktemp -d /tmp/oximon-timescaledb.XXXXXX)
  (
    cd "$BUILD"
    apt-get source -qq --download-only timescaledb >/dev/null 2>&1 || apt-get source -qq --download-only timescaledb
    dpkg-source -x --no-check ./timescaledb_*.dsc src >/dev/null
    cd src
    cmake -S . -B build -DPG_CONFIG=/usr/lib/postgresql/$PG/bin/pg_config -DAPACHE_ONLY=1 \
      -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
    make -C build -j"$(nproc)" >/dev/null
    $SUDO make -C build install >/dev/null
  )
  rm -rf "$BUILD"
  test -f "$PG_SHARE/extension/timescaledb.control"
  echo "oximon: TimescaleDB installed"
fi
