"""StowRSMaxRequests: the per-location limit of simultaneous store requests
(DESIGN.md §3.1 and §4), counted across every process and thread of httpd
in shared memory; request N+1 gets 503 with Retry-After before its body is
read, other locations are not affected, the count survives a graceful
restart, and a child killed while it holds a place gives it back.

A "slow upload" sends its headers and half of a valid body and keeps the
socket open: the server has admitted it (its first part is being spooled)
and is waiting for the rest.
"""

import email.utils
import os
import pathlib
import select
import signal
import socket
import time

import pytest

import dicomgen as g
import mime
from helpers_dicom import check_answer, post
from stowrs_env import LOCATION, STOW_PATH, make_writable_dir

OTHER_LOC = "/dcm4chee-arc/aets/OTHER/rs"


# --------------------------------------------------------------- helpers
def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


_OPEN = []


@pytest.fixture
def slow_uploads():
    """Closes the slow uploads a test left open (after a failure), before
    make_httpd stops the server: request it after make_httpd."""
    yield
    while _OPEN:
        _OPEN.pop().close()


class SlowUpload:
    """A store request whose body stops half-way through its first instance
    until finish() is called."""

    def __init__(self, port, path=STOW_PATH, rows=64, cols=64, host=None):
        _OPEN.append(self)
        self.port = port
        self.data, self.uids = g.ct_image(rows=rows, cols=cols)
        self.body = mime.dicom_body([self.data])
        self.cut = self.body.index(self.data) + len(self.data) // 2
        head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"
                "Content-Length: %d\r\n\r\n"
                % (path, host or "127.0.0.1:%d" % port, mime.content_type("myboundary"),
                   len(self.body)))
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(head.encode("latin-1") + self.body[:self.cut])
        self.reader = mime._Reader(self.sock)

    def answered(self, timeout=0.0):
        """Something (a premature answer) can be read."""
        if self.reader.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def read_response(self):
        resp = mime.Response()
        while resp.status is None:
            version, status, reason, hs = mime._read_head(self.reader)
            if 100 <= status < 200:
                resp.interim.append(status)
                continue
            resp.version, resp.status, resp.reason, resp.headers = \
                version, status, reason, hs
        resp.body = mime._read_body(self.reader, resp, "POST")
        return resp

    def finish(self):
        """Send the rest of the body; @return the Response."""
        self.sock.sendall(self.body[self.cut:])
        resp = self.read_response()
        resp.body_sent = True
        self.close()
        return resp

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _hold(h, n, path=STOW_PATH, archive=None, already=0):
    """Open @n slow uploads and wait until the server spools all of them
    (each one has been admitted). @already: spool files there before."""
    ups = [SlowUpload(h.port, path) for _ in range(n)]
    want = already + n
    got = _wait(lambda: len(h.spool_files(archive)) >= want)
    assert got, "slow uploads not admitted: %d spool files, expected %d; answered: %s" % (
        len(h.spool_files(archive)), want,
        [u.read_response() if u.answered() else None for u in ups])
    for u in ups:
        assert not u.answered(), "a slow upload was answered early: %r" % u.read_response()
    return ups


def _finish_all(h, ups, location=LOCATION, archive=None):
    for u in ups:
        resp = u.finish()
        check_answer(h, resp, 200, stored=[u.uids], location=location)
        h.assert_stored(u.data, u.uids, archive=archive)


def _assert_refused(h, resp, mark=None):
    """503 before the body, Retry-After, a short text/plain explanation."""
    assert resp.status == 503, "expected 503 (limit reached), got %r" % resp
    ra = resp.header("Retry-After")
    assert ra, "503 without Retry-After: %r" % resp.headers
    assert ra.isdigit() or email.utils.parsedate(ra), "bad Retry-After %r" % ra
    ct = resp.header("Content-Type") or ""
    assert ct.startswith("text/plain"), "503 Content-Type %r, expected text/plain" % ct
    assert resp.body.strip(), "503 with an empty body"
    assert len(resp.body) < 1024, "503 body is not short: %d bytes" % len(resp.body)
    assert b"<html" not in resp.body.lower(), resp.body
    if mark is not None:
        lines = h.wait_log("STOWRS0110", since=mark)
        assert lines, "no STOWRS0110 line for the refusal:\n%s" % h.error_log_tail()
        assert all("[stowrs:info]" in l for l in lines), lines


def _refused_request(h, path=STOW_PATH):
    """A complete small request sent with Expect: 100-continue: must be
    refused without 100 and without its body being read."""
    data, uids = g.ct_image(rows=8, cols=8)
    mark = h.mark()
    resp = mime.stow(h.port, mime.dicom_body([data]), path=path, expect_continue=True)
    _assert_refused(h, resp, mark)
    assert not resp.got_continue, "100 Continue sent to a refused request: %s" % resp.interim
    assert not resp.body_sent, "the body of a refused request was sent (read)"
    h.assert_not_stored(uids)
    # without Expect too
    data2, uids2 = g.ct_image(rows=8, cols=8)
    resp = mime.stow(h.port, mime.dicom_body([data2]), path=path)
    _assert_refused(h, resp)
    h.assert_not_stored(uids2)
    return resp


