/**
 * @file stowrs_dicom.cc
 * @brief The dcmtk shim: the only C++ file and the only one that sees dcmtk.
 *
 * Behind the plain C header stowrs_dicom.h (STYLE.md §11). Every exported
 * function catches everything and returns a code; no exception, OFString or
 * dcmtk type leaves this file. No objects with static storage duration: httpd
 * loads the module twice.
 *
 * Inspection of a PS3.10 file, in three steps:
 *   1. check_framing(): the 128-byte preamble, "DICM", and a File Meta
 *      Information group whose Group Length (0002,0000) ends exactly at an
 *      element boundary -- dcmtk accepts a file without preamble even with
 *      ERM_fileOnly, a missing group length and a meta header cut short at an
 *      element boundary;
 *   2. dcmtk reads the meta header alone (ERM_metaOnly), so that its UIDs are
 *      known even when the dataset turns out unreadable, and so that an
 *      unknown transfer syntax can be told apart from a missing one (dcmtk
 *      reports both as EC_FileMetaInfoHeaderMissing);
 *   3. dcmtk reads meta header and dataset (ERM_fileOnly) with a small
 *      maxReadLength: longer values are skipped over, not loaded, and a value
 *      that runs past the end of the file is an error. The whole dataset is
 *      parsed, Pixel Data included, so a file cut inside Pixel Data is found
 *      too. In a deflated dataset dcmtk's own stream cannot skip a value (it
 *      would load it whole), so inspect_stream_t re-inflates to find a long
 *      value again; there parsing stops at Pixel Data, and the zlib stream
 *      is then inflated to its end (nothing kept) to find truncation.
 *
 * A transfer syntax dcmtk does not know is refused (STOWRS_DICOM_UNKNOWN_TS),
 * except the few in encapsulated_unknown_to_dcmtk(): those are encoded like
 * any encapsulated syntax dcmtk knows, and step 3 reads their dataset as one.
 *
 * Building a PS3.10 file from metadata and bulk data (stowrs_dicom_build):
 * the metadata tree becomes a DcmDataset; dcmtk serialises our own File Meta
 * Information (so that its Transfer Syntax UID may be one dcmtk 3.6.7 does
 * not know) and the dataset, in Explicit VR Little Endian, through a small
 * buffer into a file written with POSIX calls (errno, ENOSPC, reaches the
 * caller). Top-level Pixel Data by BulkData URI is never loaded: its element
 * -- native, or encapsulated with a Basic Offset Table and one fragment per
 * part -- is appended by copying the part files in 1 MiB chunks, followed by
 * any attributes after (7FE0,0010). Other bulk data values are read into
 * memory.
 *
 * Character sets: metadata is Unicode, so every string value in the tree
 * is UTF-8, whatever Specific Character Set (0008,0005) the dataset
 * declares. Before writing, fix_charset() makes the two agree, scope by
 * scope (the dataset, and each sequence item with its own (0008,0005)):
 * non-ASCII values of the VRs the character set affects (SH, LO, ST, LT,
 * UC, UT, PN) are converted from UTF-8 to the declared character set with
 * dcmtk's converter; where that is not possible -- no declaration, an empty
 * or unknown one, code extensions, a character the set cannot represent, no
 * conversion library -- the scope declares what its bytes are, "ISO_IR 192".
 * Values that came as bytes (BulkData, InlineBinary) are the client's
 * encoded value and are left alone.
 */

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcerror.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmf.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcobject.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/oflog/helpers/loglog.h"
#include "dcmtk/oflog/oflog.h"

#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcspchrs.h"
#include "dcmtk/dcmdata/dcvrat.h"
#include "dcmtk/dcmdata/dcvrsv.h"
#include "dcmtk/dcmdata/dcvruv.h"
#include "dcmtk/dcmdata/dcwcache.h"

#include <cerrno>
#include <sys/types.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stowrs_dicom.h"

namespace {

enum {
    /** values longer than this are skipped over while parsing, not loaded */
    STOWRS_MAX_READ_LENGTH = 4096,
    /** 128-byte preamble + "DICM" */
    STOWRS_PREFIX_LEN = 132,
    /** characters of a UID kept in stowrs_dicom_info_t (without the NUL) */
    STOWRS_UID_MAX = 64,
    /** a larger File Meta Information Group Length is taken as garbage */
    STOWRS_MAX_META_LENGTH = 1024 * 1024
};

void set_err(char *errbuf, size_t errlen, const char *msg)
{
    if (errbuf && errlen > 0) {
        std::snprintf(errbuf, errlen, "%s", msg ? msg : "");
    }
}

void set_cond(char *errbuf, size_t errlen, const char *what, const OFCondition &cond)
{
    if (errbuf && errlen > 0) {
        std::snprintf(errbuf, errlen, "%s: %s", what, cond.text());
    }
}

/**
 * Copy a raw attribute value into a 65-byte field: trailing spaces and NULs
 * removed, an interior NUL replaced by '?' (so that the value cannot look
 * like a shorter valid UID), cut at 64 characters with @c overlong set.
 */
void copy_uid(char *dst, const char *src, size_t len, int *overlong)
{
    while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0')) {
        len--;
    }
    if (len > STOWRS_UID_MAX) {
        len = STOWRS_UID_MAX;
        *overlong = 1;
    }
    for (size_t i = 0; i < len; i++) {
        dst[i] = src[i] == '\0' ? '?' : src[i];
    }
    dst[len] = '\0';
}

/**
 * Fetch one UID attribute of @p item into @p dst ("" if absent or empty).
 * Values longer than maxReadLength were not loaded; only their first bytes
 * are read back from the file.
 */
OFCondition get_uid(DcmItem *item, const DcmTagKey &key, char *dst, int *overlong)
{
    dst[0] = '\0';
    DcmElement *elem = NULL;
    if (item == NULL || item->findAndGetElement(key, elem, OFFalse).bad() || elem == NULL) {
        return EC_Normal;                 /* absent */
    }
    const Uint32 len = elem->getLength();
    if (len == 0) {
        return EC_Normal;
    }
    if (len > STOWRS_MAX_READ_LENGTH) {
        char head[STOWRS_UID_MAX + 1];
        OFCondition cond = elem->getPartialValue(head, 0, STOWRS_UID_MAX + 1);
        if (cond.bad()) {
            return cond;
        }
        copy_uid(dst, head, sizeof(head), overlong);
        *overlong = 1;
        return EC_Normal;
    }
    OFString value;
    /* the whole value, all of its components: "1.2\3.4" stays visible */
    OFCondition cond = elem->getOFStringArray(value, OFFalse);
    if (cond.bad()) {
        return cond;
    }
    copy_uid(dst, value.c_str(), value.length(), overlong);
    return EC_Normal;
}

Uint32 le32(const unsigned char *p)
{
    return OFstatic_cast(Uint32, p[0]) | OFstatic_cast(Uint32, p[1]) << 8
        | OFstatic_cast(Uint32, p[2]) << 16 | OFstatic_cast(Uint32, p[3]) << 24;
}

bool is_long_vr(const unsigned char *vr)
{
    const char *const long_vrs[] = {
        "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"
    };
    for (size_t i = 0; i < sizeof(long_vrs) / sizeof(long_vrs[0]); i++) {
        if (vr[0] == long_vrs[i][0] && vr[1] == long_vrs[i][1]) {
            return true;
        }
    }
    return false;
}

/**
 * The framing dcmtk is lenient about (PS3.10 §7.1): a 128-byte preamble,
 * "DICM", then the File Meta Information in Explicit VR Little Endian,
 * starting with its Group Length (0002,0000), whose value must end exactly
 * at an element boundary after group 0002 elements only. dcmtk takes a file
 * without preamble even with ERM_fileOnly, a missing group length, and a meta
 * header cut at an element boundary.
 * @param meta_end set to the offset of the first dataset byte
 */
stowrs_dicom_rc_e check_framing(const char *path, Uint32 *meta_end,
                                char *errbuf, size_t errlen)
{
    /* (0002,0000) UL, length 4 */
    const unsigned char group_length[8] = { 0x02, 0x00, 0x00, 0x00, 'U', 'L', 0x04, 0x00 };
    unsigned char head[STOWRS_PREFIX_LEN + 12];
    std::FILE *fp = std::fopen(path, "rb");
    if (fp == NULL) {
        /* our own temp file: not the client's fault */
        set_err(errbuf, errlen, "cannot open file");
        return STOWRS_DICOM_INTERNAL;
    }
    const char *bad = NULL;
    size_t got = std::fread(head, 1, sizeof(head), fp);
    if (got < STOWRS_PREFIX_LEN || std::memcmp(head + 128, "DICM", 4) != 0) {
        bad = "no 128-byte preamble and DICM prefix";
    }
    else if (got < STOWRS_PREFIX_LEN + 2 || head[132] != 0x02 || head[133] != 0x00) {
        bad = "no File Meta Information after DICM prefix";
    }
    else if (got < sizeof(head)
             || std::memcmp(head + 132, group_length, sizeof(group_length)) != 0) {
        bad = "File Meta Information Group Length (0002,0000) missing or malformed";
    }
    else {
        const Uint32 glen = le32(head + 140);
        if (glen > STOWRS_MAX_META_LENGTH) {
            bad = "File Meta Information Group Length (0002,0000) too large";
        }
        else {
            std::vector<unsigned char> meta(glen + 2);
            got = std::fread(meta.data(), 1, meta.size(), fp);
            if (got < glen) {
                bad = "File Meta Information truncated";
            }
            else {
                Uint32 pos = 0;
                while (pos < glen && bad == NULL) {
                    const unsigned char *e = meta.data() + pos;
                    if (glen - pos < 8 || e[0] != 0x02 || e[1] != 0x00
                        || e[4] < 'A' || e[4] > 'Z' || e[5] < 'A' || e[5] > 'Z') {
                        bad = "File Meta Information malformed";
                    }
                    else if (!is_long_vr(e + 4)) {
                        pos += 8 + (OFstatic_cast(Uint32, e[6]) | OFstatic_cast(Uint32, e[7]) << 8);
                    }
                    else if (glen - pos < 12 || le32(e + 8) > glen - pos - 12) {
                        bad = "File Meta Information Group Length (0002,0000) does not "
                              "match its elements";
                    }
                    else {
                        pos += 12 + le32(e + 8);
                    }
                }
                if (bad == NULL && pos != glen) {
                    bad = "File Meta Information Group Length (0002,0000) does not "
                          "match its elements";
                }
                if (bad == NULL && got == glen + 2 && meta[glen] == 0x02 && meta[glen + 1] == 0x00) {
                    bad = "File Meta Information Group Length (0002,0000) too small";
                }
                *meta_end = OFstatic_cast(Uint32, STOWRS_PREFIX_LEN + 12) + glen;
            }
        }
    }
    std::fclose(fp);
    if (bad != NULL) {
        set_err(errbuf, errlen, bad);
        return STOWRS_DICOM_NOT_PART10;
    }
    return STOWRS_DICOM_OK;
}

/**
 * A deflated dataset: dcmtk cannot skip its values, so parsing stops at Pixel
 * Data, and a stream cut short inside Pixel Data would go unnoticed. Inflate
 * it to the end (through dcmtk's own filter, nothing kept) and require the
 * end of the zlib stream.
 */
