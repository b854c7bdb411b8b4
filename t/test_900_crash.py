"""Crash safety (DESIGN.md §3.5): the serving httpd process is killed with
SIGKILL at many points of a large multi-instance upload, and afterwards

- every file at a final path is complete and byte-identical to an instance
  that was sent (sha256), at the path the layout gives its UIDs;
- every instance the server reported stored before the kill (its
  STOWRS0202 line was written; the client never gets the answer) is there;
- after the next start the spool is empty (the start-up sweep removed the
  orphans and said so in STOWRS0005), and the next requests succeed -- the
  instance that was in flight when the server died among them, which also
  proves that a stale index entry (claimed, never renamed) is taken over.

The server runs single-process (prefork, httpd -X: one process, one
thread), so the process killed is the one serving the upload. An upload is
20 instances of 1-4 MB, streamed, with Content-Length or chunked. Kill
points are chosen with a fixed seed, per mode (CRASH_KILLS_PER_MODE,
default 5, so 40 kill points in all):

  mid-part         at a random byte inside instance k, once its spool
                   file exists
  in-part-headers  inside the delimiter line or header block of part k
  delimiter-race   right after the delimiter that ends part k was sent:
                   at once, or after a random 0-3 or 0-30 ms
  inspecting       the moment the spool file of part k, written, is opened
                   or read (its inspection begins)
  after-claim      the moment the index entry of instance k appears (the
                   claim, before the rename): SIGSTOP, check that the file
                   is not published yet, SIGKILL
  after-fsync      between fsync and rename: the process is watched in
                   /proc/<pid>/syscall until it has been in fsync/fdatasync
                   on the spool file of part k and has left it; then
                   SIGSTOP, check that the file is not published yet, SIGKILL
  after-rename     the moment the spool file of part k is renamed away:
                   the instance must then be there, complete
  after-logged     the whole body is sent; the kill comes once the
                   STOWRS0202 line of part k is written (the module may
                   hold its reports back until a batch of directory fsyncs
                   is done, so this can be at the end of the request)

Events come from inotify (through ctypes) on the spool and index
directories and from /proc: no strace, no module hooks.
"""

import ctypes
import hashlib
import os
import platform
import random
import re
import select
import signal
import socket
import struct
import threading
import time

import pytest

import dicomgen as g
import helpers_dicom as hd
import mime
from helpers_dicom import check_answer, post
import stowrs_env
from stowrs_env import STOW_PATH

N_INSTANCES = 20
MIN_SIZE, MAX_SIZE = 1 << 20, 4 << 20
KILLS_PER_MODE = int(os.environ.get("CRASH_KILLS_PER_MODE", "5"))
SEED = 900
#: harness timeouts grow under sanitizers and valgrind (stowrs_env.TIME_FACTOR)
TIME_FACTOR = getattr(stowrs_env, "TIME_FACTOR", 1)
WAIT = 60.0 * TIME_FACTOR   # for an event the kill waits on

BOUNDARY = b"myboundary"
PART_HEAD = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
DELIM_LINE = b"\r\n--" + BOUNDARY + b"\r\n"
TAIL = b"\r\n--" + BOUNDARY + b"--\r\n"

STORED_RE = re.compile(r"STOWRS0202: \[[^\]]*\] part (\d+): (stored|duplicate kept|"
                       r"duplicate replaced) \((\d+) bytes\)")
PATH_RE = re.compile(r"STOWRS0204: \[[^\]]*\] part (\d+): class (\S+) instance (\S+) "
                     r"study (\S+) series (\S+) path (\S+)")
SWEEP_RE = re.compile(r"STOWRS0005: removed (\d+) stale spool file")


# ------------------------------------------------------------------ inotify
IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_OPEN = 0x20
IN_MOVED_FROM = 0x40
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000


class Inotify:
    """Just enough of inotify(7) through ctypes."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, "inotify_init1: %s" % os.strerror(e))
        self.dirs = {}

    def watch(self, path, mask):
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(str(path)), mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, "inotify_add_watch %s: %s" % (path, os.strerror(e)))
        self.dirs[wd] = str(path)

    def read(self, timeout):
        """[(directory, mask, name)] that arrived within @timeout."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return []
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out = []
        i = 0
        while i < len(buf):
            wd, mask, _cookie, n = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode("utf-8", "replace")
            assert not mask & IN_Q_OVERFLOW, "inotify queue overflow"
            out.append((self.dirs.get(wd), mask, name))
            i += 16 + n
        return out

    def close(self):
        os.close(self.fd)


