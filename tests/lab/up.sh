#!/bin/bash
# Start routewatch's lab: a real systemd 252+ as PID 1 of its own
# PID/mount/UTS/IPC/cgroup (+network) namespaces, with a real system D-Bus
# (dbus-daemon, socket-activated) and the fixture units of units/, in the
# background. Waits until every unit wanted by the lab target is active and
# every fixture listens. Idempotent: a healthy running lab is reused, a stale
# or half-dead one is torn down first.
#
#   tests/lab/up.sh            start (or reuse) the lab
#   . tests/lab/state/env      LAB_SYSTEMD_PID, LAB_NSENTER, LAB_DBUS_SYSTEM_BUS_ADDRESS, ...
#   tests/lab/in.sh CMD...     run CMD inside
#   tests/lab/down.sh          tear down exactly what up.sh started
#
# Environment: LAB_NET=private (default: own network namespace, the fixture
# ports exist only inside) | host (share the host's network; ports must be
# free); LAB_TIMEOUT=seconds to wait for the units (default 30).
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
STATE=$LAB_DIR/state
TARGET=routewatch-lab.target
CGNAME=routewatch-lab
TIMEOUT=${LAB_TIMEOUT:-30}
LAB_NET=${LAB_NET:-private}
case "$LAB_NET" in private) NETFLAG=--net;; host) NETFLAG=;; *) echo "up.sh: LAB_NET must be private|host" >&2; exit 1;; esac

