"""Full, read-only and missing archives (issue 4; DESIGN.md §3.3: A700 for
ENOSPC/EDQUOT, 0110 for any other I/O error; §3.5 storage; §3.6 status;
README §4 "Full, read-only or missing archive").

test_400_limits.py covers the basic A700 and read-only-series cases; this
file fills a real filesystem while an upload runs, checks that nothing of a
failed instance stays (no file, no index link, no spool file, and no space
held by a deleted file still open), that storing works again once space is
freed, and pins the answers and log lines for a read-only, a missing and an
unpreparable archive.

The small filesystem is a tmpfs, mounted when the tests run as root. Without
root (no mount), the same tests run with a different real fault: httpd
started with RLIMIT_FSIZE, so the write that crosses the limit fails with
EFBIG, which is not a lack of space and so answers 0110 (409 alone); the
read-only filesystem case becomes a spool directory the serving user may not
write. As root both mechanisms run.
"""

import errno
import os
import resource
import shutil
import signal
import subprocess
import time

import pytest

import dicomgen as g
import metagen as mg
import mime
from helpers_dicom import CT, check_answer, post
from stowrs_env import TIME_FACTOR, is_root, make_writable_dir

MiB = 1024 * 1024
FSIZE_LIMIT = 1 * MiB           # RLIMIT_FSIZE of the non-root mechanism
MECHANISMS = ["tmpfs", "fsize"] if is_root() else ["fsize"]


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout * TIME_FACTOR
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# ------------------------------------------------------------------ the fault
class SmallFs:
    """A tmpfs of @size bytes at @mnt (root only); the archive is
    @mnt/archive. fill()/fill_up() put a filler file beside the archive,
    free() removes it."""

    def __init__(self, mnt, size):
        self.mnt = mnt
        self.size = size
        self.archive = mnt / "archive"
        self.filler = mnt / "filler"

    def free_bytes(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def used_bytes(self):
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def file_bytes(self):
        """Space taken by the files one can see below the mount."""
        total = 0
        for dirpath, dirnames, filenames in os.walk(self.mnt):
            for f in filenames:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
        return total

    def hidden_bytes(self):
        """Space in use that no visible file accounts for: a deleted spool
        file still held open, for example."""
        return self.used_bytes() - self.file_bytes()

    def fill(self, leave):
        """Leave about @leave bytes free."""
        n = self.free_bytes() - leave
        assert n > 0, (self.free_bytes(), leave)
        with open(self.filler, "ab") as f:
            f.write(b"\0" * n)
        assert abs(self.free_bytes() - leave) < 64 * 1024, (self.free_bytes(), leave)

    def fill_up(self):
        """Write the filler until the filesystem is full (root has no
        reserve on tmpfs), the last page byte by byte."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for n in (65536, 4096, 1):
                chunk = b"\0" * n
                try:
                    while os.write(fd, chunk) > 0:
                        pass
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def free(self):
        self.filler.unlink()

    def set_readonly(self, ro):
        subprocess.run(["mount", "-o", "remount,%s" % ("ro" if ro else "rw"), str(self.mnt)],
                       check=True)


def _small_fs(new_workdir, after_checks, size):
    mnt = new_workdir("smallfs") / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "tmpfs",
                    str(mnt)], check=True)

    def umount():
        r = subprocess.run(["umount", str(mnt)], capture_output=True)
        if r.returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)
    after_checks(umount)
    fs = SmallFs(mnt, size)
    make_writable_dir(fs.archive)
    return fs


@pytest.fixture(params=MECHANISMS)
def fault(request, new_workdir, after_checks, make_httpd):
    """(mechanism, server, SmallFs or None): "tmpfs" an 8 MiB tmpfs holding
    the archive; "fsize" httpd under RLIMIT_FSIZE of 1 MiB."""
    if request.param == "tmpfs":
        fs = _small_fs(new_workdir, after_checks, 8 * MiB)
        h = make_httpd(archive=fs.archive)
        return "tmpfs", h, fs
    h = make_httpd(rlimits={resource.RLIMIT_FSIZE: (FSIZE_LIMIT, FSIZE_LIMIT)})
    return "fsize", h, None


def _space_back(h, fs):
    """End the fault: free the tmpfs, or (fsize mechanism) restart httpd
    without its RLIMIT_FSIZE."""
    if fs is not None:
        fs.free()
        return
    h.stop()
    h.rlimits = {}
    h.start()


# what each mechanism answers for the instance that does not fit
CODE = {"tmpfs": "A700", "fsize": "0110"}
ALONE = {"tmpfs": 503, "fsize": 409}
OS_TEXT = {"tmpfs": "No space left on device", "fsize": "File too large"}


def _failed_lines(h, mark, code):
    return [l for l in h.log_lines_with("STOWRS0201", since=mark) if "failed %s" % code in l]


def _assert_nothing_of(h, fs, uids, stale_link=False):
    """Nothing of a failed instance anywhere: no file at its path, no index
    link, an empty spool and (tmpfs) no space held by a deleted file.
    @stale_link: its index link may stay (a claim made before a publish
    that failed; README §4: a link whose file is gone is taken over)."""
    h.assert_not_stored(uids)
    link = h.archive / ".stowrs-index" / uids["sop"]
    if not stale_link:
        assert not os.path.lexists(link), "index link left: %s -> %s" % (
            link, os.readlink(link))
    assert h.wait_spool_empty() == []
    if fs is not None:
        assert _wait(lambda: fs.hidden_bytes() < 64 * 1024), \
            "%d bytes used by no visible file" % fs.hidden_bytes()


# --------------------------------------------------------------- full disk
def test_450_01_fills_during_upload(fault):
    """Two instances of one study: the first is stored while the body is
    still coming, then the filesystem fills up (tmpfs: a filler written
    until ENOSPC between the two; fsize: the second is over the limit).
    202: the first stored and intact, the second failed A700 (0110 for
    EFBIG), and nothing of it anywhere. Once space is freed the second
    goes in."""
    mech, h, fs = fault
    a, ua = g.ct_image(rows=256, cols=256)                     # 128 KiB
    b, ub = g.ct_image(rows=1024, cols=1024, study=ua["study"])  # 2 MiB
    mark = h.mark()
    if mech == "fsize":
        resp = post(h, [a, b])
    else:
        body = mime.multipart_body([(None, a), (None, b)])
        cut = body.index(b) + 64 * 1024
        path_a = h.instance_path(ua["study"], ua["series"], ua["sop"])
        seen = {}

        def stream():
            # runs in mime's sender thread: record, the test asserts below
            yield body[:cut]
            seen["first stored"] = bool(_wait(path_a.exists))
            seen["second spooling"] = bool(_wait(lambda: len(h.spool_files()) == 1))
            fs.fill_up()
            seen["full"] = fs.free_bytes()
            yield body[cut:]

        resp = mime.stow(h.port, stream(), content_length=len(body),
                         timeout=60 * TIME_FACTOR)
        assert seen == {"first stored": True, "second spooling": True, "full": seen["full"]}, \
            seen
        assert seen["full"] < 8192, seen
    check_answer(h, resp, 202, stored=[ua], failed=[(CODE[mech], None, None)])
    h.assert_stored(a, ua)
    _assert_nothing_of(h, fs, ub)
    assert [p.name for p in h.all_archive_files()] == [ua["sop"] + ".dcm"]
    assert sorted(os.listdir(h.archive / ".stowrs-index")) == [ua["sop"]]
    lines = _failed_lines(h, mark, CODE[mech])
    assert len(lines) == 1 and "part 2:" in lines[0] and OS_TEXT[mech] in lines[0], lines
    # space back: the second goes in, the first is untouched
    _space_back(h, fs)
    check_answer(h, post(h, [b]), 200, stored=[ub])
    h.assert_stored(b, ub)
    h.assert_stored(a, ua)


def test_450_02_alone_does_not_fit(fault):
    """The only instance does not fit: 503 with Retry-After and A700 (fsize:
    EFBIG, 409 and 0110, not a lack of resources); nothing of it stays.
    A small one still fits beside it, and after freeing space it goes in."""
    mech, h, fs = fault
    big, ub = g.ct_image(rows=1024, cols=1024)                 # 2 MiB
    if fs is not None:
        fs.fill(leave=1 * MiB)
    mark = h.mark()
    resp = post(h, [big])
    check_answer(h, resp, ALONE[mech], failed=[(CODE[mech], None, None)])
    if mech == "tmpfs":
        assert resp.header("Retry-After").isdigit(), resp.headers
    _assert_nothing_of(h, fs, ub)
    assert h.all_archive_files() == []
    lines = _failed_lines(h, mark, CODE[mech])
    assert len(lines) == 1 and OS_TEXT[mech] in lines[0], lines
    small, us = g.ct_image(rows=64, cols=64)
    check_answer(h, post(h, [small]), 200, stored=[us])
    _space_back(h, fs)
    check_answer(h, post(h, [big]), 200, stored=[ub])
    h.assert_stored(big, ub)
    h.assert_stored(small, us)


@pytest.mark.parametrize("root", ["xml", "json"])
def test_450_03_metadata_bulk_does_not_fit(fault, root):
    """A metadata request whose 2 MiB pixel data bulk part does not fit:
    the object fails A700 (fsize: 0110) with its own UIDs, nothing stays;
    after freeing space the same request stores it."""
    mech, h, fs = fault
    orig = mg.small_ct(rows=1024, cols=1024)
    namer = mg.BulkNamer(h.location_url)
    meta = (mg.to_xml if root == "xml" else mg.to_json)(orig.ds, namer=namer)
    assert len(meta.bulk) == 1 and len(meta.bulk[0].data) == 2 * MiB
    send = mg.post_xml if root == "xml" else mg.post_json
    if fs is not None:
        fs.fill(leave=1 * MiB)
    mark = h.mark()
    resp = send(h, [meta])
    check_answer(h, resp, ALONE[mech], failed=[(CODE[mech], CT, orig.uids["sop"])])
    _assert_nothing_of(h, fs, orig.uids)
    assert h.all_archive_files() == []
    assert len(_failed_lines(h, mark, CODE[mech])) == 1   # what it says: test_450_09
    _space_back(h, fs)
    check_answer(h, send(h, [meta]), 200, stored=[orig.uids])
    assert h.instance_path(orig.uids["study"], orig.uids["series"], orig.uids["sop"]).is_file()


def test_450_08_metadata_built_file_does_not_fit(fault):
    """The bulk data parts are spooled, but the PS3.10 file built from them
    does not fit (two 600 KiB frames as two parts; tmpfs: 1.5 MiB free,
    fsize: the 1.2 MiB file is over the limit): A700 (fsize: 0110) for the
    object, nothing stays, the log names the OS error; with space it is
    stored."""
    mech, h, fs = fault
    orig = mg.multiframe_native(frames=2, rows=512, cols=600)
    meta = mg.to_xml(orig.ds, namer=mg.BulkNamer(h.location_url), split_native=True)
    assert [len(b.data) for b in meta.bulk] == [614400, 614400]
    if fs is not None:
        fs.fill(leave=1536 * 1024)
    mark = h.mark()
    resp = mg.post_xml(h, [meta])
    check_answer(h, resp, ALONE[mech], failed=[(CODE[mech], orig.uids["sop_class"],
                                                orig.uids["sop"])])
    _assert_nothing_of(h, fs, orig.uids)
    assert h.all_archive_files() == []
    assert len(_failed_lines(h, mark, CODE[mech])) == 1   # what it says: test_450_09
    _space_back(h, fs)
    check_answer(h, mg.post_xml(h, [meta]), 200, stored=[orig.uids])


@pytest.mark.parametrize("stage", ["bulk", "build"])
def test_450_09_metadata_write_error_logged(fault, stage):
    """The log line of a metadata object whose bulk data could not be
    spooled, or whose built file could not be written, names the OS error
    (as a PS3.10 part's "writing spool file: No space left on device"
    does), and does not claim a bulk part is missing."""
    mech, h, fs = fault
    if stage == "bulk":
        orig, leave, split = mg.small_ct(rows=1024, cols=1024), 1 * MiB, False
    else:
        orig, leave, split = mg.multiframe_native(frames=2, rows=512, cols=600), 1536 * 1024, True
    meta = mg.to_xml(orig.ds, namer=mg.BulkNamer(h.location_url), split_native=split)
    if fs is not None:
        fs.fill(leave=leave)
    mark = h.mark()
    check_answer(h, mg.post_xml(h, [meta]), ALONE[mech],
                 failed=[(CODE[mech], orig.uids["sop_class"], orig.uids["sop"])])
    lines = _failed_lines(h, mark, CODE[mech])
    assert len(lines) == 1, lines
    assert OS_TEXT[mech] in lines[0] and "names no bulk data part" not in lines[0], lines


# ------------------------------------------------------------ read-only archive
def test_450_04_readonly_archive_directory(make_httpd):
    """The archive directory made read-only for the serving user (chmod
    0555; root's children run as www-data, whom it stops): instances that
    need a new study directory fail 0110 with their own UIDs, one of an
    existing series is still stored; the log says "Permission denied".
    Writable again, the failed ones are stored as new: the index links
    their failed publish left behind (a module issue, reported) do not make
    them duplicates."""
    h = make_httpd()
    x, ux = g.ct_image(rows=16, cols=16)
    check_answer(h, post(h, [x]), 200, stored=[ux])
    y, uy = g.ct_image(rows=16, cols=16)
    z, uz = g.ct_image(rows=16, cols=16)
    x2, ux2 = g.ct_image(rows=16, cols=16, study=ux["study"], series=ux["series"])
    os.chmod(h.archive, 0o555)
    try:
        mark = h.mark()
        resp = post(h, [y, z, x2])
        check_answer(h, resp, 202, stored=[ux2],
                     failed=[("0110", CT, uy["sop"]), ("0110", CT, uz["sop"])])
        lines = _failed_lines(h, mark, "0110")
        assert len(lines) == 2 and all("Permission denied" in l for l in lines), lines
        for u in (uy, uz):
            _assert_nothing_of(h, None, u, stale_link=True)
        # alone: 409, a server fault is not a lack of resources
        check_answer(h, post(h, [y]), 409, failed=[("0110", CT, uy["sop"])])
    finally:
        os.chmod(h.archive, 0o755)
    mark = h.mark()
    check_answer(h, post(h, [y, z]), 200, stored=[uy, uz])
    assert len([l for l in h.log_lines_with("STOWRS0202", since=mark) if ": stored (" in l]) == 2
    h.assert_stored(y, uy)
    h.assert_stored(z, uz)
    h.assert_stored(x2, ux2)


def test_450_05_readonly_filesystem(new_workdir, after_checks, make_httpd):
    """The archive's filesystem turns read-only (root: remount,ro of a
    tmpfs, EROFS; without root: the spool directory made read-only for the
    serving user, EACCES): no spool file can be made, every instance fails
    0110, 409, and the log names the OS error. Writable again: stored."""
    if is_root():
        fs = _small_fs(new_workdir, after_checks, 8 * MiB)
        h = make_httpd(archive=fs.archive)
        lock, unlock, text = (lambda: fs.set_readonly(True), lambda: fs.set_readonly(False),
                              "Read-only file system")
    else:
        h = make_httpd()
        spool = h.spool_dir()
        lock, unlock, text = (lambda: os.chmod(spool, 0o555), lambda: os.chmod(spool, 0o755),
                              "Permission denied")
    a, ua = g.ct_image(rows=16, cols=16)
    b, ub = g.ct_image(rows=16, cols=16, study=ua["study"])
    lock()
    try:
        mark = h.mark()
        check_answer(h, post(h, [a, b]), 409, failed=[("0110", None, None)] * 2)
        lines = _failed_lines(h, mark, "0110")
        assert len(lines) == 2, lines
        assert all("cannot create spool file" in l and text in l for l in lines), lines
    finally:
        unlock()
    assert h.all_archive_files() == []
    assert h.wait_spool_empty() == []
    check_answer(h, post(h, [a, b]), 200, stored=[ua, ub])
    h.assert_stored(a, ua)
    h.assert_stored(b, ub)


# ------------------------------------------------------------- missing archive
def _graceful(h):
    """Graceful restart (post_config prepares the archives again); -X
    servers (valgrind) restart."""
    if h.single_process:
        h.restart()
        return
    mark = h.mark()
    os.kill(h.pid, signal.SIGUSR1)
    assert h.wait_log("AH00489", since=mark, timeout=20), "no graceful restart"


def test_450_06_archive_removed_after_start(make_httpd):
    """The archive directory is removed while httpd runs (an unmounted
    share, an admin's rm -r): httpd stays up, each instance fails 0110
    (DESIGN.md §3.3 "any other I/O error"), 409, and the log says the
    spool file cannot be created: No such file or directory. A graceful
    restart makes the archive again, and storing works."""
    h = make_httpd()
    a, ua = g.ct_image(rows=16, cols=16)
    check_answer(h, post(h, [a]), 200, stored=[ua])
    shutil.rmtree(h.archive)
    b, ub = g.ct_image(rows=16, cols=16)
    c, uc = g.ct_image(rows=16, cols=16)
    mark = h.mark()
    check_answer(h, post(h, [b, c]), 409, failed=[("0110", None, None)] * 2)
    lines = _failed_lines(h, mark, "0110")
    assert len(lines) == 2, lines
    assert all("cannot create spool file: No such file or directory" in l for l in lines), lines
    assert not h.archive.exists()
    # an admin's bare mkdir is not enough: the spool directory is missing
    make_writable_dir(h.archive)
    check_answer(h, post(h, [b]), 409, failed=[("0110", None, None)])
    _graceful(h)
    assert _wait(lambda: (h.archive / ".stowrs-tmp").is_dir()
                 and (h.archive / ".stowrs-index").is_dir()), os.listdir(h.archive)
    check_answer(h, post(h, [b, c]), 200, stored=[ub, uc])
    h.assert_stored(b, ub)
    h.assert_stored(c, uc)


@pytest.mark.expect_log("STOWRS0002")
def test_450_07_archive_cannot_be_prepared_at_start(make_httpd, new_workdir):
    """StowRSArchive names a directory that cannot be made (below a regular
    file: ENOTDIR, for root too). httpd starts anyway, logs STOWRS0002 at
    error level with the path and the OS error, and instances fail 0110,
    409."""
    parent = new_workdir("notadir") / "file"
    parent.write_text("not a directory\n")
    h = make_httpd(start=False)
    h.archive = parent / "archive"
    mark = h.mark()
    h.start()
    lines = h.wait_log("STOWRS0002", since=mark)
    assert len(lines) == 1, lines
    assert "[stowrs:error]" in lines[0] and str(h.archive) in lines[0] \
        and "Not a directory" in lines[0], lines
    a, ua = g.ct_image(rows=16, cols=16)
    check_answer(h, post(h, [a]), 409, failed=[("0110", None, None)])
    assert _failed_lines(h, mark, "0110"), h.error_log_tail()
