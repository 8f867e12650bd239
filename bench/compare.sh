#!/usr/bin/env bash
# Compare routewatch with curl on the same routes of a local fixture server.
#
#   bench/compare.sh [--runs N]        (default 5 runs per scenario)
#
# Builds release (the routewatch binary and examples/fixture_server.rs), starts
# the fixture on 127.0.0.1 with a free port, writes probe files to a temporary
# directory, and for each scenario runs
#   routewatch check --config F --format json --quiet --no-recover --state-dir D
# and, on the same URLs,
#   curl --parallel --parallel-immediate --parallel-max 256 -K LIST
# alternating which goes first from one run to the next, after one untimed
# warm-up of each. Wall time comes from the shell's clock (nanoseconds), peak
# RSS from GNU time's "%M". Prints a markdown table of medians to stdout;
# progress and warnings go to stderr.
#
# Scenarios:
#   1. slow-20     20 routes /slow/50/iN, concurrency 256
#   2. slow-200    200 routes /slow/50/iN, concurrency 256
#   3. fast-2000   2000 routes /fast/iN, concurrency 256
#   4. hang-20     20 core routes /hang/iN, timeout 2s, retries 2, backoff
#                  500ms, max_backoff 10s: routewatch only. Every route must
#                  time out 3 times, so 6000 ms is the floor. The backoff
#                  delay counts from the start of the failed attempt, so after
#                  a 2 s timeout it has already passed and the retry starts at
#                  once: the floor is also the expected time.
#                  routewatch EXITS 1 here (a core route is unhealthy and
#                  --no-recover is set): that is the expected result, and the
#                  script does not stop on it.
#   5. fleet-1000x1      1000 targets x 1 route /fast/, the default
#                        concurrency and max_in_flight (no concurrency key).
#   6. fleet-1000x20     1000 targets x 20 routes /fast/ (20 000 routes), the
#                        default concurrency and max_in_flight: what a fleet
#                        file looks like. The size of the state file this run
#                        leaves is printed under the table.
#   7. single-20000      1 target x 20 000 routes /fast/, concurrency 256.
#   8. https-200         1 target x 200 routes /fast/ over HTTPS, concurrency
#                        256: a second fixture server with --tls-ca makes a
#                        private CA; routewatch trusts it through tls.ca_file,
#                        curl through cacert.
#   9. validate          routewatch validate --config on the 2000-route and the
#                        20 000-route files (no traffic, no curl column), four
#                        times as many runs as the others: a run is a tenth of a
#                        second, so the median of more of them is cheap and a
#                        noisy moment on a shared machine moves it less.
#
# Needs only the repository, cargo, curl and GNU time (/usr/bin/time; Debian:
# apt-get install time). Traffic goes to 127.0.0.1 only; the fixture server
# is stopped on exit, whatever the exit.
set -euo pipefail

runs=5
while [[ $# -gt 0 ]]; do
    case $1 in
        --runs)
            runs=${2:?--runs needs a number}
            shift 2
            ;;
        --runs=*)
            runs=${1#--runs=}
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *)
            echo "compare.sh: unknown argument '$1' (usage: bench/compare.sh [--runs N])" >&2
            exit 2
            ;;
    esac
done
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "compare.sh: --runs wants a positive integer, got '$runs'" >&2
    exit 2
fi

gnu_time=/usr/bin/time
for tool in cargo curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "compare.sh: $tool not found" >&2
        exit 2
    fi
done
if ! [[ -x $gnu_time ]] || ! "$gnu_time" -f '%M' true >/dev/null 2>&1; then
    echo "compare.sh: GNU time not found at $gnu_time (Debian: apt-get install time)" >&2
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
routewatch=$target_dir/release/routewatch
fixture=$target_dir/release/examples/fixture_server

log() { printf '%s\n' "$*" >&2; }

log "building (release)..."
cargo build --release --example fixture_server --bin routewatch >&2

