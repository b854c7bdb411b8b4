"""Configuration merging (DESIGN.md §1 and §4, README §3 "Merging"): every
directive is per location; a nested or later block that matches the URL
overrides what it sets and inherits the rest; server-level settings are
defaults for every location; the service base path (and so the
RetrieveURLs) is the path of the block that sets StowRSArchive.
"""

import os

import dicomgen as g
import mime
from helpers_dicom import (BASIC_TEXT_SR, CT, IMPLICIT, MR, check_answer, file_state,
                           post)
import test_410_max_requests as t410
from test_410_max_requests import slow_uploads  # noqa: F401 (fixture)
from stowrs_env import make_writable_dir

AE1 = "/dcm4chee-arc/aets/AE1/rs"
AE2 = "/dcm4chee-arc/aets/AE2/rs"


def _block(path, *lines):
    return '<Location "%s">\n%s</Location>\n' % (path, "".join("    %s\n" % l for l in lines))


def _ae(path, archive, *lines):
    return _block(path, "SetHandler stowrs", 'StowRSArchive "%s"' % archive, *lines)


def _archives(new_workdir, *names):
    return [make_writable_dir(new_workdir(n) / "archive") for n in names]


def _pair(rows=16, cols=16, **kw):
    """Two different files of the same instance."""
    first, u = g.ct_image(rows=rows, cols=cols, **kw)
    second, u2 = g.ct_image(rows=rows, cols=cols, study=u["study"], series=u["series"],
                            sop=u["sop"], PatientName="OTHER^NAME", **kw)
    assert u2 == u and first != second
    return first, second, u


def _only(h, archive, paths):
    assert sorted(h.archive_files(archive=archive)) == sorted(paths), \
        "archive %s holds %s, expected %s" % (archive, h.archive_files(archive=archive), paths)


def test_420_01_two_aes_independent(make_httpd, new_workdir):
    """AE1: Reject + CT only; AE2: Always + every class. Each keeps its own
    archive, policy, class list and RetrieveURL base."""
    a1, a2 = _archives(new_workdir, "ae1", "ae2")
    h = make_httpd(conf_extra=_ae(AE1, a1, "StowRSOverwritePolicy Reject",
                                  "StowRSAcceptSOPClass CTImageStorage")
                   + _ae(AE2, a2, "StowRSOverwritePolicy Always", "StowRSAcceptSOPClass all"))
    first, second, u = _pair()
    # the same instance to both: stored in each archive
    check_answer(h, post(h, [first], path=AE1 + "/studies"), 200, stored=[u], location=AE1)
    check_answer(h, post(h, [first], path=AE2 + "/studies"), 200, stored=[u], location=AE2)
    p1 = h.assert_stored(first, u, archive=a1)
    p2 = h.assert_stored(first, u, archive=a2)
    st1 = file_state(p1)
    # duplicate: rejected on AE1, replaced on AE2
    check_answer(h, post(h, [second], path=AE1 + "/studies"), 409,
                 failed=[("0111", CT, u["sop"])], location=AE1)
    assert file_state(p1) == st1
    check_answer(h, post(h, [second], path=AE2 + "/studies"), 200, stored=[u], location=AE2)
    h.assert_stored(second, u, archive=a2)
    h.assert_stored(first, u, archive=a1)
    # MR: not accepted on AE1, accepted on AE2
    mr, um = g.ct_image(rows=8, cols=8, sop_class=MR)
    check_answer(h, post(h, [mr], path=AE1 + "/studies"), 409,
                 failed=[("0122", MR, um["sop"])], location=AE1)
    h.assert_not_stored(um, archive=a1)
    check_answer(h, post(h, [mr], path=AE2 + "/studies"), 200, stored=[um], location=AE2)
    pm = h.assert_stored(mr, um, archive=a2)
    # nothing anywhere else
    _only(h, a1, [p1])
    _only(h, a2, [p2, pm])
    assert h.archive_files() == []
    for a in (a1, a2):
        assert h.wait_spool_empty(archive=a) == []


