#!/usr/bin/python3
"""Seed corpora for the fuzz targets (fuzz/README.md).

    /usr/bin/python3 fuzz/gen_corpus.py [TARGET...]

writes real-looking inputs into fuzz/corpus/<target>/, each named by the
sha256 of its content (nghttp2/nghttp2 fuzz/README.rst), so running it
again adds only what is new. DICOM data comes from the test suite's pydicom
factories (t/dicomgen.py, t/metagen.py) with fixed UIDs, bodies are framed
like the clients of DESIGN.md's appendix frame them (t/mime.py).
"""

import base64
import hashlib
import json
import os
import pathlib
import random
import struct
import sys
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "t"))
warnings.simplefilter("ignore")

import dicomgen as g  # noqa: E402
import metagen as mg  # noqa: E402
import mime  # noqa: E402

random.seed(4711)

STUDY = "1.2.826.0.1.3680043.8.498.10001"
SERIES = "1.2.826.0.1.3680043.8.498.10002"
SOP = "1.2.826.0.1.3680043.8.498.10003"
UIDS = dict(study=STUDY, series=SERIES, sop=SOP)
PIX = dict(UIDS, rows=8, cols=8, pixel_bytes=bytes(range(128)))
CRLF = b"\r\n"


def write(target, data):
    d = ROOT / "fuzz" / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    name = hashlib.sha256(data).hexdigest()
    p = d / name
    if not p.exists():
        p.write_bytes(data)
        return 1
    return 0


# ------------------------------------------------------------------ DICOM
def small_ct(ts=g.ExplicitVRLittleEndian, **kw):
    args = dict(UIDS, rows=8, cols=8, transfer_syntax=ts,
                pixel_bytes=bytes(range(128)))
    args.update(kw)
    return g.ct_image(**args)[0]


