/*
 * Unit tests of the multipart/related parser and the media-type parser.
 *
 * Every well-formed and malformed body is parsed whole, byte by byte, split
 * at every offset and (when short) at every pair of offsets; all runs must
 * give the same events, error and offset (apache/apreq library/t/parsers.c,
 * h2o/picohttpparser test.c). Slices are copied into exact-size heap
 * buffers, and one test puts the body against a PROT_NONE page, so an
 * over-read shows up under ASan or as a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "stowrs_multipart.h"
#include "unit.h"

static apr_pool_t *gpool;

/* --- a growable string ------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;

        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        b->s = realloc(b->s, cap);
        if (!b->s) {
            abort();
        }
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* Printable ASCII as is; the rest, and the quote and backslash, as \xHH,
 * except CR and LF which read better as \r and \n. */
static void buf_escape(buf_t *b, const char *d, size_t n)
{
    size_t i;
    char tmp[8];

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];

        if (c == '\r') {
            buf_puts(b, "\\r");
        }
        else if (c == '\n') {
            buf_puts(b, "\\n");
        }
        else if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            buf_put(b, (const char *)&c, 1);
        }
        else {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
            buf_puts(b, tmp);
        }
    }
}

/* --- event recorder --------------------------------------------------- */

typedef struct {
    buf_t ev;                   /* canonical event string */
    buf_t data;                 /* current part's data, concatenated */
    int in_part;
    char fail_on;               /* 'B', 'D' or 'E': that callback fails */
    apr_status_t fail_status;
} rec_t;

static void rec_flush(rec_t *r)
{
    if (r->data.len) {
        buf_puts(&r->ev, "D\"");
        buf_escape(&r->ev, r->data.s, r->data.len);
        buf_puts(&r->ev, "\"");
        r->data.len = 0;
    }
}

static int flatten_header(void *baton, const char *key, const char *value)
{
    buf_t *b = baton;

    if (b->s[b->len - 1] != '{') {
        buf_puts(b, "|");
    }
    buf_puts(b, key);
    buf_puts(b, ": ");
    buf_puts(b, value);
    return 1;
}

static apr_status_t rec_begin(void *baton, apr_table_t *headers)
{
    rec_t *r = baton;

    rec_flush(r);
    if (r->in_part) {
        buf_puts(&r->ev, "!nested");
    }
    r->in_part = 1;
    buf_puts(&r->ev, "B{");
    apr_table_do(flatten_header, &r->ev, headers, NULL);
    buf_puts(&r->ev, "}");
    return r->fail_on == 'B' ? r->fail_status : APR_SUCCESS;
}

static apr_status_t rec_data(void *baton, const char *data, apr_size_t len)
{
    rec_t *r = baton;

    if (!r->in_part) {
        buf_puts(&r->ev, "!data-outside-part");
    }
    if (len == 0) {
        buf_puts(&r->ev, "!empty-data");
    }
    buf_put(&r->data, data, len);
    return r->fail_on == 'D' ? r->fail_status : APR_SUCCESS;
}

static apr_status_t rec_end(void *baton)
{
    rec_t *r = baton;

    rec_flush(r);
    if (!r->in_part) {
        buf_puts(&r->ev, "!end-outside-part");
    }
    r->in_part = 0;
    buf_puts(&r->ev, "E");
    return r->fail_on == 'E' ? r->fail_status : APR_SUCCESS;
}

static const stowrs_mp_callbacks_t rec_cb = { rec_begin, rec_data, rec_end };

static const char *err_name(stowrs_mp_error_e e)
{
    static const char *names[] = {
        "OK", "LF_ONLY", "BAD_DELIMITER", "HEADER_TOO_LONG", "BAD_HEADER",
        "TOO_MANY_PARTS", "NO_DELIMITER", "NO_PARTS", "TRUNCATED", "CALLBACK"
    };

    return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e] : "?";
}

/* --- running a body --------------------------------------------------- */

typedef struct {
    const char *boundary;
    apr_size_t max_header_bytes;
    unsigned int max_parts;
} limits_t;

typedef struct {
    char *events;               /* events then " OK" or " ERR:NAME@offset" */
    char *stats;                /* counters, compared between splits */
} result_t;

static void result_free(result_t *res)
{
    free(res->events);
    free(res->stats);
}

/* Feed body in the slices given by the ascending cut offsets. */
static result_t run_cuts(const limits_t *lim, const char *body, size_t len,
                         const size_t *cuts, int ncuts)
{
    apr_pool_t *pool;
    stowrs_mp_parser_t *p;
    rec_t r;
    result_t res;
    apr_status_t rv = APR_SUCCESS;
    size_t from = 0;
    int i;
    char tmp[256];
    const stowrs_mp_stats_t *st;

    memset(&r, 0, sizeof(r));
    apr_pool_create(&pool, gpool);
    if (stowrs_mp_create(pool, lim->boundary, &rec_cb, &r, lim->max_header_bytes,
                         lim->max_parts, &p) != APR_SUCCESS) {
        abort();
    }
    for (i = 0; i <= ncuts && rv == APR_SUCCESS; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        size_t n = to - from;
        /* an exact-size copy, so ASan sees any read past the slice */
        char *slice = malloc(n ? n : 1);

        memcpy(slice, body + from, n);
        rv = stowrs_mp_feed(p, n ? slice : NULL, n);
        free(slice);
        from = to;
    }
    if (rv == APR_SUCCESS) {
        rv = stowrs_mp_finish(p);
    }
    rec_flush(&r);
    if (rv == APR_SUCCESS) {
        buf_puts(&r.ev, " OK");
    }
    else {
        snprintf(tmp, sizeof(tmp), " ERR:%s@%" APR_OFF_T_FMT "%s",
                 err_name(stowrs_mp_error(p)), stowrs_mp_error_offset(p),
                 rv == APR_EGENERAL ? "" : "(callback status)");
        buf_puts(&r.ev, tmp);
    }
    st = stowrs_mp_stats(p);
    snprintf(tmp, sizeof(tmp),
             "pre=%" APR_OFF_T_FMT " epi=%" APR_OFF_T_FMT
             " pad=%u mfc=%u fold=%u bld=%u parts=%u inpart=%d",
             st->preamble_bytes, st->epilogue_bytes, st->padding_bytes,
             st->missing_final_crlf, st->folded_headers, st->boundary_like_data,
             stowrs_mp_part_count(p), stowrs_mp_in_part(p));
    res.events = r.ev.s ? r.ev.s : strdup("");
    res.stats = strdup(tmp);
    free(r.data.s);
    apr_pool_destroy(pool);
    return res;
}

