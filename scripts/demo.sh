#!/usr/bin/env bash
# Runs reconcile-guard end to end on loopback: redis-server with the module and the ACL users of
# redis.conf.example, the paper exchange, the reconcile engine and the apply worker. It opens a
# drift, follows the signed plan to the close and the positions agreeing, then plays the attacks
# the shared-secret design let through and checks that each one fails.
#
# Builds nothing: `make demo` builds target/release first. RECONCILE_MODULE names another
# build of the module, REDIS_SERVER another server binary. Every step is checked against a
# deadline; the first one that does not happen stops the demo with a non-zero status. Every
# process it started is stopped when it ends. Passwords, keys and the exchange secret are made
# for this run, handed to the processes through their environment and never printed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
module=${RECONCILE_MODULE:-$bin/libreconcile.so}
redis_server=${REDIS_SERVER:-redis-server}

stream=quantum:stream:reconcile.close
results=quantum:stream:apply.result
events=quantum:stream:reconcile.events
symbol=BTCUSDT
ledger_key=quantum:position:ledger:$symbol
hold_key=quantum:reconcile:hold:$symbol
ledger_amt=0.010
exchange_amt=0.012

workdir=
python=
started_ms=
redis_port=
paper_url=
apply_metrics=
engine_metrics=
declare -A pids=()

# The demo's secrets. They live in this shell and in the environment of the one process that
# needs each, never on a command line, where `ps` would show them.
pw_default=
pw_engine=
pw_apply=
pw_keyadmin=
api_key=
api_secret=

now_ms() {
    local t=${EPOCHREALTIME//[.,]/}
    echo $((t / 1000))
}

fail() {
    echo "demo: FAILED: $*" >&2
    exit 1
}

step() {
    printf '\n%s\n%s\n' "$1" "${1//?/-}"
}

indent() {
    sed 's/^/  /'
}

random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Polls `"$@"` every 100 ms until it succeeds, for at most $2 seconds.
wait_for() {
    local what=$1 limit_ms=$(($2 * 1000))
    shift 2
    local deadline=$(($(now_ms) + limit_ms))
    until "$@"; do
        (($(now_ms) < deadline)) || fail "$what did not happen within $((limit_ms / 1000))s"
        sleep 0.1
    done
}

stop_process() {
    local name=$1 pid=${pids[$1]:-}
    [[ -n "$pid" ]] || return 0
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 50)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "pids[$name]"
}

cleanup() {
    local status=$?
    local name
    for name in apply engine paper redis; do
        stop_process "$name"
    done
    if ((status != 0)) && [[ -n "$workdir" ]]; then
        for name in redis paper engine apply; do
            if [[ -s "$workdir/$name.log" ]]; then
                echo "demo: last lines of the $name log:" >&2
                tail -n 12 "$workdir/$name.log" | indent >&2
            fi
        done
    fi
    if [[ -n "$workdir" ]]; then
        rm -rf "$workdir"
    fi
    exit "$status"
}

# redis-cli as one of the ACL users; the password goes through REDISCLI_AUTH.
as_user() {
    local user=$1 password
    shift
    case "$user" in
    default) password=$pw_default ;;
    engine) password=$pw_engine ;;
    apply) password=$pw_apply ;;
    keyadmin) password=$pw_keyadmin ;;
    *) fail "no such demo user: $user" ;;
    esac
    REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$redis_port" --user "$user" "$@"
}

# Runs a command as a user, prints it and the reply as redis-cli shows them, and leaves the
# reply in $reply. Error replies are replies too: the caller checks them.
reply=
run_as() {
    local user=$1
    shift
    echo "$user> $(show_args "$@")"
    reply=$(as_user "$user" --no-raw "$@" 2>&1) || true
    indent <<<"$reply"
}

