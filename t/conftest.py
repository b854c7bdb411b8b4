"""pytest fixtures for the integration tests (run with /usr/bin/python3).

- httpd       the default server, started once per test module
- make_httpd  factory: make_httpd(location_conf=..., conf_extra=..., mpm=...,
              single_process=...) starts a server, stopped at teardown
- after every test that used a server: no unexpected [error]/[warn]/...
  line in its error log (declare expected ones with
  @pytest.mark.expect_log("STOWRS0xyz")), no crashed child, and an empty
  spool directory.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from stowrs_env import Httpd  # noqa: E402

KEEP = os.environ.get("STOWRS_KEEP_WORKDIRS")  # keep server roots for debugging


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
    _cleanup(h, failed=request.session.testsfailed > 0)


@pytest.fixture
def make_httpd(request):
    """Factory for servers with their own configuration; all stopped at
    teardown. Keywords as Httpd's; start=False returns it unstarted."""
    made = []

    def factory(location_conf="", conf_extra="", mpm="event", single_process=False,
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
        _cleanup(h, failed=request.session.testsfailed > 0)


@pytest.fixture(autouse=True)
def _server_checks(request):
    """Error-log and spool checks for every server a test used."""
    before = {h: h.mark() for h in Httpd.started if h.running}
    n_started = len(Httpd.started)
    yield
    marker = request.node.get_closest_marker("expect_log")
    expected = tuple(marker.args) if marker else ()
    servers = list(before) + [h for h in Httpd.started[n_started:] if h not in before]
    problems = []
    for h in servers:
        leftover = h.wait_spool_empty()
        if leftover:
            problems.append("spool %s not empty: %s" % (h.spool_dir(),
                                                        [p.name for p in leftover]))
        try:
            h.check_error_log(since=before.get(h, 0), expected_tags=expected)
        except AssertionError as e:
            problems.append(str(e))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
