"""A real httpd running the built mod_stowrs, for the integration tests.

In the manner of apache/httpd test/pyhttpd/env.py: a generated server root
per server, a free port found by binding port 0, modules found through
``apxs -q LIBEXECDIR``, start/stop with wait-until-live, and an error-log
check after each test (see conftest.py).

    h = Httpd(workdir, location_conf="StowRSSync Off")
    h.start()
    ... mime.stow(h.port, body, "myboundary") ...
    h.stop()

Sanitizer and valgrind runs (see `make test SANITIZE=1`, `make valgrind`):

- A module built with SANITIZE=1 (found by its ASan/UBSan symbols, or forced
  with STOWRS_SANITIZE=1/0) is loaded into an uninstrumented httpd, so every
  apache2 started here gets the ASan and UBSan runtimes in LD_PRELOAD, and
  ASAN_OPTIONS/UBSAN_OPTIONS that write reports to files
  <workdir>/asan.<pid> and <workdir>/ubsan.<pid>. check_sanitizers() fails on
  any such file (conftest runs it after every test and after every stop).
  LeakSanitizer runs when a process exits, with LSAN_SUPPRESSIONS for what
  httpd itself leaves behind by design, so a malloc'd block of the module,
  libxml2, jansson or dcmtk that is never freed fails the test
  (STOWRS_LSAN=0 turns it off; it is always off for apache2 -t).
- STOWRS_VALGRIND=1 runs each httpd under valgrind memcheck, as one process
  (-X) unless a test asks for several (single_process=False), with logs
  <workdir>/valgrind.<pid>.log; check_valgrind() fails on memory errors and
  returns the leak totals. Timeouts of the harness grow by TIME_FACTOR.
  `python3 t/stowrs_env.py valgrind-leaks 10 100` compares two runs.
- STOWRS_CORE=1: a child that crashes leaves a core file in its workdir
  (CoreDumpDirectory, RLIMIT_CORE; with the kernel's core_pattern "core").
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
VALGRIND = os.environ.get("STOWRS_VALGRIND", "") not in ("", "0")
# STOWRS_CORE=1: crashed children leave a core file in their workdir
CORE = os.environ.get("STOWRS_CORE", "") not in ("", "0")
# httpd 2.4.71's event MPM itself sometimes crashes while a process exits
# (also without mod_stowrs loaded: under valgrind an invalid read in its
# queue_info_cleanup on recycled pools already unmapped, in about one stop
# in 25-100). Such a crash, after stop() began and with no mod_stowrs frame
# where a stack is known, is recorded in Httpd.shutdown_crashes and shown
# at the end of the run instead of failing the test; STOWRS_STRICT_SHUTDOWN=1
# makes it fail.
STRICT_SHUTDOWN = os.environ.get("STOWRS_STRICT_SHUTDOWN", "") not in ("", "0")
VALGRIND_BIN = os.environ.get("STOWRS_VALGRIND_BIN", "valgrind")
# valgrind's exit code for errors (definite leaks included): told apart
# from httpd's own exit codes
VALGRIND_ERROR_EXITCODE = 99

# "[Tue Nov 25 ...] [stowrs:info] [pid 1:tid 2] ..." -> module, level
_LEVEL_RE = re.compile(r"^\[[^\]]*\] \[([\w.-]*):(\w+)\]")
BAD_LEVELS = ("error", "warn", "crit", "alert", "emerg")
# a child that died of a signal: AH00051/AH00052 "child pid N exit signal ..."
_CRASH_RE = re.compile(r"AH0005[12]|exit signal|Segmentation fault|AddressSanitizer|"
                       r"LeakSanitizer|runtime error: ")
# sanitizer output that reached httpd's stderr instead of a report file
_SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                           r"runtime error: |ASan runtime does not come first")
# report files the sanitizer runtimes write (log_path=<workdir>/<prefix>)
SANITIZER_REPORT_PREFIXES = ("asan", "ubsan")
LSAN = os.environ.get("STOWRS_LSAN", "1") not in ("", "0")
# LeakSanitizer: what httpd and its other modules never free: the allocator
# of a child's pool (its pools go at exit, the allocator not), OpenSSL's
# state in mod_ssl, regular expressions of <LocationMatch> and the like.
# Libraries the module never calls are matched by name (cheap: no
# symbolizer needed), APR by the function.
LSAN_SUPPRESSIONS = """\
leak:apr_allocator_create
leak:libcrypto.so
leak:libssl.so
leak:libpcre2-8.so
"""

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


_sanitized_cache = {}


def module_is_sanitized(path=None):
    """True if the module (default: module_path()) was built with
    SANITIZE=1, i.e. it references the ASan or UBSan runtime."""
    path = pathlib.Path(path or module_path())
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _sanitized_cache:
        data = path.read_bytes()
        _sanitized_cache[key] = b"__asan_init" in data or b"__ubsan_handle" in data
    return _sanitized_cache[key]


def sanitize_mode():
    """Whether servers get the sanitizer runtimes: STOWRS_SANITIZE=1 or 0
    (set by `make test`) decides; unset, the module under test does."""
    v = os.environ.get("STOWRS_SANITIZE", "")
    if v != "":
        return v != "0"
    return module_is_sanitized()


def sanitizer_runtimes(module=None):
    """The shared sanitizer runtimes for LD_PRELOAD, ASan's first (it must
    be the first library loaded): $STOWRS_SANITIZER_PRELOAD (colon- or
    space-separated) if set; else the ASan/UBSan libraries the module links
    (ldd; gcc's libasan/libubsan), else those of $CC or gcc (clang's
    libclang_rt.asan when $CC is clang)."""
    env = os.environ.get("STOWRS_SANITIZER_PRELOAD")
    if env:
        return [x for x in re.split(r"[:\s]+", env) if x]
    module = module or module_path()
    libs = []
    try:
        out = subprocess.run(["ldd", str(module)], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for key in ("asan", "ubsan"):
        m = re.search(r"lib%s\.so[.\d]* => (\S+)" % key, out)
        if m:
            libs.append(m.group(1))
    if libs:
        return libs
    cc = os.environ.get("CC") or "gcc"
    names = (["libclang_rt.asan-x86_64.so"] if "clang" in cc
             else ["libasan.so", "libubsan.so"])
    for name in names:
        try:
            out = subprocess.run([cc, "-print-file-name=" + name], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and os.path.isabs(out) and os.path.exists(out):
            libs.append(os.path.realpath(out))
    return libs


#: whether this run's servers get the sanitizer runtimes (see sanitize_mode)
SANITIZE = sanitize_mode()
#: how much longer than usual things may take in this run
TIME_FACTOR = 20 if VALGRIND else (3 if SANITIZE else 1)


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


_VG_LINE_RE = re.compile(r"^==(\d+)== ?(.*)$")
# memcheck errors that are never fine (leaks are counted, not listed here)
_VG_ERROR_RE = re.compile(r"^(Invalid (read|write|free)|Mismatched free|.*uninitialised|"
                          r"Source and destination overlap|Syscall param .* unaddressable|"
                          r"Jump to the invalid address|Argument '.*' of function .* fishy|"
                          r"Process terminating with default action of signal (?!15 ))")
_VG_INUSE_RE = re.compile(r"^\s*in use at exit: ([\d,]+) bytes in ([\d,]+) blocks")
_VG_LOST_RE = re.compile(r"^\s*definitely lost: ([\d,]+) bytes in ([\d,]+) blocks")
_VG_RECORD_RE = re.compile(r"^([\d,]+) (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes in "
                           r"([\d,]+) blocks are definitely lost")


def _at_exit_outside_module(text):
    """A stack that runs in exit() and shows no frame of mod_stowrs."""
    return (("exit (exit.c" in text or "__run_exit_handlers" in text or " in exit " in text)
            and "mod_stowrs" not in text and "stowrs_" not in text)


def parse_valgrind_log(path):
    """A memcheck log (--leak-check=full): {"path", "pid", "errors": [text
    of each non-leak error with its stack], "definite_bytes",
    "definite_blocks", "in_use_bytes" (heap not freed at exit, reachable
    or not), "leaks": [text of each definitely-lost record],
    "module_leaks": those of them with a mod_stowrs frame, "shutdown_errors":
    errors in exit() with no mod_stowrs frame (see STRICT_SHUTDOWN), not
    in "errors", "complete": whether the leak summary was written}."""
    res = {"path": str(path), "pid": None, "errors": [], "definite_bytes": 0,
           "definite_blocks": 0, "in_use_bytes": 0, "shutdown_errors": [], "leaks": [], "module_leaks": [], "complete": False}
    blocks, cur = [], None
    for line in pathlib.Path(path).read_text(errors="replace").splitlines():
        m = _VG_LINE_RE.match(line)
        if not m:
            continue
        res["pid"] = int(m.group(1))
        text = m.group(2)
        if not text.strip():
            cur = None
            continue
        if text.startswith(" ") and cur is not None:
            cur.append(text)
            continue
        cur = [text]
        blocks.append(cur)
    for b in blocks:
        head = b[0]
        lm = _VG_LOST_RE.match(head)
        if head.startswith("LEAK SUMMARY") or head.startswith("All heap blocks were freed"):
            res["complete"] = True
        for l in b:
            um = _VG_INUSE_RE.match(l)
            if um:
                res["in_use_bytes"] = int(um.group(1).replace(",", ""))
            lm = _VG_LOST_RE.match(l)
            if lm:
                res["definite_bytes"] = int(lm.group(1).replace(",", ""))
                res["definite_blocks"] = int(lm.group(2).replace(",", ""))
        if _VG_RECORD_RE.match(head):
            text = "\n".join(b)
            res["leaks"].append(text)
            if "mod_stowrs" in text or "stowrs_" in text:
                res["module_leaks"].append(text)
        elif _VG_ERROR_RE.match(head):
            text = "\n".join(b)
            if not STRICT_SHUTDOWN and _at_exit_outside_module(text):
                res["shutdown_errors"].append(text)
            else:
                res["errors"].append(text)
    return res


# What the event MPM logs when SIGTERM has closed its pollset while a
# worker hands a connection back to it, for keep-alive (AH03093) or for a
# lingering close (AH03092): "(9)Bad file descriptor ... apr_pollset_add
# failure", after the response went out. httpd's shutdown race; ignored
# only while the server stops.
_SHUTDOWN_NOISE = ("AH03092", "AH03093")


class HttpdStartError(AssertionError):
    pass


class Httpd:
    """One httpd with its own generated configuration in @workdir.

    conf_extra goes at server level after the default <Location>, so a test
    can add more <Location> blocks; location_conf goes inside the default
    <Location "/dcm4chee-arc/aets/DCM4CHEE/rs"> after StowRSArchive (a second
    StowRSArchive there overrides the default one).

    single_process: True runs httpd -X; False a parent with children;
    None (the default) -X under valgrind (STOWRS_VALGRIND=1), else children.
    rlimits: {resource.RLIMIT_...: (soft, hard)} set for httpd (and so its
    children), e.g. RLIMIT_FSIZE to make writes fail with EFBIG.
    """

    #: every instance ever started, in order (conftest checks the new ones)
    started = []

    def __init__(self, workdir, conf_extra="", location_conf="", mpm="event",
                 single_process=None, log_level="info stowrs:debug",
                 archive=None, rlimits=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the serving user must reach everything below workdir
        os.chmod(self.workdir, 0o777)
        self.conf_extra = conf_extra
        self.location_conf = location_conf
        self.mpm = mpm
        if single_process is None:
            single_process = VALGRIND
        self.single_process = single_process
        self.sanitize = SANITIZE
        self.rlimits = dict(rlimits or {})
        self._stop_ranges = []          # error log offsets while stopping
        self.shutdown_crashes = []      # tolerated, see STRICT_SHUTDOWN
        if CORE:
            import resource
            self.rlimits.setdefault(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                                            resource.RLIM_INFINITY))
        self.valgrind = VALGRIND
        self._reports_seen = set()
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
        text = self.config_text()
        if (self.sanitize or CORE) and "CoreDumpDirectory" not in text:
            # children that switched to User stay dumpable, so that the
            # UBSan runtime, which starts only at its first report, can
            # still read its UBSAN_OPTIONS from /proc/self/environ
            text += '\nCoreDumpDirectory "%s"\n' % self.workdir
        self.conf_file.write_text(text)
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
                           text=True, timeout=60 * TIME_FACTOR, cwd=str(self.workdir),
                           env=self.environment(leaks=False))
        return r.returncode, r.stdout + r.stderr

    # ------------------------------------------------------------ sanitizers, valgrind
    def environment(self, leaks=True):
        """The environment apache2 runs in: ours, plus under SANITIZE the
        sanitizer runtimes preloaded and told to write report files into
        the workdir (checked by check_sanitizers); @leaks: LeakSanitizer
        on (if LSAN)."""
        env = dict(os.environ)
        if self.sanitize:
            libs = sanitizer_runtimes()
            if not libs:
                raise HttpdStartError("module built with sanitizers, but no ASan runtime "
                                      "found for LD_PRELOAD (set STOWRS_SANITIZER_PRELOAD)")
            pre = env.get("LD_PRELOAD", "")
            env["LD_PRELOAD"] = " ".join(libs + ([pre] if pre else []))
            leaks = leaks and LSAN
            if leaks:
                supp = self.workdir / "lsan.supp"
                supp.write_text(LSAN_SUPPRESSIONS)
                lsan = ["suppressions=%s" % supp, "print_suppressions=0"]
                extra = os.environ.get("LSAN_OPTIONS")
                env["LSAN_OPTIONS"] = ":".join(lsan + ([extra] if extra else []))
            asan = ["detect_leaks=%d" % leaks, "abort_on_error=0", "halt_on_error=1",
                    "log_path=%s" % (self.workdir / "asan"),
                    "detect_stack_use_after_return=0", "strict_string_checks=0",
                    "check_initialization_order=1", "print_summary=1"]
            ubsan = ["print_stacktrace=1", "halt_on_error=0",
                     "log_path=%s" % (self.workdir / "ubsan")]
            extra = os.environ.get("ASAN_OPTIONS")
            env["ASAN_OPTIONS"] = ":".join(asan + ([extra] if extra else []))
            extra = os.environ.get("UBSAN_OPTIONS")
            env["UBSAN_OPTIONS"] = ":".join(ubsan + ([extra] if extra else []))
        return env

    def command(self):
        """argv of the server: apache2, under valgrind with STOWRS_VALGRIND."""
        args = [APACHE2, "-f", str(self.conf_file), "-DFOREGROUND"]
        if self.single_process:
            args.append("-X")
        if self.valgrind:
            vg = [VALGRIND_BIN, "--tool=memcheck",
                  "--error-exitcode=%d" % VALGRIND_ERROR_EXITCODE,
                  "--leak-check=full", "--show-leak-kinds=definite",
                  "--errors-for-leak-kinds=definite", "--track-fds=no",
                  "--num-callers=30", "--child-silent-after-fork=no",
                  "--log-file=%s" % (self.workdir / "valgrind.%p.log")]
            supp = os.environ.get("STOWRS_VALGRIND_SUPP")
            if supp:
                vg.append("--suppressions=%s" % supp)
            args = vg + args
        return args

    def sanitizer_reports(self):
        """Report files the sanitizer runtimes wrote for this server."""
        out = []
        for prefix in SANITIZER_REPORT_PREFIXES:
            out += self.workdir.glob(prefix + ".*")
        return sorted(out)

    def check_sanitizers(self):
        """Fail (AssertionError) on a sanitizer report file not seen by an
        earlier call, or sanitizer output on httpd's stderr; each report
        is shown with its first lines."""
        problems = []
        for f in self.sanitizer_reports():
            if f in self._reports_seen:
                continue
            self._reports_seen.add(f)
            text = f.read_text(errors="replace")
            if (not STRICT_SHUTDOWN and "AddressSanitizer: SEGV" in text
                    and _at_exit_outside_module(text)):
                self.shutdown_crashes.append("%s: %s" % (f, text.strip().splitlines()[0]))
                continue
            problems.append("sanitizer report %s:\n%s" % (f, "\n".join(text.splitlines()[:40])))
        try:
            with open(self.stderr_log, "rb") as fh:
                fh.seek(getattr(self, "_stderr_seen", 0))
                new = fh.read()
                self._stderr_seen = fh.tell()
        except OSError:
            new = b""
        hits = [l for l in new.decode("utf-8", "replace").splitlines() if _SANITIZER_RE.search(l)]
        if hits:
            problems.append("sanitizer output on httpd's stderr %s:\n%s"
                            % (self.stderr_log, "\n".join(hits[:40])))
        # With ASan, GCC's UBSan runtime ignores its log_path and writes to
        # stderr, which a child has on the error log: the report is the
        # "runtime error:" line and the lines up to the next log entry.
        mark = getattr(self, "_errlog_seen", 0)
        text = self.error_log_text_since(mark)
        self._errlog_seen = mark + len(text.encode("utf-8", "replace"))
        report = None
        for line in text.splitlines():
            if _SANITIZER_RE.search(line) and not _LEVEL_RE.match(line):
                report = [line]
                problems.append(report)
            elif report is not None and not _LEVEL_RE.match(line) and len(report) < 40:
                report.append(line)
            else:
                report = None
        problems = [p if isinstance(p, str) else
                    "sanitizer report in %s:\n%s" % (self.error_log, "\n".join(p))
                    for p in problems]
        if problems:
            raise AssertionError("\n".join(problems))

    def valgrind_logs(self):
        return sorted(self.workdir.glob("valgrind.*.log"))

    def check_valgrind(self):
        """After stop(): fail on any memcheck error other than a leak in the
        logs not checked before; @return the leak totals of those logs
        (parse_valgrind_log's dicts)."""
        results = []
        problems = []
        for f in self.valgrind_logs():
            if f in self._reports_seen:
                continue
            self._reports_seen.add(f)
            res = parse_valgrind_log(f)
            results.append(res)
            self.shutdown_crashes += ["%s: %s" % (f, e.splitlines()[0])
                                      for e in res["shutdown_errors"]]
            if res["errors"]:
                problems.append("valgrind %s:\n%s" % (f, "\n\n".join(res["errors"][:5])))
        if problems:
            raise AssertionError("\n".join(problems))
        return results

    # ------------------------------------------------------------ run
    def start(self, timeout=20):
        timeout *= TIME_FACTOR
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
        if self.sanitize and not module_is_sanitized() and \
                os.environ.get("STOWRS_SANITIZE", "") not in ("", "0"):
            raise HttpdStartError("STOWRS_SANITIZE=1 but %s was built without SANITIZE=1 "
                                  "(a stale build: make clean, then make SANITIZE=1)"
                                  % module_path())
        env = self.environment()
        self._stderr = open(self.stderr_log, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._stderr,
                                     stderr=subprocess.STDOUT, env=env,
                                     cwd=str(self.workdir), start_new_session=True,
                                     preexec_fn=self._set_rlimits if self.rlimits else None)
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

    def _set_rlimits(self):
        import resource
        for res, limits in self.rlimits.items():
            resource.setrlimit(res, limits)

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=2 * TIME_FACTOR) as s:
                s.sendall(b"GET /stowrs-ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    def stop(self, timeout=10):
        if self.proc is None:
            return
        timeout *= TIME_FACTOR
        begin = self.mark()
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        except ProcessLookupError:
            pass
        self.proc = None
        self._stop_ranges.append((begin, self.mark()))
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
        deadline = time.monotonic() + timeout * TIME_FACTOR
        while True:
            lines = self.log_lines_with(tag, since)
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def check_error_log(self, since=0, expected_tags=()):
        """Fail on any [error]/[warn]/[crit]/[alert]/[emerg] line after @since
        that names none of @expected_tags, and on any crashed child."""
        bad = []
        offset = since
        for line in self.error_log_text_since(since).splitlines(keepends=True):
            begin, offset = offset, offset + len(line.encode("utf-8", "replace"))
            line = line.rstrip("\r\n")
            while_stopping = any(a <= begin < b for a, b in self._stop_ranges)
            if _CRASH_RE.search(line):
                if (not STRICT_SHUTDOWN and re.search(r"AH0005[12]", line)
                        and while_stopping):
                    if line not in self.shutdown_crashes:
                        self.shutdown_crashes.append(line)
                    continue
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
            if while_stopping and any(t in line for t in _SHUTDOWN_NOISE):
                continue
            if "AH00045" in line and (self.valgrind or (self.sanitize and LSAN)):
                # children take seconds to exit under valgrind, and with
                # LeakSanitizer, which scans and symbolizes at exit
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
        deadline = time.monotonic() + timeout * TIME_FACTOR
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


# ---------------------------------------------------------------- valgrind-leaks
def _leak_requests(h, n):
    """@n requests of every kind the module answers, in turn: PS3.10 stored,
    a stored and an unreadable part (202), a duplicate, a framing error
    (400), metadata + bulk data as XML and as JSON, metadata that is not
    XML (C000), a study mismatch (C409). @return statuses seen"""
    import dicomgen as g
    import metagen as mg
    import mime
    kept, _ = g.ct_image(rows=16, cols=16)
    mime.stow(h.port, mime.dicom_body([kept]))
    seen = {}
    for i in range(n):
        kind = i % 8
        if kind == 0:
            r = mime.stow(h.port, mime.dicom_body([g.ct_image(rows=32, cols=32)[0]]))
        elif kind == 1:
            r = mime.stow(h.port, mime.dicom_body([g.ct_image(rows=16, cols=16)[0],
                                                   b"not a DICOM file" * 20]))
        elif kind == 2:
            r = mime.stow(h.port, mime.dicom_body([kept]))
        elif kind == 3:
            body = mime.dicom_body([g.ct_image(rows=16, cols=16)[0]])
            r = mime.stow(h.port, body[:len(body) // 2].replace(b"\r\n", b"\n"))
        elif kind in (4, 5):
            orig = mg.small_ct(rows=32, cols=32)
            namer = mg.BulkNamer(h.location_url)
            if kind == 4:
                r = mg.post_xml(h, [mg.to_xml(orig.ds, namer=namer)])
            else:
                r = mg.post_json(h, [mg.to_json(orig.ds, namer=namer)],
                                 accept="application/dicom+json")
        elif kind == 6:
            r = mg.post_parts(h, [({"Content-Type": "application/dicom+xml"},
                                   b"<NativeDicomModel><oops")], "application/dicom+xml")
        else:
            r = mime.stow(h.port, mime.dicom_body([g.ct_image(rows=16, cols=16)[0]]),
                          path=STOW_PATH + "/1.2.3.4")
        seen[r.status] = seen.get(r.status, 0) + 1
    return seen


def valgrind_leaks(counts, base=None):
    """Store through each of @counts requests on a fresh httpd -X under
    memcheck; fail (return 1) on a memory error or when the definitely
    lost bytes grow with the number of requests."""
    import tempfile
    global VALGRIND, TIME_FACTOR
    VALGRIND, TIME_FACTOR = True, 20
    rows = []
    for n in counts:
        w = pathlib.Path(tempfile.mkdtemp(prefix="stowrs-vg-%d-" % n, dir=base))
        os.chmod(w, 0o777)
        h = Httpd(w, single_process=True)
        h.start()
        seen = _leak_requests(h, n)
        h.stop()
        logs = h.valgrind_logs()
        res = [parse_valgrind_log(f) for f in logs]
        assert len(res) == 1 and res[0]["complete"], "no leak summary in %s" % logs
        rows.append((n, seen, res[0], w))
    ok = True
    print("valgrind memcheck of httpd -X, definitely lost at exit:")
    for n, seen, r, w in rows:
        print("  %4d requests %s: %d bytes in %d blocks (in use at exit: %d bytes), "
              "%d memory error(s), %d leak record(s) with a mod_stowrs frame  (%s)"
              % (n, dict(sorted(seen.items())), r["definite_bytes"], r["definite_blocks"],
                 r["in_use_bytes"], len(r["errors"]), len(r["module_leaks"]), r["path"]))
        for e in r["errors"][:5]:
            print(e)
        ok = ok and not r["errors"]
    (n0, _, r0, _), (n1, _, r1, _) = rows[0], rows[-1]
    # a leak of even one byte per request would show as n1 - n0 bytes
    for key, what in (("definite_bytes", "definitely lost"),
                      ("in_use_bytes", "heap in use at exit")):
        grown = r1[key] - r0[key]
        if grown >= n1 - n0:
            ok = False
            print("FAIL: %s is %d bytes more after %d requests than after %d: "
                  "it grows per request" % (what, grown, n1, n0))
            for rec in r1["leaks"][:10]:
                print(rec)
        else:
            print("%s does not grow with the requests (%+d bytes from %d to %d requests)"
                  % (what, grown, n0, n1))
    if ok:
        for _, _, _, w in rows:
            shutil.rmtree(w, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    import sys
    if len(sys.argv) >= 2 and sys.argv[1] == "valgrind-leaks":
        sys.exit(valgrind_leaks([int(a) for a in sys.argv[2:]] or [10, 100]))
    sys.exit("usage: %s valgrind-leaks [N1 N2 ...]" % sys.argv[0])
