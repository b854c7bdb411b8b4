"""The dcmtk shim (stowrs_dicom.cc) through its test CLI t/unit/dicom_inspect.

Files are made with pydicom into tmp_path; the CLI prints one JSON object per
file. dcmtk must never write to stderr, and inspecting a large file must not
load its values into memory.
"""
import json
import os
import struct
import subprocess
import zlib

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(TOP, "t", "unit", "dicom_inspect")

CT = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
MPEG2_MPML_F = "1.2.840.10008.1.2.4.100.1"
# encapsulated syntaxes of the default accepted lists that dcmtk 3.6.7 does
# not know; the shim reads them as a known encapsulated syntax
UNKNOWN_TO_DCMTK = (MPEG2_MPML_F, "1.2.840.10008.1.2.4.101.1",
                    "1.2.840.10008.1.2.4.102.1", "1.2.840.10008.1.2.4.103.1",
                    "1.2.840.10008.1.2.4.104.1", "1.2.840.10008.1.2.4.105.1",
                    "1.2.840.10008.1.2.4.106.1", HTJ2K_LOSSLESS,
                    "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")

FIELDS = ("rc", "err", "meta_sop_class_uid", "meta_sop_instance_uid",
          "transfer_syntax_uid", "sop_class_uid", "sop_instance_uid",
          "study_instance_uid", "series_instance_uid", "overlong",
          "meta_readable", "category")

_counter = [0]


def uid(n=None):
    """A fresh valid UID (odd length by default, so pydicom pads it with NUL)."""
    _counter[0] += 1
    u = "1.2.826.0.1.3680043.10.1010.%d.%d" % (os.getpid(), _counter[0])
    if n is not None:
        u = (u + ".1" + "1" * n)[:n]
        if u.endswith("."):
            u = u[:-1] + "1"
    return u