OFCondition check_deflated_complete(const char *path, Uint32 meta_end, bool *complete)
{
    *complete = false;
    DcmInputFileStream fs(path, meta_end);
    OFCondition cond = fs.status();
    if (cond.bad()) {
        return cond;
    }
    cond = fs.installCompressionFilter(ESC_zlib);
    if (cond.bad()) {
        return cond;
    }
    int idle = 0;
    while (fs.good() && !fs.eos() && idle < 4) {
        idle = fs.skip(1024 * 1024) > 0 ? 0 : idle + 1;
    }
    cond = fs.status();
    if (cond.bad()) {
        return cond;
    }
    *complete = fs.eos() ? true : false;
    return EC_Normal;
}

/**
 * Re-creates a deflated dataset's stream positioned at one value: opens the
 * file where the zlib stream starts, installs the filter and inflates up to
 * the value (skipping, nothing kept).
 */
class inflating_factory_t : public DcmInputStreamFactory {
public:
    inflating_factory_t(const OFFilename &file, offile_off_t zstart, offile_off_t inflated)
        : file_(file), zstart_(zstart), inflated_(inflated)
    {
    }

    DcmInputStream *create() const
    {
        DcmInputFileStream *s = new DcmInputFileStream(file_, zstart_);
        if (s->status().good() && s->installCompressionFilter(ESC_zlib).good()) {
            offile_off_t left = inflated_;
            while (left > 0 && s->good()) {
                const offile_off_t n = s->skip(left);
                if (n <= 0) {
                    break;
                }
                left -= n;
            }
        }
        return s;
    }

    DcmInputStreamFactory *clone() const
    {
        return new inflating_factory_t(*this);
    }

    DcmInputStreamFactoryType ident() const
    {
        return DFT_DcmInputFileStreamFactory;
    }

private:
    OFFilename file_;
    offile_off_t zstart_;
    offile_off_t inflated_;
};

/**
 * dcmtk's file stream, except that a value longer than maxReadLength in a
 * deflated dataset is skipped like any other. dcmtk's own stream has no
 * factory once the zlib filter is installed, and DcmElement::read then
 * loads the value whole, allocating what its length field says (up to
 * 4 GiB from a few bytes of zlib, or a real gigabyte from a megabyte of
 * zeros). Found by fuzz/fuzz_dicom_inspect.
 */
class inspect_stream_t : public DcmInputFileStream {
public:
    explicit inspect_stream_t(const char *path)
        : DcmInputFileStream(path), file_(path), zstart_(-1)
    {
    }

    OFCondition installCompressionFilter(E_StreamCompression filterType)
    {
        zstart_ = tell();
        return DcmInputFileStream::installCompressionFilter(filterType);
    }

    DcmInputStreamFactory *newFactory() const
    {
        if (zstart_ < 0) {
            return DcmInputFileStream::newFactory();
        }
        return new inflating_factory_t(file_, zstart_, tell() - zstart_);
    }

private:
    OFFilename file_;
    offile_off_t zstart_;
};

/** DcmFileFormat::loadFileUntilTag(ERM_fileOnly) through inspect_stream_t. */
OFCondition load_file_until_tag(DcmFileFormat *ff, const char *path, const DcmTagKey &stop)
{
    inspect_stream_t fs(path);
    OFCondition cond = fs.status();
    if (cond.good()) {
        cond = ff->clear();
    }
    if (cond.good()) {
        const E_FileReadMode old_mode = ff->getReadMode();
        ff->setReadMode(ERM_fileOnly);
        ff->transferInit();
        cond = ff->readUntilTag(fs, EXS_Unknown, EGL_noChange, STOWRS_MAX_READ_LENGTH, stop);
        ff->transferEnd();
        ff->setReadMode(old_mode);
    }
    return cond;
}

bool is_nomem(const OFCondition &cond)
{
    return cond == EC_MemoryExhausted;
}

/**
 * Transfer syntaxes in the default accepted lists (DESIGN.md §3.3) that
 * dcmtk 3.6.7 (Debian 12) does not know: DcmXfer(uid).getXfer() gives
 * EXS_Unknown, so dcmtk refuses to read the dataset. Each is Explicit VR
 * Little Endian with encapsulated Pixel Data (PS3.5 §A.4), byte for byte like
 * the encapsulated syntaxes dcmtk does know; only the codec inside the
 * fragments differs, and inspection never decodes pixels. Consulted only for
 * a syntax dcmtk does not know, so a newer dcmtk that knows them reads them
 * the ordinary way.
 */
bool encapsulated_unknown_to_dcmtk(const char *uid)
{
    const char *const uids[] = {
        "1.2.840.10008.1.2.4.100.1",    /* MPEG2 MP@ML, fragmentable */
        "1.2.840.10008.1.2.4.101.1",    /* MPEG2 MP@HL, fragmentable */
        "1.2.840.10008.1.2.4.102.1",    /* MPEG-4 AVC/H.264 HP@L4.1, fragmentable */
        "1.2.840.10008.1.2.4.103.1",    /* ... BD-compatible HP@L4.1, fragmentable */
        "1.2.840.10008.1.2.4.104.1",    /* ... HP@L4.2 for 2D video, fragmentable */
        "1.2.840.10008.1.2.4.105.1",    /* ... HP@L4.2 for 3D video, fragmentable */
        "1.2.840.10008.1.2.4.106.1",    /* ... Stereo HP@L4.2, fragmentable */
        "1.2.840.10008.1.2.4.201",      /* HTJ2K Lossless */
        "1.2.840.10008.1.2.4.202",      /* HTJ2K Lossless RPCL */
        "1.2.840.10008.1.2.4.203"       /* HTJ2K */
    };
    for (size_t i = 0; i < sizeof(uids) / sizeof(uids[0]); i++) {
        if (std::strcmp(uid, uids[i]) == 0) {
            return true;
        }
    }
    return false;
}

/**
 * Step 3 for a syntax of encapsulated_unknown_to_dcmtk(): read the dataset
 * alone, from the first byte after the meta header, as if its transfer
 * syntax were @p as -- the same parse, strictness and maxReadLength as for a
 * known syntax.
 */
OFCondition read_dataset_as(const char *path, Uint32 meta_end, E_TransferSyntax as,
                            DcmDataset *ds)
{
    /* Opened at 0 and skipped forward, not opened at meta_end: a value
     * longer than maxReadLength stays in the file, and dcmtk finds it again
     * (getPartialValue) by reopening the file at the stream's tell(), which
     * counts from where the stream was opened. */
    DcmInputFileStream fs(path);
    OFCondition cond = fs.status();
    if (cond.bad()) {
        return cond;
    }
    if (fs.skip(meta_end) != OFstatic_cast(offile_off_t, meta_end)) {
        return EC_InvalidStream;          /* shorter than check_framing() saw */
    }
    ds->transferInit();
    cond = ds->readUntilTag(fs, as, EGL_noChange, STOWRS_MAX_READ_LENGTH,
                            DCM_UndefinedTagKey);
    ds->transferEnd();
    return cond;
}

/* Sequences and items open at once, beyond which an instance is refused:
 * dcmtk reads nested sequences recursively and overflows a worker's stack
 * somewhere past 6000 levels; real instances stay far below 256. */
const int STOWRS_MAX_NESTING = 512;

/* Read @c n bytes at the current position; false at end of file. */
bool read_exact(std::FILE *fp, unsigned char *buf, size_t n)
{
    return std::fread(buf, 1, n, fp) == n;
}

Uint32 get16(const unsigned char *b, bool big)
{
    return big ? (Uint32(b[0]) << 8 | b[1]) : (Uint32(b[1]) << 8 | b[0]);
}

Uint32 get32(const unsigned char *b, bool big)
{
    return big ? (Uint32(b[0]) << 24 | Uint32(b[1]) << 16 | Uint32(b[2]) << 8 | b[3])
               : (Uint32(b[3]) << 24 | Uint32(b[2]) << 16 | Uint32(b[1]) << 8 | b[0]);
}

/*
 * Walk the dataset's element headers without recursion and count the
 * sequences and items open at once. Only the structure is looked at, and
 * nothing is judged but the depth: a truncated or odd file is left to
 * dcmtk, which reads it next and reports it properly.
 * @return true if the nesting stays within STOWRS_MAX_NESTING
 */
bool nesting_within_limit(const char *path, Uint32 meta_end, bool explicit_vr, bool big)
{
    const Uint32 undefined = 0xFFFFFFFFu;
    struct open_t {
        unsigned long long end;     /* ULLONG_MAX: undefined length */
        bool fragments;             /* encapsulated data: items are values */
    };
    std::vector<open_t> open;
    std::FILE *fp = std::fopen(path, "rb");
    unsigned long long pos = meta_end;
    bool within = true;

    if (fp == NULL) {
        return true;
    }
    if (fseeko(fp, OFstatic_cast(off_t, pos), SEEK_SET) != 0) {
        std::fclose(fp);
        return true;
    }
    for (;;) {
        unsigned char h[8];
        Uint32 group, elem, len;
        bool sq = false;

        while (!open.empty() && open.back().end != ~0ULL && pos >= open.back().end) {
            open.pop_back();
        }
        if (!read_exact(fp, h, 4)) {
            break;
        }
        group = get16(h, big);
        elem = get16(h + 2, big);
        pos += 4;
        if (group == 0xFFFE) {
            if (!read_exact(fp, h, 4)) {
                break;
            }
            len = get32(h, big);
            pos += 4;
            if (elem == 0xE000 && !(open.empty() || open.back().fragments)) {
                open_t item = { len == undefined ? ~0ULL : pos + len, false };
                open.push_back(item);
            }
            else if (elem == 0xE000) {
                if (len == undefined) {
                    break;          /* not ours to judge */
                }
                pos += len;
                if (fseeko(fp, OFstatic_cast(off_t, pos), SEEK_SET) != 0) {
                    break;
                }
            }
            else if (!open.empty()) {   /* item or sequence delimiter */
                open.pop_back();
            }
        }
        else {
            if (explicit_vr) {
                if (!read_exact(fp, h, 4)) {
                    break;
                }
                pos += 4;
                const char vr[3] = { char(h[0]), char(h[1]), 0 };
                static const char *const long_vrs[] = {
                    "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT",
                    "SV", "UV"
                };
                bool long_form = false;
                for (size_t i = 0; i < sizeof(long_vrs) / sizeof(long_vrs[0]); i++) {
                    long_form = long_form || std::strcmp(vr, long_vrs[i]) == 0;
                }
                if (long_form) {
                    if (!read_exact(fp, h + 4, 4)) {
                        break;
                    }
                    pos += 4;
                    len = get32(h + 4, big);
                }
                else {
                    len = get16(h + 2, big);
                }
                sq = std::strcmp(vr, "SQ") == 0
                     || (len == undefined && std::strcmp(vr, "UN") == 0);
            }
            else {
                if (!read_exact(fp, h, 4)) {
                    break;
                }
                pos += 4;
                len = get32(h, big);
                /* implicit VR: the dictionary says SQ, or undefined length
                 * on anything but Pixel Data is read as a sequence */
                sq = DcmTag(DcmTagKey(OFstatic_cast(Uint16, group),
                                      OFstatic_cast(Uint16, elem))).getEVR() == EVR_SQ
                     || (len == undefined && !(group == 0x7FE0 && elem == 0x0010));
            }
            if (sq || len == undefined) {
                open_t c = { len == undefined ? ~0ULL : pos + len, !sq };
                open.push_back(c);
            }
            else {
                pos += len;
                if (fseeko(fp, OFstatic_cast(off_t, pos), SEEK_SET) != 0) {
                    break;
                }
            }
        }
        if (open.size() > OFstatic_cast(size_t, STOWRS_MAX_NESTING)) {
            within = false;
            break;
        }
    }
    std::fclose(fp);
    return within;
}

