#!/usr/bin/env python3
"""Crash campaign: SIGKILL hiber at random instants and count the harm.

  crash-campaign.py restore [--kills 200] [--hiber PATH] [--pidns|--keeper] [--seed N]

`restore`: saves a workload of four processes (each with two threads, 6 MiB
of private memory and a SysV segment they share, printing "INDEX K OK" every
20 ms) with `checkpoint --stop`, then, as many times as asked, starts
`hiber restore` on the image and kills it with SIGKILL at a random instant
of its run. After each kill it checks, within 5 s:
  - nothing of the restore is left: no process (this script is a child
    subreaper, so orphans come to it), no SysV segment;
  - or, killed after the commit (before it could exit), the whole program
    runs on correctly;
  - the image is unchanged (every file's bytes);
  - whether the program ran at all before it was taken down (a kill among
    the restorer's final detaches), and if so whether what it printed was
    right;
then restores the image normally and checks the program goes on with its
memory, segment and output intact. Prints the counts; exits 1 on any harm.

Runs as root (restore does), Python 3 standard library only. The sibling
`checkpoint` campaign is meant to live here too, as another subcommand.
"""

import argparse
import ctypes
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

WORKLOAD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fixtures", "crash-workload.py")

PR_SET_CHILD_SUBREAPER = 36
IPC_RMID = 0
SETTLE = 5.0
libc = ctypes.CDLL(None, use_errno=True)


