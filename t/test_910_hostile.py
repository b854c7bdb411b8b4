"""Hostile requests (DESIGN.md §3.1, §3.2, §3.5, §5 "no crash, leak or hang on
any input"): part header blocks past the 16 KiB limit, thousands of empty
parts, boundaries of 70 and 71 characters, a boundary inside a DICOM value,
deep XML and JSON nesting, DICOM files with absurd value lengths or deeply
nested sequences, UIDs that try to leave the archive, and slow-drip uploads
cut by mod_reqtimeout.

Every case gets the contract's answer in bounded time, and afterwards
(_Watch.check): the spool is empty, nothing appeared anywhere below the
server root but the instances the answer reported stored, every httpd child
that lived before the request is still alive (a crashed child is found by
its pid, not only by the AH00052 line its parent writes up to a second
later), no crash line is in the error log, and a normal request is stored.
"""

import json
import os
import pathlib
import select
import socket
import struct
import time

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

import dicomgen as g
import helpers_dicom as hd
import metagen as mg
import mime
from helpers_dicom import CT, UNKNOWN_CLASS, check_answer, post
import stowrs_env
from stowrs_env import (STOW_PATH, Httpd, _CRASH_RE, libexecdir)

#: event MPM with a fixed set of children: two processes, never more (a
#: crashed one is replaced, under a new pid), never fewer (no idle kill)
FIXED_CHILDREN = ("StartServers 2\nServerLimit 2\nThreadsPerChild 25\n"
                  "MaxRequestWorkers 50\nMinSpareThreads 25\nMaxSpareThreads 75\n"
                  "MaxConnectionsPerChild 0\n")
#: harness timeouts grow under sanitizers and valgrind
TIME_FACTOR = getattr(stowrs_env, "TIME_FACTOR", 1)
#: a hostile case must be answered within this many seconds
BOUND = 15.0 * TIME_FACTOR


