"""Soak (DESIGN.md §3.5, §5): a bounded run of many concurrent clients on
loopback sending a mix of valid, invalid and duplicate instances, single-
and multi-instance requests, Content-Length and chunked, with random client
disconnects. Afterwards:

- every instance any answer reported stored (ReferencedSOPSequence,
  tolerated duplicates included) is on disk at its layout path,
  byte-identical to what was sent;
- nothing else is on disk, except instances of requests the client cut,
  which may or may not have been stored -- present, they must be complete
  and byte-identical (counted separately);
- every answer was the one the contract gives for what was sent (200 for
  all valid, 202 for mixed, 409 for all invalid; the exact failure reasons);
- the httpd processes are the same ones throughout (no crash, no restart),
  and their open files and memory do not grow: descriptors (/proc/<pid>/fd)
  and VmRSS sampled with the clients paused at the end of the first 20% of
  the run and at the end; fds must not grow, VmRSS by less than 10 MB per
  process (plus ASan's 256 MB quarantine in a SANITIZE=1 run).

SOAK_SECONDS (default 120, what `make test` runs) sets the duration;
SOAK_SECONDS=300 is the full five-minute run. SOAK_CLIENTS (default 16)
the number of client threads. The summary line (requests, instances, bytes,
disconnects, fd and RSS numbers) is printed, recorded as the test property
"soak" (junit XML) and written to $STOWRS_TEST_TMP or /tmp as
stowrs-soak-summary.txt.
"""

import collections
import os
import pathlib
import random
import socket
import tempfile
import threading
import time

import pytest

import dicomgen as g
import helpers_dicom as hd
import mime
from helpers_dicom import CT, check_answer
import stowrs_env
from stowrs_env import STOW_PATH

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "16"))
SEED = 920
#: VmRSS growth allowed per process; with the sanitizer runtimes loaded,
#: ASan's quarantine of freed memory (256 MB by default) comes on top
SANITIZED = bool(getattr(stowrs_env, "SANITIZE", False)
                 or getattr(stowrs_env, "VALGRIND", False))
RSS_GROWTH_MAX = (10 + (256 if SANITIZED else 0)) * 1024 * 1024

#: event MPM, two children for the whole run: never more (ServerLimit),
#: never fewer (no idle kill, no MaxConnectionsPerChild), so the pids that
#: are measured live the whole run
FIXED_CHILDREN = ("StartServers 2\nServerLimit 2\nThreadsPerChild 25\n"
                  "MaxRequestWorkers 50\nMinSpareThreads 25\nMaxSpareThreads 75\n"
                  "MaxConnectionsPerChild 0\n")

#: request kinds and their weights
KINDS = [("valid", 30), ("multi-study", 5), ("mixed", 15), ("invalid", 8),
         ("duplicate", 15), ("cut-body", 15), ("gone-before-answer", 4), ("big", 3)]


# ------------------------------------------------------------------ /proc
def _pids(h):
    return [h.proc.pid] + h.serving_pids()


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def _rss(pid):
    for line in pathlib.Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def _starttime(pid):
    return pathlib.Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[19]


def _sample(h, settle_max=10.0):
    """{pid: (fds, rss)} once the fd counts are steady (two equal readings
    0.5 s apart: lingering closes done)."""
    deadline = time.monotonic() + settle_max
    prev = None
    while True:
        cur = {p: _fds(p) for p in _pids(h)}
        if cur == prev or time.monotonic() > deadline:
            return {p: (cur[p], _rss(p)) for p in cur}
        prev = cur
        time.sleep(0.5)