def _other_location(archive, extra=""):
    return ('<Location "%s">\n    SetHandler stowrs\n    StowRSArchive "%s"\n%s</Location>\n'
            % (OTHER_LOC, archive, extra))


MPM_EXTRA = {
    "event": "",
    "worker": "",
    # several processes, each serving one connection at a time: the slow
    # uploads and the refused request are in different processes
    "prefork": "StartServers 4\nMinSpareServers 4\nMaxSpareServers 10\n",
}


# --------------------------------------------------------------- the limit
@pytest.mark.parametrize("mpm", ["event", "worker", "prefork"])
def test_410_01_limit_reached(make_httpd, new_workdir, mpm, slow_uploads):
    """StowRSMaxRequests 2: two slow uploads hold both places, the third
    request is refused (503 + Retry-After, no 100 Continue), a location
    without a limit still works; once the two finish (200, stored) the
    location serves again."""
    other = make_writable_dir(new_workdir("other") / "archive")
    h = make_httpd(mpm=mpm, location_conf="StowRSMaxRequests 2",
                   conf_extra=MPM_EXTRA[mpm] + _other_location(other))
    ups = _hold(h, 2)
    if mpm == "prefork":
        # really two processes hold the two places
        holders = _spool_holders(h)
        assert len(set(holders)) == 2, "slow uploads not in two processes: %s" % holders
    _refused_request(h)
    # the checks before the limit still come first (DESIGN.md §3.1 order)
    resp = mime.send(h.port, "GET", STOW_PATH)
    assert resp.status == 405, "GET while the limit is reached: %r" % resp
    # the other location is not affected
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c], path=OTHER_LOC + "/studies"), 200, stored=[uc],
                 location=OTHER_LOC)
    h.assert_stored(c, uc, archive=other)
    # still refused: nothing was released meanwhile
    _assert_refused(h, post(h, [g.ct_image(rows=8, cols=8)[0]]))
    _finish_all(h, ups)
    # both places free again
    d, ud = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [d]), 200, stored=[ud])
    h.assert_stored(d, ud)
    ups = _hold(h, 2)
    _refused_request(h)
    _finish_all(h, ups)
    assert h.wait_spool_empty(archive=other) == []


def test_410_02_unlimited(make_httpd, slow_uploads):
    """0, the default, is unlimited."""
    for conf in ("", "StowRSMaxRequests 0"):
        h = make_httpd(location_conf=conf)
        ups = _hold(h, 4)
        c, uc = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [c]), 200, stored=[uc])
        _finish_all(h, ups)
        h.stop()


def test_410_03_own_limits(make_httpd, new_workdir, slow_uploads):
    """Two locations with a limit of 1 each count separately."""
    other = make_writable_dir(new_workdir("other") / "archive")
    h = make_httpd(location_conf="StowRSMaxRequests 1",
                   conf_extra=_other_location(other, "    StowRSMaxRequests 1\n"))
    main_up = _hold(h, 1)
    _refused_request(h)
    for _ in range(2):
        c, uc = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [c], path=OTHER_LOC + "/studies"), 200, stored=[uc],
                     location=OTHER_LOC)
    other_up = _hold(h, 1, path=OTHER_LOC + "/studies", archive=other)
    _refused_request(h, path=OTHER_LOC + "/studies")
    _refused_request(h)
    _finish_all(h, other_up, location=OTHER_LOC, archive=other)
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c], path=OTHER_LOC + "/studies"), 200, stored=[uc],
                 location=OTHER_LOC)
    _refused_request(h)
    _finish_all(h, main_up)
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c]), 200, stored=[uc])
    assert h.wait_spool_empty(archive=other) == []


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_410_04_race(make_httpd, mpm, slow_uploads):
    """Ten uploads start at once against a limit of 3: exactly 3 are
    admitted (the others get 503 while those 3 still run)."""
    h = make_httpd(mpm=mpm, location_conf="StowRSMaxRequests 3",
                   conf_extra=MPM_EXTRA[mpm].replace("MinSpareServers 4", "MinSpareServers 6"))
    ups = [SlowUpload(h.port) for _ in range(10)]
    try:
        refused = _wait(lambda: sum(u.answered() for u in ups) >= 7, timeout=15)
        assert refused, "only %d of 10 answered while 3 may run" % sum(u.answered() for u in ups)
        time.sleep(0.5)
        answered = [u for u in ups if u.answered()]
        running = [u for u in ups if not u.answered()]
        assert len(answered) == 7, "%d refused, expected 7" % len(answered)
        for u in answered:
            _assert_refused(h, u.read_response())
            u.close()
        assert _wait(lambda: len(h.spool_files()) == 3), h.spool_files()
    except BaseException:
        for u in ups:
            u.close()
        raise
    _finish_all(h, running)
    for u in answered:
        h.assert_not_stored(u.uids)


