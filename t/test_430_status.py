"""Observability: per-location counters shown by mod_status (summed over
every httpd process, kept in shared memory) and the access-log notes
stowrs-stored / stowrs-failed.

    GET /server-status?auto
    StowRSRequests[<location>]: N
    StowRSRefused[<location>]: N
    StowRSInstancesStored[<location>]: N
    StowRSBytesStored[<location>]: N
    StowRSFailures<HEX>[<location>]: N
"""

import collections
import random
import re
import time

import dicomgen as g
import mime
from helpers_dicom import CT, UNKNOWN_CLASS, check_answer, post
import test_410_max_requests as t410
from test_410_max_requests import slow_uploads  # noqa: F401 (fixture)
from stowrs_env import LOCATION, STOW_PATH, libexecdir, make_writable_dir

OTHER_LOC = "/dcm4chee-arc/aets/OTHER/rs"
STATUS_CONF = ('LoadModule status_module "%s/mod_status.so"\n'
               "ExtendedStatus On\n"
               '<Location "/server-status">\n    SetHandler server-status\n</Location>\n')
LINE_RE = re.compile(r"^(StowRS[A-Za-z0-9]+)\[(.*)\]: (\d+)$")


def _status_conf():
    return STATUS_CONF % libexecdir()


def _other_location(archive, extra=""):
    return ('<Location "%s">\n    SetHandler stowrs\n    StowRSArchive "%s"\n%s</Location>\n'
            % (OTHER_LOC, archive, extra))


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def stowrs_status(h):
    """{location: {counter name: value}} from /server-status?auto; every
    StowRS line must be well formed and appear once."""
    resp = mime.send(h.port, "GET", "/server-status?auto")
    assert resp.status == 200, resp
    out = collections.defaultdict(dict)
    for line in resp.text.splitlines():
        if not line.startswith("StowRS"):
            continue
        m = LINE_RE.match(line)
        assert m, "malformed status line %r" % line
        name, loc, value = m.group(1), m.group(2), int(m.group(3))
        assert name not in out[loc], "%s[%s] twice" % (name, loc)
        out[loc][name] = value
    return out


def _failures(counters):
    return {k[len("StowRSFailures"):]: v for k, v in counters.items()
            if k.startswith("StowRSFailures") and v}


class Tally:
    """What a location was sent and should count."""

    def __init__(self):
        self.requests = 0
        self.stored = 0
        self.bytes = 0
        self.failures = collections.Counter()

    def expect(self, counters, where):
        assert counters.get("StowRSRequests") == self.requests, \
            "%s: StowRSRequests %r, sent %d" % (where, counters.get("StowRSRequests"),
                                                 self.requests)
        assert counters.get("StowRSRefused") == 0, \
            "%s: StowRSRefused %r, expected 0" % (where, counters.get("StowRSRefused"))
        assert counters.get("StowRSInstancesStored") == self.stored, \
            "%s: StowRSInstancesStored %r, stored %d" % (
                where, counters.get("StowRSInstancesStored"), self.stored)
        assert counters.get("StowRSBytesStored") == self.bytes, \
            "%s: StowRSBytesStored %r, sum of stored part sizes %d" % (
                where, counters.get("StowRSBytesStored"), self.bytes)
        assert _failures(counters) == dict(self.failures), \
            "%s: failures %s, expected %s" % (where, _failures(counters), dict(self.failures))


# one instance of a kind: "ok" or the FailureReason it must get
def _instance(kind, study=None):
    """(bytes, uids, failure hex or None, failure class)"""
    if kind == "ok":
        d, u = g.ct_image(rows=random.choice([8, 16, 24, 40]), cols=24, study=study)
        return d, u, None
    if kind == "C499":
        d, u = g.no_preamble(rows=8, cols=8)
        return d, u, "C499"
    if kind == "0122":
        d, u = g.ct_image(rows=8, cols=8, sop_class="1.2.3.4", study=study)
        return d, u, "0122"
    if kind == "C409":
        d, u = g.ct_image(rows=8, cols=8)      # another study than the path's
        return d, u, "C409"
    raise AssertionError(kind)


PLAN = [
    ["ok"], ["ok", "ok"], ["C499"], ["ok", "0122"], ["ok", "ok", "ok"], ["0122"],
    ["ok", "C499", "ok"], ["C409", "ok"], ["ok"], ["C499", "C499"], ["ok", "ok"], ["ok"],
]