def _cleanup(h, failed):
    h.stop()
    if os.environ.get("STOWRS_KEEP_WORKDIRS"):
        return
    import shutil
    shutil.rmtree(h.archive if failed else h.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def hostile(request, new_workdir):
    """One server for the table-driven cases. AllowEncodedSlashes NoDecode
    lets %2F reach the module, so that the module's own UID check answers
    the path cases (the default server is asked too)."""
    h = Httpd(new_workdir("hostile"), conf_extra=FIXED_CHILDREN + "AllowEncodedSlashes NoDecode")
    h.start()
    yield h
    _cleanup(h, request.session.testsfailed > 0)


# ------------------------------------------------------------------ watch
def _children(h):
    """{pid: start time} of @h's live children (zombies excluded)."""
    out = {}
    for pid in h.serving_pids():
        try:
            f = pathlib.Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if f[0] != "Z":
            out[pid] = f[19]
    return out


def _settle_children(h, n=2, timeout=10.0):
    """Wait until @h has @n live children (after start-up, or after a crash
    was replaced). @return them."""
    deadline = time.monotonic() + timeout
    while True:
        c = _children(h)
        if len(c) >= n or time.monotonic() > deadline:
            return c
        time.sleep(0.05)


def _rel_instance_paths(h, uids):
    """Paths (relative to the server root, with is-dir) that storing
    @uids may add: study and series directories, the file, its index link."""
    arch = os.path.relpath(h.archive, h.workdir)
    st, se, sop = uids["study"], uids["series"], uids["sop"]
    return {(os.path.join(arch, st), True), (os.path.join(arch, st, se), True),
            (os.path.join(arch, st, se, sop + ".dcm"), False),
            (os.path.join(arch, ".stowrs-index", sop), False)}


class _Watch:
    """Before/after a hostile request on server @h."""

    def __init__(self, h, n_children=2):
        self.h = h
        self.children = _settle_children(h, n_children) if not h.single_process else {}
        assert len(self.children) == n_children or h.single_process, \
            "server has %r children, expected %d" % (self.children, n_children)
        self.mark = h.mark()
        self.tree = hd.tree_snapshot(h.workdir)

    def crash_lines(self, wait=0.0):
        deadline = time.monotonic() + wait
        while True:
            lines = [l for l in self.h.error_log_lines_since(self.mark) if _CRASH_RE.search(l)]
            if lines or time.monotonic() >= deadline:
                return lines
            time.sleep(0.1)

    def dead_children(self):
        now = _children(self.h)
        return sorted(p for p, t in self.children.items() if now.get(p) != t)

    def call(self, what, fn):
        """Run @fn (one request); a dropped connection or a dead child
        becomes an assertion naming the crash."""
        t0 = time.monotonic()
        try:
            resp = fn()
        except (ConnectionError, OSError) as e:
            dead = self.dead_children()
            raise AssertionError(
                "%s: the connection broke (%s) after %.2f s; children gone: %s; "
                "crash lines:\n%s" % (what, e, time.monotonic() - t0, dead,
                                      "\n".join(self.crash_lines(wait=3.0))))
        took = time.monotonic() - t0
        assert took < BOUND, "%s: answered after %.1f s (bound %.0f s)" % (what, took, BOUND)
        return resp

    def check(self, stored=(), stored_data=()):
        """Afterwards: no crash, spool empty, nothing new on disk but
        @stored (uids dicts; byte-identical to @stored_data where given),
        and a normal request is stored."""
        h = self.h
        dead = self.dead_children()
        assert not dead, "children %s died:\n%s" % (dead, "\n".join(self.crash_lines(3.0)))
        crash = self.crash_lines()
        assert not crash, "crash in the error log:\n%s" % "\n".join(crash)
        assert h.wait_spool_empty() == [], "spool not empty: %s" % h.spool_files()
        after = hd.tree_snapshot(h.workdir)
        allowed = set()
        for u in stored:
            allowed |= _rel_instance_paths(h, u)
        gone = self.tree - after
        new = after - self.tree
        assert not gone, "paths vanished: %s" % sorted(gone)
        assert new <= allowed, "unexpected new paths: %s" % sorted(new - allowed)
        for u in stored:
            path = h.instance_path(u["study"], u["series"], u["sop"])
            assert path.is_file(), "not stored: %s" % path
        for data, u in stored_data:
            h.assert_stored(data, u)
        # still serving, and normally
        a, ua = g.ct_image(rows=8, cols=8)
        check_answer(h, self.call("follow-up request", lambda: post(h, [a])), 200, stored=[ua])
        h.assert_stored(a, ua)
        dead = self.dead_children()
        assert not dead, "children %s died:\n%s" % (dead, "\n".join(self.crash_lines(3.0)))


def _assert_400(resp, text=None):
    assert resp.status == 400, resp
    assert (resp.header("Content-Type") or "").startswith("text/plain"), resp
    assert b"<html" not in resp.body.lower() and len(resp.body) < 1024, resp.body
    if text:
        assert text in resp.text, resp.text


def _stow(h, body, boundary="myboundary", **kw):
    return mime.stow(h.port, body, boundary, timeout=60, **kw)


DCM_HEAD = b"Content-Type: application/dicom\r\n"


# ------------------------------------------------------------- part headers
def _hdr_one_long(a):
    return (b"\r\n--myboundary\r\n" + DCM_HEAD + b"X-Pad: " + b"p" * 20480 + b"\r\n\r\n"
            + a + b"\r\n--myboundary--\r\n")


def _hdr_many_lines(a):
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(2500))          # ~25 KiB
    return b"\r\n--myboundary\r\n" + DCM_HEAD + lines + b"\r\n" + a + b"\r\n--myboundary--\r\n"


def _hdr_never_ends(a):
    # a header block with no blank line, 1 MiB long, then the close delimiter
    return (b"\r\n--myboundary\r\n" + DCM_HEAD + b"X-Endless: " + b"e" * (1 << 20)
            + b"\r\n--myboundary--\r\n")


def _hdr_no_crlf_at_all(a):
    return b"\r\n--myboundary\r\n" + b"H" * (64 * 1024)


HEADER_CASES = {
    "one-20KiB-header": _hdr_one_long,
    "2500-header-lines": _hdr_many_lines,
    "header-block-never-ends": _hdr_never_ends,
    "64KiB-without-CRLF": _hdr_no_crlf_at_all,
}


