#!/usr/bin/env bash
# Prints the path of a valkey-server to run the test suite against, fetching one when needed.
#
# VALKEY_SERVER, when set, is used as it is. Otherwise Debian 12's backports hold Valkey 8.0,
# whose package is unpacked under target/valkey without installing it, so the system's own
# redis-server stays as it was. Enabling backports adds an apt source and needs root (or sudo).
set -euo pipefail

if [[ -n "${VALKEY_SERVER:-}" ]]; then
    echo "$VALKEY_SERVER"
    exit 0
fi

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/target/valkey
server=$dest/usr/bin/valkey-server
if [[ -x "$server" ]]; then
    echo "$server"
    exit 0
fi

script=valkey
# shellcheck source=scripts/as-root.sh
source "$(dirname "$0")/as-root.sh"

# Read whole before matching: grep -q stopping early would fail the pipe under pipefail.
policy=$(apt-cache policy valkey-server 2>/dev/null || true)
if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [[ -z "$codename" ]]; then
        echo "valkey: no valkey-server package and no Debian release to find one for" >&2
        exit 1
    fi
    echo "valkey: enabling $codename-backports for the valkey-server package" >&2
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$codename" | as_root tee /etc/apt/sources.list.d/backports.sources >/dev/null
    as_root apt-get update -qq
fi

download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
# apt fetches as its own unprivileged user, which must be able to write here.
chmod 0777 "$download"
# valkey-server is a link to the binary that valkey-tools carries.
(cd "$download" && apt-get download -qq valkey-server valkey-tools >&2)
mkdir -p "$dest"
for package in "$download"/*.deb; do
    dpkg-deb -x "$package" "$dest"
done
echo "$server"
