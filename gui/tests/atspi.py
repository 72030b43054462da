#!/usr/bin/python3
"""Drive hiber-gtk the way a screen reader user would: through the
accessibility tree (AT-SPI), as the session's user, on its session bus.

atspi.py APP wait ROLE NAME [SECONDS]    until such an object shows
atspi.py APP gone ROLE NAME [SECONDS]    until none shows
atspi.py APP press ROLE NAME [SECONDS]   its first action (click)
atspi.py APP click TEXT [SECONDS]        the button whose label reads TEXT
atspi.py APP count ROLE PREFIX [SECONDS] how many objects' names start so
atspi.py APP find-in ROLE NAME CROLE CNAME [SECONDS]
                                         press CNAME inside the ROLE NAME
atspi.py APP wait-count ROLE PREFIX N [SECONDS]
                                         until exactly N names start so; prints them
atspi.py APP wait-any ROLE PREFIX...     until one shows; prints which
atspi.py APP label-or-count TEXT ROLE PREFIX N [SECONDS]
                                         which comes first: that label, or N such
atspi.py APP names ROLE                  print every NAME of that role
atspi.py APP state ROLE NAME             print its states
atspi.py APP unnamed                     controls without an accessible name
atspi.py APP save-measure BUS WINDOW N I F2 into WINDOW, Rename shows, Escape into
                                         it, it goes: I times; then Save Session (on
                                         past the check's dialog) and the same up to
                                         N times while the save job runs; prints one
                                         JSON line
atspi.py APP save-cancel BUS             Save Session, then Cancel Job once it may;
                                         prints one JSON line

BUS is the system bus's address (hiberd's jobs are read there); keys are
typed through XTEST from this process (an X client of the session that
lives through the save: a short-lived one, such as xdotool, could end
while hiberd looks at the session, and one of another user, such as
root's, makes the session unsavable).

Commands chain in one process with "--" between them.
Waits poll the tree until the deadline; a timeout says what was awaited
and prints the tree, exit status 1. NAME matches exactly; showing means
the object and its ancestors are VISIBLE (not on a hidden stack page).
"""
import ctypes
import json
import re
import select
import sys
import time

import pyatspi
from gi.repository import GLib


def app_named(name):
    desktop = pyatspi.Registry.getDesktop(0)
    for app in desktop:
        try:
            if app is not None and app.name == name:
                return app
        except Exception:
            continue
    return None


def visible(obj):
    try:
        return obj.getState().contains(pyatspi.STATE_VISIBLE)
    except Exception:
        return False


def walk(obj, shown=True):
    """(object, whether it and every ancestor below the application are
    visible): GTK 4.8 sets no SHOWING state, and the app marks the stack
    pages it does not show hidden."""
    try:
        yield obj, shown
        for child in obj:
            if child is not None:
                yield from walk(child, shown and visible(child))
    except Exception:
        return


def matches(app, role, name, prefix=False):
    out = []
    for o, shown in walk(app):
        try:
            if o.getRoleName() != role or not shown:
                continue
            n = o.name or ""
            if (n.startswith(name) if prefix else n == name):
                out.append(o)
        except Exception:
            continue
    return out


def distinct_names(objs):
    """The objects' names, each once, in order, read at once: a list being
    rebuilt holds its old and its new rows for a moment (CI saw two cards
    for one snapshot), and its objects may go while they are read."""
    return list(dict.fromkeys(o.name for o in objs))


def dump(app, out):
    def rec(o, depth):
        try:
            flag = "" if visible(o) else " (hidden)"
            out.write("  " * depth + f"[{o.getRoleName()}] {o.name!r}{flag}\n")
            for c in o:
                if c is not None:
                    rec(c, depth + 1)
        except Exception as e:
            out.write("  " * depth + f"! {e}\n")

    if app is None:
        out.write("(no such application on the accessibility bus)\n")
    else:
        rec(app, 0)


def until(what, deadline, probe):
    app = None
    while True:
        app = app_named(APP)
        if app is not None:
            # An object read as its window closes is gone by the time it
            # is asked anything more: the probe sees it as not there yet
            # (a dialog just answered is still in the tree for a moment).
            try:
                got = probe(app)
            except GLib.Error:
                got = None
            if got is not None:
                return got
        if time.monotonic() > deadline:
            sys.stderr.write(f"timed out waiting for {what}\n")
            dump(app, sys.stderr)
            sys.exit(1)
        time.sleep(0.1)


