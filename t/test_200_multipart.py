"""multipart/related framing end to end (DESIGN.md §3.1 Content-Type
parsing, §3.2 body framing), over a raw socket: malformed bodies as a
table (bytes -> status), tolerated irregularities, part Content-Types,
chunk boundaries and boundary-like bytes inside DICOM data."""

import os

import pytest

import dicomgen
from mime import (content_type, multipart_body, dicom_body, parse_stow_response, send,
                  CRLF)
from stowrs_env import STOW_PATH

B = b"myboundary"
CT = content_type("myboundary")
DCM_HEAD = b"Content-Type: application/dicom\r\n\r\n"


def post(h, body, ct=CT, **kw):
    return send(h.port, "POST", STOW_PATH, {"Content-Type": ct}, body, **kw)


def assert_400(r):
    assert r.status == 400, r
    assert (r.header("Content-Type") or "").lower().startswith("text/plain"), r
    assert 0 < len(r.body) < 1024 and b"<html" not in r.body.lower(), r.body


# --------------------------------------------------------------- framing table
def _two():
    return dicomgen.ct_image(), dicomgen.ct_image()


def f_lf_only():
    (a, ua), _ = _two()
    body = b"\n--myboundary\nContent-Type: application/dicom\n\n" + a + b"\n--myboundary--\n"
    return body, [], [ua]


def f_lf_only_at_start():
    (a, ua), _ = _two()
    body = b"--myboundary\nContent-Type: application/dicom\n\n" + a + b"\n--myboundary--\n"
    return body, [], [ua]


def f_lf_only_headers():
    (a, ua), _ = _two()
    body = b"\r\n--myboundary\r\nContent-Type: application/dicom\n\n" + a + \
        b"\r\n--myboundary--\r\n"
    return body, [], [ua]


def f_no_delimiter():
    (a, ua), _ = _two()
    return a, [], [ua]


def f_other_boundary():
    (a, ua), _ = _two()
    return dicom_body([a], boundary="otherboundary"), [], [ua]


def f_close_only():
    return b"\r\n--myboundary--\r\n", [], []


def f_close_only_bare():
    return b"--myboundary--", [], []


def f_empty():
    return b"", [], []


def f_preamble_only():
    return b"just a preamble, no parts\r\n", [], []


