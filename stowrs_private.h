/**
 * @file stowrs_private.h
 * @brief What the httpd glue shares: the module declaration, the log tag
 *        macro and the configuration structs. Only glue includes this.
 */
#ifndef STOWRS_PRIVATE_H
#define STOWRS_PRIVATE_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "stowrs_outcome.h"
#include "stowrs_store.h"

/* Our own tags with the rules of httpd's APLOGNO: one per call site. */
#define STOWRS_LOGNO(n) "STOWRS" #n ": "

extern module AP_MODULE_DECLARE_DATA stowrs_module;

#ifdef APLOG_USE_MODULE
APLOG_USE_MODULE(stowrs);
#endif

#define STOWRS_UNSET (-1)

/** StowRSMaxMetadataSize default: a JSON array for a large series fits. */
#define STOWRS_DEFAULT_MAX_METADATA (64 * 1024 * 1024)

/** Per-location configuration; every field merges "inner wins unless unset". */
typedef struct {
    const char *location;           /**< the <Location> that named the archive */
    const char *archive;
    const char *path_format;
    int sync;                       /**< STOWRS_UNSET, 0, 1 */
    int overwrite;                  /**< STOWRS_UNSET or stowrs_overwrite_e */
    apr_off_t max_body;             /**< STOWRS_UNSET or bytes, 0 = unlimited */
    apr_off_t max_metadata;         /**< STOWRS_UNSET or bytes, 0 = unlimited */
    int max_requests;               /**< STOWRS_UNSET or simultaneous requests, 0 = unlimited */
    const char *retrieve_base;
    int sop_classes_set;            /**< StowRSAcceptSOPClass was given */
    apr_hash_t *sop_classes;        /**< NULL with sop_classes_set = all */
    apr_array_header_t *transfer_syntaxes[STOWRS_SOP_OTHER + 1]; /**< NULL = unset */
} stowrs_dir_conf_t;

/** Per-server: the archives named anywhere, for the startup sweep. */
typedef struct {
    apr_array_header_t *archives;   /**< const char * */
} stowrs_server_conf_t;

/* mod_stowrs_shm.c: what httpd's processes share. */

/** Create the shared table once per parent; kept across graceful restarts. */
apr_status_t stowrs_shm_init(apr_pool_t *pconf, server_rec *s);

/** Attach a new child to the cross-process mutex. */
void stowrs_shm_child_init(apr_pool_t *p, server_rec *s);

/**
 * Count a request for @c location and, when @c max_requests > 0, claim one
 * of its simultaneous-request places until r->pool goes away.
 * @return 1 admitted, 0 the limit is reached (answer 503)
 */
int stowrs_shm_admit(request_rec *r, const char *location, int max_requests);

/**
 * Give back the place stowrs_shm_admit claimed, before the answer goes
 * out: a client that sends its next request as soon as it has the answer
 * must find the place free. Idempotent; r->pool's cleanup is the fallback.
 */
void stowrs_shm_release(request_rec *r);

/** Count one instance's outcome for @c location. */
void stowrs_shm_count_outcome(const char *location, unsigned int failure_reason,
                              apr_off_t bytes);

/** mod_status's status_hook: the counters, summed over all processes. */
int stowrs_shm_status_hook(request_rec *r, int flags);

#endif /* STOWRS_PRIVATE_H */
