"""Storing instances: the happy path, the response, the pre-checks of
DESIGN.md §3.1 and the shapes real clients send (DESIGN.md appendix)."""

import re
import uuid

import pytest

import dicomgen
import mime
from mime import content_type, multipart_body, dicom_body, parse_stow_response, send, stow
from stowrs_env import LOCATION, STOW_PATH

XML = "application/dicom+xml"
JSON = "application/dicom+json"
CT = dicomgen.CTImageStorage
WARNING_RE = re.compile(r'^299 \S+ "([0-9A-F]{4}): [^"]+"$')


def base(h):
    return h.base_url + LOCATION


def study_url(h, study):
    return "%s/studies/%s" % (base(h), study)


def instance_url(h, u):
    return "%s/studies/%s/series/%s/instances/%s" % (base(h), u["study"], u["series"], u["sop"])


def assert_plain_error(r, status):
    """A pre-check answer: the status, a short text/plain body, no HTML."""
    assert r.status == status, r
    ct = (r.header("Content-Type") or "").lower()
    assert ct.startswith("text/plain"), "Content-Type %r for %d: %r" % (ct, status, r.body[:200])
    assert 0 < len(r.body) < 1024, r.body
    assert b"<html" not in r.body.lower() and b"<!doctype" not in r.body.lower(), r.body


def assert_ok_single(h, r, data, u, fmt="xml"):
    assert r.status == 200, r
    assert r.header("Content-Type") == (XML if fmt == "xml" else JSON)
    assert r.headers_all("Warning") == []
    res = parse_stow_response(r)
    assert res["format"] == fmt
    assert res["retrieve_url"] == study_url(h, u["study"])
    assert res["failed"] == []
    assert res["referenced"] == [{"class": u["sop_class"], "instance": u["sop"],
                                  "retrieve_url": instance_url(h, u)}]
    h.assert_stored(data, u)
    return res


# --------------------------------------------------------------- storing
def test_100_01_single_instance_stored(httpd):
    data, u = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([data]))
    assert_ok_single(httpd, r, data, u, "xml")
    assert len(u["sop"]) == 64


def test_100_02_index_symlink(httpd):
    data, u = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([data]))
    assert r.status == 200, r
    httpd.assert_stored(data, u)
    # CONTRACT.md: index symlinks in {archive}/.stowrs-index/{SOPInstanceUID}
    # (what they point to is the module's business)
    link = httpd.archive / ".stowrs-index" / u["sop"]
    assert link.is_symlink(), "no index entry %s" % link


def test_100_03_json_on_accept(httpd):
    data, u = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([data]), accept=JSON)
    assert_ok_single(httpd, r, data, u, "json")


@pytest.mark.parametrize("accept,fmt", [
    ("application/dicom+xml", "xml"),
    ("*/*", "xml"),
    ("application/*", "xml"),
    ("application/dicom+json, application/dicom+xml;q=0.5", "json"),
    ("application/dicom+xml;q=0.4, application/dicom+json;q=0.9", "json"),
    ("application/dicom+json;q=0.4, application/dicom+xml", "xml"),
    ("text/html, application/dicom+json", "json"),
], ids=["xml", "any", "application-any", "json-first", "json-q", "xml-q", "html-json"])
def test_100_04_accept_negotiation(httpd, accept, fmt):
    data, u = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([data]), accept=accept)
    assert_ok_single(httpd, r, data, u, fmt)


def test_100_05_ten_instances_two_studies(httpd):
    studies = [dicomgen.uid(), dicomgen.uid()]
    series = [dicomgen.uid(), dicomgen.uid()]
    insts = [dicomgen.ct_image(study=studies[i % 2], series=series[i % 2]) for i in range(10)]
    r = stow(httpd.port, dicom_body([d for d, _ in insts]))
    assert r.status == 200, r
    assert r.headers_all("Warning") == []
    res = parse_stow_response(r)
    assert res["retrieve_url"] == "", "RetrieveURL must be present and empty: %r" % (
        res["retrieve_url"],)
    assert [x["instance"] for x in res["referenced"]] == [u["sop"] for _, u in insts]
    for (d, u), ref in zip(insts, res["referenced"]):
        assert ref["class"] == CT
        assert ref["retrieve_url"] == instance_url(httpd, u)
        httpd.assert_stored(d, u)


