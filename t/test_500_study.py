"""The study in the path (C409), duplicates under the three overwrite
policies (DESIGN.md §3.5), the same SOP Instance UID in another study or
series (A77B), several locations with their own archives, StowRSPathFormat,
and what the module does to the archive at startup (t/CONTRACT.md).
"""

import fcntl
import os

import pytest

import dicomgen as g
import helpers_dicom as hd
from helpers_dicom import BASIC_TEXT_SR, CT, JSON, XML, check_answer, file_state, post
from stowrs_env import LOCATION, STOW_PATH, make_writable_dir


def _study_path(study):
    return "%s/%s" % (STOW_PATH, study)


# --------------------------------------------------------------- C409
@pytest.mark.parametrize("accept", [XML, JSON])
def test_500_01_study_in_path(httpd, accept):
    study = g.uid()
    same, us = g.ct_image(rows=8, cols=8, study=study)
    other, uo = g.ct_image(rows=8, cols=8)
    # another study only: 409
    resp = post(httpd, [other], path=_study_path(study), accept=accept)
    check_answer(httpd, resp, 409, failed=[("C409", CT, uo["sop"])])
    httpd.assert_not_stored(uo)
    # the same study: 200, RetrieveURL of that study
    resp = post(httpd, [same], path=_study_path(study), accept=accept)
    check_answer(httpd, resp, 200, stored=[us])
    httpd.assert_stored(same, us)
    # mixed: 202
    same2, us2 = g.ct_image(rows=8, cols=8, study=study)
    other2, uo2 = g.ct_image(rows=8, cols=8)
    resp = post(httpd, [other2, same2], path=_study_path(study), accept=accept)
    check_answer(httpd, resp, 202, stored=[us2], failed=[("C409", CT, uo2["sop"])])
    httpd.assert_stored(same2, us2)
    httpd.assert_not_stored(uo2)


def test_500_02_study_in_path_checked_after_the_rest(httpd):
    """C409 comes last in §3.3's order: an instance that is also unreadable
    or of an unsupported class fails with that reason, not C409."""
    study = g.uid()
    bad_class, ub = g.ct_image(rows=8, cols=8, sop_class="1.2.3.4")
    resp = post(httpd, [bad_class, g.no_preamble(rows=8, cols=8)[0]], path=_study_path(study))
    check_answer(httpd, resp, 409, failed=[("0122", "1.2.3.4", ub["sop"]),
                                           ("C499", hd.UNKNOWN_CLASS, None)])


# --------------------------------------------------------------- duplicates
def _pair(rows=16, cols=16):
    """Two different files of the same instance (other patient name and
    pixels, same UIDs)."""
    first, u = g.ct_image(rows=rows, cols=cols)
    second, u2 = g.ct_image(rows=rows, cols=cols, study=u["study"], series=u["series"],
                            sop=u["sop"], PatientName="OTHER^NAME")
    assert u2 == u and first != second
    return first, second, u


@pytest.mark.parametrize("conf", ["", "StowRSOverwritePolicy Never",
                                  "StowRSOverwritePolicy never"])
def test_500_03_duplicate_never(make_httpd, conf):
    """Never (the default): the second copy is reported stored, the first
    stays exactly as it was."""
    h = make_httpd(location_conf=conf)
    first, second, u = _pair()
    check_answer(h, post(h, [first]), 200, stored=[u])
    path = h.assert_stored(first, u)
    st = file_state(path)
    for data in (first, second):
        check_answer(h, post(h, [data]), 200, stored=[u])
        assert file_state(path) == st
    # twice in one request: both items reported stored
    check_answer(h, post(h, [second, second]), 200, stored=[u, u])
    assert file_state(path) == st
    h.assert_stored(first, u)


def test_500_04_duplicate_always(make_httpd):
    """Always: replaced by a rename, so a reader holding the old file still
    reads the old bytes whole, and the path has the new ones."""
    h = make_httpd(location_conf="StowRSOverwritePolicy Always")
    first, second, u = _pair(rows=128, cols=128)
    check_answer(h, post(h, [first]), 200, stored=[u])
    path = h.assert_stored(first, u)
    ino = os.stat(path).st_ino
    with open(path, "rb") as old:
        check_answer(h, post(h, [second]), 200, stored=[u])
        assert old.read() == first
    h.assert_stored(second, u)
    assert os.stat(path).st_ino != ino
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # and back
    check_answer(h, post(h, [first]), 200, stored=[u])
    h.assert_stored(first, u)


