/*
 * stowrs_outcome.c - DESIGN.md §3 in code: which FailureReason an inspected
 * instance gets (§3.3) and which HTTP status an outcome list gets (§3.6).
 *
 * Both are pure functions so that the contract can be unit-tested without
 * httpd, files or dcmtk's file parser.
 */

#include <errno.h>
#include <string.h>

#include <apr_errno.h>
#include <apr_strings.h>

#include "stowrs_outcome.h"
#include "stowrs_uid.h"

/* Root of every DICOM-defined UID; the tables below abbreviate after it. */
#define TS(s) "1.2.840.10008." s

/* The specification's SCPImageTS table. */
static const char *const image_ts[] = {
    TS("1.2"), TS("1.2.1"), TS("1.2.4.50"), TS("1.2.4.51"), TS("1.2.4.57"),
    TS("1.2.4.70"), TS("1.2.4.80"), TS("1.2.4.81"), TS("1.2.4.90"),
    TS("1.2.4.91"), TS("1.2.4.201"), TS("1.2.4.202"), TS("1.2.4.203"),
    TS("1.2.5"), NULL
};

/* SCPVideoTS. */
static const char *const video_ts[] = {
    TS("1.2.4.50"), TS("1.2.4.100"), TS("1.2.4.100.1"), TS("1.2.4.101"),
    TS("1.2.4.101.1"), TS("1.2.4.102"), TS("1.2.4.102.1"), TS("1.2.4.103"),
    TS("1.2.4.103.1"), TS("1.2.4.104"), TS("1.2.4.104.1"), TS("1.2.4.105"),
    TS("1.2.4.105.1"), TS("1.2.4.106"), TS("1.2.4.106.1"), TS("1.2.4.107"),
    TS("1.2.4.108"), NULL
};

/* SCPStructuredReportTS. */
static const char *const sr_ts[] = {
    TS("1.2"), TS("1.2.1"), TS("1.2.1.99"), NULL
};

/* SCPOtherTS. */
static const char *const other_ts[] = {
    TS("1.2"), TS("1.2.1"), NULL
};

static apr_array_header_t *
ts_array(apr_pool_t *pool, const char *const *list)
{
    apr_array_header_t *arr = apr_array_make(pool, 20, sizeof(const char *));

    for (; *list; list++) {
        APR_ARRAY_PUSH(arr, const char *) = *list;
    }
    return arr;
}

void
stowrs_accept_defaults(apr_pool_t *pool, stowrs_accept_t *a)
{
    memset(a, 0, sizeof(*a));
    a->sop_classes = NULL;
    a->transfer_syntaxes[STOWRS_SOP_UNKNOWN] = NULL;
    a->transfer_syntaxes[STOWRS_SOP_IMAGE] = ts_array(pool, image_ts);
    a->transfer_syntaxes[STOWRS_SOP_VIDEO] = ts_array(pool, video_ts);
    a->transfer_syntaxes[STOWRS_SOP_SR] = ts_array(pool, sr_ts);
    a->transfer_syntaxes[STOWRS_SOP_OTHER] = ts_array(pool, other_ts);
}

static int
in_list(const apr_array_header_t *arr, const char *uid)
{
    int i;

    /* A category without a list accepts nothing rather than everything. */
    if (arr == NULL) {
        return 0;
    }
    for (i = 0; i < arr->nelts; i++) {
        const char *s = APR_ARRAY_IDX(arr, i, const char *);

        if (s && strcmp(s, uid) == 0) {
            return 1;
        }
    }
    return 0;
}

static unsigned int
fail(const char **detail, unsigned int reason, const char *why)
{
    if (detail) {
        *detail = why;
    }
    return reason;
}

