"""Round trip of the builder (stowrs_dicom_build, DESIGN.md §3.4): a pydicom
dataset → DICOM JSON + bulk data files → t/unit/test_build --json → PS3.10
file → pydicom.dcmread, equal attribute by attribute, pixel data identical.
"""
import json
import pathlib
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_pixel_data_frame
from pydicom.sequence import Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = ROOT / "t" / "unit" / "test_build"

CT = "1.2.840.10008.5.1.4.1.1.2"
MF_SC = "1.2.840.10008.5.1.4.1.1.7.4"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ELE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module", autouse=True)
def cli():
    subprocess.run(["make", "-s", "t/unit/test_build"], cwd=ROOT, check=True)


def build(tmp_path, ds, parts=None, pixel_parts=None, threshold=64):
    """Describe ds as DICOM JSON (large binary values as bulk data files),
    build it, return (rc, dataset read back or None)."""
    parts = dict(parts or {})
    counter = [0]

    def bulk(elem):
        counter[0] += 1
        uri = f"http://h/bulk/{counter[0]}"
        path = tmp_path / f"bulk{counter[0]}.bin"
        path.write_bytes(elem.value)
        parts[uri] = [{"path": str(path), "media_type": "application/octet-stream",
                       "transfer_syntax": None}]
        return uri

    src = Dataset()
    src.update(ds)
    if pixel_parts is not None:
        del src.PixelData
    js = src.to_json_dict(bulk_data_threshold=threshold, bulk_data_element_handler=bulk)
    if pixel_parts is not None:
        uri = "http://h/pixels"
        js["7FE00010"] = {"vr": "OB", "BulkDataURI": uri}
        parts[uri] = []
        for i, (data, media_type, ts) in enumerate(pixel_parts):
            path = tmp_path / f"frame{i}.bin"
            path.write_bytes(data)
            parts[uri].append({"path": str(path), "media_type": media_type,
                               "transfer_syntax": ts})
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({"dataset": js, "parts": parts}))
    out = tmp_path / "out.dcm"
    res = subprocess.run([str(CLI), "--json", str(desc), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rc = int(res.stdout.split()[0])
    if rc != 0:
        return rc, None
    return rc, pydicom.dcmread(str(out))


def assert_same(orig, got, path=""):
    for elem in orig:
        where = f"{path}{elem.tag}"
        assert elem.tag in got, f"{where} missing"
        other = got[elem.tag]
        assert other.VR == elem.VR, f"{where}: VR {other.VR} != {elem.VR}"
        if elem.VR == "SQ":
            assert len(other.value) == len(elem.value), where
            for i, (a, b) in enumerate(zip(elem.value, other.value)):
                assert_same(a, b, f"{where}[{i}].")
        else:
            assert other.value == elem.value, f"{where}: {other.value!r} != {elem.value!r}"
    extra = {e.tag for e in got} - {e.tag for e in orig}
    return extra


def ct_dataset():
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.PatientName = "Doe^Jane^^Dr"
    ds.PatientID = "ID1"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101112.5"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.5, 0.25]
    ds.SliceThickness = "1.25"
    ds.InstanceNumber = 7
    ds.ImagePositionPatient = [-125.5, 10, 3e-05]
    ds.add_new(0x00189010, "FL", 1.5)                 # FL
    ds.add_new(0x00189327, "FD", [0.1, -2.75])        # FD, multi
    ds.add_new(0x00280106, "SS", -5)                  # SS
    ds.add_new(0x00209020, "AT", [0x00100020, 0x7FE00010])
    ds.add_new(0x00181065, "SL", [-70000, 70000])     # SL (any tag takes the VR)
    ds.add_new(0x00180091, "UL", 4000000000)          # UL
    ds.ImageComments = "line one\r\nline two \\ backslash"
    ds.add_new(0x00282000, "OB", b"\x01\x02\x03\x04")  # inline OB
    ds.add_new(0x00281201, "OW", bytes(range(200)))    # OW by bulk data
    ds.add_new(0x00091001, "LO", "ignored")             # private, its creator below
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091002, "DS", ["1.5", "2"])
    code = Dataset()
    code.CodeValue = "T-D1100"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Head"
    inner = Dataset()
    inner.AnatomicRegionSequence = Sequence([code])
    inner.ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence = Sequence([inner, Dataset()])
    ds.Rows = 32
    ds.Columns = 24
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(15)
    ds.add_new(0x7FE00010, "OW", rng.integers(0, 4096, (32, 24), dtype="<u2").tobytes())
    return ds


def test_015_01_native_round_trip(tmp_path):
    ds = ct_dataset()
    rc, got = build(tmp_path, ds)
    assert rc == 0
    assert got.file_meta.TransferSyntaxUID == ELE
    assert got.file_meta.MediaStorageSOPClassUID == CT
    assert got.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert assert_same(ds, got) == set()
    assert got.PixelData == ds.PixelData
    assert np.array_equal(got.pixel_array,
                          np.frombuffer(ds.PixelData, "<u2").reshape(32, 24))


def test_015_02_native_frames_as_parts(tmp_path):
    ds = ct_dataset()
    ds.NumberOfFrames = 3
    frames = [bytes([i]) * (32 * 24 * 2) for i in (1, 2, 3)]
    rc, got = build(tmp_path, ds, pixel_parts=[(f, "application/octet-stream", None)
                                               for f in frames])
    assert rc == 0
    assert got.PixelData == b"".join(frames)
    assert got["PixelData"].VR == "OW"


def test_015_03_jpeg_frames(tmp_path):
    ds = ct_dataset()
    ds.SOPClassUID = MF_SC
    ds.NumberOfFrames = 3
    frames = [b"\xff\xd8" + bytes(range(n)) + b"\xff\xd9" for n in (11, 40, 7)]
    rc, got = build(tmp_path, ds, pixel_parts=[(f, "image/jpeg", "1.2.840.10008.1.2.4.70")
                                               for f in frames])
    assert rc == 0
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    del ds.PixelData
    assert assert_same(ds, got) == {0x7FE00010}
    got_frames = list(generate_pixel_data_frame(got.PixelData, 3))
    # a frame of odd length carries one pad byte
    assert [g[:len(f)] for g, f in zip(got_frames, frames)] == frames
    assert [len(g) for g in got_frames] == [len(f) + len(f) % 2 for f in frames]


def test_015_04_pdf(tmp_path):
    ds = Dataset()
    ds.SOPClassUID = PDF
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.DocumentTitle = "Report"
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"x" * 1000 + b"\n%%EOF")
    src = ds.to_json_dict()
    src["00420011"] = {"vr": "OB", "BulkDataURI": "doc"}
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps({"dataset": src, "parts": {"doc": [
        {"path": str(pdf), "media_type": "application/pdf", "transfer_syntax": None}]}}))
    out = tmp_path / "pdf.dcm"
    res = subprocess.run([str(CLI), "--json", str(desc), str(out)], capture_output=True,
                         text=True, check=True)
    assert res.stdout.startswith("0 ")
    got = pydicom.dcmread(str(out))
    assert got.MIMETypeOfEncapsulatedDocument == "application/pdf"
    data = pdf.read_bytes()
    assert got.EncapsulatedDocument == data + b"\x00" * (len(data) % 2)
    assert_same(ds, got)