tmp=$(mktemp -d)
fixture_pid=
tls_pid=
cleanup() {
    local pid
    for pid in $fixture_pid $tls_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$fixture" --port 0 >"$tmp/fixture.out" 2>"$tmp/fixture.err" &
fixture_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/fixture.out")
    [[ -n $port ]] && break
    if ! kill -0 "$fixture_pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ -z $port ]]; then
    log "compare.sh: fixture server did not start:"
    cat "$tmp/fixture.err" >&2
    exit 1
fi
base=http://127.0.0.1:$port
log "fixture server on $base (pid $fixture_pid)"

"$fixture" --port 0 --tls-ca "$tmp/ca.pem" >"$tmp/fixture-tls.out" 2>"$tmp/fixture-tls.err" &
tls_pid=$!
tls_port=
for _ in $(seq 100); do
    tls_port=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/fixture-tls.out")
    [[ -n $tls_port ]] && break
    if ! kill -0 "$tls_pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ -z $tls_port ]]; then
    log "compare.sh: TLS fixture server did not start:"
    cat "$tmp/fixture-tls.err" >&2
    exit 1
fi
tls_base=https://127.0.0.1:$tls_port
log "TLS fixture server on $tls_base (pid $tls_pid, private CA in $tmp/ca.pem)"

default_defaults="timeout: 10s, connect_timeout: 3s, retries: 2, backoff: 500ms, max_backoff: 10s, concurrency: 256, max_body: 64KiB"

# fleet_file NAME TARGETS ROUTES PATH-PREFIX DEFAULTS [BASE [CA]]: a probe file
# of TARGETS targets with ROUTES routes each on BASE (default: the plain
# fixture), and the matching curl config, one route per line. With one target
# the paths are PATH-PREFIX<i>, else PATH-PREFIX<t>-<i>. CA: trusted through
# tls.ca_file and curl's cacert.
fleet_file() {
    local name=$1 targets=$2 routes=$3 prefix=$4 defaults=$5 at=${6:-$base} ca=${7:-}
    local t i path
    {
        echo "defaults: { $defaults }"
        echo "targets:"
        for ((t = 1; t <= targets; t++)); do
            echo "  - name: bench$t"
            echo "    base_url: $at"
            [[ -n $ca ]] && echo "    tls: { ca_file: $ca }"
            echo "    routes:"
            for ((i = 1; i <= routes; i++)); do
                ((targets == 1)) && path=$prefix$i || path=$prefix$t-$i
                echo "      - { path: $path, class: core }"
            done
        done
    } >"$tmp/$name.yaml"
    {
        [[ -n $ca ]] && echo "cacert = \"$ca\""
        for ((t = 1; t <= targets; t++)); do
            for ((i = 1; i <= routes; i++)); do
                ((targets == 1)) && path=$prefix$i || path=$prefix$t-$i
                echo "url = \"$at$path\""
                echo "output = \"/dev/null\""
            done
        done
    } >"$tmp/$name.curl"
}

# probe_file NAME COUNT PATH-PREFIX [DEFAULTS]: one target of COUNT routes.
probe_file() {
    fleet_file "$1" 1 "$2" "$3" "${4:-$default_defaults}"
}

probe_file slow-20 20 /slow/50/i
probe_file slow-200 200 /slow/50/i
probe_file fast-2000 2000 /fast/i
probe_file hang-20 20 /hang/i \
    "timeout: 2s, connect_timeout: 3s, retries: 2, backoff: 500ms, max_backoff: 10s, concurrency: 256, max_body: 64KiB"
fleet_defaults="timeout: 10s, connect_timeout: 3s, retries: 2, backoff: 500ms, max_backoff: 10s, max_body: 64KiB"
fleet_file fleet-1000x1 1000 1 /fast/t "$fleet_defaults"
fleet_file fleet-1000x20 1000 20 /fast/t "$fleet_defaults"
probe_file single-20000 20000 /fast/i
fleet_file https-200 1 200 /fast/i "$default_defaults" "$tls_base" "$tmp/ca.pem"

# measure TAG CMD...: runs CMD under GNU time, stdout to $tmp/TAG.stdout,
# stderr to $tmp/TAG.stderr; sets wall_ms, rss_kib and rc.
measure() {
    local tag=$1
    shift
    local start end
    rc=0
    start=$(date +%s%N)
    "$gnu_time" -f '%M' -o "$tmp/$tag.time" "$@" >"$tmp/$tag.stdout" 2>"$tmp/$tag.stderr" || rc=$?
    end=$(date +%s%N)
    wall_ms=$(((end - start) / 1000000))
    # GNU time puts "Command exited with non-zero status N" before the format
    # output when the command fails; the number is on the last line.
    rss_kib=$(tail -n 1 "$tmp/$tag.time")
}

routewatch_check() {
    local name=$1 state=$tmp/state/$name-$2
    mkdir -p "$state"
    measure "rw-$name" "$routewatch" check --config "$tmp/$name.yaml" --format json --quiet \
        --no-recover --state-dir "$state"
}

curl_batch() {
    local name=$1
    # -s alone still draws the parallel progress meter (curl 7.88) on stderr.
    measure "curl-$name" curl --parallel --parallel-immediate --parallel-max 256 -s --no-progress-meter \
        -w '%{http_code}\n' -K "$tmp/$name.curl"
}

routewatch_validate() {
    measure "validate-$1" "$routewatch" validate --config "$tmp/$1.yaml"
}

# check_rc WHAT EXPECTED TAG: warn (with the tail of stderr) on a surprise.
check_rc() {
    if [[ $rc -ne $2 ]]; then
        log "WARNING: $1 exited $rc, expected $2; stderr:"
        tail -n 5 "$tmp/$3.stderr" >&2
        return 1
    fi
}

# count_json_outcomes TAG OUTCOME: routes with that outcome in a JSON report.
count_json_outcomes() {
    grep -oE "\"outcome\"[[:space:]]*:[[:space:]]*\"$2\"" "$tmp/$1.stdout" | wc -l
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
max() { sort -n | tail -n 1; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

rows=()
notes=()

# compare NAME COUNT: routewatch vs curl, alternating, medians.
compare() {
    local name=$1 count=$2 r
    local rw_ms=() rw_rss=() curl_ms=() curl_rss=() rw_flag="" curl_flag=""
    log "== $name: $count routes, $runs runs"
    routewatch_check "$name" warmup
    check_rc "routewatch ($name, warm-up)" 0 "rw-$name" || rw_flag=" (!)"
    local ok
    ok=$(count_json_outcomes "rw-$name" ok)
    if [[ $ok -ne $count ]]; then
        log "WARNING: routewatch reported $ok of $count routes ok ($name)"
        rw_flag=" (!)"
    fi
    curl_batch "$name"
    ok=$(grep -c '^200$' "$tmp/curl-$name.stdout" || true)
    if [[ $rc -ne 0 || $ok -ne $count ]]; then
        log "WARNING: curl exited $rc with $ok of $count answers 200 ($name)"
        curl_flag=" (!)"
    fi
    for ((r = 1; r <= runs; r++)); do
        local order=(rw curl)
        ((r % 2 == 0)) && order=(curl rw)
        for who in "${order[@]}"; do
            if [[ $who == rw ]]; then
                routewatch_check "$name" "$r"
                check_rc "routewatch ($name, run $r)" 0 "rw-$name" || rw_flag=" (!)"
                rw_ms+=("$wall_ms")
                rw_rss+=("$rss_kib")
            else
                curl_batch "$name"
                check_rc "curl ($name, run $r)" 0 "curl-$name" || curl_flag=" (!)"
                curl_ms+=("$wall_ms")
                curl_rss+=("$rss_kib")
            fi
        done
        log "   run $r: routewatch ${rw_ms[-1]} ms, curl ${curl_ms[-1]} ms"
    done
    local rwm cm
    rwm=$(printf '%s\n' "${rw_ms[@]}" | median)
    cm=$(printf '%s\n' "${curl_ms[@]}" | median)
    rows+=("| $name ($count routes) | $rwm$rw_flag | $cm$curl_flag | $(ratio "$rwm" "$cm") | $(mib "$(printf '%s\n' "${rw_rss[@]}" | max)") | $(mib "$(printf '%s\n' "${curl_rss[@]}" | max)") |")
}

hang() {
    local name=hang-20 count=20 r rw_ms=() rw_rss=() flag=""
    log "== $name: $count hung routes, $runs runs (routewatch exits 1 here: expected)"
    for ((r = 1; r <= runs; r++)); do
        routewatch_check "$name" "$r"
        check_rc "routewatch ($name, run $r)" 1 "rw-$name" || flag=" (!)"
        local timeouts
        timeouts=$(count_json_outcomes "rw-$name" timeout)
        if [[ $timeouts -ne $count ]]; then
            log "WARNING: routewatch reported $timeouts of $count routes as timeout ($name)"
            flag=" (!)"
        fi
        rw_ms+=("$wall_ms")
        rw_rss+=("$rss_kib")
        log "   run $r: routewatch $wall_ms ms (exit $rc)"
    done
    local rwm
    rwm=$(printf '%s\n' "${rw_ms[@]}" | median)
    rows+=("| $name (timeout 2s, retries 2) | $rwm$flag | floor 6000 ms | $(ratio "$rwm" 6000) (vs floor) | $(mib "$(printf '%s\n' "${rw_rss[@]}" | max)") | n/a |")
    notes+=("hang-20: 3 attempts x 2 s timeout = 6000 ms floor (the 500/1000 ms backoff counts from each attempt's start, so it has passed by the time an attempt times out); routewatch exits 1 (unhealthy, --no-recover): expected.")
}

validate() {
    local name=$1 r ms=() rss=() flag=""
    local n=$((runs * 4))
    log "== validate: $name, $n runs"
    routewatch_validate "$name"
    for ((r = 1; r <= n; r++)); do
        routewatch_validate "$name"
        check_rc "routewatch validate (run $r)" 0 "validate-$name" || flag=" (!)"
        ms+=("$wall_ms")
        rss+=("$rss_kib")
    done
    rows+=("| validate ($name file) | $(printf '%s\n' "${ms[@]}" | median)$flag | n/a | n/a | $(mib "$(printf '%s\n' "${rss[@]}" | max)") | n/a |")
}

compare slow-20 20
compare slow-200 200
compare fast-2000 2000
compare fleet-1000x1 1000
compare fleet-1000x20 20000
notes+=("fleet-1000x20: the state file after a run is $(stat -c %s "$tmp/state/fleet-1000x20-$runs/state.json") bytes.")
compare single-20000 20000
compare https-200 200
hang
validate fast-2000
validate single-20000

echo "routewatch $("$routewatch" --version 2>/dev/null | awk '{ print $NF }') vs $(curl --version | head -n 1 | awk '{ print $1, $2 }'), $runs runs, median wall time; peak RSS is the maximum over runs; $(nproc) CPUs"
echo
echo "| scenario | routewatch median ms | curl median ms | ratio | routewatch peak RSS MiB | curl peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
for note in "${notes[@]}"; do
    echo
    echo "$note"
done
if printf '%s\n' "${rows[@]}" | grep -q '(!)'; then
    echo
    echo "(!) a run exited with an unexpected code or an unexpected count of outcomes; see the warnings on stderr."
fi