# --------------------------------------------------------------- restarts
def _graceful(h):
    """SIGUSR1 to the parent; wait until the new generation serves."""
    mark = h.mark()
    os.kill(h.pid, signal.SIGUSR1)
    lines = h.wait_log("resuming normal operations", since=mark, timeout=15)
    assert lines, "no new generation after SIGUSR1:\n%s" % h.error_log_tail()
    # AH00493 (event, worker) / AH00171 (prefork): graceful, not a full restart
    assert [l for l in h.error_log_lines_since(mark) if "AH00493" in l or "AH00171" in l], \
        "graceful restart not logged:\n%s" % h.error_log_tail()
    assert h.running
    assert _wait(h._answers), "server does not answer after the graceful restart"


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_410_05_graceful_restart(make_httpd, mpm, slow_uploads):
    """Two uploads still running in the old generation keep counting after
    a graceful restart: the new generation refuses the third, and the two
    finish fine."""
    h = make_httpd(mpm=mpm, location_conf="StowRSMaxRequests 2", conf_extra=MPM_EXTRA[mpm])
    before = set(h.serving_pids())
    ups = _hold(h, 2)
    holders = set(_spool_holders(h))
    _graceful(h)
    # the new generation is there (new children) while the holders still run
    assert _wait(lambda: set(h.serving_pids()) - before), \
        "no new children after the graceful restart"
    for pid in holders:
        assert pathlib.Path("/proc/%d" % pid).exists(), "holder %d is gone" % pid
    _refused_request(h)
    _finish_all(h, ups)
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c]), 200, stored=[uc])
    ups = _hold(h, 2)
    _refused_request(h)
    _finish_all(h, ups)


def _spool_holders(h, archive=None):
    """PIDs of serving processes with a spool file open, one per open file."""
    spool = str(h.spool_dir(archive))
    out = []
    for pid in h.serving_pids():
        fds = pathlib.Path("/proc/%d/fd" % pid)
        try:
            links = [os.readlink(fd) for fd in fds.iterdir()]
        except OSError:
            continue
        out += [pid for l in links if l.startswith(spool + "/")]
    return out


def _reaped(pid):
    """The process is gone for good (not even a zombie)."""
    return not pathlib.Path("/proc/%d" % pid).exists()


def test_410_06_killed_child(make_httpd, slow_uploads):
    """prefork, StowRSMaxRequests 1: the child serving the only admitted
    upload is killed with SIGKILL; once it is gone, its place is free."""
    h = make_httpd(mpm="prefork", location_conf="StowRSMaxRequests 1",
                   conf_extra=MPM_EXTRA["prefork"])
    up = _hold(h, 1)[0]
    holders = _spool_holders(h)
    assert len(holders) == 1, "expected one child with a spool file open: %s" % holders
    victim = holders[0]
    _refused_request(h)
    os.kill(victim, signal.SIGKILL)
    up.close()
    assert _wait(lambda: _reaped(victim), timeout=15), "child %d not reaped" % victim
    # the dead child's spool file is stale (no live writer): remove it, as
    # the next (re)start would
    for p in h.spool_files():
        p.unlink()
    h.assert_not_stored(up.uids)
    for _ in range(3):
        c, uc = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [c]), 200, stored=[uc])
        h.assert_stored(c, uc)
    # and the limit still works afterwards
    ups = _hold(h, 1)
    _refused_request(h)
    _finish_all(h, ups)


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_410_07_one_after_another(make_httpd, mpm):
    """StowRSMaxRequests 1 and a client that sends its requests one after
    another, each after the answer to the previous one (new connection each
    time, as most STOW-RS clients do): never refused. A place must be free
    again by the time its request's answer has arrived."""
    h = make_httpd(mpm=mpm, location_conf="StowRSMaxRequests 1", conf_extra=MPM_EXTRA[mpm])
    statuses = []
    for _ in range(40):
        c, uc = g.ct_image(rows=8, cols=8)
        resp = post(h, [c])
        statuses.append(resp.status)
    refused = statuses.count(503)
    assert refused == 0, "%d of 40 sequential requests refused with 503: %s" % (
        refused, statuses)
    assert statuses == [200] * 40, statuses
    # the same on one keep-alive connection: the place is given back per
    # request, not per connection
    sock = socket.create_connection(("127.0.0.1", h.port), timeout=30)
    try:
        reader = mime._Reader(sock)
        for i in range(10):
            c, uc = g.ct_image(rows=8, cols=8)
            body = mime.dicom_body([c])
            head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n"
                    "Content-Length: %d\r\n\r\n"
                    % (STOW_PATH, h.port, mime.content_type("myboundary"), len(body)))
            sock.sendall(head.encode("latin-1") + body)
            resp = mime.Response()
            resp.version, resp.status, resp.reason, resp.headers = mime._read_head(reader)
            resp.body = mime._read_body(reader, resp, "POST")
            check_answer(h, resp, 200, stored=[uc])
            assert (resp.header("Connection") or "").lower() != "close", \
                "keep-alive connection closed after request %d: %r" % (i + 1, resp.headers)
    finally:
        sock.close()