unsigned int
stowrs_outcome_check(stowrs_dicom_rc_e rc, const stowrs_dicom_info_t *info,
                     const stowrs_accept_t *accept, const char *url_study,
                     const char **detail)
{
    stowrs_sop_category_e cat;

    if (detail) {
        *detail = NULL;
    }

    switch (rc) {
    case STOWRS_DICOM_OK:
        break;
    case STOWRS_DICOM_NOT_PART10:
        return fail(detail, STOWRS_FR_NOT_PARSEABLE, "not a readable PS3.10 file");
    case STOWRS_DICOM_UNKNOWN_TS:
        /*
         * The dataset could not be read, so its UIDs are unknown: the
         * transfer syntax is the only thing to report.
         */
        return fail(detail, STOWRS_FR_TS_NOT_SUPPORTED,
                    "transfer syntax cannot be decoded");
    case STOWRS_DICOM_NOMEM:
        return fail(detail, STOWRS_FR_PROCESSING_FAILURE,
                    "out of memory while inspecting");
    case STOWRS_DICOM_INTERNAL:
    default:
        return fail(detail, STOWRS_FR_PROCESSING_FAILURE,
                    "internal error while inspecting");
    }

    if (info == NULL || accept == NULL) {
        return fail(detail, STOWRS_FR_PROCESSING_FAILURE, "nothing to check");
    }

    /*
     * A cut value (overlong) may look valid after cutting, so it is
     * rejected before the syntax checks.
     */
    if (info->overlong) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH, "UID longer than 64 characters");
    }
    if (!stowrs_uid_valid(info->sop_class_uid)) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "SOP Class UID missing or invalid");
    }
    if (!stowrs_uid_valid(info->sop_instance_uid)) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "SOP Instance UID missing or invalid");
    }
    if (!stowrs_uid_valid(info->study_instance_uid)) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "Study Instance UID missing or invalid");
    }
    if (!stowrs_uid_valid(info->series_instance_uid)) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "Series Instance UID missing or invalid");
    }
    /*
     * A PS3.10 file must carry both in its meta header. Checking for empty
     * first matters: two absent values would otherwise compare equal.
     */
    if (info->meta_sop_class_uid[0] == '\0'
        || info->meta_sop_instance_uid[0] == '\0') {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "meta header lacks SOP Class or Instance UID");
    }
    if (strcmp(info->meta_sop_class_uid, info->sop_class_uid) != 0) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "meta header and dataset differ in SOP Class UID");
    }
    if (strcmp(info->meta_sop_instance_uid, info->sop_instance_uid) != 0) {
        return fail(detail, STOWRS_FR_DATASET_MISMATCH,
                    "meta header and dataset differ in SOP Instance UID");
    }

    cat = stowrs_dicom_sop_category(info->sop_class_uid);
    if (accept->sop_classes == NULL) {
        if (cat == STOWRS_SOP_UNKNOWN) {
            return fail(detail, STOWRS_FR_SOP_CLASS_NOT_SUPPORTED,
                        "not a known storage SOP class");
        }
    }
    else {
        if (apr_hash_get(accept->sop_classes, info->sop_class_uid,
                         APR_HASH_KEY_STRING) == NULL) {
            return fail(detail, STOWRS_FR_SOP_CLASS_NOT_SUPPORTED,
                        "SOP class not accepted here");
        }
        /* Accepted by name or UID but unknown to dcmtk: no better list. */
        if (cat == STOWRS_SOP_UNKNOWN) {
            cat = STOWRS_SOP_OTHER;
        }
    }

    if (!in_list(accept->transfer_syntaxes[cat], info->transfer_syntax_uid)) {
        return fail(detail, STOWRS_FR_TS_NOT_SUPPORTED,
                    "transfer syntax not accepted for this SOP class");
    }

    if (url_study && strcmp(url_study, info->study_instance_uid) != 0) {
        return fail(detail, STOWRS_FR_STUDY_MISMATCH,
                    "Study Instance UID differs from the request URL");
    }

    return 0;
}

unsigned int
stowrs_outcome_io_reason(apr_status_t rv)
{
    /*
     * APR passes OS errors through unchanged on Unix, so EDQUOT, for which
     * APR has no test macro, can be compared directly.
     */
    if (APR_STATUS_IS_ENOSPC(rv)) {
        return STOWRS_FR_OUT_OF_RESOURCES;
    }
#ifdef EDQUOT
    if (rv == APR_FROM_OS_ERROR(EDQUOT)) {
        return STOWRS_FR_OUT_OF_RESOURCES;
    }
#endif
    return STOWRS_FR_PROCESSING_FAILURE;
}

int
stowrs_outcome_http_status(const apr_array_header_t *outcomes)
{
    int i;
    int stored = 0;
    int failed = 0;
    int resources = 0;

    if (outcomes == NULL || outcomes->nelts == 0) {
        return 409;
    }
    for (i = 0; i < outcomes->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t);

        /* Tolerated duplicates carry reason 0 and so count as stored. */
        if (o->failure_reason == 0) {
            stored++;
        }
        else {
            failed++;
            /* A77B shares the A7xx range but is a permanent conflict:
             * telling the client to retry later would loop forever. */
            if ((o->failure_reason & 0xFF00u) == 0xA700u
                && o->failure_reason != STOWRS_FR_UID_CONFLICT) {
                resources++;
            }
        }
    }
    if (failed == 0) {
        return 200;
    }
    if (stored > 0) {
        return 202;
    }
    /* Only when retrying later can help is the client told to do so. */
    if (resources == failed) {
        return 503;
    }
    return 409;
}

const char *
stowrs_outcome_reason_text(unsigned int reason)
{
    /*
     * These end up inside a quoted-string of a Warning header, so they
     * contain no quotes or backslashes.
     */
    switch (reason) {
    case 0:
        return "stored";
    case STOWRS_FR_PROCESSING_FAILURE:
        return "processing failure";
    case STOWRS_FR_DUPLICATE_REJECTED:
        return "duplicate SOP instance rejected";
    case STOWRS_FR_SOP_CLASS_NOT_SUPPORTED:
        return "SOP class not supported";
    case STOWRS_FR_OUT_OF_RESOURCES:
        return "out of resources";
    case STOWRS_FR_UID_CONFLICT:
        return "SOP instance already stored in another study or series";
    case STOWRS_FR_DATASET_MISMATCH:
        return "data set does not match SOP class";
    case STOWRS_FR_BULKDATA_MISSING:
        return "referenced bulk data missing";
    case STOWRS_FR_CANNOT_UNDERSTAND:
        return "cannot understand metadata";
    case STOWRS_FR_TS_NOT_SUPPORTED:
        return "transfer syntax not supported";
    case STOWRS_FR_STUDY_MISMATCH:
        return "study instance UID does not match the request";
    case STOWRS_FR_NOT_PARSEABLE:
        return "cannot parse instance";
    default:
        return "failure";
    }
}
