/**
 * @file stowrs_outcome.h
 * @brief Per-instance outcomes and the two places where DESIGN.md §3 lives
 *        in code: the checks that give a FailureReason (§3.3) and the rule
 *        that turns the outcome list into an HTTP status (§3.6).
 */
#ifndef STOWRS_OUTCOME_H
#define STOWRS_OUTCOME_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_hash.h>
#include "stowrs_dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FailureReason (0008,1197) values, PS3.18 and the dcm4chee-arc statement. */
#define STOWRS_FR_PROCESSING_FAILURE    0x0110u
#define STOWRS_FR_DUPLICATE_REJECTED    0x0111u
#define STOWRS_FR_SOP_CLASS_NOT_SUPPORTED 0x0122u
#define STOWRS_FR_OUT_OF_RESOURCES      0xA700u
#define STOWRS_FR_UID_CONFLICT          0xA77Bu
#define STOWRS_FR_DATASET_MISMATCH      0xA900u
#define STOWRS_FR_BULKDATA_MISSING      0xA922u
#define STOWRS_FR_CANNOT_UNDERSTAND     0xC000u
#define STOWRS_FR_TS_NOT_SUPPORTED      0xC122u
#define STOWRS_FR_STUDY_MISMATCH        0xC409u
#define STOWRS_FR_NOT_PARSEABLE         0xC499u

/** SOP class reported when a failed part has no readable one (dcm4chee-arc's). */
#define STOWRS_UNKNOWN_SOP_CLASS_UID "1.2.40.0.13.1.15.110.3.165.2"

/** What happened to one part. */
typedef struct {
    const char *sop_class_uid;       /**< never NULL in a finished outcome */
    const char *sop_instance_uid;    /**< never NULL in a finished outcome */
    const char *study_instance_uid;  /**< set when stored, else may be NULL */
    const char *series_instance_uid; /**< set when stored, else may be NULL */
    unsigned int failure_reason;     /**< 0 when stored */
    int duplicate;                   /**< stored: an existing copy was kept or replaced */
    const char *detail;              /**< for the log: why it failed; no patient data */
} stowrs_outcome_t;

/** Which SOP classes and transfer syntaxes a location accepts. */
typedef struct {
    /** UID -> non-NULL; NULL means every storage SOP class dcmtk knows */
    apr_hash_t *sop_classes;
    /** per stowrs_sop_category_e (index 1..4), arrays of const char * UIDs */
    apr_array_header_t *transfer_syntaxes[STOWRS_SOP_OTHER + 1];
} stowrs_accept_t;

/**
 * Fill @c a with DESIGN.md §3.3's defaults: every storage SOP class, and the
 * transfer syntax lists of the specification's SCP tables per category.
 */
void stowrs_accept_defaults(apr_pool_t *pool, stowrs_accept_t *a);

/**
 * The §3.3 checks after inspection, in the contract's order: parseable
 * (C499), UIDs present, valid and consistent (A900), SOP class accepted
 * (0122), transfer syntax accepted for its category (C122), study matches
 * the URL's (C409).
 * @param rc        what stowrs_dicom_inspect returned
 * @param info      what it found
 * @param accept    the location's lists
 * @param url_study Study Instance UID from the request path, or NULL
 * @param detail    set to a short reason when the result is not 0
 * @return 0 if the instance may be stored, else its FailureReason
 */
unsigned int stowrs_outcome_check(stowrs_dicom_rc_e rc, const stowrs_dicom_info_t *info,
                                  const stowrs_accept_t *accept, const char *url_study,
                                  const char **detail);

/**
 * FailureReason for an I/O error while spooling or publishing:
 * ENOSPC/EDQUOT give A700, anything else 0110.
 */
unsigned int stowrs_outcome_io_reason(apr_status_t rv);

/**
 * The §3.6 rule.
 * @param outcomes array of stowrs_outcome_t
 * @return 200 all stored, 202 some stored, 503 none stored and every
 *         failure out of resources (A7xx other than the A77B conflict),
 *         409 none stored otherwise (also for an empty list)
 */
int stowrs_outcome_http_status(const apr_array_header_t *outcomes);

/** @return a short English text for a FailureReason, never NULL */
const char *stowrs_outcome_reason_text(unsigned int reason);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_OUTCOME_H */
