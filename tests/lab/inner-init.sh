#!/bin/sh
# PID 1 of the fresh PID/mount/UTS/IPC/cgroup(/net) namespaces created by up.sh
# (`unshare ... --fork --mount-proc`). Prepares a private /run, a private
# cgroup2 mount, read-only kernel tunables and the test units, then execs a
# real systemd as PID 1 of the namespace. Nothing mounted here reaches the host.
set -eu
LAB_DIR=${LAB_DIR:?}
LAB_TARGET=${LAB_TARGET:?}
# sysinit.target.wants entries that are safe and useful inside the sandbox.
LAB_KEEP_UNITS=${LAB_KEEP_UNITS:-systemd-journald.service}
UNITDIR=/run/systemd/system

# Every mount/umount below uses -n: libmount would otherwise create
# /run/mount/ (utab) in the host's /run before ours is mounted.
mount -n --make-rprivate /

# Private /run: the host's /run is never touched.
mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=64m routewatch-lab-run /run
mkdir -p /run/lock "$UNITDIR" /run/host /run/dbus /run/systemd/journald.conf.d
# Tell systemd (and everything that calls detect_container()) it is in a container.
echo routewatch-lab > /run/host/container-manager
echo routewatch-lab > /run/systemd/container

# Private cgroup2 hierarchy rooted at the cgroup namespace root (the
# routewatch-lab cgroup on the host): systemd runs in unified mode here
# whatever the host uses.
umount -n -R /sys/fs/cgroup
mount -n -t cgroup2 -o nosuid,nodev,noexec routewatch-lab-cgroup2 /sys/fs/cgroup

# Host-global kernel knobs become read-only inside (systemd would otherwise
# raise fs.nr_open, net.unix.max_dgram_qlen, ...). remount,bind changes only
# the per-mount flags, never the superblocks the host uses too.
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro,nosuid,nodev,noexec /proc/sys
mount -n -o remount,bind,ro,nosuid,nodev,noexec /sys

# Private /tmp and /dev/shm: services never litter the host's.
mount -n -t tmpfs -o mode=1777,nosuid,nodev,size=2g routewatch-lab-tmp /tmp
mount -n -t tmpfs -o mode=1777,nosuid,nodev,size=64m routewatch-lab-shm /dev/shm

# systemd as PID 1 opens, resets and writes to /dev/console: give it a file
# instead of the host's (serial) console.
: > "$LAB_DIR/state/console.log"
mount -n --bind "$LAB_DIR/state/console.log" /dev/console

hostname routewatch-lab

# Units go to the runtime unit dir of the inner systemd. @LAB_DIR@ in a unit
# becomes the absolute path of this directory (escaped for sed).
lab_dir_sed=$(printf '%s' "$LAB_DIR" | sed 's/[\\|&]/\\&/g')
for u in "$LAB_DIR"/units/*; do
    [ -f "$u" ] || continue
    sed "s|@LAB_DIR@|$lab_dir_sed|g" "$u" > "$UNITDIR/$(basename "$u")"
done
for d in "$LAB_DIR"/units.d/*.d; do
    [ -d "$d" ] || continue
    mkdir -p "$UNITDIR/$(basename "$d")"
    for f in "$d"/*; do
        [ -f "$f" ] || continue
        sed "s|@LAB_DIR@|$lab_dir_sed|g" "$f" > "$UNITDIR/$(basename "$d")/$(basename "$f")"
    done
done

# Units with default dependencies pull in sysinit.target, whose wanted units
# (udev trigger, sysctl, binfmt, tmpfiles, remount-fs, modules-load, ...) act
# on host-global state. Runtime-mask all of them: sysinit.target becomes an
# empty synchronisation point and ordinary units (DefaultDependencies=yes) work.
for w in /lib/systemd/system/sysinit.target.wants /etc/systemd/system/sysinit.target.wants \
         /lib/systemd/system/local-fs.target.wants /etc/systemd/system/local-fs.target.wants \
         /lib/systemd/system/swap.target.wants /etc/systemd/system/swap.target.wants; do
    [ -d "$w" ] || continue
    for u in "$w"/*; do
        [ -e "$u" ] || [ -L "$u" ] || continue
        n=$(basename "$u")
        case " $LAB_KEEP_UNITS " in *" $n "*) continue;; esac
        [ -e "$UNITDIR/$n" ] || ln -s /dev/null "$UNITDIR/$n"
    done
done
# Belt and braces: units that touch host-global state even when they are not in
# the .wants dirs above (e.g. added by systemd-fstab-generator), and
# emergency/rescue mode (sulogin on the console) on any local-fs failure.
for n in systemd-remount-fs.service systemd-fsck-root.service systemd-udevd.service \
         systemd-udev-trigger.service systemd-udev-settle.service systemd-sysctl.service \
         systemd-modules-load.service systemd-binfmt.service systemd-tmpfiles-setup.service \
         systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer systemd-random-seed.service \
         systemd-journal-flush.service systemd-journald-audit.socket systemd-update-utmp.service \
         emergency.target emergency.service rescue.target rescue.service; do
    ln -sf /dev/null "$UNITDIR/$n"
done

# journald (for `journalctl -u ...` inside): volatile, in the private /run
# only, no reading of or forwarding to the host's kmsg/console/wall/syslog.
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToConsole=no\nForwardToKMsg=no\nForwardToWall=no\nForwardToSyslog=no\n' \
    > /run/systemd/journald.conf.d/lab.conf

exec env -i container=routewatch-lab PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /lib/systemd/systemd --system --unit="$LAB_TARGET" --show-status=no --log-target=journal --log-level=info
