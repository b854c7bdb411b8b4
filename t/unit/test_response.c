/*
 * Unit tests of stowrs_outcome.c and stowrs_response.c: the FailureReason
 * checks of DESIGN.md §3.3, the status rule of §3.6, Accept negotiation,
 * and the response body parsed back with libxml2 and jansson.
 */

#include <errno.h>
#include <string.h>

#include <apr_errno.h>
#include <apr_general.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "stowrs_dicom.h"
#include "stowrs_outcome.h"
#include "stowrs_response.h"
#include "stowrs_uid.h"
#include "unit.h"

#define NS "http://dicom.nema.org/PS3.19/models/NativeDICOM"

#define CT_IMAGE   "1.2.840.10008.5.1.4.1.1.2"
#define BASIC_SR   "1.2.840.10008.5.1.4.1.1.88.11"
#define VIDEO_ENDO "1.2.840.10008.5.1.4.1.1.77.1.1.1"
#define NOT_STORAGE "1.2.3.4"

#define TS_IMPLICIT "1.2.840.10008.1.2"
#define TS_EXPLICIT "1.2.840.10008.1.2.1"
#define TS_DEFLATED "1.2.840.10008.1.2.1.99"
#define TS_JPEG_BASE "1.2.840.10008.1.2.4.50"
#define TS_MPEG2    "1.2.840.10008.1.2.4.100"
#define TS_HEVC     "1.2.840.10008.1.2.4.107"
#define TS_RLE      "1.2.840.10008.1.2.5"

#define STUDY  "1.2.826.0.1.3680043.2.1125.1.1"
#define SERIES "1.2.826.0.1.3680043.2.1125.1.2"
#define SOP    "1.2.826.0.1.3680043.2.1125.1.3"

/* --- outcome lists -------------------------------------------------------- */

static void
push(apr_array_header_t *arr, const char *study, const char *series,
     const char *sop, unsigned int reason, int duplicate)
{
    stowrs_outcome_t *o = apr_array_push(arr);

    memset(o, 0, sizeof(*o));
    o->sop_class_uid = CT_IMAGE;
    o->sop_instance_uid = sop;
    o->study_instance_uid = study;
    o->series_instance_uid = series;
    o->failure_reason = reason;
    o->duplicate = duplicate;
}

/* Outcomes from a list of reasons; 0 stored, terminated by ~0u. */
static apr_array_header_t *
outcomes_of(apr_pool_t *pool, const unsigned int *reasons, int dup_first)
{
    apr_array_header_t *arr = apr_array_make(pool, 4, sizeof(stowrs_outcome_t));
    int i;

    for (i = 0; reasons[i] != ~0u; i++) {
        push(arr, STUDY, SERIES, apr_psprintf(pool, "%s.%d", SOP, i + 1),
             reasons[i], dup_first && i == 0 && reasons[i] == 0);
    }
    return arr;
}

static void
test_http_status(apr_pool_t *pool)
{
    static const unsigned int all_stored[] = { 0, 0, 0, ~0u };
    static const unsigned int one_stored[] = { 0, ~0u };
    static const unsigned int mixed[] = { 0, 0xC122u, 0, ~0u };
    static const unsigned int mixed_a700[] = { 0xA700u, 0, ~0u };
    static const unsigned int all_a700[] = { 0xA700u, 0xA700u, ~0u };
    static const unsigned int one_a700[] = { 0xA700u, ~0u };
    static const unsigned int a700_c499[] = { 0xA700u, 0xC499u, ~0u };
    static const unsigned int c499_a700[] = { 0xC499u, 0xA700u, ~0u };
    static const unsigned int all_conflict[] = { 0x0122u, 0xC409u, 0xA900u, ~0u };
    static const unsigned int one_0110[] = { 0x0110u, ~0u };
    static const unsigned int empty[] = { ~0u };
    static const unsigned int one_a77b[] = { 0xA77Bu, ~0u };
    static const unsigned int a700_a77b[] = { 0xA700u, 0xA77Bu, ~0u };

    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, all_stored, 0)), 200);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, one_stored, 0)), 200);
    /* A tolerated duplicate is a success. */
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, all_stored, 1)), 200);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, one_stored, 1)), 200);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, mixed, 0)), 202);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, mixed, 1)), 202);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, mixed_a700, 0)), 202);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, all_a700, 0)), 503);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, one_a700, 0)), 503);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, a700_c499, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, c499_a700, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, all_conflict, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, one_0110, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, empty, 0)), 409);
    /* A77B is a conflict, not a shortage: no retry advice. */
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, one_a77b, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(outcomes_of(pool, a700_a77b, 0)), 409);
    CHECK_INT(stowrs_outcome_http_status(NULL), 409);
}

