#!/usr/bin/env bash
# Measures the module against plain Redis on this machine, side by side in one run, and writes
# the table to BENCHMARKS.md (or, with BENCH_SHORT=1, a quick smoke run to stdout only).
#
# Every figure is a ratio of two measurements taken on the same server in alternating rounds,
# so a busy machine shifts both sides alike. Nothing here asserts on time: a slow run is
# reported, never failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=${RECONCILE_MODULE:-$root/target/release/libreconcile.so}
redis_server=${REDIS_SERVER:-redis-server}
short=${BENCH_SHORT:-0}
if [[ "$short" == 1 ]]; then
    requests=2000
    rounds=1
    mac_iterations=2000
else
    requests=${BENCH_REQUESTS:-200000}
    rounds=${BENCH_ROUNDS:-5}
    mac_iterations=200000
fi
clients=20
pipeline=16

workdir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$workdir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME [module args...]: starts a server and leaves its port in $port.
port=
start_server() {
    local name=$1
    shift
    port=$(free_port)
    mkdir -p "$workdir/$name"
    local load=()
    if (($# > 0)); then
        load=(--loadmodule "$module" "$@")
    fi
    "$redis_server" --port "$port" --bind 127.0.0.1 --dir "$workdir/$name" --save "" \
        --appendonly no --logfile "$workdir/$name/redis.log" "${load[@]}" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        if redis-cli -p "$port" PING >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "bench: $name did not start" >&2
    tail -n 5 "$workdir/$name/redis.log" >&2
    exit 1
}

# rps PORT ARGS...: requests per second redis-benchmark measured for one command.
rps() {
    local port=$1
    shift
    rps_n "$port" "$requests" "$@"
}

# rps_n PORT REQUESTS ARGS...: the same with its own request count.
rps_n() {
    local port=$1 n=$2
    shift 2
    redis-benchmark -p "$port" -n "$n" -c "$clients" -P "$pipeline" --csv "$@" \
        | tail -n 1 | cut -d, -f2 | tr -d '"'
}

# server_cpu PORT: the server's CPU time so far (user and system, all threads), in microseconds.
server_cpu() {
    redis-cli -p "$1" INFO cpu | tr -d '\r' | awk -F: '
        $1 == "used_cpu_sys" || $1 == "used_cpu_user" {total += $2}
        END {printf "%.0f", total * 1000000}'
}

# per_call BEFORE AFTER CALLS: CPU microseconds per call between two server_cpu readings.
per_call() {
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.3f", (b - a) / n}'
}

median() {
    sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
}

umask 077
printf 'bench %s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$workdir/keyring"
stream=quantum:stream:reconcile.close
# The plain XADD's stream: a name of the same length, so that both sides hash and compare as
# many key bytes.
plain_stream=quantum:stream:reconcile.plain
start_server guarded keyring "$workdir/keyring" guard "$stream" max-age-ms 604800000
guarded=$port
start_server plain
plain=$port

# The 13 fields of a close plan, as the engine publishes them.
plan=(plan_id reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123456 decision RECONCILE_CLOSE
    symbol BTCUSDT side SELL type MARKET qty 0.002 reduceOnly true reason reconcile_drift
    source p3.4 signature a1b2c3d4e5f6 exchange_amt 0.012 ledger_amt 0.010 ts 1737846123456)

echo "bench: $requests requests per measurement, $rounds rounds, $clients clients," \
    "pipeline $pipeline" >&2

# 1. Signing against a plain XADD of the same fields, on the same server.
# Beside the rates, the server's own CPU time per call, read from INFO cpu around each run:
# it leaves out the benchmark client, which shares the machine, and counts SHA-256 as the
# hardware runs it.
signed=()
xadd=()
signed_cpu=()
xadd_cpu=()
for _ in $(seq "$rounds"); do
    start=$(server_cpu "$guarded")
    signed+=("$(rps "$guarded" RECONCILE.XADDSIGNED "$stream" MAXLEN '~' 10000 '*' "${plan[@]}")")
    middle=$(server_cpu "$guarded")
    xadd+=("$(rps "$guarded" XADD "$plain_stream" MAXLEN '~' 10000 '*' "${plan[@]}")")
    end=$(server_cpu "$guarded")
    signed_cpu+=("$(per_call "$start" "$middle" "$requests")")
    xadd_cpu+=("$(per_call "$middle" "$end" "$requests")")
done
signed_rps=$(printf '%s\n' "${signed[@]}" | median)
xadd_rps=$(printf '%s\n' "${xadd[@]}" | median)
signed_cpu_us=$(printf '%s\n' "${signed_cpu[@]}" | median)
xadd_cpu_us=$(printf '%s\n' "${xadd_cpu[@]}" | median)

# 2. The guard's cost: GET and SET with the module loaded against a server without it.
# Beside the rates, each server's CPU time per request, as for signing above.
# XADD stands for the long commands of other services: a plan's fields, to an unguarded stream.
declare -A cmd_rps cmd_cpu
for cmd in GET SET XADD; do
    with=()
    without=()
    with_cpu=()
    without_cpu=()
    for _ in $(seq "$rounds"); do
        args=("$cmd" bench:key)
        [[ "$cmd" == SET ]] && args+=(value)
        [[ "$cmd" == XADD ]] && args=(XADD "$plain_stream" MAXLEN '~' 10000 '*' "${plan[@]}")
        start=$(server_cpu "$guarded")
        with+=("$(rps "$guarded" "${args[@]}")")
        with_cpu+=("$(per_call "$start" "$(server_cpu "$guarded")" "$requests")")
        start=$(server_cpu "$plain")
        without+=("$(rps "$plain" "${args[@]}")")
        without_cpu+=("$(per_call "$start" "$(server_cpu "$plain")" "$requests")")
    done
    cmd_rps[$cmd,with]=$(printf '%s\n' "${with[@]}" | median)
    cmd_rps[$cmd,without]=$(printf '%s\n' "${without[@]}" | median)
    cmd_cpu[$cmd,with]=$(printf '%s\n' "${with_cpu[@]}" | median)
    cmd_cpu[$cmd,without]=$(printf '%s\n' "${without_cpu[@]}" | median)
done

# 2b. The same cost in instructions: redis-server under callgrind, one client with pipeline 16
# so that every read carries the same batch, --hz 1 so that the timer adds next to nothing.
# Two runs of different lengths per case; their difference divided by the extra requests is
# the server's instructions per request, start-up and shutdown cancelled out. Instruction
# counts leave out the kernel's share of each request, so the ratio understates the
# throughput ratio slightly; unlike throughput, it does not move with the machine's load.
callgrind_total() {
    local with=$1 n=$2
    shift 2
    local dir="$workdir/callgrind-$with-$n-$1"
    mkdir -p "$dir"
    local p load=()
    p=$(free_port)
    [[ "$with" == with ]] && load=(--loadmodule "$module" keyring "$workdir/keyring" guard "$stream")
    valgrind --tool=callgrind --callgrind-out-file="$dir/out" "$redis_server" --port "$p" \
        --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no --hz 1 \
        --logfile "$dir/redis.log" "${load[@]}" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        redis-cli -p "$p" PING >/dev/null 2>&1 && break
        sleep 0.1
    done
    [[ -n "$callgrind_setup" ]] && "$callgrind_setup" "$p"
    redis-benchmark -p "$p" -n "$n" -c 1 -P "$pipeline" -q "$@" >/dev/null
    redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    wait "$pid" || true
    # Valgrind does not emulate the SHA extensions, so under it sha2 falls back to its
    # portable code, which costs many times the instructions the hardware path does. SHA-256
    # compression is therefore left out here; the MAC rows give its cost on the hardware.
    local total sha
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/out")
    sha=$(callgrind_annotate --threshold=100 "$dir/out" 2>/dev/null \
        | awk '/sha2::sha256/ {gsub(",", "", $1); sum += $1} END {print sum + 0}')
    echo $((total - sha))
}
# 100 signed entries pending in the group bench, on the server at port $1, for the reads.
pending_100() {
    {
        for _ in $(seq 100); do echo "RECONCILE.XADDSIGNED $stream * ${plan[*]}"; done
        echo "XGROUP CREATE $stream bench 0"
        echo "XREADGROUP GROUP bench reader COUNT 100 STREAMS $stream >"
    } | redis-cli -p "$1" >/dev/null
}
callgrind_setup=
declare -A instr
if command -v valgrind >/dev/null; then
    if [[ "$short" == 1 ]]; then short_n=500 long_n=1500; else short_n=5000 long_n=25000; fi
    for cmd in GET SET; do
        args=("$cmd" bench:key)
        [[ "$cmd" == SET ]] && args+=(value)
        for with in with without; do
            first=$(callgrind_total "$with" "$short_n" "${args[@]}")
            second=$(callgrind_total "$with" "$long_n" "${args[@]}")
            instr[$cmd,$with]=$(((second - first) / (long_n - short_n)))
        done
    done
    # Signing against a plain XADD of the same fields, both on a server with the module.
    if [[ "$short" == 1 ]]; then short_n=200 long_n=600; else short_n=1000 long_n=5000; fi
    for add in signed plain; do
        if [[ "$add" == signed ]]; then
            args=(RECONCILE.XADDSIGNED "$stream" MAXLEN '~' 10000 '*' "${plan[@]}")
        else
            args=(XADD "$plain_stream" MAXLEN '~' 10000 '*' "${plan[@]}")
        fi
        first=$(callgrind_total with "$short_n" "${args[@]}")
        second=$(callgrind_total with "$long_n" "${args[@]}")
        instr[add,$add]=$(((second - first) / (long_n - short_n)))
    done
    # The 100-entry history read, both commands on a server with the module, per entry.
    if [[ "$short" == 1 ]]; then short_n=20 long_n=60; else short_n=50 long_n=250; fi
    callgrind_setup=pending_100
    for read in verified native; do
        if [[ "$read" == verified ]]; then cmd=RECONCILE.XREADVERIFIED; else cmd=XREADGROUP; fi
        args=("$cmd" GROUP bench reader COUNT 100 STREAMS "$stream" 0)
        first=$(callgrind_total with "$short_n" "${args[@]}")
        second=$(callgrind_total with "$long_n" "${args[@]}")
        instr[read,$read]=$(((second - first) / (long_n - short_n) / 100))
    done
    callgrind_setup=
else
    echo "bench: valgrind is not installed; the instruction counts are left out" >&2
    for key in GET,with GET,without SET,with SET,without read,verified read,native add,signed \
        add,plain; do
        instr[$key]=n/a
    done
fi
instr_ratio() {
    if [[ "$1" == n/a ]]; then echo n/a; else ratio "$2" "$1"; fi
}

# 3. Reading 100 entries: a group's history read, verified against native, over the same
# 100 pending entries (the verified history read checks every MAC).
redis-cli -p "$guarded" XGROUP CREATE "$stream" bench 0 >/dev/null
redis-cli -p "$guarded" XREADGROUP GROUP bench reader COUNT 100 STREAMS "$stream" '>' >/dev/null
# Each request returns 100 entries; a twentieth of the requests runs long enough (several
# seconds a side) for the machine's moment-to-moment load to even out.
read_requests=$((requests / 20 > 200 ? requests / 20 : 200))
verified=()
native=()
for _ in $(seq "$rounds"); do
    verified+=("$(rps_n "$guarded" "$read_requests" RECONCILE.XREADVERIFIED GROUP bench reader \
        COUNT 100 STREAMS "$stream" 0)")
    native+=("$(rps_n "$guarded" "$read_requests" XREADGROUP GROUP bench reader COUNT 100 \
        STREAMS "$stream" 0)")
done
verified_rps=$(printf '%s\n' "${verified[@]}" | median)
native_rps=$(printf '%s\n' "${native[@]}" | median)
delivered=$(redis-cli -p "$guarded" XREADGROUP GROUP bench reader COUNT 100 STREAMS "$stream" 0 \
    | grep -c '^[0-9]*-[0-9]*$' || true)

# 4. The MAC per entry against the hardware floor.
mac=$(cargo run --release -q -p reconcile-core --example mac_cost -- "$mac_iterations")
mac_value() { awk -v k="$1" '$1 == k {print $2}' <<<"$mac"; }

# 5. Plan to order: the apply worker on the module, a minimal consumer on the module, and the
# same minimal consumer with client-side signing on plain Redis (the replaced design).
plan_args=(--plans "${BENCH_PLANS:-10000}")
[[ "$short" == 1 ]] && plan_args=(--short)
plan_out=$(RECONCILE_MODULE="$module" REDIS_SERVER="$redis_server" \
    cargo run --release -q -p reconcile-bench --bin plan-latency -- "${plan_args[@]}")
plan_value() { awk -v k="$1" '$1 == k {print $2}' <<<"$plan_out"; }
plan_row() {
    local what=$1 guard=$2 base=$3 target=$4 ratio
    if [[ "$what" == *"(ms)" ]]; then
        ratio=$(ratio "$(plan_value "$base")" "$(plan_value "$guard")")
    else
        ratio=$(ratio "$(plan_value "$guard")" "$(plan_value "$base")")
    fi
    echo "| $what | $(plan_value "$guard") | $(plan_value "$base") | $ratio | $target |"
}

entries_verified=$(awk -v r="$verified_rps" 'BEGIN {printf "%.0f", r * 100}')
entries_native=$(awk -v r="$native_rps" 'BEGIN {printf "%.0f", r * 100}')
table=$(
    cat <<EOF
| measurement | reconcile-guard | baseline | ratio | target |
|---|---|---|---|---|
| RECONCILE.XADDSIGNED vs XADD, the 13 fields of a plan (req/s) | $signed_rps | $xadd_rps | $(ratio "$signed_rps" "$xadd_rps") | >= 0.85 |
| RECONCILE.XADDSIGNED vs XADD, the 13 fields of a plan (server CPU time per call, µs, INFO cpu; ratio is XADD/XADDSIGNED) | $signed_cpu_us | $xadd_cpu_us | $(ratio "$xadd_cpu_us" "$signed_cpu_us") | >= 0.85 |
| RECONCILE.XADDSIGNED vs XADD, the 13 fields of a plan (server instructions per call outside SHA-256, callgrind; ratio is XADD/XADDSIGNED) | ${instr[add,signed]} | ${instr[add,plain]} | $(instr_ratio "${instr[add,signed]}" "${instr[add,plain]}") | >= 0.85 |
| RECONCILE.XREADVERIFIED vs XREADGROUP, COUNT 100 (entries/s) | $entries_verified | $entries_native | $(ratio "$verified_rps" "$native_rps") | >= 0.80 |
| RECONCILE.XREADVERIFIED vs XREADGROUP, COUNT 100 (server instructions per entry outside SHA-256, callgrind; ratio is XREADGROUP/XREADVERIFIED) | ${instr[read,verified]} | ${instr[read,native]} | $(instr_ratio "${instr[read,verified]}" "${instr[read,native]}") | >= 0.80 |
| GET with the module vs without (req/s) | ${cmd_rps[GET,with]} | ${cmd_rps[GET,without]} | $(ratio "${cmd_rps[GET,with]}" "${cmd_rps[GET,without]}") | >= 0.98 |
| SET with the module vs without (req/s) | ${cmd_rps[SET,with]} | ${cmd_rps[SET,without]} | $(ratio "${cmd_rps[SET,with]}" "${cmd_rps[SET,without]}") | >= 0.98 |
| GET with the module vs without (server CPU time per request, µs, INFO cpu; ratio is without/with) | ${cmd_cpu[GET,with]} | ${cmd_cpu[GET,without]} | $(ratio "${cmd_cpu[GET,without]}" "${cmd_cpu[GET,with]}") | >= 0.98 |
| SET with the module vs without (server CPU time per request, µs, INFO cpu; ratio is without/with) | ${cmd_cpu[SET,with]} | ${cmd_cpu[SET,without]} | $(ratio "${cmd_cpu[SET,without]}" "${cmd_cpu[SET,with]}") | >= 0.98 |
| XADD of a plan's fields to an unguarded stream, with the module vs without (req/s) | ${cmd_rps[XADD,with]} | ${cmd_rps[XADD,without]} | $(ratio "${cmd_rps[XADD,with]}" "${cmd_rps[XADD,without]}") | |
| XADD of a plan's fields to an unguarded stream, with the module vs without (server CPU time per request, µs, INFO cpu; ratio is without/with) | ${cmd_cpu[XADD,with]} | ${cmd_cpu[XADD,without]} | $(ratio "${cmd_cpu[XADD,without]}" "${cmd_cpu[XADD,with]}") | |
| GET with the module vs without (server instructions per request, callgrind; ratio is without/with) | ${instr[GET,with]} | ${instr[GET,without]} | $(instr_ratio "${instr[GET,with]}" "${instr[GET,without]}") | >= 0.98 |
| SET with the module vs without (server instructions per request, callgrind; ratio is without/with) | ${instr[SET,with]} | ${instr[SET,without]} | $(instr_ratio "${instr[SET,with]}" "${instr[SET,without]}") | >= 0.98 |
| MAC of one plan ($(mac_value encoded_bytes) bytes encoded) vs HMAC-SHA256 in one piece (ns) | $(mac_value sign_ns) | $(mac_value hmac_one_piece_ns) | $(ratio "$(mac_value hmac_one_piece_ns)" "$(mac_value sign_ns)") | |
| HMAC-SHA256 in one piece vs bare SHA-256 of the same bytes (ns) | $(mac_value hmac_one_piece_ns) | $(mac_value sha256_floor_ns) | $(ratio "$(mac_value sha256_floor_ns)" "$(mac_value hmac_one_piece_ns)") | |
$(plan_row "Plan to order p50, $(plan_value plans) plans one at a time: apply worker on the module vs client-signing consumer (ms)" plan_to_order_p50_ms baseline_plan_to_order_p50_ms "<= 1 ms")
$(plan_row "Plan to order p99, same plans (ms)" plan_to_order_p99_ms baseline_plan_to_order_p99_ms "<= 5 ms")
$(plan_row "Burst of $(plan_value burst_plans) plans cleared: apply worker on the module vs client-signing consumer (plans/s)" burst_plans_per_s baseline_burst_plans_per_s ">= 2000")
$(plan_row "Plan to order p50: minimal consumer on the module vs client-signing consumer (ms)" minimal_plan_to_order_p50_ms baseline_plan_to_order_p50_ms "")
$(plan_row "Plan to order p99: minimal consumer on the module vs client-signing consumer (ms)" minimal_plan_to_order_p99_ms baseline_plan_to_order_p99_ms "")
$(plan_row "Burst cleared: minimal consumer on the module vs client-signing consumer (plans/s)" minimal_burst_plans_per_s baseline_burst_plans_per_s "")
EOF
)

echo "$table"
if ((delivered != 100)); then
    echo "bench: the read measurement saw $delivered pending entries, not 100" >&2
    exit 1
fi
if [[ "$short" == 1 ]]; then
    echo "bench: short run; BENCHMARKS.md left as it is" >&2
    exit 0
fi

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
sha_ni=$(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)
{
    echo "# Benchmarks"
    echo
    echo "Measured by \`make bench\` ($(date -u +%Y-%m-%d)), on one machine in one run."
    echo
    echo "- machine: $(nproc) cores, $cpu, SHA extensions: $sha_ni"
    echo "- $("$redis_server" --version | cut -d' ' -f1-3)"
    echo "- $(rustc --version)"
    echo "- redis-benchmark: $requests requests ($read_requests for the 100-entry reads)," \
        "$clients clients, pipeline $pipeline; median of $rounds rounds; the benchmark client" \
        "shares the machine with the server"
    echo
    echo "$table"
    echo
    if [[ -f "$root/docs/benchmarks-notes.md" ]]; then
        cat "$root/docs/benchmarks-notes.md"
    fi
} >"$root/BENCHMARKS.md"
echo "bench: wrote BENCHMARKS.md" >&2