@pytest.mark.parametrize("first", [False, True], ids=["alone", "after-stored"])
@pytest.mark.parametrize("kind", sorted(HEADER_CASES))
def test_910_01_part_header_block_too_long(hostile, kind, first):
    """A part header block past 16 KiB is a framing error: 400 (text/plain,
    "part header block too long"); an instance completed before it in the
    same request stays stored and byte-identical; nothing of the long part
    is kept."""
    h = hostile
    w = _Watch(h)
    a, ua = g.ct_image(rows=8, cols=8)
    bad = HEADER_CASES[kind](a)
    stored = []
    if first:
        p, up = g.ct_image(rows=16, cols=16)
        bad = b"\r\n--myboundary\r\n" + DCM_HEAD + b"\r\n" + p + bad
        stored = [(p, up)]
    resp = w.call(kind, lambda: _stow(h, bad))
    _assert_400(resp, "part header block too long")
    assert ("%d instance(s) were stored" % len(stored)) in resp.text, resp.text
    h.assert_not_stored(ua)
    w.check(stored=[u for _, u in stored], stored_data=stored)


# ------------------------------------------------------------- many parts
def _empty_parts(n):
    """@n parts without headers or content, written as `--b CRLF CRLF`
    repeated (each empty header block's CRLF doubles as the CRLF before
    the next delimiter)."""
    return b"\r\n" + b"--myboundary\r\n\r\n" * n + b"--myboundary--\r\n"


def _count_reasons(resp):
    r = mime.parse_stow_response(resp)
    out = {}
    for f in r["failed"]:
        out[f["reason"]] = out.get(f["reason"], 0) + 1
    return r, out


@pytest.mark.parametrize("n", [5000, 10000])
def test_910_02_thousands_of_empty_parts(hostile, n):
    """5000 and 10000 (the limit) empty parts: each one a 0110 failure (no
    Content-Type), 409, one Warning per failure, nothing stored, in
    bounded time."""
    h = hostile
    w = _Watch(h)
    resp = w.call("%d empty parts" % n, lambda: _stow(h, _empty_parts(n)))
    assert resp.status == 409, resp
    r, reasons = _count_reasons(resp)
    assert reasons == {0x0110: n}, reasons
    assert r["referenced"] == []
    assert len(hd.warnings_of(resp)) == n
    assert set(hd.warnings_of(resp)) == {"0110"}
    for f in r["failed"][:50]:
        assert f["class"] == UNKNOWN_CLASS and hd.valid_uid(f["instance"]), f
    assert len({f["instance"] for f in r["failed"]}) == n, "generated UIDs repeat"
    w.check()


@pytest.mark.parametrize("first", [False, True], ids=["alone", "after-stored"])
def test_910_03_more_parts_than_the_limit(hostile, first):
    """10001 parts: 400 "too many parts" once the 10001st begins; an
    instance stored before stays."""
    h = hostile
    w = _Watch(h)
    stored = []
    if first:
        p, up = g.ct_image(rows=16, cols=16)
        body = (b"\r\n--myboundary\r\n" + DCM_HEAD + b"\r\n" + p
                + b"\r\n" + b"--myboundary\r\n\r\n" * 10000 + b"--myboundary--\r\n")
        stored = [(p, up)]
    else:
        body = _empty_parts(10001)
    resp = w.call("10001 parts", lambda: _stow(h, body))
    _assert_400(resp, "too many parts")
    assert ("%d instance(s) were stored" % len(stored)) in resp.text, resp.text
    w.check(stored=[u for _, u in stored], stored_data=stored)


# ------------------------------------------------------------- boundary length
BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "


@pytest.mark.parametrize("quoted", [False, True])
@pytest.mark.parametrize("length", [70, 71])
def test_910_04_boundary_70_and_71(hostile, length, quoted):
    """A 70-character boundary (quoted: every RFC 2046 bchar, a space
    inside) works, chunked and not; 71 is refused with 400 before the body
    is read (no 100 Continue), nothing stored."""
    h = hostile
    w = _Watch(h)
    if quoted:
        bnd = (BCHARS * 2)[:length - 1].replace(" ", "-") + "x"
        bnd = bnd[:30] + " " + bnd[31:]                 # a space, not at the end
        ct = 'multipart/related; type="application/dicom"; boundary="%s"' % bnd
    else:
        bnd = ("b0123456789" * 8)[:length]
        ct = mime.content_type(bnd)
    assert len(bnd) == length
    insts = [g.ct_image(rows=8, cols=8) for _ in range(2)]
    body = mime.dicom_body([d for d, _ in insts], boundary=bnd)
    hdrs = {"Content-Type": ct}
    if length == 70:
        stored = []
        for chunk in (None, 13):
            insts = [g.ct_image(rows=8, cols=8) for _ in range(2)]
            body = mime.dicom_body([d for d, _ in insts], boundary=bnd)
            resp = w.call("boundary 70", lambda: mime.send(
                h.port, "POST", STOW_PATH, hdrs, body, chunk_size=chunk))
            check_answer(h, resp, 200, stored=[u for _, u in insts])
            stored += insts
        w.check(stored=[u for _, u in stored], stored_data=stored)
        return
    resp = w.call("boundary 71", lambda: mime.send(h.port, "POST", STOW_PATH, hdrs, body,
                                                   expect_continue=True))
    _assert_400(resp, "boundary")
    assert not resp.got_continue
    for _, u in insts:
        h.assert_not_stored(u)
    w.check()


# ------------------------------------------------------------- boundary in a value
IN_VALUE = [
    b"--myboundary",
    b"--myboundary--",
    b"x--myboundary\r\nContent-Type: application/dicom\r\n\r\n",
    b"\n--myboundary\r\n",
    b"\r--myboundary\r\n",
    b"\r\n-myboundary\r\n",
    b"\r\n--myboundar",
    b"--myboundary--\r\nX--myboundary--",
]


@pytest.mark.parametrize("chunk", [None, 1, 7, 4096], ids=["length", "c1", "c7", "c4096"])
def test_910_05_boundary_inside_a_dicom_value(hostile, chunk):
    """Values holding "--myboundary" without the CRLF before it (or with a
    lone LF or CR, or CRLF and a near-miss of the boundary) are data: every
    instance is stored byte-identical, whatever the chunking."""
    h = hostile
    w = _Watch(h)
    insts = []
    study = g.uid()
    for i, v in enumerate(IN_VALUE):
        text = v.decode("latin-1")
        if len(text) % 2:
            text += " "
        ds = g.ct_dataset(rows=8, cols=8, study=study)
        ds.ImageComments = text                     # LT: any byte but NUL
        ds.add_new(0x00091010, "OB", b"\0" + v + b"\0")   # and in a binary value
        ds.add_new(0x00090010, "LO", "STOWRS HOSTILE")
        data = g._write(ds)
        assert v in data
        insts.append((data, g._uids(ds, ds.file_meta)))
    body = mime.dicom_body([d for d, _ in insts])
    resp = w.call("boundary in value", lambda: _stow(h, body, chunk_size=chunk))
    check_answer(h, resp, 200, stored=[u for _, u in insts])
    w.check(stored=[u for _, u in insts], stored_data=insts)


# ------------------------------------------------------------- deep XML / JSON
def _nested_ds(depth, leaf_uid="1.2.3.4"):
    """A ReferencedImageSequence nested @depth levels deep."""
    inner = Dataset()
    inner.ReferencedSOPClassUID = CT
    inner.ReferencedSOPInstanceUID = leaf_uid
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    return Sequence([inner])


def _meta_doc(h, convert, depth=None):
    """A small CT and its metadata document (mg.to_xml or mg.to_json), with
    @depth nested sequences if given."""
    orig = mg.small_ct()
    if depth:
        orig.ds.ReferencedImageSequence = _nested_ds(depth)
    return orig, convert(orig.ds, namer=mg.BulkNamer(h.location_url))


def _xml_meta(h, depth=None):
    return _meta_doc(h, mg.to_xml, depth)