static void
test_io_reason(void)
{
    CHECK_INT(stowrs_outcome_io_reason(APR_FROM_OS_ERROR(ENOSPC)), 0xA700);
#ifdef EDQUOT
    CHECK_INT(stowrs_outcome_io_reason(APR_FROM_OS_ERROR(EDQUOT)), 0xA700);
#endif
    CHECK_INT(stowrs_outcome_io_reason(APR_FROM_OS_ERROR(EIO)), 0x0110);
    CHECK_INT(stowrs_outcome_io_reason(APR_FROM_OS_ERROR(EACCES)), 0x0110);
    CHECK_INT(stowrs_outcome_io_reason(APR_EGENERAL), 0x0110);
    CHECK_INT(stowrs_outcome_io_reason(APR_ENOMEM), 0x0110);
}

static void
test_reason_text(void)
{
    static const unsigned int codes[] = {
        STOWRS_FR_PROCESSING_FAILURE, STOWRS_FR_DUPLICATE_REJECTED,
        STOWRS_FR_SOP_CLASS_NOT_SUPPORTED, STOWRS_FR_OUT_OF_RESOURCES,
        STOWRS_FR_UID_CONFLICT, STOWRS_FR_DATASET_MISMATCH,
        STOWRS_FR_BULKDATA_MISSING, STOWRS_FR_CANNOT_UNDERSTAND,
        STOWRS_FR_TS_NOT_SUPPORTED, STOWRS_FR_STUDY_MISMATCH,
        STOWRS_FR_NOT_PARSEABLE
    };
    apr_size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *t = stowrs_outcome_reason_text(codes[i]);

        CHECK(t != NULL && *t != '\0');
        CHECK(t != NULL && strcmp(t, "failure") != 0);
        /* They go into a quoted-string of the Warning header. */
        CHECK(t != NULL && strpbrk(t, "\"\\\r\n") == NULL);
    }
    CHECK_STR(stowrs_outcome_reason_text(0xC122u), "transfer syntax not supported");
    CHECK_STR(stowrs_outcome_reason_text(0xA700u), "out of resources");
    CHECK_STR(stowrs_outcome_reason_text(0x1234u), "failure");
    CHECK_STR(stowrs_outcome_reason_text(0xFFFFFFFFu), "failure");
}

/* --- the §3.3 checks ------------------------------------------------------ */

static int
list_has(const apr_array_header_t *arr, const char *uid)
{
    int i;

    for (i = 0; arr && i < arr->nelts; i++) {
        if (strcmp(APR_ARRAY_IDX(arr, i, const char *), uid) == 0) {
            return 1;
        }
    }
    return 0;
}

static void
test_accept_defaults(apr_pool_t *pool)
{
    stowrs_accept_t a;
    int i;

    stowrs_accept_defaults(pool, &a);
    CHECK(a.sop_classes == NULL);
    CHECK(a.transfer_syntaxes[STOWRS_SOP_IMAGE] != NULL);
    CHECK(a.transfer_syntaxes[STOWRS_SOP_VIDEO] != NULL);
    CHECK(a.transfer_syntaxes[STOWRS_SOP_SR] != NULL);
    CHECK(a.transfer_syntaxes[STOWRS_SOP_OTHER] != NULL);
    CHECK_INT(a.transfer_syntaxes[STOWRS_SOP_IMAGE]->nelts, 14);
    CHECK_INT(a.transfer_syntaxes[STOWRS_SOP_VIDEO]->nelts, 17);
    CHECK_INT(a.transfer_syntaxes[STOWRS_SOP_SR]->nelts, 3);
    CHECK_INT(a.transfer_syntaxes[STOWRS_SOP_OTHER]->nelts, 2);

    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_IMPLICIT));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_EXPLICIT));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_JPEG_BASE));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], "1.2.840.10008.1.2.4.203"));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_RLE));
    CHECK(!list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_DEFLATED));
    CHECK(!list_has(a.transfer_syntaxes[STOWRS_SOP_IMAGE], TS_MPEG2));

    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], TS_JPEG_BASE));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], TS_MPEG2));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], "1.2.840.10008.1.2.4.100.1"));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], "1.2.840.10008.1.2.4.101"));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], "1.2.840.10008.1.2.4.106.1"));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], "1.2.840.10008.1.2.4.108"));
    CHECK(!list_has(a.transfer_syntaxes[STOWRS_SOP_VIDEO], TS_EXPLICIT));

    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_SR], TS_IMPLICIT));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_SR], TS_EXPLICIT));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_SR], TS_DEFLATED));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_OTHER], TS_IMPLICIT));
    CHECK(list_has(a.transfer_syntaxes[STOWRS_SOP_OTHER], TS_EXPLICIT));

    /* Every default is itself a valid UID (a typo would fail silently). */
    for (i = STOWRS_SOP_IMAGE; i <= STOWRS_SOP_OTHER; i++) {
        int j;

        for (j = 0; j < a.transfer_syntaxes[i]->nelts; j++) {
            CHECK(stowrs_uid_valid(APR_ARRAY_IDX(a.transfer_syntaxes[i], j,
                                                 const char *)));
        }
    }
}

