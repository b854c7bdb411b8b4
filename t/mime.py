"""multipart/related bodies, a raw-socket HTTP/1.1 client and the STOW-RS
response parser used by the integration tests.

http.client cannot send chunks of an exact size or wait for 100 Continue, so
send() speaks HTTP/1.1 itself, one connection per request.
"""

import json
import select
import socket
import threading

from stowrs_env import STOW_PATH

NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
CRLF = b"\r\n"


# ---------------------------------------------------------------- bodies
def _header_items(headers):
    if headers is None:
        return [("Content-Type", "application/dicom")]
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _b(s):
    return s if isinstance(s, (bytes, bytearray)) else str(s).encode("latin-1")


def part_head(headers):
    """The header block of one part, without the delimiter, ending in CRLF CRLF."""
    out = b""
    for name, value in _header_items(headers):
        out += _b(name) + b": " + _b(value) + CRLF
    return out + CRLF


def _framing(n_parts, boundary, preamble, leading_crlf):
    """(prefix of part i) for each part, and the closing bytes, as a list."""
    bnd = _b(boundary)
    pre = []
    for i in range(n_parts):
        if i == 0:
            start = _b(preamble) + (CRLF if leading_crlf else b"")
            pre.append(start + b"--" + bnd + CRLF)
        else:
            pre.append(CRLF + b"--" + bnd + CRLF)
    return pre


def multipart_body(parts, boundary="myboundary", preamble=b"", leading_crlf=True,
                   final_crlf=True, epilogue=b""):
    """A multipart/related body.

    @param parts list of (headers, data); headers a dict, a list of
           (name, value) or None for "Content-Type: application/dicom"
    @param leading_crlf start with CRLF (after the preamble), as dcm4che and
           dicomweb-client do; False gives curl's "--boundary" at offset 0
    @param final_crlf   end the close delimiter with CRLF
    """
    bnd = _b(boundary)
    pre = _framing(len(parts), bnd, preamble, leading_crlf)
    out = bytearray()
    for (headers, data), p in zip(parts, pre):
        out += p + part_head(headers) + _b(data)
    if not parts:
        out += _b(preamble) + (CRLF if leading_crlf else b"")
        out += b"--" + bnd + b"--"
    else:
        out += CRLF + b"--" + bnd + b"--"
    if final_crlf:
        out += CRLF
    out += _b(epilogue)
    return bytes(out)


def dicom_body(instances, boundary="myboundary", **kw):
    """multipart_body of application/dicom parts from a list of bytes."""
    return multipart_body([(None, d) for d in instances], boundary, **kw)


def multipart_stream(parts, boundary="myboundary", preamble=b"", leading_crlf=True,
                     final_crlf=True, epilogue=b""):
    """Like multipart_body but parts may be (headers, iterable, length) so
    that a large instance is streamed. @return (total_length, iterator)."""
    bnd = _b(boundary)
    pre = _framing(len(parts), bnd, preamble, leading_crlf)
    total = 0
    norm = []
    for part, p in zip(parts, pre):
        if len(part) == 3:
            headers, data, length = part
        else:
            headers, data = part
            length = len(data)
        head = p + part_head(headers)
        total += len(head) + length
        norm.append((head, data))
    tail = CRLF + b"--" + bnd + b"--" + (CRLF if final_crlf else b"") + _b(epilogue)
    total += len(tail)

    def gen():
        for head, data in norm:
            yield head
            if isinstance(data, (bytes, bytearray, memoryview)):
                yield bytes(data)
            else:
                for chunk in data:
                    yield chunk
        yield tail
    return total, gen()


def content_type(boundary, root="application/dicom", quoted_type=True,
                 quoted_boundary=False, extra=""):
    """Content-Type of a STOW-RS request. @param extra appended verbatim
    (e.g. '; start="<x>"')."""
    t = '"%s"' % root if quoted_type else root
    b = '"%s"' % boundary if quoted_boundary else boundary
    v = "multipart/related; type=%s; boundary=%s" % (t, b)
    return v + extra