stowrs_dicom_rc_e inspect(const char *path, stowrs_dicom_info_t *info,
                          char *errbuf, size_t errlen)
{
    Uint32 meta_end = 0;
    const stowrs_dicom_rc_e prc = check_framing(path, &meta_end, errbuf, errlen);
    if (prc != STOWRS_DICOM_OK) {
        return prc;
    }

    /* pass 1: the meta header alone */
    DcmFileFormat ff;
    OFCondition cond = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange,
                                           STOWRS_MAX_READ_LENGTH, ERM_metaOnly,
                                           DCM_UndefinedTagKey);
    /* EC_FileMetaInfoHeaderMissing comes after a complete meta header without
     * a transfer syntax that dcmtk knows: the header itself was readable */
    if (cond.bad() && cond != EC_FileMetaInfoHeaderMissing) {
        set_cond(errbuf, errlen, "cannot read File Meta Information", cond);
        return is_nomem(cond) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
    }
    DcmMetaInfo *meta = ff.getMetaInfo();
    if (meta == NULL || meta->card() == 0) {
        set_err(errbuf, errlen, "no File Meta Information");
        return STOWRS_DICOM_NOT_PART10;
    }
    OFCondition uc = get_uid(meta, DCM_MediaStorageSOPClassUID,
                             info->meta_sop_class_uid, &info->overlong);
    if (uc.good()) {
        uc = get_uid(meta, DCM_MediaStorageSOPInstanceUID,
                     info->meta_sop_instance_uid, &info->overlong);
    }
    if (uc.good()) {
        uc = get_uid(meta, DCM_TransferSyntaxUID, info->transfer_syntax_uid, &info->overlong);
    }
    if (uc.bad()) {
        set_cond(errbuf, errlen, "cannot read File Meta Information", uc);
        return is_nomem(uc) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
    }
    info->meta_readable = 1;

    if (info->transfer_syntax_uid[0] == '\0') {
        set_err(errbuf, errlen, "File Meta Information has no Transfer Syntax UID (0002,0010)");
        return STOWRS_DICOM_NOT_PART10;
    }
    const DcmXfer xfer(info->transfer_syntax_uid);
    /* Deflated datasets cannot be walked without inflating; the others are
     * checked for absurd nesting before dcmtk's recursive reader sees them. */
    const bool known = xfer.getXfer() != EXS_Unknown;
    if ((known ? xfer.getStreamCompression() == ESC_none
               : encapsulated_unknown_to_dcmtk(info->transfer_syntax_uid))
        && !nesting_within_limit(path, meta_end, !known || !xfer.isImplicitVR(),
                                 known && xfer.isBigEndian())) {
        set_err(errbuf, errlen, "sequences nested deeper than the module accepts");
        return STOWRS_DICOM_NOT_PART10;
    }
    /* the dataset, in ff or, for an unknown encapsulated syntax, here */
    DcmDataset unknown_ts_ds;
    DcmDataset *ds = NULL;
    if (xfer.getXfer() == EXS_Unknown) {
        if (!encapsulated_unknown_to_dcmtk(info->transfer_syntax_uid)) {
            set_err(errbuf, errlen, "transfer syntax unknown to dcmtk");
            return STOWRS_DICOM_UNKNOWN_TS;
        }
        /* pass 2: any encapsulated Explicit VR Little Endian syntax that
         * dcmtk knows reads it the same; the reported UID stays the file's */
        cond = read_dataset_as(path, meta_end, EXS_JPEGProcess14SV1, &unknown_ts_ds);
        if (cond.bad()) {
            set_cond(errbuf, errlen, "cannot read dataset", cond);
            return is_nomem(cond) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
        }
        ds = &unknown_ts_ds;
    }
    else {
        if (cond.bad()) {                 /* cannot happen: dcmtk knows the xfer */
            set_cond(errbuf, errlen, "cannot read File Meta Information", cond);
            return STOWRS_DICOM_NOT_PART10;
        }

        /* pass 2: meta header and dataset; values are skipped, not loaded */
        const DcmTagKey stop = xfer.getStreamCompression() == ESC_none
            ? DCM_UndefinedTagKey : DCM_PixelData;
        cond = load_file_until_tag(&ff, path, stop);
        if (cond.bad()) {
            set_cond(errbuf, errlen, "cannot read dataset", cond);
            return is_nomem(cond) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
        }
        if (stop != DCM_UndefinedTagKey) {
            bool complete = false;
            cond = check_deflated_complete(path, meta_end, &complete);
            if (cond.bad()) {
                set_cond(errbuf, errlen, "cannot read deflated dataset", cond);
                return is_nomem(cond) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
            }
            if (!complete) {
                set_err(errbuf, errlen, "cannot read dataset: deflated stream truncated");
                return STOWRS_DICOM_NOT_PART10;
            }
        }
        ds = ff.getDataset();
    }
    if (ds == NULL) {
        set_err(errbuf, errlen, "no dataset");
        return STOWRS_DICOM_NOT_PART10;
    }
    uc = get_uid(ds, DCM_SOPClassUID, info->sop_class_uid, &info->overlong);
    if (uc.good()) {
        uc = get_uid(ds, DCM_SOPInstanceUID, info->sop_instance_uid, &info->overlong);
    }
    if (uc.good()) {
        uc = get_uid(ds, DCM_StudyInstanceUID, info->study_instance_uid, &info->overlong);
    }
    if (uc.good()) {
        uc = get_uid(ds, DCM_SeriesInstanceUID, info->series_instance_uid, &info->overlong);
    }
    if (uc.bad()) {
        set_cond(errbuf, errlen, "cannot read dataset", uc);
        return is_nomem(uc) ? STOWRS_DICOM_NOMEM : STOWRS_DICOM_NOT_PART10;
    }
    return STOWRS_DICOM_OK;
}

