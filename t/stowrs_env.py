"""A real httpd running the built mod_stowrs, for the integration tests.

In the manner of apache/httpd test/pyhttpd/env.py: a generated server root
per server, a free port found by binding port 0, modules found through
``apxs -q LIBEXECDIR``, start/stop with wait-until-live, and an error-log
check after each test (see conftest.py).

    h = Httpd(workdir, location_conf="StowRSSync Off")
    h.start()
    ... mime.stow(h.port, body, "myboundary") ...
    h.stop()
"""

import os
import pathlib
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
APACHE2 = os.environ.get("STOWRS_APACHE2", "/usr/sbin/apache2")
APXS = os.environ.get("APXS", "apxs")
LOCATION = "/dcm4chee-arc/aets/DCM4CHEE/rs"
STOW_PATH = LOCATION + "/studies"
RUN_USER = os.environ.get("STOWRS_RUN_USER", "www-data")
RUN_GROUP = os.environ.get("STOWRS_RUN_GROUP", "www-data")

# "[Tue Nov 25 ...] [stowrs:info] [pid 1:tid 2] ..." -> module, level
_LEVEL_RE = re.compile(r"^\[[^\]]*\] \[([\w.-]*):(\w+)\]")
BAD_LEVELS = ("error", "warn", "crit", "alert", "emerg")
# a child that died of a signal: AH00051/AH00052 "child pid N exit signal ..."
_CRASH_RE = re.compile(r"AH0005[12]|exit signal|Segmentation fault|AddressSanitizer|"
                       r"LeakSanitizer|runtime error: ")

_libexecdir = None


