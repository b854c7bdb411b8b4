"""Metadata + bulk data test data for STOW-RS (DESIGN.md §3.4, issue 3).

- instance factories: real instances made with pydicom (CT 512x512x16,
  MR, native and JPEG multi-frame, Encapsulated PDF and CDA, Basic Text SR),
  each returned as an Original (the PS3.10 bytes and the dataset read back
  from them, so that values are exactly what a reader of the file sees);
- converters of a dataset to metadata + bulk data parts: PS3.19 Native DICOM
  Model XML (to_xml), PS3.18 Annex F DICOM JSON (to_json, own, and
  to_json_pydicom, pydicom's Dataset.to_json_dict), and dcmtk's dcm2xml /
  dcm2json (inline binary only);
- validators of the converters' output: a RELAX NG form of the PS3.19
  schema (validate_xml), a structural check of DICOM JSON (validate_json)
  and readers back into a pydicom Dataset (xml_to_dataset, json_to_dataset);
- comparison of two datasets attribute by attribute (diff_datasets), the
  checks on a stored file (check_stored_file) and dcmdump helpers.

Bulk data: PixelData and EncapsulatedDocument always, any other OB/OW/...
value over 1 KiB, go to BulkData parts; smaller binary values are
InlineBinary. A Meta object holds the metadata bytes (or JSON object) and
its bulk parts [(Content-Location, Content-Type, bytes)].
"""

import base64
import copy
import io
import json
import os
import pathlib
import re
import struct
import subprocess
import tempfile
import uuid as uuidlib
import warnings

import pydicom
from lxml import etree
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

import dicomgen as g
import mime

NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
XML_TYPE = "application/dicom+xml"
JSON_TYPE = "application/dicom+json"
OCTET = "application/octet-stream"
PIXEL_DATA = 0x7FE00010
ENCAPSULATED_DOCUMENT = 0x00420011
BULK_THRESHOLD = 1024

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# SOP classes
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
MF_GRAY_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"

#: media type of compressed pixel data -> the transfer syntax it implies
#: without a transfer-syntax parameter (issue 3, item 3)
MEDIA_DEFAULT_TS = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "video/mpeg": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
    "video/H265": "1.2.840.10008.1.2.4.107",
}

#: encapsulated transfer syntax -> media type of its frames (PS3.18 Table 8.7.3-2/-3)
TS_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}

NATIVE_TS = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
             "1.2.840.10008.1.2.1.99")

BINARY_VRS = ("OB", "OW", "OF", "OD", "OL", "OV", "UN")
# PS3.18 F.2.3: JSON numbers
JSON_NUMBER_VRS = ("DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV")
NUMBER_VRS = ("FL", "FD", "SL", "SS", "UL", "US", "SV", "UV")
SINGLE_VALUED_TEXT = ("LT", "ST", "UT", "UR")   # backslash is not a delimiter
ALL_VRS = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB",
           "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
           "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")


# ================================================================ instances
class Original:
    """An instance as a client holds it: its PS3.10 bytes, the dataset read
    back from them (file_meta included) and the frames of encapsulated pixel
    data (the bytes a client sends as bulk parts)."""

    def __init__(self, data, name):
        self.name = name
        self.data = data
        self.ds = pydicom.dcmread(io.BytesIO(data))
        self.ts = str(self.ds.file_meta.TransferSyntaxUID)
        self.frames = None
        if "PixelData" in self.ds and self.ts not in NATIVE_TS:
            nf = int(self.ds.get("NumberOfFrames", 1) or 1)
            self.frames = list(generate_pixel_data_frame(self.ds.PixelData, nf))

    @property
    def uids(self):
        return {"study": str(self.ds.StudyInstanceUID),
                "series": str(self.ds.SeriesInstanceUID),
                "sop": str(self.ds.SOPInstanceUID),
                "sop_class": str(self.ds.SOPClassUID),
                "transfer_syntax": self.ts}


def _write(ds):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


def _private_block(ds, big_private=True):
    """A private block with odd-length, inline, bulk and numeric values."""
    ds.add_new(0x00190010, "LO", "STOWRS TEST")
    ds.add_new(0x00191001, "OB", b"\x01\x02\x03\x04\x05")       # odd: padded to 6
    ds.add_new(0x00191002, "SH", "private sh")
    if big_private:
        ds.add_new(0x00191003, "OW", bytes(range(256)) * 12)      # 3 KiB: bulk
    ds.add_new(0x00191004, "UN", b"\xde\xad\xbe\xef")
    ds.add_new(0x00191005, "SL", [-5, 7, -2147483648])
    ds.add_new(0x00191006, "UL", [4000000000, 0])
    ds.add_new(0x00191007, "AT", [0x00100010, 0x7FE00010])
    ds.add_new(0x00191008, "FD", [1.5, -0.1])
    ds.add_new(0x00191009, "SS", [-32768, 32767])


def _code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def ct_512(**kw):
    """CT 512x512, 16 bits, native (Explicit VR LE), with a private block,
    empty type 2 attributes, nested and empty sequences, an empty item,
    multi-valued DS, FL/FD/SL/SS/UL/AT values, text with CR LF, '&', '<'
    and a backslash, UR, DT."""
    ds = g.ct_dataset(rows=512, cols=512, **kw)
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.ImagePositionPatient = ["-125.5", "-130", "42.25"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.48828125", "0.48828125"]
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["400", "2000"]
    ds.AcquisitionDateTime = "20240101120000.123456+0100"
    ds.ContentTime = "120000.5"
    ds.SingleCollimationWidth = 0.625
    ds.RecommendedDisplayFrameRateInFloat = 0.5
    ds.SmallestImagePixelValue = 0          # 'US or SS': US here
    ds.LargestImagePixelValue = 4095
    ds.ImageComments = "line 1\r\nline 2 & <b>\"x\"</b> C:\\path\\file"
    ds.RetrieveURL = "http://example.com/wado?a=1&b=2"
    inner = _code("113100", "DCM", "Basic Application Confidentiality Profile")
    ds.DeidentificationMethodCodeSequence = Sequence([inner])
    src = Dataset()
    src.ReferencedSOPClassUID = CT
    src.ReferencedSOPInstanceUID = g.uid()
    src.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "DCM",
                                                         "Uncompressed predecessor")])
    ds.SourceImageSequence = Sequence([src, Dataset()])     # second item empty
    ds.ReferencedStudySequence = Sequence([])               # empty sequence
    _private_block(ds)
    return Original(_write(ds), "ct")


