"""DESIGN.md §3.3 and §3.6: each application/dicom part is checked in order
and every failure gets its FailureReason, a FailedSOPSequence item, a
Warning header and the right HTTP status.

Every answer is checked whole by helpers_dicom.check_answer: status, both
sequences (and nothing else in them), RetrieveURLs, FailureReason written
in decimal, one well-formed `Warning: 299` header per failure.
"""

import os
import pathlib
import subprocess
import tempfile

import pytest

import dicomgen as g
import helpers_dicom as hd
from helpers_dicom import (BASIC_TEXT_SR, CT, DEFLATED, EXPLICIT, IMPLICIT, JSON, MR,
                           UNKNOWN_CLASS, XML, check_answer, post)


def _only_failure(h, resp, hexcode, cls, inst, status=409, strict_uids=True):
    r = check_answer(h, resp, status, failed=[(hexcode, cls, inst)], strict_uids=strict_uids)
    return r["failed"][0]


# --------------------------------------------------------------- C499
NOT_PART10 = {
    # only a dataset, as written by some old modalities
    "dataset-only": lambda: g.no_preamble(rows=8, cols=8)[0],
    # 'DICM' and meta header at offset 0, no 128-byte preamble
    "no-preamble": lambda: g.ct_image(rows=8, cols=8)[0][128:],
    # preamble present, magic wrong
    "no-DICM": lambda: (lambda d: d[:128] + b"DICX" + d[132:])(g.ct_image(rows=8, cols=8)[0]),
    # nothing DICOM at all
    "text": lambda: b"hello, this is not DICOM\r\n" * 10,
    "empty": lambda: b"",
}


@pytest.mark.parametrize("kind", sorted(NOT_PART10))
def test_300_01_not_part10(httpd, kind):
    data = NOT_PART10[kind]()
    before = httpd.archive_files()
    for accept in (XML, JSON):
        resp = post(httpd, [data], accept=accept)
        item = _only_failure(httpd, resp, "C499", UNKNOWN_CLASS, None)
        assert hd.valid_uid(item["instance"]), item
    assert httpd.archive_files() == before


def test_300_02_generated_uids_are_new(httpd):
    """Two unreadable parts in one request get two different generated
    instance UIDs."""
    resp = post(httpd, [g.no_preamble(rows=8, cols=8)[0], b"junk" * 100])
    r = check_answer(httpd, resp, 409, failed=[("C499", UNKNOWN_CLASS, None)] * 2)
    a, b = (x["instance"] for x in r["failed"])
    assert a != b


@pytest.mark.parametrize("offset", [
    134,    # inside the group length element
    150,    # inside (0002,0001)
    170,    # inside the value of (0002,0002)
])
def test_300_03_truncated_in_meta(httpd, offset):
    data, uids = g.ct_image(rows=8, cols=8)
    cut = g.truncated(data, offset)
    item = _only_failure(httpd, post(httpd, [cut]), "C499", UNKNOWN_CLASS, None)
    assert item["instance"] != uids["sop"]
    httpd.assert_not_stored(uids)


@pytest.mark.parametrize("where", ["in-patient-name", "in-element-header", "in-pixel-data",
                                   "in-sequence"])
def test_300_04_truncated_in_dataset(httpd, where):
    """The meta header is whole: the failed item names its class and
    instance. Truncated pixel data is truncated too (DESIGN.md §3.3)."""
    if where == "in-sequence":
        data, uids = g.sr_document()
        at = data.index(b"SECRET finding") + 3
    else:
        data, uids = g.ct_image(rows=16, cols=16)
        if where == "in-patient-name":
            at = data.index(g.PATIENT_NAME.encode()) + 4
        elif where == "in-element-header":
            at = data.index(b"\x10\x00\x10\x00PN") + 5
        else:
            at = len(data) - 100
    cut = g.truncated(data, at)
    _only_failure(httpd, post(httpd, [cut]), "C499", uids["sop_class"], uids["sop"])
    httpd.assert_not_stored(uids)