def test_420_02_nested_overrides_one_setting(make_httpd, new_workdir):
    """A block for AE1/rs/studies that only sets StowRSOverwritePolicy
    Always: duplicates are replaced there, while the archive, the SOP class
    list and the transfer syntaxes of the AE1 block still apply and the
    RetrieveURLs keep the base …/AE1/rs. AE2 has AE1's outer settings
    without the nested block: it still rejects duplicates."""
    a1, a2 = _archives(new_workdir, "ae1", "ae2")
    outer = ("StowRSOverwritePolicy Reject", "StowRSAcceptSOPClass CTImageStorage",
             "StowRSAcceptTransferSyntax image LittleEndianExplicit")
    h = make_httpd(conf_extra=_ae(AE1, a1, *outer) + _ae(AE2, a2, *outer)
                   + _block(AE1 + "/studies", "StowRSOverwritePolicy Always"))
    for path in (AE1 + "/studies", None):
        first, second, u = _pair()
        if path is None:
            path = AE1 + "/studies/" + u["study"]      # also below /studies/{uid}
        check_answer(h, post(h, [first], path=path), 200, stored=[u], location=AE1)
        p = h.assert_stored(first, u, archive=a1)
        ino = os.stat(p).st_ino
        check_answer(h, post(h, [second], path=path), 200, stored=[u], location=AE1)
        h.assert_stored(second, u, archive=a1)
        assert os.stat(p).st_ino != ino, "duplicate not replaced (Always) under %s" % path
        # the class list of the outer block
        mr, um = g.ct_image(rows=8, cols=8, sop_class=MR, study=u["study"])
        check_answer(h, post(h, [mr], path=path), 409, failed=[("0122", MR, um["sop"])],
                     location=AE1)
        # the transfer syntaxes of the outer block (Implicit VR not listed)
        imp, ui = g.ct_image(rows=8, cols=8, transfer_syntax=IMPLICIT, study=u["study"])
        check_answer(h, post(h, [imp], path=path), 409, failed=[("C122", CT, ui["sop"])],
                     location=AE1)
        h.assert_not_stored(um, archive=a1)
        h.assert_not_stored(ui, archive=a1)
    assert h.archive_files() == []
    # AE2 = the outer settings alone: Reject
    first, second, u = _pair()
    check_answer(h, post(h, [first], path=AE2 + "/studies"), 200, stored=[u], location=AE2)
    p = h.assert_stored(first, u, archive=a2)
    st = file_state(p)
    check_answer(h, post(h, [second], path=AE2 + "/studies"), 409,
                 failed=[("0111", CT, u["sop"])], location=AE2)
    assert file_state(p) == st
    for a in (a1, a2):
        assert h.wait_spool_empty(archive=a) == []


def test_420_03_later_block_overrides_max_body(make_httpd, new_workdir):
    """A later block for the same path raises StowRSMaxBodySize from 2000
    to 20000 and inherits the rest (archive, Reject)."""
    (a1,) = _archives(new_workdir, "ae1")
    h = make_httpd(conf_extra=_ae(AE1, a1, "StowRSMaxBodySize 2000",
                                  "StowRSOverwritePolicy Reject")
                   + _block(AE1, "StowRSMaxBodySize 20000"))
    first, second, u = _pair(rows=64, cols=64)                  # ~9 KB
    body = mime.dicom_body([first])
    assert 2000 < len(body) < 20000
    check_answer(h, post(h, [first], path=AE1 + "/studies"), 200, stored=[u], location=AE1)
    p = h.assert_stored(first, u, archive=a1)
    st = file_state(p)
    check_answer(h, post(h, [second], path=AE1 + "/studies"), 409,
                 failed=[("0111", CT, u["sop"])], location=AE1)
    assert file_state(p) == st
    big, ub = g.ct_image(rows=128, cols=128)                    # ~33 KB
    resp = post(h, [big], path=AE1 + "/studies", expect_continue=True)
    assert resp.status == 413, "body over the later block's 20000: %r" % resp
    assert not resp.got_continue
    h.assert_not_stored(ub, archive=a1)
    assert h.archive_files() == []


