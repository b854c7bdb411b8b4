/**
 * @file stowrs_dicom.h
 * @brief Plain C face of the dcmtk shim (stowrs_dicom.cc).
 *
 * Nothing here knows about C++ or dcmtk; no exception crosses this header.
 * Messages from dcmtk come back in caller-supplied buffers; dcmtk itself
 * never writes to stderr (which is httpd's error log).
 */
#ifndef STOWRS_DICOM_H
#define STOWRS_DICOM_H

#include <stddef.h>
#include "stowrs_meta.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STOWRS_DICOM_OK = 0,
    STOWRS_DICOM_NOT_PART10,    /**< no preamble/DICM, bad meta, truncated, dataset unreadable */
    STOWRS_DICOM_UNKNOWN_TS,    /**< meta header names a transfer syntax dcmtk cannot read */
    STOWRS_DICOM_NOMEM,
    STOWRS_DICOM_INTERNAL
} stowrs_dicom_rc_e;

/** SOP class categories that pick a transfer syntax list (DESIGN.md §3.3). */
typedef enum {
    STOWRS_SOP_UNKNOWN = 0,     /**< not a storage SOP class dcmtk knows */
    STOWRS_SOP_IMAGE,
    STOWRS_SOP_VIDEO,
    STOWRS_SOP_SR,
    STOWRS_SOP_OTHER
} stowrs_sop_category_e;

/**
 * What inspection found. Strings are NUL-terminated with trailing padding
 * removed; an attribute that is absent gives "". A value longer than 64
 * characters is cut to 64 and @c overlong notes it (it is then invalid).
 */
typedef struct {
    char meta_sop_class_uid[65];       /**< (0002,0002) */
    char meta_sop_instance_uid[65];    /**< (0002,0003) */
    char transfer_syntax_uid[65];      /**< (0002,0010) */
    char sop_class_uid[65];            /**< (0008,0016) */
    char sop_instance_uid[65];         /**< (0008,0018) */
    char study_instance_uid[65];       /**< (0020,000D) */
    char series_instance_uid[65];      /**< (0020,000E) */
    int overlong;                      /**< some UID above was longer than 64 */
    int meta_readable;                 /**< the meta header was read (meta_* valid) */
} stowrs_dicom_info_t;

/**
 * Once per process, before any other call: load-check the data dictionary,
 * silence dcmtk's logger, set the global parse switches.
 * @return 0 on success, else -1 with a message in @c errbuf
 */
int stowrs_dicom_global_init(char *errbuf, size_t errlen);

/**
 * Inspect one PS3.10 file without loading large values: reads the meta
 * header and the dataset up to (not including) Pixel Data.
 * @param path  the file
 * @param info  filled on every return (zeroed first)
 * @param errbuf a reason when the result is not OK (dcmtk's text)
 * @return STOWRS_DICOM_OK, or why not
 */
stowrs_dicom_rc_e stowrs_dicom_inspect(const char *path, stowrs_dicom_info_t *info,
                                       char *errbuf, size_t errlen);

/**
 * @return the category of a SOP class UID; STOWRS_SOP_UNKNOWN if it is not a
 *         storage SOP class in dcmtk's tables
 */
stowrs_sop_category_e stowrs_dicom_sop_category(const char *uid);

/**
 * Resolve a dcmtk UID name ("CTImageStorage", "JPEGLSLossless") to its UID.
 * @return the UID (static storage), or NULL if the name is unknown
 */
const char *stowrs_dicom_uid_by_name(const char *name);

/** One bulk data part, spooled to a file. */
typedef struct {
    const char *path;               /**< the part's bytes */
    unsigned long long length;
    const char *media_type;         /**< lower-cased type/subtype, e.g. "image/jpeg" */
    const char *transfer_syntax;    /**< its transfer-syntax parameter, or NULL */
} stowrs_bulk_t;

/**
 * Look up the parts a BulkData URI names, in the order they arrived
 * (several parts with one Content-Location are the frames of one value).
 * @return the number of parts (0 if none), with *parts set
 */
typedef int (*stowrs_bulk_resolve_fn)(void *baton, const char *uri,
                                      const stowrs_bulk_t *const **parts);

typedef enum {
    STOWRS_BUILD_OK = 0,
    STOWRS_BUILD_BULK_MISSING,      /**< a BulkData URI names no part: A922 */
    STOWRS_BUILD_IMAGE_ATTRS,       /**< uncompressed pixel data without the
                                         attributes an image needs: A900 */
    STOWRS_BUILD_MEDIA_TYPE,        /**< a bulk media type or transfer syntax we
                                         cannot encapsulate: C122 */
    STOWRS_BUILD_BAD_METADATA,      /**< values dcmtk refuses for their VR, a
                                         private attribute no block can hold:
                                         C000 (a missing SOP Class/Instance UID
                                         is A900, checked by the caller before
                                         building) */
    STOWRS_BUILD_IO,                /**< reading a part or writing the file; see *os_error */
    STOWRS_BUILD_NOMEM,
    STOWRS_BUILD_INTERNAL
} stowrs_build_rc_e;

/**
 * Build a PS3.10 file from metadata and bulk data (DESIGN.md §3.4): meta
 * header from the dataset's SOP Class/Instance UIDs; Explicit VR Little
 * Endian for native pixel data (application/octet-stream), or the transfer
 * syntax of the pixel data's media type and transfer-syntax parameter
 * (image/jpeg, image/jls, image/jp2, image/jpx, image/dicom-rle, video/mpeg,
 * video/mp4, video/H265), encapsulated with a basic offset table and one
 * fragment per bulk part (frame); application/pdf and text/xml bulk data
 * become Encapsulated Document values. Large pixel data is copied from its
 * part file in bounded memory.
 * @param ds        the metadata
 * @param resolve   finds bulk parts by URI
 * @param baton     for @c resolve
 * @param out_path  file to write (created or truncated)
 * @param os_error  errno of an I/O failure, else 0
 * @param errbuf    a reason when not OK (no attribute values)
 */
stowrs_build_rc_e stowrs_dicom_build(const stowrs_meta_ds_t *ds,
                                     stowrs_bulk_resolve_fn resolve, void *baton,
                                     const char *out_path, int *os_error,
                                     char *errbuf, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_DICOM_H */