/* A consistent, acceptable CT instance to spoil one field at a time. */
static void
good_info(stowrs_dicom_info_t *info, const char *sop_class, const char *ts)
{
    memset(info, 0, sizeof(*info));
    apr_cpystrn(info->meta_sop_class_uid, sop_class, sizeof(info->meta_sop_class_uid));
    apr_cpystrn(info->meta_sop_instance_uid, SOP, sizeof(info->meta_sop_instance_uid));
    apr_cpystrn(info->transfer_syntax_uid, ts, sizeof(info->transfer_syntax_uid));
    apr_cpystrn(info->sop_class_uid, sop_class, sizeof(info->sop_class_uid));
    apr_cpystrn(info->sop_instance_uid, SOP, sizeof(info->sop_instance_uid));
    apr_cpystrn(info->study_instance_uid, STUDY, sizeof(info->study_instance_uid));
    apr_cpystrn(info->series_instance_uid, SERIES, sizeof(info->series_instance_uid));
    info->meta_readable = 1;
}

#define SET(field, value) apr_cpystrn((field), (value), sizeof(field))

/* Run the check and verify the detail contract along the way. */
static unsigned int
check(stowrs_dicom_rc_e rc, const stowrs_dicom_info_t *info,
      const stowrs_accept_t *a, const char *url_study)
{
    const char *detail = "unset";
    unsigned int r = stowrs_outcome_check(rc, info, a, url_study, &detail);

    if (r == 0) {
        CHECK(detail == NULL);
    }
    else {
        CHECK(detail != NULL && *detail != '\0');
        /* A reason, not data from the file. */
        CHECK(detail != NULL && strstr(detail, "1.2.") == NULL);
    }
    return r;
}

static void
test_outcome_check(apr_pool_t *pool)
{
    stowrs_accept_t a;
    stowrs_accept_t only_ct;
    stowrs_accept_t odd;
    stowrs_dicom_info_t info;
    stowrs_dicom_info_t empty;

    stowrs_accept_defaults(pool, &a);
    memset(&empty, 0, sizeof(empty));

    /* Stored. */
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, STUDY), 0);
    good_info(&info, CT_IMAGE, TS_JPEG_BASE);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0);
    good_info(&info, BASIC_SR, TS_DEFLATED);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0);
    good_info(&info, VIDEO_ENDO, TS_MPEG2);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0);
    good_info(&info, VIDEO_ENDO, TS_HEVC);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0);
    /* The detail pointer is optional. */
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    CHECK_INT(stowrs_outcome_check(STOWRS_DICOM_OK, &info, &a, NULL, NULL), 0);

    /* C499 and 0110 straight from the inspection result. */
    CHECK_INT(check(STOWRS_DICOM_NOT_PART10, &empty, &a, NULL), 0xC499);
    CHECK_INT(check(STOWRS_DICOM_NOT_PART10, &info, &a, NULL), 0xC499);
    CHECK_INT(check(STOWRS_DICOM_NOMEM, &info, &a, NULL), 0x0110);
    CHECK_INT(check(STOWRS_DICOM_INTERNAL, &info, &a, NULL), 0x0110);
    /* Unknown TS: the dataset's UIDs could not be read, C122 all the same. */
    CHECK_INT(check(STOWRS_DICOM_UNKNOWN_TS, &empty, &a, NULL), 0xC122);

    /* A900: each UID missing, invalid, cut or inconsistent. */
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.sop_class_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.sop_instance_uid, "");
    SET(info.meta_sop_instance_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.sop_instance_uid, "1..2");
    SET(info.meta_sop_instance_uid, "1..2");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.study_instance_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.study_instance_uid, "../../etc");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.series_instance_uid, "1.02.3");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    info.overlong = 1;
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.meta_sop_class_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.meta_sop_instance_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.meta_sop_instance_uid, SOP ".9");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.meta_sop_class_uid, BASIC_SR);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    /* No meta header at all: both sides empty must not compare equal. */
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    SET(info.meta_sop_class_uid, "");
    SET(info.meta_sop_instance_uid, "");
    info.meta_readable = 0;
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xA900);
    /* A900 comes before the class and the study checks. */
    good_info(&info, NOT_STORAGE, TS_EXPLICIT);
    SET(info.series_instance_uid, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, "1.2.3"), 0xA900);

    /* 0122: not a storage class, or not in the location's list. */
    good_info(&info, NOT_STORAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0x0122);
    /* ... and before the transfer syntax and study checks. */
    good_info(&info, NOT_STORAGE, "1.2.3.4.5");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, "1.2.3"), 0x0122);

    only_ct = a;
    only_ct.sop_classes = apr_hash_make(pool);
    apr_hash_set(only_ct.sop_classes, CT_IMAGE, APR_HASH_KEY_STRING, "");
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &only_ct, NULL), 0);
    good_info(&info, BASIC_SR, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &only_ct, NULL), 0x0122);
    good_info(&info, VIDEO_ENDO, TS_MPEG2);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &only_ct, NULL), 0x0122);

    /* A class accepted explicitly but unknown to dcmtk uses the other list. */
    odd = a;
    odd.sop_classes = apr_hash_make(pool);
    apr_hash_set(odd.sop_classes, NOT_STORAGE, APR_HASH_KEY_STRING, "");
    good_info(&info, NOT_STORAGE, TS_IMPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &odd, NULL), 0);
    good_info(&info, NOT_STORAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &odd, NULL), 0);
    good_info(&info, NOT_STORAGE, TS_JPEG_BASE);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &odd, NULL), 0xC122);

    /* C122: per category. */
    good_info(&info, CT_IMAGE, TS_MPEG2);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xC122);
    good_info(&info, CT_IMAGE, TS_DEFLATED);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xC122);
    good_info(&info, CT_IMAGE, "");
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xC122);
    good_info(&info, VIDEO_ENDO, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xC122);
    good_info(&info, BASIC_SR, TS_JPEG_BASE);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, NULL), 0xC122);
    /* ... and before the study check. */
    good_info(&info, CT_IMAGE, TS_MPEG2);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, "1.2.3"), 0xC122);
    /* A category left without a list accepts nothing. */
    odd = a;
    odd.transfer_syntaxes[STOWRS_SOP_IMAGE] = NULL;
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &odd, NULL), 0xC122);

    /* C409. */
    good_info(&info, CT_IMAGE, TS_EXPLICIT);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, STUDY ".1"), 0xC409);
    CHECK_INT(check(STOWRS_DICOM_OK, &info, &a, "1.2.3"), 0xC409);
}