def with_ts(data, ts):
    """@data with its meta header rewritten to name transfer syntax @ts and
    the dataset bytes kept: pydicom 2.3 refuses to write syntaxes it does
    not know (HTJ2K, the fragmentable MPEG ones)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.dataset import FileMetaDataset

    (glen,) = struct.unpack("<I", data[140:144])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = SOP
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = g.IMPLEMENTATION_UID
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return data[:132] + fp.getvalue() + data[144 + glen:]


def with_values(**attrs):
    """A small CT with attributes forced to given values, even invalid
    ones (t/dicomgen.py's with_values, with fixed UIDs and pixels)."""
    ds = g.ct_dataset(rows=8, cols=8, pixel_bytes=bytes(range(128)), **UIDS)
    for k, v in attrs.items():
        ds[k].value = v
    if "SOPInstanceUID" in attrs:
        ds.file_meta.MediaStorageSOPInstanceUID = attrs["SOPInstanceUID"]
    return g._write_meta_as_is(ds)


def dicom_seeds():
    ct = small_ct()
    seeds = [
        ct,
        small_ct(g.ImplicitVRLittleEndian),
        small_ct(g.ExplicitVRBigEndian),
        small_ct(g.DeflatedExplicitVRLittleEndian),
        small_ct("1.2.840.10008.1.2.4.50"),           # encapsulated JPEG baseline
        # HTJ2K and fragmentable MPEG2: unknown to dcmtk 3.6.7; and a
        # transfer syntax nobody knows
        with_ts(small_ct("1.2.840.10008.1.2.4.50"), "1.2.840.10008.1.2.4.201"),
        with_ts(small_ct("1.2.840.10008.1.2.4.50"), "1.2.840.10008.1.2.4.100.1"),
        with_ts(small_ct("1.2.840.10008.1.2.4.50"), "1.2.3.4.5.6.7"),
        g.sr_document(**UIDS)[0],
        g.sr_document(transfer_syntax=g.ImplicitVRLittleEndian, **UIDS)[0],
        g.no_preamble(**PIX)[0],
        g.meta_only(**PIX)[0],
        g.with_meta(meta_sop_instance="1.2.3.4", **PIX)[0],
        g.with_meta(meta_sop_class="1.2.840.10008.5.1.4.1.1.7", **PIX)[0],
        g.with_meta(meta_sop_instance="", **PIX)[0],
        with_values(SOPInstanceUID="1..2"),
        with_values(SOPInstanceUID="1.2.3.04"),
        with_values(StudyInstanceUID="1." + "2" * 70),          # overlong
        with_values(StudyInstanceUID="1.2\\3.4"),                # two values
        with_values(StudyInstanceUID="1.2.826.0.1.3680043.8.498." + "1" * 5000),
        small_ct(SeriesInstanceUID=None),
        small_ct(SOPClassUID=None),
        small_ct(sop_class="1.2.3.4.5"),
    ]
    # truncated: inside the preamble, the meta header, the dataset, pixel data
    for at in (0, 100, 131, 132, 140, 150, 200, len(ct) // 2, len(ct) - 100, len(ct) - 1):
        seeds.append(ct[:at])
    # the group length off by two in both directions
    gl = struct.unpack("<I", ct[140:144])[0]
    seeds.append(ct[:140] + struct.pack("<I", gl + 2) + ct[144:])
    seeds.append(ct[:140] + struct.pack("<I", gl - 2) + ct[144:])
    seeds.append(b"\0" * 128 + b"DICM")
    seeds.append(b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00")
    return [s for s in seeds if len(s) < 20000]


# -------------------------------------------------------------- multipart
def mp_input(body, boundary=b"myboundary", opts=b"\x00\x00\x00\x00\x00"):
    if isinstance(boundary, str):
        boundary = boundary.encode("latin-1")
    return opts + boundary + b"\n" + body


def part(headers, data):
    return (headers, data)


def multipart_seeds(dicom):
    tiny = dicom[0][:400]                  # a DICOM-looking start
    uuid_b = "7f3c9a52-0d2e-4c11-9b1e-2f6d8a1c0e44"
    xml = mg.to_xml(mg.small_ct(rows=4, cols=4, pixel_bytes=bytes(32), **UIDS).ds,
                    namer=mg.BulkNamer(base="http://host/rs", token="t"))
    pixel = xml.bulk[0]
    bodies = [
        # dcm4che stowrs: leading CRLF, final CRLF
        (mime.multipart_body([(None, tiny)], boundary="myboundary"), "myboundary"),
        # Python dicomweb-client: uuid boundary, no final CRLF, two parts
        (mime.multipart_body([(None, tiny), (None, b"DICM" * 8)], boundary=uuid_b,
                             final_crlf=False), uuid_b),
        # curl by hand: "--boundary" at offset 0
        (mime.multipart_body([(None, tiny)], boundary="b", leading_crlf=False), "b"),
        # dcm4chee-arc as a client: transfer-syntax parameter
        (mime.multipart_body([({"Content-Type": "application/dicom;transfer-syntax="
                                "1.2.840.10008.1.2.1"}, tiny)], boundary="----=_Part_0"),
         "----=_Part_0"),
        # metadata + bulk data
        (mime.multipart_body([({"Content-Type": "application/dicom+xml"}, xml.body[:1500]),
                              ({"Content-Type": pixel.content_type,
                                "Content-Location": pixel.location},
                               pixel.data[:64])], boundary="meta"), "meta"),
        # preamble and epilogue, Content-Length and start
        (mime.multipart_body([({"Content-Type": "application/dicom", "Content-Length": "4",
                                "Content-ID": "<root>"}, b"DICM")], boundary="x",
                             preamble=b"This is a preamble.", epilogue=b"epilogue\r\n"), "x"),
        # empty parts, an empty header block
        (b"--e\r\n\r\n\r\n--e\r\nContent-Type: application/dicom\r\n\r\n\r\n--e--", "e"),
        # padding after the boundary, folded header
        (b"\r\n--p  \t\r\nContent-Type:\r\n application/dicom\r\nX-A: 1\r\n\r\nDATA"
         b"\r\n--p-- \r\n", "p"),
        # boundary-like data inside a part
        (b"--bb\r\n\r\nab\r\n--bbX\r\n--b\r\n-\r\n--bb--\r\n", "bb"),
        # errors: LF only, no delimiter, close first, truncated, bad delimiter,
        # header without colon, NUL in header, bare CR
        (b"--lf\nContent-Type: application/dicom\n\nDATA\n--lf--\n", "lf"),
        (b"no delimiter at all", "nd"),
        (b"--c--\r\n", "c"),
        (b"--t\r\nContent-Type: application/dicom\r\n\r\nDAT", "t"),
        (b"--d\r\n\r\nx\r\n--dz", "d"),
        (b"--h\r\nContent-Type application/dicom\r\n\r\nx\r\n--h--", "h"),
        (b"--n\r\nA: \0\r\n\r\nx\r\n--n--", "n"),
        (b"--r\r\nA: b\rc\r\n\r\nx\r\n--r--", "r"),
        (b"--s\r\n: v\r\n\r\nx\r\n--s--", "s"),
        (b"--f\r\n folded first\r\n\r\nx\r\n--f--", "f"),
    ]
    seeds = []
    for body, boundary in bodies:
        seeds.append(mp_input(body, boundary))
    # the same bodies under other chunkings and limits
    base = mp_input(bodies[1][0], bodies[1][1])
    for opts in (b"\x00\x11\x11\x11\x00", b"\x00\xab\xcd\xef\x00", b"\x00\xcc\xcc\xcc\x00",
                 b"\x00\xde\xde\xde\x00", b"\x03\x00\x00\x00\x00", b"\x08\x00\x00\x00\x00",
                 b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x42", b"\x00\x00\x00\x00\x03",
                 b"\x00\x88\x98\x88\x00"):
        seeds.append(opts + base[5:])
    many = mime.multipart_body([(None, b"x")] * 20, boundary="m")
    seeds.append(mp_input(many, "m", b"\x10\x12\x34\x56\x00"))
    return seeds


# ----------------------------------------------------------- Content-Type
CONTENT_TYPES = [
    'multipart/related; type="application/dicom"; boundary=myboundary',
    'multipart/related; type="application/dicom"; boundary="7f3c9a52-0d2e-4c11-9b1e-2f6d8a1c0e44"',
    'multipart/related; type=application/dicom; boundary=----=_Part_0_1234.5678',
    'multipart/related; type=application/dicom+xml; boundary=meta',
    'Multipart/Related; Type="application/dicom"; start="<root@host>"; '
    'start-info="x"; charset=utf-8; boundary="a b"',
    'multipart/related ; boundary = "q\\"uo\\\\te" ; type = "application/dicom"',
    'multipart/related;boundary=;type=application/dicom',
    'multipart/related; boundary=' + "x" * 70,
    'multipart/related; boundary=' + "x" * 71,
    'multipart/related; type="application/dicom"; boundary=a; boundary=b',
    'multipart/related;;type="application/dicom";',
    'application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50',
    'application/dicom',
    'multipart/related; boundary="unterminated',
    'multipart/related; boundary=x:y/z=w',
    # Accept values
    'application/dicom+json',
    'application/dicom+xml, application/dicom+json;q=0.9',
    'application/json;q=0.5, application/xml;q=0.4',
    '*/*;q=0.1, text/html',
    'multipart/related; type="application/dicom+xml"',
    'application/dicom+json;q=0, application/dicom+xml;q=0',
    'text/*, application/*;q=0.999',
    'application/dicom+json; q=1.000, application/dicom+xml; q=1',
    ' , ,, ',
]


# ----------------------------------------------------------- metadata
def meta_seeds():
    namer = mg.BulkNamer(base="http://host:8080/dcm4chee-arc/aets/DCM4CHEE/rs", token="s")
    originals = [mg.small_ct(rows=4, cols=4, pixel_bytes=bytes(32), **UIDS),
                 mg.basic_text_sr(**UIDS),
                 mg.encapsulated_pdf(size=1000, **UIDS)]
    xml, js = [], []
    for o in originals:
        xml.append(mg.to_xml(o.ds, namer=namer).body)
        xml.append(mg.to_xml(o.ds, namer=namer, threshold=1 << 30, keyword=False).body)
        js.append(json.dumps([mg.to_json(o.ds, namer=namer).obj]).encode())
        js.append(json.dumps(mg.to_json(o.ds, namer=namer, threshold=1 << 30).obj).encode())
    ns = 'xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"'
    xml += [
        ('<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel %s>'
         '<DicomAttribute tag="00100010" vr="PN" keyword="PatientName"><PersonName number="1">'
         '<Alphabetic><FamilyName>Doe</FamilyName><GivenName>J</GivenName></Alphabetic>'
         '<Ideographic><FamilyName>&#x5C71;&#x7530;</FamilyName></Ideographic>'
         '</PersonName></DicomAttribute>'
         '<DicomAttribute tag="00280009" vr="AT"><Value number="1">00181063</Value></DicomAttribute>'
         '<DicomAttribute tag="00091001" vr="OB" privateCreator="X"><InlineBinary>AAEC'
         '</InlineBinary></DicomAttribute>'
         '<DicomAttribute tag="7FE00010" vr="OW"><BulkData uri="bulk/1"/></DicomAttribute>'
         '</NativeDicomModel>' % ns).encode(),
        b'<!DOCTYPE x [<!ENTITY a "b">]><NativeDicomModel/>',
        b'<?xml version="1.0"?><!-- c --><NativeDicomModel><![CDATA[x]]></NativeDicomModel>',
        b'\xef\xbb\xbf<NativeDicomModel><DicomAttribute tag="00081199" vr="SQ">'
        b'<Item number="1"><DicomAttribute tag="00081150" vr="UI"><Value number="1">1.2'
        b'</Value></DicomAttribute></Item><Item number="2"/></DicomAttribute>'
        b'</NativeDicomModel>',
        b'<NativeDicomModel xmlns="urn:other"/>',
        b'<NativeDicomModel>' + b'<DicomAttribute tag="00081199" vr="SQ"><Item number="1">' * 33
        + b'</Item></DicomAttribute>' * 33 + b'</NativeDicomModel>',
    ]
    js += [
        b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^J","Ideographic":"\\u5c71"}]},'
        b'"00280009":{"vr":"AT","Value":["00181063"]},"00091001":{"vr":"OB",'
        b'"InlineBinary":"AAEC"},"7FE00010":{"vr":"OW","BulkDataURI":"bulk/1"},'
        b'"00181050":{"vr":"DS","Value":[0.1,"1e3",null]},"00280010":{"vr":"US","Value":[512]}}',
        b'[{"00080018":{"vr":"UI","Value":["1.2.3"]}}, 5, {"x":1}]',
        b'{"00080018":{"vr":"UI"},"00080018":{"vr":"UI"}}',
        b'[' + b'{"00081199":{"vr":"SQ","Value":[' * 34 + b'{}' + b']}}' * 34 + b']',
        b'[]',
    ]
    return xml, js


# ------------------------------------------------------------- response
def resp_string(s):
    if isinstance(s, str):
        s = s.encode("latin-1")
    s = s[:255]
    return bytes([len(s)]) + s


def resp_input(outcomes, base="http://host:8080/dcm4chee-arc/aets/DCM4CHEE/rs", no_base=False):
    out = bytes([len(outcomes) | (16 if no_base else 0)]) + resp_string(base)
    for flags, raw, cls, inst, study, series in outcomes:
        out += bytes([flags])
        if flags & 15 == 15:
            out += struct.pack(">H", raw)
        out += resp_string(cls) + resp_string(inst) + resp_string(study) + resp_string(series)
    return out


def response_seeds():
    ct = "1.2.840.10008.5.1.4.1.1.2"
    unk = "1.2.40.0.13.1.15.110.3.165.2"
    return [
        resp_input([]),
        resp_input([(0, 0, ct, SOP, STUDY, SERIES)]),
        resp_input([(0, 0, ct, SOP, STUDY, SERIES), (0x40, 0, ct, SOP + "1", STUDY, SERIES)]),
        resp_input([(0, 0, ct, SOP, STUDY, SERIES), (4, 0, unk, "2.25.1234", "", "")]),
        resp_input([(7, 0, ct, SOP, "", ""), (0x37, 0, unk, "2.25.5", "", "")], no_base=True),
        resp_input([(15, 0xA701, ct, SOP, STUDY, SERIES), (8, 0, ct, SOP, "1.2", "1.3")]),
        resp_input([(0, 0, ct, SOP, STUDY, SERIES), (0, 0, ct, "1.2", "9.9", SERIES)]),
        resp_input([(13, 0, '<&">\'', "]]>", "a\r\nb", "\x00hidden")]),
        resp_input([(0, 0, "\xc3\xa9\xff\x7f", "\t", STUDY + "<", "&amp;")],
                   base="http://h/<rs>&\"x\""),
        resp_input([(i % 15, 0, ct, "%s.%d" % (SOP, i), STUDY, SERIES) for i in range(7)]),
    ]


def main(targets):
    dicom = dicom_seeds()
    xml, js = meta_seeds()
    sets = {
        "fuzz_dicom_inspect": dicom,
        "fuzz_multipart": multipart_seeds(dicom),
        "fuzz_content_type": CONTENT_TYPES,
        "fuzz_meta_xml": xml,
        "fuzz_meta_json": js,
        "fuzz_response": response_seeds(),
    }
    for t, seeds in sets.items():
        if targets and t not in targets:
            continue
        n = sum(write(t, s) for s in seeds)
        print("%s: %d seeds, %d new" % (t, len(seeds), n))


if __name__ == "__main__":
    main(sys.argv[1:])
