"""Limits and faults: StowRSMaxBodySize (DESIGN.md §3.1, t/CONTRACT.md), a full
filesystem (A700, §3.3/§3.6), a read-only archive directory (0110), a
client that goes away mid-upload (§3.5) and memory while one 2 GB instance
streams through (§3.2, §5).
"""

import os
import pathlib
import socket
import subprocess
import time

import pytest

import dicomgen as g
import helpers_dicom as hd
import mime
from helpers_dicom import CT, check_answer, post
from stowrs_env import STOW_PATH, is_root, make_writable_dir, run_ids


def _new_files(h, before):
    return sorted(set(h.all_archive_files()) - set(before))


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# --------------------------------------------------------------- StowRSMaxBodySize
LIMIT = 4000


def test_400_01_max_body_content_length(make_httpd):
    """Declared Content-Length over the limit: 413 before the body is read,
    so a client that asked for 100-continue never gets it."""
    h = make_httpd(location_conf="StowRSMaxBodySize %d" % LIMIT)
    big, big_uids = g.ct_image(rows=64, cols=64)           # ~9 KB
    body = mime.multipart_body([(None, big)])
    assert len(body) > LIMIT
    resp = mime.stow(h.port, body, expect_continue=True)
    assert resp.status == 413, resp
    assert not resp.got_continue, resp.interim
    assert not resp.body_sent
    assert resp.header("Content-Type").startswith("text/plain"), resp
    assert b"<html" not in resp.body.lower()
    assert h.all_archive_files() == []
    # without Expect as well
    resp = mime.stow(h.port, body)
    assert resp.status == 413, resp
    h.assert_not_stored(big_uids)
    # under the limit: stored
    small, small_uids = g.ct_image(rows=8, cols=8)
    body = mime.multipart_body([(None, small)])
    assert len(body) < LIMIT
    resp = mime.stow(h.port, body, expect_continue=True)
    check_answer(h, resp, 200, stored=[small_uids])
    assert resp.got_continue
    h.assert_stored(small, small_uids)


@pytest.mark.parametrize("chunk", [1000, 4096, 65536])
def test_400_02_max_body_chunked(make_httpd, chunk):
    """A chunked body has no Content-Length: the limit is checked while
    reading; nothing is stored and the spool is empty afterwards."""
    h = make_httpd(location_conf="StowRSMaxBodySize %d" % LIMIT)
    big, big_uids = g.ct_image(rows=128, cols=128)          # ~33 KB
    body = mime.multipart_body([(None, big)])
    resp = mime.stow(h.port, body, chunk_size=chunk)
    assert resp.status == 413, resp
    assert resp.header("Content-Type").startswith("text/plain"), resp
    h.assert_not_stored(big_uids)
    assert h.all_archive_files() == []
    assert h.wait_spool_empty() == []
    # the server is fine afterwards, chunked under the limit works
    small, small_uids = g.ct_image(rows=8, cols=8)
    resp = mime.stow(h.port, mime.multipart_body([(None, small)]), chunk_size=chunk)
    check_answer(h, resp, 200, stored=[small_uids])
    h.assert_stored(small, small_uids)


def test_400_03_no_limit_by_default(httpd):
    """Without the directive a body far over 4000 bytes is fine."""
    data, uids = g.ct_image(rows=256, cols=256)
    check_answer(httpd, post(httpd, [data]), 200, stored=[uids])
    httpd.assert_stored(data, uids)


# --------------------------------------------------------------- A700 / 0110
@pytest.fixture
def small_fs(new_workdir):
    """A 2 MB filesystem for the archive (tmpfs, root only); None when not
    root. Unmounted after the server using it has stopped (request this
    fixture before make_httpd)."""
    if not is_root():
        yield None
        return
    mnt = new_workdir("smallfs") / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        r = subprocess.run(["umount", str(mnt)], capture_output=True)
        if r.returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def _readonly_series(h, study, series):
    """Create the series directory the default layout would use and make it
    read-only for the serving user (root's children run as www-data, whom
    the mode bits do stop)."""
    d = h.archive / study / series
    make_writable_dir(h.archive / study)
    make_writable_dir(d, mode=0o555)
    return d