# --------------------------------------------------------------- A900
@pytest.mark.parametrize("attr", ["SOPInstanceUID", "SOPClassUID", "StudyInstanceUID",
                                  "SeriesInstanceUID"])
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_300_05_uid_missing_or_empty(httpd, attr, how):
    data, uids = hd.ct_with(**{attr: None if how == "missing" else ""})
    before = hd.tree_snapshot(httpd.archive)
    resp = post(httpd, [data])
    if attr in ("StudyInstanceUID", "SeriesInstanceUID"):
        _only_failure(httpd, resp, "A900", uids["sop_class"], uids["sop"])
    else:
        # the instance is named by whatever valid UID the server found
        _only_failure(httpd, resp, "A900", None, None)
    assert hd.tree_snapshot(httpd.archive) == before


def test_300_06_uid_missing_in_both(httpd):
    """SOP Instance UID absent from meta header and dataset: still a valid
    UID in the failed item."""
    ds = g.ct_dataset(rows=8, cols=8)
    del ds.SOPInstanceUID
    del ds.file_meta.MediaStorageSOPInstanceUID
    item = _only_failure(httpd, post(httpd, [hd.write_as_is(ds)]), "A900", None, None)
    assert hd.valid_uid(item["instance"])


INVALID_UIDS = {
    "dotdot": "../x",
    "slash": "1.2/../3",
    "65-chars": g.uid_of_length(65),
    "leading-zero": "1.02.3",
    "empty-component": "1..2",
    "absolute": "/tmp/x",
}


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("value", sorted(INVALID_UIDS))
def test_300_07_invalid_uid(httpd, attr, value):
    """A UID that is not a UID fails with A900 and names no file anywhere:
    nothing appears in the archive or next to it (its parent is the
    server root)."""
    uid = INVALID_UIDS[value]
    data, uids = g.with_values(**{attr: uid})   # SOPInstanceUID also in the meta header
    parent = httpd.archive.parent
    before_parent = hd.tree_snapshot(parent)
    outside = ["/tmp/x", "/tmp/x.dcm"]
    before_outside = [os.path.lexists(p) for p in outside]
    resp = post(httpd, [data])
    if attr == "SOPInstanceUID":
        # the failed item may echo the invalid UID (the client's own name
        # for the instance) or give a valid one
        _only_failure(httpd, resp, "A900", CT, None, strict_uids=False)
    else:
        _only_failure(httpd, resp, "A900", CT, uids["sop"])
    httpd.wait_spool_empty()
    assert hd.tree_snapshot(parent) == before_parent
    assert [os.path.lexists(p) for p in outside] == before_outside


@pytest.mark.parametrize("which", ["instance", "class"])
def test_300_08_meta_disagrees(httpd, which):
    if which == "instance":
        data, uids = g.with_meta(meta_sop_instance=g.uid(), rows=8, cols=8)
    else:
        data, uids = g.with_meta(meta_sop_class=MR, rows=8, cols=8)
    _only_failure(httpd, post(httpd, [data]), "A900", None, None)
    httpd.assert_not_stored(uids)


# --------------------------------------------------------------- 0122
@pytest.mark.parametrize("sop_class", [
    "1.2.3.4",                          # made up
    "1.2.840.10008.1.1",                # Verification: a real class, not storage
    "1.2.840.10008.5.1.4.1.2.2.1",      # Study Root Q/R FIND
])
def test_300_09_not_a_storage_class(httpd, sop_class):
    data, uids = g.ct_image(rows=8, cols=8, sop_class=sop_class)
    _only_failure(httpd, post(httpd, [data]), "0122", sop_class, uids["sop"])
    httpd.assert_not_stored(uids)


@pytest.mark.parametrize("accept", ["CTImageStorage", CT])
def test_300_10_accept_sop_class(make_httpd, accept):
    h = make_httpd(location_conf="StowRSAcceptSOPClass %s" % accept)
    ct, ct_uids = g.ct_image(rows=8, cols=8)
    mr, mr_uids = g.ct_image(rows=8, cols=8, sop_class=MR, Modality="MR")
    resp = post(h, [ct, mr])
    check_answer(h, resp, 202, stored=[ct_uids], failed=[("0122", MR, mr_uids["sop"])])
    h.assert_stored(ct, ct_uids)
    h.assert_not_stored(mr_uids)
    # MR alone: nothing stored -> 409
    mr2, mr2_uids = g.ct_image(rows=8, cols=8, sop_class=MR, Modality="MR")
    check_answer(h, post(h, [mr2]), 409, failed=[("0122", MR, mr2_uids["sop"])])