@pytest.mark.parametrize("media_type,ts,want", [
    ("image/png", None, 3),
    ("image/jpeg", "1.2.840.10008.1.2.4.80", 3),
    ("image/jphc", None, 0),
])
def test_015_05_media_types(tmp_path, media_type, ts, want):
    ds = ct_dataset()
    rc, got = build(tmp_path, ds, pixel_parts=[(b"\x00\x01\x02", media_type, ts)])
    assert rc == want
    if want == 0:
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.201"


def test_015_06_image_attrs_and_missing_part(tmp_path):
    ds = ct_dataset()
    del ds.Rows
    rc, _ = build(tmp_path, ds, pixel_parts=[(b"\x00" * 4, "application/octet-stream", None)])
    assert rc == 2
    ds = ct_dataset()
    src = ds.to_json_dict(bulk_data_threshold=1 << 30)
    src["7FE00010"] = {"vr": "OW", "BulkDataURI": "nowhere"}
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps({"dataset": src, "parts": {}}))
    res = subprocess.run([str(CLI), "--json", str(desc), str(tmp_path / "x.dcm")],
                         capture_output=True, text=True, check=True)
    assert res.stdout.startswith("1 ")


# ---------------------------------------------------------- character sets
# DICOM JSON is UTF-8: the stored file must say what its bytes are. Either
# the values are converted to the declared Specific Character Set, or, when
# that set cannot hold them (or none / an unusable one is declared), the
# file declares ISO_IR 192.
def text_dataset(charset, name, desc="Head"):
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.31"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.5"
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.StudyDescription = desc
    ds.ImageComments = "Zeile eins\r\n" + desc
    return ds