die() { echo "up.sh: ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
T_START=$(now_ms)

[ "$(id -u)" = 0 ] || die "must run as root"
for b in unshare nsenter busctl systemctl dbus-daemon setsid flock ss; do
    command -v "$b" >/dev/null || die "missing $b (apt-get install -y systemd dbus util-linux iproute2)"
done
[ -x /lib/systemd/systemd ] || die "missing /lib/systemd/systemd (apt-get install -y systemd)"
[ -x /usr/bin/python3 ] || die "missing /usr/bin/python3 (apt-get install -y python3)"

# /run, /tmp and /dev/shm are private inside: the lab dir must be reachable.
case "$LAB_DIR/" in /tmp/*|/run/*|/dev/shm/*) die "$LAB_DIR is under /tmp, /run or /dev/shm, which are private inside the lab";; esac

mkdir -p "$STATE"
# One up/down at a time (down.sh takes the same lock unless we hold it).
if [ -z "${LAB_LOCK_HELD:-}" ]; then
    exec 9>"$STATE/.updown.lock"
    flock -w 120 9 || die "another up.sh/down.sh is still running"
    export LAB_LOCK_HELD=1
fi

# starttime (field 22 of /proc/PID/stat) guards against PID reuse.
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
alive_and_ours() { # name (inner|wrapper): recorded PID still the same process?
    local pid st
    [ -s "$STATE/$1.pid" ] && [ -s "$STATE/$1.start" ] || return 1
    pid=$(cat "$STATE/$1.pid"); st=$(cat "$STATE/$1.start")
    [ "$(starttime "$pid")" = "$st" ]
}
# Healthy = both recorded processes are the ones we started, the inner PID 1
# is not exiting (zombie, namespaces released) and still is systemd.
sandbox_running() {
    alive_and_ours inner && alive_and_ours wrapper || return 1
    local p; p=$(cat "$STATE/inner.pid")
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && [ -e "/proc/$p/ns/cgroup" ] \
        && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ]
}
nsx() { nsenter -t "$INNER" -m -u -i -n -p -C -- "$@"; }

# TCP ports of the fixture units (from their ExecStart= --port N).
unit_port() { [ -f "$LAB_DIR/units/$1" ] && sed -n 's/^ExecStart=.*--port[ =]\([0-9][0-9]*\).*/\1/p' "$LAB_DIR/units/$1" | head -1; }

WANTS=
wait_units_ready() {
    local deadline=$(( $(now_ms) + TIMEOUT * 1000 )) u p states failed
    # 1. systemd answers and knows what the lab target wants
    while :; do
        WANTS=$(nsx systemctl show -p Wants --value "$TARGET" 2>/dev/null || true)
        [ -n "$WANTS" ] && break
        [ "$(now_ms)" -lt "$deadline" ] || { echo "up.sh: systemd did not answer" >&2; return 1; }
        alive_and_ours inner || { echo "up.sh: inner systemd died" >&2; return 1; }
        sleep 0.05
    done
    # 2. every wanted unit active (a failed one is fatal at once)
    while :; do
        # shellcheck disable=SC2086
        states=$(nsx systemctl is-active $WANTS 2>/dev/null || true)
        [ -z "$(echo "$states" | grep -vx active)" ] && [ "$(echo "$states" | wc -l)" -eq "$(echo $WANTS | wc -w)" ] && break
        failed=$(paste -d' ' <(tr ' ' '\n' <<<"$WANTS" | grep .) <(echo "$states") | awk '$2=="failed"{print $1}')
        [ -z "$failed" ] || { echo "up.sh: failed: $failed" >&2; return 1; }
        [ "$(now_ms)" -lt "$deadline" ] || { echo "up.sh: not active in time:" >&2; paste -d' ' <(tr ' ' '\n' <<<"$WANTS" | grep .) <(echo "$states") >&2; return 1; }
        alive_and_ours inner || { echo "up.sh: inner systemd died" >&2; return 1; }
        sleep 0.05
    done
    # 3. every fixture listens on its port (active != listening for Type=simple)
    for u in $WANTS; do
        p=$(unit_port "$u") || true
        [ -n "$p" ] || continue
        until nsx ss -Hltn "sport = :$p" | grep -q .; do
            [ "$(now_ms)" -lt "$deadline" ] || { echo "up.sh: $u is not listening on :$p" >&2; return 1; }
            sleep 0.05
        done
    done
}

T_SPAWN=
if sandbox_running; then
    INNER=$(cat "$STATE/inner.pid")
    echo "up.sh: lab already running (inner systemd host PID $INNER)"
else
    # Leftovers of a previous run (crashed or killed): clean them first.
    if [ -e "$STATE/inner.pid" ] || [ -e "$STATE/wrapper.pid" ] || [ -e "$STATE/cgroup" ]; then
        echo "up.sh: stale state found, running down.sh first"
        "$LAB_DIR/down.sh" || true
    fi

    if [ "$LAB_NET" = host ]; then
        for u in "$LAB_DIR"/units/*.service; do
            p=$(unit_port "$(basename "$u")") || true
            [ -n "$p" ] || continue
            ! ss -Hltn "sport = :$p" | grep -q . || die "127.0.0.1:$p is already in use on the host"
        done
    fi

    # cgroup2 directory that becomes the root of the lab's cgroup namespace.
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then CG2=/sys/fs/cgroup                       # unified host
    elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then CG2=/sys/fs/cgroup/unified  # hybrid host
    else die "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"; fi
    CG=$CG2/$CGNAME
    mkdir -p "$CG"
    echo "$CG" > "$STATE/cgroup"

    T_SPAWN=$(now_ms)
    # Wrapper: records its PID, moves itself into $CG, then becomes `unshare`,
    # whose child (PID 1 inside) runs inner-init.sh -> exec systemd.
    # --kill-child: if unshare dies, the inner systemd (and with it the whole
    # PID namespace) is SIGKILLed too.
    LAB_DIR=$LAB_DIR LAB_TARGET=$TARGET setsid bash -c '
        echo $$ > "$0/wrapper.pid"; awk "{print \$22}" /proc/$$/stat > "$0/wrapper.start"
        echo $$ > "$1/cgroup.procs"
        exec unshare --pid --mount --uts --ipc --cgroup $3 --fork --mount-proc \
             --propagation private --kill-child=SIGKILL "$2/inner-init.sh"' \
        "$STATE" "$CG" "$LAB_DIR" "$NETFLAG" > "$STATE/unshare.log" 2>&1 < /dev/null 9>&- &

    # The inner PID 1 is the child of the wrapper once it is `unshare` (after the
    # exec). Before that, the wrapper's child is the short-lived awk writing
    # wrapper.start (the file can be non-empty while awk still runs), which must
    # not be taken for PID 1: read the children only once the exec happened.
    deadline=$(( $(now_ms) + 10000 )); INNER=
    while :; do
        if [ -s "$STATE/wrapper.pid" ]; then
            W=$(cat "$STATE/wrapper.pid")
            if [ "$(cat "/proc/$W/comm" 2>/dev/null)" = unshare ] && [ -s "$STATE/wrapper.start" ]; then
                INNER=$(awk '{print $1}' "/proc/$W/task/$W/children" 2>/dev/null || true)
            fi
        fi
        [ -n "$INNER" ] && break
        [ "$(now_ms)" -lt "$deadline" ] || { cat "$STATE/unshare.log" >&2; die "lab did not start"; }
        sleep 0.02
    done
    echo "$INNER" > "$STATE/inner.pid"; starttime "$INNER" > "$STATE/inner.start"
    # Wait until PID 1 inside is systemd (inner-init.sh exec'ed it).
    until [ "$(cat "/proc/$INNER/comm" 2>/dev/null)" = systemd ]; do
        alive_and_ours inner || { cat "$STATE/unshare.log" "$STATE/console.log" >&2 2>/dev/null; die "inner init died"; }
        [ "$(now_ms)" -lt "$deadline" ] || die "inner init did not exec systemd"
        sleep 0.02
    done
fi

if ! wait_units_ready; then
    echo "--- console.log" >&2; tail -30 "$STATE/console.log" >&2 2>/dev/null || true
    # shellcheck disable=SC2086
    nsx systemctl status --no-pager $WANTS >&2 2>/dev/null || true
    die "the lab did not become ready within ${TIMEOUT}s (the lab stays up for inspection; run down.sh)"
fi
T_READY=$(now_ms)

# Host-side view of the inner bus: a symlink through /proc/PID/root.
ln -sfn "/proc/$INNER/root/run/dbus/system_bus_socket" "$STATE/system_bus_socket"
BUS="unix:path=$STATE/system_bus_socket"

cat > "$STATE/env" <<EOF
# source me:  . $STATE/env
export LAB_DIR=$LAB_DIR
export LAB_SYSTEMD_PID=$INNER
export LAB_NSENTER="nsenter -t $INNER -m -u -i -n -p -C --"
export LAB_NET=$LAB_NET
export LAB_DBUS_SYSTEM_BUS_ADDRESS=$BUS
# Only for host-side clients that should talk to the *inner* bus (MainPID is
# namespace-local: never signal it from the host):
# export DBUS_SYSTEM_BUS_ADDRESS=$BUS
EOF

echo "up.sh: ready in $(( T_READY - T_START )) ms${T_SPAWN:+ (spawn -> all units ready: $(( T_READY - T_SPAWN )) ms)}"
echo "  inner systemd host PID : $INNER     run inside: $LAB_DIR/in.sh CMD..."
echo "  inner bus from the host: DBUS_SYSTEM_BUS_ADDRESS=$BUS"
echo "  network                : $LAB_NET"
for u in $WANTS; do
    case "$u" in *.service) ;; *) continue;; esac
    p=$(unit_port "$u") || true
    nsx systemctl show -p MainPID -p NRestarts -p ActiveState "$u" \
        | paste -sd' ' | sed "s|^|  $u${p:+ :$p}: |"
done