/* --- Accept negotiation --------------------------------------------------- */

#define NA (-1)    /* APR_ENOTIMPL expected */

typedef struct {
    const char *accept;
    int want;      /* STOWRS_RESP_XML, STOWRS_RESP_JSON or NA */
} accept_case_t;

static const accept_case_t accept_cases[] = {
    { NULL, STOWRS_RESP_XML },
    { "", STOWRS_RESP_XML },
    { " , ,", STOWRS_RESP_XML },
    /* dcm4che stowrs, dcm4chee-arc, dicomweb-client */
    { "application/dicom+xml", STOWRS_RESP_XML },
    { "application/dicom+json", STOWRS_RESP_JSON },
    { "application/dicom+json, multipart/related; type=\"application/dicom\"",
      STOWRS_RESP_JSON },
    { "application/json", STOWRS_RESP_JSON },
    { "application/xml", STOWRS_RESP_XML },
    { "text/xml", STOWRS_RESP_XML },
    { "APPLICATION/DICOM+JSON", STOWRS_RESP_JSON },
    { "  application/dicom+json  ", STOWRS_RESP_JSON },
    /* wildcards */
    { "*/*", STOWRS_RESP_XML },
    { "application/*", STOWRS_RESP_XML },
    { "text/*", STOWRS_RESP_XML },
    { "*/*, application/dicom+json", STOWRS_RESP_JSON },
    { "application/dicom+json, */*", STOWRS_RESP_JSON },
    { "*/*;q=0.9, application/dicom+json;q=0.5", STOWRS_RESP_XML },
    { "*/*;q=0.1, application/dicom+json;q=0.5", STOWRS_RESP_JSON },
    { "application/*;q=0.5, application/dicom+json;q=0.4", STOWRS_RESP_XML },
    { "text/*, application/dicom+json;q=0.9", STOWRS_RESP_XML },
    /* q-values */
    { "application/dicom+xml;q=0.5, application/dicom+json", STOWRS_RESP_JSON },
    { "application/dicom+json;q=0.5, application/dicom+xml;q=0.8", STOWRS_RESP_XML },
    { "application/dicom+json; q=0.8, application/dicom+xml; q=0.5", STOWRS_RESP_JSON },
    { "application/dicom+json;q=1.000, application/dicom+xml;q=0.999", STOWRS_RESP_JSON },
    { "application/dicom+json;q=0.001", STOWRS_RESP_JSON },
    { "application/dicom+json;Q=0.5", STOWRS_RESP_JSON },
    /* tie: the type named first; XML when only wildcards */
    { "application/dicom+json, application/dicom+xml", STOWRS_RESP_JSON },
    { "application/dicom+xml, application/dicom+json", STOWRS_RESP_XML },
    { "application/dicom+json;q=0.5, application/dicom+xml;q=0.5", STOWRS_RESP_JSON },
    { "application/json, application/xml", STOWRS_RESP_JSON },
    /* q=0 excludes, even when a wildcard would match */
    { "application/dicom+json;q=0", NA },
    { "application/dicom+json;q=0.000", NA },
    { "*/*;q=0", NA },
    { "application/dicom+json;q=0, */*", STOWRS_RESP_XML },
    { "application/dicom+xml;q=0, */*", STOWRS_RESP_JSON },
    { "application/dicom+xml;q=0, application/dicom+json;q=0, */*", NA },
    { "application/dicom+xml;q=0, application/*;q=0.5", STOWRS_RESP_JSON },
    /* not acceptable */
    { "text/html", NA },
    { "text/html, application/xhtml+xml", NA },
    { "application/dicom", NA },
    { "multipart/related; type=\"application/dicom\"", NA },
    { "image/*", NA },
    /* multipart/related wrapping our types */
    { "multipart/related; type=\"application/dicom+xml\"", STOWRS_RESP_XML },
    { "multipart/related; type=application/dicom+json", STOWRS_RESP_JSON },
    /* malformed elements are ignored */
    { "garbage", NA },
    { "garbage, application/dicom+json", STOWRS_RESP_JSON },
    { "application/dicom+xml;q=1.5", NA },
    { "application/dicom+xml;q=abc, application/dicom+json", STOWRS_RESP_JSON },
    { "application/dicom+xml;q=0.0001, application/dicom+json;q=0.5", STOWRS_RESP_JSON },
    { "application/dicom+xml;q=-1, application/dicom+json;q=0.1", STOWRS_RESP_JSON },
    /* commas and escaped quotes inside quoted strings do not split */
    { "text/plain; x=\"a\\\", application/dicom+json, b\", "
      "application/dicom+xml;q=0.5", STOWRS_RESP_XML },
    { "text/plain; x=\"a,b\", application/dicom+json", STOWRS_RESP_JSON },
};