def stored_bytes(tmp_path):
    return (tmp_path / "out.dcm").read_bytes()


def test_015_07_latin1_converted(tmp_path):
    ds = text_dataset("ISO_IR 100", "Müller^Jürgen", "Kopfübersicht ß")
    rc, got = build(tmp_path, ds)
    assert rc == 0
    assert got.SpecificCharacterSet == "ISO_IR 100"
    assert str(got.PatientName) == "Müller^Jürgen"
    assert got.StudyDescription == "Kopfübersicht ß"
    assert assert_same(ds, got) == set()
    raw = stored_bytes(tmp_path)
    assert "Müller^Jürgen".encode("latin-1") in raw
    assert "Kopfübersicht ß".encode("latin-1") in raw
    assert b"\xc3" not in raw


@pytest.mark.parametrize("charset,name,want", [
    ("ISO_IR 100", "Ωmega^Müller", "ISO_IR 192"),       # not in Latin-1
    (None, "Müller^Jürgen", "ISO_IR 192"),              # non-ASCII, undeclared
    ("", "Müller^Jürgen", "ISO_IR 192"),
    ("ISO_IR 999", "Müller^Jürgen", "ISO_IR 192"),      # unknown to dcmtk
    ("ISO_IR 192", "Müller^Jürgen", "ISO_IR 192"),      # untouched
    ("ISO_IR 144", "Иванов^Иван", "ISO_IR 144"),        # Cyrillic
    ("ISO_IR 126", "Ωmega^Αλφα", "ISO_IR 126"),         # Greek
    ("GB18030", "王^小明", "GB18030"),
    (None, "Doe^John", None),                           # ASCII: nothing added
    ("ISO_IR 100", "Doe^John", "ISO_IR 100"),
])
def test_015_08_character_sets(tmp_path, charset, name, want):
    ds = text_dataset(charset, name)
    rc, got = build(tmp_path, ds)
    assert rc == 0
    if want is None:
        assert "SpecificCharacterSet" not in got
    else:
        assert got.SpecificCharacterSet == want
    assert str(got.PatientName) == name
    codec = pydicom.charset.convert_encodings([want or "ISO_IR 6"])[0]
    assert name.encode(codec) in stored_bytes(tmp_path)
    # everything else as sent (values decoded before the declaration goes)
    list(got.iterall())
    for d in (ds, got):
        if "SpecificCharacterSet" in d:
            del d.SpecificCharacterSet
    assert assert_same(ds, got) == set()


def test_015_09_nested_character_sets(tmp_path):
    """Items inherit the dataset's set or declare their own; each scope is
    converted on its own, or (only it) declared ISO_IR 192."""
    ds = text_dataset("ISO_IR 100", "Jürgen")
    inherit, greek, latin_bad = Dataset(), Dataset(), Dataset()
    inherit.StudyDescription = "Straße"
    code = Dataset()
    code.CodeMeaning = "été"
    inherit.AnatomicRegionSequence = Sequence([code])
    greek.SpecificCharacterSet = "ISO_IR 126"
    greek.StudyDescription = "Δέλτα"
    latin_bad.SpecificCharacterSet = "ISO_IR 100"
    latin_bad.StudyDescription = "äΩ"
    ds.ReferencedImageSequence = Sequence([inherit, greek, latin_bad])
    rc, got = build(tmp_path, ds)
    assert rc == 0
    assert got.SpecificCharacterSet == "ISO_IR 100"
    items = got.ReferencedImageSequence
    assert "SpecificCharacterSet" not in items[0]
    assert items[1].SpecificCharacterSet == "ISO_IR 126"
    assert items[2].SpecificCharacterSet == "ISO_IR 192"
    assert items[0].StudyDescription == "Straße"
    assert items[0].AnatomicRegionSequence[0].CodeMeaning == "été"
    assert items[1].StudyDescription == "Δέλτα"
    assert items[2].StudyDescription == "äΩ"
    raw = stored_bytes(tmp_path)
    assert "Straße".encode("latin-1") in raw
    assert "été".encode("latin-1") in raw
    assert "Δέλτα".encode("iso8859_7") in raw
    assert "äΩ".encode("utf-8") in raw
    latin_bad.SpecificCharacterSet = "ISO_IR 192"
    assert assert_same(ds, got) == set()