def stat_of(pid):
    """(state, ppid) of pid, or None when the pid is free."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(")") + 2:].split()
    return fields[0], int(fields[1])


def children_of(pid):
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(w) for w in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += children_of(p)
    return seen


def reap_zombies():
    """Reap our zombie children (orphans adopted as a subreaper)."""
    for p in children_of(os.getpid()):
        st = stat_of(p)
        if st and st[0] == "Z":
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass


def segment(key):
    sid = libc.shmget(key, 0, 0)
    return sid if sid >= 0 else None


def remove_segment(key):
    sid = segment(key)
    if sid is not None:
        libc.shmctl(sid, IPC_RMID, None)


def left_behind(saved, key):
    """What a restore left: processes (ours, or holding a saved pid) and
    the segment. Zombies of ours are reaped on the way."""
    reap_zombies()
    out = []
    me = os.getpid()
    for p in set(children_of(me)) | set(saved):
        st = stat_of(p)
        if st is None:
            continue
        if st[0] == "Z" and p in saved:
            out.append(f"pid {p} (zombie)")
        elif st[0] not in ("Z", "X") and (st[1] == me or p in saved):
            out.append(f"pid {p}")
    if segment(key) is not None:
        out.append(f"SysV segment {key:#x}")
    return out


def kill_everything(saved, key):
    """End every process below us (only those: a saved pid that is not
    ours may be someone else's by now), and the segment."""
    me = os.getpid()
    for p in {q for c in children_of(me) for q in tree(c)}:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    remove_segment(key)
    until = time.monotonic() + 30
    while left_behind(saved, key) and time.monotonic() < until:
        time.sleep(0.01)
    remove_segment(key)


def by_index(log):
    out = {}
    with open(log, "rb") as f:
        text = f.read().decode(errors="replace")
    end = text.rfind("\n") + 1
    for line in text[:end].splitlines():
        f = line.split(" ")
        if len(f) != 3 or not all(x.isdigit() for x in f[:2]):
            print(f"malformed line {line!r}", file=sys.stderr)
            return None
        out.setdefault(int(f[0]), []).append((int(f[1]), f[2]))
    return out


def lines_right(log):
    """Every process numbers its lines 1, 2, 3... and says True."""
    b = by_index(log)
    if b is None or len(b) != 4:
        return False
    return all(
        k == n + 1 and ok == "True"
        for lines in b.values()
        for n, (k, ok) in enumerate(lines)
    )


def going_on(log, saved_lines, more):
    b = by_index(log) or {}
    return len(b) == 4 and all(len(b[i]) >= len(saved_lines[i]) + more for i in b)


def digest(img):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(img)):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(p.encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def restore_args(hiber, img, mode):
    return [hiber, "restore", img, "--json"] + ([f"--{mode}"] if mode else [])


def campaign_restore(args):
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="hiber-crash-", dir="/var/tmp")
    img, log = os.path.join(tmp, "img"), os.path.join(tmp, "workload.log")
    key = 0x48430000 | (os.getpid() & 0xFFFF)
    script = WORKLOAD
    remove_segment(key)
    saved = []
    counts = dict(
        kills=0, finished_first=0, nothing_left=0, left_behind=0,
        committed=0, ran_in_release=0, wrong_output=0, image_changed=0,
        restore_after_ok=0, restore_after_failed=0,
    )
    try:
        with open(log, "wb") as out:
            wl = subprocess.Popen(
                [sys.executable, script, str(key)], stdout=out,
                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                start_new_session=True)
        until = time.monotonic() + 30
        while not going_on(log, {i: [] for i in range(4)}, 3):
            if time.monotonic() > until:
                sys.exit("the workload did not start")
            time.sleep(0.05)
        saved = tree(wl.pid)
        ck = subprocess.run(
            [args.hiber, "checkpoint", str(wl.pid), "-o", img, "--stop", "--json"],
            capture_output=True)
        if ck.returncode != 0:
            sys.exit(f"checkpoint failed: {ck.stderr.decode()}")
        wl.wait()
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            sys.exit("cannot become a child subreaper")
        until = time.monotonic() + 30
        while any(stat_of(p) for p in saved) and time.monotonic() < until:
            time.sleep(0.01)
        # Each restore must make the segment (and a killed one remove it).
        remove_segment(key)
        image = digest(img)
        with open(log, "rb") as f:
            log_saved = f.read()
        saved_lines = by_index(log)

        def end_run():
            kill_everything(saved, key)
            with open(log, "wb") as f:
                f.write(log_saved)

        t0 = time.monotonic()
        r = subprocess.run(restore_args(args.hiber, img, args.mode),
                           capture_output=True)
        length = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit(f"restore failed: {r.stderr.decode()}")
        end_run()
        print(f"one restore takes {length * 1e3:.0f} ms; killing at random "
              f"instants in [0, {1.2 * length * 1e3:.0f}] ms", flush=True)

        while counts["kills"] < args.kills:
            at = rng.uniform(0, 1.2 * length)
            p = subprocess.Popen(restore_args(args.hiber, img, args.mode),
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(at)
            p.kill()
            rc = p.wait()
            if rc == 0:
                counts["finished_first"] += 1
                end_run()
                continue
            if rc != -signal.SIGKILL:
                sys.exit(f"restore failed by itself (exit {rc}) at {at:.3f} s")
            counts["kills"] += 1
            n = counts["kills"]
            until = time.monotonic() + SETTLE
            outcome = None
            while outcome is None:
                left = left_behind(saved, key)
                if not left:
                    outcome = "nothing"
                elif (segment(key) is not None
                      and going_on(log, saved_lines, 3)
                      and lines_right(log)):
                    outcome = "committed"
                elif time.monotonic() > until:
                    outcome = "left"
                    print(f"kill {n} at {at * 1e3:.1f} ms: left behind after "
                          f"{SETTLE} s: {left}", flush=True)
                else:
                    time.sleep(0.01)
            if outcome == "left":
                counts["left_behind"] += 1
                end_run()
            elif outcome == "committed":
                counts["committed"] += 1
                end_run()
            else:
                counts["nothing_left"] += 1
                with open(log, "rb") as f:
                    ran = f.read() != log_saved
                if ran:
                    counts["ran_in_release"] += 1
                    if not lines_right(log):
                        counts["wrong_output"] += 1
                        print(f"kill {n}: wrong output", flush=True)
                    with open(log, "wb") as f:
                        f.write(log_saved)
            if digest(img) != image:
                counts["image_changed"] += 1
                print(f"kill {n}: the image changed", flush=True)
                break
            # And the image restores, the program going on intact.
            r = subprocess.run(restore_args(args.hiber, img, args.mode),
                               capture_output=True)
            good = r.returncode == 0
            until = time.monotonic() + 30
            while good and not going_on(log, saved_lines, 3):
                if time.monotonic() > until:
                    good = False
                time.sleep(0.02)
            good = good and lines_right(log)
            counts["restore_after_ok" if good else "restore_after_failed"] += 1
            if not good:
                print(f"kill {n}: restore afterwards failed: "
                      f"{r.stderr.decode().strip()}", flush=True)
            end_run()
            if n % 20 == 0:
                print(f"{n} kills: {counts}", flush=True)
    finally:
        kill_everything(saved, key)
        shutil.rmtree(tmp, ignore_errors=True)

    print("restore campaign" + (f" (--{args.mode})" if args.mode else ""))
    for k, v in counts.items():
        print(f"  {k:22} {v}")
    harm = (counts["left_behind"] + counts["wrong_output"]
            + counts["image_changed"] + counts["restore_after_failed"])
    return 1 if harm else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("restore", help="kill hiber restore at random instants")
    r.add_argument("--kills", type=int, default=200)
    r.add_argument("--hiber", default=shutil.which("hiber") or "target/debug/hiber")
    r.add_argument("--pidns", dest="mode", action="store_const", const="pidns",
                   help="restore with --pidns (the tree under a namespace init)")
    r.add_argument("--keeper", dest="mode", action="store_const", const="keeper",
                   help="restore with --keeper (the roots under a session keeper)")
    r.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: restore needs it")
    args.hiber = os.path.abspath(args.hiber)
    sys.exit(campaign_restore(args))


if __name__ == "__main__":
    main()
