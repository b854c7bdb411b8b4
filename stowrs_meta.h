/**
 * @file stowrs_meta.h
 * @brief Readers of DICOM metadata: PS3.19 Native DICOM Model XML (libxml2)
 *        and PS3.18 Annex F DICOM JSON (jansson), into one plain C tree that
 *        the dcmtk shim turns into a PS3.10 file (stowrs_dicom_build).
 *
 * No httpd types and no dcmtk: the readers are unit-tested and fuzzed
 * directly. The tree uses plain C types so the C++ shim can walk it.
 * XML is read with xmlTextReader (streaming, no network, no DTD: a
 * document with a DOCTYPE is refused before any entity could expand).
 */
#ifndef STOWRS_META_H
#define STOWRS_META_H

#include <stddef.h>
#include <apr_pools.h>
#include <apr_tables.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Nesting of sequences accepted before a document is refused. */
#define STOWRS_META_MAX_DEPTH 32

typedef struct stowrs_meta_ds_t stowrs_meta_ds_t;

/** One attribute. Exactly one of values / items / bulk_uri / inline data is used. */
typedef struct {
    unsigned int tag;               /**< (gggg << 16) | eeee */
    char vr[3];                     /**< two upper-case letters */
    const char *private_creator;    /**< XML privateCreator, or NULL */
    /** String form of each value, in order; NULL entries are empty values.
     *  Numbers as decimal text (shortest round-trip form for JSON reals),
     *  PN as "Alphabetic=Ideographic=Phonetic" with '^' components, AT as
     *  "GGGGEEEE" hex. */
    int nvalues;
    const char **values;
    int nitems;                     /**< SQ: items, each a dataset */
    stowrs_meta_ds_t **items;
    const char *bulk_uri;           /**< BulkData uri / BulkDataURI, or NULL */
    int has_inline;                 /**< InlineBinary present (maybe empty) */
    const unsigned char *inline_data; /**< decoded base64 */
    size_t inline_len;
} stowrs_meta_elem_t;

/** A dataset: attributes in ascending tag order, no duplicates. */
struct stowrs_meta_ds_t {
    int nelems;
    stowrs_meta_elem_t *elems;
};

typedef enum {
    STOWRS_META_OK = 0,
    STOWRS_META_MALFORMED,          /**< not well-formed XML / JSON */
    STOWRS_META_NOT_MODEL,          /**< well-formed, but not a Native DICOM Model /
                                         DICOM JSON object (names, tags, VRs, values) */
    STOWRS_META_FORBIDDEN,          /**< DOCTYPE / entities / external references */
    STOWRS_META_TOO_DEEP,           /**< sequences nested over STOWRS_META_MAX_DEPTH */
    STOWRS_META_NOMEM
} stowrs_meta_rc_e;

/** One object read from a JSON array: its dataset or why it failed. */
typedef struct {
    stowrs_meta_rc_e rc;
    stowrs_meta_ds_t *ds;           /**< NULL unless rc == STOWRS_META_OK */
    const char *error;              /**< short reason, no attribute values */
} stowrs_meta_object_t;

/**
 * Read one Native DICOM Model document (root NativeDicomModel, namespace
 * http://dicom.nema.org/PS3.19/models/NativeDICOM or none).
 * @param pool   owns the tree; libxml2 objects are freed before returning
 * @param buf    the document
 * @param len    its length
 * @param out    the dataset when STOWRS_META_OK
 * @param error  a short reason otherwise (no attribute values)
 */
stowrs_meta_rc_e stowrs_meta_read_xml(apr_pool_t *pool, const char *buf, size_t len,
                                      stowrs_meta_ds_t **out, const char **error);

/** As stowrs_meta_read_xml, from a file (the spooled part). */
stowrs_meta_rc_e stowrs_meta_read_xml_file(apr_pool_t *pool, const char *path,
                                           stowrs_meta_ds_t **out, const char **error);

/**
 * Read a DICOM JSON document: an array of objects (a single object is
 * taken as an array of one). A document that is not well-formed fails
 * whole; an object that is not a DICOM JSON dataset fails alone.
 * @param objects array of stowrs_meta_object_t, in document order
 * @return STOWRS_META_OK if the document parsed (objects may still fail)
 */
stowrs_meta_rc_e stowrs_meta_read_json(apr_pool_t *pool, const char *buf, size_t len,
                                       apr_array_header_t **objects, const char **error);

/** As stowrs_meta_read_json, from a file. */
stowrs_meta_rc_e stowrs_meta_read_json_file(apr_pool_t *pool, const char *path,
                                            apr_array_header_t **objects,
                                            const char **error);

/** @return the attribute with @c tag at the top level of @c ds, or NULL */
const stowrs_meta_elem_t *stowrs_meta_find(const stowrs_meta_ds_t *ds, unsigned int tag);

/**
 * The key under which a bulk data URI or a part's Content-Location is
 * matched: the reference resolved against @c request_url (RFC 3986
 * §5.2), then reduced to its path and query, so that "…/bulk/1",
 * "/dcm4chee-arc/…/bulk/1" and "http://host/dcm4chee-arc/…/bulk/1" agree.
 * @param request_url the absolute URL the request was POSTed to
 * @param ref         the URI or Content-Location as sent
 * @return the key, or NULL if @c ref cannot be parsed
 */
const char *stowrs_meta_uri_key(apr_pool_t *pool, const char *request_url, const char *ref);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_META_H */