def test_100_06_ten_instances_one_study(httpd):
    study = dicomgen.uid()
    insts = [dicomgen.ct_image(study=study) for _ in range(10)]  # 10 series
    r = stow(httpd.port, dicom_body([d for d, _ in insts]), accept=JSON)
    assert r.status == 200, r
    res = parse_stow_response(r)
    assert res["retrieve_url"] == study_url(httpd, study)
    assert len(res["referenced"]) == 10
    for d, u in insts:
        httpd.assert_stored(d, u)


def test_100_07_post_to_study(httpd):
    study = dicomgen.uid_of_length(64)
    data, u = dicomgen.ct_image(study=study)
    r = stow(httpd.port, dicom_body([data]), path=STOW_PATH + "/" + study)
    assert_ok_single(httpd, r, data, u)


def test_100_08_sync_off_stores(make_httpd):
    h = make_httpd(location_conf="StowRSSync Off")
    insts = [dicomgen.ct_image() for _ in range(3)]
    r = stow(h.port, dicom_body([d for d, _ in insts]))
    assert r.status == 200, r
    for d, u in insts:
        h.assert_stored(d, u)


def test_100_09_retrieve_base(make_httpd):
    wado = "https://pacs.example.org/wado/rs"
    h = make_httpd(location_conf="StowRSRetrieveBase %s/" % wado)
    data, u = dicomgen.ct_image()
    r = stow(h.port, dicom_body([data]))
    assert r.status == 200, r
    res = parse_stow_response(r)
    assert res["retrieve_url"] == "%s/studies/%s" % (wado, u["study"])
    assert res["referenced"][0]["retrieve_url"] == "%s/studies/%s/series/%s/instances/%s" % (
        wado, u["study"], u["series"], u["sop"])


def test_100_10_expect_continue_valid(httpd):
    data, u = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([data]), expect_continue=True)
    assert r.got_continue, "no 100 Continue for a valid request"
    assert r.body_sent
    assert_ok_single(httpd, r, data, u)


@pytest.mark.parametrize("mpm,single", [("prefork", False), ("worker", False),
                                        ("event", True)],
                         ids=["prefork", "worker", "event-single-process"])
def test_100_11_other_mpms(make_httpd, mpm, single):
    h = make_httpd(mpm=mpm, single_process=single)
    pids = h.serving_pids()
    assert pids and (len(pids) == 1) == single, pids
    insts = [dicomgen.ct_image() for _ in range(3)]
    r = stow(h.port, dicom_body([d for d, _ in insts]), chunk_size=1000)
    assert r.status == 200, r
    for d, u in insts:
        h.assert_stored(d, u)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_100_12_large_instance_streamed(httpd, chunked):
    info, stream = dicomgen.big_instance_stream(48 * 1024 * 1024 + 2)
    small, su = dicomgen.ct_image()
    length, body = mime.multipart_stream([(None, stream, info.size), (None, small)])
    r = stow(httpd.port, body, content_length=None if chunked else length,
             chunk_size=(1 << 16) + 3 if chunked else None)
    assert r.status == 200, r
    assert info.done and info.bytes_yielded == info.size
    path = httpd.instance_path(info.uids["study"], info.uids["series"], info.uids["sop"])
    assert path.stat().st_size == info.size
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == info.sha256
    httpd.assert_stored(small, su)