def press(obj):
    action = obj.queryAction()
    for i in range(action.nActions):
        if action.getName(i) in ("click", "press", "activate"):
            return action.doAction(i)
    return action.doAction(0)


APP = sys.argv[1]

class X:
    """Keys through XTEST and the top-level windows' map events, from
    libX11 itself (no python-xlib on Debian's minimal installs)."""

    MAP, UNMAP, DESTROY = 19, 18, 17

    def __init__(self):
        c = ctypes
        x = c.CDLL("libX11.so.6")
        self.xtst = c.CDLL("libXtst.so.6")
        x.XOpenDisplay.restype = c.c_void_p
        x.XOpenDisplay.argtypes = [c.c_char_p]
        x.XDefaultRootWindow.restype = c.c_ulong
        x.XDefaultRootWindow.argtypes = [c.c_void_p]
        x.XSelectInput.argtypes = [c.c_void_p, c.c_ulong, c.c_long]
        x.XStringToKeysym.restype = c.c_ulong
        x.XStringToKeysym.argtypes = [c.c_char_p]
        x.XKeysymToKeycode.restype = c.c_ubyte
        x.XKeysymToKeycode.argtypes = [c.c_void_p, c.c_ulong]
        x.XSetInputFocus.argtypes = [c.c_void_p, c.c_ulong, c.c_int, c.c_ulong]
        x.XSync.argtypes = [c.c_void_p, c.c_int]
        x.XFlush.argtypes = [c.c_void_p]
        x.XPending.argtypes = [c.c_void_p]
        x.XNextEvent.argtypes = [c.c_void_p, c.c_void_p]
        x.XConnectionNumber.argtypes = [c.c_void_p]
        self.xtst.XTestFakeKeyEvent.argtypes = [c.c_void_p, c.c_uint, c.c_int, c.c_ulong]
        # A window gone between two requests (BadWindow, BadMatch) must
        # not end the driver, as Xlib's default handler would.
        self.on_error = c.CFUNCTYPE(c.c_int, c.c_void_p, c.c_void_p)(lambda d, e: 0)
        x.XSetErrorHandler(self.on_error)
        self.x = x
        self.dpy = x.XOpenDisplay(None)
        if not self.dpy:
            sys.stderr.write("cannot open the X display\n")
            sys.exit(1)
        # SubstructureNotify on the root: every top-level window's map,
        # unmap and destruction (no window manager reparents them here).
        x.XSelectInput(self.dpy, x.XDefaultRootWindow(self.dpy), 1 << 19)
        x.XSync(self.dpy, 0)
        self.fd = x.XConnectionNumber(self.dpy)
        self.event = (ctypes.c_long * 24)()

    def key(self, window, name):
        """`name` pressed and released in `window`; the time just before."""
        x = self.x
        x.XSetInputFocus(self.dpy, window, 2, 0)  # RevertToParent, CurrentTime
        x.XSync(self.dpy, 0)
        code = x.XKeysymToKeycode(self.dpy, x.XStringToKeysym(name.encode()))
        t = time.monotonic()
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 1, 0)
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 0, 0)
        x.XFlush(self.dpy)
        return t

    def drain(self):
        while self.x.XPending(self.dpy):
            self.x.XNextEvent(self.dpy, self.event)

    def mapped(self):
        """Whether a top-level window mapped since the last look."""
        seen = False
        while self.x.XPending(self.dpy):
            self.x.XNextEvent(self.dpy, self.event)
            if ctypes.c_int.from_buffer(self.event).value == X.MAP:
                seen = True
        return seen

    def wait(self, what, types, window, deadline):
        """(type, window, time) of the first event of `types` (on `window`,
        unless None), read as it comes (select on the connection)."""
        while True:
            while self.x.XPending(self.dpy):
                self.x.XNextEvent(self.dpy, self.event)
                t = time.monotonic()
                kind = ctypes.c_int.from_buffer(self.event).value
                # XMapEvent, XUnmapEvent, XDestroyWindowEvent: type, serial,
                # send_event, display, event, window (longs on x86_64/arm64).
                win = self.event[5]
                if kind in types and (window is None or win == window):
                    return kind, win, t
            left = deadline - time.monotonic()
            if left <= 0:
                sys.stderr.write(f"timed out waiting for {what}\n")
                sys.exit(1)
            select.select([self.fd], [], [], left)