static int same(const result_t *a, const result_t *b)
{
    return strcmp(a->events, b->events) == 0 && strcmp(a->stats, b->stats) == 0;
}

static void report_diff(int line, const char *how, const result_t *want,
                        const result_t *got)
{
    fprintf(stderr, "line %d, %s:\n  want %s [%s]\n  got  %s [%s]\n", line, how,
            want->events, want->stats, got->events, got->stats);
}

/*
 * Parse body whole and check the events; then check that byte-by-byte,
 * every split in two and (for short bodies) every split in three give the
 * same events, error, offset and counters. Returns the whole-body result
 * for further checks (caller frees).
 */
static result_t check_body_lim(int line, const limits_t *lim, const char *body,
                               size_t len, const char *want)
{
    result_t whole, got;
    size_t i, j, *cuts;
    int bad;

    whole = run_cuts(lim, body, len, NULL, 0);
    if (want) {
        if (strcmp(whole.events, want) != 0) {
            fprintf(stderr, "line %d:\n", line);
        }
        CHECK_STR(whole.events, want);
    }

    /* byte by byte */
    cuts = malloc((len + 1) * sizeof(*cuts));
    for (i = 0; i + 1 < len; i++) {
        cuts[i] = i + 1;
    }
    got = run_cuts(lim, body, len, cuts, len > 1 ? (int)len - 1 : 0);
    if (!same(&whole, &got)) {
        report_diff(line, "byte by byte", &whole, &got);
    }
    CHECK(same(&whole, &got));
    result_free(&got);

    /* every offset, empty slices at both ends included */
    bad = 0;
    for (i = 0; i <= len && !bad; i++) {
        got = run_cuts(lim, body, len, &i, 1);
        if (!same(&whole, &got)) {
            char how[64];

            snprintf(how, sizeof(how), "split at %zu", i);
            report_diff(line, how, &whole, &got);
            bad = 1;
        }
        result_free(&got);
    }
    CHECK(!bad);

    /* every pair of offsets */
    if (len <= 200) {
        bad = 0;
        for (i = 0; i <= len && !bad; i++) {
            for (j = i; j <= len && !bad; j++) {
                size_t pair[2];

                pair[0] = i;
                pair[1] = j;
                got = run_cuts(lim, body, len, pair, 2);
                if (!same(&whole, &got)) {
                    char how[64];

                    snprintf(how, sizeof(how), "split at %zu and %zu", i, j);
                    report_diff(line, how, &whole, &got);
                    bad = 1;
                }
                result_free(&got);
            }
        }
        CHECK(!bad);
    }
    free(cuts);
    return whole;
}

static const limits_t lim_b = { "b", 0, 0 };

/* String literals may hold NUL bytes, so their length comes from sizeof. */
#define EXPECT(body, want) do { \
        result_t r_ = check_body_lim(__LINE__, &lim_b, body, sizeof(body) - 1, want); \
        result_free(&r_); \
    } while (0)

#define EXPECT_STATS(body, want, want_stats) do { \
        result_t r_ = check_body_lim(__LINE__, &lim_b, body, sizeof(body) - 1, want); \
        CHECK_STR(r_.stats, want_stats); \
        result_free(&r_); \
    } while (0)

#define EXPECT_LIM(lim, body, want) do { \
        result_t r_ = check_body_lim(__LINE__, lim, body, sizeof(body) - 1, want); \
        result_free(&r_); \
    } while (0)

/* --- well-formed bodies ------------------------------------------------ */