# ------------------------------------------------------------------ state
class Soak:
    def __init__(self, h):
        self.h = h
        self.lock = threading.Lock()
        self.reported = {}              # sop -> (sha, uids): some answer said stored
        self.cut = {}                   # sop -> (sha, uids): sent in a request cut short
        self.pool = collections.deque(maxlen=300)   # (data, uids) reported, for duplicates
        self.counts = collections.Counter()
        self.statuses = collections.Counter()
        self.errors = []
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.idle = []                  # per client: Event set while paused

    def error(self, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(what)
            self.counts["errors"] += 1


#: a fixed set of studies and series shared by all clients: concurrent
#: requests create and fill the same directories
STUDIES = [(g.uid(), [g.uid() for _ in range(4)]) for _ in range(24)]


def _study(rng):
    return rng.choice(STUDIES)


def _new_instance(rng, study=None, big=False):
    """A new CT (8 KB to 512 KB, or 1-3 MB when @big) in @study, a
    (study, series list) of STUDIES, or in a random one."""
    st, series = study or _study(rng)
    se = rng.choice(series)
    if big:
        info, it = g.big_instance_stream(rng.randrange(1 << 20, 3 << 20) // 2 * 2,
                                         study=st, series=se)
        return b"".join(it), dict(info.uids)
    rows = rng.choice([64, 128, 128, 256, 256, 512])
    return g.ct_image(rows=rows, cols=rows, study=st, series=se)


def _truncated(rng):
    """Cut inside Pixel Data: a file cut at an element boundary before it
    may well be a readable data set (A900 without its UIDs, or even a
    valid one without pixel data), so the cut is where it is detectable."""
    data, u = g.ct_image(rows=32, cols=32)
    px = data.index(b"\xe0\x7f\x10\x00OW")
    return data[:rng.randrange(px + 13, len(data) - 1)], u, "C499"


def _bad_uid(rng):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, u = hd.ct_with(rows=8, cols=8,
                             StudyInstanceUID=rng.choice(["1..2", "01.2", "1.2.a"]))
    return data, u, "A900"


def _invalid(rng):
    return _truncated(rng) if rng.random() < 0.5 else _bad_uid(rng)


def _post(h, rng, datas, chunked):
    body = mime.dicom_body(datas)
    accept = rng.choice([None, None, hd.XML, hd.JSON])
    chunk = rng.choice([1000, 8192, 65536]) if chunked else None
    return mime.stow(h.port, body, accept=accept, chunk_size=chunk, timeout=120), len(body)


def _raw_cut(h, rng, datas, gone_before_answer):
    """Send a request and go away: mid-body, or once the body is sent
    without reading the answer. FIN or RST."""
    body = mime.dicom_body(datas)
    chunked = rng.random() < 0.3
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            % (STOW_PATH, mime.content_type("myboundary")))
    head += ("Transfer-Encoding: chunked\r\n\r\n" if chunked
             else "Content-Length: %d\r\n\r\n" % len(body))
    cut = len(body) if gone_before_answer else rng.randrange(1, len(body))
    payload = head.encode()
    if chunked:
        payload += b"%x\r\n" % len(body) + body[:cut]
        if gone_before_answer:
            payload += b"\r\n0\r\n\r\n"
    else:
        payload += body[:cut]
    s = socket.create_connection(("127.0.0.1", h.port), timeout=60)
    try:
        s.sendall(payload)
        if gone_before_answer:
            time.sleep(rng.uniform(0, 0.05))
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    finally:
        s.close()
    return cut


def _client(soak, n):
    h = soak.h
    rng = random.Random("%d-%d" % (SEED, n))
    kinds, weights = zip(*KINDS)
    idle = soak.idle[n]
    while not soak.stop.is_set():
        if soak.pause.is_set():
            idle.set()
            while soak.pause.is_set() and not soak.stop.is_set():
                time.sleep(0.05)
            idle.clear()
            continue
        kind = rng.choices(kinds, weights)[0]
        try:
            _one_request(soak, h, rng, kind)
        except AssertionError as e:
            soak.error("%s: %s" % (kind, str(e)[:2000]))
        except Exception as e:          # noqa: BLE001 -- any client failure is a finding
            soak.error("%s: %s: %s" % (kind, type(e).__name__, str(e)[:500]))
    idle.set()


