/*
 * fuzz_multipart.c: the streaming multipart/related parser
 * (stowrs_mp_create / _feed / _finish).
 *
 * Input: five option bytes, the boundary up to the first LF, then the
 * body. (A boundary never contains a control character, so LF ends it.)
 *
 *   opt[0]  bits 0-2 max_header_bytes, bits 3-5 max_parts (tables below)
 *   opt[1..3]  six 4-bit indexes into the chunk size table, used in turn
 *   opt[4]  bits 0-5: the k-th part_begin/part_end callback fails (0: none);
 *           bit 6: it fails with APR_ENOSPC instead of APR_EGENERAL
 *
 * The body is parsed twice: fed whole, then in chunks of the chosen sizes.
 * Every chunk is copied into a heap buffer of exactly its size that is
 * freed right after the feed, so ASan sees a read past a chunk and any
 * pointer kept into it across feeds. Both runs record their events
 * (part begin with its headers; each part's data concatenated; part end;
 * then error, error offset, counts and statistics) and must agree: the
 * result must not depend on where the body was split (DESIGN.md §3.2).
 * The callback that fails is counted over begin and end events only:
 * how often the data callback runs does depend on the split.
 */
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "fuzz.h"
#include "stowrs_multipart.h"

#define OPT_BYTES 5

static const apr_size_t max_header_table[8] = {
    0, 1, 2, 16, 40, 100, 256, 1024
};
static const unsigned int max_parts_table[8] = {
    0, 1, 2, 3, 4, 8, 16, 100
};

/* An event log: bytes appended, data runs length-prefixed so that two
 * different event sequences never give the same log. */
typedef struct {
    char *s;
    size_t len, cap;
    size_t data_at;             /* where the current data run's length is */
    int in_data;
    unsigned int cb_count;      /* begin and end callbacks so far */
    unsigned int fail_at;       /* that one fails; 0: none */
    apr_status_t fail_status;
    int in_part;
} rec_t;

static void
rec_put(rec_t *r, const void *d, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 256;

        while (r->len + n > cap) {
            cap *= 2;
        }
        r->s = realloc(r->s, cap);
        if (!r->s) {
            abort();
        }
        r->cap = cap;
    }
    if (n) {
        memcpy(r->s + r->len, d, n);
    }
    r->len += n;
}

static void
rec_num(rec_t *r, char what, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%c%lld;", what, v);

    rec_put(r, tmp, (size_t)n);
}

static void
rec_event(rec_t *r, char what)
{
    r->in_data = 0;
    rec_put(r, &what, 1);
}

static apr_status_t
rec_fail(rec_t *r)
{
    r->cb_count++;
    if (r->fail_at && r->cb_count == r->fail_at) {
        rec_event(r, '!');
        return r->fail_status;
    }
    return APR_SUCCESS;
}

static int
rec_header(void *baton, const char *key, const char *value)
{
    rec_t *r = baton;

    rec_put(r, key, strlen(key) + 1);
    rec_put(r, value, strlen(value) + 1);
    return 1;
}

static apr_status_t
on_begin(void *baton, apr_table_t *headers)
{
    rec_t *r = baton;
    const char *ct;

    FUZZ_CHECK(!r->in_part);
    FUZZ_CHECK(headers != NULL);
    r->in_part = 1;
    rec_event(r, 'B');
    apr_table_do(rec_header, r, headers, NULL);
    rec_event(r, '\n');
    /* lookups ignore case, as the header says */
    ct = apr_table_get(headers, "content-type");
    FUZZ_CHECK(ct == apr_table_get(headers, "CONTENT-TYPE"));
    return rec_fail(r);
}

static apr_status_t
on_data(void *baton, const char *data, apr_size_t len)
{
    rec_t *r = baton;
    uint64_t total;

    FUZZ_CHECK(r->in_part);
    FUZZ_CHECK(len > 0);
    if (!r->in_data) {
        rec_event(r, 'D');
        r->data_at = r->len;
        total = 0;
        rec_put(r, &total, sizeof(total));
        r->in_data = 1;
    }
    rec_put(r, data, len);
    memcpy(&total, r->s + r->data_at, sizeof(total));
    total += len;
    memcpy(r->s + r->data_at, &total, sizeof(total));
    return APR_SUCCESS;
}