static void test_framing(void)
{
    /* body starts directly with the boundary, as curl users write it */
    EXPECT_STATS("--b\r\nContent-Type: x\r\n\r\nhello\r\n--b--\r\n",
                 "B{Content-Type: x}D\"hello\"E OK",
                 "pre=0 epi=0 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    /* leading CRLF, as dcm4che and dicomweb-client send */
    EXPECT_STATS("\r\n--b\r\nContent-Type: x\r\n\r\nhello\r\n--b--\r\n",
                 "B{Content-Type: x}D\"hello\"E OK",
                 "pre=0 epi=0 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    /* a preamble, with things in it that look like boundaries */
    EXPECT_STATS("preamble --b \r\n--bX\r\n-\r\n--b\r\nContent-Type: x\r\n\r\n"
                 "hello\r\n--b--\r\n",
                 "B{Content-Type: x}D\"hello\"E OK",
                 "pre=22 epi=0 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    /* several CRLFs before the first delimiter */
    EXPECT_STATS("\r\n\r\n\r\n--b\r\nA: 1\r\n\r\nx\r\n--b--",
                 "B{A: 1}D\"x\"E OK",
                 "pre=4 epi=0 pad=0 mfc=1 fold=0 bld=0 parts=1 inpart=0");
    /* two and three parts */
    EXPECT("--b\r\nContent-Type: application/dicom\r\n\r\none\r\n"
           "--b\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\ntwo\r\n"
           "--b--\r\n",
           "B{Content-Type: application/dicom}D\"one\"E"
           "B{Content-Type: application/dicom|Content-Length: 3}D\"two\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n1\r\n--b\r\nA: 2\r\n\r\n22\r\n--b\r\nA: 3\r\n\r\n333"
           "\r\n--b--\r\n",
           "B{A: 1}D\"1\"EB{A: 2}D\"22\"EB{A: 3}D\"333\"E OK");
    /* missing final CRLF, as dicomweb-client sends */
    EXPECT_STATS("\r\n--b\r\nA: 1\r\n\r\nx\r\n--b--",
                 "B{A: 1}D\"x\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=0 bld=0 parts=1 inpart=0");
    /* epilogue, ignored but counted */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\nx\r\n--b--\r\nepilogue\r\n--b\r\nA: 2\r\n\r\n",
                 "B{A: 1}D\"x\"E OK",
                 "pre=0 epi=23 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    /* bytes after "--b--" that are not CRLF are epilogue too */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\nx\r\n--b--\rz",
                 "B{A: 1}D\"x\"E OK",
                 "pre=0 epi=2 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    EXPECT_STATS("--b\r\nA: 1\r\n\r\nx\r\n--b--\r",
                 "B{A: 1}D\"x\"E OK",
                 "pre=0 epi=1 pad=0 mfc=0 fold=0 bld=0 parts=1 inpart=0");
    /* transport padding after boundaries */
    EXPECT_STATS("--b \t \r\nA: 1\r\n\r\nx\r\n--b\t\r\nA: 2\r\n\r\ny\r\n--b--\r\n",
                 "B{A: 1}D\"x\"EB{A: 2}D\"y\"E OK",
                 "pre=0 epi=0 pad=4 mfc=0 fold=0 bld=0 parts=2 inpart=0");
}

static void test_empty_parts(void)
{
    /* headers and no CRLF+body: the empty line's CRLF starts the delimiter */
    EXPECT("--b\r\nContent-Type: x\r\n\r\n--b--",
           "B{Content-Type: x}E OK");
    EXPECT("--b\r\nContent-Type: x\r\n\r\n--b\r\nContent-Type: y\r\n\r\nY\r\n--b--",
           "B{Content-Type: x}EB{Content-Type: y}D\"Y\"E OK");
    /* no headers, no body */
    EXPECT("--b\r\n\r\n--b--", "B{}E OK");
    EXPECT("--b\r\n\r\n--b\r\n\r\n--b--\r\n", "B{}EB{}E OK");
    /* no headers, an empty body after the separator */
    EXPECT("--b\r\n\r\n\r\n--b--", "B{}E OK");
    /* no headers, a body */
    EXPECT("--b\r\n\r\nX\r\n--b--", "B{}D\"X\"E OK");
    /* the body is exactly one CRLF */
    EXPECT("--b\r\n\r\n\r\n\r\n--b--", "B{}D\"\\r\\n\"E OK");
    /* the body starts like a delimiter but is not one */
    EXPECT("--b\r\nA: 1\r\n\r\n-x\r\n--b--", "B{A: 1}D\"-x\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n--x\r\n--b--", "B{A: 1}D\"--x\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n\rx\r\n--b--", "B{A: 1}D\"\\rx\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n\r\n\r\n--b--", "B{A: 1}D\"\\r\\n\"E OK");
}

static void test_boundary_like_data(void)
{
    /* "--b" without CRLF before it is plain data */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\nab--bcd--b--\r\n--b--",
                 "B{A: 1}D\"ab--bcd--b--\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=0 bld=0 parts=1 inpart=0");
    /* "CRLF--b" followed by another byte is kept as data, and counted */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\n1\r\n--bX2\r\n--b--",
                 "B{A: 1}D\"1\\r\\n--bX2\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=0 bld=1 parts=1 inpart=0");
    /* the same right after the headers: the separator CRLF is not data */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\n--bX\r\n--b--",
                 "B{A: 1}D\"--bX\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=0 bld=1 parts=1 inpart=0");
    /* ... and where the separator CRLF itself starts the near-delimiter */
    EXPECT_STATS("--b\r\nA: 1\r\n\r\n\r\n--bX\r\n--b--",
                 "B{A: 1}D\"\\r\\n--bX\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=0 bld=1 parts=1 inpart=0");
    /* the byte that breaks a near-delimiter may start the real one */
    EXPECT("--b\r\nA: 1\r\n\r\n1\r\n--\r\n--b--",
           "B{A: 1}D\"1\\r\\n--\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n1\r\n-\r\n--b--",
           "B{A: 1}D\"1\\r\\n-\"E OK");
    EXPECT("--b\r\nA: 1\r\n\r\n1\r\r\n--b--",
           "B{A: 1}D\"1\\r\"E OK");
}

static void test_near_misses(void)
{
    static const limits_t lim = { "bound", 0, 0 };

    /* every prefix of the delimiter, and runs of CR, inside data */
    EXPECT_LIM(&lim,
               "--bound\r\nA: 1\r\n\r\n"
               "\r\r\r\n-\r\n--\r\n--b\r\n--bo\r\n--bou\r\n--boun\r\r\n\r\n--boun"
               "\r\n--bound--",
               "B{A: 1}D\"\\r\\r\\r\\n-\\r\\n--\\r\\n--b\\r\\n--bo\\r\\n--bou"
               "\\r\\n--boun\\r\\r\\n\\r\\n--boun\"E OK");
    /* data that is only CRs and ends in CR */
    EXPECT_LIM(&lim, "--bound\r\n\r\n\r\r\r\r\r\r\n--bound--",
               "B{}D\"\\r\\r\\r\\r\\r\"E OK");
    /* near-misses right after the headers, where the separator is pending */
    EXPECT_LIM(&lim, "--bound\r\nA: 1\r\n\r\n-", "B{A: 1} ERR:TRUNCATED@18");
    EXPECT_LIM(&lim, "--bound\r\nA: 1\r\n\r\n--boun\r\n--bound--",
               "B{A: 1}D\"--boun\"E OK");
    EXPECT_LIM(&lim, "--bound\r\nA: 1\r\n\r\n\r\n--boun\r\n--bound--",
               "B{A: 1}D\"\\r\\n--boun\"E OK");
    EXPECT_LIM(&lim, "--bound\r\nA: 1\r\n\r\n\r\r\n--bound--",
               "B{A: 1}D\"\\r\"E OK");
}

