#!/usr/bin/env python3
"""hiberd's overhead: the demo session (packaging/demo-session.sh: a
session bus, Xvfb, gtk4-demo, xclock, xeyes, an xterm whose shell counts),
run by the test user hiber-desk (uid 1500), saved and restored through
the service and with the CLI, alternately, in the same run.

  save     SaveSession(":D", {}) -> Completed, as the user (dbus/tests/
           client.py: from the call to the Completed signal), against
           `hiber session checkpoint --display :D` run by root (from its
           start to its exit); both save into a store holding an earlier
           save of the same session (a second "Save session").
  restore  Restore({}) -> Completed of a snapshot saved with stop, against
           `hiber session restore DIR` of an image saved with --stop.

The service runs as it is installed: a private system bus (the
distribution's dbus-daemon with packaging/dbus/*, polkitd and hiberd by
bus activation: dbus/tests/private-bus.sh) in a mount namespace of the
benchmark's own; polkit rules grant hiber-desk its actions (no logind
here). Release builds of hiber and hiberd. Prints medians over the runs and
the service's overhead (service minus CLI) in ms: the difference of the
medians, and the median of the differences of runs made back to back (the
sides alternate which goes first; on a loaded machine the paired figure
is the steadier one).

Usage: python3 packaging/bench-dbus.py [--runs N] [--json]   (as root)
"""

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIBER = os.path.join(ROOT, "target", "release", "hiber")
HIBERD = os.path.join(ROOT, "target", "release", "hiberd")
PRIVATE_BUS = os.path.join(ROOT, "dbus", "tests", "private-bus.sh")
CLIENT = os.path.join(ROOT, "dbus", "tests", "client.py")
SESSION = os.path.join(ROOT, "packaging", "demo-session.sh")
USER, UID = "hiber-desk", 1500
DEADLINE = 60.0
RULES = """polkit.addRule(function(action, subject) {
  if (action.id.indexOf("org.hiber.Hiber1.") == 0 &&
      action.id != "org.hiber.Hiber1.manage-other-users" &&
      subject.user == "%s") {
    return polkit.Result.YES;
  }
});
""" % USER


def wait_for(what, cond):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    sys.exit(f"bench-dbus: timed out after {DEADLINE}s waiting for {what}")


def free_display():
    listening = open("/proc/net/unix").read()
    for d in range(250, 350):
        if (not os.path.exists(f"/tmp/.X11-unix/X{d}") and not os.path.exists(f"/tmp/.X{d}-lock")
                and f"@/tmp/.X11-unix/X{d}" not in listening):
            return d
    sys.exit("bench-dbus: no free display")


class Namespace:
    """The private bus and everything run in its mount namespace."""

    def __init__(self, tmp):
        self.tmp = tmp
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        rules = os.path.join(tmp, "rules")
        with open(rules, "w") as f:
            f.write(RULES)
        self.log = open(os.path.join(tmp, "bus.log"), "w")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "bash", PRIVATE_BUS,
             mnt, ROOT, HIBERD, rules],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.holder.stdout.readline().decode()
        if not line.startswith("unix:path=/run/dbus/system_bus_socket"):
            sys.exit(f"bench-dbus: the private bus did not start: {line!r}, see {tmp}/bus.log")
        self.ns = f"--mount=/proc/{self.holder.pid}/ns/mnt"
        self.children = []

    def root(self, argv, **kw):
        return ["nsenter", self.ns, "--"] + argv

    def user(self, argv, home):
        env = {"HOME": home, "USER": USER, "LOGNAME": USER, "PATH": "/usr/local/bin:/usr/bin:/bin",
               "LANG": "C.UTF-8"}
        return (["nsenter", self.ns, "--", "setpriv", f"--reuid={UID}", f"--regid={UID}",
                 "--init-groups"] + argv, env)

    def client(self, home, *args):
        argv, env = self.user(["/usr/bin/python3", CLIENT] + list(args), home)
        out = subprocess.run(argv, env=env, cwd=home, stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, check=False)
        v = json.loads(out.stdout)
        if "ok" not in v:
            sys.exit(f"bench-dbus: client.py {args}: {v}")
        return v["ok"]

    def timed_root(self, argv, env):
        """Run `argv` as root in the namespace, timed from inside it (the
        nsenter before it does not count)."""
        timer = ("import subprocess, sys, time, json\n"
                 "t = time.monotonic()\n"
                 "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
                 "print(json.dumps({'rc': p.returncode, 'ms': (time.monotonic() - t) * 1000}))\n")
        out = subprocess.run(self.root(["/usr/bin/python3", "-c", timer] + argv), env=env,
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, check=True)
        v = json.loads(out.stdout)
        if v["rc"] != 0:
            sys.exit(f"bench-dbus: {argv} failed ({v['rc']})")
        return v["ms"]

    def processes(self):
        try:
            ino = os.stat(f"/proc/{self.holder.pid}/ns/mnt").st_ino
        except OSError:
            return []
        pids = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != self.holder.pid:
                try:
                    if os.stat(f"/proc/{p}/ns/mnt").st_ino == ino:
                        pids.append(int(p))
                except OSError:
                    pass
        return pids

    def close(self):
        # Every process in the namespace, by pid (all are the benchmark's).
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            left = [p for p in self.processes() if state(p) not in (None, "Z", "X")]
            if not left:
                break
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for c in self.children:
                c.poll()
            time.sleep(0.02)
        for c in self.children:
            c.kill()
            c.wait()
        self.holder.kill()
        self.holder.wait()
        self.log.close()


