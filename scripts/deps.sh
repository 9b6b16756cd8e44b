#!/usr/bin/env bash
# Installs every Debian package Orrery needs, when it is missing. Idempotent and quiet when done.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config
  liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev lua-busted lua-socket lua-check
  libmicrohttpd-dev libpq-dev libjansson-dev libjwt-dev libargon2-dev libcurl4-openssl-dev zlib1g-dev libssl-dev
  postgresql-15 postgresql-client-15
  curl wrk
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: installing ${missing[*]}"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "deps: missing packages and not root; run as root: apt-get install ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