# ---------------------------------------------------------------- HTTP
class Response:
    def __init__(self):
        self.status = None
        self.reason = None
        self.version = None
        self.headers = []          # list of (name, value), repeated ones kept
        self.body = b""
        self.got_continue = False  # a 100 Continue arrived
        self.interim = []          # statuses of 1xx responses
        self.send_error = None     # what writing the body ran into, if anything
        self.body_sent = False     # the whole body was written

    def header(self, name):
        """First value of a header (case-insensitive), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def headers_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def content_type(self):
        return self.header("Content-Type")

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self):
        return "<Response %s %s %r %r>" % (self.status, self.reason, self.headers,
                                           self.body[:300])


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readline(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("connection closed in a response line: %r" % self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed in a response body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_all(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


def _read_head(reader):
    """(version, status, reason, headers) of the next response head."""
    line = reader.readline()
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError("bad status line %r" % line)
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    while True:
        line = reader.readline()
        if not line:
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return version, status, reason, headers


def _read_body(reader, resp, method):
    if method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
        return b""
    te = (resp.header("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        out = bytearray()
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while reader.readline():
                    pass
                return bytes(out)
            out += reader.read(size)
            reader.readline()
    cl = resp.header("Content-Length")
    if cl is not None:
        return reader.read(int(cl))
    return reader.read_all()


def _chunks_exact(body, size):
    """Re-cut bytes or an iterable of bytes into pieces of exactly @size
    (the last may be shorter)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        mv = memoryview(bytes(body))
        for i in range(0, len(mv), size):
            yield mv[i:i + size]
        return
    pending = bytearray()
    for piece in body:
        pending += piece
        if len(pending) >= size:
            n = len(pending) - len(pending) % size
            mv = memoryview(bytes(pending[:n]))
            for i in range(0, n, size):
                yield mv[i:i + size]
            del pending[:n]
    if pending:
        yield memoryview(bytes(pending))


def _body_wire(body, chunk_size, chunked):
    """Yield the bytes to write, coalesced into writes of about 64 KiB."""
    buf = bytearray()
    if chunked:
        src = _chunks_exact(body, chunk_size) if chunk_size else (
            memoryview(p) for p in ([body] if isinstance(body, (bytes, bytearray)) else body))
        for c in src:
            if not len(c):
                continue
            buf += b"%x\r\n" % len(c)
            buf += c
            buf += b"\r\n"
            if len(buf) >= 65536:
                yield bytes(buf)
                buf.clear()
        buf += b"0\r\n\r\n"
        yield bytes(buf)
        return
    if isinstance(body, (bytes, bytearray, memoryview)):
        yield bytes(body)
        return
    for piece in body:
        if len(piece) >= 65536:
            if buf:
                yield bytes(buf)
                buf.clear()
            yield piece
            continue
        buf += piece
        if len(buf) >= 65536:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def send(port, method, path, headers=None, body=None, chunk_size=None,
         expect_continue=False, timeout=60, content_length=None,
         host="127.0.0.1", chunked=None):
    """One HTTP/1.1 request on a fresh connection; @return Response.

    @param headers dict or list of (name, value); a Content-Length or
           Transfer-Encoding given here is sent as is and none is added
    @param body bytes, an iterable of bytes, or None
    @param chunk_size send Transfer-Encoding: chunked in chunks of exactly
           this many bytes
    @param content_length for an iterable body without chunk_size
           (otherwise an iterable is sent chunked as it comes)
    @param expect_continue send "Expect: 100-continue" and the body only
           after 100 Continue (or after 3 s of silence)
    """
    hdrs = _header_items(headers) if headers is not None else []
    names = {n.lower() for n, _ in hdrs}
    if chunked is None:
        chunked = chunk_size is not None or (
            body is not None and not isinstance(body, (bytes, bytearray, memoryview))
            and content_length is None)
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    if "host" not in names:
        head += "Host: %s:%d\r\n" % (host, port)
    for n, v in hdrs:
        head += "%s: %s\r\n" % (n, v)
    if body is not None and "content-length" not in names \
            and "transfer-encoding" not in names:
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            length = len(body) if content_length is None else content_length
            head += "Content-Length: %d\r\n" % length
    if expect_continue and "expect" not in names:
        head += "Expect: 100-continue\r\n"
    head += "\r\n"

    resp = Response()
    sock = socket.create_connection((host, port), timeout=timeout)
    reader = _Reader(sock)
    sender = None
    try:
        sock.sendall(head.encode("latin-1"))

        def write_body():
            try:
                for piece in _body_wire(body, chunk_size, chunked):
                    sock.sendall(piece)
                resp.body_sent = True
            except OSError as e:
                resp.send_error = e

        send_body = body is not None
        if send_body and expect_continue:
            r, _, _ = select.select([sock], [], [], 3.0)
            if r:
                version, status, reason, hs = _read_head(reader)
                if status == 100:
                    resp.got_continue = True
                    resp.interim.append(status)
                else:
                    # the final answer came first: the body is not sent
                    resp.version, resp.status, resp.reason, resp.headers = \
                        version, status, reason, hs
                    send_body = False
        if send_body:
            sender = threading.Thread(target=write_body, daemon=True)
            sender.start()
        while resp.status is None:
            version, status, reason, hs = _read_head(reader)
            if 100 <= status < 200:
                resp.interim.append(status)
                if status == 100:
                    resp.got_continue = True
                continue
            resp.version, resp.status, resp.reason, resp.headers = \
                version, status, reason, hs
        resp.body = _read_body(reader, resp, method)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if sender is not None:
            sender.join(timeout)
        sock.close()
    return resp