def f_truncated_in_part():
    (a, ua), _ = _two()
    return b"\r\n--myboundary\r\n" + DCM_HEAD + a[:len(a) // 2], [], [ua]


def f_truncated_in_headers():
    return b"\r\n--myboundary\r\nContent-Ty", [], []


def f_truncated_after_first():
    (a, ua), (b, ub) = _two()
    body = b"\r\n--myboundary\r\n" + DCM_HEAD + a + b"\r\n--myboundary\r\n" + DCM_HEAD + \
        b[:len(b) // 2]
    return body, [(a, ua)], [ub]


def f_truncated_after_second_complete():
    (a, ua), (b, ub) = _two()
    body = b"\r\n--myboundary\r\n" + DCM_HEAD + a + b"\r\n--myboundary\r\n" + DCM_HEAD + b + \
        b"\r\n--myboundary\r\n"
    return body, [(a, ua), (b, ub)], []


def f_no_close_delimiter():
    (a, ua), _ = _two()
    # the part's end is never confirmed by a delimiter: not complete
    return b"\r\n--myboundary\r\n" + DCM_HEAD + a + b"\r\n", [], [ua]


def f_garbage_after_delimiter():
    (a, ua), _ = _two()
    return b"\r\n--myboundary \tjunk\r\n" + DCM_HEAD + a + b"\r\n--myboundary--\r\n", [], [ua]


def f_single_dash_after_delimiter():
    (a, ua), _ = _two()
    return b"\r\n--myboundary-x\r\n" + DCM_HEAD + a + b"\r\n--myboundary--\r\n", [], [ua]


def f_cr_without_lf_after_delimiter():
    (a, ua), _ = _two()
    return b"\r\n--myboundary\rX" + DCM_HEAD + a + b"\r\n--myboundary--\r\n", [], [ua]


def f_header_too_long():
    (a, ua), _ = _two()
    head = b"Content-Type: application/dicom\r\nX-Padding: " + b"p" * 17000 + b"\r\n\r\n"
    return b"\r\n--myboundary\r\n" + head + a + b"\r\n--myboundary--\r\n", [], [ua]


def f_many_header_lines():
    (a, ua), _ = _two()
    head = b"Content-Type: application/dicom\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n"
    return b"\r\n--myboundary\r\n" + head + a + b"\r\n--myboundary--\r\n", [], [ua]


def f_header_without_colon():
    (a, ua), _ = _two()
    return (b"\r\n--myboundary\r\nContent-Type application/dicom\r\n\r\n" + a +
            b"\r\n--myboundary--\r\n"), [], [ua]


FRAMING = [
    ("lf-only", f_lf_only),
    ("lf-only-at-start", f_lf_only_at_start),
    ("lf-only-headers", f_lf_only_headers),
    ("no-delimiter", f_no_delimiter),
    ("other-boundary", f_other_boundary),
    ("close-only", f_close_only),
    ("close-only-bare", f_close_only_bare),
    ("empty", f_empty),
    ("preamble-only", f_preamble_only),
    ("truncated-in-part", f_truncated_in_part),
    ("truncated-in-headers", f_truncated_in_headers),
    ("truncated-after-first", f_truncated_after_first),
    ("truncated-after-second", f_truncated_after_second_complete),
    ("no-close-delimiter", f_no_close_delimiter),
    ("garbage-after-delimiter", f_garbage_after_delimiter),
    ("dash-after-delimiter", f_single_dash_after_delimiter),
    ("cr-after-delimiter", f_cr_without_lf_after_delimiter),
    ("header-over-16k", f_header_too_long),
    ("header-lines-over-16k", f_many_header_lines),
    ("header-without-colon", f_header_without_colon),
]


@pytest.mark.parametrize("chunk", [None, 5], ids=["length", "chunked"])
@pytest.mark.parametrize("make", [f[1] for f in FRAMING], ids=[f[0] for f in FRAMING])
def test_200_01_framing_errors(httpd, make, chunk):
    body, stored, not_stored = make()
    r = post(httpd, body, chunk_size=chunk)
    assert_400(r)
    for data, u in stored:
        httpd.assert_stored(data, u)
    for u in not_stored:
        httpd.assert_not_stored(u)
    assert httpd.wait_spool_empty() == []


# --------------------------------------------------------------- tolerated
def _ok(h, r, insts):
    assert r.status == 200, r
    res = parse_stow_response(r)
    assert [x["instance"] for x in res["referenced"]] == [u["sop"] for _, u in insts]
    for d, u in insts:
        h.assert_stored(d, u)
    return res


def test_200_10_preamble_and_epilogue(httpd):
    insts = [dicomgen.ct_image() for _ in range(2)]
    body = multipart_body([(None, d) for d, _ in insts], "myboundary",
                          preamble=b"This is a preamble. --myboundar \r\n--notit\r\n",
                          epilogue=b"This is the epilogue.\r\n--myboundary\r\nmore\r\n")
    _ok(httpd, post(httpd, body), insts)


def test_200_11_transport_padding(httpd):
    insts = [dicomgen.ct_image() for _ in range(2)]
    body = (b"\r\n--myboundary  \t \r\n" + DCM_HEAD + insts[0][0] +
            b"\r\n--myboundary\t\r\n" + DCM_HEAD + insts[1][0] +
            b"\r\n--myboundary--  \r\n")
    _ok(httpd, post(httpd, body), insts)


def test_200_12_close_without_crlf_and_no_leading_crlf(httpd):
    insts = [dicomgen.ct_image() for _ in range(2)]
    body = multipart_body([(None, d) for d, _ in insts], leading_crlf=False, final_crlf=False)
    assert body.startswith(b"--myboundary\r\n") and body.endswith(b"--myboundary--")
    _ok(httpd, post(httpd, body), insts)


def test_200_13_extra_part_headers(httpd):
    insts = [dicomgen.ct_image() for _ in range(2)]
    parts = [([("content-type", "application/dicom"),
               ("Content-Length", str(len(d))),
               ("Content-ID", "<part%d@example.org>" % i),
               ("Content-Location", "part%d.dcm" % i),
               ("Content-Description", "CT slice"),
               ("Content-Transfer-Encoding", "binary")], d)
             for i, (d, _) in enumerate(insts)]
    body = multipart_body(parts, "myboundary")
    ct = content_type("myboundary", extra='; start="<part0@example.org>"')
    _ok(httpd, post(httpd, body, ct=ct), insts)


def test_200_14_part_header_block_12k_ok(httpd):
    data, u = dicomgen.ct_image()
    head = [("Content-Type", "application/dicom"), ("X-Padding", "p" * 12000)]
    _ok(httpd, post(httpd, multipart_body([(head, data)])), [(data, u)])


CT_VARIANTS = [
    ("quoted-type", 'multipart/related; type="application/dicom"; boundary={b}', "myboundary"),
    ("unquoted-type", "multipart/related; type=application/dicom; boundary={b}", "myboundary"),
    ("quoted-boundary", 'multipart/related; type="application/dicom"; boundary="{b}"',
     "myboundary"),
    ("boundary-first", "multipart/related; boundary={b}; type=application/dicom", "myboundary"),
    ("no-spaces", 'multipart/related;boundary="{b}";type="application/dicom"', "myboundary"),
    ("upper-names", 'MULTIPART/RELATED; TYPE="application/dicom"; BOUNDARY={b}', "myboundary"),
    ("mixed-case", 'Multipart/Related; Type=application/dicom; Boundary="{b}"', "myboundary"),
    ("spaces-around", 'multipart/related ; type = "application/dicom" ; boundary = {b} ',
     "myboundary"),
    ("tabs", 'multipart/related;\ttype="application/dicom";\tboundary={b}', "myboundary"),
    ("start-params", 'multipart/related; type="application/dicom"; start="<root@example.org>"; '
     'start-info="cid:x"; charset=utf-8; boundary={b}', "myboundary"),
    ("unknown-params", 'multipart/related; foo="a;boundary=wrong;type=x"; type="application/dicom";'
     ' bar=baz; boundary={b}', "myboundary"),
    ("special-boundary", 'multipart/related; type="application/dicom"; boundary="{b}"',
     "my boundary:=?()+_,-./'x"),
    ("uuid-boundary", 'multipart/related; type="application/dicom"; boundary={b}',
     "a1b2c3d4-e5f6-4789-abcd-0123456789ab"),
    ("one-char-boundary", "multipart/related; type=application/dicom; boundary={b}", "x"),
]


@pytest.mark.parametrize("ct,boundary", [c[1:] for c in CT_VARIANTS],
                         ids=[c[0] for c in CT_VARIANTS])
def test_200_15_content_type_variants(httpd, ct, boundary):
    insts = [dicomgen.ct_image() for _ in range(2)]
    body = multipart_body([(None, d) for d, _ in insts], boundary)
    _ok(httpd, post(httpd, body, ct=ct.replace("{b}", boundary)), insts)


# --------------------------------------------------------------- part types
def test_200_20_part_without_content_type(httpd):
    data, u = dicomgen.ct_image()
    r = post(httpd, multipart_body([([], data)]))
    assert r.status == 409, r
    res = parse_stow_response(r)
    assert res["referenced"] == []
    assert [f["reason"] for f in res["failed"]] == [0x0110]
    assert res["failed"][0]["class"] and res["failed"][0]["instance"]
    assert len(r.headers_all("Warning")) == 1
    httpd.assert_not_stored(u)


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.1", '"1.2.840.10008.1.2.1"',
                                "1.2.840.10008.1.2"],
                         ids=["agrees", "agrees-quoted", "disagrees"])