class Events:
    """What the server did in its spool and index directories."""

    def __init__(self, h):
        self.spool = str(h.spool_dir())
        self.index = str(h.archive / ".stowrs-index")
        self.ino = Inotify()
        # IN_MODIFY also keeps inotify from merging the open that creates a
        # spool file with the open that begins its inspection
        self.ino.watch(self.spool, IN_CREATE | IN_OPEN | IN_MODIFY | IN_ACCESS | IN_MOVED_FROM)
        self.ino.watch(self.index, IN_CREATE)
        self.created = []           # spool files in creation order: part k -> [k]
        self.written = set()        # spool files written to
        self.read_back = set()      # spool files opened or read after being written
        self.moved = set()          # spool files renamed away
        self.claimed = set()        # index entries created

    def pump(self, timeout):
        for d, mask, name in self.ino.read(timeout):
            if d == self.spool:
                if mask & IN_CREATE:
                    self.created.append(name)
                if mask & IN_MODIFY:
                    self.written.add(name)
                elif mask & (IN_OPEN | IN_ACCESS) and name in self.written:
                    self.read_back.add(name)
                if mask & IN_MOVED_FROM:
                    self.moved.add(name)
            elif d == self.index and mask & IN_CREATE:
                self.claimed.add(name)

    def wait(self, pred, what, timeout=WAIT, extra=None):
        deadline = time.monotonic() + timeout
        while not pred():
            if extra is not None and extra():
                return
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for %s (spool files %d, renamed %d)" % (
                what, len(self.created), len(self.moved))
            self.pump(min(left, 0.05))

    def spool_file(self, k):
        return self.created[k] if k < len(self.created) else None

    def close(self):
        self.ino.close()


# ------------------------------------------------------------------ upload
class Upload:
    """N_INSTANCES streamed instances, generated when first needed; the
    layout of the body is known in advance from the sizes."""

    def __init__(self, rng, all_sent, chunked, n=N_INSTANCES, sizes=(MIN_SIZE, MAX_SIZE)):
        self.n = n
        self.sizes = [rng.randrange(*sizes) // 2 * 2 for _ in range(n)]
        self.study = g.uid()
        series = [g.uid() for _ in range(3)]
        self.uids = [{"study": self.study, "series": series[i % 3], "sop": g.uid(),
                      "sop_class": hd.CT} for i in range(n)]
        self.chunked = chunked
        self.data = {}
        self.all_sent = all_sent    # sop -> (sha256, uids) of every instance made
        self.head_at, self.data_at, self.end_at = [], [], []
        off = 0
        for i, size in enumerate(self.sizes):
            self.head_at.append(off)
            off += 2 + len(PART_HEAD)           # CRLF, delimiter, headers
            self.data_at.append(off)
            off += size
            self.end_at.append(off)
        self.total = off + len(TAIL)
        self.sent = 0

    def instance(self, k):
        if k not in self.data:
            u = self.uids[k]
            info, it = g.big_instance_stream(self.sizes[k], chunk=1 << 20, study=u["study"],
                                             series=u["series"], sop=u["sop"])
            data = b"".join(it)
            assert len(data) == self.sizes[k] and info.uids["sop"] == u["sop"]
            self.data[k] = data
            self.all_sent[u["sop"]] = (hashlib.sha256(data).hexdigest(), u)
        return self.data[k]

    def pieces(self):
        for k in range(self.n):
            yield b"\r\n" + PART_HEAD
            data = memoryview(self.instance(k))
            for i in range(0, len(data), 1 << 20):
                yield data[i:i + (1 << 20)]
        yield TAIL

    def head(self):
        h = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
             % (STOW_PATH, mime.content_type(BOUNDARY.decode())))
        h += ("Transfer-Encoding: chunked\r\n" if self.chunked
              else "Content-Length: %d\r\n" % self.total)
        return (h + "\r\n").encode()


class Sender(threading.Thread):
    """Writes the request up to @cut bytes of body and then holds the
    connection open (a client waiting for its answer)."""

    def __init__(self, h, upload, cut):
        super().__init__(daemon=True)
        self.h, self.up, self.cut = h, upload, cut
        self.done = threading.Event()
        self.error = None
        self.sock = socket.create_connection(("127.0.0.1", h.port), timeout=120)

    def run(self):
        try:
            self.sock.sendall(self.up.head())
            off = 0
            for piece in self.up.pieces():
                if off >= self.cut:
                    break
                n = min(len(piece), self.cut - off)
                if self.up.chunked:
                    self.sock.sendall(b"%x\r\n" % len(piece))
                self.sock.sendall(piece[:n])
                if self.up.chunked and n == len(piece):
                    self.sock.sendall(b"\r\n")
                off += n
                self.up.sent = off
            if self.up.chunked and off >= self.up.total:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError as e:
            self.error = e
        finally:
            self.done.set()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.join(30)


