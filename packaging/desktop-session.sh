#!/bin/bash
# A small X session started as one process tree, used by the desktop test
# (session/tests/desktop.rs) and the desktop benchmark
# (packaging/bench-desktop.py): a session bus on a private socket, Xvfb on
# display :D, a GTK 4 program, xclock, xeyes, xterm running bash, two bus
# monitors (dbus-monitor, gdbus monitor) and a python program with threads. Logs go to DIR.
# Usage: desktop-session.sh D DIR
D=$1; DIR=$2
dbus-daemon --session --nofork --nopidfile --address=unix:path=$DIR/bus &
Xvfb :$D -screen 0 1024x768x24 -nolisten tcp -noreset > $DIR/xvfb.log 2>&1 &
# The socket file appears at bind, before Xvfb listens: a client that
# connects then fails ("cannot open display"). Wait until it answers
# (-noreset: else the server resets when that probe disconnects, and a
# client connecting during the reset fails too).
until [ -S $DIR/bus ] && xwininfo -root -display :$D > /dev/null 2>&1; do sleep 0.05; done
export DISPLAY=:$D DBUS_SESSION_BUS_ADDRESS=unix:path=$DIR/bus
# The GTK 4 program first, so the small clients stack above it.
GDK_BACKEND=x11 gtk4-demo > $DIR/gtk.log 2>&1 &
until xwininfo -name "GTK Demo" > /dev/null 2>&1; do sleep 0.05; done
xclock -update 1 -geometry 100x100+0+0 &
xeyes -geometry 100x100+200+0 &
xterm -geometry 60x10+0+200 -e bash --norc --noprofile &
dbus-monitor --session "type='signal',interface='org.hiber.Test'" > $DIR/monitor.log &
gdbus monitor --session --dest org.freedesktop.DBus > $DIR/gdbus.log &
python3 -c '
import threading, time
lock = threading.Lock(); counts = [0] * 3; total = 0
def work(i):
    global total
    while True:
        with lock:
            counts[i] += 1; total += 1
        time.sleep(0.002)
for i in range(3):
    threading.Thread(target=work, args=(i,), daemon=True).start()
n = 0
while True:
    n += 1
    with lock:
        print(n, total == sum(counts), flush=True)
    time.sleep(0.02)
' > $DIR/py.log &
wait
