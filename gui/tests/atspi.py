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

Commands chain in one process with "--" between them.
Waits poll the tree until the deadline; a timeout says what was awaited
and prints the tree, exit status 1. NAME matches exactly; showing means
the object and its ancestors are VISIBLE (not on a hidden stack page).
"""
import re
import sys
import time

import pyatspi


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
            got = probe(app)
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
        objs = until(f"{role} {name!r} in {APP}", seconds(2), lambda a: matches(a, role, name) or None)
        ok = press(objs[0])
        print("pressed" if ok else "refused")
        if not ok:
            sys.exit(1)
    elif cmd == "click":
        # The button whose text a user reads: dialogs' buttons carry their
        # mnemonic in their accessible name, their label does not.
        text = args[0]

        def button_with_label(a):
            for o in matches(a, "label", text):
                parent = o.parent
                if parent is not None and parent.getRoleName() == "push button":
                    return parent
            return None

        button = until(f"a button reading {text!r} in {APP}", seconds(1), button_with_label)
        ok = press(button)
        print("pressed" if ok else "refused")
        if not ok:
            sys.exit(1)
    elif cmd == "count":
        role, prefix = args[0], args[1]
        app = until(f"{APP} on the accessibility bus", seconds(2), lambda a: a)
        print(len(matches(app, role, prefix, prefix=True)))
    elif cmd == "wait-count":
        role, prefix, n = args[0], args[1], int(args[2])
        args = args[3:]
        def names_if_n(a):
            # Names read at once: the objects may go when the list is
            # rebuilt.
            try:
                names = [o.name for o in matches(a, role, prefix, prefix=True)]
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
            if len(matches(a, role, prefix, prefix=True)) == n:
                return "count"
            return None

        print(until(f"label {text!r} or {n} {role} named {prefix!r}...", seconds(0), either))
    elif cmd == "names":
        role = args[0]
        app = until(f"{APP} on the accessibility bus", seconds(1), lambda a: a)
        for o in matches(app, role, "", prefix=True):
            print(o.name)
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
