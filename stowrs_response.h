/**
 * @file stowrs_response.h
 * @brief The Store Instances Response Module (PS3.18 Annex I) as
 *        application/dicom+xml (libxml2) or application/dicom+json (jansson),
 *        and the Accept negotiation that picks one.
 */
#ifndef STOWRS_RESPONSE_H
#define STOWRS_RESPONSE_H

#include <apr_pools.h>
#include <apr_tables.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STOWRS_RESP_XML = 0,
    STOWRS_RESP_JSON
} stowrs_resp_format_e;

/**
 * Pick the response format from an Accept header: the acceptable type with
 * the highest q wins; XML on a tie or when there is no Accept header.
 * application/dicom+xml, application/xml, text/xml, application/dicom+json,
 * application/json, application/ and * wildcards are understood; q=0 excludes.
 * @param pool    scratch
 * @param accept  the header value, or NULL
 * @param fmt     the choice
 * @return APR_SUCCESS, or APR_ENOTIMPL when nothing acceptable is listed (406)
 */
apr_status_t stowrs_resp_negotiate(apr_pool_t *pool, const char *accept,
                                   stowrs_resp_format_e *fmt);

/** @return "application/dicom+xml" or "application/dicom+json" */
const char *stowrs_resp_content_type(stowrs_resp_format_e fmt);

/**
 * Build the response body.
 * @param pool          owns the result; libxml2/jansson objects get cleanups
 * @param fmt           XML or JSON
 * @param outcomes      array of stowrs_outcome_t (stowrs_outcome.h)
 * @param retrieve_base WADO-RS base without trailing slash, e.g.
 *                      "http://host/dcm4chee-arc/aets/DCM4CHEE/rs"
 * @param body          the bytes
 * @param len           their length
 * @return APR_SUCCESS or APR_ENOMEM
 */
apr_status_t stowrs_resp_build(apr_pool_t *pool, stowrs_resp_format_e fmt,
                               const apr_array_header_t *outcomes,
                               const char *retrieve_base,
                               const char **body, apr_size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_RESPONSE_H */
