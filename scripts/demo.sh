#!/usr/bin/env bash
# Walks through reconcile-guard on a throwaway redis-server: a signed close plan, a forgery
# and a tamper that the guard refuses, a verified read by the apply worker's group, and the
# module's counters.
#
# Builds nothing: `make demo` builds target/release/libreconcile.so first. RECONCILE_MODULE
# names another build of the module, REDIS_SERVER another server binary. Every reply is
# checked; the script stops with a non-zero status at the first step that does not answer as
# it should. No key material is ever printed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=${RECONCILE_MODULE:-$root/target/release/libreconcile.so}
redis_server=${REDIS_SERVER:-redis-server}
stream=quantum:stream:reconcile.close
group=apply
consumer=apply-demo

workdir=
server_pid=
port=

fail() {
    echo "demo: FAILED: $*" >&2
    exit 1
}

# The server gets SIGTERM, and SIGKILL if it has not gone within five seconds.
stop_server() {
    [[ -n "$server_pid" ]] || return 0
    kill "$server_pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$server_pid" 2>/dev/null && ((waited < 50)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

cleanup() {
    local status=$?
    stop_server
    if ((status != 0)) && [[ -s "$workdir/redis.log" ]]; then
        echo "demo: last lines of the redis-server log:" >&2
        tail -n 15 "$workdir/redis.log" >&2
    fi
    if [[ -n "$workdir" ]]; then
        rm -rf "$workdir"
    fi
    exit "$status"
}

rcli() {
    redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# Prints a command the way a person would type it, one field/value pair per line after the
# entry ID.
print_command() {
    local line="> $1"
    shift
    while (($# > 0)); do
        line+=" $1"
        shift
        if [[ "$line" == *" *" ]]; then
            break
        fi
    done
    echo "$line"
    while (($# > 1)); do
        printf '      %-10s %s\n' "$1" "$2"
        shift 2
    done
}

# Runs a command, prints it and its reply as redis-cli shows them, and leaves the reply in
# $reply for the checks.
reply=
run() {
    print_command "$@"
    reply=$(rcli --no-raw "$@") || fail "redis-cli could not run $1"
    indent <<<"$reply"
}

# The reply as a flat list of values: the numbering and the quotes of redis-cli removed.
reply_values() {
    sed -E 's/^[[:space:]]*([0-9]+\)[[:space:]]+)*//; s/^"(.*)"$/\1/' <<<"$reply"
}

indent() {
    sed 's/^/  /'
}

step() {
    printf '\n%s\n%s\n' "$1" "${1//?/-}"
}

pick_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

# Ready means our own process answers: a PONG from another server that got the port first
# does not count.
wait_ready() {
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        kill -0 "$server_pid" 2>/dev/null || return 1
        if [[ "$(rcli PING 2>/dev/null)" == PONG ]]; then
            [[ "$(rcli INFO server | tr -d '\r' | sed -n 's/^process_id://p')" == "$server_pid" ]]
            return
        fi
        sleep 0.1
    done
    return 1
}

start_server() {
    local attempt
    for attempt in 1 2 3 4 5; do
        port=$(pick_port)
        : >"$workdir/redis.log"
        "$redis_server" --bind 127.0.0.1 --port "$port" --dir "$workdir" --save "" \
            --appendonly no --logfile "$workdir/redis.log" \
            --loadmodule "$module" keyring "$workdir/keyring" guard "$stream" \
            </dev/null >/dev/null 2>&1 &
        server_pid=$!
        if wait_ready; then
            return 0
        fi
        stop_server
        # Another process may have taken the port between the pick and the bind.
        grep -q 'Address already in use' "$workdir/redis.log" 2>/dev/null || break
        echo "demo: port $port was taken, trying another (attempt $attempt)"
    done
    fail "redis-server with the module did not become ready"
}

[[ -f "$module" ]] || fail "no module at $module; run make build"
command -v "$redis_server" >/dev/null || fail "$redis_server not found; run make deps"
module=$(cd "$(dirname "$module")" && pwd)/$(basename "$module")

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
workdir=$(mktemp -d "${TMPDIR:-/tmp}/reconcile-demo.XXXXXX")

# A fresh key: 32 random bytes, hex, in a file only its owner can read.
kid="k$(date -u +%Y%m%d)"
(
    umask 077
    printf '# reconcile-guard demo keyring: KID HEX, the first key signs\n' >"$workdir/keyring"
    printf '%s %s\n' "$kid" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >>"$workdir/keyring"
)
chmod 600 "$workdir/keyring"

step "Start redis-server with the module"
start_server
version=$("$redis_server" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
echo "redis-server $version on 127.0.0.1:$port"
echo "module:  $module"
echo "keyring: a fresh key with id $kid (mode 0600)"
run RECONCILE.KEYRING LIST
reply_values | grep -qx "$kid" || fail "the keyring does not list $kid"
reply_values | grep -qx signing || fail "the keyring has no signing key"

step "1. The reconcile engine publishes a signed close plan"
now_ms=$(date +%s%3N)
drift=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
plan_id="reconclose:BTCUSDT:$drift:$now_ms"
plan=(
    plan_id "$plan_id" decision RECONCILE_CLOSE symbol BTCUSDT side SELL type MARKET
    qty 0.002 reduceOnly true reason reconcile_drift source p3.4 signature "$drift"
    ts "$now_ms"
)
run RECONCILE.XADDSIGNED "$stream" '*' "${plan[@]}"
[[ "$reply" =~ ^\"([0-9]+-[0-9]+)\"$ ]] || fail "RECONCILE.XADDSIGNED did not return an entry ID"
entry_id=${BASH_REMATCH[1]}

step "2. The stored entry carries kid, signed_ms and hmac"
run XRANGE "$stream" - +
mapfile -t values < <(reply_values)
n=${#values[@]}
((n == 1 + ${#plan[@]} + 6)) || fail "XRANGE did not return exactly the plan and three more fields"
[[ "${values[0]}" == "$entry_id" ]] || fail "XRANGE returned another entry than $entry_id"
[[ "${values[*]:1:${#plan[@]}}" == "${plan[*]}" ]] ||
    fail "the stored plan differs from the one sent"
[[ "${values[n - 6]}" == kid && "${values[n - 5]}" == "$kid" ]] || fail "kid is not $kid"
[[ "${values[n - 4]}" == signed_ms && "${values[n - 3]}" =~ ^[0-9]+$ ]] ||
    fail "signed_ms is missing or not a number"
[[ "${values[n - 2]}" == hmac && "${values[n - 1]}" =~ ^[0-9a-f]{64}$ ]] ||
    fail "hmac is missing or not 64 hex digits"
signed_ms=${values[n - 3]}
mac=${values[n - 1]}

step "3. A forgery is refused: plain XADD, even with a copied kid, signed_ms and hmac"
forged=()
for ((i = 0; i < ${#plan[@]}; i += 2)); do
    value=${plan[i + 1]}
    if [[ "${plan[i]}" == qty ]]; then
        value=0.5
    fi
    forged+=("${plan[i]}" "$value")
done
run XADD "$stream" '*' "${forged[@]}" kid "$kid" signed_ms "$signed_ms" hmac "$mac"
[[ "$reply" == "(error) GUARDED"* ]] || fail "plain XADD was not refused with GUARDED"

step "4. Tampering is refused: the stream cannot be deleted"
run DEL "$stream"
[[ "$reply" == "(error) GUARDED"* ]] || fail "DEL was not refused with GUARDED"
run XLEN "$stream"
[[ "$reply" == "(integer) 1" ]] || fail "the stream no longer holds exactly the signed entry"

step "5. The apply worker reads only verified plans"
run XGROUP CREATE "$stream" "$group" 0
[[ "$reply" == OK ]] || fail "XGROUP CREATE did not answer OK"
run RECONCILE.XREADVERIFIED GROUP "$group" "$consumer" COUNT 10 STREAMS "$stream" '>'
reply_values | grep -qxF "$entry_id" || fail "the verified read did not return $entry_id"
reply_values | grep -qxF "$plan_id" || fail "the verified read did not return the plan"

step "6. What the module counted"
print_command INFO reconcile
info=$(rcli INFO reconcile | tr -d '\r') || fail "redis-cli could not run INFO"
indent <<<"$info"
expect_info() {
    grep -qx "reconcile_$1:$2" <<<"$info" || fail "INFO reconcile: expected $1 to be $2"
}
expect_info signed_total 1
expect_info verified_total 1
expect_info rejected_total 0
expect_info guard_denied_total 2
expect_info keyring_active_kid "$kid"

printf '\ndemo: every step answered as expected\n'
