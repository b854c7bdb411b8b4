"""Shared helpers of test_300_dicom, test_400_limits and test_500_study:
posting instances, checking a STOW-RS answer against DESIGN.md §3.6 in
every detail (status, both sequences, RetrieveURLs, FailureReason written
in decimal, one Warning header per failure) and snapshots of directory
trees.
"""

import collections
import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET

import mime
from stowrs_env import LOCATION, STOW_PATH

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
UNKNOWN_CLASS = "1.2.40.0.13.1.15.110.3.165.2"

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"

XML = "application/dicom+xml"
JSON = "application/dicom+json"

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
WARNING_RE = re.compile(r'^299 (\S+) "([0-9A-F]{4}): ([^"]+)"$')
NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def valid_uid(s):
    return isinstance(s, str) and 0 < len(s) <= 64 and bool(UID_RE.match(s))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def post(h, datas, accept=None, path=STOW_PATH, part_types=None, **kw):
    """POST @datas (list of bytes) as application/dicom parts to server @h.
    @part_types: per-part Content-Type values (default application/dicom)."""
    types = part_types or ["application/dicom"] * len(datas)
    body = mime.multipart_body([({"Content-Type": t}, d) for t, d in zip(types, datas)])
    return mime.stow(h.port, body, "myboundary", path=path, accept=accept, **kw)


def warnings_of(resp):
    """[hex] of the Warning headers; every one must be a well-formed
    `299 <server> "<HEX>: <text>"`, one header line each."""
    out = []
    for v in resp.headers_all("Warning"):
        m = WARNING_RE.match(v.strip())
        assert m, "malformed Warning header %r" % v
        out.append(m.group(2))
    return out


def raw_failure_reasons(resp):
    """FailureReason values exactly as the body writes them: XML element
    text must be decimal digits, a JSON value must be an integer."""
    ctype = resp.header("Content-Type")
    vals = []
    if ctype == JSON:
        doc = json.loads(resp.body)
        for it in doc.get("00081198", {}).get("Value", []):
            fr = it["00081197"]
            assert fr["vr"] == "US", fr
            assert len(fr["Value"]) == 1, fr
            assert type(fr["Value"][0]) is int, "FailureReason not a JSON integer: %r" % fr
            vals.append(fr["Value"][0])
        return vals
    assert ctype == XML, ctype
    root = ET.fromstring(resp.body)
    for attr in root.iter(NS + "DicomAttribute"):
        if attr.get("tag", "").upper() == "00081197":
            assert attr.get("vr") == "US"
            v = attr.find(NS + "Value")
            assert v is not None and v.get("number") == "1"
            assert re.fullmatch(r"[0-9]+", v.text or ""), \
                "FailureReason %r is not decimal" % v.text
            vals.append(int(v.text))
    return vals


def instance_url(h, uids, location=LOCATION):
    return "%s%s/studies/%s/series/%s/instances/%s" % (
        h.base_url, location, uids["study"], uids["series"], uids["sop"])


def check_answer(h, resp, status, stored=(), failed=(), location=LOCATION,
                 strict_uids=True):
    """Check a STOW-RS answer completely.

    @param stored uids dicts (study, series, sop, sop_class) expected in the
           ReferencedSOPSequence
    @param failed (hex, class, instance) expected in the FailedSOPSequence;
           class/instance None: only a valid UID is required
    @param strict_uids every failed item names a valid class and instance
           UID (False where the instance sent has an invalid one the server
           may echo)
    @return the parsed response
    """
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    assert resp.header("Content-Type") in (XML, JSON), resp
    r = mime.parse_stow_response(resp)
    # ReferencedSOPSequence
    want = collections.Counter((u["sop_class"], u["sop"]) for u in stored)
    got = collections.Counter((x["class"], x["instance"]) for x in r["referenced"])
    assert got == want, "referenced %s, expected %s" % (r["referenced"], stored)
    for u in stored:
        item = [x for x in r["referenced"] if x["instance"] == u["sop"]][0]
        assert item["retrieve_url"] == instance_url(h, u, location), item
    # RetrieveURL of the study: one study stored -> its URL, else empty
    assert r["retrieve_url"] is not None, "RetrieveURL (0008,1190) missing"
    studies = {u["study"] for u in stored}
    if len(studies) == 1:
        assert r["retrieve_url"] == "%s%s/studies/%s" % (h.base_url, location,
                                                        studies.pop()), r["retrieve_url"]
    else:
        assert r["retrieve_url"] == "", r["retrieve_url"]
    # FailedSOPSequence
    assert len(r["failed"]) == len(failed), "failed %s, expected %s" % (r["failed"], failed)
    rest = list(r["failed"])
    for hexcode, cls, inst in failed:
        match = [x for x in rest if x["reason"] == int(hexcode, 16)
                 and (cls is None or x["class"] == cls)
                 and (inst is None or x["instance"] == inst)]
        assert match, "no failure %s/%s/%s in %s" % (hexcode, cls, inst, r["failed"])
        rest.remove(match[0])
    for x in r["failed"]:
        assert valid_uid(x["class"]), x
        if strict_uids:
            assert valid_uid(x["instance"]), x
        else:
            assert x["instance"], x
    # FailureReason decimal, the same numbers as parsed
    assert sorted(raw_failure_reasons(resp)) == sorted(x["reason"] for x in r["failed"])
    # one Warning per failure, same codes
    assert sorted(warnings_of(resp)) == sorted(f[0] for f in failed), resp.headers
    if status == 503:
        assert resp.header("Retry-After"), resp.headers
    return r


def tree_snapshot(root):
    """Every path below @root, relative, with whether it is a directory."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out.add((os.path.relpath(p, root), os.path.isdir(p)))
    return out


def file_state(path):
    """(inode, mtime_ns, size, sha256) of a file."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size, file_sha256(path)


def write_as_is(ds):
    """PS3.10 bytes of a dicomgen FileDataset with its file meta exactly as
    set (pydicom would otherwise copy the dataset's SOP Class/Instance UIDs,
    even empty ones, into the meta header)."""
    import io
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "FileMetaInformationGroupLength" not in ds.file_meta:
            ds.file_meta.FileMetaInformationGroupLength = 0
        if "FileMetaInformationVersion" not in ds.file_meta:
            ds.file_meta.FileMetaInformationVersion = b"\x00\x01"
        buf = io.BytesIO()
        ds.save_as(buf, write_like_original=True)
        return buf.getvalue()


def ct_with(rows=8, cols=8, **attrs):
    """A CT image whose dataset attributes are forced (value None deletes)
    while its meta header keeps the original, valid SOP Class and Instance
    UIDs. @return (bytes, uids of the meta header and original dataset)"""
    import warnings
    import dicomgen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dicomgen.ct_dataset(rows=rows, cols=cols)
        uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
                "sop": ds.SOPInstanceUID, "sop_class": ds.SOPClassUID}
        for k, v in attrs.items():
            if v is None:
                delattr(ds, k)
            else:
                ds[k].value = v
        return write_as_is(ds), uids