# ------------------------------------------------------------------ checks
class ArchiveCheck:
    """Every file at a final path is an instance that was sent, complete
    and byte-identical, at its layout path; hashed once per (inode, mtime,
    size)."""

    def __init__(self, h, all_sent):
        self.h = h
        self.all_sent = all_sent
        self.seen = {}

    def verify(self):
        h = self.h
        present = {}
        for p in h.all_archive_files():
            assert p.name.endswith(".dcm"), "a file that is not an instance at a final " \
                "path: %s" % p
            sop = p.name[:-4]
            assert sop in self.all_sent, "%s is no instance that was sent" % p
            sha, u = self.all_sent[sop]
            assert p == h.instance_path(u["study"], u["series"], sop), \
                "%s is not at its layout path" % p
            st = p.stat()
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self.seen.get(p) != sig:
                got = hd.file_sha256(p)
                assert got == sha, "%s (%d bytes) is not the instance sent: partial or " \
                    "mixed content at a final path" % (p, st.st_size)
                self.seen[p] = sig
            present[sop] = p
        return present


def _kill(h, stop_first=False):
    pid = h.proc.pid
    if stop_first:
        os.kill(pid, signal.SIGSTOP)
    os.kill(pid, signal.SIGKILL)
    h.proc.wait(timeout=20)


def _logged(h, mark):
    """{part number: (action, bytes)} and {part number: instance UID, path}
    from the log since @mark."""
    stored, paths = {}, {}
    for line in h.error_log_lines_since(mark):
        m = STORED_RE.search(line)
        if m:
            stored[int(m.group(1))] = (m.group(2), int(m.group(3)))
        m = PATH_RE.search(line)
        if m:
            paths[int(m.group(1))] = (m.group(3), m.group(6))
    return stored, paths


MODES = ["mid-part", "in-part-headers", "delimiter-race", "inspecting", "after-claim",
         "after-fsync", "after-rename", "after-logged"]
#: fsync(2) and fdatasync(2) as /proc/<pid>/syscall numbers them
SYS_FSYNC, SYS_FDATASYNC = {"x86_64": (74, 75), "aarch64": (82, 83),
                            "riscv64": (82, 83)}.get(platform.machine(), (None, None))


def _syscall(pid):
    """(number, first argument) of the system call @pid is blocked in, or
    None (running, or gone)."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            s = f.read().split()
    except OSError:
        return None
    if len(s) < 2 or not s[0].isdigit():
        return None
    return int(s[0]), int(s[1], 16)


def _proc_state(pid):
    """(state, wchan, syscall) of @pid, for messages and waits."""
    out = []
    for f, conv in (("stat", lambda t: t.rsplit(")", 1)[1].split()[0]),
                    ("wchan", lambda t: t), ("syscall", lambda t: t.strip())):
        try:
            with open("/proc/%d/%s" % (pid, f)) as fh:
                out.append(conv(fh.read()))
        except (OSError, IndexError):
            out.append(None)
    return tuple(out)


def _wait_stopped(pid, timeout=WAIT * 2):
    """Wait until @pid is in state T (stopped), or gone. A process blocked
    in a system call (state D, an fsync on a busy disk) stops when the call
    returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _proc_state(pid)[0]
        if state in (None, "T", "t", "Z", "X"):
            return
        time.sleep(0.0005)
    raise AssertionError("pid %d did not stop within %.0f s: state, wchan, syscall %s"
                         % (pid, timeout, _proc_state(pid)))


def _fd_name(pid, fd):
    try:
        return os.path.basename(os.readlink("/proc/%d/fd/%d" % (pid, fd)))
    except OSError:
        return None


