"""Metadata + bulk data requests, type="application/dicom+json" (issue 3,
item 2): one application/dicom+json part holds a JSON array of DICOM JSON
Model objects (PS3.18 Annex F) with BulkDataURI and InlineBinary; bulk
parts as for XML. StowRSMaxMetadataSize bounds the metadata part.

Round trips use three writers of DICOM JSON: t/metagen.py's own converter,
pydicom's Dataset.to_json_dict (what Python clients send) and dcmtk's
dcm2json (inline binary, small instances). DICOM JSON carries DS and IS as
numbers, so those are compared numerically.
"""

import base64
import copy
import json

import pytest

import dicomgen as g
import helpers_dicom as hd
import metagen as mg
from helpers_dicom import CT, JSON, UNKNOWN_CLASS, XML, check_answer
from stowrs_env import LOCATION, STOW_PATH


def _namer(h, **kw):
    return mg.BulkNamer(h.location_url, **kw)


def _json(h, orig, **kw):
    return mg.to_json(orig.ds, namer=_namer(h), **kw)


def _post_array(h, array, metas=(), extra_parts=(), **kw):
    """POST a JSON array (any JSON value, or raw bytes) plus the bulk parts
    of @metas."""
    body = array if isinstance(array, bytes) else json.dumps(array).encode("utf-8")
    parts = [({"Content-Type": mg.JSON_TYPE}, body)]
    for m in metas:
        parts += [p.part() for p in m.bulk]
    parts += list(extra_parts)
    return mg.post_parts(h, parts, mg.JSON_TYPE, **kw)


def _study_path(study):
    return "%s/%s" % (STOW_PATH, study)


CONVERTERS = {"own": mg.to_json, "pydicom": mg.to_json_pydicom}


# =============================================================== converters
@pytest.mark.parametrize("conv", sorted(CONVERTERS))
@pytest.mark.parametrize("name", sorted(mg.ROUND_TRIP))
def test_610_00_converter_output_valid(name, conv):
    """The converters write DICOM JSON (PS3.18 F.2: keys, vr, one of
    Value/BulkDataURI/InlineBinary, numbers for numeric VRs, PN objects),
    and pydicom's from_json with the bulk parts gives the original back."""
    orig = mg.ROUND_TRIP[name]()
    meta = CONVERTERS[conv](orig.ds)
    obj = json.loads(json.dumps(meta.obj))
    mg.validate_json(obj, allow_empty_value=(conv == "pydicom"))
    back = mg.json_to_dataset(obj, meta, orig.ts)
    assert mg.diff_datasets(orig.ds, back, numeric_strings=True) == []
    assert ("7FE00010" in obj) == ("PixelData" in orig.ds)
    if "7FE00010" in obj:
        assert set(obj["7FE00010"]) == {"vr", "BulkDataURI"}
    if "00420011" in obj:
        assert set(obj["00420011"]) == {"vr", "BulkDataURI"}


@pytest.mark.parametrize("maker", [mg.small_ct, mg.basic_text_sr, mg.encapsulated_pdf])
def test_610_00_dcm2json_output_valid(maker):
    orig = maker()
    meta = mg.dcm2json(orig.data)
    mg.validate_json(meta.obj)
    back = mg.json_to_dataset(meta.obj, meta, orig.ts)
    assert mg.diff_datasets(orig.ds, back, numeric_strings=True) == \
        ["(0008,0005) SpecificCharacterSet: ['ISO_IR 192'], expected ['ISO_IR 100']"]


# =============================================================== round trip
@pytest.mark.parametrize("conv", sorted(CONVERTERS))
@pytest.mark.parametrize("name", sorted(mg.ROUND_TRIP))
def test_610_01_round_trip(httpd, name, conv):
    """POST one object as DICOM JSON with its bulk data; the stored file
    equals the original attribute by attribute (DS/IS numerically), pixel
    data and documents byte for byte; dcmtk reads it without a warning."""
    orig = mg.ROUND_TRIP[name]()
    meta = CONVERTERS[conv](orig.ds, namer=_namer(httpd))
    resp = mg.post_json(httpd, [meta])
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True, dump=False)


@pytest.mark.parametrize("maker", [mg.small_ct, mg.basic_text_sr, mg.encapsulated_pdf])
def test_610_02_round_trip_dcm2json(httpd, maker):
    """dcmtk's dcm2json output (all binary inline, pixel data included;
    strings converted to UTF-8 and declared ISO_IR 192) is stored as the
    original, with the character set dcm2json declared."""
    orig = maker()
    meta = mg.dcm2json(orig.data)
    check_answer(httpd, _post_array(httpd, [meta.obj]), 200, stored=[orig.uids])
    expect = copy.deepcopy(orig.ds)
    expect.SpecificCharacterSet = "ISO_IR 192"
    mg.assert_roundtrip(httpd, orig, numeric_strings=True, dump=False, expect=expect)