def _one_request(soak, h, rng, kind):
    c = soak.counts
    chunked = rng.random() < 0.3
    if kind in ("cut-body", "gone-before-answer"):
        study = _study(rng)
        insts = [_new_instance(rng, study) for _ in range(rng.randint(1, 6))]
        cut = _raw_cut(h, rng, [d for d, _ in insts], kind == "gone-before-answer")
        with soak.lock:
            for d, u in insts:
                soak.cut[u["sop"]] = (hd.sha256(d), u)
            c["requests"] += 1
            c["disconnects"] += 1
            c["instances sent"] += len(insts)
            c["bytes sent"] += cut
        return
    valid, invalid, dups = [], [], []
    if kind in ("valid", "big", "multi-study"):
        study = _study(rng)
        n = rng.randint(1, 8)
        for _ in range(n):
            valid.append(_new_instance(rng, None if kind == "multi-study" else study,
                                       big=(kind == "big" and not valid)))
    elif kind == "mixed":
        study = _study(rng)
        valid = [_new_instance(rng, study) for _ in range(rng.randint(1, 4))]
        invalid = [_invalid(rng) for _ in range(rng.randint(1, 3))]
    elif kind == "invalid":
        invalid = [_invalid(rng) for _ in range(rng.randint(1, 3))]
    elif kind == "duplicate":
        with soak.lock:
            pool = list(soak.pool)
        if not pool:
            return
        dups = rng.sample(pool, min(len(pool), rng.randint(1, 4)))
        if rng.random() < 0.5:
            valid.append(_new_instance(rng))
    parts = [(d, u, None) for d, u in valid] + [(d, u, r) for d, u, r in invalid] + \
        [(d, u, None) for d, u in dups]
    rng.shuffle(parts)
    resp, nbytes = _post(h, rng, [d for d, _, _ in parts], chunked)
    ok = [u for _, u, r in parts if r is None]
    failed = [(r, CT if r == "A900" else None, u["sop"] if r == "A900" else None)
              for _, u, r in parts if r is not None]
    status = 200 if not failed else (202 if ok else 409)
    with soak.lock:
        c["requests"] += 1
        c["instances sent"] += len(parts)
        c["bytes sent"] += nbytes
        c["duplicates sent"] += len(dups)
        soak.statuses[resp.status] += 1
    check_answer(h, resp, status, stored=ok, failed=failed)
    with soak.lock:
        for d, u, r in parts:
            if r is None:
                sha = hd.sha256(d)
                old = soak.reported.get(u["sop"])
                assert old is None or old[0] == sha, "two contents for %s" % u["sop"]
                if old is None:
                    soak.pool.append((d, u))
                soak.reported[u["sop"]] = (sha, u)
        c["instances reported stored"] += len(ok)


