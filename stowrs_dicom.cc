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
 *      too. Only for a deflated dataset, where dcmtk cannot skip values and
 *      would load them, parsing stops at Pixel Data, and the zlib stream is
 *      then inflated to its end (nothing kept) to find truncation.
 *
 * A transfer syntax dcmtk does not know is refused (STOWRS_DICOM_UNKNOWN_TS),
 * except the few in encapsulated_unknown_to_dcmtk(): those are encoded like
 * any encapsulated syntax dcmtk knows, and step 3 reads their dataset as one.
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

#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

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
        cond = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange, STOWRS_MAX_READ_LENGTH,
                                   ERM_fileOnly, stop);
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