def test_100_13_log_lines_per_instance(httpd):
    """CONTRACT.md: one INFO line per instance: STOWRS0202 for stored and
    tolerated duplicates (saying which), STOWRS0201 for failures with the
    hex FailureReason."""
    data, u = dicomgen.ct_image()
    junk = b"not DICOM" * 50
    mark = httpd.mark()
    r = stow(httpd.port, dicom_body([data, junk]))
    assert r.status == 202, r
    r = stow(httpd.port, dicom_body([data]))
    assert r.status == 200, r
    httpd.wait_log("STOWRS0202", since=mark, count=2)
    lines = [l for l in httpd.error_log_lines_since(mark) if "[stowrs:info]" in l]
    pat = [r"STOWRS0202: \[%s\] part 1: stored \(%d bytes\)" % (LOCATION, len(data)),
           r"STOWRS0201: \[%s\] part 2: failed C499 \([^)]+\): \S" % LOCATION,
           r"STOWRS0202: \[%s\] part 1: duplicate kept \(%d bytes\)" % (LOCATION, len(data))]
    for p in pat:
        assert any(re.search(p, l) for l in lines), "no line like %r in\n%s" % (
            p, "\n".join(httpd.error_log_lines_since(mark)))
    # UIDs only at debug
    for l in lines:
        assert u["sop"] not in l and u["study"] not in l, l


# --------------------------------------------------------------- pre-checks
VALID_CT = content_type("myboundary")


def _precheck_cases():
    p = STOW_PATH
    c = []
    # 404: not {location}/studies[/{uid}]
    for path in (LOCATION + "/series", p + "/1.2/series", p + "/1.2/series/1.3",
                 LOCATION, LOCATION + "/studiesX", LOCATION + "/instances"):
        c.append(("404" + path.replace(LOCATION, "").replace("/", "_"), "POST", path, {}, 404))
    c.append(("404-GET-series", "GET", LOCATION + "/series", {}, 404))
    # 405: not POST
    for m in ("GET", "PUT", "DELETE", "PATCH"):
        c.append(("405-" + m, m, p, {}, 405))
    c.append(("405-PUT-study", "PUT", p + "/1.2.3", {}, 405))
    # 400: invalid UID in the path
    for name, bad in (("65", "1." + "2" * 63), ("dotdot", "1..2"), ("leading0", "01.2"),
                      ("alpha", "abc"), ("trailingdot", "1.2."), ("leadingdot", ".1.2"),
                      ("zero-comp", "1.02.3"), ("space", "1.2%203")):
        c.append(("400-uid-" + name, "POST", p + "/" + bad, {}, 400))
    # 415: media type
    c.append(("415-no-ct", "POST", p, {"Content-Type": None}, 415))
    c.append(("415-text", "POST", p, {"Content-Type": "text/plain"}, 415))
    c.append(("415-jpeg-root", "POST", p,
              {"Content-Type": 'multipart/related; type="image/jpeg"; boundary=myboundary'}, 415))
    c.append(("415-mixed", "POST", p,
              {"Content-Type": "multipart/mixed; boundary=myboundary"}, 415))
    c.append(("415-form", "POST", p,
              {"Content-Type": "multipart/form-data; boundary=myboundary"}, 415))
    c.append(("415-bare-dicom", "POST", p, {"Content-Type": "application/dicom"}, 415))
    # 400: boundary
    c.append(("400-no-boundary", "POST", p,
              {"Content-Type": 'multipart/related; type="application/dicom"'}, 400))
    c.append(("400-empty-boundary", "POST", p,
              {"Content-Type": 'multipart/related; type="application/dicom"; boundary=""'}, 400))
    c.append(("400-boundary-71", "POST", p,
              {"Content-Type": 'multipart/related; type="application/dicom"; boundary=' + "b" * 71},
              400))
    # 406
    c.append(("406-html", "POST", p, {"Accept": "text/html"}, 406))
    c.append(("406-jpeg-plain", "POST", p, {"Accept": "image/jpeg, text/plain;q=0.5"}, 406))
    return c


PRECHECKS = _precheck_cases()


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect100"])
@pytest.mark.parametrize("method,path,headers,status", [c[1:] for c in PRECHECKS],
                         ids=[c[0] for c in PRECHECKS])