def _verify_archive(soak):
    """@return (problems, files, cut instances found stored)"""
    h = soak.h
    problems = []
    files = {}
    for p in h.all_archive_files():
        if not p.name.endswith(".dcm"):
            problems.append("not an instance: %s" % p)
            continue
        files[p.name[:-4]] = p
    from_cut = 0
    for sop, p in files.items():
        if sop in soak.reported:
            sha, u = soak.reported[sop]
        elif sop in soak.cut:
            sha, u = soak.cut[sop]
            from_cut += 1
        else:
            problems.append("on disk but never reported stored nor sent in a cut "
                            "request: %s" % p)
            continue
        if p != h.instance_path(u["study"], u["series"], sop):
            problems.append("%s is not at its layout path" % p)
        elif hd.file_sha256(p) != sha:
            problems.append("%s differs from the instance sent (%d bytes)" % (p, p.stat().st_size))
    for sop, (sha, u) in soak.reported.items():
        if sop not in files:
            problems.append("reported stored, not on disk: %s" % h.instance_path(
                u["study"], u["series"], sop))
    return problems, files, from_cut


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_920_01_soak(make_httpd, record_property):
    """SOAK_SECONDS of CLIENTS concurrent clients (see the module text)."""
    h = make_httpd(conf_extra=FIXED_CHILDREN)
    deadline = time.monotonic() + 10
    while len(h.serving_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids0 = {p: _starttime(p) for p in _pids(h)}
    assert len(pids0) == 3, "expected a parent and two children: %s" % pids0
    soak = Soak(h)
    soak.idle = [threading.Event() for _ in range(CLIENTS)]
    threads = [threading.Thread(target=_client, args=(soak, i), daemon=True)
               for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()

    def paused_sample():
        soak.pause.set()
        for ev in soak.idle:
            assert ev.wait(300), "a client did not pause"
        s = _sample(h)
        return s

    time.sleep(SOAK_SECONDS * 0.2)
    first = paused_sample()
    first_counts = dict(soak.counts)
    soak.pause.clear()
    time.sleep(max(0.0, t0 + SOAK_SECONDS - time.monotonic()))
    last = paused_sample()
    soak.stop.set()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0

    assert h.wait_spool_empty(timeout=10) == [], h.spool_files()
    problems, files, from_cut = _verify_archive(soak)
    c = soak.counts
    per_pid = []
    for p in sorted(first):
        f_fd, f_rss = first[p]
        l_fd, l_rss = last.get(p, (None, None))
        per_pid.append("%s%d fds %s->%s rss %.1f->%s MB" % (
            "parent " if p == h.proc.pid else "", p, f_fd, l_fd, f_rss / 1048576,
            "%.1f" % (l_rss / 1048576) if l_rss is not None else "gone"))
    summary = ("soak: %.0f s, %d clients: %d requests (%s), %d instances sent (%d "
               "duplicates), %d reported stored (%d distinct), %.1f MB sent, %d disconnects "
               "(%d instances of cut requests stored), %d files on disk; %d client errors; "
               "%s" % (elapsed, CLIENTS, c["requests"],
                       " ".join("%d:%d" % kv for kv in sorted(soak.statuses.items())),
                       c["instances sent"], c["duplicates sent"],
                       c["instances reported stored"], len(soak.reported),
                       c["bytes sent"] / 1048576, c["disconnects"], from_cut, len(files),
                       c["errors"], "; ".join(per_pid)))
    print("\n" + summary)
    record_property("soak", summary)
    out = pathlib.Path(os.environ.get("STOWRS_TEST_TMP") or tempfile.gettempdir())
    try:
        (out / "stowrs-soak-summary.txt").write_text(summary + "\n")
    except OSError:
        pass

    assert not soak.errors, "%s\nclient errors:\n%s" % (summary, "\n".join(soak.errors))
    assert not problems, "%s\narchive:\n%s" % (summary, "\n".join(problems[:50]))
    # the same processes all along
    now = {p: _starttime(p) for p in _pids(h)}
    assert now == pids0, "%s\nhttpd processes changed: %s -> %s" % (summary, pids0, now)
    assert set(first) == set(last) == set(pids0), (summary, first, last)
    for p in first:
        assert last[p][0] <= first[p][0], "%s\npid %d: open files grew %d -> %d" % (
            summary, p, first[p][0], last[p][0])
        assert last[p][1] - first[p][1] < RSS_GROWTH_MAX, \
            "%s\npid %d: VmRSS grew by %.1f MB" % (summary, p,
                                                   (last[p][1] - first[p][1]) / 1048576)
    # the run did what it says
    assert c["requests"] - first_counts.get("requests", 0) > 0, summary
    assert c["disconnects"] > 0 and c["duplicates sent"] > 0, summary
    assert soak.statuses[200] and soak.statuses[202] and soak.statuses[409], summary
    _remove_instances(h, files)


def _remove_instances(h, files):
    """Unlink the instances and index entries in parallel: one at a time,
    tens of thousands of unlinks take minutes on a filesystem mounted with
    online discard."""
    from concurrent.futures import ThreadPoolExecutor
    index = h.archive / ".stowrs-index"
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda p: p.unlink(), files.values()))
        list(ex.map(lambda n: (index / n).unlink(), os.listdir(index)))