bool uid_in(const char *uid, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (std::strcmp(uid, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

} /* namespace */

extern "C" int stowrs_dicom_global_init(char *errbuf, size_t errlen)
{
    try {
        /* dcmtk never writes to stderr (httpd's error log): no log output,
         * and log4cplus' own diagnostics quiet */
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
        dcmtk::log4cplus::helpers::getLogLog().setQuietMode(true);

        /* strict parsing: a parse error is an error, parse every element */
        dcmIgnoreParsingErrors.set(OFFalse);
        dcmStopParsingAfterElement.set(DCM_UndefinedTagKey);
        dcmIgnoreFileMetaInformationGroupLength.set(OFFalse);
        dcmAutoDetectDatasetXfer.set(OFFalse);
        dcmReplaceWrongDelimitationItem.set(OFFalse);

        if (!dcmDataDict.isDictionaryLoaded()) {
            set_err(errbuf, errlen,
                    "dcmtk data dictionary not loaded (check DCMDICTPATH and the "
                    "dcmtk data package)");
            return -1;
        }
        return 0;
    }
    catch (const std::bad_alloc &) {
        set_err(errbuf, errlen, "out of memory initialising dcmtk");
        return -1;
    }
    catch (...) {
        set_err(errbuf, errlen, "unexpected exception initialising dcmtk");
        return -1;
    }
}

extern "C" stowrs_dicom_rc_e stowrs_dicom_inspect(const char *path, stowrs_dicom_info_t *info,
                                                  char *errbuf, size_t errlen)
{
    if (info == NULL) {
        set_err(errbuf, errlen, "no info structure");
        return STOWRS_DICOM_INTERNAL;
    }
    std::memset(info, 0, sizeof(*info));
    set_err(errbuf, errlen, "");
    if (path == NULL || path[0] == '\0') {
        set_err(errbuf, errlen, "no file name");
        return STOWRS_DICOM_INTERNAL;
    }
    try {
        return inspect(path, info, errbuf, errlen);
    }
    catch (const std::bad_alloc &) {
        set_err(errbuf, errlen, "out of memory");
        return STOWRS_DICOM_NOMEM;
    }
    catch (...) {
        set_err(errbuf, errlen, "unexpected exception from dcmtk");
        return STOWRS_DICOM_INTERNAL;
    }
}

extern "C" stowrs_sop_category_e stowrs_dicom_sop_category(const char *uid)
{
    const char *const video[] = {
        UID_VideoEndoscopicImageStorage,
        UID_VideoMicroscopicImageStorage,
        UID_VideoPhotographicImageStorage
    };
    /* PS3.3 A.35: the Structured Report IODs, plus the draft SR classes */
    const char *const sr[] = {
        UID_BasicTextSRStorage,
        UID_EnhancedSRStorage,
        UID_ComprehensiveSRStorage,
        UID_Comprehensive3DSRStorage,
        UID_ExtensibleSRStorage,
        UID_ProcedureLogStorage,
        UID_MammographyCADSRStorage,
        UID_KeyObjectSelectionDocumentStorage,
        UID_ChestCADSRStorage,
        UID_XRayRadiationDoseSRStorage,
        UID_RadiopharmaceuticalRadiationDoseSRStorage,
        UID_ColonCADSRStorage,
        UID_ImplantationPlanSRDocumentStorage,
        UID_AcquisitionContextSRStorage,
        UID_SimplifiedAdultEchoSRStorage,
        UID_PatientRadiationDoseSRStorage,
        UID_PlannedImagingAgentAdministrationSRStorage,
        UID_PerformedImagingAgentAdministrationSRStorage,
        UID_EnhancedXRayRadiationDoseSRStorage,
        UID_SpectaclePrescriptionReportStorage,
        UID_MacularGridThicknessAndVolumeReportStorage,
        UID_DRAFT_SRTextStorage,
        UID_DRAFT_SRAudioStorage,
        UID_DRAFT_SRDetailStorage,
        UID_DRAFT_SRComprehensiveStorage
    };
    try {
        if (uid == NULL || uid[0] == '\0' || !dcmIsaStorageSOPClassUID(uid, ESSC_All)) {
            return STOWRS_SOP_UNKNOWN;
        }
        if (uid_in(uid, video, sizeof(video) / sizeof(video[0]))) {
            return STOWRS_SOP_VIDEO;
        }
        if (uid_in(uid, sr, sizeof(sr) / sizeof(sr[0]))) {
            return STOWRS_SOP_SR;
        }
        if (dcmIsImageStorageSOPClassUID(uid)) {
            return STOWRS_SOP_IMAGE;
        }
        return STOWRS_SOP_OTHER;
    }
    catch (...) {
        return STOWRS_SOP_UNKNOWN;
    }
}

extern "C" const char *stowrs_dicom_uid_by_name(const char *name)
{
    try {
        if (name == NULL || name[0] == '\0') {
            return NULL;
        }
        return dcmFindUIDFromName(name);
    }
    catch (...) {
        return NULL;
    }
}

/* --- building a PS3.10 file from metadata and bulk data (DESIGN.md §3.4) --- */

namespace {

enum {
    /** dcmtk serialises the dataset into a buffer of this size, then we write it */
    STOWRS_BUILD_OUT_BUF = 64 * 1024,
    /** bulk data parts are copied into the output in chunks of this size */
    STOWRS_BUILD_COPY_BUF = 1024 * 1024,
    /** guard against runaway recursion; the readers stop at STOWRS_META_MAX_DEPTH */
    STOWRS_BUILD_MAX_DEPTH = 64
};

const Uint32 TAG_PIXEL_DATA = 0x7FE00010u;
const Uint32 TAG_ENCAPSULATED_DOCUMENT = 0x00420011u;
/** the largest even 32-bit value length; 0xFFFFFFFF means undefined */
const unsigned long long MAX_VALUE_LEN = 0xFFFFFFFEull;

const char *const TS_EXPLICIT_LE = "1.2.840.10008.1.2.1";

/**
 * What a compressed pixel data media type may carry (PS3.18 §8.7.3.5,
 * Tables 8.7.3-2 to -4): the transfer syntax used when the part has no
 * transfer-syntax parameter first, then the others it allows. Video types
 * hold one stream, split into fragments at will (PS3.5 §A.4); image types
 * hold one frame per part, one fragment per frame.
 */
struct media_type_t {
    const char *media_type;
    bool video;
    const char *ts[13];
};

const media_type_t MEDIA_TYPES[] = {
    { "image/jpeg", false, { "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                             "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", NULL } },
    { "image/jls", false, { "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", NULL } },
    { "image/jp2", false, { "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", NULL } },
    { "image/jphc", false, { "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                             "1.2.840.10008.1.2.4.203", NULL } },
    { "image/jpx", false, { "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93", NULL } },
    { "image/dicom-rle", false, { "1.2.840.10008.1.2.5", NULL } },
    { "video/mpeg", true, { "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101",
                            "1.2.840.10008.1.2.4.100.1", "1.2.840.10008.1.2.4.101.1", NULL } },
    { "video/mp4", true, { "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103",
                           "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
                           "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.102.1",
                           "1.2.840.10008.1.2.4.103.1", "1.2.840.10008.1.2.4.104.1",
                           "1.2.840.10008.1.2.4.105.1", "1.2.840.10008.1.2.4.106.1", NULL } },
    { "video/h265", true, { "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108", NULL } }
};

/** Media types an Encapsulated Document (0042,0011) may come in (PS3.18 §8.7.3.5). */
const char *const DOCUMENT_TYPES[] = {
    "application/pdf", "text/xml", "application/xml", "model/stl", "model/x.stl-binary",
    "model/obj", "model/mtl", "application/octet-stream"
};

/** The 34 VRs of PS3.5 Table 6.2-1; anything else is refused. */
const char *const VALID_VRS[] = {
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
    "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
    "UL", "UN", "UR", "US", "UT", "UV"
};

bool ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        const char ca = (*a >= 'A' && *a <= 'Z') ? OFstatic_cast(char, *a - 'A' + 'a') : *a;
        const char cb = (*b >= 'A' && *b <= 'Z') ? OFstatic_cast(char, *b - 'A' + 'a') : *b;
        if (ca != cb) {
            return false;
        }
    }
    return *a == *b;
}

bool vr_is(const char *vr, const char *name)
{
    return vr[0] == name[0] && vr[1] == name[1];
}

bool valid_vr(const char *vr)
{
    for (size_t i = 0; i < sizeof(VALID_VRS) / sizeof(VALID_VRS[0]); i++) {
        if (vr_is(vr, VALID_VRS[i]) && vr[2] == '\0') {
            return true;
        }
    }
    return false;
}

/** String VRs: the value is text, several values joined by a backslash. */
bool is_string_vr(const char *vr)
{
    const char *const s[] = {
        "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
        "UC", "UI", "UR", "UT"
    };
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        if (vr_is(vr, s[i])) {
            return true;
        }
    }
    return false;
}

/** Text VRs with a single value that may itself contain a backslash. */
bool is_text_vr(const char *vr)
{
    return vr_is(vr, "LT") || vr_is(vr, "ST") || vr_is(vr, "UT") || vr_is(vr, "UR");
}

/** An error the builder gives up with: code, a message without values, errno. */
struct build_error {
    stowrs_build_rc_e rc;
    const char *what;
    int os_error;
};

void fail(stowrs_build_rc_e rc, const char *what, int os_error = 0)
{
    build_error e;
    e.rc = rc;
    e.what = what;
    e.os_error = os_error;
    throw e;
}

void check_cond(const OFCondition &cond, const char *what)
{
    if (cond.bad()) {
        fail(cond == EC_MemoryExhausted ? STOWRS_BUILD_NOMEM : STOWRS_BUILD_BAD_METADATA, what);
    }
}

/** trim blanks that XML text may carry around numbers */
std::string trimmed(const char *s)
{
    std::string v(s ? s : "");
    const size_t b = v.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) {
        return std::string();
    }
    const size_t e = v.find_last_not_of(" \t\r\n");
    return v.substr(b, e - b + 1);
}

/**
 * A decimal integer within [lo, hi]. JSON writers sometimes give integers
 * as reals ("512.0", "1e3"): accepted when the value is integral.
 */
bool parse_int(const char *text, long long lo, unsigned long long hi, long long *sval,
               unsigned long long *uval)
{
    const std::string v = trimmed(text);
    if (v.empty()) {
        return false;
    }
    const char *s = v.c_str();
    char *end = NULL;
    errno = 0;
    if (s[0] == '-') {
        const long long x = std::strtoll(s, &end, 10);
        if (errno == 0 && *end == '\0') {
            if (x < lo) {
                return false;
            }
            *sval = x;
            *uval = OFstatic_cast(unsigned long long, x);
            return true;
        }
    }
    else {
        const unsigned long long x = std::strtoull(s, &end, 10);
        if (errno == 0 && *end == '\0') {
            if (x > hi) {
                return false;
            }
            *sval = OFstatic_cast(long long, x);
            *uval = x;
            return true;
        }
    }
    errno = 0;
    const double d = std::strtod(s, &end);
    if (errno != 0 || *end != '\0' || !std::isfinite(d) || d != std::floor(d)
        || d < OFstatic_cast(double, lo) || d > OFstatic_cast(double, hi)
        || std::fabs(d) > 9007199254740992.0) {
        return false;
    }
    *sval = OFstatic_cast(long long, d);
    *uval = d < 0 ? OFstatic_cast(unsigned long long, *sval) : OFstatic_cast(unsigned long long, d);
    return true;
}

bool parse_real(const char *text, double *out)
{
    const std::string v = trimmed(text);
    if (v.empty()) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    *out = std::strtod(v.c_str(), &end);
    return *end == '\0' && (errno == 0 || errno == ERANGE);
}

/**
 * A DS value is at most 16 characters. JSON numbers come in the shortest
 * form that round-trips a double, which can be longer: shorten those to the
 * closest decimal that fits.
 */
std::string ds_value(const char *text)
{
    std::string v = trimmed(text);
    double d = 0;
    if (v.size() <= 16 || !parse_real(v.c_str(), &d) || !std::isfinite(d)) {
        return v;
    }
    for (int prec = 16; prec > 0; prec--) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (std::strlen(buf) <= 16) {
            return std::string(buf);
        }
    }
    return v;
}

/** "GGGGEEEE" */
bool parse_at(const char *text, Uint16 *g, Uint16 *e)
{
    const std::string v = trimmed(text);
    if (v.size() != 8) {
        return false;
    }
    unsigned long x = 0;
    for (size_t i = 0; i < 8; i++) {
        const char c = v[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        }
        else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        }
        else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        }
        else {
            return false;
        }
        x = (x << 4) | OFstatic_cast(unsigned long, d);
    }
    *g = OFstatic_cast(Uint16, x >> 16);
    *e = OFstatic_cast(Uint16, x & 0xFFFF);
    return true;
}

Uint16 rd16(const unsigned char *p)
{
    return OFstatic_cast(Uint16, p[0] | p[1] << 8);
}

Uint64 rd64(const unsigned char *p)
{
    return OFstatic_cast(Uint64, le32(p)) | OFstatic_cast(Uint64, le32(p + 4)) << 32;
}

void put_le32(unsigned char *p, Uint32 v)
{
    p[0] = OFstatic_cast(unsigned char, v);
    p[1] = OFstatic_cast(unsigned char, v >> 8);
    p[2] = OFstatic_cast(unsigned char, v >> 16);
    p[3] = OFstatic_cast(unsigned char, v >> 24);
}

/** Read a whole (small) bulk data file; for values other than Pixel Data. */
void read_file(const char *path, std::vector<unsigned char> *out)
{
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(STOWRS_BUILD_IO, "cannot open bulk data part", errno);
    }
    unsigned char buf[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            fail(STOWRS_BUILD_IO, "cannot read bulk data part", err);
        }
        if (n == 0) {
            break;
        }
        out->insert(out->end(), buf, buf + n);
    }
    ::close(fd);
}

/** The output file, written with plain POSIX so that errno (ENOSPC) reaches the caller. */
class out_file_t {
public:
    explicit out_file_t(const char *path) : fd_(-1), path_(path) {}
    ~out_file_t()
    {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    void open()
    {
        fd_ = ::open(path_, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd_ < 0) {
            fail(STOWRS_BUILD_IO, "cannot create output file", errno);
        }
    }
    void write(const void *data, size_t len)
    {
        const char *p = OFstatic_cast(const char *, data);
        while (len > 0) {
            const ssize_t n = ::write(fd_, p, len);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                fail(STOWRS_BUILD_IO, "cannot write output file", n < 0 ? errno : EIO);
            }
            p += n;
            len -= OFstatic_cast(size_t, n);
        }
    }
    void close()
    {
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) {
            fail(STOWRS_BUILD_IO, "cannot close output file", errno);
        }
    }
    /**
     * Append @p len bytes of a part, from @p offset on, through @p buf.
     */
    void copy_from(const char *path, unsigned long long offset, unsigned long long len,
                   std::vector<char> *buf)
    {
        const int in = ::open(path, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            fail(STOWRS_BUILD_IO, "cannot open bulk data part", errno);
        }
        if (offset > 0 && ::lseek(in, OFstatic_cast(off_t, offset), SEEK_SET) < 0) {
            const int err = errno;
            ::close(in);
            fail(STOWRS_BUILD_IO, "cannot read bulk data part", err);
        }
        unsigned long long left = len;
        while (left > 0) {
            const size_t want = left < buf->size() ? OFstatic_cast(size_t, left) : buf->size();
            const ssize_t n = ::read(in, buf->data(), want);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                const int err = n < 0 ? errno : EIO;  /* 0: the part shrank */
                ::close(in);
                fail(STOWRS_BUILD_IO, "cannot read bulk data part", err);
            }
            try {
                write(buf->data(), OFstatic_cast(size_t, n));
            }
            catch (...) {
                ::close(in);
                throw;
            }
            left -= OFstatic_cast(unsigned long long, n);
        }
        ::close(in);
    }
    /**
     * Serialise a meta header or dataset with dcmtk into a bounded buffer
     * and write it out, as dcmnet's DIMSE sender does (sendDcmDataset).
     */
    void write_object(DcmObject *obj, bool meta)
    {
        std::vector<char> buf(STOWRS_BUILD_OUT_BUF);
        DcmOutputBufferStream out(buf.data(), OFstatic_cast(offile_off_t, buf.size()));
        DcmWriteCache wcache;
        bool written = false;
        bool last = false;
        int idle = 0;
        obj->transferInit();
        while (!last) {
            if (!written) {
                OFCondition cond;
                if (meta) {
                    cond = obj->write(out, EXS_LittleEndianExplicit, EET_ExplicitLength, &wcache);
                }
                else {
                    cond = OFstatic_cast(DcmDataset *, obj)->write(
                        out, EXS_LittleEndianExplicit, EET_ExplicitLength, &wcache,
                        EGL_withoutGL, EPD_noChange);
                }
                if (cond.good()) {
                    written = true;
                }
                else if (cond != EC_StreamNotifyClient) {
                    obj->transferEnd();
                    fail(cond == EC_MemoryExhausted ? STOWRS_BUILD_NOMEM : STOWRS_BUILD_BAD_METADATA,
                         "dcmtk cannot encode the dataset");
                }
            }
            if (written) {
                out.flush();
            }
            void *data = NULL;
            offile_off_t len = 0;
            out.flushBuffer(data, len);
            last = written && out.isFlushed();
            if (len > 0) {
                idle = 0;
                write(data, OFstatic_cast(size_t, len));
            }
            else if (!last && ++idle > 4) {
                obj->transferEnd();
                fail(STOWRS_BUILD_INTERNAL, "dcmtk makes no progress encoding the dataset");
            }
        }
        obj->transferEnd();
    }

