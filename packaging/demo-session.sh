#!/bin/bash
# The X session `hiber demo` starts (embedded in the hiber binary): a session
# bus on a private socket, Xvfb on display :D, a GTK 4 program, xclock, xeyes
# and an xterm whose shell counts (into DIR/count, five times a second) and
# takes commands. DIR/ready appears once every window is up; if a program
# it waits for dies first, it says which on stderr and exits 1.
# Usage: demo-session.sh D DIR
D=$1; DIR=$2
# Giving up (below) ends what was started too.
trap 'kill $(jobs -p) 2> /dev/null' EXIT
# Fail at once, naming the program, rather than wait for it forever.
alive() { kill -0 "$1" 2> /dev/null || { echo "$2 exited; see $DIR" >&2; exit 1; }; }
dbus-daemon --session --nofork --nopidfile --address="unix:path=$DIR/bus" &
BUS=$!
Xvfb ":$D" -screen 0 1024x768x24 -nolisten tcp -noreset > "$DIR/xvfb.log" 2>&1 &
XVFB=$!
# The socket file appears at bind, before Xvfb listens: a client that
# connects then fails ("cannot open display"). Wait until it answers
# (-noreset: else the server resets when that probe disconnects, and a
# client connecting during the reset fails too).
until [ -S "$DIR/bus" ] && xwininfo -root -display ":$D" > /dev/null 2>&1; do
    alive $XVFB "Xvfb :$D"; alive $BUS dbus-daemon; sleep 0.05
done
export DISPLAY=":$D" DBUS_SESSION_BUS_ADDRESS="unix:path=$DIR/bus"
# The GTK 4 program first, so the small clients stack above it.
GDK_BACKEND=x11 gtk4-demo > "$DIR/gtk.log" 2>&1 &
GTK=$!
until xwininfo -name "GTK Demo" > /dev/null 2>&1; do alive $GTK gtk4-demo; sleep 0.05; done
xclock -update 1 -geometry 100x100+0+0 &
xeyes -geometry 100x100+200+0 &
export COUNT="$DIR/count"
xterm -geometry 70x12+0+200 -title xterm -e bash --norc --noprofile -c '
    (n=0; while :; do n=$((n+1)); echo $n > "$COUNT"; sleep 0.2; done) &
    echo "hiber demo: this shell counts into $COUNT"
    PS1="demo$ " exec bash --norc --noprofile -i' &
until xwininfo -name xterm > /dev/null 2>&1 && xwininfo -name xeyes > /dev/null 2>&1 \
    && xwininfo -name xclock > /dev/null 2>&1 && [ -s "$COUNT" ]; do sleep 0.05; done
touch "$DIR/ready"
wait
