#!/bin/bash
# Tear down ONLY what up.sh started, identified by the PIDs (and their start
# times, against PID reuse) it recorded in state/. SIGKILL of the inner PID 1
# makes the kernel kill every process of that PID namespace; the namespace's
# mounts (private /run, /tmp, cgroup2, ...) disappear with its last process.
# Finally the lab's cgroup directory tree is removed. Idempotent.
set -uo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
STATE=$LAB_DIR/state
CGNAME=routewatch-lab
now_ms() { date +%s%3N; }
T0=$(now_ms)
[ -d "$STATE" ] || { echo "down.sh: nothing to do"; exit 0; }

if [ -z "${LAB_LOCK_HELD:-}" ]; then
    exec 9>"$STATE/.updown.lock"
    flock -w 120 9 || { echo "down.sh: another up.sh/down.sh is still running" >&2; exit 1; }
    export LAB_LOCK_HELD=1
fi

starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
ours() { # name -> prints the pid if the recorded process is still the same one
    [ -s "$STATE/$1.pid" ] && [ -s "$STATE/$1.start" ] || return 1
    local pid; pid=$(cat "$STATE/$1.pid")
    [ "$(starttime "$pid")" = "$(cat "$STATE/$1.start")" ] && echo "$pid"
}
# A zombie counts as gone: the orphaned wrapper is reaped by the host's init,
# which can take a second; it holds no resources, and the start time still
# guards its PID against reuse.
running() { # pid start
    [ "$(starttime "$1")" = "$2" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
wait_gone() { # pid start timeout_in_20ms_steps
    local i=0
    while running "$1" "$2"; do
        [ $i -ge "$3" ] && return 1; i=$((i+1)); sleep 0.02
    done
}

did=
if P=$(ours inner); then
    S=$(cat "$STATE/inner.start")
    echo "down.sh: SIGKILL inner systemd (host PID $P) -> whole PID namespace"
    kill -KILL "$P" 2>/dev/null
    wait_gone "$P" "$S" 500 || echo "down.sh: WARNING: PID $P still alive after 10 s" >&2
    did=1
fi
if W=$(ours wrapper); then
    S=$(cat "$STATE/wrapper.start")
    if ! wait_gone "$W" "$S" 250; then
        echo "down.sh: killing leftover unshare wrapper $W"
        kill -KILL "$W" 2>/dev/null; wait_gone "$W" "$S" 250
    fi
    did=1
fi

# Remove the lab's cgroup tree (deepest first) once it is empty.
if [ -s "$STATE/cgroup" ]; then
    CG=$(cat "$STATE/cgroup")
    case "$CG" in /sys/fs/cgroup/$CGNAME|/sys/fs/cgroup/unified/$CGNAME) ;;
        *) echo "down.sh: refusing odd cgroup path $CG" >&2; exit 1;; esac
    if [ -d "$CG" ]; then
        left=
        for _ in $(seq 500); do
            # processes still present anywhere below? (they are being reaped)
            left=$(find "$CG" -name cgroup.procs -exec cat {} + 2>/dev/null | head -1)
            [ -z "$left" ] && break; sleep 0.02
        done
        [ -n "$left" ] && { echo "down.sh: WARNING: processes left in $CG:" >&2; find "$CG" -name cgroup.procs -exec cat {} + >&2; }
        find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$CG" ] && echo "down.sh: WARNING: could not remove $CG" >&2
    fi
    did=1
fi

# Keep the logs of the last run, drop the rest of the state.
for f in console.log unshare.log; do [ -f "$STATE/$f" ] && mv -f "$STATE/$f" "$STATE/last-$f"; done
rm -f "$STATE"/{inner,wrapper}.{pid,start} "$STATE/cgroup" "$STATE/env" "$STATE/system_bus_socket"
if [ -n "$did" ]; then echo "down.sh: done in $(( $(now_ms) - T0 )) ms"; else echo "down.sh: nothing to do"; fi