static void test_binary(void)
{
    static const limits_t lim = { "0f6d2c9a-4b7e-41f5-a1c3-9d8e7f6a5b4c", 0, 0 };
    buf_t body = { 0 }, want = { 0 }, data = { 0 };
    result_t r;
    int i;

    /* all 256 byte values, twice, then CR runs near the end */
    for (i = 0; i < 512; i++) {
        char c = (char)(i & 0xff);

        buf_put(&data, &c, 1);
    }
    buf_puts(&data, "\r\n--0f6d2c9a\r\r\n--0f6d2c9a-4b7e-41f5-a1c3-9d8e7f6a5b4");
    buf_puts(&body, "\r\n--0f6d2c9a-4b7e-41f5-a1c3-9d8e7f6a5b4c\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n");
    buf_put(&body, data.s, data.len);
    buf_puts(&body, "\r\n--0f6d2c9a-4b7e-41f5-a1c3-9d8e7f6a5b4c--\r\n");
    buf_puts(&want, "B{Content-Type: application/octet-stream}D\"");
    buf_escape(&want, data.s, data.len);
    buf_puts(&want, "\"E OK");
    r = check_body_lim(__LINE__, &lim, body.s, body.len, want.s);
    result_free(&r);
    free(body.s);
    free(want.s);
    free(data.s);
}

static void test_headers(void)
{
    /* obs-fold joined with one space; blanks around values trimmed */
    EXPECT_STATS("--b\r\nContent-Type: a\r\n  b;\r\n\tc=d\r\nX-Other:  v \t\r\n"
                 "X-Empty:\r\nX-Sp : w\r\n\r\nz\r\n--b--",
                 "B{Content-Type: a b; c=d|X-Other: v|X-Empty: |X-Sp: w}D\"z\"E OK",
                 "pre=0 epi=0 pad=0 mfc=1 fold=2 bld=0 parts=1 inpart=0");
    /* a blank continuation line adds nothing */
    EXPECT("--b\r\nA: x\r\n \r\n\r\nz\r\n--b--", "B{A: x}D\"z\"E OK");
    /* a colon in the value stays */
    EXPECT("--b\r\nContent-Location: http://h/x\r\n\r\nz\r\n--b--",
           "B{Content-Location: http://h/x}D\"z\"E OK");
}

static void test_header_lookup(void)
{
    /* lookups are case-insensitive; the pool of a part is cleared later */
    apr_pool_t *pool;
    stowrs_mp_parser_t *p;
    static const char body[] = "--b\r\ncontent-TYPE: application/dicom\r\n\r\nx\r\n--b--";
    rec_t r;

    memset(&r, 0, sizeof(r));
    apr_pool_create(&pool, gpool);
    CHECK_INT(stowrs_mp_create(pool, "b", &rec_cb, &r, 0, 0, &p), APR_SUCCESS);
    CHECK_INT(stowrs_mp_in_part(p), 0);
    CHECK_INT(stowrs_mp_feed(p, body, 45), APR_SUCCESS);
    CHECK_INT(stowrs_mp_in_part(p), 1);
    CHECK_INT(stowrs_mp_part_count(p), 1);
    CHECK_INT(stowrs_mp_feed(p, NULL, 0), APR_SUCCESS);
    CHECK_INT(stowrs_mp_feed(p, body + 45, sizeof(body) - 1 - 45), APR_SUCCESS);
    CHECK_INT(stowrs_mp_in_part(p), 0);
    CHECK_INT(stowrs_mp_finish(p), APR_SUCCESS);
    CHECK_INT(stowrs_mp_finish(p), APR_SUCCESS);
    CHECK_INT(stowrs_mp_error(p), STOWRS_MP_OK);
    CHECK_STR(r.ev.s, "B{content-TYPE: application/dicom}D\"x\"E");
    free(r.ev.s);
    free(r.data.s);
    apr_pool_destroy(pool);
}

static apr_status_t lookup_begin(void *baton, apr_table_t *headers)
{
    const char **ct = baton;

    *ct = apr_table_get(headers, "Content-Type");
    return APR_SUCCESS;
}

static void test_header_case(void)
{
    apr_pool_t *pool;
    stowrs_mp_parser_t *p;
    stowrs_mp_callbacks_t cb = { lookup_begin, NULL, NULL };
    static const char body[] = "--b\r\ncontent-TYPE: application/dicom\r\n\r\nx\r\n--b--";
    const char *ct = NULL;

    apr_pool_create(&pool, gpool);
    CHECK_INT(stowrs_mp_create(pool, "b", &cb, &ct, 0, 0, &p), APR_SUCCESS);
    CHECK_INT(stowrs_mp_feed(p, body, sizeof(body) - 1), APR_SUCCESS);
    CHECK_STR(ct, "application/dicom");
    CHECK_INT(stowrs_mp_finish(p), APR_SUCCESS);
    apr_pool_destroy(pool);
}

/* --- malformed bodies -------------------------------------------------- */

