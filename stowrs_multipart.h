/**
 * @file stowrs_multipart.h
 * @brief Streaming multipart/related parser and media-type parameter parsing.
 *
 * No httpd types: the parser is fed arbitrary slices of the request body and
 * reports parts through callbacks, so unit tests and fuzzers drive it directly.
 * It never holds a pointer into a caller's buffer across calls and never
 * buffers part data beyond what it is handed.
 */
#ifndef STOWRS_MULTIPART_H
#define STOWRS_MULTIPART_H

#include <apr_pools.h>
#include <apr_tables.h>

#ifdef __cplusplus
extern "C" {
#endif

/** RFC 2046 limits a boundary to 70 characters. */
#define STOWRS_MP_MAX_BOUNDARY 70

/** Default bound on one part's header block, in bytes. */
#define STOWRS_MP_DEFAULT_MAX_HEADER_BYTES 16384

/** Default bound on the number of parts in one body. */
#define STOWRS_MP_DEFAULT_MAX_PARTS 10000

/** Why parsing stopped; sticky once set. */
typedef enum {
    STOWRS_MP_OK = 0,
    STOWRS_MP_ERR_LF_ONLY,          /**< a line ended in LF without CR */
    STOWRS_MP_ERR_BAD_DELIMITER,    /**< delimiter followed by neither CRLF nor "--" */
    STOWRS_MP_ERR_HEADER_TOO_LONG,  /**< part header block over the limit */
    STOWRS_MP_ERR_BAD_HEADER,       /**< header line without a colon or with an empty name */
    STOWRS_MP_ERR_TOO_MANY_PARTS,   /**< more parts than the limit */
    STOWRS_MP_ERR_NO_DELIMITER,     /**< the body never contained the boundary */
    STOWRS_MP_ERR_NO_PARTS,         /**< close delimiter before any part */
    STOWRS_MP_ERR_TRUNCATED,        /**< body ended before the close delimiter */
    STOWRS_MP_ERR_CALLBACK          /**< a callback returned an error */
} stowrs_mp_error_e;

/**
 * Events. A callback returning anything but APR_SUCCESS stops the parser
 * with STOWRS_MP_ERR_CALLBACK; that status is kept for the caller.
 * @c headers lives in a pool the parser clears when the next part begins;
 * names are kept as sent, lookups with apr_table_get are case-insensitive.
 */
typedef struct {
    apr_status_t (*on_part_begin)(void *baton, apr_table_t *headers);
    apr_status_t (*on_part_data)(void *baton, const char *data, apr_size_t len);
    apr_status_t (*on_part_end)(void *baton);
} stowrs_mp_callbacks_t;

/** Irregularities tolerated while parsing, counted so tests can assert on them. */
typedef struct {
    apr_off_t preamble_bytes;       /**< bytes before the first delimiter */
    apr_off_t epilogue_bytes;       /**< bytes after the close delimiter */
    unsigned int padding_bytes;     /**< blanks between a boundary and its CRLF */
    unsigned int missing_final_crlf;/**< 1 if the close delimiter ended the body */
    unsigned int folded_headers;    /**< obsolete folded header lines joined */
    unsigned int boundary_like_data;/**< CRLF--boundary followed by other bytes, kept as data */
} stowrs_mp_stats_t;

typedef struct stowrs_mp_parser_t stowrs_mp_parser_t;

/**
 * Create a parser.
 * @param pool      owns the parser; a subpool for header tables is made from it
 * @param boundary  the boundary parameter (1-70 characters, checked by
 *                  stowrs_mp_boundary_valid)
 * @param cb        callbacks, copied
 * @param baton     passed to every callback
 * @param max_header_bytes limit of one part's header block (0 = default)
 * @param max_parts limit of parts (0 = default)
 * @param out       the parser
 * @return APR_SUCCESS, or APR_EINVAL for an unusable boundary
 */
apr_status_t stowrs_mp_create(apr_pool_t *pool, const char *boundary,
                              const stowrs_mp_callbacks_t *cb, void *baton,
                              apr_size_t max_header_bytes, unsigned int max_parts,
                              stowrs_mp_parser_t **out);

/**
 * Feed the next slice of the body; any length, including 0.
 * @return APR_SUCCESS when all of @c data was consumed, APR_EGENERAL once an
 *         error is set (see stowrs_mp_error), or the callback's own status
 */
apr_status_t stowrs_mp_feed(stowrs_mp_parser_t *p, const char *data, apr_size_t len);

/**
 * Tell the parser the body has ended.
 * @return APR_SUCCESS if the close delimiter was seen, else APR_EGENERAL with
 *         the error set (STOWRS_MP_ERR_TRUNCATED, _NO_DELIMITER, ...)
 */
apr_status_t stowrs_mp_finish(stowrs_mp_parser_t *p);

/** @return the sticky error, STOWRS_MP_OK while none */
stowrs_mp_error_e stowrs_mp_error(const stowrs_mp_parser_t *p);

/** @return a short English explanation of @c e, never NULL */
const char *stowrs_mp_error_reason(stowrs_mp_error_e e);

/** @return the body offset at which the error was detected */
apr_off_t stowrs_mp_error_offset(const stowrs_mp_parser_t *p);

/** @return number of parts begun so far */
unsigned int stowrs_mp_part_count(const stowrs_mp_parser_t *p);

/** @return 1 while a part has begun and not ended */
int stowrs_mp_in_part(const stowrs_mp_parser_t *p);

/** @return the counters of tolerated irregularities */
const stowrs_mp_stats_t *stowrs_mp_stats(const stowrs_mp_parser_t *p);

/**
 * @return 1 if @c boundary is usable: 1-70 characters, none of them a
 *         control character (so CR never occurs inside a delimiter)
 */
int stowrs_mp_boundary_valid(const char *boundary);

/** A parsed media type such as a Content-Type value. */
typedef struct {
    const char *type;       /**< "multipart/related", lower-cased */
    apr_table_t *params;    /**< names lower-cased, values unquoted and unescaped */
} stowrs_media_type_t;

/**
 * Parse "type/subtype *( ; name=value )". Names are case-insensitive, white
 * space around ';' and '=' is allowed, values may be tokens or quoted strings
 * (with backslash escapes), parameters come in any order. A parameter given
 * twice keeps the first value.
 * @param pool  for the result
 * @param value the header value
 * @param out   the result, set on success
 * @return APR_SUCCESS, or APR_EINVAL for a malformed value
 */
apr_status_t stowrs_mp_parse_media_type(apr_pool_t *pool, const char *value,
                                        stowrs_media_type_t *out);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_MULTIPART_H */