@pytest.mark.parametrize("accept", [XML, JSON])
def test_610_03_all_in_one_array(httpd, accept):
    """Every round-trip instance as one JSON array, bulk parts after it:
    200, each stored equal to its original."""
    study = g.uid()
    origs = [mg.ROUND_TRIP[n](study=study) for n in sorted(mg.ROUND_TRIP)]
    metas = [_json(httpd, o) for o in origs]
    resp = mg.post_json(httpd, metas, accept=accept)
    assert resp.header("Content-Type") == accept
    r = check_answer(httpd, resp, 200, stored=[o.uids for o in origs])
    assert r["retrieve_url"] == "%s/studies/%s" % (httpd.location_url, study)
    for o in origs:
        mg.assert_roundtrip(httpd, o, numeric_strings=True, dump=False)


def test_610_04_inline_pixel_data(httpd):
    """Pixel data as InlineBinary (no bulk part at all) is stored byte for
    byte."""
    orig = mg.small_ct(rows=32, cols=32)
    meta = _json(httpd, orig)
    meta.obj["7FE00010"] = {"vr": "OW", "InlineBinary":
                            base64.b64encode(orig.ds.PixelData).decode("ascii")}
    meta.bulk = []
    check_answer(httpd, mg.post_json(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True)


def test_610_05_large_inline_under_default_limit(httpd):
    """The default StowRSMaxMetadataSize (64 MiB) takes a 3 MB JSON part:
    2 MiB of pixel data inline."""
    orig = mg.small_ct(rows=1024, cols=1024)
    meta = _json(httpd, orig)
    meta.obj["7FE00010"] = {"vr": "OW", "InlineBinary":
                            base64.b64encode(orig.ds.PixelData).decode("ascii")}
    meta.bulk = []
    assert len(json.dumps([meta.obj])) > 2_700_000
    check_answer(httpd, mg.post_json(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True)


def test_610_06_json_values(httpd):
    """DICOM JSON specifics: null for an empty value in a multi-valued
    string, a PN with only an Ideographic group, several PN values, numbers
    for DS/IS (integral and not), AT as hex, an empty sequence without
    Value, an empty item, a string with a backslash in LT (one value)."""
    orig = mg.small_ct()
    meta = _json(httpd, orig)
    o = meta.obj
    o["00080008"] = {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    o["00081060"] = {"vr": "PN", "Value": [{"Alphabetic": "A^B"}, {"Ideographic": "山田^太郎"}]}
    o["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    o["00200032"] = {"vr": "DS", "Value": [-125.5, 0, 1e-3]}
    o["00201041"] = {"vr": "DS", "Value": [42]}
    o["00280009"] = {"vr": "AT", "Value": ["00181063"]}
    o["00081110"] = {"vr": "SQ"}
    o["00082112"] = {"vr": "SQ", "Value": [{}]}
    o["00204000"] = {"vr": "LT", "Value": ["C:\\dir\\file"]}
    meta.obj = dict(sorted(o.items()))
    check_answer(httpd, mg.post_json(httpd, [meta]), 200, stored=[orig.uids])
    st = mg.read_stored(mg.stored_path(httpd, orig.uids))
    assert list(st.ImageType) == ["ORIGINAL", "", "AXIAL"]
    pns = [str(x) for x in st.NameOfPhysiciansReadingStudy]
    assert pns == ["A^B", "=山田^太郎"], pns
    assert [float(x) for x in st.ImagePositionPatient] == [-125.5, 0.0, 0.001]
    assert float(st.SliceLocation) == 42.0
    assert int(st.FrameIncrementPointer) == 0x00181063
    assert len(st.ReferencedStudySequence) == 0 and st["ReferencedStudySequence"].VR == "SQ"
    assert len(st.SourceImageSequence) == 1 and len(st.SourceImageSequence[0]) == 0
    assert st.ImageComments == "C:\\dir\\file"
    assert st.PixelData == orig.ds.PixelData
    assert mg.dcmdump_problems(mg.stored_path(httpd, orig.uids)) == []


# =============================================================== C000
NOT_WELL_FORMED = {
    "truncated": lambda a: a[:len(a) // 2],
    "not-json": lambda a: b"hello",
    "empty": lambda a: b"",
    "trailing-garbage": lambda a: a + b" ]",
    "bad-utf8": lambda a: a.replace(b"SECRETID4711", b"SECRET\xff\xfe"),
    "single-quotes": lambda a: a.replace(b'"vr"', b"'vr'"),
}
NOT_AN_ARRAY = {
    "string": lambda a: b'"[1,2,3]"',
    "number": lambda a: b"42",
    "null": lambda a: b"null",
    "true": lambda a: b"true",
}


@pytest.mark.parametrize("kind", sorted(NOT_WELL_FORMED) + sorted(NOT_AN_ARRAY))
def test_610_07_not_json_or_not_array(httpd, kind):
    """A metadata part that is not well-formed JSON, or a JSON value that
    is neither an array nor an object: 409, one C000 item with the
    placeholder class and a generated UID; nothing stored."""
    orig = mg.small_ct()
    meta = _json(httpd, orig)
    good = json.dumps([meta.obj]).encode("utf-8")
    change = NOT_WELL_FORMED.get(kind) or NOT_AN_ARRAY[kind]
    body = change(good)
    assert body != good
    resp = _post_array(httpd, body, [meta])
    r = check_answer(httpd, resp, 409, failed=[("C000", UNKNOWN_CLASS, None)])
    assert hd.valid_uid(r["failed"][0]["instance"])
    assert 49152 in hd.raw_failure_reasons(resp)
    httpd.assert_not_stored(orig.uids)


BAD_OBJECTS = {
    "number": lambda o: 42,
    "string": lambda o: "00100010",
    "array": lambda o: [o],
    "key-not-hex": lambda o: dict(o, **{"0010002G": {"vr": "LO", "Value": ["x"]}}),
    "key-short": lambda o: dict(o, **{"100020": {"vr": "LO", "Value": ["x"]}}),
    "vr-missing": lambda o: dict(o, **{"00100020": {"Value": ["x"]}}),
    "vr-unknown": lambda o: dict(o, **{"00100020": {"vr": "XX", "Value": ["x"]}}),
    "attribute-not-object": lambda o: dict(o, **{"00100020": "x"}),
    "value-not-array": lambda o: dict(o, **{"00100020": {"vr": "LO", "Value": "x"}}),
    "us-string": lambda o: dict(o, **{"00280010": {"vr": "US", "Value": ["sixteen"]}}),
    "pn-not-object": lambda o: dict(o, **{"00100010": {"vr": "PN", "Value": [17]}}),
    "sq-item-not-object": lambda o: dict(o, **{"00082112": {"vr": "SQ", "Value": [1]}}),
    "inline-not-base64": lambda o: dict(o, **{"7FE00010": {"vr": "OW",
                                                           "InlineBinary": "!!!*"}}),
}


@pytest.mark.parametrize("kind", sorted(BAD_OBJECTS))
def test_610_08_bad_object_among_good(httpd, kind):
    """An array whose second object is not a DICOM JSON dataset: that object
    fails with C000, the first and third are stored (202)."""
    a, b, bad = mg.small_ct(), mg.multiframe_jpeg(), mg.small_ct()
    ma, mb, mbad = _json(httpd, a), _json(httpd, b), _json(httpd, bad)
    arr = [ma.obj, BAD_OBJECTS[kind](mbad.obj), mb.obj]
    resp = _post_array(httpd, arr, [ma, mbad, mb])
    check_answer(httpd, resp, 202, stored=[a.uids, b.uids], failed=[("C000", None, None)])
    httpd.assert_not_stored(bad.uids)
    mg.assert_roundtrip(httpd, a, numeric_strings=True)
    mg.assert_roundtrip(httpd, b, numeric_strings=True)


def test_610_09_single_bad_object_placeholder(httpd):
    """An array of one non-object: 409, the item carries the placeholder
    class and a valid generated UID."""
    resp = _post_array(httpd, [42])
    r = check_answer(httpd, resp, 409, failed=[("C000", UNKNOWN_CLASS, None)])
    assert hd.valid_uid(r["failed"][0]["instance"])


# =============================================================== StowRSMaxMetadataSize
def test_610_10_max_metadata_size(make_httpd):
    """StowRSMaxMetadataSize 1000: a JSON part over 1000 bytes cannot be
    read (one C000 item, placeholder class, 409, nothing stored, spool
    empty); a part under it is stored (200)."""
    h = make_httpd(location_conf="StowRSMaxMetadataSize 1000")
    a, b = mg.small_ct(), mg.small_ct()
    ma, mb = _json(h, a), _json(h, b)
    assert len(json.dumps([ma.obj, mb.obj])) > 1000
    resp = mg.post_json(h, [ma, mb])
    check_answer(h, resp, 409, failed=[("C000", UNKNOWN_CLASS, None)])
    h.assert_not_stored(a.uids)
    h.assert_not_stored(b.uids)
    # a small object under the limit
    small = _min_sr()
    body = json.dumps([small["obj"]]).encode("utf-8")
    assert len(body) < 1000
    resp = _post_array(h, body)
    check_answer(h, resp, 200, stored=[small["uids"]])


def _min_sr():
    """A minimal Basic Text SR as DICOM JSON, well under 1000 bytes."""
    u = {"study": g.uid(), "series": g.uid(), "sop": g.uid(), "sop_class": mg.BASIC_TEXT_SR}
    obj = {
        "00080016": {"vr": "UI", "Value": [u["sop_class"]]},
        "00080018": {"vr": "UI", "Value": [u["sop"]]},
        "00080060": {"vr": "CS", "Value": ["SR"]},
        "0020000D": {"vr": "UI", "Value": [u["study"]]},
        "0020000E": {"vr": "UI", "Value": [u["series"]]},
        "0040A040": {"vr": "CS", "Value": ["CONTAINER"]},
    }
    return {"obj": obj, "uids": u}


def test_610_11_max_metadata_size_boundary(make_httpd):
    """The limit counts the part's bytes: exactly the limit is read, one
    byte more is not."""
    small = _min_sr()
    body = json.dumps([small["obj"]]).encode("utf-8")
    h = make_httpd(location_conf="StowRSMaxMetadataSize %d" % len(body))
    check_answer(h, _post_array(h, body), 200, stored=[small["uids"]])
    other = _min_sr()
    body2 = json.dumps([other["obj"]]).encode("utf-8") + b" "
    assert len(body2) == len(body) + 1
    check_answer(h, _post_array(h, body2), 409, failed=[("C000", UNKNOWN_CLASS, None)])
    h.assert_not_stored(other["uids"])


@pytest.mark.parametrize("value", ["abc", "-1", "10k", "1.5", ""])
def test_610_12_max_metadata_size_bad_value(make_httpd, value):
    h = make_httpd(start=False)
    conf = 'StowRSMaxMetadataSize "%s"' % value if value == "" else \
        "StowRSMaxMetadataSize %s" % value
    rc, out = h.config_test(location_conf=conf)
    assert rc != 0, out
    assert "StowRSMaxMetadataSize" in out, out
    assert "Invalid command" not in out, out


def test_610_13_max_metadata_size_good_value(make_httpd):
    h = make_httpd(start=False)
    rc, out = h.config_test(location_conf="StowRSMaxMetadataSize 67108864")
    assert rc == 0, out


# =============================================================== bulk data
def test_610_14_bulk_part_missing(httpd):
    """BulkDataURI with no part: A922 for that object, named by its UIDs;
    the other object is stored (202)."""
    a, b = mg.small_ct(), mg.ct_512()
    ma, mb = _json(httpd, a), _json(httpd, b)
    mb.bulk = [p for p in mb.bulk if len(p.data) != 3072]   # the private OW's part
    resp = mg.post_json(httpd, [ma, mb])
    check_answer(httpd, resp, 202, stored=[a.uids],
                 failed=[("A922", b.uids["sop_class"], b.uids["sop"])])
    assert 43298 in hd.raw_failure_reasons(resp)
    httpd.assert_not_stored(b.uids)


@pytest.mark.expect_log("STOWRS0205")
def test_610_15_unreferenced_bulk_part(httpd):
    orig = mg.small_ct()
    meta = _json(httpd, orig)
    mark = httpd.mark()
    extra = mg.BulkPart(httpd.location_url + "/bulk/unused", mg.OCTET, b"\x01" * 100)
    resp = _post_array(httpd, [meta.obj], [meta], extra_parts=[extra.part()])
    check_answer(httpd, resp, 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True)
    lines = httpd.wait_log("STOWRS0205", since=mark)
    assert len(lines) == 1 and "[stowrs:info]" in lines[0], lines


@pytest.mark.parametrize("uri,loc", [
    ("bulk/{t}", "{base}%s/bulk/{t}" % LOCATION),
    ("{base}%s/bulk/{t}" % LOCATION, "%s/bulk/{t}" % LOCATION),
    ("%s/bulk/{t}" % LOCATION, "bulk/{t}"),
], ids=["relative-vs-absolute", "absolute-vs-path", "path-vs-relative"])
def test_610_16_bulk_uri_matching(httpd, uri, loc):
    def fmt(s, n, t):
        return s.replace("{base}", httpd.base_url).replace("{t}", "%s-%d" % (t, n))
    namer = mg.BulkNamer(httpd.location_url, uri=lambda n, t: fmt(uri, n, t),
                         location=lambda n, t: fmt(loc, n, t))
    orig = mg.multiframe_jpeg()
    meta = mg.to_json(orig.ds, namer=namer)
    check_answer(httpd, mg.post_json(httpd, [meta]), 200, stored=[orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True)


def test_610_17_frames_shared_by_two_objects_kept_apart(httpd):
    """Two objects of one array each with 3 JPEG frames under their own
    Content-Location, all six bulk parts after the JSON part: each object
    gets exactly its own frames."""
    a, b = mg.multiframe_jpeg(), mg.multiframe_jpeg()
    ma, mb = _json(httpd, a), _json(httpd, b)
    # interleave the frames of the two objects
    parts = [({"Content-Type": mg.JSON_TYPE}, json.dumps([ma.obj, mb.obj]).encode())]
    for pa, pb in zip(ma.bulk, mb.bulk):
        parts += [pa.part(), pb.part()]
    resp = mg.post_parts(httpd, parts, mg.JSON_TYPE)
    check_answer(httpd, resp, 200, stored=[a.uids, b.uids])
    mg.assert_roundtrip(httpd, a, numeric_strings=True)
    mg.assert_roundtrip(httpd, b, numeric_strings=True)


def test_610_18_media_type_c122(httpd):
    orig = mg.multiframe_jpeg()
    meta = mg.set_pixel_type(_json(httpd, orig), "image/png")
    resp = mg.post_json(httpd, [meta])
    check_answer(httpd, resp, 409, failed=[("C122", orig.uids["sop_class"], orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


@pytest.mark.parametrize("attr", ["00280010", "00280004"])
def test_610_19_image_attributes_missing(httpd, attr):
    orig = mg.small_ct()
    meta = _json(httpd, orig)
    del meta.obj[attr]
    resp = mg.post_json(httpd, [meta])
    check_answer(httpd, resp, 409, failed=[("A900", CT, orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


# =============================================================== §3.3
def test_610_20_study_in_path(httpd):
    study = g.uid()
    same, other = mg.small_ct(study=study), mg.encapsulated_pdf()
    ms, mo = _json(httpd, same), _json(httpd, other)
    resp = mg.post_json(httpd, [mo, ms], path=_study_path(study), accept=JSON)
    check_answer(httpd, resp, 202, stored=[same.uids],
                 failed=[("C409", other.uids["sop_class"], other.uids["sop"])])
    httpd.assert_not_stored(other.uids)
    mg.assert_roundtrip(httpd, same, numeric_strings=True)


def test_610_21_uid_missing(httpd):
    orig = mg.small_ct()
    meta = _json(httpd, orig)
    del meta.obj["0020000E"]
    check_answer(httpd, mg.post_json(httpd, [meta]), 409,
                 failed=[("A900", CT, orig.uids["sop"])])
    httpd.assert_not_stored(orig.uids)


def test_610_22_same_object_twice(httpd):
    """The same object twice in one array (policy Never): both reported
    stored, one file."""
    orig = mg.small_ct()
    m1 = _json(httpd, orig)
    check_answer(httpd, _post_array(httpd, [m1.obj, m1.obj], [m1]), 200,
                 stored=[orig.uids, orig.uids])
    mg.assert_roundtrip(httpd, orig, numeric_strings=True)


@pytest.mark.expect_log("STOWRS0305")
@pytest.mark.parametrize("case", ["empty-array", "xml-part-in-json-request"])
def test_610_40_no_instance_is_400(httpd, case):
    """A well-framed request that holds no instance at all (an empty JSON
    array, or only parts of another type) gets 400 with a text that says
    so, rather than a 409 without any failure item to explain it."""
    if case == "empty-array":
        parts = [({"Content-Type": mg.JSON_TYPE}, b"[]")]
    else:
        parts = [({"Content-Type": mg.XML_TYPE}, b"<NativeDicomModel/>")]
    mark = httpd.mark()
    before = set(httpd.archive_files())
    r = mg.post_parts(httpd, parts, mg.JSON_TYPE)
    assert r.status == 400, r
    assert r.header("Content-Type").startswith("text/plain"), r
    assert b"no instance" in r.body
    httpd.wait_log("STOWRS0305", since=mark)
    assert set(httpd.archive_files()) == before