def test_400_04_out_of_space_alone(small_fs, make_httpd):
    """The only instance does not fit: A700, 503 with Retry-After, spool
    empty. Not root (no tmpfs): the equivalent fault the serving user can
    be given without root, a read-only series directory, answers 0110/409."""
    if small_fs is None:
        h = make_httpd()
        data, uids = g.ct_image(rows=64, cols=64)
        _readonly_series(h, uids["study"], uids["series"])
        check_answer(h, post(h, [data]), 409, failed=[("0110", CT, uids["sop"])])
        h.assert_not_stored(uids)
        return
    h = make_httpd(archive=small_fs)
    data, uids = g.ct_image(rows=1024, cols=1024)            # 2 MB of pixels
    resp = post(h, [data])
    check_answer(h, resp, 503, failed=[("A700", None, None)])
    assert resp.header("Retry-After").isdigit(), resp.headers
    h.assert_not_stored(uids)
    assert h.wait_spool_empty() == []
    assert h.all_archive_files() == []
    # the space of the failed spool file was given back: a small one fits
    small, small_uids = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [small]), 200, stored=[small_uids])
    h.assert_stored(small, small_uids)


def test_400_05_out_of_space_second(small_fs, make_httpd):
    """One instance fits, the next does not: 202, the first intact."""
    if small_fs is None:
        h = make_httpd()
        a, ua = g.ct_image(rows=64, cols=64)
        b, ub = g.ct_image(rows=64, cols=64, study=ua["study"])
        _readonly_series(h, ub["study"], ub["series"])
        check_answer(h, post(h, [a, b]), 202, stored=[ua], failed=[("0110", CT, ub["sop"])])
        h.assert_stored(a, ua)
        h.assert_not_stored(ub)
        return
    h = make_httpd(archive=small_fs)
    a, ua = g.ct_image(rows=512, cols=512)                   # 512 KB
    b, ub = g.ct_image(rows=1024, cols=1024, study=ua["study"])  # 2 MB
    resp = post(h, [a, b])
    check_answer(h, resp, 202, stored=[ua], failed=[("A700", None, None)])
    h.assert_stored(a, ua)
    h.assert_not_stored(ub)
    assert h.wait_spool_empty() == []
    assert [p.name for p in h.all_archive_files()] == [ua["sop"] + ".dcm"]


def test_400_06_readonly_directory(make_httpd):
    """Any I/O error other than no space is 0110; with root or without.
    A failed publish leaves no spool file, and nothing that later makes the
    same SOP Instance UID look stored (no A77B, no duplicate)."""
    h = make_httpd()
    a, ua = g.ct_image(rows=16, cols=16)
    b, ub = g.ct_image(rows=16, cols=16, study=ua["study"])
    d = _readonly_series(h, ub["study"], ub["series"])
    try:
        resp = post(h, [a, b])
        check_answer(h, resp, 202, stored=[ua], failed=[("0110", CT, ub["sop"])])
        h.assert_stored(a, ua)
        h.assert_not_stored(ub)
        assert list(d.iterdir()) == []
        assert h.wait_spool_empty() == []
        # alone: 409 (0110 is not a resource shortage)
        c, uc = g.ct_image(rows=16, cols=16, study=ub["study"], series=ub["series"])
        check_answer(h, post(h, [c]), 409, failed=[("0110", CT, uc["sop"])])
    finally:
        os.chmod(d, 0o755)
    # writable again: the same instance goes in where it belongs
    check_answer(h, post(h, [b]), 200, stored=[ub])
    h.assert_stored(b, ub)
    # the instance that failed alone was never stored: under another study
    # it is new, not a conflict
    c2, uc2 = g.ct_image(rows=16, cols=16, sop=uc["sop"])
    check_answer(h, post(h, [c2]), 200, stored=[uc2])
    h.assert_stored(c2, uc2)
    h.assert_not_stored(uc)


# --------------------------------------------------------------- disconnect
def _request_head(length=None, chunked=False):
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            % (STOW_PATH, mime.content_type("myboundary")))
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    else:
        head += "Content-Length: %d\r\n" % length
    return (head + "\r\n").encode()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("close", ["fin", "rst"])
