/*
 * fuzz_content_type.c: header values - the media-type parser
 * (stowrs_mp_parse_media_type), the boundary check
 * (stowrs_mp_boundary_valid) and Accept negotiation
 * (stowrs_resp_negotiate).
 *
 * The input, cut at its first NUL, is one header value. Properties:
 * - a parsed type is "type/subtype" in lower case, parameter names are
 *   lower-case tokens;
 * - writing the result back out with every value quoted and parsing that
 *   gives the same type and parameters (a real tokenizer, STYLE.md §5);
 * - a boundary parameter that stowrs_mp_boundary_valid accepts works: a
 *   minimal one-part body framed with it parses to that one part;
 * - negotiation answers XML or JSON, or APR_ENOTIMPL (406), nothing else.
 */
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "fuzz.h"
#include "stowrs_multipart.h"
#include "stowrs_response.h"

typedef struct {
    apr_pool_t *pool;
    char *out;                  /* the value written back */
} write_ctx_t;

static int
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int
check_param(void *baton, const char *key, const char *value)
{
    write_ctx_t *w = baton;
    const char *k;
    char *q, *d;

    FUZZ_CHECK(*key != '\0');
    for (k = key; *k; k++) {
        FUZZ_CHECK(is_tchar((unsigned char)*k));
        FUZZ_CHECK(!(*k >= 'A' && *k <= 'Z'));
    }
    /* quote the value; '"' and '\' get a backslash */
    q = apr_palloc(w->pool, 2 * strlen(value) + 1);
    for (d = q; *value; value++) {
        FUZZ_CHECK(*value == '\t' || (unsigned char)*value >= 0x20);
        FUZZ_CHECK(*value != 0x7f);
        if (*value == '"' || *value == '\\') {
            *d++ = '\\';
        }
        *d++ = *value;
    }
    *d = '\0';
    w->out = apr_pstrcat(w->pool, w->out, "; ", key, "=\"", q, "\"", NULL);
    return 1;
}

typedef struct {
    apr_table_t *other;
    int n;
} cmp_ctx_t;

static int
same_param(void *baton, const char *key, const char *value)
{
    cmp_ctx_t *c = baton;
    const char *v = apr_table_get(c->other, key);

    FUZZ_CHECK(v != NULL);
    FUZZ_CHECK(strcmp(v, value) == 0);
    c->n++;
    return 1;
}

/* Data seen in the one part of check_boundary's body. */
typedef struct {
    int begins, ends;
    char data[16];
    size_t len;
    const char *ct;
    apr_pool_t *pool;
} part_ctx_t;

static apr_status_t
on_begin(void *baton, apr_table_t *headers)
{
    part_ctx_t *c = baton;
    const char *ct = apr_table_get(headers, "Content-Type");

    c->begins++;
    c->ct = ct ? apr_pstrdup(c->pool, ct) : NULL;
    return APR_SUCCESS;
}

static apr_status_t
on_data(void *baton, const char *data, apr_size_t len)
{
    part_ctx_t *c = baton;

    FUZZ_CHECK(c->len + len <= sizeof(c->data));
    memcpy(c->data + c->len, data, len);
    c->len += len;
    return APR_SUCCESS;
}

static apr_status_t
on_end(void *baton)
{
    part_ctx_t *c = baton;

    c->ends++;
    return APR_SUCCESS;
}

/* Any boundary the check accepts must frame a body. */
static void
check_boundary(apr_pool_t *pool, const char *boundary)
{
    static const stowrs_mp_callbacks_t cb = { on_begin, on_data, on_end };
    stowrs_mp_parser_t *p;
    part_ctx_t c;
    const char *body;

    memset(&c, 0, sizeof(c));
    c.pool = pool;
    FUZZ_CHECK(stowrs_mp_create(pool, boundary, &cb, &c, 0, 0, &p) == APR_SUCCESS);
    body = apr_pstrcat(pool, "\r\n--", boundary,
                       "\r\nContent-Type: application/dicom\r\n\r\nDICM"
                       "\r\n--", boundary, "--\r\n", NULL);
    FUZZ_CHECK(stowrs_mp_feed(p, body, strlen(body)) == APR_SUCCESS);
    FUZZ_CHECK(stowrs_mp_finish(p) == APR_SUCCESS);
    FUZZ_CHECK(c.begins == 1 && c.ends == 1);
    FUZZ_CHECK(c.len == 4 && memcmp(c.data, "DICM", 4) == 0);
    FUZZ_CHECK(c.ct && strcmp(c.ct, "application/dicom") == 0);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    stowrs_resp_format_e fmt;

    (void)argc;
    (void)argv;
    fuzz_apr_init();
    FUZZ_CHECK(stowrs_resp_negotiate(fuzz_root_pool, NULL, &fmt) == APR_SUCCESS);
    FUZZ_CHECK(fmt == STOWRS_RESP_XML);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    char *value = apr_pstrmemdup(pool, (const char *)data, size);
    stowrs_media_type_t mt;
    stowrs_resp_format_e fmt;
    apr_status_t rv;

    memset(&mt, 0, sizeof(mt));
    if (stowrs_mp_parse_media_type(pool, value, &mt) == APR_SUCCESS) {
        const char *slash, *s;
        const char *boundary;
        write_ctx_t w;
        stowrs_media_type_t again;
        cmp_ctx_t c1, c2;

        FUZZ_CHECK(mt.type != NULL && mt.params != NULL);
        slash = strchr(mt.type, '/');
        FUZZ_CHECK(slash && slash != mt.type && slash[1] != '\0');
        for (s = mt.type; *s; s++) {
            FUZZ_CHECK(s == slash || is_tchar((unsigned char)*s));
            FUZZ_CHECK(!(*s >= 'A' && *s <= 'Z'));
        }

        w.pool = pool;
        w.out = apr_pstrdup(pool, mt.type);
        apr_table_do(check_param, &w, mt.params, NULL);
        memset(&again, 0, sizeof(again));
        if (stowrs_mp_parse_media_type(pool, w.out, &again) != APR_SUCCESS) {
            fprintf(stderr, "written back: [%s]\n", w.out);
            abort();
        }
        FUZZ_CHECK(strcmp(again.type, mt.type) == 0);
        c1.other = again.params;
        c1.n = 0;
        apr_table_do(same_param, &c1, mt.params, NULL);
        c2.other = mt.params;
        c2.n = 0;
        apr_table_do(same_param, &c2, again.params, NULL);
        FUZZ_CHECK(c1.n == c2.n);

        boundary = apr_table_get(mt.params, "boundary");
        if (boundary && stowrs_mp_boundary_valid(boundary)) {
            check_boundary(pool, boundary);
        }
    }

    /* the raw value as a boundary */
    if (stowrs_mp_boundary_valid(value)) {
        FUZZ_CHECK(strlen(value) >= 1 && strlen(value) <= STOWRS_MP_MAX_BOUNDARY);
        check_boundary(pool, value);
    }

    /* the value as an Accept header */
    rv = stowrs_resp_negotiate(pool, value, &fmt);
    FUZZ_CHECK(rv == APR_SUCCESS || rv == APR_ENOTIMPL);
    FUZZ_CHECK(fmt == STOWRS_RESP_XML || fmt == STOWRS_RESP_JSON);
    FUZZ_CHECK(stowrs_resp_content_type(fmt) != NULL);

    apr_pool_destroy(pool);
    return 0;
}