def mr(**kw):
    """MR 256x256x16 native, UTF-8 (ISO_IR 192) with non-ASCII text and a
    three-group person name, an overlay whose 8 KiB OverlayData is bulk
    data (an OW value that is not pixel data), and an icon image whose
    nested 4 KiB Pixel Data is bulk data too."""
    ds = g.ct_dataset(rows=256, cols=256, sop_class=MR, **kw)
    ds.file_meta.MediaStorageSOPClassUID = MR
    ds.Modality = "MR"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.PatientName = "Müller^Jürgen=山田^太郎=やまだ^たろう"
    ds.StudyDescription = "Kopf – Übersicht ☃"
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.ScanningSequence = ["SE", "IR"]
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = "12.5"
    ds.RepetitionTime = "500"
    ds.MagneticFieldStrength = "1.5"
    ds.ImagingFrequency = "63.86"
    ds.EchoTrainLength = "1"
    ds.add_new(0x60000010, "US", 256)       # OverlayRows
    ds.add_new(0x60000011, "US", 256)       # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")       # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])    # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)         # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)         # OverlayBitPosition
    ds.add_new(0x60003000, "OW", os.urandom(256 * 256 // 8))
    icon = Dataset()                        # nested Pixel Data of 4 KiB: bulk data
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows = 64
    icon.Columns = 64
    icon.BitsAllocated = 8
    icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PixelData = os.urandom(64 * 64)
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = Sequence([icon])
    return Original(_write(ds), "mr")


def multiframe_native(frames=5, rows=64, cols=64, **kw):
    """Multi-frame Grayscale Word SC, @frames frames of 16 bits, native."""
    ds = g.ct_dataset(rows=rows, cols=cols, frames=frames, sop_class=MF_GRAY_WORD_SC, **kw)
    ds.file_meta.MediaStorageSOPClassUID = MF_GRAY_WORD_SC
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = "33.3"
    return Original(_write(ds), "multiframe-native")


def jpeg_frame(n, seed=0):
    """A fake JPEG frame of @n bytes: FFD8 ... FFD9 (nobody decodes it)."""
    assert n >= 4
    r = os.urandom(n - 4)
    return b"\xff\xd8" + r + b"\xff\xd9"


def multiframe_encapsulated(frames_bytes, transfer_syntax=JPEG_BASELINE,
                            sop_class=MF_TRUE_COLOR_SC, **kw):
    """A multi-frame True Color SC whose frames are @frames_bytes (one
    fragment each, basic offset table filled), in @transfer_syntax."""
    n = len(frames_bytes)
    ds = g.ct_dataset(rows=32, cols=32, frames=1, transfer_syntax=transfer_syntax,
                      sop_class=sop_class, pixel_bytes=b"\0\0", **kw)
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    for k in ("RescaleIntercept", "RescaleSlope"):
        delattr(ds, k)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = "40"
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(list(frames_bytes), has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return Original(_write(ds), "multiframe-encapsulated")


def multiframe_jpeg(**kw):
    """3 fake JPEG baseline frames (1000, 1502 and 778 bytes)."""
    return multiframe_encapsulated([jpeg_frame(1000), jpeg_frame(1502), jpeg_frame(778)],
                                   **kw)


def video(media_type, sop_class=VIDEO_PHOTOGRAPHIC, length=4000, **kw):
    """A video instance whose one 'frame' is a fake stream of @length bytes
    in the default transfer syntax of @media_type."""
    ts = MEDIA_DEFAULT_TS[media_type]
    data = b"\x00\x00\x01\xb3" + os.urandom(length - 4)
    o = multiframe_encapsulated([data], transfer_syntax=ts, sop_class=sop_class, **kw)
    return o


FAKE_PDF = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
            b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
            b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>\nendobj\n"
            b"4 0 obj\n<< /Length 44 >>\nstream\nBT /F1 24 Tf 72 700 Td (Report) Tj ET\n"
            b"endstream\nendobj\n"
            b"5 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n")


def pdf_bytes(size=3000):
    """A small real-looking PDF of exactly @size bytes (comment padding)."""
    tail = b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    pad = size - len(FAKE_PDF) - len(tail)
    assert pad >= 2
    return FAKE_PDF + b"%" + b"x" * (pad - 2) + b"\n" + tail


CDA = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<ClinicalDocument xmlns="urn:hl7-org:v3">\n'
       b'  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>\n'
       b'  <title>SECRET discharge summary</title>\n'
       b'  <component><structuredBody><component><section>'
       b'<text>Findings: none &amp; nothing else.</text>'
       b'</section></component></structuredBody></component>\n'
       b'</ClinicalDocument>\n')


def _document(sop_class, mime_type, doc, **kw):
    study = kw.pop("study", None) or g.uid()
    series = kw.pop("series", None) or g.uid()
    sop = kw.pop("sop", None) or g.uid()
    meta = g._meta(sop_class, sop, ExplicitVRLittleEndian)
    ds = g._file_dataset(meta)
    g._common(ds, sop_class, sop, study, series)
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "SECRET report"
    ds.ConceptNameCodeSequence = Sequence([])
    ds.MIMETypeOfEncapsulatedDocument = mime_type
    ds.EncapsulatedDocument = doc
    ds.EncapsulatedDocumentLength = len(doc)
    g._apply(ds, kw)
    return ds


def encapsulated_pdf(size=3000, **kw):
    """Encapsulated PDF of an even-length PDF (EncapsulatedDocumentLength set)."""
    return Original(_write(_document(ENCAPSULATED_PDF, "application/pdf",
                                     pdf_bytes(size), **kw)), "pdf")


def encapsulated_cda(**kw):
    doc = CDA if len(CDA) % 2 == 0 else CDA + b"\n"
    ds = _document(ENCAPSULATED_CDA, "text/XML", doc, **kw)
    ds.HL7InstanceIdentifier = "1.2.3.4^ext1"
    return Original(_write(ds), "cda")


def basic_text_sr(**kw):
    """Basic Text SR: CONTAINER with TEXT, CODE, NUM (measured value with
    units), DATETIME and PNAME content items, one nested two levels."""
    data, uids = g.sr_document(text="SECRET finding\r\nsecond line", **kw)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.ContentDate = "20240101"
    ds.ContentTime = "120001"
    ds.PerformedProcedureCodeSequence = Sequence([])
    code = Dataset()
    code.RelationshipType = "CONTAINS"
    code.ValueType = "CODE"
    code.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    code.ConceptCodeSequence = Sequence([_code("D3-12345", "SRT", "Something")])
    num = Dataset()
    num.RelationshipType = "HAS PROPERTIES"
    num.ValueType = "NUM"
    num.ConceptNameCodeSequence = Sequence([_code("410668003", "SCT", "Length")])
    mv = Dataset()
    mv.NumericValue = "12.5"
    mv.FloatingPointValue = 12.5
    mv.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "millimeter")])
    num.MeasuredValueSequence = Sequence([mv])
    code.ContentSequence = Sequence([num])
    dt = Dataset()
    dt.RelationshipType = "CONTAINS"
    dt.ValueType = "DATETIME"
    dt.ConceptNameCodeSequence = Sequence([_code("111526", "DCM", "DateTime")])
    dt.DateTime = "20240101120000"
    pn = Dataset()
    pn.RelationshipType = "CONTAINS"
    pn.ValueType = "PNAME"
    pn.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    pn.PersonName = "SECRET^OBSERVER^^Dr."
    ds.ContentSequence = Sequence(list(ds.ContentSequence) + [code, dt, pn])
    return Original(_write(ds), "sr")