@pytest.fixture(scope="module")
def cli():
    # another build of the CLI (e.g. with sanitizers) may be named here
    if os.environ.get("STOWRS_DICOM_INSPECT"):
        return os.environ["STOWRS_DICOM_INSPECT"]
    r = subprocess.run(["make", "-s", "t/unit/dicom_inspect"], cwd=TOP,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    return CLI


def run(cli, *paths, args=()):
    r = subprocess.run([cli, *args, *[str(p) for p in paths]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, r
    assert r.stderr == b"", "dcmtk wrote to stderr: %r" % r.stderr
    lines = r.stdout.decode().splitlines()
    assert len(lines) == len(paths) or args
    return [json.loads(line) for line in lines]


def inspect1(cli, path):
    (res,) = run(cli, path)
    for f in FIELDS:
        assert f in res
    return res


# --- file factories ---------------------------------------------------------

def ct_dataset(rows=16, cols=16, pixels=True, **uids):
    ds = Dataset()
    ds.SOPClassUID = uids.get("sop_class", CT)
    ds.SOPInstanceUID = uids.get("sop", uid())
    ds.StudyDate = "20240101"
    ds.Modality = "CT"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "ID0001"
    ds.StudyInstanceUID = uids.get("study", uid())
    ds.SeriesInstanceUID = uids.get("series", uid())
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if pixels:
        ds.PixelData = bytes(range(256)) * (rows * cols * 2 // 256) \
            + bytes(rows * cols * 2 % 256)
    return ds


def sr_dataset():
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = uid()
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.Modality = "SR"
    ds.PatientName = "Test^Report"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    concept = Dataset()
    concept.CodeValue = "11528-7"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Radiology Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "No findings."
    ds.ContentSequence = Sequence([item])
    return ds


def meta_for(ds, ts=EXPLICIT, meta_class=None, meta_instance=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_class or ds.get("SOPClassUID", CT)
    meta.MediaStorageSOPInstanceUID = meta_instance or ds.get("SOPInstanceUID", uid())
    if ts is not None:
        meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1010"
    return meta


def dataset_bytes(ds, ts=EXPLICIT):
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = ts == IMPLICIT
    write_dataset(fp, ds)
    data = fp.getvalue()
    if ts == DEFLATED:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(data) + c.flush()
        if len(data) % 2:
            data += b"\0"
    return data


def meta_bytes(meta, enforce=True):
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=enforce)
    return fp.getvalue()


def part10(ds, ts=EXPLICIT, meta=None, enforce=True, **kw):
    """Preamble + DICM + meta header + dataset, as bytes."""
    meta = meta if meta is not None else meta_for(ds, ts, **kw)
    return b"\0" * 128 + b"DICM" + meta_bytes(meta, enforce) + dataset_bytes(ds, ts)


def encapsulated(ds, ts, frames):
    """ds with encapsulated Pixel Data (undefined length) as a PS3.10 file.

    Not Dataset.save_as(): pydicom 2.3 refuses transfer syntaxes it does not
    know (HTJ2K, the fragmentable MPEG ones); the dataset is written in
    Explicit VR Little Endian, as they all are.
    """
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return part10(ds, ts)


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def meta_end(data):
    """Offset of the first dataset byte (group length of the meta header)."""
    assert data[132:136] == b"\x02\x00\x00\x00"
    (glen,) = struct.unpack("<I", data[140:144])
    return 144 + glen


def element_header(tag, vr, length):
    group, elem = tag
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, length)
    return struct.pack("<HH2sH", group, elem, vr.encode(), length)


# --- tests ------------------------------------------------------------------

def test_010_01_valid_ct(cli, tmp_path):
    ds = ct_dataset()
    p = write(tmp_path, "ct.dcm", part10(ds))
    r = inspect1(cli, p)
    assert r["rc"] == "OK", r
    assert r["err"] == ""
    assert r["meta_readable"] == 1 and r["overlong"] == 0
    assert r["meta_sop_class_uid"] == CT == r["sop_class_uid"]
    assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID == r["sop_instance_uid"]
    assert r["transfer_syntax_uid"] == EXPLICIT
    assert r["study_instance_uid"] == ds.StudyInstanceUID
    assert r["series_instance_uid"] == ds.SeriesInstanceUID
    assert r["category"] == "IMAGE"


@pytest.mark.parametrize("ts", [IMPLICIT, EXPLICIT, DEFLATED])
def test_010_02_transfer_syntaxes(cli, tmp_path, ts):
    ds = ct_dataset()
    p = write(tmp_path, "ct.dcm", part10(ds, ts))
    r = inspect1(cli, p)
    assert r["rc"] == "OK", r
    assert r["transfer_syntax_uid"] == ts
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    assert r["series_instance_uid"] == ds.SeriesInstanceUID


def test_010_03_basic_text_sr(cli, tmp_path):
    ds = sr_dataset()
    p = write(tmp_path, "sr.dcm", part10(ds))
    r = inspect1(cli, p)
    assert r["rc"] == "OK", r
    assert r["sop_class_uid"] == BASIC_TEXT_SR
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    assert r["study_instance_uid"] == ds.StudyInstanceUID
    assert r["category"] == "SR"


def test_010_04_even_and_odd_uids_lose_padding(cli, tmp_path):
    # pydicom pads odd-length UIDs with NUL: the shim must strip it
    odd, even = uid(41), uid(40)
    ds = ct_dataset(sop=odd, study=even, series=uid(64))
    r = inspect1(cli, write(tmp_path, "pad.dcm", part10(ds)))
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == odd == r["meta_sop_instance_uid"]
    assert r["study_instance_uid"] == even
    assert len(r["series_instance_uid"]) == 64 and r["overlong"] == 0


def test_010_05_trailing_space_padding(cli, tmp_path):
    # an odd UID padded with a space (wrong, but seen): still stripped
    u = uid(41)
    ds = ct_dataset()
    ds.SOPInstanceUID = u + " "
    r = inspect1(cli, write(tmp_path, "space.dcm",
                            part10(ds, meta_instance=u)))
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == u


def test_010_06_no_preamble(cli, tmp_path):
    data = part10(ct_dataset())
    cases = {
        "no_preamble_no_dicm.dcm": data[132:],    # dcmtk itself would accept this
        "no_preamble.dcm": data[128:],             # "DICM" at offset 0
        "zero_preamble_no_dicm.dcm": data[:128] + b"DICX" + data[132:],
        "dataset_only.dcm": dataset_bytes(ct_dataset()),
        "empty.dcm": b"",
        "text.dcm": b"hello world\n" * 20,
    }
    paths = [write(tmp_path, n, d) for n, d in cases.items()]
    for r in run(cli, *paths):
        assert r["rc"] == "NOT_PART10", r
        assert r["meta_readable"] == 0
        assert r["meta_sop_class_uid"] == "" and r["sop_instance_uid"] == ""
        assert r["err"]


def test_010_07_preamble_without_meta(cli, tmp_path):
    # preamble + DICM followed directly by a dataset (group 0008)
    data = b"\0" * 128 + b"DICM" + dataset_bytes(ct_dataset())
    r = inspect1(cli, write(tmp_path, "nometa.dcm", data))
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 0
    # ... or followed by an implicit VR meta header
    ds = ct_dataset()
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, meta_for(ds))
    data = b"\0" * 128 + b"DICM" + fp.getvalue() + dataset_bytes(ds)
    r = inspect1(cli, write(tmp_path, "implicit_meta.dcm", data))
    assert r["rc"] == "NOT_PART10", r


def test_010_08_truncated_in_meta(cli, tmp_path):
    ds = ct_dataset()
    data = part10(ds)
    end = meta_end(data)
    # every offset in the meta header, element boundaries included
    cuts = list(range(0, end))
    paths = [write(tmp_path, "cut%d.dcm" % n, data[:n]) for n in cuts]
    for n, r in zip(cuts, run(cli, *paths)):
        assert r["rc"] == "NOT_PART10", (n, r)
        assert r["meta_readable"] == 0, (n, r)
        assert r["sop_instance_uid"] == "", (n, r)


def test_010_08b_bad_meta_framing(cli, tmp_path):
    ds = ct_dataset()
    meta = meta_for(ds)
    good = meta_bytes(meta)
    body = dataset_bytes(ds)
    pre = b"\0" * 128 + b"DICM"
    (glen,) = struct.unpack("<I", good[8:12])
    cases = {
        # no group length (dcmtk itself accepts this)
        "nogl.dcm": pre + meta_bytes(meta_for(ds), enforce=False) + body,
        # group length too small / too large by one element / odd
        "glsmall.dcm": pre + good[:8] + struct.pack("<I", glen - 28) + good[12:] + body,
        "glbig.dcm": pre + good[:8] + struct.pack("<I", glen + 8) + good[12:] + body,
        "gloff.dcm": pre + good[:8] + struct.pack("<I", glen - 1) + good[12:] + body,
        "glhuge.dcm": pre + good[:8] + struct.pack("<I", 0x7FFFFFF0) + good[12:] + body,
    }
    paths = [write(tmp_path, n, d) for n, d in cases.items()]
    for n, r in zip(cases, run(cli, *paths)):
        assert r["rc"] == "NOT_PART10", (n, r)
        assert r["meta_readable"] == 0, (n, r)
        assert "File Meta Information" in r["err"], (n, r)


def test_010_09_truncated_in_dataset(cli, tmp_path):
    ds = ct_dataset(rows=64, cols=64)
    data = part10(ds)
    start = meta_end(data)
    pixel_header = data.rindex(b"\xe0\x7f\x10\x00OW")
    study = data.index(ds.StudyInstanceUID.encode())
    cuts = [start + 3, start + 9, study + 5, pixel_header + 6,
            pixel_header + 12 + 1, pixel_header + 12 + 4000, len(data) - 2, len(data) - 1]
    paths = [write(tmp_path, "cut%d.dcm" % n, data[:n]) for n in cuts]
    for n, r in zip(cuts, run(cli, *paths)):
        assert r["rc"] == "NOT_PART10", (n, r)
        # the meta header was complete: its UIDs are known
        assert r["meta_readable"] == 1, (n, r)
        assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID, (n, r)
        assert r["transfer_syntax_uid"] == EXPLICIT
        assert "cannot read dataset" in r["err"], (n, r)


def test_010_10_truncated_in_sequence(cli, tmp_path):
    ds = sr_dataset()
    data = part10(ds, IMPLICIT)
    text = data.index(b"No findings.")
    r = inspect1(cli, write(tmp_path, "srcut.dcm", data[:text + 4]))
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 1


def test_010_11_truncated_deflated(cli, tmp_path):
    # parsing a deflated dataset stops at Pixel Data; a cut inside Pixel Data
    # is found by inflating to the end of the zlib stream. (Random pixels:
    # zlib stores them; a cut final block of fixed Huffman codes would look
    # complete to dcmtk, which appends a zero byte = end-of-block code; for
    # the same reason a stored block missing just its last byte looks whole.)
    ds = ct_dataset(rows=64, cols=64)
    ds.PixelData = os.urandom(64 * 64 * 2)
    data = part10(ds, DEFLATED)
    start = meta_end(data)
    for n in (start + 10, (start + len(data)) // 2, len(data) - 4):
        r = inspect1(cli, write(tmp_path, "dcut%d.dcm" % n, data[:n]))
        assert r["rc"] == "NOT_PART10", (n, r)
        assert r["meta_readable"] == 1


def test_010_12_file_ends_after_meta(cli, tmp_path):
    # a meta header and an empty dataset: readable, but every UID is missing
    ds = ct_dataset()
    data = part10(ds)
    r = inspect1(cli, write(tmp_path, "metaonly.dcm", data[:meta_end(data)]))
    assert r["meta_readable"] == 1
    assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID
    assert r["sop_class_uid"] == "" and r["sop_instance_uid"] == ""
    assert r["rc"] in ("OK", "NOT_PART10"), r


def test_010_13_missing_sop_instance_uid(cli, tmp_path):
    ds = ct_dataset()
    sop = ds.SOPInstanceUID
    del ds.SOPInstanceUID
    r = inspect1(cli, write(tmp_path, "nosop.dcm", part10(ds, meta_instance=sop)))
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == ""
    assert r["meta_sop_instance_uid"] == sop
    assert r["sop_class_uid"] == CT
    # and an empty one
    ds.SOPInstanceUID = ""
    ds.StudyInstanceUID = ""
    r = inspect1(cli, write(tmp_path, "emptysop.dcm", part10(ds, meta_instance=sop)))
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == "" and r["study_instance_uid"] == ""


def test_010_14_meta_and_dataset_disagree(cli, tmp_path):
    ds = ct_dataset()
    other = uid()
    data = part10(ds, meta_class=BASIC_TEXT_SR, meta_instance=other)
    r = inspect1(cli, write(tmp_path, "disagree.dcm", data))
    # reported as found; the comparison is the caller's business
    assert r["rc"] == "OK", r
    assert r["meta_sop_class_uid"] == BASIC_TEXT_SR and r["sop_class_uid"] == CT
    assert r["meta_sop_instance_uid"] == other != r["sop_instance_uid"]
    assert r["category"] == "IMAGE"


def test_010_15_overlong_uid(cli, tmp_path):
    long65 = uid(65)
    assert len(long65) == 65
    ds = ct_dataset(series=long65)
    r = inspect1(cli, write(tmp_path, "long.dcm", part10(ds)))
    assert r["rc"] == "OK", r
    assert r["series_instance_uid"] == long65[:64]
    assert r["overlong"] == 1
    # in the meta header
    ds = ct_dataset()
    r = inspect1(cli, write(tmp_path, "longmeta.dcm", part10(ds, meta_instance=long65)))
    assert r["rc"] == "OK", r
    assert r["meta_sop_instance_uid"] == long65[:64] and r["overlong"] == 1
    # longer than the read limit: not loaded during parsing, still cut
    huge = "1." + "2" * 9998
    ds = ct_dataset(study=huge)
    r = inspect1(cli, write(tmp_path, "huge.dcm", part10(ds)))
    assert r["rc"] == "OK", r
    assert r["study_instance_uid"] == huge[:64] and r["overlong"] == 1
    # 64 exactly is fine
    ds = ct_dataset(study=uid(64))
    r = inspect1(cli, write(tmp_path, "ok64.dcm", part10(ds)))
    assert r["overlong"] == 0 and len(r["study_instance_uid"]) == 64


def test_010_16_multivalued_and_odd_bytes(cli, tmp_path):
    # all components are reported, so that the caller's UID check fails
    ds = ct_dataset()
    ds.SeriesInstanceUID = ["1.2.3", "1.2.4"]
    ds.SOPInstanceUID = "1.2.3\x00.4"    # interior NUL must not shorten it
    r = inspect1(cli, write(tmp_path, "multi.dcm", part10(ds, meta_instance="1.2.5")))
    assert r["rc"] == "OK", r
    assert r["series_instance_uid"] == "1.2.3\\1.2.4"
    assert r["sop_instance_uid"] == "1.2.3?.4"


def test_010_17_unknown_transfer_syntax(cli, tmp_path):
    ds = ct_dataset()
    data = b"\0" * 128 + b"DICM" + meta_bytes(meta_for(ds, "1.2.3.4.5")) \
        + dataset_bytes(ds)
    r = inspect1(cli, write(tmp_path, "unknownts.dcm", data))
    assert r["rc"] == "UNKNOWN_TS", r
    assert r["meta_readable"] == 1
    assert r["transfer_syntax_uid"] == "1.2.3.4.5"
    assert r["meta_sop_class_uid"] == CT
    assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID
    assert r["sop_instance_uid"] == ""


def test_010_18_meta_without_transfer_syntax(cli, tmp_path):
    ds = ct_dataset()
    meta = meta_for(ds, ts=None)
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    data = b"\0" * 128 + b"DICM" + meta_bytes(meta, enforce=False) + dataset_bytes(ds)
    r = inspect1(cli, write(tmp_path, "nots.dcm", data))
    assert r["rc"] == "NOT_PART10", r
    assert r["transfer_syntax_uid"] == ""
    assert r["meta_readable"] == 1
    assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID


def test_010_19_garbage_dataset(cli, tmp_path):
    ds = ct_dataset()
    data = part10(ds)
    start = meta_end(data)
    # an element whose length runs past the end of the file
    bad = data[:start] + element_header((0x0008, 0x0016), "UI", 26) + b"1.2"
    r = inspect1(cli, write(tmp_path, "runaway.dcm", bad))
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 1
    # an odd trailing byte
    r = inspect1(cli, write(tmp_path, "oddtail.dcm", data + b"\x01"))
    assert r["rc"] == "NOT_PART10", r


def test_010_20_encapsulated_pixel_data(cli, tmp_path):
    ds = ct_dataset(pixels=False)
    frag = b"\xff\xd8" + os.urandom(9000) + b"\xff\xd9"
    body = dataset_bytes(ds) \
        + element_header((0x7FE0, 0x0010), "OB", 0xFFFFFFFF) \
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0) \
        + struct.pack("<HHI", 0xFFFE, 0xE000, len(frag)) + frag \
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = b"\0" * 128 + b"DICM" + meta_bytes(meta_for(ds, JPEG_BASELINE)) + body
    r = inspect1(cli, write(tmp_path, "jpeg.dcm", data))
    assert r["rc"] == "OK", r
    assert r["transfer_syntax_uid"] == JPEG_BASELINE
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    for n in (len(data) - 8, len(data) - 100, len(data) - len(frag) // 2):
        r = inspect1(cli, write(tmp_path, "jcut%d.dcm" % n, data[:n]))
        assert r["rc"] == "NOT_PART10", (n, r)


def test_010_21_categories(cli):
    rs = run(cli, CT, BASIC_TEXT_SR, VIDEO_ENDOSCOPIC,
             "1.2.840.10008.5.1.4.1.1.88.59",      # Key Object Selection
             "1.2.840.10008.5.1.4.1.1.88.67",      # X-Ray Radiation Dose SR
             "1.2.840.10008.5.1.4.1.1.77.1.4.1",   # Video Photographic
             "1.2.840.10008.5.1.4.1.1.104.1",      # Encapsulated PDF
             "1.2.840.10008.5.1.4.1.1.481.3",      # RT Structure Set
             "1.2.840.10008.5.1.4.1.1.4",          # MR
             "1.2.840.10008.1.1",                  # Verification: not storage
             "1.2.3.4", "", args=["--category"])
    got = [r["category"] for r in rs]
    assert got == ["IMAGE", "SR", "VIDEO", "SR", "SR", "VIDEO", "OTHER", "OTHER",
                   "IMAGE", "UNKNOWN", "UNKNOWN", "UNKNOWN"]


def test_010_22_uid_by_name(cli):
    rs = run(cli, "CTImageStorage", "JPEGLSLossless", "LittleEndianExplicit",
             "NoSuchThing", args=["--uid"])
    assert [r["uid"] for r in rs] == [CT, "1.2.840.10008.1.2.4.80", EXPLICIT, None]


def test_010_23_missing_file(cli, tmp_path):
    r = inspect1(cli, tmp_path / "does-not-exist.dcm")
    assert r["rc"] == "INTERNAL", r


def _big_file(path, pixel_len, file_len=None):
    ds = ct_dataset(rows=8192, cols=8192 * 2, pixels=False)
    head = b"\0" * 128 + b"DICM" + meta_bytes(meta_for(ds)) + dataset_bytes(ds) \
        + element_header((0x7FE0, 0x0010), "OW", pixel_len)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + (pixel_len if file_len is None else file_len))
    return ds


def _rss(cli, path, tmp_path):
    """Peak RSS (KiB) of one CLI run, measured for that process alone.

    Not os.wait4()/RUSAGE_CHILDREN: Linux carries the RSS high-water mark of
    the forked pytest process across exec into the child's ru_maxrss.
    """
    out_time = tmp_path / "time.txt"
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(out_time), cli, str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, r
    assert r.stderr == b"", r.stderr
    return json.loads(r.stdout), int(out_time.read_text().split()[-1])


@pytest.mark.skipif(not os.access("/usr/bin/time", os.X_OK), reason="needs /usr/bin/time")
def test_010_24_big_file_small_memory(cli, tmp_path):
    size = 300 * 1024 * 1024
    p = tmp_path / "big.dcm"
    ds = _big_file(p, size)
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb
    # the same header, but the file stops 200 MB short
    p.unlink()
    _big_file(p, size, 100 * 1024 * 1024)
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 1
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb


def test_010_25_encapsulated_syntaxes_unknown_to_dcmtk(cli, tmp_path):
    # read as a known encapsulated syntax; the file's own UID is reported
    for ts in UNKNOWN_TO_DCMTK:
        sop_class = CT if ts.startswith("1.2.840.10008.1.2.4.20") else VIDEO_ENDOSCOPIC
        ds = ct_dataset(pixels=False, sop_class=sop_class)
        frame = b"\xff\x4f\xff\x51" + os.urandom(9000) + b"\xff\xd9"
        data = encapsulated(ds, ts, [frame, frame[:5001]])
        r = inspect1(cli, write(tmp_path, "enc.dcm", data))
        assert r["rc"] == "OK", (ts, r)
        assert r["err"] == "" and r["meta_readable"] == 1 and r["overlong"] == 0
        assert r["transfer_syntax_uid"] == ts
        assert r["meta_sop_class_uid"] == sop_class == r["sop_class_uid"]
        assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID == r["sop_instance_uid"]
        assert r["study_instance_uid"] == ds.StudyInstanceUID
        assert r["series_instance_uid"] == ds.SeriesInstanceUID


@pytest.mark.parametrize("ts", [HTJ2K_LOSSLESS, MPEG2_MPML_F])
def test_010_26_unknown_encapsulated_truncated(cli, tmp_path, ts):
    ds = ct_dataset(rows=64, cols=64, pixels=False)
    frame = os.urandom(8000)
    data = encapsulated(ds, ts, [frame])
    assert inspect1(cli, write(tmp_path, "whole.dcm", data))["rc"] == "OK"
    start = meta_end(data)
    pixel_header = data.rindex(b"\xe0\x7f\x10\x00OB")
    study = data.index(ds.StudyInstanceUID.encode())
    cuts = [start + 3, start + 9, study + 5, pixel_header + 6, pixel_header + 12 + 4,
            pixel_header + 12 + 8 + 8 + 4000, len(data) - 8, len(data) - 4, len(data) - 1]
    paths = [write(tmp_path, "cut%d.dcm" % n, data[:n]) for n in cuts]
    for n, r in zip(cuts, run(cli, *paths)):
        assert r["rc"] == "NOT_PART10", (n, r)
        assert r["meta_readable"] == 1, (n, r)
        assert r["meta_sop_instance_uid"] == ds.SOPInstanceUID, (n, r)
        assert r["transfer_syntax_uid"] == ts, (n, r)
        assert "cannot read dataset" in r["err"], (n, r)
    # garbage after the sequence delimiter, an odd trailing byte
    for name, bad in (("runaway.dcm", data + element_header((0x7FE1, 0x0010), "OB", 64)),
                      ("oddtail.dcm", data + b"\x01")):
        r = inspect1(cli, write(tmp_path, name, bad))
        assert r["rc"] == "NOT_PART10", (name, r)


def test_010_27_unknown_encapsulated_long_values(cli, tmp_path):
    # a UID longer than the read limit is left in the file and read back from
    # its offset there: the dataset does not start at offset 0
    huge = "1." + "2" * 9998
    ds = ct_dataset(study=huge, pixels=False)
    data = encapsulated(ds, HTJ2K_LOSSLESS, [os.urandom(20000)])
    r = inspect1(cli, write(tmp_path, "huge.dcm", data))
    assert r["rc"] == "OK", r
    assert r["study_instance_uid"] == huge[:64] and r["overlong"] == 1
    assert r["sop_instance_uid"] == ds.SOPInstanceUID


def test_010_28_other_unknown_syntaxes_stay_unknown(cli, tmp_path):
    # only the listed UIDs, exactly: not a prefix, not a neighbour
    for ts in (HTJ2K_LOSSLESS + ".1", "1.2.840.10008.1.2.4.204",
               "1.2.840.10008.1.2.4.100.2", "1.2.840.10008.1.2.4.20"):
        ds = ct_dataset(pixels=False)
        data = encapsulated(ds, ts, [os.urandom(100)])
        r = inspect1(cli, write(tmp_path, "unknown.dcm", data))
        assert r["rc"] == "UNKNOWN_TS", (ts, r)
        assert r["transfer_syntax_uid"] == ts
        assert r["meta_readable"] == 1 and r["sop_instance_uid"] == ""


@pytest.mark.skipif(not os.access("/usr/bin/time", os.X_OK), reason="needs /usr/bin/time")
def test_010_29_unknown_encapsulated_big_fragment_small_memory(cli, tmp_path):
    size = 300 * 1024 * 1024
    ds = ct_dataset(rows=8192, cols=8192 * 2, pixels=False)
    head = b"\0" * 128 + b"DICM" + meta_bytes(meta_for(ds, HTJ2K_LOSSLESS)) \
        + dataset_bytes(ds) + element_header((0x7FE0, 0x0010), "OB", 0xFFFFFFFF) \
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0xFFFE, 0xE000, size)
    p = tmp_path / "bigenc.dcm"
    with open(p, "wb") as f:
        f.write(head)
        f.seek(len(head) + size)
        f.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb
    # the fragment stops 200 MB short
    with open(p, "r+b") as f:
        f.truncate(len(head) + 100 * 1024 * 1024)
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 1
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb


def _deflated_with_long_value(path, value_len, data_len):
    """A deflated CT whose dataset holds, before Pixel Data, a private OB
    value declared @value_len bytes long with @data_len zero bytes after
    its header: zlib packs 1000 zeros into about one byte."""
    ds = ct_dataset(pixels=False)
    tail = element_header((0x7FE0, 0x0010), "OW", 8) + bytes(8)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + meta_bytes(meta_for(ds, DEFLATED)))
        f.write(z.compress(dataset_bytes(ds) + struct.pack("<HH2sH", 0x0029, 0x0010, b"LO", 12)
                           + b"STOWRS TEST "
                           + element_header((0x0029, 0x1010), "OB", value_len)))
        chunk = bytes(1 << 20)
        left = data_len
        while left > 0:
            f.write(z.compress(chunk[:min(left, len(chunk))]))
            left -= len(chunk)
        if data_len == value_len:
            f.write(z.compress(tail))
        f.write(z.flush())
    return ds


