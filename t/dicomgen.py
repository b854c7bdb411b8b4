"""DICOM test data from pydicom (2.3 API).

Every factory returns (bytes, uids) where uids = {'study', 'series', 'sop',
'sop_class', 'transfer_syntax'}. Patient attributes carry recognisable
values (PATIENT_NAME etc., all containing SECRET) so tests can assert that
they never reach a log.
"""

import hashlib
import io
import os
import random

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (generate_uid, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)

try:  # pydicom >= 2.2
    from pydicom.uid import CTImageStorage, BasicTextSRStorage, SecondaryCaptureImageStorage
except ImportError:  # pragma: no cover
    CTImageStorage = "1.2.840.10008.5.1.4.1.1.2"
    BasicTextSRStorage = "1.2.840.10008.5.1.4.1.1.88.11"
    SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"

from pydicom.encaps import encapsulate

PATIENT_NAME = "SECRET^PATIENT"
PATIENT_ID = "SECRETID4711"
PATIENT_BIRTH_DATE = "19010101"
SECRET = "SECRET"           # grep for this in logs
UNKNOWN_SOP_CLASS = "1.2.40.0.13.1.15.110.3.165.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"

#: transfer syntaxes written natively (not encapsulated)
_NATIVE = {
    ImplicitVRLittleEndian: (True, True),     # implicit, little
    ExplicitVRLittleEndian: (False, True),
    ExplicitVRBigEndian: (False, False),
    DeflatedExplicitVRLittleEndian: (False, True),
}


def uid():
    """A new UID: pydicom's root plus digits, 64 characters."""
    return generate_uid()


def uid_of_length(n, prefix="1.2.826.0.1.3680043.8.498."):
    """A valid UID of exactly @n characters (n >= len(prefix) + 1)."""
    assert n > len(prefix)
    digits = "".join(random.choice("0123456789") for _ in range(n - len(prefix)))
    return prefix + ("1" + digits[1:] if digits[0] == "0" and len(digits) > 1 else digits)


def _meta(sop_class, sop, ts):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "STOWRS_TEST"
    return meta


def _file_dataset(meta):
    ds = FileDataset("stowrs-test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    implicit, little = _NATIVE.get(meta.TransferSyntaxUID, (False, True))
    ds.is_implicit_VR = implicit
    ds.is_little_endian = little
    return ds


def _patient(ds):
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PATIENT_BIRTH_DATE
    ds.PatientSex = "O"
    ds.AccessionNumber = "SECRETACC1"
    ds.StudyDescription = "SECRET study description"
    ds.ReferringPhysicianName = "SECRET^DOCTOR"


def _common(ds, sop_class, sop, study, series):
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SpecificCharacterSet = "ISO_IR 100"
    _patient(ds)


def _apply(ds, attrs):
    """Set or (value None) delete attributes by keyword."""
    for k, v in attrs.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)


def _write(ds):
    buf = io.BytesIO()
    ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


def _uids(ds, meta):
    g = lambda k: str(ds[k].value) if k in ds else None
    return {"study": g("StudyInstanceUID"), "series": g("SeriesInstanceUID"),
            "sop": g("SOPInstanceUID"), "sop_class": g("SOPClassUID"),
            "transfer_syntax": str(meta.TransferSyntaxUID)}


