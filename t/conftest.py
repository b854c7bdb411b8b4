"""pytest fixtures for the integration tests (run with /usr/bin/python3).

- httpd       the default server, started once per test module
- make_httpd  factory: make_httpd(location_conf=..., conf_extra=..., mpm=...,
              single_process=...) starts a server, stopped at teardown
- after_checks register(fn): fn() runs after the checks below and the
              servers' clean-up (an unmount of the archive's filesystem)
- after every test that used a server: no unexpected [error]/[warn]/...
  line in its error log (declare expected ones with
  @pytest.mark.expect_log("STOWRS0xyz")), no crashed child, an empty
  spool directory, no sanitizer report (SANITIZE=1 builds) and, for a
  server stopped under STOWRS_VALGRIND=1, no memcheck error. make_httpd's
  servers are stopped first (so what they log or report on the way out is
  seen too) and removed only after these checks.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from stowrs_env import SANITIZE, VALGRIND, Httpd  # noqa: E402

KEEP = os.environ.get("STOWRS_KEEP_WORKDIRS")  # keep server roots for debugging

# make_httpd's servers, stopped, waiting for _server_checks to look at them
_pending_cleanup = []
# after_checks' functions, run after that clean-up
_pending_calls = []
# (server, leak totals) of every server stopped under valgrind
_valgrind_results = []


def pytest_report_header(config):
    modes = []
    if SANITIZE:
        modes.append("sanitizers (ASan+UBSan runtimes preloaded into httpd)")
    if VALGRIND:
        modes.append("valgrind memcheck")
    return ["mod_stowrs harness: " + (", ".join(modes) if modes else "plain build")]


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    crashes = [(h, c) for h in Httpd.started for c in h.shutdown_crashes]
    if crashes:
        tr.write_sep("=", "httpd crashes while stopping, not failed (STOWRS_STRICT_SHUTDOWN=1 "
                     "fails them; see stowrs_env.py)")
        for h, c in dict.fromkeys(crashes):
            tr.write_line("%s: %s" % (h.workdir.name, c))
    if not _valgrind_results:
        return
    tr.write_sep("=", "valgrind: definitely lost per server process")
    for h, res in _valgrind_results:
        tr.write_line("%-48s pid %-7s %8d bytes in %4d blocks, %d record(s) with a "
                      "mod_stowrs frame%s" % (
                          h.workdir.name, res["pid"], res["definite_bytes"],
                          res["definite_blocks"], len(res["module_leaks"]),
                          "" if res["complete"] else " (no leak summary: killed?)"))


def _stopped_checks(h):
    """What only a stopped server can tell: sanitizer reports written on
    the way out, valgrind's errors and leak summary. @return problems"""
    problems = []
    try:
        h.check_sanitizers()
    except AssertionError as e:
        problems.append(str(e))
    if h.valgrind and not h.running:
        try:
            for res in h.check_valgrind():
                _valgrind_results.append((h, res))
        except AssertionError as e:
            problems.append(str(e))
    return problems


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "expect_log(*tags): error-log tags (e.g. STOWRS0301 or AH01234) "
        "that may appear at [warn]/[error] level during this test")


def _new_workdir(name):
    # not below pytest's tmp_path: that is mode 0700 under /tmp/pytest-of-root,
    # which the serving user (www-data when run as root) cannot traverse
    base = os.environ.get("STOWRS_TEST_TMP") or tempfile.gettempdir()
    safe = "".join(c if c.isalnum() else "-" for c in name)[:40]
    d = pathlib.Path(tempfile.mkdtemp(prefix="stowrs-%s-" % safe, dir=base))
    os.chmod(d, 0o777)
    return d


@pytest.fixture(scope="session")
def new_workdir():
    """new_workdir(name) -> a fresh directory the serving user can use,
    removed at the end of the session unless a test failed."""
    made = []

    def factory(name):
        d = _new_workdir(name)
        made.append(d)
        return d

    yield factory
    if not KEEP:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def _cleanup(server, failed=False):
    """Stop; remove the server root, or after a failure keep its logs and
    configuration (not the archive, which may be large) for a look."""
    server.stop()
    if KEEP:
        return
    if failed:
        shutil.rmtree(server.archive, ignore_errors=True)
    else:
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def httpd(request):
    """The default server for a test module."""
    h = Httpd(_new_workdir(request.module.__name__))
    h.start()
    yield h
    h.stop()
    problems = _stopped_checks(h)
    _cleanup(h, failed=request.session.testsfailed > 0 or bool(problems))
    if problems:
        pytest.fail("at the stop of %s's server:\n%s"
                    % (request.module.__name__, "\n".join(problems)), pytrace=False)


@pytest.fixture
def make_httpd(request, _server_checks):
    """Factory for servers with their own configuration; all stopped at
    teardown, and removed after _server_checks has looked at them. Keywords
    as Httpd's; start=False returns it unstarted."""
    made = []

    def factory(location_conf="", conf_extra="", mpm="event", single_process=None,
                start=True, **kw):
        h = Httpd(_new_workdir(request.node.name), conf_extra=conf_extra,
                  location_conf=location_conf, mpm=mpm,
                  single_process=single_process, **kw)
        made.append(h)
        if start:
            h.start()
        return h

    yield factory
    for h in made:
        h.stop()
        _pending_cleanup.append(h)


@pytest.fixture
def after_checks(_server_checks):
    """register(fn): fn() runs at the end of the test, after the checks of
    its servers and their clean-up (last registered, first run). For what
    the checks must still see, e.g. a filesystem mounted for the archive."""
    return _pending_calls.append


@pytest.fixture(autouse=True)
def _server_checks(request):
    """Error-log and spool checks for every server a test used."""
    before = {h: h.mark() for h in Httpd.started if h.running}
    n_started = len(Httpd.started)
    yield
    marker = request.node.get_closest_marker("expect_log")
    expected = tuple(marker.args) if marker else ()
    # (a server restarted during the test is in Httpd.started twice)
    servers = list(dict.fromkeys(list(before) + Httpd.started[n_started:]))
    problems = []
    try:
        for h in servers:
            leftover = h.wait_spool_empty()
            if leftover:
                problems.append("spool %s not empty: %s" % (h.spool_dir(),
                                                            [p.name for p in leftover]))
            try:
                h.check_error_log(since=before.get(h, 0), expected_tags=expected)
            except AssertionError as e:
                problems.append(str(e))
            problems += _stopped_checks(h)
    finally:
        failed = request.session.testsfailed > 0 or bool(problems)
        try:
            while _pending_cleanup:
                _cleanup(_pending_cleanup.pop(), failed=failed)
        finally:
            while _pending_calls:
                _pending_calls.pop()()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