def small_ct(rows=16, cols=16, **kw):
    """A plain small CT (for dcm2xml/dcm2json inline-binary variants and
    the error cases)."""
    return Original(_write(g.ct_dataset(rows=rows, cols=cols, **kw)), "small-ct")


#: the round-trip instances, by name
ROUND_TRIP = {
    "ct": ct_512,
    "mr": mr,
    "multiframe-native": multiframe_native,
    "multiframe-jpeg": multiframe_jpeg,
    "pdf": encapsulated_pdf,
    "cda": encapsulated_cda,
    "sr": basic_text_sr,
}


def expected_ts(orig):
    """The transfer syntax the module writes for @orig sent with its
    default media types: Explicit VR LE, or that of the compressed frames."""
    return orig.ts if orig.frames is not None else EXPLICIT


# ================================================================ converters
class BulkPart:
    def __init__(self, location, content_type, data):
        self.location = location        # Content-Location header
        self.content_type = content_type
        self.data = data

    def part(self):
        return ({"Content-Type": self.content_type, "Content-Location": self.location},
                self.data)

    def __repr__(self):
        return "<BulkPart %s %s %d bytes>" % (self.location, self.content_type,
                                              len(self.data))


class Meta:
    """One object's metadata (.body: XML bytes, or .obj: a JSON object) and
    its bulk data parts. .refs maps each URI written in the metadata to its
    bulk parts."""

    def __init__(self):
        self.body = None
        self.obj = None
        self.bulk = []
        self.refs = {}

    def add_bulk(self, uri, location, content_type, data):
        p = BulkPart(location, content_type, data)
        self.bulk.append(p)
        self.refs.setdefault(uri, []).append(p)
        return p


class BulkNamer:
    """URIs of bulk data: uri(n) written in the metadata, location(n) as
    the part's Content-Location. Default: the same absolute URL below
    @base (e.g. the location URL), unique per object."""

    def __init__(self, base="http://127.0.0.1", token=None, uri=None, location=None):
        self.base = base.rstrip("/")
        self.token = token or uuidlib.uuid4().hex
        self._uri = uri
        self._location = location

    def uri(self, n):
        if self._uri:
            return self._uri(n, self.token)
        return "%s/bulk/%s/%d" % (self.base, self.token, n)

    def location(self, n):
        if self._location:
            return self._location(n, self.token)
        return self.uri(n)


def _ts_of(ds):
    fm = getattr(ds, "file_meta", None)
    return str(fm.TransferSyntaxUID) if fm is not None and "TransferSyntaxUID" in fm \
        else EXPLICIT


def _frames_media_type(ts, ts_param):
    media = TS_MEDIA[ts]
    if ts_param == "always" or (ts_param == "auto" and MEDIA_DEFAULT_TS.get(media) != ts):
        return "%s; transfer-syntax=%s" % (media, ts)
    return media


def _document_part(ds, elem):
    """(media type, bytes) of an EncapsulatedDocument: the document itself,
    without the pad byte (EncapsulatedDocumentLength says how long it is)."""
    mt = str(ds.get("MIMETypeOfEncapsulatedDocument", "application/pdf")).lower()
    data = bytes(elem.value)
    n = ds.get("EncapsulatedDocumentLength")
    if n is not None and n <= len(data):
        data = data[:n]
    return mt, data


class _BulkPolicy:
    """Decides, for one binary element, between InlineBinary and BulkData,
    and makes the bulk parts."""

    def __init__(self, top, meta, namer, threshold, ts_param, split_native):
        self.top = top
        self.meta = meta
        self.namer = namer
        self.threshold = threshold
        self.ts_param = ts_param
        self.split_native = split_native
        self.n = 0

    def handle(self, elem, top_level):
        """@return ('bulk', uri) or ('inline', bytes)"""
        value = bytes(elem.value) if elem.value is not None else b""
        is_pixel = top_level and elem.tag == PIXEL_DATA
        is_doc = top_level and elem.tag == ENCAPSULATED_DOCUMENT
        if not (is_pixel or is_doc or len(value) > self.threshold):
            return "inline", value
        self.n += 1
        uri, loc = self.namer.uri(self.n), self.namer.location(self.n)
        if is_pixel and _ts_of(self.top) not in NATIVE_TS:
            ts = _ts_of(self.top)
            nf = int(self.top.get("NumberOfFrames", 1) or 1)
            for f in generate_pixel_data_frame(value, nf):
                self.meta.add_bulk(uri, loc, _frames_media_type(ts, self.ts_param), f)
        elif is_pixel and self.split_native and int(self.top.get("NumberOfFrames", 1)) > 1:
            nf = int(self.top.NumberOfFrames)
            size = len(value) // nf
            for i in range(nf):
                self.meta.add_bulk(uri, loc, OCTET, value[i * size:(i + 1) * size])
        elif is_doc:
            mt, data = _document_part(self.top, elem)
            self.meta.add_bulk(uri, loc, mt, data)
        else:
            self.meta.add_bulk(uri, loc, OCTET, value)
        return "bulk", uri