def test_410_08_many_locations(make_httpd, new_workdir, slow_uploads):
    """A limit holds however many other locations have been used before:
    70 AE titles each serve a request, then the limited one still refuses
    its second simultaneous request."""
    base = new_workdir("many")
    extra = "".join(_other_location(make_writable_dir(base / ("a%d" % i)))
                    .replace(OTHER_LOC, "/dcm4chee-arc/aets/AE%d/rs" % i) for i in range(70))
    h = make_httpd(location_conf="StowRSMaxRequests 1", conf_extra=extra)
    for i in range(70):
        loc = "/dcm4chee-arc/aets/AE%d/rs" % i
        c, uc = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [c], path=loc + "/studies"), 200, stored=[uc], location=loc)
    ups = _hold(h, 1)
    _refused_request(h)
    _finish_all(h, ups)


def test_410_09_same_path_in_two_virtual_hosts(make_httpd, new_workdir, slow_uploads):
    """Two name-based virtual hosts with a <Location> of the same path,
    each with its own archive and StowRSMaxRequests 1, are two locations:
    a request held on one does not make the other refuse."""
    va = make_writable_dir(new_workdir("va") / "archive")
    vb = make_writable_dir(new_workdir("vb") / "archive")
    loc = "/dcm4chee-arc/aets/SITE/rs"

    def vhost(name, archive):
        return ('<VirtualHost *>\n    ServerName %s\n'
                '    <Location "%s">\n        SetHandler stowrs\n'
                '        StowRSArchive "%s"\n        StowRSMaxRequests 1\n'
                '    </Location>\n</VirtualHost>\n' % (name, loc, archive))
    h = make_httpd(conf_extra=vhost("a.example", va) + vhost("b.example", vb))
    # the routing: each name reaches its own archive
    for name, archive in (("a.example", va), ("b.example", vb)):
        c, uc = g.ct_image(rows=8, cols=8)
        resp = post(h, [c], path=loc + "/studies", headers=[("Host", name)])
        assert resp.status == 200, resp
        h.assert_stored(c, uc, archive=archive)
    up = SlowUpload(h.port, path=loc + "/studies", host="a.example")
    assert _wait(lambda: len(h.spool_files(va)) == 1), "upload on a.example not admitted"
    assert not up.answered()
    # a.example is full
    c, uc = g.ct_image(rows=8, cols=8)
    resp = post(h, [c], path=loc + "/studies", headers=[("Host", "a.example")])
    _assert_refused(h, resp)
    # b.example is another location
    resp = post(h, [c], path=loc + "/studies", headers=[("Host", "b.example")])
    assert resp.status == 200, "b.example refused while only a.example is full: %r" % resp
    h.assert_stored(c, uc, archive=vb)
    resp = up.finish()
    assert resp.status == 200, resp
    h.assert_stored(up.data, up.uids, archive=va)
    for a in (va, vb):
        assert h.wait_spool_empty(archive=a) == []


# --------------------------------------------------------------- configuration
@pytest.mark.parametrize("value", ["0", "1", "1000000"])
def test_410_10_good_values(make_httpd, value):
    h = make_httpd(start=False)
    rc, out = h.config_test("", location_conf="StowRSMaxRequests %s" % value)
    assert rc == 0, "StowRSMaxRequests %s refused:\n%s" % (value, out)
    rc, out = h.config_test("StowRSMaxRequests %s" % value)
    assert rc == 0, "StowRSMaxRequests %s at server level refused:\n%s" % (value, out)


@pytest.mark.parametrize("value", ["-1", "abc", "1000001", "12abc", ""])
@pytest.mark.parametrize("where", ["location", "server"])
def test_410_11_bad_values(make_httpd, value, where):
    h = make_httpd(start=False)
    line = ("StowRSMaxRequests %s" % value).strip()
    if where == "location":
        rc, out = h.config_test("", location_conf=line)
    else:
        rc, out = h.config_test(line)
    assert rc != 0, "apache2 -t accepted %r (%s):\n%s" % (line, where, out)
    assert "StowRSMaxRequests" in out, "message does not name StowRSMaxRequests:\n%s" % out
    assert "Syntax OK" not in out
