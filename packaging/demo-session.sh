#!/bin/bash
# The X session `hiber demo` starts (embedded in the hiber binary): a session
# bus on a private socket, Xvfb on display :D, a GTK 4 program, xclock, xeyes
# and an xterm whose shell counts (into DIR/count, five times a second) and
# takes commands. DIR/ready appears once every window is up.
# Usage: demo-session.sh D DIR
D=$1; DIR=$2
dbus-daemon --session --nofork --nopidfile --address="unix:path=$DIR/bus" &
Xvfb ":$D" -screen 0 1024x768x24 -nolisten tcp > "$DIR/xvfb.log" 2>&1 &
while [ ! -S "/tmp/.X11-unix/X$D" ] || [ ! -S "$DIR/bus" ]; do sleep 0.05; done
export DISPLAY=":$D" DBUS_SESSION_BUS_ADDRESS="unix:path=$DIR/bus"
# The GTK 4 program first, so the small clients stack above it.
GDK_BACKEND=x11 gtk4-demo > "$DIR/gtk.log" 2>&1 &
until xwininfo -name "GTK Demo" > /dev/null 2>&1; do sleep 0.05; done
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