def _values(elem):
    v = elem.value
    if v is None or v == "" or v == b"":
        return []
    if isinstance(v, (list, MultiValue)):
        return list(v)
    return [v]


def _tag_hex(tag):
    return "%08X" % int(tag)


def _keyword(elem):
    return "" if Tag(elem.tag).is_private else (elem.keyword or "")


def _private_creator(ds, elem):
    t = Tag(elem.tag)
    if not t.is_private or t.element < 0x1000:
        return None
    ctag = Tag(t.group, t.element >> 8)
    return str(ds[ctag].value) if ctag in ds else None


def _num_text(vr, v):
    if vr in ("FL", "FD"):
        return repr(float(v))
    return str(int(v))


def _pn_groups(v):
    """[Alphabetic, Ideographic, Phonetic] strings of a PN value."""
    s = v if isinstance(v, str) else str(v)
    groups = s.split("=")
    return (groups + ["", "", ""])[:3]


PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def to_xml(ds, namer=None, threshold=BULK_THRESHOLD, ts_param="auto", split_native=False,
           keyword=True, encoding="UTF-8", pretty=False):
    """PS3.19 Native DICOM Model of @ds (group 0002 left out) and its bulk
    parts. @return Meta (.body = XML bytes)."""
    namer = namer or BulkNamer()
    meta = Meta()
    pol = _BulkPolicy(ds, meta, namer, threshold, ts_param, split_native)
    root = etree.Element("{%s}NativeDicomModel" % NS, nsmap={None: NS})
    _xml_dataset(root, ds, pol, True, keyword)
    meta.body = etree.tostring(root, xml_declaration=True, encoding=encoding,
                               pretty_print=pretty)
    return meta


def _xml_dataset(parent, ds, pol, top_level, keyword):
    for elem in ds:
        if elem.tag.group == 0x0002:
            continue
        a = etree.SubElement(parent, "{%s}DicomAttribute" % NS)
        a.set("tag", _tag_hex(elem.tag))
        a.set("vr", elem.VR)
        kw = _keyword(elem)
        if keyword and kw:
            a.set("keyword", kw)
        pc = _private_creator(ds, elem)
        if pc is not None:
            a.set("privateCreator", pc)
        vr = elem.VR
        if vr == "SQ":
            for i, item in enumerate(elem.value, 1):
                it = etree.SubElement(a, "{%s}Item" % NS)
                it.set("number", str(i))
                _xml_dataset(it, item, pol, False, keyword)
        elif vr in BINARY_VRS or (top_level and elem.tag == PIXEL_DATA):
            if elem.value is None or len(elem.value) == 0:
                continue
            kind, v = pol.handle(elem, top_level)
            if kind == "bulk":
                etree.SubElement(a, "{%s}BulkData" % NS).set("uri", v)
            else:
                etree.SubElement(a, "{%s}InlineBinary" % NS).text = \
                    base64.b64encode(v).decode("ascii")
        elif vr == "PN":
            for i, v in enumerate(_values(elem), 1):
                p = etree.SubElement(a, "{%s}PersonName" % NS)
                p.set("number", str(i))
                for gname, group in zip(("Alphabetic", "Ideographic", "Phonetic"),
                                        _pn_groups(v)):
                    if not group:
                        continue
                    ge = etree.SubElement(p, "{%s}%s" % (NS, gname))
                    for cname, comp in zip(PN_COMPONENTS, group.split("^")):
                        if comp:
                            etree.SubElement(ge, "{%s}%s" % (NS, cname)).text = comp
        else:
            for i, v in enumerate(_values(elem), 1):
                ve = etree.SubElement(a, "{%s}Value" % NS)
                ve.set("number", str(i))
                if vr == "AT":
                    ve.text = _tag_hex(v)
                elif vr in NUMBER_VRS:
                    ve.text = _num_text(vr, v)
                else:
                    ve.text = str(v)


def _json_number(vr, v):
    if vr in ("DS",):
        s = str(v).strip()
        try:
            return int(s)
        except ValueError:
            return float(s)
    if vr == "IS":
        return int(str(v))
    if vr in ("FL", "FD"):
        return float(v)
    return int(v)


def to_json_obj(ds, pol, top_level=True):
    """One DICOM JSON Model object (PS3.18 F.2) of @ds (own converter)."""
    out = {}
    for elem in ds:
        if elem.tag.group == 0x0002:
            continue
        vr = elem.VR
        a = {"vr": vr}
        out[_tag_hex(elem.tag)] = a
        if vr == "SQ":
            if len(elem.value):
                a["Value"] = [to_json_obj(item, pol, False) for item in elem.value]
        elif vr in BINARY_VRS or (top_level and elem.tag == PIXEL_DATA):
            if elem.value is None or len(elem.value) == 0:
                continue
            kind, v = pol.handle(elem, top_level)
            if kind == "bulk":
                a["BulkDataURI"] = v
            else:
                a["InlineBinary"] = base64.b64encode(v).decode("ascii")
        else:
            vals = _values(elem)
            if not vals:
                continue
            if vr == "PN":
                jv = []
                for v in vals:
                    o = {}
                    for gname, group in zip(("Alphabetic", "Ideographic", "Phonetic"),
                                            _pn_groups(v)):
                        if group:
                            o[gname] = group
                    jv.append(o)
            elif vr == "AT":
                jv = [_tag_hex(v) for v in vals]
            elif vr in JSON_NUMBER_VRS:
                jv = [None if (isinstance(v, str) and v == "") else _json_number(vr, v)
                      for v in vals]
            else:
                jv = [None if v == "" else str(v) for v in vals]
            a["Value"] = jv
    return out


def to_json(ds, namer=None, threshold=BULK_THRESHOLD, ts_param="auto", split_native=False):
    """DICOM JSON object of @ds (own converter). @return Meta (.obj)"""
    namer = namer or BulkNamer()
    meta = Meta()
    pol = _BulkPolicy(ds, meta, namer, threshold, ts_param, split_native)
    meta.obj = to_json_obj(ds, pol)
    return meta