def test_200_21_part_transfer_syntax_param(httpd, ts):
    data, u = dicomgen.ct_image()
    parts = [({"Content-Type": "application/dicom; transfer-syntax=%s" % ts}, data)]
    _ok(httpd, post(httpd, multipart_body(parts)), [(data, u)])


def test_200_22_part_content_type_case(httpd):
    data, u = dicomgen.ct_image()
    parts = [([("CONTENT-TYPE", "Application/DICOM")], data)]
    _ok(httpd, post(httpd, multipart_body(parts)), [(data, u)])


@pytest.mark.parametrize("part_ct", ["image/jpeg", "application/octet-stream", "text/plain",
                                     "application/dicom+xml-not"],
                         ids=["jpeg", "octet", "text", "lookalike"])
def test_200_23_wrong_part_type_0110(httpd, part_ct):
    good1, u1 = dicomgen.ct_image()
    bad, ub = dicomgen.ct_image()
    good2, u2 = dicomgen.ct_image()
    parts = [(None, good1), ({"Content-Type": part_ct}, bad), (None, good2)]
    r = post(httpd, multipart_body(parts))
    assert r.status == 202, r
    res = parse_stow_response(r)
    assert [x["instance"] for x in res["referenced"]] == [u1["sop"], u2["sop"]]
    assert [f["reason"] for f in res["failed"]] == [0x0110]
    assert len(r.headers_all("Warning")) == 1
    httpd.assert_stored(good1, u1)
    httpd.assert_stored(good2, u2)
    httpd.assert_not_stored(ub)