static void test_errors(void)
{
    static const limits_t small_hdr = { "b", 32, 0 };
    static const limits_t hdr8 = { "b", 8, 0 };
    static const limits_t hdr7 = { "b", 7, 0 };
    static const limits_t two_parts = { "b", 0, 2 };

    /* LF-only framing */
    EXPECT("--b\nContent-Type: x\n\nhi\n--b--\n", " ERR:LF_ONLY@3");
    EXPECT("\n--b\nA: 1\n\nx\n--b--\n", " ERR:NO_DELIMITER@19");
    /* LF-only header line, and LF-only end of headers */
    EXPECT("--b\r\nContent-Type: x\n\r\nhi\r\n--b--", " ERR:LF_ONLY@20");
    EXPECT("--b\r\nContent-Type: x\r\n\nhi\r\n--b--", " ERR:LF_ONLY@22");
    EXPECT("--b\r\n\n", " ERR:LF_ONLY@5");
    /* LF-only after a later boundary */
    EXPECT("--b\r\nA: 1\r\n\r\nx\r\n--b\nA: 2\n\ny\n--b--",
           "B{A: 1}D\"x\" ERR:LF_ONLY@19");
    /* bare CR in a header */
    EXPECT("--b\r\nA: 1\rx\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@10");
    /* NUL in a header */
    EXPECT("--b\r\nA: \0\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@8");
    /* header block over the limit; a block of exactly the limit is fine */
    EXPECT_LIM(&small_hdr,
               "--b\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\nx\r\n--b--",
               " ERR:HEADER_TOO_LONG@37");
    EXPECT_LIM(&hdr8, "--b\r\nA: b\r\n\r\nx\r\n--b--", "B{A: b}D\"x\"E OK");
    EXPECT_LIM(&hdr7, "--b\r\nA: b\r\n\r\nx\r\n--b--", " ERR:HEADER_TOO_LONG@12");
    /* header lines without a colon, with an empty name, or folded first */
    EXPECT("--b\r\nNoColon\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@5");
    EXPECT("--b\r\nA: 1\r\nNoColon\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@11");
    EXPECT("--b\r\n: v\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@5");
    EXPECT("--b\r\n \t: v\r\n\r\nx\r\n--b--", " ERR:BAD_HEADER@5");
    /* "--b" right after a delimiter line lacks the CRLF of a delimiter */
    EXPECT("--b\r\n--b--\r\n", " ERR:BAD_HEADER@5");
    /* too many parts; exactly the limit is fine */
    EXPECT_LIM(&two_parts,
               "--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--",
               "B{}D\"1\"EB{}D\"2\"E ERR:TOO_MANY_PARTS@25");
    EXPECT_LIM(&two_parts, "--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b--",
               "B{}D\"1\"EB{}D\"2\"E OK");
    /* no delimiter at all */
    EXPECT("hello world", " ERR:NO_DELIMITER@11");
    EXPECT("", " ERR:NO_DELIMITER@0");
    EXPECT("--", " ERR:NO_DELIMITER@2");
    EXPECT("--bX\r\n--bY", " ERR:NO_DELIMITER@10");
    EXPECT("--c\r\nA: 1\r\n\r\nx\r\n--c--", " ERR:NO_DELIMITER@21");
    /* close delimiter with no parts */
    EXPECT("--b--", " ERR:NO_PARTS@4");
    EXPECT("preamble\r\n--b--\r\n", " ERR:NO_PARTS@14");
    /* truncated: inside data, in a partial delimiter, inside headers, after a
     * delimiter */
    EXPECT("--b\r\nA: b\r\n\r\nsome data", "B{A: b}D\"some data\" ERR:TRUNCATED@22");
    EXPECT("--b\r\nA: b\r\n\r\nsome data\r\n--", "B{A: b}D\"some data\" ERR:TRUNCATED@26");
    EXPECT("--b\r\nA: b\r\n\r\nsome data\r\n--b", "B{A: b}D\"some data\" ERR:TRUNCATED@27");
    EXPECT("--b\r\nA: b\r\n\r\nsome data\r\n--b-", "B{A: b}D\"some data\" ERR:TRUNCATED@28");
    EXPECT("--b\r\nA: b\r\n\r\nsome data\r\n--b \r", "B{A: b}D\"some data\" ERR:TRUNCATED@29");
    EXPECT("--b\r\nA: b\r\n\r\nsome data\r\n--b\r\n", "B{A: b}D\"some data\"E ERR:TRUNCATED@29");
    EXPECT("--b\r\nA: b\r\n", " ERR:TRUNCATED@11");
    EXPECT("--b\r\nA: b\r\n\r\n", "B{A: b} ERR:TRUNCATED@13");
    EXPECT("--b", " ERR:TRUNCATED@3");
    EXPECT("--b\r\n", " ERR:TRUNCATED@5");
    /* garbage after a delimiter */
    EXPECT("--b-x", " ERR:BAD_DELIMITER@4");
    EXPECT("--b\r\nA: 1\r\n\r\nx\r\n--b-x\r\n--b--", "B{A: 1}D\"x\" ERR:BAD_DELIMITER@20");
    EXPECT("--b\rx", " ERR:BAD_DELIMITER@4");
    EXPECT("--b  x\r\n", " ERR:BAD_DELIMITER@5");
    EXPECT("--b  \n", " ERR:LF_ONLY@5");
    EXPECT("--b\r\r\n", " ERR:BAD_DELIMITER@4");
}

static void test_padding_limit(void)
{
    buf_t body = { 0 };
    result_t r;
    int i;

    buf_puts(&body, "--b");
    for (i = 0; i < 1024; i++) {
        buf_puts(&body, " ");
    }
    buf_puts(&body, "\r\n\r\nx\r\n--b--");
    r = run_cuts(&lim_b, body.s, body.len, NULL, 0);
    CHECK_STR(r.events, "B{}D\"x\"E OK");
    result_free(&r);
    body.len = 3 + 1024;
    buf_puts(&body, " \r\n\r\nx\r\n--b--");
    r = run_cuts(&lim_b, body.s, body.len, NULL, 0);
    CHECK_STR(r.events, " ERR:BAD_DELIMITER@1027");
    result_free(&r);
    free(body.s);
}