class Jobs:
    """hiberd's jobs, read on the system bus (Manager.Jobs, each Job's
    Operation and Stage)."""

    RUNNING_NOT = ("done", "failed")

    def __init__(self, address):
        from gi.repository import Gio, GLib
        self.GLib = GLib
        flags = (Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
                 | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION)
        self.bus = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)

    def prop(self, path, iface, name):
        GLib = self.GLib
        try:
            reply = self.bus.call_sync(
                "org.hiber.Hiber1", path, "org.freedesktop.DBus.Properties", "Get",
                GLib.Variant("(ss)", (iface, name)), GLib.VariantType("(v)"),
                0, 10000, None)
        except Exception:
            # The job's object went (it lingers 5 s after it ends).
            return None
        return reply.unpack()[0]

    def paths(self):
        return set(self.prop("/org/hiber/Hiber1", "org.hiber.Hiber1.Manager", "Jobs") or [])

    def stage(self, path):
        return self.prop(path, "org.hiber.Hiber1.Job", "Stage")

    def running(self, path):
        s = self.stage(path)
        return s is not None and s not in self.RUNNING_NOT

    def new_save(self, before):
        for p in sorted(self.paths() - before):
            if self.prop(p, "org.hiber.Hiber1.Job", "Operation") == "save":
                return p
        return None


def start_save(jobs, x):
    """Save Session pressed, and Save Anyway when the check's dialog comes:
    the new save job's path. Between the two only hiberd's jobs and the X
    server's map events are looked at, not the accessibility tree: an app
    that blocked its main loop once the job started would not answer it,
    and the job (gone 5 s after it ends) could be missed meanwhile."""
    before = jobs.paths()
    button = until("push button 'Save Session'", time.monotonic() + 30,
                   lambda a: matches(a, "push button", "Save Session") or None)
    x.drain()
    if not press(button[0]):
        sys.stderr.write("Save Session refused its action\n")
        sys.exit(1)
    deadline = time.monotonic() + 60
    while True:
        job = jobs.new_save(before)
        if job is not None:
            return job
        if x.mapped():
            # A window came: the check's dialog (the app answers now: it
            # has started no job yet).
            until("the check's dialog", time.monotonic() + 30,
                  lambda a: matches(a, "label", "Save This Session?") or None)
            run("click", ["Save Anyway"])
        if time.monotonic() > deadline:
            sys.stderr.write("timed out waiting for a save job\n")
            sys.exit(1)
        select.select([x.fd], [], [], 0.02)


def dialog_shown(title, present, deadline):
    """The time a dialog window titled `title` is (present) or is no longer
    among the app's top-level objects: a few calls the app answers from its
    main loop, read again every 5 ms (a walk of the whole tree takes
    hundreds of them)."""
    while True:
        app = app_named(APP)
        found = False
        try:
            for c in app or []:
                if c is not None and c.getRoleName() == "dialog" and c.name == title:
                    found = True
        except Exception:
            found = not present
        if found == present:
            return time.monotonic()
        if time.monotonic() > deadline:
            sys.stderr.write(f"timed out waiting for dialog {title!r} to {'show' if present else 'go'}\n")
            dump(app, sys.stderr)
            sys.exit(1)
        time.sleep(0.005)


def ms(a, b):
    return round((b - a) * 1000, 1)


def rename_samples(x, window, n, running, look_at):
    """Up to `n` samples of F2 in `window` (a window maps: the Rename
    dialog) and Escape in that window (it goes, and the accessibility tree
    no longer lists it), while `running()` says yes before each. The dialog
    is looked for in the accessibility tree after F2 in the samples whose
    index `look_at` takes: GTK lists a new window there 0.3 to 0.5 s after
    mapping it, even when idle, and a save would be over after a few such
    waits."""
    samples = []
    while len(samples) < n:
        before = running()
        if not before:
            break
        x.drain()
        t_f2 = x.key(window, "F2")
        _, dialog, t_map = x.wait("the Rename dialog's window to map", {X.MAP}, None,
                                  t_f2 + 60)
        # The answer came while the job ran: it still ran once the app
        # had mapped the dialog's window.
        mapped_during = running()
        sample = {
            "stage_before": before,
            "answered_during_job": bool(mapped_during),
            "f2_to_map_ms": ms(t_f2, t_map),
        }
        if look_at(len(samples)):
            t_shown = dialog_shown("Rename Snapshot", True, t_f2 + 60)
            sample["f2_to_shown_ms"] = ms(t_f2, t_shown)
        t_esc = x.key(dialog, "Escape")
        _, _, t_unmap = x.wait("the Rename dialog's window to go", {X.UNMAP, X.DESTROY},
                               dialog, t_esc + 60)
        t_gone = dialog_shown("Rename Snapshot", False, t_esc + 60)
        sample["escape_to_unmap_ms"] = ms(t_esc, t_unmap)
        sample["escape_to_gone_ms"] = ms(t_esc, t_gone)
        sample["stage_after"] = running()
        samples.append(sample)
    return samples