def _xml_with_text(h, head_text, tail_text):
    """A valid object's XML with raw text put in before (0010,0010)."""
    orig, meta = _xml_meta(h)
    text = meta.body
    i = text.index(b'<DicomAttribute tag="00100010"')
    meta.body = text[:i] + head_text + tail_text + text[i:]
    return orig, meta


def _sq_open(n):
    return (b'<DicomAttribute tag="00081140" vr="SQ"><Item number="1">') * n


def _sq_close(n):
    return b"</Item></DicomAttribute>" * n


DEEP_XML = {
    "33-sequences": lambda h: _xml_meta(h, 33),
    "100000-sequences": lambda h: _xml_with_text(h, _sq_open(100000), _sq_close(100000)),
    "100000-unknown-elements": lambda h: _xml_with_text(h, b"<a>" * 100000, b"</a>" * 100000),
    "100000-unclosed": lambda h: _xml_with_text(h, _sq_open(100000), b""),
}


@pytest.mark.parametrize("kind", sorted(DEEP_XML))
def test_910_06_deep_xml_nesting(hostile, kind):
    """application/dicom+xml metadata nested past the 32-sequence limit, or
    100000 elements deep: C000 for that object (409), in bounded time, and
    the object after it in the same request is stored (202)."""
    h = hostile
    w = _Watch(h)
    orig, meta = DEEP_XML[kind](h)
    good = mg.small_ct()
    gmeta = mg.to_xml(good.ds, namer=mg.BulkNamer(h.location_url))
    resp = w.call(kind, lambda: mg.post_xml(h, [meta, gmeta]))
    check_answer(h, resp, 202, stored=[good.uids], failed=[("C000", None, None)])
    h.assert_not_stored(orig.uids)
    w.check(stored=[good.uids])


def test_910_07_xml_nesting_at_the_limit(hostile):
    """32 nested sequences are allowed: the object is built and stored (so
    the 33-level case above fails for its depth alone)."""
    h = hostile
    w = _Watch(h)
    orig, meta = _xml_meta(h, 32)
    resp = w.call("32 sequences", lambda: mg.post_xml(h, [meta]))
    check_answer(h, resp, 200, stored=[orig.uids])
    w.check(stored=[orig.uids])


def _json_obj(h, depth=None):
    return _meta_doc(h, mg.to_json, depth)


def _post_json_raw(h, raw, metas):
    parts = [({"Content-Type": mg.JSON_TYPE}, raw)]
    for m in metas:
        parts += [p.part() for p in m.bulk]
    return mg.post_parts(h, parts, mg.JSON_TYPE)


@pytest.mark.parametrize("kind", ["33-sequences", "100000-arrays", "100000-objects"])
def test_910_08_deep_json_nesting(hostile, kind):
    """application/dicom+json: 33 nested sequences fail that object with
    C000 while the other object of the array is stored (202); a part nested
    100000 arrays or objects deep fails with C000 (409) -- no crash, no
    hang."""
    h = hostile
    w = _Watch(h)
    if kind == "33-sequences":
        orig, meta = _json_obj(h, 33)
        good, gmeta = _json_obj(h)
        raw = json.dumps([meta.obj, gmeta.obj]).encode()
        resp = w.call(kind, lambda: _post_json_raw(h, raw, [meta, gmeta]))
        check_answer(h, resp, 202, stored=[good.uids], failed=[("C000", None, None)])
        h.assert_not_stored(orig.uids)
        w.check(stored=[good.uids])
        return
    raw = b"[" * 100000 + b"]" * 100000 if kind == "100000-arrays" else \
        b'[' + b'{"00081140":' * 100000 + b"{}" + b"}" * 100000 + b"]"
    resp = w.call(kind, lambda: _post_json_raw(h, raw, []))
    check_answer(h, resp, 409, failed=[("C000", None, None)])
    w.check()


# ------------------------------------------------------------- absurd DICOM
def _tag(gr, el):
    return struct.pack("<HH", gr, el)


def _before_tag(data, tag_bytes, blob):
    i = data.index(tag_bytes)
    return data[:i] + blob + data[i:]