private:
    int fd_;
    const char *path_;
    out_file_t(const out_file_t &);
    out_file_t &operator=(const out_file_t &);
};

/**
 * The private blocks of one dataset (PS3.5 §7.8.1): which creator reserves
 * block BB of group gggg through (gggg,00BB), from the dataset's own creator
 * elements and from the blocks the builder reserves for creators named only
 * by a privateCreator attribute.
 */
class private_blocks_t {
public:
    /** (gggg,00BB) is in the metadata with value @p creator */
    void note(Uint16 group, Uint16 block, const std::string &creator)
    {
        blocks_[key(group, block)] = entry_t(creator, false);
        by_creator_.insert(std::make_pair(std::make_pair(group, creator), block));
    }
    bool reserved(Uint16 group, Uint16 block) const
    {
        return blocks_.count(key(group, block)) != 0;
    }
    /** @return whether block @p block of @p group is reserved by @p creator */
    bool reserved_by(Uint16 group, Uint16 block, const std::string &creator) const
    {
        const std::map<Uint32, entry_t>::const_iterator it = blocks_.find(key(group, block));
        return it != blocks_.end() && it->second.first == creator;
    }
    /** @return the (lowest) block @p creator reserves in @p group, or 0 */
    Uint16 find(Uint16 group, const std::string &creator) const
    {
        const std::map<std::pair<Uint16, std::string>, Uint16>::const_iterator it =
            by_creator_.find(std::make_pair(group, creator));
        return it == by_creator_.end() ? 0 : it->second;
    }
    /** Reserve @p block for @p creator; its creator element is still to be inserted. */
    void reserve(Uint16 group, Uint16 block, const std::string &creator)
    {
        blocks_[key(group, block)] = entry_t(creator, true);
        by_creator_.insert(std::make_pair(std::make_pair(group, creator), block));
    }
    /** @return the first free block of @p group reserved for @p creator, or 0 if none is free */
    Uint16 reserve_free(Uint16 group, const std::string &creator)
    {
        for (Uint16 b = 0x10; b <= 0xFF; b++) {
            if (!reserved(group, b)) {
                reserve(group, b, creator);
                return b;
            }
        }
        return 0;
    }
    /** @return whether the creator element of a block reserved here is still to be inserted
     *          (and from now on take it as inserted) */
    bool take_pending(Uint16 group, Uint16 block)
    {
        const std::map<Uint32, entry_t>::iterator it = blocks_.find(key(group, block));
        if (it == blocks_.end() || !it->second.second) {
            return false;
        }
        it->second.second = false;
        return true;
    }

private:
    /** creator, and whether its creator element is still to be inserted */
    typedef std::pair<std::string, bool> entry_t;
    std::map<Uint32, entry_t> blocks_;
    std::map<std::pair<Uint16, std::string>, Uint16> by_creator_;

    static Uint32 key(Uint16 group, Uint16 block)
    {
        return OFstatic_cast(Uint32, group) << 8 | block;
    }
};

/** Private groups are the odd ones (PS3.5 §7.8.1). */
bool is_private_group(Uint16 group)
{
    return (group & 1) != 0;
}

/** A creator's name as compared: LO without leading and trailing spaces (or NULs). */
std::string creator_name(const char *s, size_t len)
{
    size_t b = 0;
    while (b < len && (s[b] == ' ' || s[b] == '\0')) {
        b++;
    }
    while (len > b && (s[len - 1] == ' ' || s[len - 1] == '\0')) {
        len--;
    }
    return std::string(s + b, len - b);
}

/** The privateCreator attribute of @p el as compared, "" if it has none. */
std::string creator_of(const stowrs_meta_elem_t *el)
{
    if (el->private_creator == NULL) {
        return std::string();
    }
    return creator_name(el->private_creator, std::strlen(el->private_creator));
}

/**
 * The private blocks @p ds uses, before any of its attributes is added:
 * first the creator elements (gggg,0010-00FF) it holds; then, for a private
 * attribute given in full form (gggg,BBee) with a privateCreator whose
 * creator has no block yet, the block BB its tag names if that is free --
 * so that such a tag stays as given. A creator still without a block gets
 * the first free one when its first attribute is added (private_key()).
 */
void scan_private_blocks(const stowrs_meta_ds_t *ds, private_blocks_t *blocks)
{
    for (int i = 0; i < ds->nelems; i++) {
        const stowrs_meta_elem_t *el = &ds->elems[i];
        const Uint16 group = OFstatic_cast(Uint16, el->tag >> 16);
        const Uint16 elem = OFstatic_cast(Uint16, el->tag & 0xFFFF);
        if (!is_private_group(group) || elem < 0x0010 || elem > 0x00FF) {
            continue;
        }
        std::string value;
        if (el->nvalues > 0 && el->values[0] != NULL) {
            value = creator_name(el->values[0], std::strlen(el->values[0]));
        }
        else if (el->has_inline && el->inline_data != NULL) {
            value = creator_name(OFreinterpret_cast(const char *, el->inline_data),
                                 el->inline_len);
        }
        blocks->note(group, elem, value);
    }
    for (int i = 0; i < ds->nelems; i++) {
        const stowrs_meta_elem_t *el = &ds->elems[i];
        const Uint16 group = OFstatic_cast(Uint16, el->tag >> 16);
        const Uint16 elem = OFstatic_cast(Uint16, el->tag & 0xFFFF);
        if (!is_private_group(group) || elem < 0x1000) {
            continue;
        }
        const std::string creator = creator_of(el);
        const Uint16 block = OFstatic_cast(Uint16, elem >> 8);
        if (!creator.empty() && !blocks->reserved(group, block)
            && blocks->find(group, creator) == 0) {
            blocks->reserve(group, block, creator);
        }
    }
}

class builder_t {
public:
    builder_t(stowrs_bulk_resolve_fn resolve, void *baton)
        : resolve_(resolve), baton_(baton), pixel_(NULL) {}

    void build(const stowrs_meta_ds_t *ds, const char *out_path);

private:
    stowrs_bulk_resolve_fn resolve_;
    void *baton_;
    const stowrs_meta_elem_t *pixel_;     /* top-level Pixel Data by BulkData URI */
    /** Encapsulated Documents whose dataset may lack a MIME type: set once
     *  the whole dataset is filled ((0042,0012) comes after (0042,0011)) */
    std::vector<std::pair<DcmItem *, std::string> > mime_;
    /** string elements whose value is bytes from BulkData or InlineBinary:
     *  already encoded, not converted by fix_charset() */
    std::set<const DcmObject *> raw_text_;

    /** A character set scope: the dataset or an item with its own (0008,0005). */
    struct charset_scope_t {
        DcmItem *owner;                       /**< where (0008,0005) is (or goes) */
        std::vector<DcmElement *> values;     /**< its non-ASCII UTF-8 values */
    };

    int resolve(const char *uri, const stowrs_bulk_t *const **parts);
    void fill(DcmItem *item, const stowrs_meta_ds_t *ds, int depth, DcmItem *trailer);
    void add(DcmItem *item, const stowrs_meta_elem_t *el, int depth, private_blocks_t *blocks);
    void put_values(DcmElement *elem, const stowrs_meta_elem_t *el);
    void put_binary(DcmElement *elem, const char *vr, const unsigned char *data, size_t len);
    void put_bulk(DcmItem *item, DcmElement *elem, const stowrs_meta_elem_t *el);
    DcmTagKey private_key(DcmItem *item, const stowrs_meta_elem_t *el, const std::string &creator,
                          private_blocks_t *blocks);
    const char *pixel_ts(const stowrs_bulk_t *const *parts, int n, const media_type_t **mt);
    void check_image(DcmDataset *ds);
    void fix_charset(DcmDataset *dataset, DcmItem *trailer);
    void collect_charset(DcmItem *item, size_t scope, std::vector<charset_scope_t> *scopes,
                         int depth);
    bool convert_scope(const charset_scope_t &scope, const std::string &charset,
                       std::vector<OFString> *out);
    void write_pixels(out_file_t *out, DcmDataset *ds, const stowrs_bulk_t *const *parts,
                      int n, const media_type_t *mt);
};

int builder_t::resolve(const char *uri, const stowrs_bulk_t *const **parts)
{
    *parts = NULL;
    const int n = resolve_ ? resolve_(baton_, uri, parts) : 0;
    if (n <= 0 || *parts == NULL) {
        fail(STOWRS_BUILD_BULK_MISSING, "a BulkData URI names no bulk data part");
    }
    for (int i = 0; i < n; i++) {
        if ((*parts)[i] == NULL || (*parts)[i]->path == NULL) {
            fail(STOWRS_BUILD_INTERNAL, "bulk data part without a file");
        }
    }
    return n;
}

/**
 * Fill @p item from @p ds. At the top level (@p trailer not NULL) Pixel Data
 * by BulkData URI is left out (write_pixels() appends it) and the attributes
 * after it go to @p trailer, written after Pixel Data.
 */