@pytest.mark.skipif(not os.access("/usr/bin/time", os.X_OK), reason="needs /usr/bin/time")
def test_010_30_deflated_long_value_small_memory(cli, tmp_path):
    # dcmtk cannot skip a value in a zlib stream and loads it whole, with an
    # allocation of the size its length field gives: a 200 KB part would
    # take 200 MB (or 4 GiB on a lying length) during inspection. Found by
    # fuzz/fuzz_dicom_inspect (a malloc of 1.1 GB from an 812-byte file).
    size = 200 * 1024 * 1024
    p = tmp_path / "deflated-long.dcm"
    ds = _deflated_with_long_value(p, size, size)
    assert p.stat().st_size < 1024 * 1024
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "OK", r
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb
    # the value says 4 GiB, the stream ends after 1 MB
    _deflated_with_long_value(p, 0xFFFFFFF0, 1024 * 1024)
    r, rss_kb = _rss(cli, p, tmp_path)
    assert r["rc"] == "NOT_PART10", r
    assert r["meta_readable"] == 1
    assert rss_kb < 40 * 1024, "peak RSS %d KiB" % rss_kb
    # a skipped UID value is found again by inflating up to it
    ds = ct_dataset()
    ds.StudyInstanceUID = "1.2." + "3" * 6000
    r = inspect1(cli, write(tmp_path, "deflated-longuid.dcm", part10(ds, DEFLATED)))
    assert r["rc"] == "OK", r
    assert r["overlong"] == 1
    assert r["study_instance_uid"] == ds.StudyInstanceUID[:64]
    assert r["sop_instance_uid"] == ds.SOPInstanceUID
