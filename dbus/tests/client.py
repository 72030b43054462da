#!/usr/bin/python3
"""A small hiberd client, run by the tests as a test user (its own uid on
the system bus). Each command prints one JSON object on stdout:
`{"ok": ...}` or `{"error": NAME, "message": TEXT}`. A job is followed
from the call to its Completed signal, with every Progress value its
PropertiesChanged signals carried; nothing is polled and nothing sleeps:
waits end on a signal or at the deadline, which is then named.

    client.py list
    client.py objects            (GetManagedObjects: path -> interfaces)
    client.py props PATH
    client.py get PATH PROPERTY
    client.py save DISPLAY [stop] [name=NAME] [cancel-at=FRACTION] [introspect] [stream]
    client.py restore PATH [cancel-at=FRACTION] [display=free|:N] [memory=auto|eager|lazy]
    client.py rename PATH NAME
    client.py delete PATH
    client.py clear-pending PATH
    client.py screenshot PATH SCREEN FILE
    client.py save-before-sleep [on|off]   (SetSaveBeforeSleep, then GetSaveBeforeSleep)
    client.py introspect PATH

`introspect` adds the job object's introspection XML, asked while it runs;
`stream` prints `{"progress": P}` for each Progress as it comes. If hiberd
leaves the bus while a job runs, the wait ends with `"vanished": true`.
"""

import json
import sys
import time

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

BUS = "org.hiber.Hiber1"
ROOT = "/org/hiber/Hiber1"
MANAGER = "org.hiber.Hiber1.Manager"
SNAPSHOT = "org.hiber.Hiber1.Snapshot"
JOB = "org.hiber.Hiber1.Job"
PROPS = "org.freedesktop.DBus.Properties"
DEADLINE_S = 60


def plain(v):
    """dbus-python values as JSON-able Python values."""
    if isinstance(v, (dbus.Array, list)):
        return [plain(x) for x in v]
    if isinstance(v, (dbus.Struct, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (dbus.Dictionary, dict)):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath)):
        return str(v)
    if isinstance(v, (dbus.Double,)):
        return float(v)
    if isinstance(v, (int, dbus.Byte, dbus.Int32, dbus.UInt32, dbus.Int64, dbus.UInt64)):
        return int(v)
    return v


def out(obj):
    print(json.dumps(obj), flush=True)


def error(e):
    return {"error": e.get_dbus_name(), "message": e.get_dbus_message()}


class JobFollower:
    """Collects a job's signals from before its path is known (the
    call's reply can come after the job's first signals)."""

    def __init__(self, bus, cancel_at=None):
        self.bus = bus
        self.loop = GLib.MainLoop()
        self.path = None
        self.seen = {}  # path -> [("props", dict) | ("completed", args)]
        self.cancel_at = cancel_at
        self.cancel_sent = None
        self.timed_out = None
        self.stream = False
        # Set just before the call; `elapsed_ms` is from it to Completed.
        self.started = time.monotonic()
        self.completed_at = None
        self.vanished = False
        bus.add_signal_receiver(self.on_owner, "NameOwnerChanged", "org.freedesktop.DBus", "org.freedesktop.DBus", "/org/freedesktop/DBus")
        bus.add_signal_receiver(
            self.on_props, "PropertiesChanged", PROPS, BUS, None, path_keyword="path"
        )
        bus.add_signal_receiver(self.on_completed, "Completed", JOB, BUS, None, path_keyword="path")

    def on_owner(self, name, old, new):
        if name == BUS and new == "":
            self.vanished = True
            self.loop.quit()

    def on_props(self, iface, changed, invalidated, path=None):
        if iface == JOB:
            changed = plain(changed)
            self.seen.setdefault(str(path), []).append(("props", changed))
            if self.stream and str(path) == self.path and "Progress" in changed:
                out({"progress": changed["Progress"]})
            self.check()

    def on_completed(self, success, name, message, path=None):
        if self.path is None or str(path) == self.path:
            self.completed_at = self.completed_at or time.monotonic()
        self.seen.setdefault(str(path), []).append(("completed", [bool(success), str(name), str(message)]))
        self.check()

    def events(self):
        return self.seen.get(self.path, []) if self.path else []

    def progress(self):
        return [e[1]["Progress"] for e in self.events() if e[0] == "props" and "Progress" in e[1]]

    def completed(self):
        for kind, value in self.events():
            if kind == "completed":
                return value
        return None

    def check(self):
        if self.path is None:
            return
        if self.cancel_at is not None and self.cancel_sent is None:
            p = self.progress()
            if p and p[-1] >= self.cancel_at and self.completed() is None:
                job = self.bus.get_object(BUS, self.path)
                try:
                    job.Cancel(dbus_interface=JOB)
                    self.cancel_sent = {"ok": p[-1]}
                except dbus.DBusException as e:
                    self.cancel_sent = error(e)
        if self.completed() is not None:
            self.loop.quit()

    def wait(self, path):
        self.path = str(path)
        if self.stream:
            for p in self.progress():
                out({"progress": p})
        self.check()
        if self.completed() is None and not self.vanished:

            def timeout():
                self.timed_out = "Completed of job %s (progress seen: %s)" % (
                    self.path,
                    self.progress(),
                )
                self.loop.quit()
                return False

            GLib.timeout_add_seconds(DEADLINE_S, timeout)
            self.loop.run()
        result = {
            "job": self.path,
            "progress": self.progress(),
            "stages": [e[1]["Stage"] for e in self.events() if e[0] == "props" and "Stage" in e[1]],
            "cancelable": [e[1]["Cancelable"] for e in self.events() if e[0] == "props" and "Cancelable" in e[1]],
            "objects": [e[1]["Objects"] for e in self.events() if e[0] == "props" and "Objects" in e[1]],
            "completed": self.completed(),
            "cancel": self.cancel_sent,
            "elapsed_ms": (self.completed_at - self.started) * 1000 if self.completed_at else None,
        }
        if self.timed_out:
            result["timeout"] = self.timed_out
        if self.vanished:
            result["vanished"] = True
        return result