def test_100_20_precheck(httpd, method, path, headers, status, expect):
    data, u = dicomgen.ct_image()
    body = dicom_body([data])
    hdrs = {"Content-Type": VALID_CT}
    hdrs.update(headers)
    hdrs = [(k, v) for k, v in hdrs.items() if v is not None]
    before = httpd.archive_files()
    r = send(httpd.port, method, path, hdrs, body, expect_continue=expect)
    assert_plain_error(r, status)
    if status == 405:
        assert r.header("Allow") == "POST", r.headers
    if expect:
        assert not r.got_continue, "100 Continue sent for a request answered %d" % status
        assert not r.body_sent
    assert httpd.archive_files() == before
    httpd.assert_not_stored(u)


@pytest.mark.parametrize("path", [STOW_PATH, STOW_PATH + "/1.2.3"], ids=["studies", "study"])
def test_100_21_get_without_body_405(httpd, path):
    r = send(httpd.port, "GET", path, {"Accept": JSON})
    assert_plain_error(r, 405)
    assert r.header("Allow") == "POST"


def test_100_22_boundary_70_ok(httpd):
    b = "B" * 35 + "0123456789'()+_,-./:=?"
    b = (b + "x" * 70)[:70]
    data, u = dicomgen.ct_image()
    r = send(httpd.port, "POST", STOW_PATH,
             {"Content-Type": content_type(b, quoted_boundary=True)},
             dicom_body([data], boundary=b))
    assert_ok_single(httpd, r, data, u)


# --------------------------------------------------------------- failures
def test_100_30_warning_per_failure(httpd):
    good, gu = dicomgen.ct_image()
    mism, mu = dicomgen.with_meta(meta_sop_instance=dicomgen.uid())
    junk = b"this is not DICOM at all" * 20
    r = stow(httpd.port, dicom_body([good, junk, mism]))
    assert r.status == 202, r
    res = parse_stow_response(r)
    assert [x["instance"] for x in res["referenced"]] == [gu["sop"]]
    reasons = sorted(f["reason"] for f in res["failed"])
    assert reasons == sorted([0xC499, 0xA900]), res["failed"]
    warnings = r.headers_all("Warning")
    assert len(warnings) == len(res["failed"]) == 2, warnings
    codes = []
    for w in warnings:
        m = WARNING_RE.match(w)
        assert m, "malformed Warning %r" % w
        codes.append(int(m.group(1), 16))
    assert sorted(codes) == reasons
    for f in res["failed"]:
        assert f["class"] and f["instance"]
    c499 = [f for f in res["failed"] if f["reason"] == 0xC499][0]
    assert c499["class"] == dicomgen.UNKNOWN_SOP_CLASS
    a900 = [f for f in res["failed"] if f["reason"] == 0xA900][0]
    assert a900["instance"] in (mu["sop"], mu["meta_sop"])
    httpd.assert_stored(good, gu)
    httpd.assert_not_stored(mu)


def test_100_32_failures_in_json(httpd):
    good, gu = dicomgen.ct_image()
    r = stow(httpd.port, dicom_body([good, b"junk" * 100]), accept=JSON)
    assert r.status == 202, r
    res = parse_stow_response(r)   # FailureReason must be a JSON number
    assert res["format"] == "json"
    assert [f["reason"] for f in res["failed"]] == [0xC499]
    assert [x["instance"] for x in res["referenced"]] == [gu["sop"]]
    assert len(r.headers_all("Warning")) == 1


def test_100_31_single_failure_409(httpd):
    data, u = dicomgen.missing("SOPInstanceUID")
    r = stow(httpd.port, dicom_body([data]), accept=JSON)
    assert r.status == 409, r
    res = parse_stow_response(r)
    assert res["referenced"] == []
    assert [f["reason"] for f in res["failed"]] == [0xA900]
    assert len(r.headers_all("Warning")) == 1
    assert WARNING_RE.match(r.headers_all("Warning")[0]).group(1) == "A900"
    assert res["retrieve_url"] == "", "RetrieveURL is always present"