static void test_callback_errors(void)
{
    static const char body[] = "--b\r\nA: 1\r\n\r\nxyz\r\n--b\r\nA: 2\r\n\r\nw\r\n--b--";
    static const char fails[] = "BDE";
    static const char *const want[] = { "B{A: 1}", "B{A: 1}D\"xyz\"", "B{A: 1}D\"xyz\"E" };
    int i;

    for (i = 0; i < 3; i++) {
        apr_pool_t *pool;
        stowrs_mp_parser_t *p;
        rec_t r;

        memset(&r, 0, sizeof(r));
        r.fail_on = fails[i];
        r.fail_status = APR_ENOSPC;
        apr_pool_create(&pool, gpool);
        CHECK_INT(stowrs_mp_create(pool, "b", &rec_cb, &r, 0, 0, &p), APR_SUCCESS);
        /* the callback's own status comes back from feed */
        CHECK_INT(stowrs_mp_feed(p, body, sizeof(body) - 1), APR_ENOSPC);
        CHECK_INT(stowrs_mp_error(p), STOWRS_MP_ERR_CALLBACK);
        /* sticky: nothing more happens */
        CHECK_INT(stowrs_mp_feed(p, body, sizeof(body) - 1), APR_EGENERAL);
        CHECK_INT(stowrs_mp_finish(p), APR_EGENERAL);
        CHECK_INT(stowrs_mp_error(p), STOWRS_MP_ERR_CALLBACK);
        rec_flush(&r);
        CHECK_STR(r.ev.s, want[i]);
        free(r.ev.s);
        free(r.data.s);
        apr_pool_destroy(pool);
    }
}

static void test_feed_after_error(void)
{
    apr_pool_t *pool;
    stowrs_mp_parser_t *p;
    rec_t r;

    memset(&r, 0, sizeof(r));
    apr_pool_create(&pool, gpool);
    CHECK_INT(stowrs_mp_create(pool, "b", &rec_cb, &r, 0, 0, &p), APR_SUCCESS);
    CHECK_INT(stowrs_mp_feed(p, "--b\nA", 5), APR_EGENERAL);
    CHECK_INT(stowrs_mp_error(p), STOWRS_MP_ERR_LF_ONLY);
    CHECK_INT(stowrs_mp_error_offset(p), 3);
    /* a valid continuation changes nothing */
    CHECK_INT(stowrs_mp_feed(p, "--b\r\n\r\nx\r\n--b--", 15), APR_EGENERAL);
    CHECK_INT(stowrs_mp_feed(p, NULL, 0), APR_EGENERAL);
    CHECK_INT(stowrs_mp_finish(p), APR_EGENERAL);
    CHECK_INT(stowrs_mp_error(p), STOWRS_MP_ERR_LF_ONLY);
    CHECK_INT(stowrs_mp_error_offset(p), 3);
    CHECK(r.ev.s == NULL);
    apr_pool_destroy(pool);
}

static void test_create(void)
{
    apr_pool_t *pool;
    stowrs_mp_parser_t *p = NULL;
    int e;

    apr_pool_create(&pool, gpool);
    CHECK_INT(stowrs_mp_create(pool, "", &rec_cb, NULL, 0, 0, &p), APR_EINVAL);
    CHECK_INT(stowrs_mp_create(pool, "a\rb", &rec_cb, NULL, 0, 0, &p), APR_EINVAL);
    CHECK(p == NULL);
    for (e = STOWRS_MP_OK; e <= STOWRS_MP_ERR_CALLBACK; e++) {
        const char *s = stowrs_mp_error_reason((stowrs_mp_error_e)e);

        CHECK(s != NULL && *s != '\0');
        if (e > STOWRS_MP_OK) {
            CHECK(strcmp(s, stowrs_mp_error_reason((stowrs_mp_error_e)(e - 1))) != 0);
        }
    }
    CHECK(stowrs_mp_error_reason((stowrs_mp_error_e)99) != NULL);
    apr_pool_destroy(pool);
}

/* --- guard pages -------------------------------------------------------- */

static void feed_guarded(const char *mem, size_t len, size_t step, const char *want)
{
    apr_pool_t *pool;
    stowrs_mp_parser_t *p;
    rec_t r;
    size_t off;
    apr_status_t rv = APR_SUCCESS;

    memset(&r, 0, sizeof(r));
    apr_pool_create(&pool, gpool);
    stowrs_mp_create(pool, "guard-boundary", &rec_cb, &r, 0, 0, &p);
    for (off = 0; off < len && rv == APR_SUCCESS; off += step) {
        rv = stowrs_mp_feed(p, mem + off, len - off < step ? len - off : step);
    }
    if (rv == APR_SUCCESS) {
        rv = stowrs_mp_finish(p);
    }
    rec_flush(&r);
    buf_puts(&r.ev, rv == APR_SUCCESS ? " OK" : " ERR");
    if (strcmp(r.ev.s, want) != 0) {
        fprintf(stderr, "guarded feed, step %zu\n", step);
    }
    CHECK_STR(r.ev.s, want);
    free(r.ev.s);
    free(r.data.s);
    apr_pool_destroy(pool);
}

static void test_guard_page(void)
{
    /* bodies that end in the middle of things, so the parser is tempted to
     * look one byte further */
    static const char *const bodies[] = {
        "--guard-boundary\r\nA: 1\r\n\r\nxy\r\n--guard-boundary--",
        "--guard-boundary\r\nA: 1\r\n\r\nxy\r\n--guard-boundary--\r\n",
        "--guard-boundary\r\nA: 1\r\n\r\nxy\r\n--guard-bou",
        "--guard-boundary\r\nA: 1\r\n\r\nxy\r",
        "--guard-boundary\r\nA: 1\r\n\r",
        "--guard-boundary",
        "--guard-bo",
    };
    static const char *const wants[] = {
        "B{A: 1}D\"xy\"E OK", "B{A: 1}D\"xy\"E OK", "B{A: 1}D\"xy\" ERR",
        "B{A: 1}D\"xy\" ERR", " ERR", " ERR", " ERR",
    };
    long pg = sysconf(_SC_PAGESIZE);
    size_t psz = pg > 0 ? (size_t)pg : 4096;
    char *map;
    size_t i, step;

    /* guard page, data page, guard page */
    map = mmap(NULL, 3 * psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) {
        return;
    }
    CHECK_INT(mprotect(map, psz, PROT_NONE), 0);
    CHECK_INT(mprotect(map + 2 * psz, psz, PROT_NONE), 0);
    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        size_t len = strlen(bodies[i]);
        char *at_end = map + 2 * psz - len;
        char *at_start = map + psz;

        memcpy(at_end, bodies[i], len);
        for (step = 1; step <= len; step++) {
            feed_guarded(at_end, len, step, wants[i]);
        }
        memset(map + psz, 0, psz);
        memcpy(at_start, bodies[i], len);
        for (step = 1; step <= len; step++) {
            feed_guarded(at_start, len, step, wants[i]);
        }
    }
    munmap(map, 3 * psz);
}

