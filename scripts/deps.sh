#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing need, when they are missing.
#
# Prints nothing and touches nothing when everything is present, so `make` can call it on
# every run. Needs root (or sudo) only when something must be installed.
set -euo pipefail

# redis-server: the tests and the demo start their own servers with the module loaded.
# libclang: bindgen, run by the redis-module crate's build script, parses redismodule.h.
packages=(redis-server libclang1-14 libclang-common-14-dev)

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "deps: need root to run: $*" >&2
        exit 1
    fi
}

# apt starts and enables the packaged redis-server on port 6379. Nothing here uses it, and
# an unexpected server on a well-known port only confuses, so stop what apt just started.
stop_packaged_redis() {
    if [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now --quiet redis-server.service || true
    elif [[ -s /run/redis/redis-server.pid && -x /etc/init.d/redis-server ]]; then
        as_root /etc/init.d/redis-server stop >/dev/null 2>&1 || true
    fi
}

if ! command -v dpkg-query >/dev/null; then
    if command -v redis-server >/dev/null; then
        exit 0
    fi
    echo "deps: not a Debian system; install redis-server 7 and libclang 14 by hand" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    is_installed "$package" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "deps: installing ${missing[*]}"
apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0)
as_root "${apt[@]}" update </dev/null
as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >/dev/null

for package in "${missing[@]}"; do
    if [[ "$package" == redis-server ]]; then
        stop_packaged_redis
    fi
done