def _absurd_cases():
    out = {}
    imp, _ = g.ct_image(rows=8, cols=8, transfer_syntax=ImplicitVRLittleEndian)
    i = imp.index(_tag(0x0008, 0x0060))                         # Modality, implicit VR
    for name, n in (("fffffff0", 0xFFFFFFF0), ("ffffffff", 0xFFFFFFFF),
                    ("7fffffff", 0x7FFFFFFF)):
        out["implicit-small-element-" + name] = imp[:i + 4] + struct.pack("<I", n) + imp[i + 8:]
    exp, _ = g.ct_image(rows=8, cols=8)
    px = exp.index(_tag(0x7FE0, 0x0010) + b"OW")
    n = struct.unpack("<I", exp[px + 8:px + 12])[0]
    out["explicit-ob-fffffff0"] = _before_tag(
        exp, _tag(0x7FE0, 0x0010) + b"OW",
        _tag(0x0042, 0x0011) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFF0) + b"abcd")
    out["explicit-ut-fffffff0"] = _before_tag(
        exp, _tag(0x7FE0, 0x0010) + b"OW",
        _tag(0x0040, 0xA160) + b"UT\0\0" + struct.pack("<I", 0xFFFFFFF0) + b"abcd")
    out["explicit-ob-undefined-length"] = _before_tag(
        exp, _tag(0x7FE0, 0x0010) + b"OW",
        _tag(0x0042, 0x0011) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF) + b"abcd")
    out["pixel-data-past-eof"] = exp[:px + 8] + struct.pack("<I", n + 1000) + exp[px + 12:]
    out["pixel-data-fffffff0"] = exp[:px + 8] + struct.pack("<I", 0xFFFFFFF0) + exp[px + 12:]
    out["sequence-and-item-lengths-huge"] = _before_tag(
        exp, _tag(0x0010, 0x0010) + b"PN",
        _tag(0x0008, 0x1140) + b"SQ\0\0" + struct.pack("<I", 0x7FFFFFF0)
        + _tag(0xFFFE, 0xE000) + struct.pack("<I", 0xFFFFFFF0))
    out["meta-group-length-huge"] = exp[:140] + struct.pack("<I", 0xFFFFFF00) + exp[144:]
    sop_at = exp.index(_tag(0x0008, 0x0018) + b"UI")
    out["uid-length-past-eof"] = exp[:sop_at + 6] + struct.pack("<H", 0xFFFE) + exp[sop_at + 8:]
    return out


ABSURD = _absurd_cases()


@pytest.mark.parametrize("kind", sorted(ABSURD))
def test_910_09_absurd_value_lengths(hostile, kind):
    """Value lengths of 0xFFFFFFF0 on small elements, lengths past the end
    of the file, undefined length where it is illegal: C499 for that part,
    quickly (no 4 GB allocation, no hang), and the valid instance after it
    in the same request is stored (202)."""
    h = hostile
    w = _Watch(h)
    good, ug = g.ct_image(rows=8, cols=8)
    resp = w.call(kind, lambda: post(h, [ABSURD[kind], good]))
    check_answer(h, resp, 202, stored=[ug], failed=[("C499", None, None)])
    w.check(stored=[ug], stored_data=[(good, ug)])


def _nested_sequences(depth, implicit=False):
    """(0008,1140) of undefined length holding one undefined-length item
    holding the same, @depth levels, then all the delimiters."""
    if implicit:
        sq = _tag(0x0008, 0x1140) + b"\xff\xff\xff\xff"
    else:
        sq = _tag(0x0008, 0x1140) + b"SQ\0\0\xff\xff\xff\xff"
    item = _tag(0xFFFE, 0xE000) + b"\xff\xff\xff\xff"
    close = _tag(0xFFFE, 0xE00D) + b"\0\0\0\0" + _tag(0xFFFE, 0xE0DD) + b"\0\0\0\0"
    return (sq + item) * depth + close * depth


@pytest.mark.parametrize("depth,implicit", [(1000, False), (10000, False), (100000, False),
                                            (100000, True)],
                         ids=["1000", "10000", "100000", "100000-implicit"])