/* --- media types --------------------------------------------------------- */

static void test_media_type(void)
{
    stowrs_media_type_t mt;
    apr_pool_t *pool;
    static const char *const bad[] = {
        "", "multipart", "multipart/", "/related", "multi part/related",
        "multipart/related boundary=x", "multipart/related; boundary",
        "multipart/related; boundary x", "multipart/related; =x",
        "multipart/related; boundary=\"abc", "multipart/related; boundary=\"abc\\",
        "multipart/related; boundary=\"abc\"x", "multipart/related; boundary=\"a\rb\"",
        "multipart/related; b@d=x", "multipart/related; boundary=a b",
        "multipart/related,", "multipart/related; type=\"x\" ; ; boundary",
    };
    size_t i;

    apr_pool_create(&pool, gpool);

    CHECK_INT(stowrs_mp_parse_media_type(pool,
              "multipart/related; type=\"application/dicom\"; boundary=myboundary",
              &mt), APR_SUCCESS);
    CHECK_STR(mt.type, "multipart/related");
    CHECK_STR(apr_table_get(mt.params, "type"), "application/dicom");
    CHECK_STR(apr_table_get(mt.params, "boundary"), "myboundary");
    CHECK_INT(apr_table_elts(mt.params)->nelts, 2);

    /* case, any order, quoted boundary, unquoted type */
    CHECK_INT(stowrs_mp_parse_media_type(pool,
              "Multipart/Related;BOUNDARY=\"8a3e-Ab\";Type=application/dicom",
              &mt), APR_SUCCESS);
    CHECK_STR(mt.type, "multipart/related");
    CHECK_STR(apr_table_get(mt.params, "boundary"), "8a3e-Ab");
    CHECK_STR(apr_table_get(mt.params, "type"), "application/dicom");
    CHECK_STR(apr_table_elts(mt.params)->nelts > 0
              ? ((apr_table_entry_t *)apr_table_elts(mt.params)->elts)[0].key : NULL,
              "boundary");

    /* white space around ';' and '=' and at both ends */
    CHECK_INT(stowrs_mp_parse_media_type(pool,
              " \tmultipart/related \t; boundary = x ;\ttype\t=\t\"application/dicom+xml\" ",
              &mt), APR_SUCCESS);
    CHECK_STR(mt.type, "multipart/related");
    CHECK_STR(apr_table_get(mt.params, "boundary"), "x");
    CHECK_STR(apr_table_get(mt.params, "type"), "application/dicom+xml");

    /* escapes, and ';' '=' and blanks inside quotes */
    CHECK_INT(stowrs_mp_parse_media_type(pool,
              "multipart/related; boundary=\"a\\\"b\\\\c; d=e\\f\"", &mt), APR_SUCCESS);
    CHECK_STR(apr_table_get(mt.params, "boundary"), "a\"b\\c; d=ef");

    /* start and start-info are kept (callers ignore them), first value wins,
     * empty parameters are tolerated */
    CHECK_INT(stowrs_mp_parse_media_type(pool,
              "multipart/related;; type=\"application/dicom\"; start=\"<1@x>\"; "
              "start-info=\"-p\"; boundary=first; boundary=second; charset=utf-8;",
              &mt), APR_SUCCESS);
    CHECK_STR(apr_table_get(mt.params, "start"), "<1@x>");
    CHECK_STR(apr_table_get(mt.params, "start-info"), "-p");
    CHECK_STR(apr_table_get(mt.params, "boundary"), "first");
    CHECK_STR(apr_table_get(mt.params, "charset"), "utf-8");
    CHECK_INT(apr_table_elts(mt.params)->nelts, 5);

    /* unquoted values seen in the wild that are not tokens */
    CHECK_INT(stowrs_mp_parse_media_type(pool,
              "multipart/related; boundary=----=_Part_0_1.2:3/4", &mt), APR_SUCCESS);
    CHECK_STR(apr_table_get(mt.params, "boundary"), "----=_Part_0_1.2:3/4");

    /* empty values parse; boundary validity is checked separately */
    CHECK_INT(stowrs_mp_parse_media_type(pool, "multipart/related; boundary=\"\"", &mt),
              APR_SUCCESS);
    CHECK_STR(apr_table_get(mt.params, "boundary"), "");
    CHECK(!stowrs_mp_boundary_valid(apr_table_get(mt.params, "boundary")));

    /* no parameters */
    CHECK_INT(stowrs_mp_parse_media_type(pool, "application/DICOM", &mt), APR_SUCCESS);
    CHECK_STR(mt.type, "application/dicom");
    CHECK_INT(apr_table_elts(mt.params)->nelts, 0);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (stowrs_mp_parse_media_type(pool, bad[i], &mt) != APR_EINVAL) {
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
            CHECK(0);
        }
        else {
            CHECK(1);
        }
    }
    CHECK_INT(stowrs_mp_parse_media_type(pool, NULL, &mt), APR_EINVAL);
    apr_pool_destroy(pool);
}

static void test_quoted_boundary_body(void)
{
    stowrs_media_type_t mt;
    limits_t lim = { NULL, 0, 0 };
    static const char body[] =
        "\r\n--a:b c=d?\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--a:b c=d?--";
    result_t r;

    CHECK_INT(stowrs_mp_parse_media_type(gpool,
              "multipart/related; type=\"application/dicom\"; boundary=\"a:b c=d?\"",
              &mt), APR_SUCCESS);
    lim.boundary = apr_table_get(mt.params, "boundary");
    CHECK(stowrs_mp_boundary_valid(lim.boundary));
    r = check_body_lim(__LINE__, &lim, body, sizeof(body) - 1,
                       "B{Content-Type: application/dicom}D\"DICM\"E OK");
    result_free(&r);
}

