#!/bin/bash
# The corpus test's desktop, run as the test user: a session bus (started
# by a shell, as a login does), Xvfb, openbox, tmux, a VTE terminal running
# vim, a GTK 3 editor, a GTK 4/libadwaita app and the portal stack
# (xdg-desktop-portal with its GTK backend and the document portal, all
# activated through the bus as GTK apps do). DIR/ready appears once every
# window is up and the portals answer; a program that dies first is named on
# stderr and the script exits 1.
# Usage: corpus-session.sh D DIR   (XDG_RUNTIME_DIR set; TMUX_TMPDIR too)
D=$1; DIR=$2
trap 'kill $(jobs -p) 2> /dev/null' EXIT
alive() { kill -0 "$1" 2> /dev/null || { echo "$2 exited; see $DIR" >&2; exit 1; }; }
BUS_ADDR="unix:path=$XDG_RUNTIME_DIR/bus"
dbus-daemon --session --nofork --nopidfile --address="$BUS_ADDR" &
BUS=$!
Xvfb ":$D" -screen 0 1280x800x24 -nolisten tcp -noreset > "$DIR/xvfb.log" 2>&1 &
XVFB=$!
until [ -S "$XDG_RUNTIME_DIR/bus" ] && xwininfo -root -display ":$D" > /dev/null 2>&1; do
    alive $XVFB "Xvfb :$D"; alive $BUS dbus-daemon; sleep 0.05
done
export DISPLAY=":$D" DBUS_SESSION_BUS_ADDRESS="$BUS_ADDR" GDK_BACKEND=x11
# What a login's Xsession does: services the bus activates find the display.
dbus-update-activation-environment DISPLAY GDK_BACKEND
openbox --sm-disable > "$DIR/openbox.log" 2>&1 &
WM=$!
until xprop -root _NET_SUPPORTING_WM_CHECK 2> /dev/null | grep -q 'window id'; do
    alive $WM openbox; sleep 0.05
done
# One terminal, two tabs: a tmux client (its server is part of the session
# through it), and vim, the active one (the window takes its title).
xfce4-terminal --disable-server --geometry 80x20+0+0 \
    --title tmux-term -e "tmux new-session -s work bash --norc --noprofile" \
    --tab --title vim-term -e "vim -u NONE -N $DIR/vim.txt" \
    > "$DIR/terminal.log" 2>&1 &
TERM_PID=$!
mousepad "$DIR/mousepad.txt" > "$DIR/mousepad.log" 2>&1 &
EDITOR_PID=$!
gnome-calculator > "$DIR/calculator.log" 2>&1 &
CALC=$!
# The portal stack, activated as a GTK app's first portal call does.
until gdbus call --session --timeout 20 --dest org.freedesktop.portal.Desktop \
        --object-path /org/freedesktop/portal/desktop \
        --method org.freedesktop.portal.Settings.Read \
        org.freedesktop.appearance color-scheme > /dev/null 2>> "$DIR/portal.log"; do
    sleep 0.2
done
until gdbus call --session --timeout 20 --dest org.freedesktop.portal.Documents \
        --object-path /org/freedesktop/portal/documents \
        --method org.freedesktop.portal.Documents.GetMountPoint > /dev/null 2>> "$DIR/portal.log"; do
    sleep 0.2
done
until xwininfo -name vim-term > /dev/null 2>&1 \
    && xdotool search --name "mousepad.txt - Mousepad" > /dev/null 2>&1 \
    && xwininfo -name Calculator > /dev/null 2>&1; do
    alive $TERM_PID xfce4-terminal; alive $EDITOR_PID mousepad; alive $CALC gnome-calculator
    sleep 0.05
done
touch "$DIR/ready"
wait