static void
test_negotiate(apr_pool_t *pool)
{
    apr_size_t i;

    for (i = 0; i < sizeof(accept_cases) / sizeof(accept_cases[0]); i++) {
        stowrs_resp_format_e fmt = (stowrs_resp_format_e)99;
        apr_status_t rv = stowrs_resp_negotiate(pool, accept_cases[i].accept, &fmt);
        int got = rv == APR_ENOTIMPL ? NA : rv != APR_SUCCESS ? -2 : (int)fmt;

        if (got != accept_cases[i].want) {
            fprintf(stderr, "Accept: %s: got %d, want %d\n",
                    accept_cases[i].accept ? accept_cases[i].accept : "(none)",
                    got, accept_cases[i].want);
        }
        CHECK_INT(got, accept_cases[i].want);
    }
    CHECK_STR(stowrs_resp_content_type(STOWRS_RESP_XML), "application/dicom+xml");
    CHECK_STR(stowrs_resp_content_type(STOWRS_RESP_JSON), "application/dicom+json");
}

/* --- XML body ------------------------------------------------------------- */

/* strcmp for values that may be missing from a broken body. */
static int
same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static int
is_elem(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE
           && xmlStrcmp(n->name, (const xmlChar *)name) == 0
           && n->ns && xmlStrcmp(n->ns->href, (const xmlChar *)NS) == 0;
}

static const char *
prop(apr_pool_t *pool, xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
    const char *s;

    if (v == NULL) {
        return NULL;
    }
    s = apr_pstrdup(pool, (const char *)v);
    xmlFree(v);
    return s;
}

/* Comma-separated tags of the DicomAttribute children of @c n, in order. */
static const char *
xml_tags(apr_pool_t *pool, xmlNodePtr n)
{
    const char *s = "";
    xmlNodePtr c;

    for (c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            continue;
        }
        if (!is_elem(c, "DicomAttribute")) {
            return "(unexpected element)";
        }
        s = apr_pstrcat(pool, s, *s ? "," : "", prop(pool, c, "tag"), NULL);
    }
    return s;
}

static xmlNodePtr
xml_attr_node(xmlNodePtr n, const char *tag)
{
    xmlNodePtr c;

    for (c = n ? n->children : NULL; c; c = c->next) {
        if (is_elem(c, "DicomAttribute")) {
            xmlChar *t = xmlGetProp(c, (const xmlChar *)"tag");
            int match = t && strcmp((const char *)t, tag) == 0;

            xmlFree(t);
            if (match) {
                return c;
            }
        }
    }
    return NULL;
}

/*
 * The single Value of an attribute, "" for an attribute without Value,
 * NULL if the attribute is absent or malformed.
 */
static const char *
xml_value(apr_pool_t *pool, xmlNodePtr n, const char *tag, const char *vr)
{
    xmlNodePtr a = xml_attr_node(n, tag);
    xmlNodePtr c;
    const char *v = "";
    int values = 0;

    if (a == NULL) {
        return NULL;
    }
    if (vr && !same(prop(pool, a, "vr"), vr)) {
        return NULL;
    }
    if (prop(pool, a, "keyword") == NULL) {
        return NULL;
    }
    for (c = a->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            continue;
        }
        if (!is_elem(c, "Value")) {
            return NULL;
        }
        if (++values > 1 || !same(prop(pool, c, "number"), "1")) {
            return NULL;
        }
        {
            xmlChar *t = xmlNodeGetContent(c);

            v = apr_pstrdup(pool, (const char *)t);
            xmlFree(t);
        }
    }
    return v;
}

/* The Items of a sequence, checking they are numbered 1..n. */
static int
xml_items(apr_pool_t *pool, xmlNodePtr seq, xmlNodePtr *items, int max)
{
    xmlNodePtr c;
    int n = 0;

    for (c = seq->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            continue;
        }
        if (!is_elem(c, "Item") || n >= max) {
            return -1;
        }
        if (!same(prop(pool, c, "number"), apr_itoa(pool, n + 1))) {
            return -1;
        }
        items[n++] = c;
    }
    return n;
}