# --------------------------------------------------------------- tricky data
def _tricky_pixels(n, tail):
    """n random bytes holding boundary-like sequences, ending in @tail."""
    patterns = [b"--myboundary\r\n", b"x--myboundary--\r\n", b"\r\n--myboundaryX",
                b"\r\n--myboundar\r\n--myboundarZ", b"\r\r\n--myboundaryy",
                b"\r\n\r\n--myboundary_", b"\n--myboundary\n", b"\r\n--MYBOUNDARY\r\n",
                b"\r\n--myboundarymyboundary", b"\r\n-", b"\r\n--", b"\r"]
    buf = bytearray(os.urandom(n))
    # random bytes must not turn a pattern into a real delimiter (a CR
    # before "\n--myboundary\n" would make it an LF-only delimiter line)
    buf = buf.replace(b"\r", b"R").replace(b"\n", b"N")
    pos = 100
    for p in patterns:
        buf[pos:pos + len(p)] = p
        pos += 257 + len(p)
    assert pos < n - len(tail)
    buf[n - len(tail):] = tail
    assert len(buf) == n
    return bytes(buf)


def tricky_instances():
    tails = [b"\r\n--myboundar", b"\r", b"\r\n--myboundaryQ"]
    sizes = [(64, 64), (128, 96), (256, 256)]
    out = []
    for (rows, cols), tail in zip(sizes, tails):
        px = _tricky_pixels(rows * cols * 2, tail)
        d, u = dicomgen.ct_image(rows=rows, cols=cols, pixel_bytes=px,
                                 ImageComments="a--myboundary b\r\n--myboundaryC")
        assert d.endswith(tail)
        out.append((d, u))
    return out


@pytest.mark.parametrize("chunk", [1, 7, 4096], ids=["1", "7", "4096"])
def test_200_30_chunked_byte_identical(httpd, chunk):
    insts = tricky_instances()
    r = post(httpd, dicom_body([d for d, _ in insts]), chunk_size=chunk)
    _ok(httpd, r, insts)


def test_200_31_boundary_without_crlf_in_value(httpd):
    data, u = dicomgen.ct_image(ImageComments="see --myboundary and --myboundary-- here",
                                StudyDescription="--myboundary\r\n")
    assert b"--myboundary" in data
    _ok(httpd, post(httpd, dicom_body([data])), [(data, u)])


def test_200_32_crlf_boundary_then_other_bytes_in_data(httpd):
    data, u = dicomgen.ct_image(ImageComments="x\r\n--myboundaryABC\r\n--myboundary2 end")
    assert b"\r\n--myboundaryA" in data
    insts = [(data, u)] + tricky_instances()
    r = post(httpd, dicom_body([d for d, _ in insts]))
    _ok(httpd, r, insts)
