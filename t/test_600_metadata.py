"""Metadata + bulk data requests, type="application/dicom+xml" (DESIGN.md
§3.4, issue 3): each application/dicom+xml part is one PS3.19 Native DICOM
Model object, its bulk data parts are found by Content-Location, and the
module builds a PS3.10 file from them that then passes every check of §3.3.

The core is the round trip: real instances made with pydicom (t/metagen.py)
are converted to metadata + bulk data, POSTed, and the stored file is read
back and compared with the original attribute by attribute (pixel data
byte for byte), its meta header checked, and dcmtk must read it without a
warning and dump the same data set.

Every answer is checked whole by helpers_dicom.check_answer.
"""

import hashlib
import os
import re
import time
import uuid

import pytest

import dicomgen as g
import helpers_dicom as hd
import metagen as mg
import mime
from helpers_dicom import CT, JSON, UNKNOWN_CLASS, XML, check_answer, file_state
from stowrs_env import LOCATION, STOW_PATH

EXPLICIT = mg.EXPLICIT


def _namer(h, **kw):
    return mg.BulkNamer(h.location_url, **kw)


def _xml(h, orig, **kw):
    return mg.to_xml(orig.ds, namer=_namer(h), **kw)


def _study_path(study):
    return "%s/%s" % (STOW_PATH, study)


# =============================================================== converters
@pytest.mark.parametrize("name", sorted(mg.ROUND_TRIP))
def test_600_00_converter_output_valid(name):
    """The converter's XML is a valid PS3.19 document (RELAX NG form of the
    standard's schema, items/values numbered from 1, tags ascending), and
    reading it back with its bulk parts gives the original data set (so a
    failed round trip below is the module's, not the converter's)."""
    orig = mg.ROUND_TRIP[name]()
    meta = mg.to_xml(orig.ds)
    mg.validate_xml(meta.body)
    back = mg.xml_to_dataset(meta.body, meta, orig.ts)
    assert mg.diff_datasets(orig.ds, back) == []
    # the bulk parts are what the contract asks for
    types = sorted({p.content_type for p in meta.bulk})
    want = {"ct": ["application/octet-stream"], "mr": ["application/octet-stream"],
            "multiframe-native": ["application/octet-stream"],
            "multiframe-jpeg": ["image/jpeg"], "pdf": ["application/pdf"],
            "cda": ["text/xml"], "sr": []}[name]
    assert types == want
    if name == "multiframe-jpeg":
        frames = [p.data for p in meta.bulk]
        assert len(frames) == 3 and len({p.location for p in meta.bulk}) == 1
        assert all(f.startswith(b"\xff\xd8") and f.endswith(b"\xff\xd9") for f in frames)
    if name == "pdf":
        assert meta.bulk[0].data.startswith(b"%PDF-1.4")


@pytest.mark.parametrize("maker", [mg.small_sc8, mg.basic_text_sr, mg.encapsulated_pdf])
def test_600_00_dcm2xml_output_valid(maker):
    """dcm2xml's Native DICOM Model (inline binary) is valid too, apart from
    the xml:space attribute it puts on the root, and reads back to the
    original."""
    orig = maker()
    meta = mg.dcm2xml(orig.data)
    mg.validate_xml(meta.body, allow_xml_space=True)
    assert mg.diff_datasets(orig.ds, mg.xml_to_dataset(meta.body, meta)) == []


# =============================================================== round trip
@pytest.mark.parametrize("name", sorted(mg.ROUND_TRIP))
@pytest.mark.parametrize("accept", [XML, JSON])
def test_600_01_round_trip(httpd, name, accept):
    """POST metadata + bulk data of a real instance; the stored file equals
    the original attribute by attribute, pixel data and documents byte for
    byte, with the expected transfer syntax and meta header UIDs."""
    orig = mg.ROUND_TRIP[name]()
    meta = _xml(httpd, orig)
    resp = mg.post_xml(httpd, [meta], accept=accept)
    assert resp.header("Content-Type") == accept, resp
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


@pytest.mark.parametrize("maker", [mg.small_sc8, mg.basic_text_sr, mg.encapsulated_pdf])
def test_600_02_round_trip_dcm2xml(httpd, maker):
    """dcmtk's own Native DICOM Model output (dcm2xml -nat +Eb: all binary
    values inline, ISO-8859-1 encoded document for ISO_IR 100 data, an
    xml:space attribute on the root) is stored as the original."""
    orig = maker()
    meta = mg.dcm2xml(orig.data)
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


def test_600_03_all_in_one_request(httpd):
    """All round-trip instances of one study in one request, each metadata
    part followed by its bulk parts: 200, the study's RetrieveURL, every
    file equal to its original."""
    study = g.uid()
    origs = [mg.ROUND_TRIP[n](study=study) for n in sorted(mg.ROUND_TRIP)]
    metas = [_xml(httpd, o) for o in origs]
    resp = mg.post_xml(httpd, metas)
    r = check_answer(httpd, resp, 200, stored=[o.uids for o in origs])
    assert r["retrieve_url"] == "%s/studies/%s" % (httpd.location_url, study)
    for o in origs:
        mg.assert_roundtrip(httpd, o)


def test_600_04_chunk_split_invariant(httpd):
    """The same request sent in 7-byte and 4096-byte chunks gives the same
    stored file."""
    for chunk in (7, 4096):
        orig = mg.multiframe_jpeg()
        meta = _xml(httpd, orig)
        body = mime.multipart_body(mg.xml_parts([meta]))
        resp = mime.stow(httpd.port, body, root=XML, chunk_size=chunk)
        check_answer(httpd, resp, 200, stored=[orig.uids])
        mg.assert_roundtrip(httpd, orig)


