#!/usr/bin/env python3
"""Desktop benchmark: the X session of packaging/desktop-session.sh (Xvfb,
gtk4-demo, xclock, xeyes, xterm with bash, a session bus with two
monitors, python threads) saved and restored with the release `hiber`.

Each run starts a fresh session and measures, on it, saving the launcher's
process tree (`hiber checkpoint ROOT`):
  first      checkpoint into an empty store, the session left running
             (pre-copy on): what a first "Save session" costs
  again      a second checkpoint into the same store (pre-copy on)
  no-precopy a first save with --precopy never, into an empty store of
             its own: the total and frozen time pre-copy is weighed
             against
then the same session found from its display (`hiber session`), which
adds finding it and recording its windows and screenshot, into a second
store:
  session first / again   as above
  session stop            `session checkpoint --stop` (suspend-to-image),
                          into a store of its own (nothing saved before)
  session restore         `session restore` of that image, until it
                          returns: restored, answering X, windows compared
                          (eager: `auto` is eager at this size)
  session lazy            the restored session saved with --stop again and
                          restored with `--memory lazy`: until it returns
                          (running, answering X, windows and screenshots
                          compared), and until the page server is done
and, in the same run, baselines on the same bytes: writing the first
image's bytes to a file on the image's filesystem with fsync, reading
them back, and a memcpy of the session's memory into memory already
faulted in (saves are set against write + memcpy, restores against
read + memcpy). Prints medians over the runs.

Usage: python3 packaging/bench-desktop.py [--runs N] [--json] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIBER = os.path.join(ROOT, "target", "release", "hiber")
SESSION = os.path.join(ROOT, "packaging", "desktop-session.sh")
DEADLINE = 60.0


def wait_for(what, cond, deadline=DEADLINE, every=0.05):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(every)
    sys.exit(f"bench-desktop: timed out waiting for {what}")


def free_display():
    # A server whose files were removed still holds its abstract name.
    listening = open("/proc/net/unix").read()
    for d in range(150, 250):
        if (not os.path.exists(f"/tmp/.X11-unix/X{d}") and not os.path.exists(f"/tmp/.X{d}-lock")
                and f"@/tmp/.X11-unix/X{d}" not in listening):
            return d
    sys.exit("bench-desktop: no free display")


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def alive(pid):
    """Whether `pid` still exists (a zombie too: its pid is still taken)."""
    return os.path.exists(f"/proc/{pid}")


def ids_in_use(pids):
    """Those of `pids` still taken: by a process (a zombie too), or as the
    process group or session of a living one whose leader is gone (the
    kernel keeps such a pid allocated, and a restore cannot take it)."""
    wanted = set(pids)
    taken = {p for p in wanted if alive(p)}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        taken |= wanted & {int(fields[2]), int(fields[3])}
    return taken


def reap(pids):
    """Collect those of `pids` that are our own children (a restored tree's
    root is made a child of the caller of `hiber restore`)."""
    for p in pids:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass
    return not any(alive(p) for p in pids)


def end_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        wait_for("the session's processes to end", lambda: reap(pids))
    except SystemExit:
        for p in pids:
            if alive(p):
                st = open(f"/proc/{p}/stat").read().split(")")[1].split()[:2]
                print("left:", p, open(f"/proc/{p}/comm").read().strip(), st,
                      open(f"/proc/{p}/wchan").read(), file=sys.stderr)
                pp = int(st[1])
                if os.path.exists(f"/proc/{pp}"):
                    print("  parent:", pp, open(f"/proc/{pp}/comm").read().strip(),
                          open(f"/proc/{pp}/stat").read().split(")")[1].split()[:2],
                          open(f"/proc/{pp}/wchan").read(), "in restored:", pp in pids,
                          open(f"/proc/{pp}/status").read().split("TracerPid:")[1].split()[0],
                          file=sys.stderr)
        raise


def windows(display):
    out = subprocess.run(["xwininfo", "-root", "-tree"], env={**os.environ, "DISPLAY": f":{display}"},
                         capture_output=True, text=True).stdout
    return sorted(l.split(None, 1)[1] for l in out.splitlines() if '"' in l and "has no name" not in l)


def hiber(*args):
    t0 = time.monotonic()
    out = subprocess.run([HIBER, *args, "--json"], capture_output=True, text=True)
    wall = (time.monotonic() - t0) * 1e3
    if out.returncode != 0:
        sys.exit(f"bench-desktop: hiber {' '.join(args)} failed:\n{out.stderr}")
    return wall, json.loads(out.stdout)


def write_read_baseline(path, nbytes):
    """Writing nbytes with fsync, then reading them back: (write ms, read ms)."""
    data = os.urandom(1 << 20)
    t0 = time.monotonic()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(data[: min(left, len(data))])
            left -= len(data)
        f.flush()
        os.fsync(f.fileno())
    wrote = (time.monotonic() - t0) * 1e3
    t0 = time.monotonic()
    with open(path, "rb") as f:
        back = f.read()
    read = (time.monotonic() - t0) * 1e3
    del back
    os.unlink(path)
    return wrote, read


def memcpy_baseline(nbytes):
    """A copy of nbytes into memory already faulted in, as `hiber bench`'s
    memcpy (copying into a fresh object, as this did until 2026-12-07,
    timed the page faults too: 106 against 14 ms for 111 MiB)."""
    src = bytearray(os.urandom(1 << 20)) * max(1, nbytes >> 20)
    dst = bytearray(len(src))
    dst[:] = src  # every page of dst faulted in
    t0 = time.monotonic()
    dst[:] = src
    ms = (time.monotonic() - t0) * 1e3
    del dst
    return ms


def one_run(work):
    display = free_display()
    logs = os.path.join(work, "session")
    os.makedirs(logs)
    session = subprocess.Popen(["bash", SESSION, str(display), logs], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    root = session.pid
    x_files = [f"/tmp/.X11-unix/X{display}", f"/tmp/.X{display}-lock"]
    try:
        def ready():
            w = windows(display)
            py = os.path.join(logs, "py.log")
            return (all(any(n in l for l in w) for n in ("GTK Demo", "xclock", "xeyes", "xterm"))
                    and os.path.exists(py) and len(open(py).read().splitlines()) >= 5)
        wait_for("the session to map its windows", ready, DEADLINE * 2)
        before = windows(display)
        store = os.path.join(work, "store")
        row = {}
        _, first = hiber("checkpoint", str(root), "-o", os.path.join(work, "first"), "--store", store)
        _, again = hiber("checkpoint", str(root), "-o", os.path.join(work, "again"), "--store", store)
        _, plain = hiber("checkpoint", str(root), "-o", os.path.join(work, "plain"),
                         "--store", os.path.join(work, "plain-store"), "--precopy", "never")
        # Suspend and resume the tree as acceptance 1 does (`checkpoint ROOT
        # --stop`, `restore`), into a store of its own; the session
        # measurements below run on the restored tree.
        tree_stop = os.path.join(work, "tree-cold", "stop")
        os.makedirs(os.path.dirname(tree_stop))
        tree_pids = tree(root)
        tree_stop_wall, tree_stopped = hiber("checkpoint", str(root), "-o", tree_stop, "--stop")
        session.wait()
        wait_for("the saved tree's pids to be free", lambda: not ids_in_use(tree_pids))
        tree_restore_wall, tree_restored = hiber("restore", tree_stop)
        wait_for("the restored session to map its windows", lambda: windows(display) == before)
        disp = f":{display}"
        _, s_first = hiber("session", "checkpoint", "--display", disp, "-o", os.path.join(work, "s-first"))
        _, s_again = hiber("session", "checkpoint", "--display", disp, "-o", os.path.join(work, "s-again"))
        # Into a store of its own: what suspending a session costs when
        # nothing of it was saved before.
        stop_dir = os.path.join(work, "cold", "stop")
        os.makedirs(os.path.dirname(stop_dir))
        stop_wall, stop = hiber("session", "checkpoint", "--display", disp, "-o", stop_dir,
                                "--stop")
        saved = json.loads(subprocess.run([HIBER, "inspect", stop_dir, "--json"],
                                          capture_output=True, text=True, check=True).stdout)
        pids = [p["pid"] for p in saved["snapshot"]["processes"]]
        # The launcher and what is not part of the display's session (the
        # python worker talks to nobody) are ended by hand.
        end_all(tree(root))
        wait_for("the saved processes' pids to be free", lambda: not ids_in_use(pids))
        restore_wall, restored = hiber("session", "restore", stop_dir)
        if restored["changes"]:
            sys.exit(f"bench-desktop: the restored windows differ: {restored['changes']}")
        if restored["memory"] != "eager":
            sys.exit(f"bench-desktop: the session restore was {restored['memory']}, not eager")
        # The same session again, restored lazily.
        lazy_dir = os.path.join(work, "cold", "lazy")
        hiber("session", "checkpoint", "--display", disp, "-o", lazy_dir, "--stop")
        wait_for("the restored session's pids to be free", lambda: not ids_in_use(pids))
        t0 = time.monotonic()
        lazy_wall, lazy = hiber("session", "restore", lazy_dir, "--memory", "lazy")
        if lazy["changes"]:
            sys.exit(f"bench-desktop: the lazily restored windows differ: {lazy['changes']}")
        status = lazy["lazy_status"]
        wait_for(f"the page server to finish ({status} removed)", lambda: not os.path.exists(status),
                 every=0.002)
        lazy_all = (time.monotonic() - t0) * 1e3
        end_all([p[1] for p in lazy["pids"]])
        row.update({
            "first_ms": first["total_ms"], "first_frozen_ms": first["frozen_ms"],
            "again_ms": again["total_ms"], "again_frozen_ms": again["frozen_ms"],
            "again_written_bytes": again["written_bytes"],
            "no_precopy_ms": plain["total_ms"], "no_precopy_frozen_ms": plain["frozen_ms"],
            "session_first_ms": s_first["total_ms"], "session_first_frozen_ms": s_first["frozen_ms"],
            "session_again_ms": s_again["total_ms"], "session_again_frozen_ms": s_again["frozen_ms"],
            "session_again_written_bytes": s_again["written_bytes"],
            "session_image_bytes": s_first["image_bytes"], "session_memory_bytes": s_first["memory_bytes"],
            "stop_ms": stop_wall, "restore_ms": restore_wall,
            "lazy_restore_ms": lazy_wall, "lazy_all_in_ms": lazy_all,
            "tree_stop_ms": tree_stop_wall, "tree_stop_frozen_ms": tree_stopped["frozen_ms"],
            "tree_restore_ms": tree_restore_wall, "tree_restore_engine_ms": tree_restored["elapsed_ms"],
            "image_bytes": first["image_bytes"], "memory_bytes": first["memory_bytes"],
            "precopied_bytes": again["precopied_bytes"],
        })
        row["write_baseline_ms"], row["read_baseline_ms"] = write_read_baseline(
            os.path.join(work, "baseline"), first["image_bytes"])
        row["memcpy_baseline_ms"] = memcpy_baseline(first["memory_bytes"])
        return row
    finally:
        # The launcher, or the tree restored in its place.
        if session.poll() is None or alive(root):
            end_all(tree(root))
        for f in x_files:
            if os.path.exists(f):
                os.unlink(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one under /var/tmp)")
    ap.add_argument("--hiber", default=None,
                    help="the hiber binary to measure (default: this checkout's release build, built if missing)")
    a = ap.parse_args()
    global HIBER
    if a.hiber:
        HIBER = os.path.abspath(a.hiber)
    elif not os.path.exists(HIBER):
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "hiber-session"], cwd=ROOT, check=True)
    base = a.dir or tempfile.mkdtemp(prefix="hiber-bench-desktop-", dir="/var/tmp")
    rows = []
    try:
        for i in range(a.runs):
            work = os.path.join(base, f"run{i}")
            os.makedirs(work)
            rows.append(one_run(work))
            shutil.rmtree(work)
    finally:
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    base_ms = med["write_baseline_ms"] + med["memcpy_baseline_ms"]
    med["first_ratio"] = med["first_ms"] / base_ms
    # A restore reads the image back and fills the memory: its baselines
    # are that read and the memcpy.
    med["restore_ratio"] = med["restore_ms"] / (med["read_baseline_ms"] + med["memcpy_baseline_ms"])
    if a.json:
        print(json.dumps({"runs": rows, "median": med}, indent=2))
        return
    mib = lambda b: f"{b / (1 << 20):.1f} MiB"
    print(f"X session, median of {a.runs} runs (release build)")
    print(f"  memory {mib(med['memory_bytes'])}, image {mib(med['image_bytes'])}")
    print(f"  baselines: write+fsync of the image {med['write_baseline_ms']:.1f} ms, "
          f"reading it back {med['read_baseline_ms']:.1f} ms, "
          f"memcpy of the memory {med['memcpy_baseline_ms']:.1f} ms")
    print(f"  first save      {med['first_ms']:7.1f} ms  frozen {med['first_frozen_ms']:6.1f} ms  "
          f"({med['first_ratio']:.2f}x write + memcpy)")
    print(f"  save again      {med['again_ms']:7.1f} ms  frozen {med['again_frozen_ms']:6.1f} ms  "
          f"({mib(med['again_written_bytes'])} new, {mib(med['precopied_bytes'])} saved before the freeze)")
    print(f"  first, no pre-copy {med['no_precopy_ms']:4.1f} ms  frozen {med['no_precopy_frozen_ms']:6.1f} ms  "
          f"(--precopy never, empty store)")
    print(f"  checkpoint --stop {med['tree_stop_ms']:5.1f} ms wall, into an empty store (acceptance 1's command)")
    print(f"  restore         {med['tree_restore_ms']:7.1f} ms wall ({med['tree_restore_engine_ms']:.1f} ms in the engine)")
    print(f"  session (found from its display, windows and screenshot recorded): "
          f"memory {mib(med['session_memory_bytes'])}, image {mib(med['session_image_bytes'])}")
    print(f"  session save    {med['session_first_ms']:7.1f} ms  frozen {med['session_first_frozen_ms']:6.1f} ms")
    print(f"  session again   {med['session_again_ms']:7.1f} ms  frozen {med['session_again_frozen_ms']:6.1f} ms  "
          f"({mib(med['session_again_written_bytes'])} new)")
    print(f"  session --stop  {med['stop_ms']:7.1f} ms wall, into an empty store")
    print(f"  session restore {med['restore_ms']:7.1f} ms wall ({med['restore_ratio']:.2f}x read + memcpy), "
          f"windows compared")
    print(f"  session lazy    {med['lazy_restore_ms']:7.1f} ms wall until windows compared, "
          f"{med['lazy_all_in_ms']:.1f} ms until every page is in")


if __name__ == "__main__":
    main()