def test_910_10_deeply_nested_sequences(make_httpd, depth, implicit):
    """A DICOM data set with sequences nested 1000 to 100000 levels deep
    (undefined lengths, 20 bytes a level): the part is stored byte-identical
    or fails with C499, but the worker must not crash (dcmtk reads
    sequences recursively) and the answer comes in bounded time. A server
    of its own: a crashed child would leave its spool file behind for the
    cases after it."""
    h = make_httpd(conf_extra=FIXED_CHILDREN)
    w = _Watch(h)
    ts = ImplicitVRLittleEndian if implicit else g.ExplicitVRLittleEndian
    data, u = g.ct_image(rows=8, cols=8, transfer_syntax=ts)
    pn = _tag(0x0010, 0x0010) + (b"" if implicit else b"PN")
    bad = _before_tag(data, pn, _nested_sequences(depth, implicit))
    resp = w.call("sequences nested %d deep" % depth, lambda: post(h, [bad]))
    assert resp.status in (200, 409), resp
    if resp.status == 200:
        check_answer(h, resp, 200, stored=[u])
        w.check(stored=[u], stored_data=[(bad, u)])
    else:
        check_answer(h, resp, 409, failed=[("C499", None, None)])
        w.check()


# ------------------------------------------------------------- leaving the archive
HOSTILE_UIDS = ["../../etc", "/etc", "1.2/../../x", "..", "../" * 20 + "tmp",
                "1.2.3\\..\\..\\x", "1.2.3\0../x", "~root", "1.2.3 /../x"]


def _outside_targets(h, value):
    """Where a path built naively from @value would land."""
    out = []
    for rel in (value, value + "/" + value, value + ".dcm"):
        p = os.path.normpath(os.path.join(str(h.archive), rel.replace("\0", "")))
        if not p.startswith(str(h.archive) + os.sep):
            out.append(p)
    return out


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                  "SOPClassUID"])
def test_910_11_uids_that_leave_the_archive(hostile, attr):
    """Data set UIDs made of path syntax: every one fails with A900 (409),
    the failed item carries valid UIDs, and nothing is created anywhere --
    not below the server root (whole tree compared) and not where a naive
    path join would land."""
    h = hostile
    w = _Watch(h)
    before_out = {}
    for value in HOSTILE_UIDS:
        for p in _outside_targets(h, value):
            before_out[p] = os.path.lexists(p)
    datas = []
    for value in HOSTILE_UIDS:
        if attr in ("SOPInstanceUID", "SOPClassUID"):
            # meta header and data set say the same
            d, _ = g.with_values(**{attr: value})
        else:
            d, _ = hd.ct_with(**{attr: value})
        datas.append(d)
    resp = w.call(attr, lambda: post(h, datas))
    assert resp.status == 409, resp
    r = check_answer(h, resp, 409, failed=[("A900", None, None)] * len(datas))
    for f in r["failed"]:
        assert hd.valid_uid(f["instance"]) and hd.valid_uid(f["class"]), f
    for p, existed in before_out.items():
        assert os.path.lexists(p) == existed, "%s appeared" % p
    w.check()


def test_910_12_uids_that_leave_the_archive_metadata(hostile):
    """The same through a metadata request: a Study Instance UID of
    "../../etc" in application/dicom+xml fails with A900, nothing created."""
    h = hostile
    w = _Watch(h)
    orig = mg.small_ct()
    meta = mg.to_xml(orig.ds, namer=mg.BulkNamer(h.location_url))
    meta.body = meta.body.replace(orig.uids["study"].encode(), b"../../etc")
    assert b"../../etc" in meta.body
    resp = w.call("xml ../../etc", lambda: mg.post_xml(h, [meta]))
    check_answer(h, resp, 409, failed=[("A900", None, None)])
    assert not os.path.lexists(os.path.normpath(os.path.join(str(h.archive), "../../etc",
                                                             orig.uids["series"])))
    w.check()