def test_400_07_client_disconnect(httpd, framing, close):
    """The client sends the first instance whole and half of the second,
    then goes away. The first stays stored and byte-identical; nothing of
    the second is anywhere; the spool is empty; the next request works."""
    a, ua = g.ct_image(rows=128, cols=128)
    b, ub = g.ct_image(rows=512, cols=512, study=ua["study"])
    body = mime.multipart_body([(None, a), (None, b)])
    cut = body.index(b) + len(b) // 2
    before = httpd.all_archive_files()
    sock = socket.create_connection(("127.0.0.1", httpd.port), timeout=30)
    try:
        if framing == "chunked":
            sock.sendall(_request_head(chunked=True))
            # one chunk announcing the whole body, only half of it sent
            sock.sendall(b"%x\r\n" % len(body) + body[:cut])
        else:
            sock.sendall(_request_head(length=len(body)) + body[:cut])
        # the first instance is published while the body is still coming
        path = httpd.instance_path(ua["study"], ua["series"], ua["sop"])
        assert _wait(path.exists), "first instance not stored while the request runs"
        assert _wait(lambda: len(httpd.spool_files()) == 1), httpd.spool_files()
    finally:
        if close == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.close()
    assert _wait(lambda: not httpd.spool_files()), httpd.spool_files()
    httpd.assert_stored(a, ua)
    httpd.assert_not_stored(ub)
    assert _new_files(httpd, before) == [path]
    # the second instance was never stored: under another study it is new
    b2, ub2 = g.ct_image(rows=8, cols=8, sop=ub["sop"])
    check_answer(httpd, post(httpd, [b2]), 200, stored=[ub2])
    # the next request works
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(httpd, post(httpd, [c]), 200, stored=[uc])
    httpd.assert_stored(c, uc)


def test_400_08_disconnect_in_headers_of_part(httpd):
    """Gone in the middle of a part's header block: nothing stored."""
    a, ua = g.ct_image(rows=8, cols=8)
    body = mime.multipart_body([(None, a)])
    cut = body.index(b"Content-Type") + 5
    before = httpd.all_archive_files()
    with socket.create_connection(("127.0.0.1", httpd.port), timeout=30) as sock:
        sock.sendall(_request_head(length=len(body)) + body[:cut])
        time.sleep(0.2)
    assert _wait(lambda: not httpd.spool_files())
    assert httpd.all_archive_files() == before
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(httpd, post(httpd, [c]), 200, stored=[uc])


# --------------------------------------------------------------- memory
def _vm(pid, key):
    for line in pathlib.Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError("%s not in /proc/%d/status" % (key, pid))


BIG = 2 * 1024 ** 3


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_400_09_memory_2gb(make_httpd, framing):
    """One 2 GB instance through a single-process server: its peak resident
    size (VmHWM) grows by less than 32 MB, and the stored file is the
    stream byte for byte. Required in `make test`; the body is written in
    4 MB sendall calls."""
    h = make_httpd(single_process=True)
    pid = h.serving_pids()[0]
    # warm up: dictionary, first request, first spool file
    w, uw = g.ct_image(rows=256, cols=256)
    check_answer(h, post(h, [w]), 200, stored=[uw])
    hwm0 = _vm(pid, "VmHWM")
    info, it = g.big_instance_stream(BIG, chunk=4 << 20)
    total, gen = mime.multipart_stream([(None, it, info.size)])
    if framing == "chunked":
        resp = mime.stow(h.port, gen, chunk_size=4 << 20, timeout=600)
    else:
        resp = mime.stow(h.port, gen, content_length=total, timeout=600)
    check_answer(h, resp, 200, stored=[info.uids])
    hwm1 = _vm(pid, "VmHWM")
    grown = hwm1 - hwm0
    assert grown < 32 * 1024 * 1024, "VmHWM grew by %.1f MB" % (grown / 1048576)
    path = h.instance_path(info.uids["study"], info.uids["series"], info.uids["sop"])
    try:
        assert path.stat().st_size == BIG
        assert hd.file_sha256(path) == info.sha256
    finally:
        if path.exists():
            path.unlink()
