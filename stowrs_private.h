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

/** Per-location configuration; every field merges "inner wins unless unset". */
typedef struct {
    const char *location;           /**< the <Location> that named the archive */
    const char *archive;
    const char *path_format;
    int sync;                       /**< STOWRS_UNSET, 0, 1 */
    int overwrite;                  /**< STOWRS_UNSET or stowrs_overwrite_e */
    apr_off_t max_body;             /**< STOWRS_UNSET or bytes, 0 = unlimited */
    const char *retrieve_base;
    int sop_classes_set;            /**< StowRSAcceptSOPClass was given */
    apr_hash_t *sop_classes;        /**< NULL with sop_classes_set = all */
    apr_array_header_t *transfer_syntaxes[STOWRS_SOP_OTHER + 1]; /**< NULL = unset */
} stowrs_dir_conf_t;

/** Per-server: the archives named anywhere, for the startup sweep. */
typedef struct {
    apr_array_header_t *archives;   /**< const char * */
} stowrs_server_conf_t;

#endif /* STOWRS_PRIVATE_H */