def send_raw(port, data, timeout=30, host="127.0.0.1"):
    """Write @data as is and return everything the server answers until it
    closes the connection (or @timeout)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(data)
        out = b""
        while True:
            try:
                d = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not d:
                break
            out += d
        return out
    finally:
        sock.close()


def stow(port, body, boundary="myboundary", path=STOW_PATH, accept=None,
         root="application/dicom", chunk_size=None, headers=None, **kw):
    """POST a multipart/related body; remaining keywords go to send()."""
    hdrs = [("Content-Type", content_type(boundary, root))]
    if accept is not None:
        hdrs.append(("Accept", accept))
    if headers:
        drop = {n.lower() for n, _ in _header_items(headers)}
        hdrs = [(n, v) for n, v in hdrs if n.lower() not in drop]
        hdrs += _header_items(headers)
    return send(port, "POST", path, hdrs, body, chunk_size=chunk_size, **kw)


# ---------------------------------------------------------------- responses
TAG_RETRIEVE_URL = "00081190"
TAG_FAILED_SEQ = "00081198"
TAG_REFERENCED_SEQ = "00081199"
TAG_SOP_CLASS = "00081150"
TAG_SOP_INSTANCE = "00081155"
TAG_FAILURE_REASON = "00081197"
_KNOWN = {
    TAG_RETRIEVE_URL: ("UR", "RetrieveURL"),
    TAG_FAILED_SEQ: ("SQ", "FailedSOPSequence"),
    TAG_REFERENCED_SEQ: ("SQ", "ReferencedSOPSequence"),
    TAG_SOP_CLASS: ("UI", "ReferencedSOPClassUID"),
    TAG_SOP_INSTANCE: ("UI", "ReferencedSOPInstanceUID"),
    TAG_FAILURE_REASON: ("US", "FailureReason"),
}


def _check_attr(tag, vr, keyword):
    if tag in _KNOWN:
        evr, ekw = _KNOWN[tag]
        assert vr == evr, "attribute %s has vr %r, expected %r" % (tag, vr, evr)
        if keyword is not None:
            assert keyword == ekw, "attribute %s has keyword %r, expected %r" % (
                tag, keyword, ekw)


def _xml_dataset(elem):
    """{tag: value} of a NativeDicomModel or Item element. Values: list of
    str for plain attributes, list of dicts for sequences."""
    out = {}
    for a in elem:
        if not isinstance(a.tag, str):
            continue  # comments
        assert a.tag == "{%s}DicomAttribute" % NS, "unexpected element %s" % a.tag
        tag = a.get("tag")
        vr = a.get("vr")
        assert tag and len(tag) == 8, "DicomAttribute without a tag"
        tag = tag.upper()
        _check_attr(tag, vr, a.get("keyword"))
        assert tag not in out, "attribute %s twice" % tag
        if vr == "SQ":
            items = []
            for n, item in enumerate([c for c in a if isinstance(c.tag, str)], 1):
                assert item.tag == "{%s}Item" % NS, "SQ child %s" % item.tag
                assert item.get("number") == str(n), \
                    "Item number %r, expected %d" % (item.get("number"), n)
                items.append(_xml_dataset(item))
            out[tag] = items
        else:
            values = []
            for n, v in enumerate([c for c in a if isinstance(c.tag, str)], 1):
                assert v.tag == "{%s}Value" % NS, "unexpected %s" % v.tag
                assert v.get("number") == str(n), \
                    "Value number %r, expected %d" % (v.get("number"), n)
                values.append(v.text or "")
            out[tag] = values
    return out


def _json_dataset(obj):
    assert isinstance(obj, dict), "DICOM JSON dataset is not an object"
    out = {}
    for tag, attr in obj.items():
        assert len(tag) == 8, "bad tag %r" % tag
        tag = tag.upper()
        vr = attr.get("vr")
        _check_attr(tag, vr, None)
        values = attr.get("Value", [])
        assert isinstance(values, list), "%s: Value is not an array" % tag
        if "Value" in attr:
            assert values, "%s: empty Value array (omit Value instead)" % tag
        if vr == "SQ":
            out[tag] = [_json_dataset(i) for i in values]
        elif vr in ("US", "UL", "SS", "SL", "FL", "FD"):
            for v in values:  # PS3.18 F.2.3: numbers, not strings
                assert isinstance(v, (int, float)) and not isinstance(v, bool), \
                    "%s (%s) value %r is not a JSON number" % (tag, vr, v)
            out[tag] = [str(v) for v in values]
        else:
            for v in values:
                assert isinstance(v, str), "%s (%s) value %r is not a string" % (tag, vr, v)
            out[tag] = values
    return out


def _single(ds, tag):
    v = ds.get(tag)
    if v is None:
        return None
    assert len(v) <= 1, "%s has %d values" % (tag, len(v))
    return v[0] if v else ""


def parse_stow_response(resp):
    """The Store Instances Response Module of a Response.

    @return {'format': 'xml'|'json', 'retrieve_url': str|None (None when
      absent, '' when present without value), 'referenced': [{'class',
      'instance', 'retrieve_url'}], 'failed': [{'class', 'instance',
      'reason': int}], 'dataset': the raw {tag: values}}
    """
    ct = resp.header("Content-Type")
    assert ct in ("application/dicom+xml", "application/dicom+json"), \
        "Content-Type %r is not exactly application/dicom+xml or +json" % ct
    if ct == "application/dicom+xml":
        from lxml import etree
        root = etree.fromstring(resp.body)
        assert root.tag == "{%s}NativeDicomModel" % NS, "root element %s" % root.tag
        ds = _xml_dataset(root)
        fmt = "xml"
    else:
        ds = _json_dataset(json.loads(resp.body.decode("utf-8")))
        fmt = "json"
    out = {"format": fmt, "retrieve_url": _single(ds, TAG_RETRIEVE_URL),
           "referenced": [], "failed": [], "dataset": ds}
    if TAG_REFERENCED_SEQ in ds:
        assert ds[TAG_REFERENCED_SEQ], "empty ReferencedSOPSequence is present"
    if TAG_FAILED_SEQ in ds:
        assert ds[TAG_FAILED_SEQ], "empty FailedSOPSequence is present"
    for item in ds.get(TAG_REFERENCED_SEQ, []):
        out["referenced"].append({
            "class": _single(item, TAG_SOP_CLASS),
            "instance": _single(item, TAG_SOP_INSTANCE),
            "retrieve_url": _single(item, TAG_RETRIEVE_URL),
        })
    for item in ds.get(TAG_FAILED_SEQ, []):
        reason = _single(item, TAG_FAILURE_REASON)
        out["failed"].append({
            "class": _single(item, TAG_SOP_CLASS),
            "instance": _single(item, TAG_SOP_INSTANCE),
            "reason": int(reason) if reason not in (None, "") else None,
        })
    return out