static xmlDocPtr
parse_xml(const char *body, apr_size_t len)
{
    return xmlReadMemory(body, (int)len, "response.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static const char *base_plain = "http://example.org/dcm4chee-arc/aets/DCM4CHEE/rs";
static const char *base_odd = "http://x/a&b<c\"d'e>f";

/* Stored (duplicate), failed C122, stored, failed A900: one study. */
static apr_array_header_t *
mixed_outcomes(apr_pool_t *pool)
{
    apr_array_header_t *arr = apr_array_make(pool, 4, sizeof(stowrs_outcome_t));
    stowrs_outcome_t *o;

    push(arr, STUDY, SERIES, SOP ".1", 0, 1);
    push(arr, NULL, NULL, SOP ".2", 0xC122u, 0);
    push(arr, STUDY, SERIES ".2", SOP ".3", 0, 0);
    push(arr, NULL, NULL, SOP ".4", 0xA900u, 0);
    o = &APR_ARRAY_IDX(arr, 1, stowrs_outcome_t);
    o->sop_class_uid = VIDEO_ENDO;
    o->detail = "transfer syntax not accepted";
    o = &APR_ARRAY_IDX(arr, 3, stowrs_outcome_t);
    o->sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
    return arr;
}

static void
test_build_xml(apr_pool_t *pool)
{
    const char *body;
    apr_size_t len;
    xmlDocPtr doc;
    xmlNodePtr root;
    xmlNodePtr seq;
    xmlNodePtr items[8];
    apr_array_header_t *arr;
    const char *decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

    /* Mixed: one study, two stored, two failed. */
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, mixed_outcomes(pool),
                                base_plain, &body, &len), APR_SUCCESS);
    CHECK(body != NULL);
    CHECK_INT(body ? strlen(body) : 0, len);
    CHECK(strncmp(body, decl, strlen(decl)) == 0);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        CHECK(is_elem(root, "NativeDicomModel"));
        CHECK_STR(xml_tags(pool, root), "00081190,00081198,00081199");
        CHECK_STR(xml_value(pool, root, "00081190", "UR"),
                  apr_pstrcat(pool, base_plain, "/studies/", STUDY, NULL));
        CHECK_STR(prop(pool, xml_attr_node(root, "00081190"), "keyword"), "RetrieveURL");
        CHECK_STR(prop(pool, xml_attr_node(root, "00081198"), "keyword"),
                  "FailedSOPSequence");
        CHECK_STR(prop(pool, xml_attr_node(root, "00081198"), "vr"), "SQ");
        CHECK_STR(prop(pool, xml_attr_node(root, "00081199"), "keyword"),
                  "ReferencedSOPSequence");

        seq = xml_attr_node(root, "00081198");
        CHECK(seq != NULL);
        if (seq) {
            CHECK_INT(xml_items(pool, seq, items, 8), 2);
            CHECK_STR(xml_tags(pool, items[0]), "00081150,00081155,00081197");
            CHECK_STR(xml_value(pool, items[0], "00081150", "UI"), VIDEO_ENDO);
            CHECK_STR(xml_value(pool, items[0], "00081155", "UI"), SOP ".2");
            CHECK_STR(xml_value(pool, items[0], "00081197", "US"), "49442");
            CHECK_STR(prop(pool, xml_attr_node(items[0], "00081197"), "keyword"),
                      "FailureReason");
            CHECK_STR(xml_value(pool, items[1], "00081150", "UI"),
                      STOWRS_UNKNOWN_SOP_CLASS_UID);
            CHECK_STR(xml_value(pool, items[1], "00081197", "US"), "43264");
        }
        seq = xml_attr_node(root, "00081199");
        CHECK(seq != NULL);
        if (seq) {
            CHECK_INT(xml_items(pool, seq, items, 8), 2);
            CHECK_STR(xml_tags(pool, items[0]), "00081150,00081155,00081190");
            CHECK_STR(xml_value(pool, items[0], "00081150", "UI"), CT_IMAGE);
            CHECK_STR(xml_value(pool, items[0], "00081155", "UI"), SOP ".1");
            CHECK_STR(xml_value(pool, items[0], "00081190", "UR"),
                      apr_pstrcat(pool, base_plain, "/studies/", STUDY, "/series/",
                                  SERIES, "/instances/", SOP ".1", NULL));
            CHECK_STR(prop(pool, xml_attr_node(items[0], "00081155"), "keyword"),
                      "ReferencedSOPInstanceUID");
            CHECK_STR(xml_value(pool, items[1], "00081190", "UR"),
                      apr_pstrcat(pool, base_plain, "/studies/", STUDY, "/series/",
                                  SERIES ".2", "/instances/", SOP ".3", NULL));
        }
        xmlFreeDoc(doc);
    }

    /* Two studies stored: RetrieveURL present without a Value. */
    arr = apr_array_make(pool, 2, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0, 0);
    push(arr, STUDY ".9", SERIES, SOP ".2", 0, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, arr, base_plain, &body, &len),
              APR_SUCCESS);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        CHECK_STR(xml_tags(pool, root), "00081190,00081199");
        CHECK_STR(xml_value(pool, root, "00081190", "UR"), "");
        xmlFreeDoc(doc);
    }

    /* Nothing stored: RetrieveURL empty, no ReferencedSOPSequence. */
    arr = apr_array_make(pool, 2, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0xA700u, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, arr, base_plain, &body, &len),
              APR_SUCCESS);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        CHECK_STR(xml_tags(pool, root), "00081190,00081198");
        CHECK_STR(xml_value(pool, root, "00081190", "UR"), "");
        xmlFreeDoc(doc);
    }

    /* Empty list: only the empty RetrieveURL. */
    arr = apr_array_make(pool, 1, sizeof(stowrs_outcome_t));
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, arr, base_plain, &body, &len),
              APR_SUCCESS);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        CHECK(is_elem(root, "NativeDicomModel"));
        CHECK_STR(xml_tags(pool, root), "00081190");
        CHECK_STR(xml_value(pool, root, "00081190", "UR"), "");
        xmlFreeDoc(doc);
    }

    /* Markup characters in the base stay text. */
    arr = apr_array_make(pool, 1, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, arr, base_odd, &body, &len),
              APR_SUCCESS);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        CHECK_STR(xml_tags(pool, root), "00081190,00081199");
        CHECK_STR(xml_value(pool, root, "00081190", "UR"),
                  apr_pstrcat(pool, base_odd, "/studies/", STUDY, NULL));
        seq = xml_attr_node(root, "00081199");
        if (seq && xml_items(pool, seq, items, 8) == 1) {
            CHECK_STR(xml_value(pool, items[0], "00081190", "UR"),
                      apr_pstrcat(pool, base_odd, "/studies/", STUDY, "/series/",
                                  SERIES, "/instances/", SOP ".1", NULL));
        }
        else {
            CHECK(!"one ReferencedSOPSequence item");
        }
        xmlFreeDoc(doc);
    }

    /* Bytes XML cannot carry (a hostile meta header) do not break it. */
    arr = apr_array_make(pool, 1, sizeof(stowrs_outcome_t));
    push(arr, NULL, NULL, "1.2\x01\xff<&3", 0xC499u, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_XML, arr, base_plain, &body, &len),
              APR_SUCCESS);
    doc = parse_xml(body, len);
    CHECK(doc != NULL);
    if (doc) {
        root = xmlDocGetRootElement(doc);
        seq = xml_attr_node(root, "00081198");
        if (seq && xml_items(pool, seq, items, 8) == 1) {
            CHECK_STR(xml_value(pool, items[0], "00081155", "UI"), "1.2?" "?<&3");
        }
        else {
            CHECK(!"one FailedSOPSequence item");
        }
        xmlFreeDoc(doc);
    }
}