def test_300_11_accept_sop_class_list(make_httpd):
    """Several values: exactly those classes."""
    h = make_httpd(location_conf="StowRSAcceptSOPClass CTImageStorage %s" % BASIC_TEXT_SR)
    ct, ct_uids = g.ct_image(rows=8, cols=8)
    sr, sr_uids = g.sr_document()
    mr, mr_uids = g.ct_image(rows=8, cols=8, sop_class=MR)
    resp = post(h, [ct, sr, mr])
    check_answer(h, resp, 202, stored=[ct_uids, sr_uids],
                 failed=[("0122", MR, mr_uids["sop"])])


# --------------------------------------------------------------- C122
def test_300_12_deflated_image(httpd):
    """Deflated is an SR/other syntax in the specification's tables, not an
    image one."""
    data, uids = g.ct_image(rows=8, cols=8, transfer_syntax=DEFLATED)
    _only_failure(httpd, post(httpd, [data]), "C122", CT, uids["sop"])
    httpd.assert_not_stored(uids)


def test_300_13_unknown_transfer_syntax(httpd):
    """A made-up transfer syntax in the meta header: C122, named from the
    meta header."""
    data, uids = g.with_meta(meta_transfer_syntax="1.2.3.4.5", rows=8, cols=8)
    _only_failure(httpd, post(httpd, [data]), "C122", CT, uids["sop"])
    httpd.assert_not_stored(uids)


def test_300_14_big_endian_image(httpd):
    """Explicit VR Big Endian (retired) is in no default list."""
    data, uids = g.ct_image(rows=8, cols=8, transfer_syntax="1.2.840.10008.1.2.2")
    _only_failure(httpd, post(httpd, [data]), "C122", CT, uids["sop"])


@pytest.mark.parametrize("ts", [EXPLICIT, "LittleEndianExplicit"])
def test_300_15_accept_transfer_syntax(make_httpd, ts):
    """The directive replaces the image list only: Implicit VR images fail,
    Explicit VR images and an Implicit VR SR are stored."""
    h = make_httpd(location_conf="StowRSAcceptTransferSyntax image %s" % ts)
    imp, imp_uids = g.ct_image(rows=8, cols=8, transfer_syntax=IMPLICIT)
    exp, exp_uids = g.ct_image(rows=8, cols=8, transfer_syntax=EXPLICIT)
    sr, sr_uids = g.sr_document(transfer_syntax=IMPLICIT)
    resp = post(h, [imp, exp, sr])
    check_answer(h, resp, 202, stored=[exp_uids, sr_uids],
                 failed=[("C122", CT, imp_uids["sop"])])
    h.assert_stored(exp, exp_uids)
    h.assert_stored(sr, sr_uids)
    h.assert_not_stored(imp_uids)


@pytest.mark.parametrize("ts", [EXPLICIT, IMPLICIT, DEFLATED])
def test_300_16_basic_text_sr(httpd, ts):
    data, uids = g.sr_document(transfer_syntax=ts)
    check_answer(httpd, post(httpd, [data]), 200, stored=[uids])
    httpd.assert_stored(data, uids)


@pytest.mark.parametrize("param,logged", [
    ("1.2.840.10008.1.2", True),        # disagrees: logged, ignored
    ("1.2.840.10008.1.2.4.50", True),
    (EXPLICIT, False),                  # agrees: nothing to say
])
def test_300_17_transfer_syntax_parameter(httpd, param, logged):
    data, uids = g.ct_image(rows=8, cols=8, transfer_syntax=EXPLICIT)
    mark = httpd.mark()
    resp = post(httpd, [data], part_types=['application/dicom; transfer-syntax=%s' % param])
    check_answer(httpd, resp, 200, stored=[uids])
    httpd.assert_stored(data, uids)
    lines = [l for l in httpd.error_log_lines_since(mark)
             if "transfer-syntax" in l.lower() or "transfer syntax" in l.lower()]
    if logged:
        assert any("[stowrs:info]" in l and "part 1" in l for l in lines), \
            httpd.error_log_text_since(mark)
    else:
        assert not lines, lines