def to_json_pydicom(ds, namer=None, threshold=BULK_THRESHOLD, ts_param="auto"):
    """DICOM JSON object of @ds by pydicom's Dataset.to_json_dict; bulk data
    by its bulk_data_element_handler (elements over @threshold), plus
    PixelData and EncapsulatedDocument always bulk. @return Meta (.obj)"""
    namer = namer or BulkNamer()
    meta = Meta()
    pol = _BulkPolicy(ds, meta, namer, threshold, ts_param, False)
    body = Dataset()
    forced = {}
    for elem in ds:
        if elem.tag.group == 0x0002:
            continue
        if elem.tag in (PIXEL_DATA, ENCAPSULATED_DOCUMENT) and elem.value:
            forced[elem.tag] = (elem.VR, pol.handle(elem, True)[1])
            continue
        body.add(elem)

    def handler(elem):
        return pol.handle(elem, False)[1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = body.to_json_dict(bulk_data_threshold=threshold,
                                bulk_data_element_handler=handler)
    for tag, (vr, uri) in forced.items():
        obj[_tag_hex(tag)] = {"vr": vr, "BulkDataURI": uri}
    meta.obj = dict(sorted(obj.items()))
    return meta


def dcm2xml(data):
    """dcmtk's Native DICOM Model of a PS3.10 file, all binary values
    inline (dcm2xml cannot write BulkData URIs: +Eu writes a uuid whose
    bulk data it does not export). @return Meta"""
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d, "in.dcm")
        p.write_bytes(data)
        r = subprocess.run(["dcm2xml", "-q", "-nat", "+Xn", "+Eb", "+M", str(p)],
                           capture_output=True, check=True)
    m = Meta()
    m.body = r.stdout
    return m


def dcm2json(data):
    """dcmtk's DICOM JSON of a PS3.10 file (binary values inline). dcm2json
    converts strings to UTF-8 and says so in SpecificCharacterSet.
    @return Meta"""
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d, "in.dcm")
        p.write_bytes(data)
        r = subprocess.run(["dcm2json", "-q", "-fc", str(p)], capture_output=True,
                           check=True)
    m = Meta()
    m.obj = json.loads(r.stdout.decode("utf-8"))
    return m


# ================================================================ requests
def xml_parts(metas, bulk_first=False):
    """multipart parts of a type=application/dicom+xml request: each
    object's metadata part followed by its bulk parts."""
    parts = []
    for m in metas:
        head = [({"Content-Type": XML_TYPE}, m.body)]
        bulk = [p.part() for p in m.bulk]
        parts += (bulk + head) if bulk_first else (head + bulk)
    return parts


def json_parts(metas, objects=None):
    """multipart parts of a type=application/dicom+json request: one JSON
    array of all objects, then every bulk part."""
    arr = objects if objects is not None else [m.obj for m in metas]
    parts = [({"Content-Type": JSON_TYPE}, json.dumps(arr).encode("utf-8"))]
    for m in metas:
        parts += [p.part() for p in m.bulk]
    return parts


def post_parts(h, parts, root, path=None, accept=None, **kw):
    body = mime.multipart_body(parts)
    if path is None:
        path = h.stow_path
    return mime.stow(h.port, body, "myboundary", path=path, root=root, accept=accept, **kw)


def post_xml(h, metas, **kw):
    return post_parts(h, xml_parts(metas), XML_TYPE, **kw)


def post_json(h, metas, **kw):
    return post_parts(h, json_parts(metas), JSON_TYPE, **kw)


# ================================================================ validation
RNG = """<?xml version="1.0" encoding="UTF-8"?>
<!-- PS3.19 A.1.6 Native DICOM Model schema (RELAX NG compact form there) -->
<grammar xmlns="http://relaxng.org/ns/structure/1.0"
         ns="http://dicom.nema.org/PS3.19/models/NativeDICOM"
         datatypeLibrary="http://www.w3.org/2001/XMLSchema-datatypes">
  <start>
    <element name="NativeDicomModel"><ref name="DicomDataSet"/></element>
  </start>
  <define name="DicomDataSet">
    <zeroOrMore><ref name="DicomAttribute"/></zeroOrMore>
  </define>
  <define name="DicomAttribute">
    <element name="DicomAttribute">
      <attribute name="tag"><data type="string"><param name="pattern">[0-9A-Fa-f]{8}</param></data></attribute>
      <attribute name="vr"><choice>%s</choice></attribute>
      <optional><attribute name="keyword"><data type="token"/></attribute></optional>
      <optional><attribute name="privateCreator"><data type="string"/></attribute></optional>
      <optional><choice>
        <element name="BulkData"><choice>
          <attribute name="uuid"><data type="string"/></attribute>
          <attribute name="uri"><data type="anyURI"/></attribute>
        </choice></element>
        <oneOrMore><element name="Value"><ref name="Number"/><data type="string"/></element></oneOrMore>
        <oneOrMore><element name="Item"><ref name="Number"/><ref name="DicomDataSet"/></element></oneOrMore>
        <oneOrMore><element name="PersonName"><ref name="Number"/>
          <optional><element name="Alphabetic"><ref name="NameComponents"/></element></optional>
          <optional><element name="Ideographic"><ref name="NameComponents"/></element></optional>
          <optional><element name="Phonetic"><ref name="NameComponents"/></element></optional>
        </element></oneOrMore>
        <element name="InlineBinary"><data type="base64Binary"/></element>
      </choice></optional>
    </element>
  </define>
  <define name="NameComponents">
    <optional><element name="FamilyName"><data type="string"/></element></optional>
    <optional><element name="GivenName"><data type="string"/></element></optional>
    <optional><element name="MiddleName"><data type="string"/></element></optional>
    <optional><element name="NamePrefix"><data type="string"/></element></optional>
    <optional><element name="NameSuffix"><data type="string"/></element></optional>
  </define>
  <define name="Number">
    <attribute name="number"><data type="positiveInteger"/></attribute>
  </define>
</grammar>
""" % "".join("<value>%s</value>" % v for v in ALL_VRS)

_rng = None