PATHS = ["/..%2F..%2Fx", "/%2e%2e%2f%2e%2e%2fx", "/..%5c..%5cx", "/1.2.3%2F..%2F..%2Fx",
         "/1.2.3%00", "/../../../../etc", "/1.2.3/../../..", "/..", "/%2e%2e",
         "/1.2.3/", "/%2Fetc"]


@pytest.mark.parametrize("server", ["encoded-slashes-nodecode", "default"])
@pytest.mark.parametrize("path", PATHS)
def test_910_13_study_path_that_leaves_the_archive(hostile, httpd, server, path):
    """POST to .../studies/<path syntax>: 400 or 404 (from the module, or
    from httpd before it), never an instance stored, nothing created."""
    h = hostile if server != "default" else httpd
    w = _Watch(h, n_children=len(_children(h)) if server == "default" else 2)
    a, ua = g.ct_image(rows=8, cols=8)
    resp = w.call(path, lambda: mime.stow(h.port, mime.dicom_body([a]),
                                          path=STOW_PATH + path))
    assert resp.status in (400, 404), resp
    h.assert_not_stored(ua)
    w.check()


# ------------------------------------------------------------- slow drip
def _reqtimeout():
    return ('LoadModule reqtimeout_module "%s/mod_reqtimeout.so"\n'
            "RequestReadTimeout header=10 body=2,MinRate=1000\n" % libexecdir())


def _drip(h, body, lead, chunked, limit=20.0 * TIME_FACTOR):
    """Send the head and @lead bytes of @body at once, then one byte every
    0.5 s until the server answers or closes. @return (seconds from the
    first dripped byte, bytes of body sent, what came back)."""
    s = socket.create_connection(("127.0.0.1", h.port), timeout=30)
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            % (STOW_PATH, mime.content_type("myboundary")))
    head += ("Transfer-Encoding: chunked\r\n\r\n" if chunked
             else "Content-Length: %d\r\n\r\n" % len(body))
    got = b""
    try:
        s.sendall(head.encode() + (b"%x\r\n" % len(body) if chunked else b"") + body[:lead])
        t0 = time.monotonic()
        i = lead
        while time.monotonic() - t0 < limit:
            r, _, _ = select.select([s], [], [], 0.5)
            if r:
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    break
                if not d:
                    break
                got += d
                continue
            if i < len(body):
                try:
                    s.sendall(body[i:i + 1])
                except OSError:
                    break
                i += 1
        return time.monotonic() - t0, i, got
    finally:
        s.close()


@pytest.mark.parametrize("where", ["from-start", "after-first-instance", "chunked",
                                   "in-part-headers"])
def test_910_14_slow_drip_cut_by_reqtimeout(make_httpd, where):
    """mod_reqtimeout with body=2,MinRate=1000 and a client dripping one
    byte every 0.5 s: the server gives up within a few seconds with 408
    (text/plain) or by closing, the spool is empty, nothing of the dripped
    part is on disk, an instance completed before stays, and the next
    request is served."""
    h = make_httpd(conf_extra=_reqtimeout() + FIXED_CHILDREN)
    w = _Watch(h)
    a, ua = g.ct_image(rows=8, cols=8)
    b, ub = g.ct_image(rows=64, cols=64, study=ua["study"])
    body = mime.dicom_body([a, b])
    lead = {"from-start": 0, "chunked": 0,
            "after-first-instance": body.index(b) + 100,
            "in-part-headers": body.index(b) - 20}[where]
    took, sent, got = w.call(where, lambda: _drip(h, body, lead, where == "chunked"))
    assert sent < len(body)
    assert took < 8.0 * TIME_FACTOR, "still reading a dripping body after %.1f s" % took
    if got:
        assert got.startswith(b"HTTP/1.1 408 "), got[:200]
        assert b"text/plain" in got and b"<html" not in got.lower(), got[:400]
    stored = [ua] if where in ("after-first-instance", "in-part-headers") else []
    for u in stored:
        h.assert_stored(a, u)
    h.assert_not_stored(ub)
    assert h.wait_log("STOWRS0301", since=w.mark, timeout=3.0), \
        "no STOWRS0301 (body read failed) line"
    w.check(stored=stored)