# A command line for the eye: what comes before the entry ID on the first line, then the
# field/value pairs as field=value, wrapped.
show_args() {
    local line=$1 pairs=
    shift
    while (($# > 0)) && [[ "$line" != *" *" ]]; do
        line+=" $1"
        shift
    done
    while (($# > 1)); do
        if ((${#pairs} + ${#1} + ${#2} > 88)); then
            line+=$'\n    '$pairs
            pairs=
        fi
        pairs+="${pairs:+ }$1=$2"
        shift 2
    done
    [[ -z "$pairs" ]] || line+=$'\n    '$pairs
    echo "$line"
}

# The entries of a stream range as lines of ID, field and value, tab-separated.
entries_as() {
    local user=$1
    shift
    as_user "$user" -2 --json "$@" | "$python" "$workdir/helper.py" entries
}

# The value of $2 in the entry $1 of entries read from stdin.
field_of() {
    awk -F '\t' -v id="$1" -v f="$2" '$1 == id && $2 == f { print $3; exit }'
}

# Prints the entry $1 of entries read from stdin, one field per line.
print_entry() {
    awk -F '\t' -v id="$1" 'BEGIN { print "entry " id } $1 == id { printf "  %-16s %s\n", $2, $3 }'
}

paper() {
    PAPER_URL=$paper_url PAPER_KEY=$api_key PAPER_SECRET=$api_secret \
        "$python" "$workdir/helper.py" "$@"
}

# One metric's value from a worker's /metrics: name with its labels exactly as served.
metric() {
    curl -fsS --max-time 2 "http://$1/metrics" | awk -v m="$2" '$1 == m { print $2; exit }'
}

metric_is() {
    [[ "$(metric "$1" "$2")" == "$3" ]]
}

# Writes the python helper: exchange requests signed as the exchange wants them, and the JSON
# of the paper exchange and of `redis-cli --json` turned into lines for the shell.
write_helper() {
    cat >"$workdir/helper.py" <<'PY'
import hashlib, hmac, json, os, sys, time, urllib.parse, urllib.request
from decimal import Decimal

def call(method, path, params=None, signed=False):
    url = os.environ["PAPER_URL"] + path
    headers = {}
    if signed:
        params = dict(params or {}, timestamp=int(time.time() * 1000))
        query = urllib.parse.urlencode(params)
        secret = os.environ["PAPER_SECRET"].encode()
        query += "&signature=" + hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
        headers["X-MBX-APIKEY"] = os.environ["PAPER_KEY"]
        url += "?" + query
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)

def qty(text):
    return str(Decimal(text).quantize(Decimal("0.001")))

def main(command, *args):
    if command == "order":
        side, amount = args
        order = call("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": side,
                     "type": "MARKET", "quantity": amount, "newOrderRespType": "RESULT"},
                     signed=True)
        print(f"order {order['orderId']}: {order['side']} {qty(order['executedQty'])} "
              f"{order['symbol']} {order['status']}, reduceOnly={str(order['reduceOnly']).lower()}")
    elif command == "position":
        rows = call("GET", "/paper/state")["positions"]
        print(qty(sum((Decimal(r["positionAmt"]) for r in rows if r["symbol"] == args[0]),
                      Decimal(0))))
    elif command == "orders":
        orders = call("GET", "/fapi/v1/allOrders", {"symbol": args[0]}, signed=True)
        for o in orders:
            print(f"{o['orderId']}\t{o['side']}\t{qty(o['executedQty'])}\t"
                  f"{str(o['reduceOnly']).lower()}\t{o['status']}\t{o['clientOrderId']}")
    elif command == "ready":
        call("GET", "/paper/state")
    elif command == "entries":
        for entry_id, fields in json.load(sys.stdin) or []:
            for name, value in zip(fields[::2], fields[1::2]):
                print(f"{entry_id}\t{name}\t{value}")
    else:
        sys.exit(f"helper: unknown command {command}")

main(*sys.argv[1:])
PY
}

show_orders() {
    local orders
    orders=$(paper orders "$symbol") || fail "could not list the paper exchange's orders"
    printf '  %-6s %-5s %-6s %-11s %-7s %s\n' id side qty reduceOnly status clientOrderId
    awk -F '\t' '{ printf "  %-6s %-5s %-6s %-11s %-7s %s\n", $1, $2, $3, $4, $5, $6 }' \
        <<<"$orders"
    order_count=$(grep -c . <<<"$orders" || true)
}

# --- preflight ---------------------------------------------------------------------------

for tool in redis-cli python3 curl; do
    command -v "$tool" >/dev/null || fail "$tool not found; run make deps"
done
command -v "$redis_server" >/dev/null || fail "$redis_server not found; run make deps"
[[ -f "$module" ]] || fail "no module at $module; run make build"
for binary in reconcile-keyring paper-exchange reconcile-engine reconcile-apply; do
    [[ -x "$bin/$binary" ]] || fail "no $bin/$binary; run make build"
done
module=$(cd "$(dirname "$module")" && pwd)/$(basename "$module")
# The interpreter itself rather than a wrapper such as a pyenv shim, which costs a third of a
# second on every call.
python=$(python3 -c 'import sys; print(sys.executable)')

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
started_ms=$(now_ms)
workdir=$(mktemp -d "${TMPDIR:-/tmp}/reconcile-demo.XXXXXX")
write_helper

# --- 1. Redis --------------------------------------------------------------------------------

step "1. Redis with the module, a fresh keyring and the users of redis.conf.example"

keyring=$workdir/reconcile.keyring
"$bin/reconcile-keyring" generate --create --keyring "$keyring" >/dev/null ||
    fail "reconcile-keyring could not create the keyring"
echo "> reconcile-keyring list --keyring <temp dir>/reconcile.keyring"
"$bin/reconcile-keyring" list --keyring "$keyring" | indent
kid=$("$bin/reconcile-keyring" list --keyring "$keyring" | awk 'NR == 1 { print $1 }')
[[ -n "$kid" ]] || fail "the new keyring lists no key"

pw_default=$(random_hex 24)
pw_engine=$(random_hex 24)
pw_apply=$(random_hex 24)
pw_keyadmin=$(random_hex 24)

# The example configuration with this run's paths, port and passwords: substituted here in the
# shell rather than by sed, so that no password appears on a command line.
start_redis() {
    local conf
    redis_port=$(free_port)
    conf=$(<"$root/redis.conf.example")
    conf=${conf//\/opt\/reconcile-guard\/libreconcile.so/$module}
    conf=${conf//\/etc\/redis\/reconcile.keyring/$keyring}
    conf=${conf//dir \/var\/lib\/redis/dir $workdir}
    conf=${conf//\/var\/log\/redis\/redis-server.log/$workdir/redis.log}
    conf=${conf//port 6379/port $redis_port}
    conf=${conf//CHANGE-ME-DEFAULT-PASSWORD/$pw_default}
    conf=${conf//CHANGE-ME-ENGINE-PASSWORD/$pw_engine}
    conf=${conf//CHANGE-ME-APPLY-PASSWORD/$pw_apply}
    conf=${conf//CHANGE-ME-KEYADMIN-PASSWORD/$pw_keyadmin}
    if grep -v '^#' <<<"$conf" | grep -q CHANGE-ME; then
        fail "redis.conf.example has a placeholder the demo does not fill"
    fi
    (umask 077 && printf '%s\n' "$conf" >"$workdir/redis.conf")
    : >"$workdir/redis.log"
    "$redis_server" "$workdir/redis.conf" </dev/null >/dev/null 2>&1 &
    pids[redis]=$!
}

# Ready means our own server answers: a PONG from another that got the port first does not
# count.
redis_ready() {
    kill -0 "${pids[redis]}" 2>/dev/null || return 2
    [[ "$(as_user default PING 2>/dev/null)" == PONG ]] || return 1
    local server_pid
    server_pid=$(as_user default INFO server | tr -d '\r' | sed -n 's/^process_id://p')
    [[ "$server_pid" == "${pids[redis]}" ]]
}

for attempt in 1 2 3; do
    start_redis
    deadline=$(($(now_ms) + 10000))
    status=1
    while (($(now_ms) < deadline)); do
        status=0
        redis_ready || status=$?
        ((status == 1)) || break
        sleep 0.1
    done
    ((status == 0)) && break
    stop_process redis
    grep -q 'Address already in use' "$workdir/redis.log" ||
        fail "redis-server did not start with the module"
    echo "port $redis_port was taken; trying another (attempt $attempt)"
done
((status == 0)) || fail "redis-server did not start with the module"
echo "redis-server $("$redis_server" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on" \
    "127.0.0.1:$redis_port, configuration: redis.conf.example with this run's paths and" \
    "random passwords"
run_as keyadmin RECONCILE.KEYRING LIST
[[ "$reply" == *"\"$kid\""* && "$reply" == *'"signing"'* ]] ||
    fail "the server does not sign with the key just generated"

# --- 2. Paper exchange -----------------------------------------------------------------------

step "2. The paper exchange"
api_key=$(random_hex 16)
api_secret=$(random_hex 32)
paper_port=$(free_port)
paper_url=http://127.0.0.1:$paper_port
BINANCE_API_KEY=$api_key BINANCE_API_SECRET=$api_secret NO_COLOR=1 \
    "$bin/paper-exchange" --listen "127.0.0.1:$paper_port" --symbols "$symbol,ETHUSDT" \
    </dev/null >"$workdir/paper.log" 2>&1 &
pids[paper]=$!
paper_up() {
    kill -0 "${pids[paper]}" 2>/dev/null || fail "paper-exchange exited"
    paper ready 2>/dev/null
}
wait_for "the paper exchange answering" 10 paper_up
echo "paper-exchange on $paper_url with an API key and secret made for this run"
echo "$symbol position: $(paper position "$symbol")"

# --- 3. Apply worker -------------------------------------------------------------------------

step "3. The apply worker, as the Redis user apply"
apply_metrics=127.0.0.1:$(free_port)
REDIS_URL="redis://apply:$pw_apply@127.0.0.1:$redis_port/" EXCHANGE_URL=$paper_url \
    BINANCE_API_KEY=$api_key BINANCE_API_SECRET=$api_secret RUST_LOG=info \
    "$bin/reconcile-apply" --consumer apply-demo --max-qty "$symbol=0.05" \
    --metrics-addr "$apply_metrics" --info-interval 1s --block 1s \
    </dev/null >"$workdir/apply.log" 2>&1 &
pids[apply]=$!
echo "> reconcile-apply --consumer apply-demo --max-qty $symbol=0.05 \\"
echo "      --metrics-addr $apply_metrics --info-interval 1s --block 1s"
group_ready() {
    kill -0 "${pids[apply]}" 2>/dev/null || fail "reconcile-apply exited"
    as_user apply XINFO GROUPS "$stream" 2>/dev/null | grep -qx apply_recon
}
wait_for "the apply worker's consumer group" 10 group_ready
run_as apply XINFO GROUPS "$stream"

# --- 4. Engine -------------------------------------------------------------------------------

step "4. The reconcile engine, as the Redis user engine"
engine_metrics=127.0.0.1:$(free_port)
REDIS_URL="redis://engine:$pw_engine@127.0.0.1:$redis_port/" EXCHANGE_URL=$paper_url \
    BINANCE_API_KEY=$api_key BINANCE_API_SECRET=$api_secret RUST_LOG=info \
    "$bin/reconcile-engine" --symbols "$symbol" --interval 200ms --confirm-cycles 2 \
    --hold-ttl 60s --metrics-addr "$engine_metrics" \
    </dev/null >"$workdir/engine.log" 2>&1 &
pids[engine]=$!
echo "> reconcile-engine --symbols $symbol --interval 200ms --confirm-cycles 2 \\"
echo "      --hold-ttl 60s --metrics-addr $engine_metrics"
engine_cycling() {
    kill -0 "${pids[engine]}" 2>/dev/null || fail "reconcile-engine exited"
    local last
    last=$(metric "$engine_metrics" reconcile_last_good_cycle_timestamp_seconds 2>/dev/null)
    [[ -n "$last" && "$last" != 0 ]]
}
wait_for "the engine's first cycle" 10 engine_cycling
echo "the engine is cycling every 200ms"

# --- 5. Drift --------------------------------------------------------------------------------

step "5. A drift: the exchange holds $exchange_amt $symbol, the ledger says $ledger_amt"
echo "> a signed MARKET BUY of $exchange_amt on the paper exchange, without reduceOnly"
paper order BUY "$exchange_amt" | indent || fail "the paper exchange refused the order"
position=$(paper position "$symbol")
[[ "$position" == "$exchange_amt" ]] || fail "the exchange holds $position, not $exchange_amt"
echo "exchange: $position; the ledger says what the trading system believes it holds:"
run_as default HSET "$ledger_key" ledger_amt "$ledger_amt"
[[ "$reply" == "(integer) "[01] ]] || fail "HSET of the ledger did not answer"

# --- 6. Plan ---------------------------------------------------------------------------------

step "6. The engine signs a close plan into $stream"
plan_entries=
plan_published() {
    plan_entries=$(entries_as engine XRANGE "$stream" - +)
    [[ -n "$plan_entries" ]]
}
wait_for "a close plan from the engine" 10 plan_published
plan_id_entry=$(awk -F '\t' 'NR == 1 { print $1 }' <<<"$plan_entries")
echo "engine> XRANGE $stream - +"
print_entry "$plan_id_entry" <<<"$plan_entries"
plan_field() {
    field_of "$plan_id_entry" "$1" <<<"$plan_entries"
}
[[ "$(plan_field decision)" == RECONCILE_CLOSE ]] || fail "the plan's decision is wrong"
[[ "$(plan_field symbol)" == "$symbol" ]] || fail "the plan is not for $symbol"
[[ "$(plan_field side)" == SELL ]] || fail "the plan does not sell"
[[ "$(plan_field qty)" == 0.002 ]] || fail "the plan does not close 0.002"
[[ "$(plan_field reduceOnly)" == true ]] || fail "the plan is not reduce-only"
[[ "$(plan_field kid)" == "$kid" ]] || fail "the plan is not signed with $kid"
[[ "$(plan_field hmac)" =~ ^[0-9a-f]{64}$ ]] || fail "the plan carries no MAC"
plan_id=$(plan_field plan_id)
[[ -n "$plan_id" ]] || fail "the plan has no plan_id"
echo "the module appended kid, signed_ms and hmac; the engine never saw the key"
hold_events=$(entries_as default XRANGE "$events" - + | awk -F '\t' '$2 == "event" { print $3 }')
echo "events so far: $(tr '\n' ' ' <<<"$hold_events")"
grep -qx HOLD_SET <<<"$hold_events" || fail "the engine set no HOLD before publishing"

# --- 7. Close --------------------------------------------------------------------------------

step "7. The apply worker verifies the plan and closes 0.002"
result_for() {
    local entry=$1 found
    found=$(entries_as default XRANGE "$results" - + |
        awk -F '\t' -v e="$entry" '$2 == "entry_id" && $3 == e { print $1; exit }')
    [[ -n "$found" ]] || return 1
    result_id=$found
}
result_id=
wait_for "the apply worker's result for the plan" 10 result_for "$plan_id_entry"
result_entries=$(entries_as default XRANGE "$results" "$result_id" "$result_id")
echo "default> XRANGE $results $result_id $result_id"
print_entry "$result_id" <<<"$result_entries"
[[ "$(field_of "$result_id" status <<<"$result_entries")" == success ]] ||
    fail "the close did not succeed"
[[ "$(field_of "$result_id" plan_id <<<"$result_entries")" == "$plan_id" ]] ||
    fail "the result names another plan"
echo "paper exchange, allOrders $symbol:"
show_orders
((order_count == 2)) || fail "expected the opening order and one close, found $order_count orders"

# --- 8. Agreement ----------------------------------------------------------------------------

step "8. Exchange and ledger agree; the engine clears the HOLD"
position_is() {
    [[ "$(paper position "$symbol")" == "$1" ]]
}
wait_for "the exchange position back at $ledger_amt" 10 position_is "$ledger_amt"
hold_cleared() {
    [[ "$(as_user default EXISTS "$hold_key")" == 0 ]] &&
        entries_as default XRANGE "$events" - + | grep -q "	event	HOLD_CLEARED$"
}
wait_for "the engine clearing the HOLD" 10 hold_cleared
ledger_now=$(as_user default HGET "$ledger_key" ledger_amt)
echo "exchange: $(paper position "$symbol")  ledger: $ledger_now"
run_as default EXISTS "$hold_key"
hold_events=$(entries_as default XRANGE "$events" - + | awk -F '\t' '$2 == "event" { print $3 }')
echo "events: $(tr '\n' ' ' <<<"$hold_events")"

# The captured plan: the caller's fields as signed, then the module's three.
mapfile -t captured < <(awk -F '\t' -v id="$plan_id_entry" \
    '$1 == id && $2 !~ /^(kid|signed_ms|hmac)$/ { print $2; print $3 }' <<<"$plan_entries")
((${#captured[@]} >= 20)) || fail "could not capture the plan's fields"
signed_ms=$(plan_field signed_ms)
mac=$(plan_field hmac)

# Entries in the guarded stream: a refused write must leave it as it was.
stream_length() {
    entries_as engine XRANGE "$stream" - + | awk -F '\t' '{ print $1 }' | sort -u |
        grep -c . || true
}
expect_guarded() {
    [[ "$reply" == "(error) GUARDED"* ]] || fail "$1 was not refused with GUARDED"
    [[ "$(stream_length)" == "$2" ]] || fail "$1 changed the guarded stream"
    echo "refused; the stream still holds $2 entry, the engine's"
}

# --- 9. Attacks ------------------------------------------------------------------------------

step "9. Attack: a plan written with plain XADD and no MAC, as any client of this Redis"
forged=()
for ((i = 0; i < ${#captured[@]}; i += 2)); do
    value=${captured[i + 1]}
    case "${captured[i]}" in
    plan_id) value="reconclose:$symbol:attacker:$(now_ms)" ;;
    qty) value=0.05 ;;
    esac
    forged+=("${captured[i]}" "$value")
done
run_as default XADD "$stream" '*' "${forged[@]}"
expect_guarded "plain XADD of a plan" 1

step "10. Attack: the same plan with a made-up kid, signed_ms and a random hmac"
run_as default XADD "$stream" '*' "${forged[@]}" kid "$kid" signed_ms "$(now_ms)" \
    hmac "$(random_hex 32)"
expect_guarded "XADD with a random hmac" 1

step "11. Attack: replay of the captured plan, MAC included, with plain XADD"
run_as default XADD "$stream" '*' "${captured[@]}" kid "$kid" signed_ms "$signed_ms" hmac "$mac"
expect_guarded "the replayed plan" 1

step "12. Attack: the captured plan re-signed with stolen engine credentials"
echo "(the module signs it: only the apply worker's dedupe record stands between it and a" \
    "second order)"
run_as engine RECONCILE.XADDSIGNED "$stream" '*' "${captured[@]}"
[[ "$reply" =~ ^\"([0-9]+-[0-9]+)\"$ ]] || fail "the engine user could not sign"
replay_entry=${BASH_REMATCH[1]}
wait_for "the apply worker's result for the replay" 10 result_for "$replay_entry"
result_entries=$(entries_as default XRANGE "$results" "$result_id" "$result_id")
print_entry "$result_id" <<<"$result_entries"
[[ "$(field_of "$result_id" status <<<"$result_entries")" == duplicate ]] ||
    fail "the re-signed replay was not recognised as a duplicate"
run_as default GET "quantum:apply:dedupe:$plan_id"
show_orders
((order_count == 2)) || fail "the replay placed an order"
echo "a duplicate: no second order"

step "13. Attack: the captured plan with side flipped to BUY, re-signed, under a fresh plan_id"
echo "(a fresh plan_id gets past the dedupe record; the attacker also sets the HOLD lease, which"
echo " the engine user may do. The engine is paused for this step, as if a drift kept the HOLD"
echo " in place: otherwise it clears the HOLD within a cycle and the plan is refused for that.)"
kill -STOP "${pids[engine]}"
flipped=()
for ((i = 0; i < ${#captured[@]}; i += 2)); do
    value=${captured[i + 1]}
    case "${captured[i]}" in
    plan_id) value="${value%:*}:$(now_ms)" ;;
    side) value=BUY ;;
    esac
    flipped+=("${captured[i]}" "$value")
done
run_as engine SET "$hold_key" 1 PX 60000
[[ "$reply" == OK ]] || fail "the engine user could not set the HOLD"
run_as engine RECONCILE.XADDSIGNED "$stream" '*' "${flipped[@]}"
[[ "$reply" =~ ^\"([0-9]+-[0-9]+)\"$ ]] || fail "the engine user could not sign"
flipped_entry=${BASH_REMATCH[1]}
wait_for "the apply worker's result for the flipped plan" 10 result_for "$flipped_entry"
result_entries=$(entries_as default XRANGE "$results" "$result_id" "$result_id")
print_entry "$result_id" <<<"$result_entries"
[[ "$(field_of "$result_id" status <<<"$result_entries")" == refused &&
    "$(field_of "$result_id" rule <<<"$result_entries")" == side ]] ||
    fail "the flipped plan was not refused by the side invariant"
show_orders
((order_count == 2)) || fail "the flipped plan placed an order"
[[ "$(paper position "$symbol")" == "$ledger_amt" ]] || fail "the position changed"
echo "refused under rule side: no order, the position still $ledger_amt"
kill -CONT "${pids[engine]}"
hold_gone() {
    [[ "$(as_user default EXISTS "$hold_key")" == 0 ]]
}
wait_for "the resumed engine clearing the HOLD" 10 hold_gone
echo "engine resumed; it found exchange and ledger in agreement and removed the HOLD"

# --- 14. Counters ----------------------------------------------------------------------------

step "14. What the module counted"
echo "default> INFO reconcile"
info=$(as_user default INFO reconcile | tr -d '\r') || fail "INFO reconcile did not answer"
indent <<<"$info"
info_field() {
    sed -n "s/^reconcile_$1://p" <<<"$info"
}
[[ "$(info_field signed_total)" == 3 ]] || fail "INFO: expected 3 signed entries"
[[ "$(info_field guard_denied_total)" == 3 ]] || fail "INFO: expected 3 refused writes"
[[ "$(info_field rejected_total)" == 0 ]] || fail "INFO: expected no rejected entry"
(($(info_field verified_total) >= 3)) || fail "INFO: expected at least 3 verified entries"

step "15. The workers' /metrics"
wait_for "the apply worker exporting the module's counters" 10 \
    metric_is "$apply_metrics" reconcile_module_guard_denied_total 3
wait_for "the apply worker reporting no plan left waiting" 10 \
    metric_is "$apply_metrics" reconcile_close_pending 0
echo "> curl http://$apply_metrics/metrics (apply worker)"
apply_text=$(curl -fsS --max-time 2 "http://$apply_metrics/metrics") ||
    fail "the apply worker's /metrics did not answer"
apply_lines='^(reconcile_close_(consumed|executed|guardrail_fail)_total|quantum_apply_dedupe'
apply_lines+='|reconcile_close_plan_to_order_seconds_count|reconcile_close_(pending|oldest_pending)'
apply_lines+='|reconcile_exchange_|reconcile_module_)'
# Labelled series still at zero are left out: every rule and status starts at zero.
grep -E "$apply_lines" <<<"$apply_text" | grep -Ev '\} 0$' | indent
apply_value() {
    awk -v m="$1" '$1 == m { print $2; exit }' <<<"$apply_text"
}
[[ "$(apply_value "reconcile_close_executed_total{status=\"success\"}")" == 1 ]] ||
    fail "apply metrics: expected one successful close"
[[ "$(apply_value quantum_apply_dedupe_hits_total)" == 1 ]] ||
    fail "apply metrics: expected one dedupe hit"
side_series="reconcile_close_guardrail_fail_total{rule=\"side\",symbol=\"$symbol\"}"
[[ "$(apply_value "$side_series")" == 1 ]] ||
    fail "apply metrics: expected one refusal under rule side"
[[ "$(apply_value reconcile_module_up)" == 1 ]] || fail "apply metrics: module not readable"

echo "> curl http://$engine_metrics/metrics (engine)"
engine_text=$(curl -fsS --max-time 2 "http://$engine_metrics/metrics") ||
    fail "the engine's /metrics did not answer"
engine_lines='^reconcile_(plans_published_total|hold_active|drift_seen_total|last_good_cycle'
engine_lines+='|cycle_duration_seconds_count)'
grep -E "$engine_lines" <<<"$engine_text" | indent
[[ "$(awk -v m="reconcile_plans_published_total{symbol=\"$symbol\"}" '$1 == m { print $2 }' \
    <<<"$engine_text")" == 1 ]] || fail "engine metrics: expected one published plan"
[[ "$(awk -v m="reconcile_hold_active{symbol=\"$symbol\"}" '$1 == m { print $2 }' \
    <<<"$engine_text")" == 0 ]] || fail "engine metrics: the HOLD still shows as active"

step "16. Stop"
for name in apply engine paper redis; do
    stop_process "$name"
done
echo "stopped the apply worker, the engine, the paper exchange and redis-server"
printf '\ndemo: every step happened, in %s s\n' \
    "$(awk -v ms=$(($(now_ms) - started_ms)) 'BEGIN { printf "%.1f", ms / 1000 }')"