static apr_status_t
on_end(void *baton)
{
    rec_t *r = baton;

    FUZZ_CHECK(r->in_part);
    r->in_part = 0;
    rec_event(r, 'E');
    return rec_fail(r);
}

static const stowrs_mp_callbacks_t callbacks = { on_begin, on_data, on_end };

/* Errors, counts and statistics after the body: part of the log. */
static void
rec_result(rec_t *r, const stowrs_mp_parser_t *p, apr_status_t feed_rv,
           apr_status_t finish_rv, size_t body_len)
{
    const stowrs_mp_stats_t *st = stowrs_mp_stats(p);
    stowrs_mp_error_e e = stowrs_mp_error(p);

    rec_event(r, 'X');
    rec_num(r, 'f', feed_rv);
    rec_num(r, 'F', finish_rv);
    rec_num(r, 'e', e);
    rec_num(r, 'o', stowrs_mp_error_offset(p));
    rec_num(r, 'n', stowrs_mp_part_count(p));
    rec_num(r, 'i', stowrs_mp_in_part(p));
    rec_num(r, 'p', st->preamble_bytes);
    rec_num(r, 'q', st->epilogue_bytes);
    rec_num(r, 'd', st->padding_bytes);
    rec_num(r, 'm', st->missing_final_crlf);
    rec_num(r, 'h', st->folded_headers);
    rec_num(r, 'b', st->boundary_like_data);

    /* properties of a single run */
    FUZZ_CHECK(stowrs_mp_error_reason(e) != NULL);
    FUZZ_CHECK((e == STOWRS_MP_OK) == (finish_rv == APR_SUCCESS));
    if (e != STOWRS_MP_OK) {
        FUZZ_CHECK(stowrs_mp_error_offset(p) >= 0);
        FUZZ_CHECK(stowrs_mp_error_offset(p) <= (apr_off_t)body_len);
    }
    else {
        FUZZ_CHECK(stowrs_mp_part_count(p) > 0);
        FUZZ_CHECK(!stowrs_mp_in_part(p));
    }
    FUZZ_CHECK(st->preamble_bytes >= 0 && st->preamble_bytes <= (apr_off_t)body_len);
    FUZZ_CHECK(st->epilogue_bytes >= 0 && st->epilogue_bytes <= (apr_off_t)body_len);
    FUZZ_CHECK(stowrs_mp_in_part(p) == r->in_part);
}

static void
rec_init(rec_t *r, unsigned int fail_at, apr_status_t fail_status)
{
    memset(r, 0, sizeof(*r));
    r->fail_at = fail_at;
    r->fail_status = fail_status;
}