def validate_xml(body, allow_xml_space=False):
    """Raise AssertionError unless @body is valid against the PS3.19 schema
    and its numbering is 1, 2, 3 ... . @allow_xml_space drops an
    xml:space attribute of the root first (dcm2xml writes one)."""
    global _rng
    if _rng is None:
        _rng = etree.RelaxNG(etree.fromstring(RNG.encode("utf-8")))
    doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    if allow_xml_space:
        doc.attrib.pop("{http://www.w3.org/XML/1998/namespace}space", None)
    tree = etree.ElementTree(doc)
    assert _rng.validate(tree), "not a PS3.19 Native DICOM Model: %s" % _rng.error_log
    for parent in doc.iter():
        nums = [c.get("number") for c in parent
                if isinstance(c.tag, str) and c.get("number") is not None]
        assert nums == [str(i) for i in range(1, len(nums) + 1)], \
            "numbering %s below %s" % (nums, parent.tag)
    # tags ascending and unique within each dataset
    for ds in [doc] + doc.findall(".//{%s}Item" % NS):
        tags = [int(a.get("tag"), 16) for a in ds.findall("{%s}DicomAttribute" % NS)]
        assert tags == sorted(set(tags)), "tags not ascending/unique in %s" % ds.tag
    return doc


_KEY_RE = re.compile(r"^[0-9A-F]{8}$")


def validate_json(obj, path="$", allow_empty_value=False):
    """Raise AssertionError unless @obj is a DICOM JSON Model dataset
    (PS3.18 F.2): uppercase 8-hex keys, a known vr, at most one of Value /
    BulkDataURI / InlineBinary, value types per VR. @allow_empty_value
    tolerates "Value": [] (pydicom writes it for an empty sequence)."""
    assert isinstance(obj, dict), "%s: not an object" % path
    keys = list(obj)
    assert keys == sorted(keys), "%s: keys not in tag order" % path
    for key, a in obj.items():
        p = "%s.%s" % (path, key)
        assert _KEY_RE.match(key), "%s: bad key" % p
        assert isinstance(a, dict), "%s: attribute not an object" % p
        vr = a.get("vr")
        assert vr in ALL_VRS, "%s: vr %r" % (p, vr)
        assert set(a) <= {"vr", "Value", "BulkDataURI", "InlineBinary"}, "%s: %s" % (p, set(a))
        assert len(set(a) & {"Value", "BulkDataURI", "InlineBinary"}) <= 1, p
        if "InlineBinary" in a:
            assert vr in BINARY_VRS, p
            base64.b64decode(a["InlineBinary"], validate=True)
        if "BulkDataURI" in a:
            assert vr in BINARY_VRS or vr in ("FL", "FD", "SL", "SS", "UL", "US", "OB", "OW"), p
            assert isinstance(a["BulkDataURI"], str) and a["BulkDataURI"], p
        if "Value" in a:
            vals = a["Value"]
            assert isinstance(vals, list) and (vals or allow_empty_value), \
                "%s: Value not a non-empty array" % p
            for i, v in enumerate(vals):
                q = "%s[%d]" % (p, i)
                if vr == "SQ":
                    validate_json(v, q, allow_empty_value)
                elif vr == "PN":
                    assert v is None or (isinstance(v, dict) and set(v) <= {
                        "Alphabetic", "Ideographic", "Phonetic"}), q
                elif vr in JSON_NUMBER_VRS:
                    assert v is None or (isinstance(v, (int, float))
                                         and not isinstance(v, bool)), "%s: %r" % (q, v)
                else:
                    assert v is None or isinstance(v, str), "%s: %r" % (q, v)
                    if vr == "AT":
                        assert _KEY_RE.match(v), q
    return obj


def _bulk_value(meta, uri, ts):
    parts = meta.refs[uri]
    if len(parts) > 1 or (parts and not parts[0].content_type.startswith(OCTET)
                          and not parts[0].content_type.startswith(("application/pdf",
                                                                    "text/xml"))):
        if ts in NATIVE_TS and all(p.content_type == OCTET for p in parts):
            return b"".join(p.data for p in parts)
        return encapsulate([p.data for p in parts], has_bot=True)
    data = parts[0].data
    return data + (b"\0" if len(data) % 2 else b"")


def _text_values(vr, texts):
    if vr in NUMBER_VRS:
        return [float(t) if vr in ("FL", "FD") else int(t) for t in texts]
    if vr == "AT":
        return [int(t, 16) for t in texts]
    return texts


def xml_to_dataset(body, meta, top_ts=EXPLICIT):
    """Read a Native DICOM Model document back into a pydicom Dataset
    (BulkData from @meta's parts: frames of encapsulated pixel data are
    encapsulated with a basic offset table)."""
    doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    top = Dataset()
    _xml_read(doc, top, meta, top_ts)
    return top


def _xml_read(parent, ds, meta, top_ts):
    for a in parent.findall("{%s}DicomAttribute" % NS):
        tag = int(a.get("tag"), 16)
        vr = a.get("vr")
        kids = [c for c in a if isinstance(c.tag, str)]
        if vr == "SQ":
            items = []
            for it in kids:
                sub = Dataset()
                _xml_read(it, sub, meta, top_ts)
                items.append(sub)
            ds.add(DataElement(tag, vr, Sequence(items)))
        elif kids and kids[0].tag == "{%s}BulkData" % NS:
            ds.add(DataElement(tag, vr, _bulk_value(meta, kids[0].get("uri"), top_ts)))
        elif kids and kids[0].tag == "{%s}InlineBinary" % NS:
            ds.add(DataElement(tag, vr, base64.b64decode(kids[0].text or "")))
        elif vr in BINARY_VRS:
            ds.add(DataElement(tag, vr, b""))
        elif vr == "PN":
            vals = []
            for p in kids:
                groups = []
                for gname in ("Alphabetic", "Ideographic", "Phonetic"):
                    ge = p.find("{%s}%s" % (NS, gname))
                    if ge is None:
                        groups.append("")
                        continue
                    comps = [(ge.findtext("{%s}%s" % (NS, c)) or "") for c in PN_COMPONENTS]
                    while comps and not comps[-1]:
                        comps.pop()
                    groups.append("^".join(comps))
                while groups and not groups[-1]:
                    groups.pop()
                vals.append("=".join(groups))
            ds.add(DataElement(tag, vr, vals if len(vals) != 1 else vals[0]))
        else:
            texts = [k.text or "" for k in kids]
            vals = _text_values(vr, texts)
            if not vals:
                v = None if vr in NUMBER_VRS or vr == "AT" else ""
            elif len(vals) == 1:
                v = vals[0]
            else:
                v = vals
            ds.add(DataElement(tag, vr, v))


