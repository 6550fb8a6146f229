#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing need, when they are missing.
#
#   scripts/deps.sh            what the build, the tests and the demo need
#   scripts/deps.sh promtool   that, and promtool for the alert rule tests
#   scripts/deps.sh valgrind   that, and valgrind for the benchmark's instruction counts
#
# Prints nothing and touches nothing when everything is present, so `make` can call it on
# every run. Needs root (or sudo) only when something must be installed.
set -euo pipefail

# redis-server: the tests and the demo start their own servers with the module loaded.
# libclang: bindgen, run by the redis-module crate's build script, parses redismodule.h.
packages=(redis-server libclang1-14 libclang-common-14-dev)

# The demo signs paper exchange orders and reads its JSON with python3, and fetches metrics
# with curl. Any python3 or curl on the PATH will do, so the packages are only a fallback.
command -v python3 >/dev/null || packages+=(python3)
command -v curl >/dev/null || packages+=(curl)

# Debian ships promtool only inside the prometheus server package; its service is stopped
# below, since only the tool is wanted.
for extra in "$@"; do
    case "$extra" in
    promtool) command -v promtool >/dev/null || packages+=(prometheus) ;;
    valgrind) command -v valgrind >/dev/null || packages+=(valgrind) ;;
    *)
        echo "deps: unknown extra '$extra' (known: promtool, valgrind)" >&2
        exit 2
        ;;
    esac
done

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

script=deps
# shellcheck source=scripts/as-root.sh
source "$(dirname "$0")/as-root.sh"

# apt starts and enables the packaged redis-server on port 6379 (and prometheus on 9090).
# Nothing here uses them, and an unexpected server on a well-known port only confuses, so
# stop what apt just started.
stop_packaged_service() {
    local service=$1
    if [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now --quiet "$service.service" || true
    elif [[ -x /etc/init.d/$service ]]; then
        as_root /etc/init.d/"$service" stop >/dev/null 2>&1 || true
    fi
}

if ! command -v dpkg-query >/dev/null; then
    for tool in redis-server python3 curl "$@"; do
        if ! command -v "$tool" >/dev/null; then
            echo "deps: not a Debian system; install $tool (and libclang 14) by hand" >&2
            exit 1
        fi
    done
    exit 0
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
    case "$package" in
    redis-server | prometheus) stop_packaged_service "$package" ;;
    esac
done