# --------------------------------------------------------------- 0110
@pytest.mark.parametrize("ctype", ["application/octet-stream", "text/plain", "image/jpeg"])
def test_300_18_part_not_application_dicom(httpd, ctype):
    """In a type=application/dicom request, a part of another type fails
    with 0110; the others are stored."""
    good, good_uids = g.ct_image(rows=8, cols=8)
    other, other_uids = g.ct_image(rows=8, cols=8, study=good_uids["study"])
    resp = post(httpd, [good, other], part_types=["application/dicom", ctype])
    check_answer(httpd, resp, 202, stored=[good_uids], failed=[("0110", None, None)])
    httpd.assert_stored(good, good_uids)
    httpd.assert_not_stored(other_uids)


def test_300_19_part_type_parameters_and_case(httpd):
    """application/dicom with parameters and in another case is still
    application/dicom."""
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8, study=ua["study"])
    resp = post(httpd, [a, b], part_types=["Application/DICOM",
                                           'application/dicom ; foo="bar"'])
    check_answer(httpd, resp, 200, stored=[ua, ub])


# --------------------------------------------------------------- mixed
@pytest.mark.parametrize("accept", [XML, JSON])
def test_300_20_mixed(httpd, accept):
    """Two good instances of one study and a bad one: 202, both sequences,
    the study's RetrieveURL."""
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8, study=ua["study"])
    bad = g.no_preamble(rows=8, cols=8)[0]
    resp = post(httpd, [a, bad, b], accept=accept)
    assert resp.header("Content-Type") == accept
    check_answer(httpd, resp, 202, stored=[ua, ub], failed=[("C499", UNKNOWN_CLASS, None)])
    httpd.assert_stored(a, ua)
    httpd.assert_stored(b, ub)


def test_300_21_two_studies_empty_retrieve_url(httpd):
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=8, cols=8)
    r = check_answer(httpd, post(httpd, [a, b], accept=JSON), 200, stored=[ua, ub])
    assert r["retrieve_url"] == ""


@pytest.mark.parametrize("accept", [XML, JSON])
def test_300_22_all_failed(httpd, accept):
    x, ux = g.ct_image(rows=8, cols=8, sop_class="1.2.3.4")
    y, uy = g.ct_image(rows=8, cols=8, transfer_syntax=DEFLATED)
    resp = post(httpd, [g.no_preamble()[0], x, y], accept=accept)
    r = check_answer(httpd, resp, 409, failed=[("C499", UNKNOWN_CLASS, None),
                                               ("0122", "1.2.3.4", ux["sop"]),
                                               ("C122", CT, uy["sop"])])
    assert "00081199" not in r["dataset"], "empty ReferencedSOPSequence present"
    assert r["retrieve_url"] == ""


@pytest.mark.parametrize("accept", [XML, JSON])
def test_300_23_failure_reason_decimal(httpd, accept):
    """FailureReason (US) is a number: 0xC499 is written 50329, never
    "C499" or "c499"."""
    bad_class, u1 = g.ct_image(rows=8, cols=8, sop_class="1.2.3.4")
    bad_ts, u2 = g.ct_image(rows=8, cols=8, transfer_syntax=DEFLATED)
    mismatch, u3 = g.with_meta(meta_sop_instance=g.uid(), rows=8, cols=8)
    other, u4 = g.ct_image(rows=8, cols=8)
    resp = post(httpd, [g.no_preamble()[0], bad_class, bad_ts, mismatch, other],
                accept=accept,
                part_types=["application/dicom"] * 4 + ["application/octet-stream"])
    check_answer(httpd, resp, 409, failed=[("C499", None, None), ("0122", None, None),
                                           ("C122", None, None), ("A900", None, None),
                                           ("0110", None, None)])
    assert sorted(hd.raw_failure_reasons(resp)) == sorted([50329, 290, 49442, 43264, 272])
    body = resp.body.decode()
    for hexcode in ("C499", "c499", "C122", "A900", "a900"):
        assert hexcode not in body


# --------------------------------------------------------------- bytes kept
def _dump2dcm(text, ts_flag="+te"):
    with tempfile.TemporaryDirectory() as d:
        src, dst = pathlib.Path(d, "in.dump"), pathlib.Path(d, "out.dcm")
        src.write_text(text)
        subprocess.run(["dump2dcm", "-q", ts_flag, str(src), str(dst)], check=True)
        return dst.read_bytes()