def test_600_05_part_type_parameters(httpd):
    """A metadata part typed 'application/dicom+xml; charset=utf-8' is
    still metadata."""
    orig = mg.small_ct()
    meta = _xml(httpd, orig)
    parts = [({"Content-Type": "application/dicom+xml; charset=utf-8"}, meta.body)] + \
        [p.part() for p in meta.bulk]
    resp = mime.stow(httpd.port, mime.multipart_body(parts), root=XML)
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


# =============================================================== media types
ENCAPSULATED_CASES = [
    # (content type of the frames, SOP class, transfer syntax expected)
    ("image/jpeg", mg.MF_TRUE_COLOR_SC, "1.2.840.10008.1.2.4.50"),
    ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51", mg.MF_TRUE_COLOR_SC,
     "1.2.840.10008.1.2.4.51"),
    ("image/jpeg;transfer-syntax=1.2.840.10008.1.2.4.70", mg.MF_TRUE_COLOR_SC,
     "1.2.840.10008.1.2.4.70"),
    ('image/jpeg; transfer-syntax="1.2.840.10008.1.2.4.57"', mg.MF_TRUE_COLOR_SC,
     "1.2.840.10008.1.2.4.57"),
    ("image/jls", mg.MF_TRUE_COLOR_SC, "1.2.840.10008.1.2.4.80"),
    ("image/jls; transfer-syntax=1.2.840.10008.1.2.4.81", mg.MF_TRUE_COLOR_SC,
     "1.2.840.10008.1.2.4.81"),
    ("image/jp2", mg.MF_TRUE_COLOR_SC, "1.2.840.10008.1.2.4.90"),
    ("image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91", mg.MF_TRUE_COLOR_SC,
     "1.2.840.10008.1.2.4.91"),
    ("image/dicom-rle", mg.MF_TRUE_COLOR_SC, "1.2.840.10008.1.2.5"),
    ("Image/JPEG", mg.MF_TRUE_COLOR_SC, "1.2.840.10008.1.2.4.50"),
    ("image/jpeg", mg.VIDEO_ENDOSCOPIC, "1.2.840.10008.1.2.4.50"),
    ("video/mpeg", mg.VIDEO_PHOTOGRAPHIC, "1.2.840.10008.1.2.4.100"),
    ("video/mp4", mg.VIDEO_PHOTOGRAPHIC, "1.2.840.10008.1.2.4.102"),
    ("video/mp4; transfer-syntax=1.2.840.10008.1.2.4.103", mg.VIDEO_PHOTOGRAPHIC,
     "1.2.840.10008.1.2.4.103"),
    ("video/H265", mg.VIDEO_PHOTOGRAPHIC, "1.2.840.10008.1.2.4.107"),
]


def _check_fragments(h, orig, ts, frames, video=False):
    """Stored with transfer syntax @ts, one fragment per frame (odd ones
    padded), the basic offset table pointing at each (for a single video
    stream an empty table is allowed too)."""
    # video: the basic offset table is checked below (it may be empty)
    mg.assert_roundtrip(h, orig, ts=ts, dump=not video,
                        skip={mg.PIXEL_DATA} if video else ())
    st = mg.read_stored(mg.stored_path(h, orig.uids))
    offsets, fragments = mg.split_encapsulated(st.PixelData)
    want = [f + (b"\0" if len(f) % 2 else b"") for f in frames]
    assert fragments == want, "fragments %s, expected %s" % (
        [len(f) for f in fragments], [len(f) for f in want])
    if video and len(frames) == 1:
        assert offsets in ([], [0]), offsets
    else:
        assert offsets == mg.expected_offsets(want), offsets


def _case_id(c):
    ctype, sop_class, ts = c
    kind = "video" if sop_class.startswith("1.2.840.10008.5.1.4.1.1.77") else "sc"
    return "%s-%s-%s" % (ctype.split(";")[0].replace("/", "_"), kind,
                         ts[len("1.2.840.10008."):])


@pytest.mark.parametrize("ctype,sop_class,ts", ENCAPSULATED_CASES,
                         ids=[_case_id(c) for c in ENCAPSULATED_CASES])
def test_600_06_media_type_transfer_syntax(httpd, ctype, sop_class, ts):
    """The frames' media type and transfer-syntax parameter decide the
    transfer syntax (issue 3, item 3)."""
    video = ctype.startswith("video/")
    frames = [b"\x00\x00\x01\xb3" + os.urandom(3000)] if video else \
        [mg.jpeg_frame(600), mg.jpeg_frame(800)]
    orig = mg.multiframe_encapsulated(frames, transfer_syntax=ts, sop_class=sop_class)
    meta = mg.set_pixel_type(_xml(httpd, orig), ctype)
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    _check_fragments(httpd, orig, ts, frames, video=video)


def test_600_07_odd_length_frames_padded(httpd):
    """Frames of odd length (a JPEG codestream may have any length) become
    even fragments, padded with one zero byte."""
    frames = [mg.jpeg_frame(701), mg.jpeg_frame(999), mg.jpeg_frame(1000)]
    orig = mg.multiframe_encapsulated(frames)
    meta = _xml(httpd, orig)
    for p, f in zip(meta.bulk, frames):
        p.data = f                  # what the codec produced, unpadded
    assert [len(p.data) % 2 for p in meta.bulk] == [1, 1, 0]
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    _check_fragments(httpd, orig, mg.JPEG_BASELINE, frames)