static void test_boundary_valid(void)
{
    char b[80];

    memset(b, 'a', sizeof(b));
    b[70] = '\0';
    CHECK(stowrs_mp_boundary_valid(b));
    b[70] = 'a';
    b[71] = '\0';
    CHECK(!stowrs_mp_boundary_valid(b));
    CHECK(stowrs_mp_boundary_valid("a"));
    CHECK(stowrs_mp_boundary_valid("a b'()+_,-./:=?"));
    CHECK(!stowrs_mp_boundary_valid(""));
    CHECK(!stowrs_mp_boundary_valid(NULL));
    CHECK(!stowrs_mp_boundary_valid("a\rb"));
    CHECK(!stowrs_mp_boundary_valid("a\nb"));
    CHECK(!stowrs_mp_boundary_valid("a\tb"));
    CHECK(!stowrs_mp_boundary_valid("\x7f"));
    CHECK(!stowrs_mp_boundary_valid("ab\x01"));
}

/* --- a large body ---------------------------------------------------------- */

typedef struct {
    unsigned long long sum;     /* FNV-1a of the data */
    apr_size_t len;
    unsigned int begins, ends, calls;
    int checksum;
} count_t;

static apr_status_t count_begin(void *baton, apr_table_t *headers)
{
    count_t *c = baton;

    (void)headers;
    c->begins++;
    return APR_SUCCESS;
}

static unsigned long long fnv(unsigned long long h, const char *d, apr_size_t n)
{
    apr_size_t i;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char)d[i]) * 1099511628211ULL;
    }
    return h;
}

static apr_status_t count_data(void *baton, const char *data, apr_size_t len)
{
    count_t *c = baton;

    if (c->checksum) {
        c->sum = fnv(c->sum, data, len);
    }
    c->len += len;
    c->calls++;
    return APR_SUCCESS;
}

static apr_status_t count_end(void *baton)
{
    count_t *c = baton;

    c->ends++;
    return APR_SUCCESS;
}

static double now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void test_large(void)
{
    static const char boundary[] = "4d2c1f0e-9b8a-4c7d-a6e5-f4d3c2b1a098";
    static const char head[] =
        "\r\n--4d2c1f0e-9b8a-4c7d-a6e5-f4d3c2b1a098\r\n"
        "Content-Type: application/dicom\r\n\r\n";
    static const char tail[] = "\r\n--4d2c1f0e-9b8a-4c7d-a6e5-f4d3c2b1a098--\r\n";
    const size_t dsize = 64u << 20;
    const size_t piece = 8000;
    stowrs_mp_callbacks_t cb = { count_begin, count_data, count_end };
    size_t total = sizeof(head) - 1 + dsize + sizeof(tail) - 1;
    char *body = malloc(total);
    char *data;
    unsigned long long x = 88172645463325252ULL, want;
    size_t i;
    int pass;
    unsigned int nears = 0;

    if (!body) {
        CHECK(0);
        return;
    }
    data = body + sizeof(head) - 1;
    memcpy(body, head, sizeof(head) - 1);
    /* xorshift bytes; now and then a near-delimiter "\r\n--" + a prefix of
     * the boundary + a byte that breaks it */
    for (i = 0; i < dsize; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(data + i, &x, 8);
    }
    for (i = 1000; i + 80 < dsize; i += 4000 + (size_t)(x % 8000)) {
        size_t k = (size_t)(x % (sizeof(boundary) - 1));

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(data + i, "\r\n--", 4);
        memcpy(data + i + 4, boundary, k);
        data[i + 4 + k] = boundary[k] == 'Z' ? 'Y' : 'Z';
        nears++;
    }
    memcpy(data + dsize, tail, sizeof(tail) - 1);
    want = fnv(1469598103934665603ULL, data, dsize);

    /* first pass checks the content, second one measures the parser alone */
    for (pass = 0; pass < 2; pass++) {
        apr_pool_t *pool;
        stowrs_mp_parser_t *p;
        count_t c;
        apr_status_t rv = APR_SUCCESS;
        double t0, t1;

        memset(&c, 0, sizeof(c));
        c.sum = 1469598103934665603ULL;
        c.checksum = pass == 0;
        apr_pool_create(&pool, gpool);
        CHECK_INT(stowrs_mp_create(pool, boundary, &cb, &c, 0, 0, &p), APR_SUCCESS);
        t0 = now();
        for (i = 0; i < total && rv == APR_SUCCESS; i += piece) {
            rv = stowrs_mp_feed(p, body + i, total - i < piece ? total - i : piece);
        }
        CHECK_INT(rv, APR_SUCCESS);
        CHECK_INT(stowrs_mp_finish(p), APR_SUCCESS);
        t1 = now();
        CHECK_INT(c.len, dsize);
        CHECK_INT(c.begins, 1);
        CHECK_INT(c.ends, 1);
        /* one data call per feed, give or take a held tail */
        CHECK(c.calls <= 2 * (total / piece + 1));
        CHECK_INT(stowrs_mp_stats(p)->boundary_like_data, 0);
        if (pass == 0) {
            CHECK(c.sum == want);
        }
        else {
            printf("large body: %u MiB in %zu-byte pieces, %u near-delimiters, "
                   "%.0f MB/s\n", (unsigned)(dsize >> 20), piece, nears,
                   (double)total / 1e6 / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9));
        }
        apr_pool_destroy(pool);
    }
    free(body);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&gpool, NULL);

    test_framing();
    test_empty_parts();
    test_boundary_like_data();
    test_near_misses();
    test_binary();
    test_headers();
    test_header_lookup();
    test_header_case();
    test_errors();
    test_padding_limit();
    test_callback_errors();
    test_feed_after_error();
    test_create();
    test_guard_page();
    test_media_type();
    test_quoted_boundary_body();
    test_boundary_valid();
    test_large();

    apr_pool_destroy(gpool);
    apr_terminate();
    return unit_summary();
}