def save_measure(bus, window, n, idle_n):
    x = X()
    jobs = Jobs(bus)
    # The same with no job running, to compare.
    idle = rename_samples(x, window, idle_n, lambda: "idle", lambda i: True)
    job = start_save(jobs, x)
    started = time.monotonic()

    def stage_if_running():
        s = jobs.stage(job)
        return s if s is not None and s not in Jobs.RUNNING_NOT else None

    # Quick samples first, then one that waits for the tree.
    samples = rename_samples(x, window, n, stage_if_running, lambda i: i == 3)
    # This process is part of the session: it stays until the job ends.
    deadline = time.monotonic() + 300
    while jobs.running(job):
        if time.monotonic() > deadline:
            sys.stderr.write(f"timed out waiting for {job} to end\n")
            sys.exit(1)
        time.sleep(0.05)
    print(json.dumps({
        "job": job,
        "end": jobs.stage(job),
        "job_seen_ms": ms(started, time.monotonic()),
        "idle": idle,
        "samples": samples,
    }))


def save_cancel(bus):
    jobs = Jobs(bus)
    job = start_save(jobs, X())

    def cancelable(a):
        for o in matches(a, "push button", "Cancel Job"):
            try:
                if o.getState().contains(pyatspi.STATE_SENSITIVE):
                    return o
            except Exception:
                continue
        return None

    button = until("push button 'Cancel Job' to be sensitive", time.monotonic() + 60, cancelable)
    stage_at_cancel = jobs.stage(job)
    ok = press(button)
    outcomes = ["Cancelled; nothing was changed", "Session saved", "Saving Failed"]

    def outcome(a):
        for text in outcomes:
            if matches(a, "label", text, prefix=True):
                return text
        return None

    said = until("the app to say how the save ended", time.monotonic() + 300, outcome)
    deadline = time.monotonic() + 300
    while jobs.running(job):
        if time.monotonic() > deadline:
            sys.stderr.write(f"timed out waiting for {job} to end\n")
            sys.exit(1)
        time.sleep(0.05)
    app = app_named(APP)
    print(json.dumps({
        "job": job,
        "pressed": bool(ok),
        "stage_at_cancel": stage_at_cancel,
        "said": said,
        "end": jobs.stage(job),
        "failure_dialog": bool(app is not None and matches(app, "label", "Saving Failed")),
    }))