def _run_plan(h, location, tally, plan):
    for kinds in plan:
        study = g.uid()
        items = [_instance(k, study) for k in kinds]
        path = location + "/studies"
        if "C409" in kinds:
            path = "%s/studies/%s" % (location, study)
        stored = []
        failed = []
        for (d, u, fail), k in zip(items, kinds):
            if fail is None:
                stored.append(u)
                tally.stored += 1
                tally.bytes += len(d)
            else:
                cls = {"C499": UNKNOWN_CLASS, "0122": "1.2.3.4", "C409": CT}[fail]
                failed.append((fail, cls, None))
                tally.failures[fail] += 1
        status = 200 if not failed else (202 if stored else 409)
        resp = post(h, [d for d, _, _ in items], path=path)
        tally.requests += 1
        check_answer(h, resp, status, stored=stored, failed=failed, location=location)


def _pids_of(h, log):
    """(pid, path) of each request in the pid log."""
    out = []
    try:
        text = log.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        pid, _, path = line.partition(" ")
        out.append((int(pid), path))
    return out


def test_430_01_counters_summed_over_processes(make_httpd, new_workdir):
    """prefork with several processes, many requests on new connections to
    two locations: the counters are the totals of what was sent, whichever
    child served each request."""
    other = make_writable_dir(new_workdir("other") / "archive")
    wd = new_workdir("pidlog")
    pidlog = wd / "pids.log"
    h = make_httpd(mpm="prefork",
                   conf_extra="StartServers 4\nMinSpareServers 4\nMaxSpareServers 10\n"
                              + _status_conf() + _other_location(other)
                              + 'LogFormat "%%P %%U" stowrspid\nCustomLog "%s" stowrspid\n'
                              % pidlog)
    # before anything was sent: zeros, or the location not listed yet
    st = stowrs_status(h)
    for loc in (LOCATION, OTHER_LOC):
        for k, v in st.get(loc, {}).items():
            assert v == 0, "%s[%s] is %d before any request" % (k, loc, v)
    main, oth = Tally(), Tally()
    _run_plan(h, LOCATION, main, PLAN)
    _run_plan(h, OTHER_LOC, oth, PLAN[:5])
    _run_plan(h, LOCATION, main, PLAN[5:])
    # several children served the store requests
    _wait(lambda: len([p for p in _pids_of(h, pidlog) if "/studies" in p[1]])
          >= main.requests + oth.requests)
    pids = {pid for pid, path in _pids_of(h, pidlog) if "/studies" in path}
    assert len(pids) >= 2, "all requests served by one process %s: not a cross-process test" % pids
    st = stowrs_status(h)
    assert LOCATION in st and OTHER_LOC in st, "locations in the status: %s" % list(st)
    main.expect(st[LOCATION], LOCATION)
    oth.expect(st[OTHER_LOC], OTHER_LOC)
    # the status page itself and other URLs are not store requests
    mime.send(h.port, "GET", "/nothing-here")
    st2 = stowrs_status(h)
    main.expect(st2[LOCATION], LOCATION)


def test_430_02_refused_counted(make_httpd, new_workdir, slow_uploads):
    """Requests refused by StowRSMaxRequests count as refused at their own
    location only."""
    other = make_writable_dir(new_workdir("other") / "archive")
    h = make_httpd(mpm="prefork", location_conf="StowRSMaxRequests 1",
                   conf_extra="StartServers 4\nMinSpareServers 4\n" + _status_conf()
                   + _other_location(other))
    (up,) = t410._hold(h, 1)
    for _ in range(3):
        t410._assert_refused(h, post(h, [g.ct_image(rows=8, cols=8)[0]]))
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c], path=OTHER_LOC + "/studies"), 200, stored=[uc],
                 location=OTHER_LOC)
    st = stowrs_status(h)
    assert st[LOCATION].get("StowRSRefused") == 3, st[LOCATION]
    assert st[OTHER_LOC].get("StowRSRefused") == 0, st[OTHER_LOC]
    assert st[OTHER_LOC].get("StowRSRequests") == 1, st[OTHER_LOC]
    assert st[LOCATION].get("StowRSInstancesStored") == 0, st[LOCATION]
    t410._finish_all(h, [up])
    st = stowrs_status(h)
    assert st[LOCATION].get("StowRSRefused") == 3, st[LOCATION]
    assert st[LOCATION].get("StowRSInstancesStored") == 1, st[LOCATION]
    assert st[LOCATION].get("StowRSBytesStored") == len(up.data), st[LOCATION]
    # the admitted request is counted; whether refused ones also count as
    # requests is not fixed by the contract
    assert st[LOCATION].get("StowRSRequests") in (1, 4), st[LOCATION]