/* --- JSON body ------------------------------------------------------------ */

/* The first Value of attribute @c tag of @c obj, checking its VR. */
static json_t *
json_value(json_t *obj, const char *tag, const char *vr)
{
    json_t *a = json_object_get(obj, tag);
    json_t *v;

    if (!json_is_object(a) || !same(json_string_value(json_object_get(a, "vr")), vr)) {
        return NULL;
    }
    v = json_object_get(a, "Value");
    if (v == NULL) {
        return json_null();    /* borrowed singleton: "no Value" */
    }
    if (!json_is_array(v) || json_array_size(v) != 1) {
        return NULL;
    }
    return json_array_get(v, 0);
}

static const char *
json_str(json_t *obj, const char *tag, const char *vr)
{
    json_t *v = json_value(obj, tag, vr);

    if (json_is_null(v)) {
        return "";
    }
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *
json_seq(json_t *obj, const char *tag)
{
    json_t *a = json_object_get(obj, tag);

    if (!json_is_object(a) || !same(json_string_value(json_object_get(a, "vr")), "SQ")) {
        return NULL;
    }
    return json_object_get(a, "Value");
}

static json_t *
load_json(const char *body, apr_size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);

    if (j == NULL) {
        fprintf(stderr, "JSON: %s at %d: %s\n", err.text, err.position, body);
    }
    return j;
}