void builder_t::fill(DcmItem *item, const stowrs_meta_ds_t *ds, int depth, DcmItem *trailer)
{
    if (depth > STOWRS_BUILD_MAX_DEPTH) {
        fail(STOWRS_BUILD_BAD_METADATA, "sequences nested too deeply");
    }
    if (ds == NULL) {
        return;
    }
    private_blocks_t blocks;
    scan_private_blocks(ds, &blocks);
    for (int i = 0; i < ds->nelems; i++) {
        const stowrs_meta_elem_t *el = &ds->elems[i];
        const Uint16 group = OFstatic_cast(Uint16, el->tag >> 16);
        const Uint16 elem = OFstatic_cast(Uint16, el->tag & 0xFFFF);
        if (group == 0x0002 || elem == 0x0000) {
            /* our own File Meta Information; group lengths are retired
             * (and would be wrong once Pixel Data is appended) */
            continue;
        }
        if (group == 0xFFFE || group == 0x0000) {
            fail(STOWRS_BUILD_BAD_METADATA, "item, delimiter or command tag in the metadata");
        }
        if (trailer != NULL && el->tag == TAG_PIXEL_DATA && el->bulk_uri != NULL) {
            pixel_ = el;
            continue;
        }
        if (trailer != NULL && pixel_ != NULL && el->tag > TAG_PIXEL_DATA) {
            add(trailer, el, depth, &blocks);
        }
        else {
            add(item, el, depth, &blocks);
        }
    }
}

/**
 * The tag a private attribute named with its creator (XML privateCreator)
 * is stored under. The creator is authoritative (PS3.19; dcm4che reads it
 * so too): the attribute belongs to the block its creator reserves,
 * (gggg, BB << 8 | ee), whatever block the tag names -- dcmtk's dcm2xml
 * writes gggg00ee, the block left out. A tag whose block that creator
 * reserves stays as it is; a creator without a block gets one (see
 * scan_private_blocks()), its creator element inserted into @p item.
 */
DcmTagKey builder_t::private_key(DcmItem *item, const stowrs_meta_elem_t *el,
                                 const std::string &creator, private_blocks_t *blocks)
{
    const Uint16 group = OFstatic_cast(Uint16, el->tag >> 16);
    const Uint16 elem = OFstatic_cast(Uint16, el->tag & 0xFFFF);
    Uint16 block = OFstatic_cast(Uint16, elem >> 8);
    if (block == 0 || !blocks->reserved_by(group, block, creator)) {
        block = blocks->find(group, creator);
        if (block == 0) {
            block = blocks->reserve_free(group, creator);
        }
        if (block == 0) {
            fail(STOWRS_BUILD_BAD_METADATA, "no free private block for a private creator");
        }
    }
    if (blocks->take_pending(group, block)) {
        check_cond(item->putAndInsertString(DcmTag(group, block, DcmVR(EVR_LO)), creator.c_str()),
                   "cannot insert private creator");
    }
    return DcmTagKey(group, OFstatic_cast(Uint16, block << 8 | (elem & 0xFF)));
}

/**
 * Add one attribute to @p item. A private attribute with a privateCreator
 * goes to its creator's block (private_key()); elements (gggg,0001-000F)
 * of a private group exist only so named.
 */
void builder_t::add(DcmItem *item, const stowrs_meta_elem_t *el, int depth,
                    private_blocks_t *blocks)
{
    if (!valid_vr(el->vr)) {
        fail(STOWRS_BUILD_BAD_METADATA, "unknown VR");
    }
    const Uint16 group = OFstatic_cast(Uint16, el->tag >> 16);
    const Uint16 elem = OFstatic_cast(Uint16, el->tag & 0xFFFF);
    DcmTagKey key(group, elem);
    std::string creator;
    if (is_private_group(group) && (elem < 0x0010 || elem >= 0x1000)) {
        creator = creator_of(el);
        if (!creator.empty()) {
            key = private_key(item, el, creator, blocks);
        }
        else if (elem < 0x0010) {
            fail(STOWRS_BUILD_BAD_METADATA, "private element number below 0x0010 "
                 "without a private creator");
        }
        if (item->tagExists(key, OFFalse)) {
            fail(STOWRS_BUILD_BAD_METADATA, "two private attributes for one tag");
        }
    }
    DcmTag tag(key, DcmVR(el->vr));
    if (!creator.empty()) {
        tag.setPrivateCreator(creator.c_str());
    }
    if (vr_is(el->vr, "SQ")) {
        if (el->nvalues > 0 || el->bulk_uri != NULL || el->has_inline) {
            fail(STOWRS_BUILD_BAD_METADATA, "sequence with values");
        }
        DcmSequenceOfItems *sq = new DcmSequenceOfItems(tag);
        OFCondition cond = item->insert(sq, OFTrue);
        if (cond.bad()) {
            delete sq;
            check_cond(cond, "cannot insert sequence");
        }
        for (int i = 0; i < el->nitems; i++) {
            DcmItem *it = new DcmItem();
            cond = sq->append(it);
            if (cond.bad()) {
                delete it;
                check_cond(cond, "cannot insert item");
            }
            fill(it, el->items[i], depth + 1, NULL);
        }
        return;
    }
    if (el->nitems > 0) {
        fail(STOWRS_BUILD_BAD_METADATA, "items in an attribute that is no sequence");
    }
    DcmElement *e = NULL;
    check_cond(DcmItem::newDicomElementWithVR(e, tag), "cannot create element");
    if (e == NULL) {
        fail(STOWRS_BUILD_INTERNAL, "cannot create element");
    }
    OFCondition cond = item->insert(e, OFTrue);
    if (cond.bad()) {
        delete e;
        check_cond(cond, "cannot insert element");
    }
    /* from here on item owns e */
    if ((el->bulk_uri != NULL || el->has_inline) && e->isAffectedBySpecificCharacterSet()) {
        raw_text_.insert(e);
    }
    if (el->bulk_uri != NULL) {
        put_bulk(item, e, el);
    }
    else if (el->has_inline) {
        put_binary(e, el->vr, el->inline_data, el->inline_len);
    }
    else {
        put_values(e, el);
    }
}

/** Values given as text (DICOM JSON "Value", XML <Value>/<PersonName>). */
void builder_t::put_values(DcmElement *elem, const stowrs_meta_elem_t *el)
{
    const char *vr = el->vr;
    const int n = el->nvalues;
    if (n <= 0) {
        return;                            /* empty value */
    }
    if (is_string_vr(vr)) {
        std::string joined;
        if (is_text_vr(vr) && n > 1) {
            fail(STOWRS_BUILD_BAD_METADATA, "several values for a single-valued text VR");
        }
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                joined += '\\';
            }
            const char *v = el->values[i];
            if (v == NULL) {
                continue;
            }
            if (vr_is(vr, "DS")) {
                joined += ds_value(v);
            }
            else if (vr_is(vr, "IS")) {
                joined += trimmed(v);
            }
            else {
                joined += v;
            }
        }
        check_cond(elem->putString(joined.c_str(), OFstatic_cast(Uint32, joined.size())),
                   "value refused for its VR");
        return;
    }
    if (vr_is(vr, "AT")) {
        for (int i = 0; i < n; i++) {
            Uint16 g = 0, e = 0;
            if (el->values[i] == NULL || !parse_at(el->values[i], &g, &e)) {
                fail(STOWRS_BUILD_BAD_METADATA, "AT value is not GGGGEEEE");
            }
            check_cond(elem->putTagVal(DcmTagKey(g, e), OFstatic_cast(unsigned long, i)),
                       "value refused for its VR");
        }
        return;
    }
    /* binary numbers: each given as decimal text; encode little endian and
     * let put_binary() hand them to dcmtk like InlineBinary */
    std::vector<unsigned char> bytes;
    for (int i = 0; i < n; i++) {
        const char *v = el->values[i];
        long long s = 0;
        unsigned long long u = 0;
        double d = 0;
        size_t size = 0;
        bool ok = v != NULL;
        if (!ok) {
            /* an empty value among numbers cannot be encoded */
        }
        else if (vr_is(vr, "US")) {
            ok = parse_int(v, 0, 0xFFFFull, &s, &u);
            size = 2;
        }
        else if (vr_is(vr, "SS")) {
            ok = parse_int(v, -32768, 32767, &s, &u);
            size = 2;
        }
        else if (vr_is(vr, "UL")) {
            ok = parse_int(v, 0, 0xFFFFFFFFull, &s, &u);
            size = 4;
        }
        else if (vr_is(vr, "SL")) {
            ok = parse_int(v, -2147483647LL - 1, 2147483647ull, &s, &u);
            size = 4;
        }
        else if (vr_is(vr, "SV")) {
            ok = parse_int(v, -9223372036854775807LL - 1, 9223372036854775807ull, &s, &u);
            size = 8;
        }
        else if (vr_is(vr, "UV")) {
            ok = parse_int(v, 0, 0xFFFFFFFFFFFFFFFFull, &s, &u);
            size = 8;
        }
        else if (vr_is(vr, "FL") || vr_is(vr, "OF")) {
            ok = parse_real(v, &d);
            if (ok) {
                const float f = OFstatic_cast(float, d);
                Uint32 x;
                std::memcpy(&x, &f, 4);
                u = x;
            }
            size = 4;
        }
        else if (vr_is(vr, "FD") || vr_is(vr, "OD")) {
            ok = parse_real(v, &d);
            if (ok) {
                Uint64 x;
                std::memcpy(&x, &d, 8);
                u = x;
            }
            size = 8;
        }
        else {
            /* OB, OW, OL, OV, UN are given as InlineBinary or BulkData */
            fail(STOWRS_BUILD_BAD_METADATA, "values for a VR that takes binary data");
        }
        if (!ok) {
            fail(STOWRS_BUILD_BAD_METADATA, "value is not a number for its VR");
        }
        for (size_t b = 0; b < size; b++) {
            bytes.push_back(OFstatic_cast(unsigned char, (u >> (8 * b)) & 0xFF));
        }
    }
    put_binary(elem, vr, bytes.data(), bytes.size());
}

/**
 * Set a binary value given as little-endian bytes (InlineBinary, BulkData):
 * written in Explicit VR Little Endian, the value's bytes equal @p data.
 */
