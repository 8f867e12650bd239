#!/bin/bash
# Run a command inside the lab started by up.sh: its mount, UTS, IPC, network
# (own, unless up.sh ran with LAB_NET=host), PID and cgroup namespaces. PIDs,
# 127.0.0.1 and the default system bus address then mean the same as for the
# lab's systemd. The exit status is the command's.
#
#   tests/lab/in.sh systemctl show -p MainPID rw-hang.service
#   tests/lab/in.sh curl -s http://127.0.0.1:18081/health
#   tests/lab/in.sh                     (an interactive shell)
set -euo pipefail
STATE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/state
[ -s "$STATE/inner.pid" ] && [ -s "$STATE/inner.start" ] || { echo "in.sh: lab not up (run up.sh)" >&2; exit 125; }
P=$(cat "$STATE/inner.pid")
[ "$(awk '{print $22}' "/proc/$P/stat" 2>/dev/null)" = "$(cat "$STATE/inner.start")" ] \
    || { echo "in.sh: lab PID $P is gone (run up.sh)" >&2; exit 125; }
# A host-side bus address (state/system_bus_socket -> /proc/<host pid>/...)
# does not resolve inside the PID namespace; inside, the default is right.
unset DBUS_SYSTEM_BUS_ADDRESS
[ $# -gt 0 ] || set -- bash
exec nsenter -t "$P" -m -u -i -n -p -C -- "$@"