def libexecdir():
    """httpd's module directory, from apxs."""
    global _libexecdir
    if _libexecdir is None:
        try:
            out = subprocess.run([APXS, "-q", "LIBEXECDIR"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            out = ""
        _libexecdir = out or "/usr/lib/apache2/modules"
    return _libexecdir


def module_path():
    """The module under test: $STOWRS_MODULE or <repo>/.libs/mod_stowrs.so."""
    return os.environ.get("STOWRS_MODULE", str(REPO / ".libs" / "mod_stowrs.so"))


def free_port():
    """A port nobody listens on right now (bind port 0, as curl's ports.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def run_ids():
    """(uid, gid) httpd's children run as when started by root."""
    return pwd.getpwnam(RUN_USER).pw_uid, grp.getgrnam(RUN_GROUP).gr_gid


def make_writable_dir(path, mode=0o755):
    """Create @path (and parents) so that the serving user can write to it."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_root():
        uid, gid = run_ids()
        os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


class HttpdStartError(AssertionError):
    pass


class Httpd:
    """One httpd with its own generated configuration in @workdir.

    conf_extra goes at server level after the default <Location>, so a test
    can add more <Location> blocks; location_conf goes inside the default
    <Location "/dcm4chee-arc/aets/DCM4CHEE/rs"> after StowRSArchive (a second
    StowRSArchive there overrides the default one).
    """

    #: every instance ever started, in order (conftest checks the new ones)
    started = []

    def __init__(self, workdir, conf_extra="", location_conf="", mpm="event",
                 single_process=False, log_level="info stowrs:debug",
                 archive=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the serving user must reach everything below workdir
        os.chmod(self.workdir, 0o777)
        self.conf_extra = conf_extra
        self.location_conf = location_conf
        self.mpm = mpm
        self.single_process = single_process
        self.log_level = log_level
        self.port = free_port()
        self.archive = pathlib.Path(archive) if archive else self.workdir / "archive"
        make_writable_dir(self.archive)
        self.error_log = self.workdir / "error.log"
        self.access_log = self.workdir / "access.log"
        self.stderr_log = self.workdir / "stderr.log"
        self.pid_file = self.workdir / "httpd.pid"
        self.conf_file = self.workdir / "httpd.conf"
        self.proc = None
        self._stderr = None

    # ------------------------------------------------------------ URLs
    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def location_url(self):
        return self.base_url + LOCATION

    @property
    def stow_url(self):
        return self.base_url + STOW_PATH

    @property
    def stow_path(self):
        return STOW_PATH

    # ------------------------------------------------------------ config
    def config_text(self, conf_extra=None, location_conf=None):
        conf_extra = self.conf_extra if conf_extra is None else conf_extra
        location_conf = self.location_conf if location_conf is None else location_conf
        mods = libexecdir()
        lines = [
            "# generated by t/stowrs_env.py",
            'ServerRoot "%s"' % self.workdir,
            "ServerName 127.0.0.1",
            "Listen 127.0.0.1:%d" % self.port,
            'PidFile "%s"' % self.pid_file,
            'DefaultRuntimeDir "%s"' % self.workdir,
            'ErrorLog "%s"' % self.error_log,
            "LogLevel %s" % self.log_level,
            'LoadModule mpm_%s_module "%s/mod_mpm_%s.so"' % (self.mpm, mods, self.mpm),
            'LoadModule authz_core_module "%s/mod_authz_core.so"' % mods,
            'LoadModule stowrs_module "%s"' % module_path(),
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" stowrs',
            'CustomLog "%s" stowrs' % self.access_log,
            'DocumentRoot "%s"' % self.workdir,
            "LimitRequestBody 0",
            "Timeout 60",
        ]
        if is_root():
            lines += ["User %s" % RUN_USER, "Group %s" % RUN_GROUP]
        if self.mpm in ("event", "worker"):
            lines += ["StartServers 2", "ThreadsPerChild 25", "ServerLimit 16",
                      "MaxRequestWorkers 100"]
        elif self.mpm == "prefork":
            lines += ["StartServers 3", "MaxRequestWorkers 50"]
        lines += [
            '<Location "%s">' % LOCATION,
            "    SetHandler stowrs",
            '    StowRSArchive "%s"' % self.archive,
        ]
        lines += ["    " + l for l in location_conf.splitlines()]
        lines += ["</Location>", conf_extra, ""]
        return "\n".join(lines)

    def write_config(self):
        self.conf_file.write_text(self.config_text())
        return self.conf_file

    def config_test(self, conf_text_or_extra=None, location_conf=None):
        """Run ``apache2 -t`` on a configuration.

        A text containing "ServerRoot" is taken as the whole configuration;
        otherwise it is conf_extra (server level) of this server's generated
        configuration, and location_conf goes inside the default <Location>.
        @return (returncode, stdout + stderr)
        """
        text = conf_text_or_extra or ""
        if "ServerRoot" in text:
            conf = text
        else:
            conf = self.config_text(conf_extra=text,
                                    location_conf=location_conf or "")
        path = self.workdir / "config-test.conf"
        path.write_text(conf)
        r = subprocess.run([APACHE2, "-t", "-f", str(path)], capture_output=True,
                           text=True, timeout=60, cwd=str(self.workdir))
        return r.returncode, r.stdout + r.stderr

    # ------------------------------------------------------------ run
    def start(self, timeout=20):
        if self.proc is not None:
            raise RuntimeError("already started")
        last_err = None
        for attempt in range(3):
            if attempt:
                self.port = free_port()
            try:
                self._start_once(timeout)
                Httpd.started.append(self)
                return self
            except HttpdStartError as e:
                last_err = e
                if "Address already in use" not in str(e):
                    raise
        raise last_err

    def _start_once(self, timeout):
        self.write_config()
        if self.pid_file.exists():
            self.pid_file.unlink()
        args = [APACHE2, "-f", str(self.conf_file), "-DFOREGROUND"]
        if self.single_process:
            args.append("-X")
        self._stderr = open(self.stderr_log, "ab")
        self.proc = subprocess.Popen(args, stdout=self._stderr, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        # did not come up
        rc = self.proc.poll()
        if rc is None:
            self._kill()
        self.proc = None
        self._stderr.close()
        raise HttpdStartError("httpd did not start (rc=%s) on port %d:\n%s\n--- stderr:\n%s"
                              % (rc, self.port, self.error_log_tail(), self._tail(self.stderr_log)))

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /stowrs-ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    def stop(self, timeout=10):
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        except ProcessLookupError:
            pass
        self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def _kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def restart(self):
        self.stop()
        self.start()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def serving_pids(self):
        """PIDs that serve requests: the children, or the single process (-X)."""
        if not self.running:
            return []
        if self.single_process:
            return [self.proc.pid]
        pids = []
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                pids.append(int(d.name))
        return sorted(pids)

    # ------------------------------------------------------------ logs
    @staticmethod
    def _tail(path, n=40):
        try:
            return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no %s)" % path

    def error_log_tail(self, n=40):
        return self._tail(self.error_log, n)

    def mark(self):
        """Current size of the error log, to pass as since= later."""
        try:
            return self.error_log.stat().st_size
        except FileNotFoundError:
            return 0

    def error_log_text_since(self, mark=0):
        try:
            with open(self.error_log, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def error_log_lines_since(self, mark=0):
        return self.error_log_text_since(mark).splitlines()

    def log_lines_with(self, tag, since=0):
        return [l for l in self.error_log_lines_since(since) if tag in l]

    def wait_log(self, tag, since=0, timeout=5.0, count=1):
        """Wait until @count lines containing @tag appear after @since."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines_with(tag, since)
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def check_error_log(self, since=0, expected_tags=()):
        """Fail on any [error]/[warn]/[crit]/[alert]/[emerg] line after @since
        that names none of @expected_tags, and on any crashed child."""
        bad = []
        for line in self.error_log_lines_since(since):
            if _CRASH_RE.search(line):
                bad.append(line)
                continue
            m = _LEVEL_RE.match(line)
            if not m:
                continue
            level = m.group(2)
            if level.startswith("trace") or level not in BAD_LEVELS:
                continue
            if any(t in line for t in expected_tags):
                continue
            bad.append(line)
        if bad:
            raise AssertionError("unexpected error log lines in %s:\n%s"
                                 % (self.error_log, "\n".join(bad)))

    # ------------------------------------------------------------ archive
    def archive_files(self, archive=None):
        """*.dcm files below the archive, dot-directories (.stowrs-tmp,
        .stowrs-index) excluded, sorted."""
        root = pathlib.Path(archive) if archive else self.archive
        out = []
        if not root.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                if f.endswith(".dcm"):
                    out.append(pathlib.Path(dirpath) / f)
        return sorted(out)

    def all_archive_files(self, archive=None):
        """Every regular file below the archive outside dot-directories."""
        root = pathlib.Path(archive) if archive else self.archive
        out = []
        if not root.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out += [pathlib.Path(dirpath) / f for f in filenames]
        return sorted(out)

    def spool_dir(self, archive=None):
        return (pathlib.Path(archive) if archive else self.archive) / ".stowrs-tmp"

    def spool_files(self, archive=None):
        d = self.spool_dir(archive)
        if not d.exists():
            return []
        return sorted(p for p in d.iterdir())

    def wait_spool_empty(self, timeout=3.0, archive=None):
        """The spool is cleaned when the request pool goes, which may be just
        after the response was sent: poll briefly. @return leftover files."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.spool_files(archive)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def instance_path(self, study, series, sop, archive=None):
        """Where the default layout puts an instance."""
        root = pathlib.Path(archive) if archive else self.archive
        return root / study / series / (sop + ".dcm")

    def assert_stored(self, data, uids, archive=None):
        """The instance is at its default-layout path, byte-identical to @data
        (sha256). @return the path"""
        import hashlib
        path = self.instance_path(uids["study"], uids["series"], uids["sop"], archive)
        assert path.is_file(), "not stored: %s" % path
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        assert got == hashlib.sha256(data).hexdigest(), \
            "%s differs from the bytes sent (%d bytes on disk, %d sent)" % (
                path, path.stat().st_size, len(data))
        return path

    def assert_not_stored(self, uids, archive=None):
        path = self.instance_path(uids["study"], uids["series"], uids["sop"], archive)
        assert not path.exists(), "unexpectedly stored: %s" % path

    def clear_archive(self):
        """Remove stored instances (keeps the archive directory and its
        dot-directories)."""
        for p in self.archive.iterdir():
            if p.name.startswith("."):
                if p.name == ".stowrs-index":
                    for q in p.iterdir():
                        q.unlink()
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