def main(argv):
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "check":
            manager = bus.get_object(BUS, ROOT, introspect=False)
            savable, findings = manager.CheckSession(args[0], dbus_interface=MANAGER)
            return {"ok": {"savable": plain(savable), "findings": plain(findings)}}
        if cmd == "list":
            manager = bus.get_object(BUS, ROOT)
            return {"ok": plain(manager.ListSnapshots(dbus_interface=MANAGER))}
        if cmd == "objects":
            manager = bus.get_object(BUS, ROOT, introspect=False)
            objects = manager.GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
            return {"ok": {str(p): sorted(str(i) for i in ifaces) for p, ifaces in objects.items()}}
        if cmd == "props":
            obj = bus.get_object(BUS, args[0])
            return {"ok": plain(obj.GetAll(SNAPSHOT, dbus_interface=PROPS))}
        if cmd == "get":
            obj = bus.get_object(BUS, args[0])
            return {"ok": plain(obj.Get(SNAPSHOT, args[1], dbus_interface=PROPS))}
        if cmd == "save":
            options = {}
            cancel_at = None
            introspect = False
            for a in args[1:]:
                if a == "stop":
                    options["stop"] = dbus.Boolean(True)
                elif a.startswith("name="):
                    options["name"] = dbus.String(a[5:])
                elif a.startswith("cancel-at="):
                    cancel_at = float(a[10:])
                elif a == "introspect":
                    introspect = True
            follower = JobFollower(bus, cancel_at)
            follower.stream = "stream" in args[1:]
            follower.started = time.monotonic()
            manager = bus.get_object(BUS, ROOT, introspect=False)
            path = manager.SaveSession(
                args[0], dbus.Dictionary(options, signature="sv"), dbus_interface=MANAGER
            )
            job_xml = None
            if introspect:
                job_xml = str(
                    bus.get_object(BUS, path, introspect=False).Introspect(
                        dbus_interface="org.freedesktop.DBus.Introspectable"
                    )
                )
            result = follower.wait(path)
            result["job_xml"] = job_xml
            return {"ok": result}
        if cmd == "restore":
            cancel_at = None
            options = {}
            for a in args[1:]:
                if a.startswith("cancel-at="):
                    cancel_at = float(a[10:])
                elif a.startswith("display="):
                    options["display"] = dbus.String(a[8:])
                elif a.startswith("memory="):
                    options["memory"] = dbus.String(a[7:])
            follower = JobFollower(bus, cancel_at)
            obj = bus.get_object(BUS, args[0], introspect=False)
            follower.started = time.monotonic()
            path = obj.Restore(dbus.Dictionary(options, signature="sv"), dbus_interface=SNAPSHOT)
            return {"ok": follower.wait(path)}
        if cmd == "rename":
            bus.get_object(BUS, args[0]).Rename(args[1], dbus_interface=SNAPSHOT)
            return {"ok": None}
        if cmd == "clear-pending":
            bus.get_object(BUS, args[0]).ClearPending(dbus_interface=SNAPSHOT)
            return {"ok": None}
        if cmd == "delete":
            bus.get_object(BUS, args[0]).Delete(dbus_interface=SNAPSHOT)
            return {"ok": None}
        if cmd == "screenshot":
            fd = bus.get_object(BUS, args[0]).OpenScreenshot(
                dbus.UInt32(int(args[1])), dbus_interface=SNAPSHOT
            )
            with open(fd.take(), "rb") as f:
                data = f.read()
                try:
                    f.write(b"x")
                    writable = True
                except OSError:
                    writable = False
            with open(args[2], "wb") as copy:
                copy.write(data)
            return {"ok": {"size": len(data), "writable": writable}}
        if cmd == "save-before-sleep":
            manager = bus.get_object(BUS, ROOT, introspect=False)
            if args:
                manager.SetSaveBeforeSleep(dbus.Boolean(args[0] == "on"), dbus_interface=MANAGER)
            return {"ok": plain(manager.GetSaveBeforeSleep(dbus_interface=MANAGER))}
        if cmd == "introspect":
            obj = bus.get_object(BUS, args[0], introspect=False)
            return {"ok": str(obj.Introspect(dbus_interface="org.freedesktop.DBus.Introspectable"))}
    except dbus.DBusException as e:
        return error(e)
    return {"error": "usage", "message": __doc__}


if __name__ == "__main__":
    out(main(sys.argv[1:]))