void builder_t::put_binary(DcmElement *elem, const char *vr, const unsigned char *data,
                           size_t len)
{
    OFCondition cond = EC_Normal;
    if (len > MAX_VALUE_LEN) {
        fail(STOWRS_BUILD_BAD_METADATA, "value too long");
    }
    if (vr_is(vr, "OB") || vr_is(vr, "UN")) {
        cond = elem->putUint8Array(data, OFstatic_cast(unsigned long, len));
    }
    else if (vr_is(vr, "OW") || vr_is(vr, "US") || vr_is(vr, "SS") || vr_is(vr, "AT")) {
        if (len % 2 != 0 || (vr_is(vr, "AT") && len % 4 != 0)) {
            fail(STOWRS_BUILD_BAD_METADATA, "binary value length not a multiple of its VR's size");
        }
        std::vector<Uint16> w(len / 2);
        for (size_t i = 0; i < w.size(); i++) {
            w[i] = rd16(data + 2 * i);
        }
        if (vr_is(vr, "SS")) {
            std::vector<Sint16> s(w.size());
            for (size_t i = 0; i < w.size(); i++) {
                std::memcpy(&s[i], &w[i], 2);
            }
            cond = elem->putSint16Array(s.data(), OFstatic_cast(unsigned long, s.size()));
        }
        else {
            cond = elem->putUint16Array(w.data(), OFstatic_cast(unsigned long, w.size()));
        }
    }
    else if (vr_is(vr, "OL") || vr_is(vr, "UL") || vr_is(vr, "SL") || vr_is(vr, "OF")
             || vr_is(vr, "FL")) {
        if (len % 4 != 0) {
            fail(STOWRS_BUILD_BAD_METADATA, "binary value length not a multiple of its VR's size");
        }
        std::vector<Uint32> w(len / 4);
        for (size_t i = 0; i < w.size(); i++) {
            w[i] = le32(data + 4 * i);
        }
        const unsigned long n = OFstatic_cast(unsigned long, w.size());
        if (vr_is(vr, "SL")) {
            std::vector<Sint32> s(w.size());
            for (size_t i = 0; i < w.size(); i++) {
                std::memcpy(&s[i], &w[i], 4);
            }
            cond = elem->putSint32Array(s.data(), n);
        }
        else if (vr_is(vr, "OF") || vr_is(vr, "FL")) {
            std::vector<Float32> f(w.size());
            for (size_t i = 0; i < w.size(); i++) {
                std::memcpy(&f[i], &w[i], 4);
            }
            cond = elem->putFloat32Array(f.data(), n);
        }
        else {
            cond = elem->putUint32Array(w.data(), n);
        }
    }
    else if (vr_is(vr, "OD") || vr_is(vr, "FD") || vr_is(vr, "OV") || vr_is(vr, "UV")
             || vr_is(vr, "SV")) {
        if (len % 8 != 0) {
            fail(STOWRS_BUILD_BAD_METADATA, "binary value length not a multiple of its VR's size");
        }
        std::vector<Uint64> w(len / 8);
        for (size_t i = 0; i < w.size(); i++) {
            w[i] = rd64(data + 8 * i);
        }
        const unsigned long n = OFstatic_cast(unsigned long, w.size());
        if (vr_is(vr, "OD") || vr_is(vr, "FD")) {
            std::vector<Float64> f(w.size());
            for (size_t i = 0; i < w.size(); i++) {
                std::memcpy(&f[i], &w[i], 8);
            }
            cond = elem->putFloat64Array(f.data(), n);
        }
        else if (vr_is(vr, "SV")) {
            DcmSigned64bitVeryLong *sv = OFdynamic_cast(DcmSigned64bitVeryLong *, elem);
            if (sv == NULL) {
                fail(STOWRS_BUILD_INTERNAL, "SV element of an unexpected class");
            }
            std::vector<Sint64> s(w.size());
            for (size_t i = 0; i < w.size(); i++) {
                std::memcpy(&s[i], &w[i], 8);
            }
            cond = sv->putSint64Array(s.data(), n);
        }
        else {
            DcmUnsigned64bitVeryLong *uv = OFdynamic_cast(DcmUnsigned64bitVeryLong *, elem);
            if (uv == NULL) {
                fail(STOWRS_BUILD_INTERNAL, "UV/OV element of an unexpected class");
            }
            cond = uv->putUint64Array(w.data(), n);
        }
    }
    else if (is_string_vr(vr)) {
        /* text by BulkData URI (a long UT, say): the bytes are the value */
        cond = elem->putString(OFreinterpret_cast(const char *, data),
                               OFstatic_cast(Uint32, len));
    }
    else {
        fail(STOWRS_BUILD_BAD_METADATA, "binary data for a VR that cannot hold it");
    }
    check_cond(cond, "value refused for its VR");
}

/**
 * A value by BulkData URI, other than top-level Pixel Data: the parts are
 * read into memory (several parts are concatenated).
 */
void builder_t::put_bulk(DcmItem *item, DcmElement *elem, const stowrs_meta_elem_t *el)
{
    const stowrs_bulk_t *const *parts = NULL;
    const int n = resolve(el->bulk_uri, &parts);
    const bool document = el->tag == TAG_ENCAPSULATED_DOCUMENT;
    for (int i = 0; i < n; i++) {
        const char *mt = parts[i]->media_type ? parts[i]->media_type : "application/octet-stream";
        bool ok = true;
        if (document) {
            ok = false;
            for (size_t k = 0; k < sizeof(DOCUMENT_TYPES) / sizeof(DOCUMENT_TYPES[0]); k++) {
                ok = ok || ieq(mt, DOCUMENT_TYPES[k]);
            }
        }
        else if (el->tag == TAG_PIXEL_DATA || el->tag == 0x7FE00008u || el->tag == 0x7FE00009u) {
            /* pixel data inside a sequence (an icon image): native only */
            ok = ieq(mt, "application/octet-stream");
        }
        if (!ok) {
            fail(STOWRS_BUILD_MEDIA_TYPE, "bulk data media type not accepted for its attribute");
        }
    }
    std::vector<unsigned char> data;
    for (int i = 0; i < n; i++) {
        read_file(parts[i]->path, &data);
    }
    if (document) {
        if (data.size() % 2 != 0) {
            data.push_back(0);             /* OB is padded with one 0x00 */
        }
        const char *mt = parts[0]->media_type;
        if (mt != NULL && !ieq(mt, "application/octet-stream")) {
            mime_.push_back(std::make_pair(item, std::string(mt)));
        }
    }
    put_binary(elem, el->vr, data.data(), data.size());
}

/**
 * The transfer syntax of top-level Pixel Data from its parts' media type and
 * transfer-syntax parameter; every part must agree.
 * @param mt set to the compressed media type, NULL for native pixel data
 */
const char *builder_t::pixel_ts(const stowrs_bulk_t *const *parts, int n,
                                const media_type_t **mt)
{
    const char *ts = NULL;
    const media_type_t *first = NULL;
    for (int i = 0; i < n; i++) {
        const char *media = parts[i]->media_type ? parts[i]->media_type
                                                 : "application/octet-stream";
        const char *param = parts[i]->transfer_syntax;
        if (param != NULL && param[0] == '\0') {
            param = NULL;
        }
        const media_type_t *found = NULL;
        const char *this_ts = NULL;
        if (ieq(media, "application/octet-stream")) {
            /* native; Implicit VR Little Endian pixel bytes are the same */
            if (param != NULL && std::strcmp(param, TS_EXPLICIT_LE) != 0
                && std::strcmp(param, "1.2.840.10008.1.2") != 0) {
                fail(STOWRS_BUILD_MEDIA_TYPE, "transfer syntax not valid for native pixel data");
            }
            this_ts = TS_EXPLICIT_LE;
        }
        else {
            for (size_t k = 0; k < sizeof(MEDIA_TYPES) / sizeof(MEDIA_TYPES[0]); k++) {
                if (ieq(media, MEDIA_TYPES[k].media_type)) {
                    found = &MEDIA_TYPES[k];
                }
            }
            if (found == NULL) {
                fail(STOWRS_BUILD_MEDIA_TYPE, "pixel data media type not supported");
            }
            if (param == NULL) {
                this_ts = found->ts[0];
            }
            for (size_t k = 0; param != NULL && found->ts[k] != NULL; k++) {
                if (std::strcmp(param, found->ts[k]) == 0) {
                    this_ts = found->ts[k];
                }
            }
            if (this_ts == NULL) {
                fail(STOWRS_BUILD_MEDIA_TYPE, "transfer syntax not valid for the media type");
            }
        }
        if (i == 0) {
            ts = this_ts;
            first = found;
        }
        else if (first != found || std::strcmp(ts, this_ts) != 0) {
            fail(STOWRS_BUILD_MEDIA_TYPE, "pixel data parts differ in media type or transfer syntax");
        }
    }
    *mt = first;
    return ts;
}

/** Native pixel data needs the attributes that say how to read it (PS3.3 C.7.6.3). */
void builder_t::check_image(DcmDataset *ds)
{
    Uint16 rows = 0, cols = 0, alloc = 0, spp = 0, stored = 0, repr = 0;
    OFString pi;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || rows == 0
        || ds->findAndGetUint16(DCM_Columns, cols).bad() || cols == 0
        || ds->findAndGetUint16(DCM_BitsAllocated, alloc).bad()
        || ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad() || spp == 0
        || ds->findAndGetOFString(DCM_PhotometricInterpretation, pi).bad() || pi.empty()) {
        fail(STOWRS_BUILD_IMAGE_ATTRS, "native pixel data without Rows, Columns, Bits Allocated, "
             "Samples per Pixel or Photometric Interpretation");
    }
    if (alloc == 0 || (alloc != 1 && alloc % 8 != 0)) {
        fail(STOWRS_BUILD_IMAGE_ATTRS, "Bits Allocated not 1 or a multiple of 8");
    }
    if (ds->tagExists(DCM_BitsStored)
        && (ds->findAndGetUint16(DCM_BitsStored, stored).bad() || stored == 0 || stored > alloc)) {
        fail(STOWRS_BUILD_IMAGE_ATTRS, "Bits Stored not within Bits Allocated");
    }
    if (ds->tagExists(DCM_PixelRepresentation)
        && (ds->findAndGetUint16(DCM_PixelRepresentation, repr).bad() || repr > 1)) {
        fail(STOWRS_BUILD_IMAGE_ATTRS, "Pixel Representation not 0 or 1");
    }
}

/**
 * Append Pixel Data (7FE0,0010) in Explicit VR Little Endian, copying the
 * parts in bounded chunks: native as one OB/OW value (the parts are the
 * frames, concatenated), compressed encapsulated (PS3.5 §A.4) with a Basic
 * Offset Table and one fragment per part, or for video the stream cut into
 * fragments of at most 4 GiB.
 */
void builder_t::write_pixels(out_file_t *out, DcmDataset *ds, const stowrs_bulk_t *const *parts,
                             int n, const media_type_t *mt)
{
    std::vector<unsigned long long> lens(OFstatic_cast(size_t, n));
    unsigned long long total = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (::stat(parts[i]->path, &st) != 0) {
            fail(STOWRS_BUILD_IO, "cannot open bulk data part", errno);
        }
        lens[OFstatic_cast(size_t, i)] = OFstatic_cast(unsigned long long, st.st_size);
        total += lens[OFstatic_cast(size_t, i)];
    }
    std::vector<char> buf(STOWRS_BUILD_COPY_BUF);
    unsigned char head[12] = { 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0, 0, 0, 0 };
    const unsigned char zero = 0;

    if (mt == NULL) {
        Uint16 alloc = 0;
        ds->findAndGetUint16(DCM_BitsAllocated, alloc);
        const bool ob = vr_is(pixel_->vr, "OB") && alloc <= 8;
        if (!ob) {
            head[5] = 'W';
        }
        const unsigned long long padded = total + (total & 1);
        if (padded > MAX_VALUE_LEN) {
            fail(STOWRS_BUILD_MEDIA_TYPE, "native pixel data over 4 GiB");
        }
        put_le32(head + 8, OFstatic_cast(Uint32, padded));
        out->write(head, sizeof(head));
        for (int i = 0; i < n; i++) {
            out->copy_from(parts[i]->path, 0, lens[OFstatic_cast(size_t, i)], &buf);
        }
        if (total & 1) {
            out->write(&zero, 1);
        }
        return;
    }

    /* encapsulated: fragments of even length; a video stream may be split */
    const unsigned long long max_frag = mt->video ? 0xFFFFFFF0ull : MAX_VALUE_LEN;
    if (!mt->video) {
        for (int i = 0; i < n; i++) {
            if (lens[OFstatic_cast(size_t, i)] + 1 > max_frag) {
                fail(STOWRS_BUILD_MEDIA_TYPE, "compressed frame over 4 GiB");
            }
        }
    }
    put_le32(head + 8, 0xFFFFFFFFu);
    out->write(head, sizeof(head));

    /* Basic Offset Table: offsets of each frame's item from the first
     * fragment; empty for video, or when an offset exceeds 32 bits */
    std::vector<unsigned char> bot;
    unsigned long long off = 0;
    for (int i = 0; i < n && !mt->video; i++) {
        if (off > 0xFFFFFFFFull) {
            bot.clear();
            break;
        }
        unsigned char o[4];
        put_le32(o, OFstatic_cast(Uint32, off));
        bot.insert(bot.end(), o, o + 4);
        const unsigned long long l = lens[OFstatic_cast(size_t, i)];
        off += 8 + l + (l & 1);
    }
    unsigned char item[8] = { 0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0 };
    put_le32(item + 4, OFstatic_cast(Uint32, bot.size()));
    out->write(item, sizeof(item));
    if (!bot.empty()) {
        out->write(bot.data(), bot.size());
    }

    for (int i = 0; i < n; i++) {
        /* an image part is one fragment; a video part over 4 GiB becomes
         * consecutive fragments (max_frag is even, so only the last one
         * may need a pad byte) */
        const unsigned long long l = lens[OFstatic_cast(size_t, i)];
        unsigned long long done = 0;
        do {
            const unsigned long long frag = l - done < max_frag ? l - done : max_frag;
            put_le32(item + 4, OFstatic_cast(Uint32, frag + (frag & 1)));
            out->write(item, sizeof(item));
            out->copy_from(parts[i]->path, done, frag, &buf);
            if (frag & 1) {
                out->write(&zero, 1);
            }
            done += frag;
        } while (done < l);
    }
    const unsigned char delim[8] = { 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0 };
    out->write(delim, sizeof(delim));
}

