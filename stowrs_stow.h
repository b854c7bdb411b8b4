/**
 * @file stowrs_stow.h
 * @brief One STOW-RS request's body, start to end, without httpd types:
 *        multipart events -> spool file -> inspect -> checks -> publish ->
 *        outcome list. The glue feeds it bytes and answers from the outcomes.
 */
#ifndef STOWRS_STOW_H
#define STOWRS_STOW_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "stowrs_multipart.h"
#include "stowrs_outcome.h"
#include "stowrs_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What the request's root type says the parts are. */
typedef enum {
    STOWRS_STOW_DICOM = 0,          /**< type="application/dicom": PS3.10 files */
    STOWRS_STOW_XML,                /**< type="application/dicom+xml": metadata + bulk */
    STOWRS_STOW_JSON                /**< type="application/dicom+json": metadata + bulk */
} stowrs_stow_mode_e;

typedef struct {
    stowrs_stow_mode_e mode;
    const char *request_url;        /**< absolute URL POSTed to, for BulkData URIs */
    apr_off_t max_metadata;         /**< bytes of one metadata part, 0 = unlimited */
    stowrs_store_conf_t store;
    stowrs_accept_t accept;
    const char *url_study_uid;      /**< from /studies/{uid}, or NULL */
    apr_size_t max_header_bytes;    /**< 0 = parser default */
    unsigned int max_parts;         /**< 0 = parser default */
} stowrs_stow_conf_t;

/** Extra facts about a part, for the log. */
typedef struct {
    unsigned int part_no;           /**< from 1 */
    apr_off_t bytes;                /**< part data length */
    const char *final_path;         /**< archive file when stored, else NULL */
    const char *action;             /**< "stored", "duplicate kept", "duplicate
                                         replaced" or "failed" */
    const char *ts_param;           /**< part's transfer-syntax parameter if it
                                         disagreed with (0002,0010), else NULL */
} stowrs_part_info_t;

/** Called once per finished part, in part order, when its outcome is
 *  final: for an instance stored, once it is durable (its directory's
 *  fsync may wait for the next ones in the same series, see
 *  stowrs_store_publish_in), at the latest before stowrs_stow_feed fails
 *  or stowrs_stow_finish or stowrs_stow_abort return. */
typedef void (*stowrs_stow_outcome_fn)(void *baton, const stowrs_outcome_t *o,
                                       const stowrs_part_info_t *info);

typedef struct stowrs_stow_t stowrs_stow_t;

/**
 * @param pool     the request's pool; parts get subpools of it
 * @param conf     copied by reference; must outlive the request
 * @param boundary checked with stowrs_mp_boundary_valid
 * @param fn       outcome callback, may be NULL
 * @param baton    for @c fn
 * @param out      the request
 * @return APR_SUCCESS or APR_EINVAL
 */
apr_status_t stowrs_stow_create(apr_pool_t *pool, const stowrs_stow_conf_t *conf,
                                const char *boundary, stowrs_stow_outcome_fn fn,
                                void *baton, stowrs_stow_t **out);

/** Feed body bytes. @return APR_SUCCESS, or non-success after a framing error */
apr_status_t stowrs_stow_feed(stowrs_stow_t *s, const char *data, apr_size_t len);

/** The body ended. @return APR_SUCCESS, or non-success for bad framing */
apr_status_t stowrs_stow_finish(stowrs_stow_t *s);

/** The client went away: drop the part in progress and its spool file;
 *  the instances completed before are made durable and reported. */
void stowrs_stow_abort(stowrs_stow_t *s);

/** @return the array of stowrs_outcome_t of finished parts */
const apr_array_header_t *stowrs_stow_outcomes(const stowrs_stow_t *s);

/** Something worth a log line that is not an outcome (an ignored part). */
typedef struct {
    unsigned int part_no;
    const char *text;               /**< no UIDs, no attribute values */
} stowrs_stow_note_t;

/** @return the array of stowrs_stow_note_t gathered so far */
const apr_array_header_t *stowrs_stow_notes(const stowrs_stow_t *s);

/** @return the parser, for its error, offset and stats */
const stowrs_mp_parser_t *stowrs_stow_parser(const stowrs_stow_t *s);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_STOW_H */
