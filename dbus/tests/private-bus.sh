#!/bin/bash
# A private system bus with hiberd's packaged files, for dbus/tests and
# packaging/bench-dbus.py. Run it in a new mount namespace of its own
# (`unshare --mount --propagation private bash private-bus.sh ...`): it
# installs packaging/dbus/* where the system looks for them, over overlays
# (/usr/share/dbus-1/system-services and system.d,
# /usr/share/polkit-1/actions, /usr/libexec, /var/lib), with only RULES in /etc/polkit-1/rules.d and no local bus
# policy in /etc/dbus-1/system.d, links /usr/libexec/hiberd (the path the
# activation file names) to HIBERD, then becomes the distribution's system
# bus (`dbus-daemon --system`) on /run/dbus/system_bus_socket, printing its
# address once it listens. polkitd and hiberd are started by activation.
# Everything goes with the namespace.
# Usage: private-bus.sh TMPDIR REPO HIBERD RULES
set -eu
T=$1 REPO=$2 HIBERD=$3 RULES=$4
mount -t tmpfs -o mode=0755 hiber-test "$T"
# Overlays only where files are added: a session's programs watch other
# directories (a session bus watches /usr/share/dbus-1/services), and an
# inotify watch inside an overlay has no file handle for a save to find.
for d in /usr/share/dbus-1/system-services /usr/share/dbus-1/system.d \
        /usr/share/polkit-1/actions /usr/libexec /var/lib; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$T/$n/upper" "$T/$n/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/$n/upper,workdir=$T/$n/work" "$d"
done
# The bus policy: the distribution's and the packaged file, none a local
# admin (or another test) put in /etc.
mount -t tmpfs -o mode=0755 hiber-test-policy /etc/dbus-1/system.d
mkdir -p /run/dbus
mount -t tmpfs -o mode=0755 hiber-test-run /run/dbus
install -m 0644 "$REPO/packaging/dbus/org.hiber.Hiber1.service" /usr/share/dbus-1/system-services/
install -m 0644 "$REPO/packaging/dbus/org.hiber.Hiber1.conf" /usr/share/dbus-1/system.d/
install -m 0644 "$REPO/packaging/dbus/org.hiber.Hiber1.policy" /usr/share/polkit-1/actions/
# Only the test's rules: none the machine's admin (or another test) left.
mkdir -p /etc/polkit-1/rules.d
mount -t tmpfs -o mode=0755 hiber-test-rules /etc/polkit-1/rules.d
install -m 0644 "$RULES" /etc/polkit-1/rules.d/50-hiber-tests.rules
ln -sf "$HIBERD" /usr/libexec/hiberd
install -d -m 0700 /var/lib/hiber
exec dbus-daemon --system --nofork --nopidfile --print-address=1