def _cut_for(mode, up, rng):
    """(k, cut): the part the kill is about and how much body is sent."""
    n = up.n
    if mode == "mid-part":
        k = rng.randrange(n)
        return k, up.data_at[k] + rng.randrange(1, up.sizes[k])
    if mode == "in-part-headers":
        k = rng.randrange(1, n)
        return k, up.head_at[k] + rng.randrange(1, up.data_at[k] - up.head_at[k])
    if mode == "delimiter-race":
        k = rng.randrange(n - 1)
        return k, up.end_at[k] + len(DELIM_LINE)
    if mode == "after-logged":
        return rng.randrange(n), up.total
    k = rng.randrange(n - 1)
    # into the next part: the delimiter after part k is surely complete
    return k, up.data_at[k + 1] + rng.randrange(0, 1 << 16)


def _one_kill(h, mode, rng, it, all_sent, checker, stats):
    """One upload, one kill, the checks, the restart and the next requests.
    @return whether a kill meant to land between two steps (WINDOW_MODES)
    did."""
    if mode == "after-logged":
        # more parts than a module may hold its reports back for (it
        # reports in batches), so that some are reported mid-body
        up = Upload(rng, all_sent, chunked=(it % 2 == 1), n=2 * N_INSTANCES,
                    sizes=(MIN_SIZE // 4, MIN_SIZE))
    else:
        up = Upload(rng, all_sent, chunked=(it % 2 == 1))
    k, cut = _cut_for(mode, up, rng)
    # generated before the sender starts: no generator holding the GIL
    # while the kill waits for its moment
    for i in range(up.n):
        if up.data_at[i] < cut:
            up.instance(i)
    ev = Events(h)
    mark = h.mark()
    sender = Sender(h, up, cut)
    sop_k = up.uids[k]["sop"]
    final_k = h.instance_path(up.study, up.uids[k]["series"], sop_k)
    note = {}
    try:
        sender.start()
        sent_all = sender.done.is_set
        if mode == "mid-part":
            ev.wait(lambda: len(ev.created) > k and sent_all(), "spool file of part %d" % (k + 1))
            time.sleep(rng.uniform(0, 0.05))
            _kill(h)
        elif mode == "in-part-headers":
            ev.wait(lambda: len(ev.created) >= k and sent_all(), "spool file of part %d" % k)
            time.sleep(rng.uniform(0, 0.05))
            _kill(h)
        elif mode == "delimiter-race":
            ev.wait(sent_all, "the sender")
            time.sleep(rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.03)]))
            _kill(h)
        elif mode == "inspecting":
            ev.wait(lambda: ev.spool_file(k) in ev.read_back, "inspection of part %d" % (k + 1))
            _kill(h)
        elif mode == "after-claim":
            ev.wait(lambda: sop_k in ev.claimed, "index entry of part %d" % (k + 1))
            os.kill(h.proc.pid, signal.SIGSTOP)
            _wait_stopped(h.proc.pid)
            note["in_window"] = not final_k.exists()
            _kill(h)
        elif mode == "after-fsync":
            assert SYS_FSYNC is not None, "fsync's system call number on %s is not known " \
                "to this test" % platform.machine()
            ev.wait(lambda: len(ev.created) > k, "spool file of part %d" % (k + 1))
            name, pid = ev.created[k], h.proc.pid
            in_fsync = False
            spool_path = os.path.join(ev.spool, name)
            deadline = time.monotonic() + WAIT
            n = 0
            while True:
                sc = _syscall(pid)
                if sc and sc[0] in (SYS_FSYNC, SYS_FDATASYNC) and _fd_name(pid, sc[1]) == name:
                    # blocked in the fsync: a stop signal takes effect as the
                    # call returns, before the next instruction of httpd
                    os.kill(pid, signal.SIGSTOP)
                    in_fsync = True
                    break
                n += 1
                if n % 32 == 0:
                    if not os.path.exists(spool_path):
                        break                           # renamed: the fsync was missed
                    assert time.monotonic() < deadline, "no fsync of part %d seen" % (k + 1)
            if in_fsync:
                _wait_stopped(pid)
            note["in_window"] = in_fsync and os.path.exists(os.path.join(ev.spool, name)) \
                and not final_k.exists()
            _kill(h)
        elif mode == "after-rename":
            ev.wait(lambda: ev.spool_file(k) in ev.moved, "rename of part %d" % (k + 1))
            _kill(h)
        elif mode == "after-logged":
            deadline = time.monotonic() + WAIT
            while (k + 1) not in _logged(h, mark)[0]:
                assert time.monotonic() < deadline, "no STOWRS0202 for part %d" % (k + 1)
                ev.pump(0.002)
            _kill(h)
    finally:
        if h.proc is not None and h.proc.poll() is None:
            _kill(h)
        sender.close()
        ev.close()
    where = "kill %d (%s, part %d of %d, %d of %d body bytes, %s)" % (
        it, mode, k + 1, up.n, cut, up.total,
        "chunked" if up.chunked else "Content-Length")

    # ---- what the dead server left
    stored, paths = _logged(h, mark)
    present = checker.verify()
    for n, (action, nbytes) in sorted(stored.items()):
        u = up.uids[n - 1]
        assert u["sop"] in present, "%s: part %d was logged %s but is not in the archive" % (
            where, n, action)
        assert nbytes == up.sizes[n - 1], (where, n, nbytes)
        if n in paths:
            assert paths[n] == (u["sop"], str(h.instance_path(u["study"], u["series"],
                                                               u["sop"]))), (where, paths[n])
    if mode == "mid-part":
        assert sop_k not in present, "%s: an instance cut in its data was published" % where
    if mode == "after-rename":
        assert sop_k in present, "%s: renamed before the kill, but not there" % where
    if mode == "after-logged":
        for n in range(k + 1):
            assert up.uids[n]["sop"] in present, \
                "%s: part %d (logged stored before part %d) missing" % (where, n + 1, k + 1)
    leftover = [p.name for p in h.spool_files()]
    if mode == "mid-part":
        assert leftover, "%s: the spool file of the part being received is gone before " \
            "the restart (nothing for the sweep to do?)" % where
    if note.get("in_window"):
        stats[mode + " in window"] = stats.get(mode + " in window", 0) + 1
    if mode == "after-logged" and len(stored) < up.n:
        stats["killed mid-request"] = stats.get("killed mid-request", 0) + 1
    stats["logged stored"] = stats.get("logged stored", 0) + len(stored)
    stats["spool files swept"] = stats.get("spool files swept", 0) + len(leftover)

    # ---- restart: the sweep, and the next requests
    h.stop()
    smark = h.mark()
    h.start()
    assert h.spool_files() == [], "%s: spool files survived the start: %s" % (
        where, h.spool_files())
    removed = sum(int(m.group(1)) for m in
                  (SWEEP_RE.search(l) for l in h.log_lines_with("STOWRS0005", smark)) if m)
    assert removed == len(leftover), "%s: %d stale spool files, STOWRS0005 says %d removed" % (
        where, len(leftover), removed)
    # the instance in flight: stored now (new, over a stale index entry, or a
    # tolerated duplicate), byte-identical
    data_k = up.instance(k)
    resp = post(h, [data_k], timeout=120)
    check_answer(h, resp, 200, stored=[up.uids[k]])
    h.assert_stored(data_k, up.uids[k])
    a, ua = g.ct_image(rows=16, cols=16)
    all_sent[ua["sop"]] = (hashlib.sha256(a).hexdigest(), ua)
    check_answer(h, post(h, [a]), 200, stored=[ua])
    h.assert_stored(a, ua)
    checker.verify()
    return bool(note.get("in_window"))