def run(cmd, args):
    def seconds(i, default=30.0):
        # Late bound: commands that take a variable count of arguments
        # drop theirs from args first.
        return time.monotonic() + (float(args[i]) if len(args) > i else default)

    if cmd == "wait":
        role, name = args[0], args[1]
        until(f"{role} {name!r} in {APP}", seconds(2), lambda a: matches(a, role, name) or None)
        print("found")
    elif cmd == "gone":
        role, name = args[0], args[1]
        until(f"{role} {name!r} to go from {APP}", seconds(2), lambda a: True if not matches(a, role, name) else None)
        print("gone")
    elif cmd == "press":
        role, name = args[0], args[1]

        def actionable(a):
            # A GtkMenuButton shows as a button holding a button of the
            # same name: the inner one is the one that acts.
            return [o for o in matches(a, role, name) if o.queryAction().nActions > 0] or None

        objs = until(f"{role} {name!r} that acts in {APP}", seconds(2), actionable)
        ok = press(objs[0])
        print("pressed" if ok else "refused")
        if not ok:
            sys.exit(1)
    elif cmd == "click":
        # The button whose text a user reads: dialogs' buttons carry their
        # mnemonic in their accessible name, their label does not.
        text = args[0]

        def buttons_with_label(a):
            found = []
            for o in matches(a, "label", text):
                # A label read as its dialog closes is gone by the time
                # its parent is asked for: gone counts as not found.
                try:
                    parent = o.parent
                    if parent is not None and parent.getRoleName() == "push button":
                        found.append(parent)
                except Exception:
                    continue
            return found or None

        # A message dialog holds each response button twice (libadwaita
        # 1.2 lays them out in a row and in a column and shows one), and
        # GTK 4.8 marks both visible: the one not shown ignores a press.
        # Each is pressed in turn until the dialog closes. "pressed" is
        # said at the first press: a press that ends the session (Log
        # Out) ends this driver with it.
        buttons = until(f"a button reading {text!r} in {APP}", seconds(1), buttons_with_label)
        said = False
        for button in buttons:
            if not press(button):
                continue
            if not said:
                print("pressed", flush=True)
                said = True
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                app = app_named(APP)
                if app is None or not buttons_with_label(app):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        else:
            sys.stderr.write(f"no button reading {text!r} closed its dialog\n")
            dump(app_named(APP), sys.stderr)
            sys.exit(1)
    elif cmd == "count":
        role, prefix = args[0], args[1]
        app = until(f"{APP} on the accessibility bus", seconds(2), lambda a: a)
        print(len(matches(app, role, prefix, prefix=True)))
    elif cmd == "wait-count":
        role, prefix, n = args[0], args[1], int(args[2])
        args = args[3:]
        def names_if_n(a):
            try:
                names = distinct_names(matches(a, role, prefix, prefix=True))
            except Exception:
                return None
            return names if len(names) == n else None

        found = until(f"{n} {role} named {prefix!r}... in {APP}", seconds(0), names_if_n)
        for name in found:
            print(name)
    elif cmd == "wait-any":
        # wait-any ROLE NAME [NAME...]: the first of these names to show.
        role, names = args[0], args[1:]
        args = []

        def first(a):
            for n in names:
                if matches(a, role, n, prefix=True):
                    return n
            return None

        print(until(f"{role} named one of {names!r} in {APP}", seconds(0), first))
    elif cmd == "label-or-count":
        # label-or-count TEXT ROLE PREFIX N: "label" once a label reading TEXT
        # shows, or "count" once exactly N objects of ROLE are named PREFIX...
        text, role, prefix, n = args[0], args[1], args[2], int(args[3])
        args = args[4:]

        def either(a):
            if matches(a, "label", text):
                return "label"
            try:
                names = distinct_names(matches(a, role, prefix, prefix=True))
            except Exception:
                return None
            return "count" if len(names) == n else None

        print(until(f"label {text!r} or {n} {role} named {prefix!r}...", seconds(0), either))
    elif cmd == "names":
        role = args[0]
        app = until(f"{APP} on the accessibility bus", seconds(1), lambda a: a)
        for o in matches(app, role, "", prefix=True):
            # An object may go while the tree is read (a list rebuilt).
            try:
                name = o.name
            except Exception:
                continue
            print(name)
    elif cmd == "state":
        role, name = args[0], args[1]
        objs = until(f"{role} {name!r} in {APP}", seconds(2), lambda a: matches(a, role, name) or None)
        states = objs[0].getState().getStates()
        print(" ".join(pyatspi.stateToString(s) for s in states))
    elif cmd == "unnamed":
        # Every control a user can act on, shown or not, that has no
        # accessible name: printed as its role and its parents' roles.
        controls = {"push button", "toggle button", "check box", "text",
                    "entry", "combo box", "list item", "menu item", "image"}
        app = until(f"{APP} on the accessibility bus", seconds(0), lambda a: a)

        def rec(o, path):
            try:
                role = o.getRoleName()
                # libadwaita 1.2's toast has an unnamed close button of
                # its own (later versions call it "Dismiss"): not the app's.
                if o.name == "AdwToastWidget":
                    return
                # GTK 4.8 names a widget without a label by its type
                # ("GtkExpander"): no name to a user either.
                name = (o.name or "").strip()
                if role in controls and (not name or re.fullmatch(r"(Gtk|Adw)[A-Z]\w+", name)):
                    print(" > ".join(path + [f"{role} {name!r}"]))
                for c in o:
                    if c is not None:
                        rec(c, path + [f"{role} {(o.name or '')!r}"])
            except Exception:
                return

        rec(app, [])
    elif cmd == "save-measure":
        save_measure(args[0], int(args[1], 0), int(args[2]), int(args[3]))
    elif cmd == "save-cancel":
        save_cancel(args[0])
    elif cmd == "dump":
        dump(app_named(APP), sys.stdout)
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


# Several commands in one process, separated by "--": the tests chain a
# press with the wait after it, so that no driver process ends while
# hiberd looks at the session (the driver talks to the session's buses,
# which makes it part of the session).
argv = sys.argv[2:]
while argv:
    if "--" in argv:
        i = argv.index("--")
        one, argv = argv[:i], argv[i + 1:]
    else:
        one, argv = argv, []
    run(one[0], one[1:])
    sys.stdout.flush()