# --------------------------------------------------------------- real clients
def _client_dcm4che(h, insts):
    body = multipart_body([(None, d) for d in insts], "myboundary",
                          leading_crlf=True, final_crlf=True)
    assert body.startswith(b"\r\n--myboundary\r\n") and body.endswith(b"--myboundary--\r\n")
    r = send(h.port, "POST", STOW_PATH,
             [("Content-Type", 'multipart/related; type="application/dicom"; boundary=myboundary'),
              ("Accept", XML)], body)
    return r, "xml"


def _client_python_dicomweb(h, insts):
    b = uuid.uuid4().hex
    body = multipart_body([({"Content-Type": "application/dicom"}, d) for d in insts], b,
                          leading_crlf=True, final_crlf=False)
    assert body.endswith(b"--" + b.encode() + b"--")
    r = send(h.port, "POST", STOW_PATH,
             [("Content-Type", 'multipart/related; type="application/dicom"; boundary="%s"' % b)],
             body, chunk_size=1 << 16)
    return r, "either"


def _client_js_dicomweb(h, insts):
    b = str(uuid.uuid4())
    body = multipart_body([(None, d) for d in insts], b, leading_crlf=True, final_crlf=False)
    r = send(h.port, "POST", STOW_PATH,
             [("Content-Type", 'multipart/related; type="application/dicom"; boundary="%s"' % b),
              ("Accept", "application/dicom+json")], body)
    return r, "json"


def _client_dcm4chee_arc(h, insts):
    b = "dcm4chee-" + uuid.uuid4().hex
    parts = [({"Content-Type": "application/dicom;transfer-syntax=1.2.840.10008.1.2.1"}, d)
             for d in insts]
    body = multipart_body(parts, b, leading_crlf=True, final_crlf=True)
    r = send(h.port, "POST", STOW_PATH,
             [("Content-Type", "multipart/related; type=application/dicom; boundary=%s" % b),
              ("Accept", JSON)], body, chunk_size=8192)
    return r, "json"


def _client_curl(h, insts):
    body = multipart_body([(None, d) for d in insts], "curlboundary", leading_crlf=False)
    assert body.startswith(b"--curlboundary\r\n")
    r = send(h.port, "POST", STOW_PATH,
             [("Content-Type", "multipart/related; type=application/dicom; boundary=curlboundary"),
              ("User-Agent", "curl/8.5.0"), ("Accept", "*/*")],
             body, expect_continue=True)
    assert r.got_continue
    return r, "xml"


@pytest.mark.parametrize("client", [_client_dcm4che, _client_python_dicomweb,
                                    _client_js_dicomweb, _client_dcm4chee_arc, _client_curl],
                         ids=["dcm4che", "python-dicomweb-client", "js-dicomweb-client",
                              "dcm4chee-arc", "curl"])
def test_100_40_real_client_shapes(httpd, client):
    study = dicomgen.uid()
    # over 1 MB in all, as dicomweb-client chunks above that
    insts = [dicomgen.ct_image(study=study, rows=256, cols=256) for _ in range(3)]
    r, fmt = client(httpd, [d for d, _ in insts])
    assert r.status == 200, r
    res = parse_stow_response(r)
    if fmt != "either":
        assert res["format"] == fmt
    assert res["retrieve_url"] == study_url(httpd, study)
    assert [x["instance"] for x in res["referenced"]] == [u["sop"] for _, u in insts]
    for d, u in insts:
        httpd.assert_stored(d, u)


# --------------------------------------------------------------- privacy
def test_100_90_no_patient_data_in_logs(httpd):
    # a stored one, a failed one and a duplicate, at LogLevel stowrs:debug
    data, u = dicomgen.ct_image()
    mism, _ = dicomgen.with_meta(meta_sop_instance=dicomgen.uid())
    r = stow(httpd.port, dicom_body([data, mism]))
    assert r.status == 202, r
    r = stow(httpd.port, dicom_body([data]))
    assert r.status == 200, r
    text = httpd.error_log_text_since(0)
    assert "STOWRS0201" in text, "the per-instance log line is missing"
    for secret in (dicomgen.SECRET, dicomgen.PATIENT_ID, "19010101"):
        assert secret not in text, "patient data %r in the error log" % secret