/* Feed @len bytes as a copy in a heap block of exactly that size. */
static apr_status_t
feed_exact(stowrs_mp_parser_t *p, const char *d, size_t n)
{
    char *copy = malloc(n ? n : 1);
    apr_status_t rv;

    if (!copy) {
        abort();
    }
    if (n) {
        memcpy(copy, d, n);
    }
    /* a zero-length feed hands over a pointer that must not be read */
    rv = stowrs_mp_feed(p, n ? copy : NULL, n);
    free(copy);
    return rv;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *opt = data;
    const char *nl, *body;
    size_t blen, body_len, pos;
    char *boundary;
    apr_size_t chunk_table[16];
    unsigned int chunk_idx[6];
    apr_size_t max_header;
    unsigned int max_parts, fail_at, i;
    apr_status_t fail_status, rv_whole, fin_whole, rv_chunk, fin_chunk;
    apr_pool_t *pool;
    stowrs_mp_parser_t *pw, *pc;
    rec_t whole, chunked;

    if (size < OPT_BYTES + 1) {
        return 0;
    }
    nl = memchr(data + OPT_BYTES, '\n', size - OPT_BYTES);
    if (!nl) {
        return 0;
    }
    blen = (size_t)(nl - (const char *)(data + OPT_BYTES));
    body = nl + 1;
    body_len = size - (size_t)(body - (const char *)data);

    pool = fuzz_pool();
    boundary = apr_pstrmemdup(pool, (const char *)data + OPT_BYTES, blen);
    if (strlen(boundary) != blen || !stowrs_mp_boundary_valid(boundary)) {
        /* the parser must refuse what the check refuses */
        FUZZ_CHECK(strlen(boundary) != blen
                   || stowrs_mp_create(pool, boundary, &callbacks, NULL, 0, 0, &pw)
                      == APR_EINVAL);
        apr_pool_destroy(pool);
        return 0;
    }

    max_header = max_header_table[opt[0] & 7];
    max_parts = max_parts_table[(opt[0] >> 3) & 7];
    for (i = 0; i < 6; i++) {
        unsigned int bits = (unsigned int)opt[1] | (unsigned int)opt[2] << 8
                            | (unsigned int)opt[3] << 16;

        chunk_idx[i] = (bits >> (4 * i)) & 15;
    }
    fail_at = opt[4] & 0x3f;
    fail_status = (opt[4] & 0x40) ? APR_ENOSPC : APR_EGENERAL;

    {
        /* sizes around the delimiter's length find split-delimiter bugs */
        apr_size_t dlen = 4 + blen;
        apr_size_t t[16] = {
            64, 1, 2, 3, 4, 5, 7, 13, 0, 4096,
            dlen - 2, dlen - 1, dlen, dlen + 1, dlen + 2, 2 * dlen + 1
        };

        memcpy(chunk_table, t, sizeof(t));
    }

    /* whole */
    rec_init(&whole, fail_at, fail_status);
    FUZZ_CHECK(stowrs_mp_create(pool, boundary, &callbacks, &whole, max_header,
                                max_parts, &pw) == APR_SUCCESS);
    rv_whole = feed_exact(pw, body, body_len);
    fin_whole = stowrs_mp_finish(pw);
    /* finish is idempotent and errors are sticky */
    FUZZ_CHECK(stowrs_mp_finish(pw) == fin_whole);
    FUZZ_CHECK(stowrs_mp_feed(pw, "x", 1) != APR_SUCCESS);
    rec_result(&whole, pw, rv_whole, fin_whole, body_len);

    /* chunked */
    rec_init(&chunked, fail_at, fail_status);
    FUZZ_CHECK(stowrs_mp_create(pool, boundary, &callbacks, &chunked, max_header,
                                max_parts, &pc) == APR_SUCCESS);
    rv_chunk = APR_SUCCESS;
    pos = 0;
    for (i = 0; pos < body_len || i == 0; i++) {
        apr_size_t n = chunk_table[chunk_idx[i % 6]];
        apr_status_t rv;
        size_t before = chunked.len;

        if (n == 0 && i % 6 == 5) {
            n = 1;              /* six zeros in a row would never end */
        }
        if (n > body_len - pos) {
            n = body_len - pos;
        }
        rv = feed_exact(pc, body + pos, n);
        pos += n;
        if (rv_chunk != APR_SUCCESS) {
            /* sticky: once failed, nothing more happens */
            FUZZ_CHECK(rv != APR_SUCCESS);
            FUZZ_CHECK(chunked.len == before);
        }
        else {
            rv_chunk = rv;
        }
    }
    fin_chunk = stowrs_mp_finish(pc);
    rec_result(&chunked, pc, rv_chunk, fin_chunk, body_len);

    if (whole.len != chunked.len || memcmp(whole.s, chunked.s, whole.len) != 0) {
        fprintf(stderr, "fuzz_multipart: whole and chunked runs differ\n"
                "whole:   %lu bytes of events\nchunked: %lu bytes of events\n",
                (unsigned long)whole.len, (unsigned long)chunked.len);
        fwrite(whole.s, 1, whole.len, stderr);
        fputs("\n----\n", stderr);
        fwrite(chunked.s, 1, chunked.len, stderr);
        fputs("\n", stderr);
        abort();
    }

    free(whole.s);
    free(chunked.s);
    apr_pool_destroy(pool);
    return 0;
}