def test_500_05_duplicate_reject(make_httpd):
    h = make_httpd(location_conf="StowRSOverwritePolicy Reject")
    first, second, u = _pair()
    check_answer(h, post(h, [first]), 200, stored=[u])
    path = h.assert_stored(first, u)
    st = file_state(path)
    for data in (first, second):
        check_answer(h, post(h, [data]), 409, failed=[("0111", CT, u["sop"])])
        assert file_state(path) == st
    # with a new instance in the same request: 202
    new, un = g.ct_image(rows=8, cols=8, study=u["study"])
    check_answer(h, post(h, [second, new]), 202, stored=[un], failed=[("0111", CT, u["sop"])])
    assert file_state(path) == st
    h.assert_stored(new, un)


@pytest.mark.parametrize("policy", ["Never", "Always", "Reject"])
@pytest.mark.parametrize("moved", ["study", "series"])
def test_500_06_same_instance_elsewhere(make_httpd, policy, moved):
    """The same SOP Instance UID under another study or series is A77B
    whatever the policy; the stored file is untouched, nothing is written
    at the other place."""
    h = make_httpd(location_conf="StowRSOverwritePolicy %s" % policy)
    first, u = g.ct_image(rows=16, cols=16)
    check_answer(h, post(h, [first]), 200, stored=[u])
    path = h.assert_stored(first, u)
    st = file_state(path)
    kw = {"sop": u["sop"]}
    if moved == "series":
        kw["study"] = u["study"]
    elsewhere, ue = g.ct_image(rows=16, cols=16, **kw)
    assert ue["sop"] == u["sop"] and (ue["study"], ue["series"]) != (u["study"], u["series"])
    check_answer(h, post(h, [elsewhere]), 409, failed=[("A77B", CT, u["sop"])])
    assert file_state(path) == st
    h.assert_not_stored(ue)
    assert h.archive_files() == [path]
    # in a request with a good instance: 202
    good, ug = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [good, elsewhere]), 202, stored=[ug],
                 failed=[("A77B", CT, u["sop"])])
    assert file_state(path) == st


def test_500_07_same_instance_twice_in_one_request(httpd):
    """Within one request the first copy wins, the moved one is A77B."""
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8, sop=ua["sop"])
    check_answer(httpd, post(httpd, [a, b]), 202, stored=[ua], failed=[("A77B", CT, ua["sop"])])
    httpd.assert_stored(a, ua)
    httpd.assert_not_stored(ub)


# --------------------------------------------------------------- locations
def test_500_08_two_locations(make_httpd, new_workdir):
    """Two AEs in one server, each with its own archive: instances land only
    in their own, RetrieveURLs name their own location, and duplicates are
    per archive."""
    other_archive = make_writable_dir(new_workdir("other") / "archive")
    other_loc = "/dcm4chee-arc/aets/OTHER/rs"
    h = make_httpd(conf_extra='<Location "%s">\n    SetHandler stowrs\n'
                              '    StowRSArchive "%s"\n</Location>\n' % (other_loc, other_archive))
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [a]), 200, stored=[ua])
    check_answer(h, post(h, [b], path=other_loc + "/studies"), 200, stored=[ub],
                 location=other_loc)
    pa = h.assert_stored(a, ua)
    pb = h.assert_stored(b, ub, archive=other_archive)
    assert h.archive_files() == [pa]
    assert h.archive_files(archive=other_archive) == [pb]
    # the same SOP Instance UID in the other archive under another study is
    # not a conflict there: the archives are separate
    a2, ua2 = g.ct_image(rows=8, cols=8, sop=ua["sop"])
    check_answer(h, post(h, [a2], path=other_loc + "/studies"), 200, stored=[ua2],
                 location=other_loc)
    h.assert_stored(a2, ua2, archive=other_archive)
    h.assert_stored(a, ua)
    assert h.wait_spool_empty(archive=other_archive) == []
    # /studies/{uid} below the other location
    c, uc = g.ct_image(rows=8, cols=8)
    resp = post(h, [c], path="%s/studies/%s" % (other_loc, ub["study"]))
    check_answer(h, resp, 409, failed=[("C409", CT, uc["sop"])], location=other_loc)


