# Started by hand to make the test images (see README.md); writes ./pipe and
# ./ghost, the bytes it gives the process, and prints its pid.
# A sleep holding a pipe with bytes queued (fds 3, 4) and a deleted file
# (fd 5): page, pipe and deleted-file chunks in one small image.
import os, sys
out = sys.argv[1]
pipe_bytes = b"queued in the pipe at checkpoint\n"
ghost_bytes = b"the contents of a file deleted while open\n"
r, w = os.pipe()
os.write(w, pipe_bytes)
ghost_path = "/tmp/hiber-test-image-ghost"
g = os.open(ghost_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(g, ghost_bytes)
os.unlink(ghost_path)
null = os.open("/dev/null", os.O_RDWR)
pid = os.fork()
if pid == 0:
    os.setsid()
    os.chdir("/")
    high = [os.dup2(fd, 100 + i) for i, fd in enumerate((null, r, w, g))]
    for i in range(3):
        os.dup2(high[0], i)
    for i, fd in enumerate(high[1:]):
        os.dup2(fd, 3 + i)
    os.closerange(6, 65536)
    os.execve("/usr/bin/sleep", ["sleep", "1000000"], {"PATH": "/usr/bin:/bin"})
open(os.path.join(out, "pipe"), "wb").write(pipe_bytes)
open(os.path.join(out, "ghost"), "wb").write(ghost_bytes)
print(pid)