def test_430_03_html_page(make_httpd):
    h = make_httpd(mpm="prefork", conf_extra=_status_conf())
    data, u = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [data]), 200, stored=[u])
    resp = mime.send(h.port, "GET", "/server-status")
    assert resp.status == 200, resp
    assert (resp.header("Content-Type") or "").startswith("text/html"), resp.headers
    text = resp.text
    i = text.find("mod_stowrs")
    assert i >= 0, "no mod_stowrs section on the status page:\n%s" % text[-3000:]
    rest = text[i:]
    assert "<table" in rest, "no table after the mod_stowrs heading:\n%s" % rest[:2000]
    table = rest[rest.find("<table"):]
    table = table[:table.find("</table>")]
    assert LOCATION in table, "location not in the mod_stowrs table:\n%s" % table
    assert re.search(r"<td>\s*%d\s*</td>" % len(data), table), \
        "bytes stored %d not in the table:\n%s" % (len(data), table)


def test_430_04_access_log_notes(make_httpd, new_workdir):
    """%{stowrs-stored}n and %{stowrs-failed}n in the access log."""
    wd = new_workdir("notes")
    log = wd / "notes.log"
    # %U first, to leave out the harness's start-up probe (a 404 elsewhere)
    h = make_httpd(conf_extra='LogFormat "%%U %%>s %%{stowrs-stored}n %%{stowrs-failed}n" '
                              'stowrsnotes\nCustomLog "%s" stowrsnotes\n' % log)

    def lines():
        if not log.exists():
            return []
        return [l.split(" ", 1)[1] for l in log.read_text().splitlines()
                if l.startswith(STOW_PATH)]

    expected = []
    # 202: two good, one bad
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8, study=ua["study"])
    bad, _ = g.no_preamble(rows=8, cols=8)
    check_answer(h, post(h, [a, bad, b]), 202, stored=[ua, ub],
                 failed=[("C499", UNKNOWN_CLASS, None)])
    expected.append("202 2 1")
    # 200: three good
    cs = [g.ct_image(rows=8, cols=8) for _ in range(3)]
    check_answer(h, post(h, [d for d, _ in cs]), 200, stored=[u for _, u in cs])
    expected.append("200 3 0")
    # 409: one bad
    x, ux = g.ct_image(rows=8, cols=8, sop_class="1.2.3.4")
    check_answer(h, post(h, [x]), 409, failed=[("0122", "1.2.3.4", ux["sop"])])
    expected.append("409 0 1")
    # rejected before the body: notes not set
    resp = mime.send(h.port, "POST", STOW_PATH, [("Content-Type", "text/plain")], b"x")
    assert resp.status == 415, resp
    expected.append("415 - -")
    _wait(lambda: len(lines()) >= len(expected))
    # a line is written after its response went out: the order may vary
    assert sorted(lines()) == sorted(expected), \
        "access log %s, expected %s" % (lines(), expected)


def test_430_05_many_locations_listed(make_httpd, new_workdir):
    """Every location that served requests has its counters, however many
    there are (70 AE titles here)."""
    base = new_workdir("many")
    locs = ["/dcm4chee-arc/aets/AE%d/rs" % i for i in range(70)]
    extra = "".join('<Location "%s">\n    SetHandler stowrs\n    StowRSArchive "%s"\n'
                    '</Location>\n' % (loc, make_writable_dir(base / ("a%d" % i)))
                    for i, loc in enumerate(locs))
    h = make_httpd(conf_extra=_status_conf() + extra)
    sizes = {}
    for loc in locs:
        c, uc = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [c], path=loc + "/studies"), 200, stored=[uc], location=loc)
        sizes[loc] = len(c)
    st = stowrs_status(h)
    missing = [loc for loc in locs if loc not in st]
    assert not missing, "%d of 70 locations have no counters: %s" % (len(missing), missing)
    for loc in locs:
        assert st[loc].get("StowRSRequests") == 1, (loc, st[loc])
        assert st[loc].get("StowRSInstancesStored") == 1, (loc, st[loc])
        assert st[loc].get("StowRSBytesStored") == sizes[loc], (loc, st[loc])