def ct_dataset(study=None, series=None, sop=None, rows=64, cols=64, frames=1,
               transfer_syntax=ExplicitVRLittleEndian, sop_class=CTImageStorage,
               pixel_bytes=None, **attrs):
    """The FileDataset behind ct_image (not yet written)."""
    study = study or uid()
    series = series or uid()
    sop = sop or uid()
    meta = _meta(sop_class, sop, transfer_syntax)
    ds = _file_dataset(meta)
    _common(ds, sop_class, sop, study, series)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    if frames != 1:
        ds.NumberOfFrames = frames
    n = rows * cols * 2 * frames
    if pixel_bytes is None:
        pixel_bytes = os.urandom(min(n, 1 << 16))
        pixel_bytes = (pixel_bytes * (n // len(pixel_bytes) + 1))[:n] if n else b""
    if transfer_syntax in _NATIVE:
        ds.PixelData = pixel_bytes
        ds["PixelData"].VR = "OW"
    else:
        # compressed transfer syntax: encapsulated fragments (not a real
        # codestream; the server is not expected to decode pixel data)
        frame_len = max(len(pixel_bytes) // max(frames, 1), 2)
        fr = [pixel_bytes[i:i + frame_len] for i in range(0, len(pixel_bytes), frame_len)]
        fr = [f + (b"\0" if len(f) % 2 else b"") for f in fr] or [b"\0\0"]
        ds.PixelData = encapsulate(fr)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    _apply(ds, attrs)
    return ds


def ct_image(study=None, series=None, sop=None, rows=64, cols=64, frames=1,
             transfer_syntax=ExplicitVRLittleEndian, sop_class=CTImageStorage,
             pixel_bytes=None, **attrs):
    """A valid PS3.10 CT image. Extra keyword arguments set dataset
    attributes by keyword (None deletes one). @return (bytes, uids)"""
    ds = ct_dataset(study, series, sop, rows, cols, frames, transfer_syntax,
                    sop_class, pixel_bytes, **attrs)
    return _write(ds), _uids(ds, ds.file_meta)


def sr_document(study=None, series=None, sop=None, sop_class=BasicTextSRStorage,
                transfer_syntax=ExplicitVRLittleEndian, text="SECRET finding", **attrs):
    """A small Basic Text SR. @return (bytes, uids)"""
    study = study or uid()
    series = series or uid()
    sop = sop or uid()
    meta = _meta(sop_class, sop, transfer_syntax)
    ds = _file_dataset(meta)
    _common(ds, sop_class, sop, study, series)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue = "121070"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Findings"
    ds.ConceptNameCodeSequence = Sequence([concept])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = text
    ds.ContentSequence = Sequence([item])
    _apply(ds, attrs)
    return _write(ds), _uids(ds, meta)


def no_preamble(**kw):
    """Only the dataset of a CT image (Implicit VR LE): no preamble, no
    'DICM', no meta header. @return (bytes, uids)"""
    ds = ct_dataset(transfer_syntax=ImplicitVRLittleEndian, **kw)
    buf = io.BytesIO()
    pydicom.filewriter.write_dataset(pydicom.filebase.DicomFileLike(buf), ds)
    return buf.getvalue(), _uids(ds, ds.file_meta)


def meta_only(**kw):
    """Preamble, 'DICM' and the meta header, no dataset. @return (bytes, uids)"""
    data, uids = ct_image(**kw)
    # meta group length value tells where the meta header ends
    gl = int.from_bytes(data[140:144], "little")
    return data[:144 + gl], uids


def truncated(data, at):
    """@data cut to its first @at bytes (negative: drop the last -at)."""
    return data[:at]


def _write_meta_as_is(ds):
    """Write with the file meta exactly as set (pydicom would otherwise copy
    the dataset's SOP Class/Instance UIDs into it)."""
    buf = io.BytesIO()
    if "FileMetaInformationGroupLength" not in ds.file_meta:
        ds.file_meta.FileMetaInformationGroupLength = 0
    if "FileMetaInformationVersion" not in ds.file_meta:
        ds.file_meta.FileMetaInformationVersion = b"\x00\x01"
    ds.save_as(buf, write_like_original=True)
    return buf.getvalue()


def with_meta(meta_sop_instance=None, meta_sop_class=None, meta_transfer_syntax=None,
              **kw):
    """A CT whose meta header disagrees with its dataset (class and/or
    instance). @return (bytes, uids) with uids from the dataset and
    'meta_sop'/'meta_sop_class' from the header."""
    ds = ct_dataset(**kw)
    if meta_sop_instance is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = meta_sop_instance
    if meta_sop_class is not None:
        ds.file_meta.MediaStorageSOPClassUID = meta_sop_class
    if meta_transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = meta_transfer_syntax
    uids = _uids(ds, ds.file_meta)
    uids["meta_sop"] = str(ds.file_meta.MediaStorageSOPInstanceUID)
    uids["meta_sop_class"] = str(ds.file_meta.MediaStorageSOPClassUID)
    return _write_meta_as_is(ds), uids


def missing(attr, **kw):
    """A CT without attribute @attr (keyword, e.g. 'StudyInstanceUID').
    @return (bytes, uids)"""
    kw[attr] = None
    return ct_image(**kw)


def with_values(**attrs):
    """A CT with attributes forced to given values, even invalid ones such
    as SOPInstanceUID='1..2' (written without validation)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ct_dataset()
        for k, v in attrs.items():
            if v is None:
                delattr(ds, k)
            else:
                ds[k].value = v
        if "SOPInstanceUID" in attrs and attrs["SOPInstanceUID"] is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = attrs["SOPInstanceUID"]
        if "SOPClassUID" in attrs and attrs["SOPClassUID"] is not None:
            ds.file_meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
        return _write_meta_as_is(ds), _uids(ds, ds.file_meta)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- streaming
class BigInstance:
    """What big_instance_stream produced: sizes, uids and, once the iterator
    is exhausted, the sha256 of every byte it yielded."""

    def __init__(self, size, header_length, pixel_length, uids):
        self.size = size
        self.header_length = header_length    # bytes before the pixel values
        self.pixel_length = pixel_length
        self.uids = uids
        self._hash = hashlib.sha256()
        self.bytes_yielded = 0
        self.done = False

    @property
    def sha256(self):
        assert self.done, "stream not consumed yet"
        return self._hash.hexdigest()

    def __getitem__(self, k):   # info['sha256'], info['uids'], ...
        return getattr(self, k)


def big_instance_stream(size_bytes, chunk=1 << 20, study=None, series=None, sop=None,
                        transfer_syntax=ExplicitVRLittleEndian):
    """A valid PS3.10 CT of exactly @size_bytes (even, >= 16 KiB), produced
    on the fly: a pydicom header (64x64 8-bit frames, ImageComments sized
    to make the total exact), then (7FE0,0010) OW with an explicit 32-bit
    length written by hand, then generated pixel bytes.

    @return (BigInstance, iterator of bytes) -- the sha256 is available as
            info.sha256 after the iterator has been consumed
    """
    assert size_bytes % 2 == 0, "size must be even"
    assert size_bytes >= 16384, "size too small"
    assert transfer_syntax in (ExplicitVRLittleEndian,), "explicit VR LE only"
    frame = 64 * 64
    frames = 1
    comments = 0
    header = None
    for _ in range(10):
        ds = ct_dataset(study, series, sop, rows=64, cols=64, frames=1,
                        transfer_syntax=transfer_syntax, pixel_bytes=b"")
        study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        del ds.PixelData
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.NumberOfFrames = frames
        ds.ImageComments = "x" * comments
        header = _write(ds)
        budget = size_bytes - len(header) - 12
        assert budget > frame, "size too small"
        new_frames = budget // frame
        new_comments = comments + (budget - new_frames * frame)
        if new_frames == frames and new_comments == comments:
            break
        frames, comments = new_frames, new_comments
    else:  # pragma: no cover
        raise AssertionError("could not size the header")
    pixel_length = frames * frame
    assert pixel_length < 0xFFFFFFFF
    element = (b"\xe0\x7f\x10\x00" + b"OW" + b"\0\0" + pixel_length.to_bytes(4, "little"))
    prefix = header + element
    assert len(prefix) + pixel_length == size_bytes
    info = BigInstance(size_bytes, len(prefix), pixel_length, _uids(ds, ds.file_meta))

    pattern = os.urandom(chunk + 4096)
    mv = memoryview(pattern)

    def gen():
        info._hash.update(prefix)
        info.bytes_yielded += len(prefix)
        yield prefix
        left = pixel_length
        i = 0
        while left:
            n = min(chunk, left)
            off = (i * 4093) % 4096
            piece = bytes(mv[off:off + n])
            info._hash.update(piece)
            info.bytes_yielded += n
            left -= n
            i += 1
            yield piece
        info.done = True

    return info, gen()