def _odd_dcmtk():
    """A dcmtk-written file with private tags, UN and odd-length OB values
    (padded), a group length, an undefined-length sequence with an empty
    item and a retired attribute."""
    study, series, sop = g.uid(), g.uid(), g.uid()
    text = """
(0008,0000) UL 0
(0008,0016) UI =CTImageStorage
(0008,0018) UI [%s]
(0008,0060) CS [CT]
(0009,0010) LO [ACME 1.0]
(0009,1001) UN 01\\02\\03
(0009,1002) OB 0a\\0b\\0c
(0009,1003) LO [odd]
(0010,0010) PN [ODD^NAME^X]
(0020,000d) UI [%s]
(0020,000e) UI [%s]
(0020,0030) DS [1\\2\\3]
(0040,0275) SQ (Sequence with undefined length #=2)
  (fffe,e000) na (Item with undefined length #=1)
    (0040,0007) LO [abc]
  (fffe,e00d) na (ItemDelimitationItem)
  (fffe,e000) na (Item with undefined length #=0)
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(7fe0,0010) OB 01\\02\\03\\04
""" % (sop, study, series)
    data = _dump2dcm(text)
    return data, {"study": study, "series": series, "sop": sop, "sop_class": CT}


def _odd_pydicom():
    """Private tags with odd-length values, nested sequences, an empty
    sequence, trailing padding item."""
    import warnings
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = g.ct_dataset(rows=3, cols=3)     # 18 bytes of pixel data
        ds.add_new(0x00190010, "LO", "VENDOR X")
        ds.add_new(0x00191001, "OB", b"\x01\x02\x03\x04\x05")
        ds.add_new(0x00191002, "SH", "abc")
        ds.add_new(0x00191003, "UN", b"\xff" * 7)
        inner = Dataset()
        inner.CodeValue = "A1"
        inner.CodingSchemeDesignator = "99X"
        inner.CodeMeaning = "odd"
        outer = Dataset()
        outer.ReferencedSOPClassUID = CT
        outer.ReferencedSOPInstanceUID = g.uid()
        outer.PurposeOfReferenceCodeSequence = Sequence([inner])
        ds.SourceImageSequence = Sequence([outer, Dataset()])
        ds.ReferencedStudySequence = Sequence([])
        ds.ImageComments = "x" * 1023
        uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
                "sop": ds.SOPInstanceUID, "sop_class": ds.SOPClassUID}
        return hd.write_as_is(ds), uids


def _dcmodified():
    """dcmodify adds a private block to an ordinary image."""
    data, uids = g.ct_image(rows=8, cols=8)
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d, "x.dcm")
        p.write_bytes(data)
        subprocess.run(["dcmodify", "-nb", "-q", "-i", "(0011,0010)=ACME",
                        "-i", "(0011,1001)=abc", "-i", "(0008,0080)=Odd Hospital",
                        str(p)], check=True)
        return p.read_bytes(), uids


@pytest.mark.parametrize("maker", ["dcmtk", "pydicom", "dcmodify", "implicit", "multiframe"])
def test_300_24_bytes_stored_as_received(httpd, maker):
    if maker == "dcmtk":
        data, uids = _odd_dcmtk()
    elif maker == "pydicom":
        data, uids = _odd_pydicom()
    elif maker == "dcmodify":
        data, uids = _dcmodified()
    elif maker == "implicit":
        data, uids = g.ct_image(rows=33, cols=17, transfer_syntax=IMPLICIT)
    else:
        data, uids = g.ct_image(rows=32, cols=32, frames=7)
    check_answer(httpd, post(httpd, [data]), 200, stored=[uids])
    path = httpd.assert_stored(data, uids)
    assert path.stat().st_size == len(data)


def test_300_25_dump2dcm_file_is_valid():
    """The odd dcmtk file reads back with dcmdump (so a failure of 300_24
    is the server's, not the test data's)."""
    data, _ = _odd_dcmtk()
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        r = subprocess.run(["dcmdump", "-q", f.name], capture_output=True, text=True)
    assert r.returncode == 0 and "ACME 1.0" in r.stdout, r.stderr