def test_600_08_jpx_not_accepted_by_default(httpd):
    """image/jpx means JPEG 2000 Part 2 (…4.92), which is in no default
    list: C122 (the §3.3 checks apply to the built file)."""
    frames = [mg.jpeg_frame(600)]
    orig = mg.multiframe_encapsulated(frames, transfer_syntax="1.2.840.10008.1.2.4.92")
    meta = mg.set_pixel_type(_xml(httpd, orig), "image/jpx")
    resp = mg.post_xml(httpd, [meta])
    check_answer(httpd, resp, 409, failed=[("C122", orig.uids["sop_class"], orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


def test_600_09_jpx_accepted_when_listed(make_httpd):
    h = make_httpd(location_conf="StowRSAcceptTransferSyntax image 1.2.840.10008.1.2.1 "
                                 "1.2.840.10008.1.2.4.92")
    frames = [mg.jpeg_frame(600), mg.jpeg_frame(602)]
    orig = mg.multiframe_encapsulated(frames, transfer_syntax="1.2.840.10008.1.2.4.92")
    meta = mg.set_pixel_type(_xml(h, orig), "image/jpx")
    check_answer(h, mg.post_xml(h, [meta]), 200, stored=[orig.uids])
    _check_fragments(h, orig, "1.2.840.10008.1.2.4.92", frames)


@pytest.mark.parametrize("ctype", [
    "image/png",
    "image/gif",
    "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.80",   # a JPEG-LS syntax under image/jpeg
    "image/jpeg; transfer-syntax=1.2.840.10008.1.2.1",      # not an encapsulated syntax
    "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.50",
    "video/mpeg",                                           # video syntax, image SOP class
])
def test_600_10_media_type_cannot_encapsulate(httpd, ctype):
    """A media type (or transfer-syntax parameter) the module cannot
    encapsulate for this instance fails with C122, named by the
    instance's UIDs; the other instance of the request is stored (202)."""
    frames = [mg.jpeg_frame(600)]
    orig = mg.multiframe_encapsulated(frames)
    bad = mg.set_pixel_type(_xml(httpd, orig), ctype)
    good = mg.small_ct()
    resp = mg.post_xml(httpd, [bad, _xml(httpd, good)])
    check_answer(httpd, resp, 202, stored=[good.uids],
                 failed=[("C122", orig.uids["sop_class"], orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)
    mg.assert_roundtrip(httpd, good)


# =============================================================== frames
def test_600_11_native_frames_share_a_location(httpd):
    """Two octet-stream parts with one Content-Location are the two frames
    of one native Pixel Data value, in the order they arrived."""
    orig = mg.multiframe_native(frames=2, rows=32, cols=32)
    meta = mg.to_xml(orig.ds, namer=_namer(httpd), split_native=True)
    assert len(meta.bulk) == 2 and meta.bulk[0].location == meta.bulk[1].location
    assert meta.bulk[0].data != meta.bulk[1].data
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


def test_600_12_compressed_frames_share_a_location(httpd):
    """Three image/jls parts with one Content-Location: three fragments in
    arrival order, each with its basic offset table entry."""
    frames = [mg.jpeg_frame(1200), mg.jpeg_frame(400), mg.jpeg_frame(2000)]
    orig = mg.multiframe_encapsulated(frames, transfer_syntax="1.2.840.10008.1.2.4.80")
    meta = _xml(httpd, orig)
    assert [p.content_type for p in meta.bulk] == ["image/jls"] * 3
    assert len({p.location for p in meta.bulk}) == 1
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    _check_fragments(httpd, orig, "1.2.840.10008.1.2.4.80", frames)


# =============================================================== URI matching
def _uri_cases():
    loc = LOCATION
    return {
        # id: (uri in the metadata, Content-Location), {n} = a number, {t} = token,
        # {base} = http://127.0.0.1:PORT
        "relative-vs-absolute": ("bulk/{t}/1", "{base}%s/bulk/{t}/1" % loc),
        "absolute-vs-relative": ("{base}%s/bulk/{t}/1" % loc, "bulk/{t}/1"),
        "path-vs-absolute": ("%s/bulk/{t}/1" % loc, "{base}%s/bulk/{t}/1" % loc),
        "absolute-vs-path": ("{base}%s/bulk/{t}/1" % loc, "%s/bulk/{t}/1" % loc),
        "relative-vs-path": ("bulk/{t}/1", "%s/bulk/{t}/1" % loc),
        "dotdot-vs-relative": ("../rs/bulk/{t}/1", "bulk/{t}/1"),
        "both-relative": ("bulk/{t}/1", "bulk/{t}/1"),
        "urn-exact": ("urn:uuid:{uuid}", "urn:uuid:{uuid}"),
        "query-exact": ("{base}%s/bulk?id={t}" % loc, "{base}%s/bulk?id={t}" % loc),
        "query-relative": ("bulk?id={t}", "{base}%s/bulk?id={t}" % loc),
    }


def _namer_for(h, uri_fmt, loc_fmt):
    def fmt(s, n, t):
        u = str(uuid.uuid5(uuid.NAMESPACE_URL, "%s-%d" % (t, n)))
        return s.replace("{base}", h.base_url).replace("{t}", "%s-%d" % (t, n)) \
            .replace("{uuid}", u)
    return mg.BulkNamer(h.location_url, uri=lambda n, t: fmt(uri_fmt, n, t),
                        location=lambda n, t: fmt(loc_fmt, n, t))


@pytest.mark.parametrize("case", sorted(_uri_cases()))
def test_600_13_bulk_uri_matching(httpd, case):
    """A BulkData uri and a Content-Location match exactly, and also when
    one is relative to the request URL (…/rs/studies) and the other
    absolute or path-absolute (issue 3, item 1)."""
    uri_fmt, loc_fmt = _uri_cases()[case]
    orig = mg.ct_512()          # two bulk values: pixel data and a private OW
    meta = mg.to_xml(orig.ds, namer=_namer_for(httpd, uri_fmt, loc_fmt))
    assert len(meta.bulk) == 2
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


def test_600_14_relative_uri_against_study_url(httpd):
    """POSTed to …/studies/{uid}, "bulk/1" resolves to …/studies/bulk/1
    (RFC 3986: the last segment of the base is replaced): it matches that
    absolute Content-Location, and not …/rs/bulk/1."""
    study = g.uid()
    orig = mg.small_ct(study=study)
    good = _namer_for(httpd, "bulk/{t}", "{base}%s/studies/bulk/{t}" % LOCATION)
    resp = mg.post_xml(httpd, [mg.to_xml(orig.ds, namer=good)], path=_study_path(study))
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)
    other = mg.small_ct(study=study)
    bad = _namer_for(httpd, "bulk/{t}", "{base}%s/bulk/{t}" % LOCATION)
    mark = httpd.mark()
    resp = mg.post_xml(httpd, [mg.to_xml(other.ds, namer=bad)], path=_study_path(study))
    check_answer(httpd, resp, 409, failed=[("A922", other.uids["sop_class"],
                                            other.uids["sop"])])
    httpd.assert_not_stored(other.uids)
    assert httpd.wait_log("STOWRS0205", since=mark), httpd.error_log_text_since(mark)


@pytest.mark.parametrize("how", ["no-part", "other-location", "case-differs"])
def test_600_15_bulk_part_missing(httpd, how):
    """A BulkData uri with no matching part: A922 (43298) for that
    instance, named by its UIDs; the other instance is stored (202)."""
    orig = mg.small_ct()
    meta = _xml(httpd, orig)
    if how == "no-part":
        meta.bulk = []
    elif how == "other-location":
        meta.bulk[0].location += "0"
    else:
        meta.bulk[0].location = meta.bulk[0].location.replace("/bulk/", "/BULK/")
    good = mg.small_ct()
    mark = httpd.mark()
    resp = mg.post_xml(httpd, [meta, _xml(httpd, good)])
    check_answer(httpd, resp, 202, stored=[good.uids],
                 failed=[("A922", orig.uids["sop_class"], orig.uids["sop"])])
    assert 43298 in hd.raw_failure_reasons(resp)
    httpd.assert_not_stored(orig.uids)
    mg.assert_roundtrip(httpd, good)
    if how != "no-part":   # the stray part is reported as unreferenced
        assert httpd.wait_log("STOWRS0205", since=mark), httpd.error_log_text_since(mark)


@pytest.mark.expect_log("STOWRS0205")
def test_600_16_unreferenced_bulk_part(httpd):
    """A bulk part nothing references is logged (INFO, STOWRS0205) and
    ignored: the instance is stored as if it were not there."""
    orig = mg.small_ct()
    meta = _xml(httpd, orig)
    meta.bulk.append(mg.BulkPart(httpd.location_url + "/bulk/nobody/1", mg.OCTET,
                                 os.urandom(5000)))
    mark = httpd.mark()
    resp = mg.post_xml(httpd, [meta])
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)
    lines = httpd.wait_log("STOWRS0205", since=mark)
    assert len(lines) == 1, httpd.error_log_text_since(mark)
    assert "[stowrs:info]" in lines[0], lines[0]


# =============================================================== A900
@pytest.mark.parametrize("attr", ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel",
                                  "PhotometricInterpretation"])
def test_600_17_pixel_data_without_image_attributes(httpd, attr):
    """Native pixel data needs Rows, Columns, Bits Allocated, Samples per
    Pixel and Photometric Interpretation: without one, A900 for the
    instance (named by its UIDs); the other instance is stored."""
    orig = mg.small_ct()
    meta = mg.xml_without(_xml(httpd, orig), attr)
    good = mg.small_ct()
    resp = mg.post_xml(httpd, [meta, _xml(httpd, good)])
    check_answer(httpd, resp, 202, stored=[good.uids],
                 failed=[("A900", orig.uids["sop_class"], orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                  "SOPClassUID"])
def test_600_18_uid_missing(httpd, attr):
    """The §3.3 UID check applies to the built instance: a missing UID is
    A900 (a failed item still carries valid UIDs)."""
    orig = mg.small_ct()
    meta = mg.xml_without(_xml(httpd, orig), attr)
    resp = mg.post_xml(httpd, [meta])
    if attr in ("StudyInstanceUID", "SeriesInstanceUID"):
        check_answer(httpd, resp, 409, failed=[("A900", CT, orig.uids["sop"])])
    else:
        check_answer(httpd, resp, 409, failed=[("A900", None, None)])
    httpd.assert_not_stored(orig.uids)


@pytest.mark.parametrize("value", ["1..2", "../../x", "1.02.3"])
def test_600_19_invalid_uid(httpd, value):
    """An invalid Study Instance UID in the metadata: A900, nothing below
    the archive's parent changes."""
    orig = mg.small_ct()
    meta = mg.xml_set_value(_xml(httpd, orig), "StudyInstanceUID", value)
    before = hd.tree_snapshot(httpd.archive.parent)
    resp = mg.post_xml(httpd, [meta])
    check_answer(httpd, resp, 409, failed=[("A900", CT, orig.uids["sop"])])
    httpd.wait_spool_empty()
    assert hd.tree_snapshot(httpd.archive.parent) == before


# =============================================================== C000
def _altered(h, orig, change):
    """The object's metadata changed by @change (a function of the text),
    with its bulk parts, as multipart parts."""
    meta = _xml(h, orig)
    text = meta.body.decode("utf-8")
    new = change(text)
    assert new != text, "the change did not apply"
    body = new.encode("utf-8", errors="surrogateescape")
    return [({"Content-Type": XML}, body)] + [p.part() for p in meta.bulk]


MALFORMED = {
    "not-xml": lambda d: "hello, this is not XML",
    "empty": lambda d: "",
    "truncated": lambda d: d[:len(d) // 2],
    "mismatched-tag": lambda d: d.replace("</NativeDicomModel>", "</NativeDicomModelX>"),
    "two-roots": lambda d: d + "<NativeDicomModel/>",
    "bad-utf8": lambda d: d.replace("SECRETID4711", "SECRET\udcff"),
    "unescaped-amp": lambda d: d.replace("SECRETID4711", "A & B"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_600_20_not_well_formed(httpd, kind):
    """Metadata that is not well-formed XML fails with C000 (49152) for
    that object only; its UIDs cannot be trusted, so the item carries
    valid UIDs (the placeholder class when none could be read)."""
    orig = mg.small_ct()
    parts = _altered(httpd, orig, MALFORMED[kind])
    resp = mg.post_parts(httpd, parts, XML)
    r = check_answer(httpd, resp, 409, failed=[("C000", None, None)])
    assert 49152 in hd.raw_failure_reasons(resp)
    if kind in ("not-xml", "empty"):
        assert r["failed"][0]["class"] == UNKNOWN_CLASS, r["failed"]
    httpd.assert_not_stored(orig.uids)


NOT_MODEL = {
    "root-name": lambda d: d.replace("NativeDicomModel", "NativeDicomModelX"),
    "root-namespace": lambda d: d.replace(mg.NS, "http://example.com/other"),
    "tag-not-hex": lambda d: d.replace('tag="00100020"', 'tag="0010002G"'),
    "tag-missing": lambda d: d.replace('tag="00100020" ', ''),
    "vr-unknown": lambda d: d.replace('vr="LO" keyword="PatientID"',
                                      'vr="XX" keyword="PatientID"'),
    "unknown-element": lambda d: d.replace("<Value number=\"1\">SECRETID4711</Value>",
                                           "<Valeur number=\"1\">SECRETID4711</Valeur>"),
    "us-not-a-number": lambda d: d.replace('keyword="Rows"><Value number="1">16<',
                                           'keyword="Rows"><Value number="1">sixteen<'),
    "inline-not-base64": lambda d: re.sub(r"<BulkData uri=\"[^\"]*\"/>",
                                          "<InlineBinary>!!!*</InlineBinary>", d),
    "sq-with-value": lambda d: d.replace(
        '<DicomAttribute tag="00100010"',
        '<DicomAttribute tag="00082112" vr="SQ" keyword="SourceImageSequence">'
        '<Value number="1">x</Value></DicomAttribute><DicomAttribute tag="00100010"'),
}


@pytest.mark.parametrize("kind", sorted(NOT_MODEL))
def test_600_21_not_native_dicom_model(httpd, kind):
    """Well-formed XML that is not a Native DICOM Model object: C000 for
    that object; the object before and after it in the request are stored
    (202)."""
    orig = mg.small_ct()
    bad = _altered(httpd, orig, NOT_MODEL[kind])
    from lxml import etree
    etree.fromstring(bad[0][1])                     # still well-formed
    a, b = mg.small_ct(), mg.small_ct()
    parts = mg.xml_parts([_xml(httpd, a)]) + bad + mg.xml_parts([_xml(httpd, b)])
    resp = mg.post_parts(httpd, parts, XML)
    check_answer(httpd, resp, 202, stored=[a.uids, b.uids], failed=[("C000", None, None)])
    httpd.assert_not_stored(orig.uids)
    mg.assert_roundtrip(httpd, a)
    mg.assert_roundtrip(httpd, b)


@pytest.mark.parametrize("accept", [XML, JSON])
def test_600_22_second_of_three_malformed(httpd, accept):
    """Three objects, the second not well-formed: 202, the first and third
    stored (with their bulk data), one C000 item."""
    study = g.uid()
    objs = [mg.ct_512(study=study), mg.small_ct(study=study), mg.multiframe_jpeg(study=study)]
    metas = [_xml(httpd, o) for o in objs]
    metas[1].body = metas[1].body[:-40]             # cut inside the last element
    resp = mg.post_xml(httpd, metas, accept=accept)
    r = check_answer(httpd, resp, 202, stored=[objs[0].uids, objs[2].uids],
                     failed=[("C000", None, None)])
    assert r["retrieve_url"] == "%s/studies/%s" % (httpd.location_url, study)
    mg.assert_roundtrip(httpd, objs[0])
    mg.assert_roundtrip(httpd, objs[2])
    httpd.assert_not_stored(objs[1].uids)


DOCTYPES = {
    "internal-entity": ('<!DOCTYPE NativeDicomModel [<!ENTITY pn "ENTITYEXPANDED">]>',
                        "&pn;"),
    "external-entity": ('<!DOCTYPE NativeDicomModel [<!ENTITY pn SYSTEM '
                        '"file:///etc/hostname">]>', "&pn;"),
    "parameter-entity": ('<!DOCTYPE NativeDicomModel [<!ENTITY % p SYSTEM '
                         '"http://127.0.0.1:9/x.dtd"> %p;]>', "PLAIN"),
    "billion-laughs": ('<!DOCTYPE NativeDicomModel [<!ENTITY a "aaaaaaaaaa">'
                       + "".join('<!ENTITY %s "%s">' % (chr(98 + i), ("&%s;" % chr(97 + i)) * 10)
                                 for i in range(8))
                       + ']>', "&i;"),
    "doctype-only": ('<!DOCTYPE NativeDicomModel SYSTEM "native.dtd">', "PLAIN"),
}


@pytest.mark.parametrize("kind", sorted(DOCTYPES))
def test_600_23_doctype_refused(httpd, kind):
    """A DOCTYPE (entities, external subsets) is refused with C000 before
    anything expands: nothing stored, a quick answer, and no expanded text
    anywhere (answer, log, archive)."""
    orig = mg.small_ct()
    doctype, ref = DOCTYPES[kind]

    def change(text):
        text = text.replace("<FamilyName>SECRET</FamilyName><GivenName>PATIENT</GivenName>",
                            "<FamilyName>%s</FamilyName>" % ref)
        assert ref in text
        decl, rest = text.split("?>", 1)
        return decl + "?>" + doctype + rest
    parts = _altered(httpd, orig, change)
    mark = httpd.mark()
    t0 = time.monotonic()
    resp = mg.post_parts(httpd, parts, XML)
    assert time.monotonic() - t0 < 10
    check_answer(httpd, resp, 409, failed=[("C000", None, None)])
    httpd.assert_not_stored(orig.uids)
    assert b"ENTITYEXPANDED" not in resp.body and b"aaaaaaaaaa" not in resp.body
    log = httpd.error_log_text_since(mark)
    assert "ENTITYEXPANDED" not in log and "aaaaaaaaaa" not in log


# =============================================================== §3.3 on the built file
@pytest.mark.parametrize("accept", [XML, JSON])
def test_600_24_study_in_path(httpd, accept):
    """POST to /studies/{uid}: an object of another study fails with C409,
    one of that study is stored (202)."""
    study = g.uid()
    same = mg.small_ct(study=study)
    other = mg.multiframe_jpeg()
    resp = mg.post_xml(httpd, [_xml(httpd, other), _xml(httpd, same)],
                       path=_study_path(study), accept=accept)
    check_answer(httpd, resp, 202, stored=[same.uids],
                 failed=[("C409", other.uids["sop_class"], other.uids["sop"])])
    httpd.assert_not_stored(other.uids)
    mg.assert_roundtrip(httpd, same)
    # the other study alone: 409
    resp = mg.post_xml(httpd, [_xml(httpd, other)], path=_study_path(g.uid()))
    check_answer(httpd, resp, 409, failed=[("C409", other.uids["sop_class"],
                                            other.uids["sop"])])


def test_600_25_sop_class_not_accepted(httpd):
    orig = mg.small_ct(sop_class="1.2.3.4")
    resp = mg.post_xml(httpd, [_xml(httpd, orig)])
    check_answer(httpd, resp, 409, failed=[("0122", "1.2.3.4", orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


def test_600_26_accept_sop_class(make_httpd):
    h = make_httpd(location_conf="StowRSAcceptSOPClass CTImageStorage")
    ct, sr = mg.small_ct(), mg.basic_text_sr()
    resp = mg.post_xml(h, [_xml(h, sr), _xml(h, ct)])
    check_answer(h, resp, 202, stored=[ct.uids],
                 failed=[("0122", mg.BASIC_TEXT_SR, sr.uids["sop"])])
    mg.assert_roundtrip(h, ct)


def test_600_27_transfer_syntax_not_accepted(make_httpd):
    """Native pixel data is built as Explicit VR LE: with only Implicit VR
    LE accepted for images, C122; an SR (another category) is stored."""
    h = make_httpd(location_conf="StowRSAcceptTransferSyntax image 1.2.840.10008.1.2")
    ct, sr = mg.small_ct(), mg.basic_text_sr()
    resp = mg.post_xml(h, [_xml(h, ct), _xml(h, sr)])
    check_answer(h, resp, 202, stored=[sr.uids], failed=[("C122", CT, ct.uids["sop"])])
    h.assert_not_stored(ct.uids)


def test_600_28_duplicate_never(httpd):
    """The same object again (default policy Never): 200, the stored file
    untouched."""
    orig = mg.small_ct()
    check_answer(httpd, mg.post_xml(httpd, [_xml(httpd, orig)]), 200, stored=[orig.uids])
    path = mg.assert_roundtrip(httpd, orig)
    st = file_state(path)
    check_answer(httpd, mg.post_xml(httpd, [_xml(httpd, orig)]), 200, stored=[orig.uids])
    assert file_state(path) == st


def test_600_29_same_instance_other_study(httpd):
    """The same SOP Instance UID in another study: A77B."""
    orig = mg.small_ct()
    check_answer(httpd, mg.post_xml(httpd, [_xml(httpd, orig)]), 200, stored=[orig.uids])
    moved = mg.small_ct(sop=orig.uids["sop"], series=orig.uids["series"])
    resp = mg.post_xml(httpd, [_xml(httpd, moved)])
    check_answer(httpd, resp, 409, failed=[("A77B", CT, orig.uids["sop"])])
    httpd.assert_not_stored(moved.uids)
    mg.assert_roundtrip(httpd, orig)


# =============================================================== encapsulated documents
def test_600_30_odd_length_pdf(httpd):
    """A PDF of odd length becomes an even EncapsulatedDocument value padded
    with one byte; EncapsulatedDocumentLength keeps the real length."""
    orig = mg.encapsulated_pdf(size=3001)
    assert orig.ds.EncapsulatedDocumentLength == 3001
    meta = _xml(httpd, orig)
    assert len(meta.bulk) == 1 and len(meta.bulk[0].data) == 3001
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)
    st = mg.read_stored(mg.stored_path(httpd, orig.uids))
    assert len(st.EncapsulatedDocument) == 3002
    assert st.EncapsulatedDocument[:3001] == meta.bulk[0].data


def test_600_31_latin1_character_set(httpd):
    """Metadata is Unicode; an instance that declares ISO_IR 100 must read
    back with the same text: either its values are encoded in Latin-1, or
    the file declares UTF-8 (ISO_IR 192). Everything else is unchanged."""
    orig = mg.small_ct(PatientName="Müller^Jürgen", StudyDescription="Kopfübersicht ß")
    assert orig.ds.SpecificCharacterSet == "ISO_IR 100"
    check_answer(httpd, mg.post_xml(httpd, [_xml(httpd, orig)]), 200, stored=[orig.uids])
    path = mg.stored_path(httpd, orig.uids)
    st = mg.read_stored(path)
    assert str(st.PatientName) == "Müller^Jürgen"
    assert st.StudyDescription == "Kopfübersicht ß"
    assert st.SpecificCharacterSet in ("ISO_IR 100", "ISO_IR 192")
    probs = mg.check_stored_file(path, orig)
    probs = [p for p in probs if not p.startswith("(0008,0005)")]
    assert not probs, probs


# =============================================================== large
def _pattern_stream(length, chunk=1 << 20):
    """@length generated bytes in chunks, and a sha256 filled as they go."""
    h = hashlib.sha256()
    pattern = os.urandom(chunk + 4096)
    mv = memoryview(pattern)

    def gen():
        left, i = length, 0
        while left:
            n = min(chunk, left)
            off = (i * 4093) % 4096
            piece = bytes(mv[off:off + n])
            h.update(piece)
            left -= n
            i += 1
            yield piece
    return h, gen()


def test_600_32_large_native_streamed(httpd):
    """200 MiB of native pixel data (100 frames of 1024x1024x16) sent as
    one octet-stream part with chunked transfer encoding, the body built
    lazily: stored with the pixel data byte-identical and the rest equal."""
    frames, rows, cols = 100, 1024, 1024
    length = frames * rows * cols * 2
    ds = g.ct_dataset(rows=rows, cols=cols, frames=frames, pixel_bytes=b"\0\0",
                      sop_class=mg.MF_GRAY_WORD_SC)
    ds.file_meta.MediaStorageSOPClassUID = mg.MF_GRAY_WORD_SC
    meta = mg.to_xml(ds, namer=_namer(httpd))
    assert len(meta.bulk) == 1
    sha, gen = _pattern_stream(length)
    bulk = meta.bulk[0]
    parts = [({"Content-Type": XML}, meta.body),
             ({"Content-Type": mg.OCTET, "Content-Location": bulk.location}, gen, length)]
    total, body = mime.multipart_stream(parts)
    resp = mime.stow(httpd.port, body, root=XML, timeout=300)
    uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
            "sop": ds.SOPInstanceUID, "sop_class": mg.MF_GRAY_WORD_SC}
    check_answer(httpd, resp, 200, stored=[uids])
    path = mg.stored_path(httpd, uids)
    size = path.stat().st_size
    # Pixel Data is the last element: OW with a 32-bit length, then the values
    with open(path, "rb") as f:
        f.seek(size - length - 12)
        head = f.read(12)
        assert head == b"\xe0\x7f\x10\x00OW\0\0" + length.to_bytes(4, "little"), head
        got = hashlib.sha256()
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            got.update(b)
    assert got.hexdigest() == sha.hexdigest(), "pixel data differs"
    import pydicom
    st = pydicom.dcmread(str(path), stop_before_pixels=True)
    assert mg.diff_datasets(ds, st, skip={mg.PIXEL_DATA}) == []
    assert mg.check_meta_header(path, mg.MF_GRAY_WORD_SC, uids["sop"], EXPLICIT) == []
    path.unlink()


# =============================================================== XML forms
_NAMES = ("NativeDicomModel|DicomAttribute|Value|PersonName|Alphabetic|Ideographic|"
          "Phonetic|FamilyName|GivenName|MiddleName|NamePrefix|NameSuffix|Item|BulkData|"
          "InlineBinary")


def _prefixed(text):
    text = re.sub(r"<(/?)(%s)\b" % _NAMES, r"<\1d:\2", text)
    return text.replace('xmlns="%s"' % mg.NS, 'xmlns:d="%s"' % mg.NS)


XML_FORMS = {
    # the same document written differently, all well-formed XML
    "pretty-with-comments": lambda m: mg.to_xml(m.ds, namer=m.namer, pretty=True).body
    .decode().replace("<DicomAttribute", "<!-- a comment -->\n  <DicomAttribute", 3)
    .replace("</NativeDicomModel>", "<!-- end --></NativeDicomModel>").encode(),
    "crlf-line-ends": lambda m: mg.to_xml(m.ds, namer=m.namer, pretty=True).body
    .replace(b"\n", b"\r\n"),
    "prefixed-namespace": lambda m: _prefixed(mg.to_xml(m.ds, namer=m.namer).body.decode())
    .encode(),
    "no-namespace": lambda m: mg.to_xml(m.ds, namer=m.namer).body
    .replace(b' xmlns="%s"' % mg.NS.encode(), b""),
    "no-keywords": lambda m: mg.to_xml(m.ds, namer=m.namer, keyword=False).body,
    "lowercase-tags": lambda m: re.sub(rb'tag="([0-9A-F]{8})"',
                                       lambda x: b'tag="' + x.group(1).lower() + b'"',
                                       mg.to_xml(m.ds, namer=m.namer).body),
    "cdata-and-single-quotes": lambda m: mg.to_xml(m.ds, namer=m.namer).body
    .replace(b">SECRETID4711<", b"><![CDATA[SECRETID4711]]><")
    .replace(b'keyword="PatientID"', b"keyword='PatientID'"),
    "no-xml-declaration": lambda m: mg.to_xml(m.ds, namer=m.namer).body.split(b"?>", 1)[1],
    "latin1-encoding": lambda m: mg.to_xml(m.ds, namer=m.namer, encoding="ISO-8859-1").body,
}


class _Src:
    def __init__(self, ds, namer):
        self.ds, self.namer = ds, namer


@pytest.mark.parametrize("form", sorted(XML_FORMS))
def test_600_33_xml_forms(httpd, form):
    """Ways of writing the same Native DICOM Model document that XML (and
    the PS3.19 schema: keyword optional, tag hex in either case) allow:
    the stored file is the same."""
    orig = mg.ct_512()
    namer = _namer(httpd)
    ref = mg.to_xml(orig.ds, namer=namer)           # its bulk parts
    body = XML_FORMS[form](_Src(orig.ds, namer))
    from lxml import etree
    doc = etree.fromstring(body)
    assert doc.tag.endswith("NativeDicomModel")
    if form not in ("no-namespace",):
        mg.validate_xml(body)
    parts = [({"Content-Type": XML}, body)] + [p.part() for p in ref.bulk]
    check_answer(httpd, mg.post_parts(httpd, parts, XML), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig)


# =============================================================== many
def test_600_34_many_objects(httpd):
    """40 objects with their bulk data in one request: all stored, each
    equal to its original."""
    study = g.uid()
    origs = [mg.small_ct(study=study, rows=8 + i % 5, cols=8) for i in range(40)]
    metas = [_xml(httpd, o) for o in origs]
    check_answer(httpd, mg.post_xml(httpd, metas), 200, stored=[o.uids for o in origs])
    for o in origs:
        mg.assert_roundtrip(httpd, o, dump=False)


def test_600_35_many_frames(httpd):
    """120 JPEG frames under one Content-Location: 120 fragments in order,
    a basic offset table of 120 entries."""
    frames = [mg.jpeg_frame(300 + 7 * i) for i in range(120)]
    orig = mg.multiframe_encapsulated(frames)
    meta = _xml(httpd, orig)
    assert len(meta.bulk) == 120
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    _check_fragments(httpd, orig, mg.JPEG_BASELINE, frames)


# =============================================================== private tags
def _zero_private_blocks(body):
    """Private element tags written as dcmtk's dcm2xml writes them in the
    Native DICOM Model: gggg00ee, the block left to the privateCreator."""
    return re.sub(rb'tag="([0-9A-F]{4})([0-9A-F]{2})([0-9A-F]{2})"( vr="[A-Z]{2}")'
                  rb'( privateCreator=)',
                  lambda m: b'tag="' + m.group(1) + b"00" + m.group(3) + b'"' + m.group(4)
                  + m.group(5), body)


@pytest.mark.parametrize("writer", ["dcm2xml", "metagen-block-zeroed"])
def test_600_36_private_tags_block_from_creator(httpd, writer):
    """A private attribute with privateCreator names its block through the
    creator: dcm2xml writes (0019,1001) of creator "STOWRS TEST" as
    tag="00190001" privateCreator="STOWRS TEST". The stored file must have
    it at (0019,1001) again, in the block (0019,0010) reserves for that
    creator (dcm4che reads it so too); (0019,0001) is not even a legal
    private element number (PS3.5 §7.8.1)."""
    orig = mg.small_sc8(private=True)
    if writer == "dcm2xml":
        meta = mg.dcm2xml(orig.data)
        assert b'tag="00190001"' in meta.body, meta.body[:2000]
    else:
        meta = _xml(httpd, orig)
        meta.body = _zero_private_blocks(meta.body)
        assert b'tag="00190001" vr="OB" privateCreator="STOWRS TEST"' in meta.body
    check_answer(httpd, mg.post_xml(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, dump=False)