def test_500_09_path_format(make_httpd):
    h = make_httpd(location_conf='StowRSPathFormat "{SOPClassUID}/{SOPInstanceUID}.dcm"')
    ct, uc = g.ct_image(rows=8, cols=8)
    sr, us = g.sr_document()
    check_answer(h, post(h, [ct, sr]), 200, stored=[uc, us])
    pc = h.archive / CT / (uc["sop"] + ".dcm")
    ps = h.archive / BASIC_TEXT_SR / (us["sop"] + ".dcm")
    assert pc.read_bytes() == ct
    assert ps.read_bytes() == sr
    assert h.archive_files() == sorted([pc, ps])
    h.assert_not_stored(uc)
    # the layout has no study: the same instance under another study is
    # still recognised (A77B), and a true duplicate is kept (Never)
    st = file_state(pc)
    moved, um = g.ct_image(rows=8, cols=8, sop=uc["sop"])
    check_answer(h, post(h, [moved]), 409, failed=[("A77B", CT, uc["sop"])])
    check_answer(h, post(h, [ct]), 200, stored=[uc])
    assert file_state(pc) == st


@pytest.mark.parametrize("fmt", ["{StudyInstanceUID}/{SOPInstanceUID}",
                                 "x/{SeriesInstanceUID}-{SOPInstanceUID}.dcm"])
def test_500_10_path_format_other(make_httpd, fmt):
    h = make_httpd(location_conf='StowRSPathFormat "%s"' % fmt)
    data, u = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [data]), 200, stored=[u])
    rel = (fmt.replace("{StudyInstanceUID}", u["study"])
              .replace("{SeriesInstanceUID}", u["series"])
              .replace("{SOPInstanceUID}", u["sop"]))
    assert (h.archive / rel).read_bytes() == data
    assert h.all_archive_files() == [h.archive / rel]


# --------------------------------------------------------------- startup
def test_500_11_archive_created_at_startup(make_httpd, new_workdir):
    """A missing archive (and its missing parents) is created with its spool
    and index directories at startup, usable by the serving user."""
    base = new_workdir("created")
    arch1 = base / "deep" / "er" / "archive"
    arch2 = base / "other" / "archive"
    other_loc = "/dcm4chee-arc/aets/OTHER/rs"
    assert not arch1.exists() and not arch2.exists()
    h = make_httpd(location_conf='StowRSArchive "%s"' % arch1,
                   conf_extra='<Location "%s">\n    SetHandler stowrs\n'
                              '    StowRSArchive "%s"\n</Location>\n' % (other_loc, arch2))
    for arch in (arch1, arch2):
        assert arch.is_dir()
        assert (arch / ".stowrs-tmp").is_dir()
        assert (arch / ".stowrs-index").is_dir()
    a, ua = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [a]), 200, stored=[ua])
    h.assert_stored(a, ua, archive=arch1)
    b, ub = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [b], path=other_loc + "/studies"), 200, stored=[ub],
                 location=other_loc)
    h.assert_stored(b, ub, archive=arch2)
    # the default archive of the harness is not used by the overriding one
    assert h.archive_files() == []
    for arch in (arch1, arch2):
        assert h.wait_spool_empty(archive=arch) == []


def test_500_12_stale_spool_files(make_httpd):
    """At start, spool files nobody holds are removed; one a live writer
    holds (an exclusive flock, as the module's own writers take) stays."""
    h = make_httpd()
    a, ua = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [a]), 200, stored=[ua])
    h.stop()
    spool = h.spool_dir()
    stale = [spool / "part-STALE1", spool / "part-abcdef", spool / "leftover.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    held = spool / "part-HELD01"
    fd = os.open(held, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        os.write(fd, b"in progress")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h.start()
        for p in stale:
            assert not p.exists(), p
        assert held.exists()
        assert held.read_bytes() == b"in progress"
        # stored instances are not touched by the sweep
        h.assert_stored(a, ua)
        # the server works meanwhile and leaves the held file alone
        b, ub = g.ct_image(rows=8, cols=8)
        check_answer(h, post(h, [b]), 200, stored=[ub])
        assert held.exists()
        h.stop()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # released: the next start removes it
    assert held.exists()
    h.start()
    assert not held.exists()
    assert h.spool_files() == []