#: modes whose kill must land between two steps; a kill point that missed
#: (the step was too quick to be seen: an fdatasync whose data the module
#: already sent to disk takes well under a millisecond) is tried again, up
#: to RETRIES times
WINDOW_MODES = ("after-claim", "after-fsync")
RETRIES = 12


@pytest.mark.parametrize("mode", MODES)
def test_900_01_sigkill_during_upload(make_httpd, mode):
    """CRASH_KILLS_PER_MODE kills of a single-process server in the middle
    of a multi-instance upload at kill points of the given kind; after each
    one the archive holds only complete, byte-identical instances,
    everything logged stored is there, the restart sweeps the spool, and the
    next requests (the interrupted instance first) are stored."""
    rng = random.Random("%d-%s" % (SEED, mode))
    h = make_httpd(mpm="prefork", single_process=True)
    all_sent = {}
    checker = ArchiveCheck(h, all_sent)
    stats = {}
    kills = 0
    for it in range(KILLS_PER_MODE):
        for attempt in range(RETRIES + 1):
            in_window = _one_kill(h, mode, rng, kills, all_sent, checker, stats)
            kills += 1
            if mode not in WINDOW_MODES or in_window:
                break
        else:
            raise AssertionError("%s: kill point %d never landed in its window in %d tries "
                                 "(%s)" % (mode, it, RETRIES + 1, stats))
    print("\n%s: %d kill points, %d kills, %s" % (mode, KILLS_PER_MODE, kills, stats))