/** @return whether @p len bytes at @p s hold one outside 7-bit ASCII */
bool has_non_ascii(const char *s, Uint32 len)
{
    for (Uint32 i = 0; i < len; i++) {
        if (OFstatic_cast(unsigned char, s[i]) >= 0x80) {
            return true;
        }
    }
    return false;
}

/**
 * Walk @p item for fix_charset(): its non-ASCII values of the VRs the
 * character set affects go to scope @p scope; a sequence item with its own
 * Specific Character Set opens a scope of its own. Only loaded string
 * values are looked at (top-level Pixel Data is not in the dataset).
 */
void builder_t::collect_charset(DcmItem *item, size_t scope, std::vector<charset_scope_t> *scopes,
                                int depth)
{
    if (depth > STOWRS_BUILD_MAX_DEPTH + 1) {
        fail(STOWRS_BUILD_INTERNAL, "sequences nested too deeply");   /* fill() stops sooner */
    }
    for (DcmObject *obj = item->nextInContainer(NULL); obj != NULL;
         obj = item->nextInContainer(obj)) {
        DcmSequenceOfItems *sq = OFdynamic_cast(DcmSequenceOfItems *, obj);
        if (sq != NULL) {
            for (DcmObject *it = sq->nextInContainer(NULL); it != NULL;
                 it = sq->nextInContainer(it)) {
                DcmItem *sub = OFdynamic_cast(DcmItem *, it);
                if (sub == NULL) {
                    continue;
                }
                size_t s = scope;
                if (sub->tagExists(DCM_SpecificCharacterSet, OFFalse)) {
                    charset_scope_t own;
                    own.owner = sub;
                    scopes->push_back(own);
                    s = scopes->size() - 1;
                }
                collect_charset(sub, s, scopes, depth + 1);
            }
        }
        else if (obj->isAffectedBySpecificCharacterSet() && raw_text_.count(obj) == 0) {
            DcmElement *e = OFstatic_cast(DcmElement *, obj);
            char *str = NULL;
            Uint32 len = 0;
            if (e->getString(str, len).good() && str != NULL && has_non_ascii(str, len)) {
                (*scopes)[scope].values.push_back(e);
            }
        }
    }
}

/**
 * Convert the values of @p scope from UTF-8 to @p charset into @p out,
 * changing nothing yet.
 * @return false if dcmtk cannot convert to @p charset (none or empty,
 *         unknown, code extensions, no conversion library) or a value has a
 *         character it cannot represent
 */
bool builder_t::convert_scope(const charset_scope_t &scope, const std::string &charset,
                              std::vector<OFString> *out)
{
    if (charset.empty() || !DcmSpecificCharacterSet::isConversionAvailable()) {
        return false;
    }
    DcmSpecificCharacterSet conv;
    if (conv.selectCharacterSet("ISO_IR 192", charset.c_str()).bad()) {
        return false;
    }
    /* dcmtk converts to "ISO_IR 13" (JIS X 0201) as Shift_JIS, whose
     * two-byte characters JIS X 0201 does not have */
    const bool jis_x0201 = charset == "ISO_IR 13";
    for (size_t i = 0; i < scope.values.size(); i++) {
        char *str = NULL;
        Uint32 len = 0;
        OFString result;
        if (scope.values[i]->getString(str, len).bad() || str == NULL
            || conv.convertString(str, len, result).bad()) {
            return false;
        }
        for (size_t k = 0; jis_x0201 && k < result.length(); k++) {
            const unsigned char c = OFstatic_cast(unsigned char, result[k]);
            if ((c >= 0x80 && c <= 0xA0) || c >= 0xE0) {
                return false;
            }
        }
        out->push_back(result);
    }
    return true;
}

/**
 * Make the stored file's Specific Character Set (0008,0005) tell the truth
 * (see the top of this file): in each scope with non-ASCII values, convert
 * them to the declared character set, or else declare "ISO_IR 192". A
 * scope converts all of its values or none. Pure ASCII, and a scope that
 * declares "ISO_IR 192", stay as they are.
 */
void builder_t::fix_charset(DcmDataset *dataset, DcmItem *trailer)
{
    std::vector<charset_scope_t> scopes(1);
    scopes[0].owner = dataset;
    collect_charset(dataset, 0, &scopes, 0);
    if (trailer != NULL) {
        /* attributes after Pixel Data: the dataset's scope */
        collect_charset(trailer, 0, &scopes, 0);
    }
    for (size_t i = 0; i < scopes.size(); i++) {
        const charset_scope_t &scope = scopes[i];
        if (scope.values.empty()) {
            continue;
        }
        OFString declared;
        if (scope.owner->findAndGetOFStringArray(DCM_SpecificCharacterSet, declared,
                                                 OFFalse).bad()) {
            declared.clear();            /* absent */
        }
        const std::string charset = trimmed(declared.c_str());
        if (charset == "ISO_IR 192") {
            continue;
        }
        std::vector<OFString> converted;
        if (convert_scope(scope, charset, &converted)) {
            for (size_t k = 0; k < converted.size(); k++) {
                check_cond(scope.values[k]->putString(converted[k].c_str(),
                                                      OFstatic_cast(Uint32, converted[k].length())),
                           "cannot store a value converted to the declared character set");
            }
        }
        else {
            check_cond(scope.owner->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192"),
                       "cannot set Specific Character Set");
        }
    }
}

void builder_t::build(const stowrs_meta_ds_t *ds, const char *out_path)
{
    DcmDataset dataset;
    DcmDataset trailer;
    fill(&dataset, ds, 0, &trailer);
    for (size_t i = 0; i < mime_.size(); i++) {
        OFString have;
        DcmItem *item = mime_[i].first;
        if (item->findAndGetOFString(DCM_MIMETypeOfEncapsulatedDocument, have).bad()
            || have.empty()) {
            check_cond(item->putAndInsertString(DCM_MIMETypeOfEncapsulatedDocument,
                                                mime_[i].second.c_str()),
                       "cannot set MIME Type of Encapsulated Document");
        }
    }
    fix_charset(&dataset, &trailer);

    OFString sop_class, sop_instance;
    if (dataset.findAndGetOFStringArray(DCM_SOPClassUID, sop_class).bad() || sop_class.empty()
        || dataset.findAndGetOFStringArray(DCM_SOPInstanceUID, sop_instance).bad()
        || sop_instance.empty()) {
        fail(STOWRS_BUILD_BAD_METADATA, "SOP Class or SOP Instance UID missing");
    }

    const char *ts = TS_EXPLICIT_LE;
    const stowrs_bulk_t *const *parts = NULL;
    int nparts = 0;
    const media_type_t *mt = NULL;
    if (pixel_ != NULL) {
        if (!vr_is(pixel_->vr, "OB") && !vr_is(pixel_->vr, "OW")) {
            fail(STOWRS_BUILD_BAD_METADATA, "Pixel Data VR not OB or OW");
        }
        nparts = resolve(pixel_->bulk_uri, &parts);
        ts = pixel_ts(parts, nparts, &mt);
        if (mt == NULL) {
            check_image(&dataset);
        }
    }

    DcmMetaInfo meta;
    const Uint8 version[2] = { 0x00, 0x01 };
    check_cond(meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2),
               "cannot build File Meta Information");
    check_cond(meta.putAndInsertString(DCM_MediaStorageSOPClassUID, sop_class.c_str()),
               "cannot build File Meta Information");
    check_cond(meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop_instance.c_str()),
               "cannot build File Meta Information");
    check_cond(meta.putAndInsertString(DCM_TransferSyntaxUID, ts),
               "cannot build File Meta Information");
    check_cond(meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID),
               "cannot build File Meta Information");
    check_cond(meta.putAndInsertString(DCM_ImplementationVersionName,
                                       OFFIS_DTK_IMPLEMENTATION_VERSION_NAME),
               "cannot build File Meta Information");
    check_cond(meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, EXS_LittleEndianExplicit,
                                                 EET_ExplicitLength),
               "cannot build File Meta Information");

    out_file_t out(out_path);
    out.open();
    out.write_object(&meta, true);
    out.write_object(&dataset, false);
    if (pixel_ != NULL) {
        write_pixels(&out, &dataset, parts, nparts, mt);
        if (trailer.card() > 0) {
            out.write_object(&trailer, false);
        }
    }
    out.close();
}

} /* namespace */

extern "C" stowrs_build_rc_e stowrs_dicom_build(const stowrs_meta_ds_t *ds,
                                                stowrs_bulk_resolve_fn resolve, void *baton,
                                                const char *out_path, int *os_error,
                                                char *errbuf, size_t errlen)
{
    if (os_error != NULL) {
        *os_error = 0;
    }
    set_err(errbuf, errlen, "");
    if (ds == NULL || out_path == NULL || out_path[0] == '\0') {
        set_err(errbuf, errlen, "no dataset or no output file");
        return STOWRS_BUILD_INTERNAL;
    }
    try {
        builder_t b(resolve, baton);
        b.build(ds, out_path);
        return STOWRS_BUILD_OK;
    }
    catch (const build_error &e) {
        set_err(errbuf, errlen, e.what);
        if (os_error != NULL) {
            *os_error = e.os_error;
        }
        return e.rc;
    }
    catch (const std::bad_alloc &) {
        set_err(errbuf, errlen, "out of memory");
        return STOWRS_BUILD_NOMEM;
    }
    catch (...) {
        set_err(errbuf, errlen, "unexpected exception from dcmtk");
        return STOWRS_BUILD_INTERNAL;
    }
}