def json_to_dataset(obj, meta, top_ts=EXPLICIT):
    """Read a DICOM JSON object back with pydicom's Dataset.from_json."""
    def handler(tag, vr, uri):
        return _bulk_value(meta, uri, top_ts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset.from_json(copy.deepcopy(obj), bulk_data_uri_handler=handler)
    return ds


# ================================================================ comparison
def _norm_value(vr, v, numeric_strings):
    """A comparable form of one element value."""
    if v is None:
        return []
    if vr == "SQ":
        return v
    if vr in BINARY_VRS:
        return bytes(v)
    vals = list(v) if isinstance(v, (list, MultiValue)) else [v]
    out = []
    for x in vals:
        if vr == "PN":
            out.append(str(x))
        elif vr == "FL":
            out.append(struct.pack("<f", float(x)))
        elif vr == "FD":
            out.append(float(x))
        elif vr in ("DS", "IS") and numeric_strings:
            out.append(None if str(x).strip() == "" else float(str(x)))
        elif vr in ("DS", "IS"):
            out.append(getattr(x, "original_string", None) or str(x))
        elif vr == "AT":
            out.append(int(x))
        elif vr in NUMBER_VRS:
            out.append(int(x))
        else:
            out.append(str(x))
    if vr not in BINARY_VRS and out in ([""], [None]):
        return []
    return out


def diff_datasets(want, got, numeric_strings=False, path="", skip=()):
    """Differences between two datasets, attribute by attribute: the same
    tags (group 0002 excluded), the same VR, equal values (strings as
    decoded by pydicom, so character sets count; binary values byte for
    byte; FL as float32). @numeric_strings compares DS/IS numerically
    (DICOM JSON carries them as numbers). @return list of str"""
    diffs = []
    wt = [e.tag for e in want if e.tag.group != 2 and e.tag not in skip]
    gt = [e.tag for e in got if e.tag.group != 2 and e.tag not in skip]
    for t in sorted(set(wt) - set(gt)):
        diffs.append("%s%s %s: missing in the stored file" % (path, _fmt(t), want[t].keyword))
    for t in sorted(set(gt) - set(wt)):
        diffs.append("%s%s %s: not in the original (%r)" % (path, _fmt(t), got[t].keyword,
                                                           _short(got[t].value)))
    for t in sorted(set(wt) & set(gt)):
        a, b = want[t], got[t]
        where = "%s%s %s" % (path, _fmt(t), a.keyword or "private")
        if a.VR != b.VR:
            diffs.append("%s: VR %s, expected %s" % (where, b.VR, a.VR))
            continue
        if a.VR == "SQ":
            if len(a.value) != len(b.value):
                diffs.append("%s: %d items, expected %d" % (where, len(b.value), len(a.value)))
                continue
            for i, (x, y) in enumerate(zip(a.value, b.value), 1):
                diffs += diff_datasets(x, y, numeric_strings, "%s[%d]." % (where, i))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            va = _norm_value(a.VR, a.value, numeric_strings)
            vb = _norm_value(b.VR, b.value, numeric_strings)
        if va != vb and isinstance(va, bytes) and isinstance(vb, bytes):
            at = next((i for i, (x, y) in enumerate(zip(va, vb)) if x != y),
                      min(len(va), len(vb)))
            diffs.append("%s: %d bytes, expected %d, first difference at offset %d"
                         % (where, len(vb), len(va), at))
        elif va != vb:
            diffs.append("%s: %r, expected %r" % (where, _short(vb), _short(va)))
    return diffs


def _fmt(t):
    t = Tag(t)
    return "(%04X,%04X)" % (t.group, t.element)


def _short(v):
    if isinstance(v, (bytes, bytearray)):
        return "<%d bytes %s...>" % (len(v), bytes(v[:16]).hex()) if len(v) > 16 else bytes(v)
    s = v if isinstance(v, (list, str, int, float)) else str(v)
    return s if len(repr(s)) < 200 else repr(s)[:200] + "..."


def read_stored(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def check_meta_header(path, sop_class, sop, ts):
    """The stored file is PS3.10: preamble, DICM, a meta header whose SOP
    Class/Instance UIDs and transfer syntax are as expected.
    @return list of differences"""
    diffs = []
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return ["%s: no preamble + DICM" % path]
    st = read_stored(path)
    fm = st.file_meta
    for kw, want in (("MediaStorageSOPClassUID", sop_class),
                     ("MediaStorageSOPInstanceUID", sop),
                     ("TransferSyntaxUID", ts)):
        got = str(fm.get(kw, "")) if kw in fm else None
        if got != want:
            diffs.append("meta %s: %r, expected %r" % (kw, got, want))
    if fm.get("FileMetaInformationVersion") != b"\x00\x01":
        diffs.append("meta FileMetaInformationVersion: %r" % fm.get("FileMetaInformationVersion"))
    if not str(fm.get("ImplementationClassUID", "")):
        diffs.append("meta ImplementationClassUID missing")
    if str(st.get("SOPClassUID", "")) != str(fm.get("MediaStorageSOPClassUID", "")):
        diffs.append("meta and dataset disagree on the SOP Class UID")
    if str(st.get("SOPInstanceUID", "")) != str(fm.get("MediaStorageSOPInstanceUID", "")):
        diffs.append("meta and dataset disagree on the SOP Instance UID")
    return diffs


# ---------------------------------------------------------------- dcmdump
_LEN_RE = re.compile(r"#\s*(\S+),\s*(\d+)\s+(\S+)\s*$")


def dcmdump(path_or_bytes):
    """(returncode, stdout, stderr) of dcmdump on a file or bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
            f.write(path_or_bytes)
            f.flush()
            return dcmdump(f.name)
    r = subprocess.run(["dcmdump", "+L", "+E", str(path_or_bytes)], capture_output=True,
                       text=True, errors="replace")
    return r.returncode, r.stdout, r.stderr


def dump_dataset_lines(stdout):
    """The data set lines of a dcmdump output, normalised for what may
    legitimately differ between two writers of the same data: explicit vs
    undefined lengths of sequences and items (and their delimiters)."""
    lines = stdout.splitlines()
    try:
        start = lines.index("# Dicom-Data-Set")
    except ValueError:
        return lines
    out = []
    for l in lines[start + 2:]:
        if "(fffe,e00d)" in l or "(fffe,e0dd)" in l:
            continue
        if re.search(r"\((Sequence|Item) with (explicit|undefined) length", l) or \
                re.search(r"^\s*\(fffe,e000\)", l):
            l = re.sub(r"with (explicit|undefined) length ", "", l)
            l = _LEN_RE.sub(lambda m: "# %s" % m.group(3), l)
        out.append(l.rstrip())
    return out


def dcmdump_problems(path):
    """Why dcmtk does not read @path cleanly: a non-zero exit, any warning
    or error message. @return list of str"""
    rc, out, err = dcmdump(path)
    probs = []
    if rc != 0:
        probs.append("dcmdump exit %d" % rc)
    probs += [l for l in err.splitlines() if l.strip()]
    probs += [l for l in out.splitlines() if re.match(r"^(W|E|F): ", l)]
    return probs


def dump_diff(orig_bytes, stored_path):
    """Data set lines of dcmdump that differ between the original and the
    stored file. @return list of str"""
    import difflib
    a = dump_dataset_lines(dcmdump(orig_bytes)[1])
    b = dump_dataset_lines(dcmdump(stored_path)[1])
    if a == b:
        return []
    return [l for l in difflib.unified_diff(a, b, "original", "stored", lineterm="", n=0)]


def check_stored_file(path, orig, ts=None, numeric_strings=False, expect=None, skip=()):
    """Everything a round trip must give: the file exists, is PS3.10 with
    the expected meta header, its data set equals the original's
    attribute by attribute (pixel data byte for byte), dcmtk reads it
    without a warning. @return list of problems"""
    path = pathlib.Path(path)
    if not path.is_file():
        return ["not stored: %s" % path]
    ts = ts or expected_ts(orig)
    u = orig.uids
    probs = check_meta_header(path, u["sop_class"], u["sop"], ts)
    got = read_stored(path)
    probs += diff_datasets(expect if expect is not None else orig.ds, got, numeric_strings,
                           skip=skip)
    probs += ["dcmdump: " + p for p in dcmdump_problems(path)]
    return probs


# ================================================================ test helpers
def small_sc8(rows=16, cols=16, private=False, **kw):
    """A small 8-bit Secondary Capture (pixel data OB): for dcm2xml, which
    writes OW values byte-swapped. @private adds a private block without
    OW values."""
    ds = g.ct_dataset(rows=rows, cols=cols, sop_class=SC, pixel_bytes=os.urandom(rows * cols),
                      **kw)
    if private:
        _private_block(ds, big_private=False)
    ds.file_meta.MediaStorageSOPClassUID = SC
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    for k in ("RescaleIntercept", "RescaleSlope"):
        delattr(ds, k)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds["PixelData"].VR = "OB"
    return Original(_write(ds), "small-sc8")


def split_encapsulated(value):
    """(offsets of the basic offset table, [fragments]) of an encapsulated
    Pixel Data value (without the sequence delimiter)."""
    off = 0
    items = []
    while off + 8 <= len(value):
        tag = value[off:off + 4]
        length = struct.unpack("<I", value[off + 4:off + 8])[0]
        if tag == b"\xfe\xff\xdd\xe0":
            break
        assert tag == b"\xfe\xff\x00\xe0", "not an item at %d: %r" % (off, tag)
        items.append(value[off + 8:off + 8 + length])
        off += 8 + length
    assert items, "no basic offset table item"
    bot = items[0]
    offsets = list(struct.unpack("<%dI" % (len(bot) // 4), bot))
    return offsets, items[1:]


def expected_offsets(fragments):
    out, pos = [], 0
    for f in fragments:
        out.append(pos)
        pos += 8 + len(f)
    return out


def stored_path(h, uids):
    return h.instance_path(uids["study"], uids["series"], uids["sop"])


def assert_roundtrip(h, orig, ts=None, numeric_strings=False, expect=None, dump=True,
                     skip=()):
    """The instance @orig is stored where the default layout puts it, and
    equals the original (check_stored_file); with @dump also dcmdump's
    data set lines equal the original's."""
    path = stored_path(h, orig.uids)
    probs = check_stored_file(path, orig, ts, numeric_strings, expect, skip)
    if dump and not probs:
        probs += ["dcmdump differs: " + l for l in dump_diff(orig.data, path)]
    assert not probs, "stored %s (%s) differs from the original:\n  %s" % (
        orig.name, path, "\n  ".join(probs))
    return path


def pixel_parts(meta):
    """The bulk parts of the Pixel Data (by the URI the metadata gives it)."""
    uri = None
    if meta.obj is not None:
        a = meta.obj.get("7FE00010", {})
        uri = a.get("BulkDataURI")
    else:
        doc = etree.fromstring(meta.body)
        for a in doc.findall("{%s}DicomAttribute" % NS):
            if a.get("tag").upper() == "7FE00010":
                b = a.find("{%s}BulkData" % NS)
                uri = b.get("uri") if b is not None else None
    return meta.refs.get(uri, [])


def set_pixel_type(meta, content_type):
    for p in pixel_parts(meta):
        p.content_type = content_type
    return meta


def xml_without(meta, keyword_or_tag):
    """The metadata XML with one top-level attribute removed."""
    doc = etree.fromstring(meta.body)
    tag = keyword_or_tag if isinstance(keyword_or_tag, int) else \
        pydicom.datadict.tag_for_keyword(keyword_or_tag)
    for a in doc.findall("{%s}DicomAttribute" % NS):
        if int(a.get("tag"), 16) == tag:
            doc.remove(a)
    meta.body = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    return meta


def xml_set_value(meta, keyword, value):
    """Replace the first Value of a top-level attribute (text as given)."""
    doc = etree.fromstring(meta.body)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    for a in doc.findall("{%s}DicomAttribute" % NS):
        if int(a.get("tag"), 16) == tag:
            a.find("{%s}Value" % NS).text = value
    meta.body = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    return meta