def state(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return s[s.rindex(")") + 2]


def user_dir(path):
    os.makedirs(path, exist_ok=True)
    os.chown(path, UID, UID)
    os.chmod(path, 0o700)
    return path


def ensure_user():
    try:
        if pwd.getpwnam(USER).pw_uid == UID:
            return
    except KeyError:
        pass
    subprocess.run(["useradd", "--uid", str(UID), "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/bin/bash", USER], check=True)


def start_session(ns, display, d):
    argv, env = ns.user(["bash", SESSION, str(display), d], d)
    ns.children.append(subprocess.Popen(argv, env=env, cwd=d, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(f"the demo session on :{display}", lambda: os.path.exists(os.path.join(d, "ready")))


def session_gone(ns):
    def gone():
        for p in ns.processes():
            try:
                if os.stat(f"/proc/{p}").st_uid == UID and state(p) not in ("Z", "X"):
                    return False
            except OSError:
                pass
        return True
    wait_for("the stopped session's processes to end", gone)


def counting(d):
    def count():
        try:
            return int(open(os.path.join(d, "count")).read().strip() or 0)
        except (OSError, ValueError):
            return 0
    start = count()
    wait_for("the restored shell to count", lambda: count() > start + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-dbus: run as root (hiberd and the CLI save another user's session)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "hiber-session", "-p", "hiber-dbus"],
                   cwd=ROOT, check=True)
    ensure_user()
    tmp = tempfile.mkdtemp(prefix="hiber-bench-dbus-")
    os.chmod(tmp, 0o755)
    ns = Namespace(tmp)
    display = free_display()
    home = user_dir(os.path.join(tmp, "home"))
    sess = user_dir(os.path.join(tmp, "session"))
    cli_store = os.path.join(tmp, "cli")
    os.makedirs(cli_store)
    cli_env = {"PATH": "/usr/bin:/bin", "HIBER_SNAPSHOTS": cli_store}
    name = f":{display}"
    results = {"save": {"dbus": [], "cli": []}, "restore": {"dbus": [], "cli": []}}
    try:
        start_session(ns, display, sess)
        # Warm both stores with a first save, so each save measured is a
        # second one, on equal terms.
        first = ns.client(home, "save", name)
        assert first["completed"][0], first
        ns.timed_root([HIBER, "session", "checkpoint", "--display", name, "--user", str(UID)], cli_env)
        for i in range(a.runs):
            for side in (("dbus", "cli") if i % 2 == 0 else ("cli", "dbus")):
                if side == "dbus":
                    r = ns.client(home, "save", name)
                    assert r["completed"][0], r
                    results["save"]["dbus"].append(r["elapsed_ms"])
                else:
                    results["save"]["cli"].append(ns.timed_root(
                        [HIBER, "session", "checkpoint", "--display", name, "--user", str(UID)], cli_env))
        # One cycle each first, not measured: the first restore on a display
        # ends the session the launcher started, the next ones a restored one.
        for i in range(a.runs + 1):
            for side in (("dbus", "cli") if i % 2 == 0 else ("cli", "dbus")):
                if side == "dbus":
                    r = ns.client(home, "save", name, "stop")
                    assert r["completed"][0], r
                    snapshot = r["objects"][-1][0]
                    session_gone(ns)
                    r = ns.client(home, "restore", snapshot)
                    assert r["completed"][0], r
                    if i > 0:
                        results["restore"]["dbus"].append(r["elapsed_ms"])
                    counting(sess)
                    ns.client(home, "delete", snapshot)
                else:
                    img = os.path.join(cli_store, f"stopped-{i}")
                    ns.timed_root([HIBER, "session", "checkpoint", "--display", name, "--user", str(UID), "--stop",
                                   "-o", img], cli_env)
                    session_gone(ns)
                    ms = ns.timed_root([HIBER, "session", "restore", img], cli_env)
                    if i > 0:
                        results["restore"]["cli"].append(ms)
                    counting(sess)
                    shutil.rmtree(img)
    finally:
        ns.close()
        for f in (f"/tmp/.X11-unix/X{display}", f"/tmp/.X{display}-lock"):
            try:
                os.remove(f)
            except OSError:
                pass
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)

    summary = {}
    for op, sides in results.items():
        d, c = statistics.median(sides["dbus"]), statistics.median(sides["cli"])
        # Run i of each side ran back to back: their difference is the
        # least disturbed by load that comes and goes.
        paired = statistics.median(x - y for x, y in zip(sides["dbus"], sides["cli"]))
        summary[op] = {"dbus_ms": d, "cli_ms": c, "overhead_ms": d - c, "paired_overhead_ms": paired,
                       "runs_dbus": sides["dbus"], "runs_cli": sides["cli"]}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"demo session, median of {a.runs} runs (release builds)")
    print(f"{'':10} {'service':>10} {'CLI':>10} {'overhead':>10} {'paired':>10}")
    for op, s in summary.items():
        print(f"{op:10} {s['dbus_ms']:>8.1f}ms {s['cli_ms']:>8.1f}ms {s['overhead_ms']:>+8.1f}ms"
              f" {s['paired_overhead_ms']:>+8.1f}ms")
    print("overhead: difference of the medians; paired: median of the differences of runs made"
          " back to back")


if __name__ == "__main__":
    main()