static void
test_build_json(apr_pool_t *pool)
{
    const char *body;
    apr_size_t len;
    json_t *root;
    apr_array_header_t *arr;

    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_JSON, mixed_outcomes(pool),
                                base_plain, &body, &len), APR_SUCCESS);
    CHECK(body != NULL);
    CHECK_INT(body ? strlen(body) : 0, len);
    root = load_json(body, len);
    CHECK(json_is_object(root));
    if (root) {
        json_t *seq;
        json_t *item;

        CHECK_INT(json_object_size(root), 3);
        CHECK_STR(json_str(root, "00081190", "UR"),
                  apr_pstrcat(pool, base_plain, "/studies/", STUDY, NULL));
        /* Tags in ascending order in the text. */
        CHECK(strstr(body, "\"00081190\"") < strstr(body, "\"00081198\""));
        CHECK(strstr(body, "\"00081198\"") < strstr(body, "\"00081199\""));

        seq = json_seq(root, "00081198");
        CHECK(json_is_array(seq) && json_array_size(seq) == 2);
        item = json_array_get(seq, 0);
        CHECK_INT(json_object_size(item), 3);
        CHECK_STR(json_str(item, "00081150", "UI"), VIDEO_ENDO);
        CHECK_STR(json_str(item, "00081155", "UI"), SOP ".2");
        CHECK(json_is_integer(json_value(item, "00081197", "US")));
        CHECK_INT(json_integer_value(json_value(item, "00081197", "US")), 0xC122);
        item = json_array_get(seq, 1);
        CHECK_STR(json_str(item, "00081150", "UI"), STOWRS_UNKNOWN_SOP_CLASS_UID);
        CHECK_INT(json_integer_value(json_value(item, "00081197", "US")), 0xA900);

        seq = json_seq(root, "00081199");
        CHECK(json_is_array(seq) && json_array_size(seq) == 2);
        item = json_array_get(seq, 0);
        CHECK_INT(json_object_size(item), 3);
        CHECK_STR(json_str(item, "00081150", "UI"), CT_IMAGE);
        CHECK_STR(json_str(item, "00081155", "UI"), SOP ".1");
        CHECK_STR(json_str(item, "00081190", "UR"),
                  apr_pstrcat(pool, base_plain, "/studies/", STUDY, "/series/",
                              SERIES, "/instances/", SOP ".1", NULL));
        item = json_array_get(seq, 1);
        CHECK_STR(json_str(item, "00081155", "UI"), SOP ".3");
        json_decref(root);
    }

    /* Two studies: RetrieveURL without a "Value" key; no failed sequence. */
    arr = apr_array_make(pool, 2, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0, 0);
    push(arr, STUDY ".9", SERIES, SOP ".2", 0, 1);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_JSON, arr, base_plain, &body, &len),
              APR_SUCCESS);
    root = load_json(body, len);
    CHECK(json_is_object(root));
    if (root) {
        json_t *ru = json_object_get(root, "00081190");

        CHECK_INT(json_object_size(root), 2);
        CHECK(json_is_object(ru) && json_object_get(ru, "Value") == NULL);
        CHECK_STR(json_str(root, "00081190", "UR"), "");
        CHECK(json_object_get(root, "00081198") == NULL);
        CHECK(json_is_array(json_seq(root, "00081199")));
        json_decref(root);
    }

    /* Nothing stored. */
    arr = apr_array_make(pool, 2, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0xA700u, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_JSON, arr, base_plain, &body, &len),
              APR_SUCCESS);
    root = load_json(body, len);
    CHECK(json_is_object(root));
    if (root) {
        CHECK_INT(json_object_size(root), 2);
        CHECK_STR(json_str(root, "00081190", "UR"), "");
        CHECK(json_object_get(root, "00081199") == NULL);
        CHECK_INT(json_integer_value(json_value(json_array_get(
                  json_seq(root, "00081198"), 0), "00081197", "US")), 0xA700);
        json_decref(root);
    }

    /* Empty list. */
    arr = apr_array_make(pool, 1, sizeof(stowrs_outcome_t));
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_JSON, arr, base_plain, &body, &len),
              APR_SUCCESS);
    CHECK_STR(body, "{\"00081190\":{\"vr\":\"UR\"}}");

    /* Escaping of the base and of unprintable bytes. */
    arr = apr_array_make(pool, 2, sizeof(stowrs_outcome_t));
    push(arr, STUDY, SERIES, SOP ".1", 0, 0);
    push(arr, NULL, NULL, "1.2\x01\xff\"\\3", 0xC499u, 0);
    CHECK_INT(stowrs_resp_build(pool, STOWRS_RESP_JSON, arr, base_odd, &body, &len),
              APR_SUCCESS);
    root = load_json(body, len);
    CHECK(json_is_object(root));
    if (root) {
        CHECK_STR(json_str(root, "00081190", "UR"),
                  apr_pstrcat(pool, base_odd, "/studies/", STUDY, NULL));
        CHECK_STR(json_str(json_array_get(json_seq(root, "00081198"), 0),
                           "00081155", "UI"), "1.2?" "?\"\\3");
        json_decref(root);
    }
}

int
main(void)
{
    apr_pool_t *pool;

    apr_initialize();
    xmlInitParser();
    apr_pool_create(&pool, NULL);

    test_http_status(pool);
    test_io_reason();
    test_reason_text();
    test_accept_defaults(pool);
    test_outcome_check(pool);
    test_negotiate(pool);
    test_build_xml(pool);
    test_build_json(pool);

    /* Runs the libxml2/jansson cleanups: LeakSanitizer sees any leak. */
    apr_pool_destroy(pool);
    apr_terminate();
    return unit_summary();
}
