#!/usr/bin/env bash
# Check the shipped unit files with systemd-analyze, without installing,
# enabling or starting anything.
#
#   systemd/verify.sh [BINARY]
#
# BINARY stands in for /usr/local/bin/routewatch (systemd-analyze verify
# checks that ExecStart= points at an executable). Default: the first of
# target/release/routewatch and target/debug/routewatch that exists.
#
# The units are copied into a temporary directory with ExecStart= rewritten
# to BINARY, then:
#   1. systemd-analyze verify on both units: ANY output fails the check;
#   2. systemd-analyze security --offline=yes on the service: prints the
#      exposure score and fails if it rises above MAX_EXPOSURE (env, default
#      below), so a change that loosens the sandbox is noticed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

# Exposure as systemd-analyze prints it (0.0 best .. 10.0 worst), times 10
# for --threshold. Recorded value 2.0 (see the header of routewatch.service).
max_exposure=${MAX_EXPOSURE:-20}

if [[ $# -ge 1 ]]; then
    bin=$1
else
    bin=
    for candidate in "$repo/target/release/routewatch" "$repo/target/debug/routewatch"; do
        if [[ -x $candidate ]]; then
            bin=$candidate
            break
        fi
    done
    if [[ -z $bin ]]; then
        echo "verify.sh: no routewatch binary found; build one or pass a path" >&2
        exit 2
    fi
fi
if [[ ! -x $bin ]]; then
    echo "verify.sh: $bin is not an executable file" >&2
    exit 2
fi
bin=$(realpath "$bin")

if ! command -v systemd-analyze >/dev/null; then
    echo "verify.sh: systemd-analyze not found (Debian: apt-get install systemd)" >&2
    exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$here/routewatch.service" "$here/routewatch.timer" "$tmp/"
sed -i "s|^ExecStart=/usr/local/bin/routewatch |ExecStart=$bin |" "$tmp/routewatch.service"
if ! grep -q "^ExecStart=$bin " "$tmp/routewatch.service"; then
    echo "verify.sh: ExecStart= line not found in routewatch.service" >&2
    exit 1
fi

status=0

# --man=no: the units name no man pages, and the build machine need not have
# any installed. Output on stdout or stderr, or a non-zero exit, is a failure.
out=$(cd "$tmp" && systemd-analyze verify --man=no ./routewatch.service ./routewatch.timer 2>&1) || status=1
if [[ -n $out ]]; then
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "verify.sh: systemd-analyze verify reported:" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
echo "systemd-analyze verify: clean (routewatch.service, routewatch.timer)"

# --offline=yes reads the unit file itself, so no running manager is needed.
sec=$(cd "$tmp" && systemd-analyze security --offline=yes --no-pager --threshold="$max_exposure" ./routewatch.service 2>&1) || status=$?
score=$(printf '%s\n' "$sec" | sed -n 's/^→ Overall exposure level for [^:]*: //p')
score=${score%% *}
if [[ $status -ne 0 ]]; then
    printf '%s\n' "$sec" >&2
    echo "verify.sh: exposure ${score:-unknown} is above the allowed $((max_exposure / 10)).$((max_exposure % 10))" >&2
    exit 1
fi
echo "systemd-analyze security: exposure $score"