def test_420_04_transfer_syntax_per_category(make_httpd, new_workdir):
    """The outer block restricts the image category, the nested one only
    the sr category: below the nested block both restrictions apply (each
    StowRSAcceptTransferSyntax line replaces one category's list)."""
    (a1,) = _archives(new_workdir, "ae1")
    h = make_httpd(conf_extra=_ae(AE1, a1, "StowRSAcceptTransferSyntax image LittleEndianExplicit")
                   + _block(AE1 + "/studies", "StowRSAcceptTransferSyntax sr LittleEndianExplicit"))
    path = AE1 + "/studies"
    ct_imp, uci = g.ct_image(rows=8, cols=8, transfer_syntax=IMPLICIT)
    ct_exp, uce = g.ct_image(rows=8, cols=8)
    sr_imp, usi = g.sr_document(transfer_syntax=IMPLICIT)
    sr_exp, use = g.sr_document()
    resp = post(h, [ct_imp, ct_exp, sr_imp, sr_exp], path=path)
    check_answer(h, resp, 202, stored=[uce, use],
                 failed=[("C122", CT, uci["sop"]), ("C122", BASIC_TEXT_SR, usi["sop"])],
                 location=AE1)
    h.assert_stored(ct_exp, uce, archive=a1)
    h.assert_stored(sr_exp, use, archive=a1)
    # the default location knows neither restriction
    check_answer(h, post(h, [ct_imp, sr_imp]), 200, stored=[uci, usi])


def test_420_05_server_level_defaults(make_httpd, new_workdir):
    """Settings at server level are defaults for every location; a location
    that sets its own wins."""
    (a2,) = _archives(new_workdir, "ae2")
    h = make_httpd(conf_extra="StowRSOverwritePolicy Reject\n"
                              "StowRSAcceptSOPClass CTImageStorage\n"
                   + _ae(AE2, a2, "StowRSOverwritePolicy Always"))
    # the default location inherits both
    first, second, u = _pair()
    check_answer(h, post(h, [first]), 200, stored=[u])
    p = h.assert_stored(first, u)
    st = file_state(p)
    check_answer(h, post(h, [second]), 409, failed=[("0111", CT, u["sop"])])
    assert file_state(p) == st
    mr, um = g.ct_image(rows=8, cols=8, sop_class=MR)
    check_answer(h, post(h, [mr]), 409, failed=[("0122", MR, um["sop"])])
    # AE2 overrides the policy, inherits the class list
    check_answer(h, post(h, [first], path=AE2 + "/studies"), 200, stored=[u], location=AE2)
    check_answer(h, post(h, [second], path=AE2 + "/studies"), 200, stored=[u], location=AE2)
    h.assert_stored(second, u, archive=a2)
    check_answer(h, post(h, [mr], path=AE2 + "/studies"), 409,
                 failed=[("0122", MR, um["sop"])], location=AE2)


def test_420_06_max_requests_inherited(make_httpd, new_workdir, slow_uploads):
    """StowRSMaxRequests of the AE1 block holds below a nested block that
    sets only a policy; a nested block that sets 0 lifts it there."""
    a1, a2 = _archives(new_workdir, "ae1", "ae2")
    h = make_httpd(conf_extra=_ae(AE1, a1, "StowRSMaxRequests 1")
                   + _block(AE1 + "/studies", "StowRSOverwritePolicy Always")
                   + _ae(AE2, a2, "StowRSMaxRequests 1")
                   + _block(AE2 + "/studies", "StowRSMaxRequests 0"))
    up = t410._hold(h, 1, path=AE1 + "/studies", archive=a1)
    t410._refused_request(h, path=AE1 + "/studies")
    t410._finish_all(h, up, location=AE1, archive=a1)
    ups = t410._hold(h, 2, path=AE2 + "/studies", archive=a2)
    c, uc = g.ct_image(rows=8, cols=8)
    check_answer(h, post(h, [c], path=AE2 + "/studies"), 200, stored=[uc], location=AE2)
    t410._finish_all(h, ups, location=AE2, archive=a2)
