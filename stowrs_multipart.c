/*
 * stowrs_multipart.c: streaming multipart/related parser (RFC 2046 framing
 * with CRLF) and media-type parameter parsing. APR only, no httpd types.
 *
 * The parser is a push parser with a sticky state. Part data is never
 * buffered: the only bytes kept across feeds are the number of delimiter
 * bytes matched so far (they can be re-created from the delimiter itself)
 * and the header block of the current part, copied into a bounded buffer.
 */

/* memmem() is a GNU/BSD extension; it runs at memory speed in glibc.
 * apr-1-config may already define _GNU_SOURCE. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <string.h>

#include <apr_strings.h>

#include "stowrs_multipart.h"

/* "\r\n--" + boundary */
#define MP_DELIM_MAX (4 + STOWRS_MP_MAX_BOUNDARY)

/* Blanks tolerated between a boundary and its CRLF; anything longer is
 * more likely an attack than a mail gateway. */
#define MP_MAX_PADDING 1024

typedef enum {
    MP_PREAMBLE,    /* before the first delimiter; bytes are dropped */
    MP_AFTER_DELIM, /* a whole delimiter matched; the next byte decides */
    MP_CLOSE_DASH,  /* "-" after the boundary; a second one closes */
    MP_PADDING,     /* blanks after the boundary; CRLF must follow */
    MP_DELIM_LF,    /* CR after the boundary; LF must follow */
    MP_HEADERS,     /* collecting a part's header block */
    MP_DATA,        /* inside a part's body */
    MP_EPILOGUE,    /* after the close delimiter; bytes are counted */
    MP_ERROR        /* sticky */
} mp_state_e;

struct stowrs_mp_parser_t {
    apr_pool_t *hpool;          /* header tables, cleared at each part */
    stowrs_mp_callbacks_t cb;
    void *baton;

    char delim[MP_DELIM_MAX];
    apr_size_t dlen;

    mp_state_e state;
    /* Delimiter bytes matched so far. Because CR occurs only at delim[0],
     * the matched bytes are always delim[0..match), so no look-behind
     * buffer is needed to give them back as data on a mismatch. */
    apr_size_t match;
    /* The first two matched bytes are the CRLF that ended the headers:
     * they are either the separator before the body or the start of the
     * next delimiter (empty part), never data. */
    int sep_pending;
    int in_part;
    unsigned int parts;
    unsigned int max_parts;
    unsigned int pad_run;

    char *hbuf;                 /* current header block, CRLFs included */
    char *vbuf;                 /* scratch to join folded values */
    apr_size_t hlen;
    apr_size_t hmax;
    apr_size_t line_start;
    apr_off_t hstart;           /* body offset of the header block */

    apr_off_t offset;           /* body offset of the current feed's data[0] */
    int close_crlf;             /* CRLF bytes after "--b--", -1 if others */
    int finished;

    stowrs_mp_error_e err;
    apr_off_t err_off;
    stowrs_mp_stats_t stats;
};

static int mp_blank(char c)
{
    return c == ' ' || c == '\t';
}

static apr_status_t mp_fail(stowrs_mp_parser_t *p, stowrs_mp_error_e e,
                            apr_off_t off)
{
    p->state = MP_ERROR;
    p->err = e;
    p->err_off = off;
    return APR_EGENERAL;
}

/* A callback's own status goes back to the caller, who may know it. */
static apr_status_t mp_callback_failed(stowrs_mp_parser_t *p, apr_status_t rv,
                                       apr_off_t off)
{
    mp_fail(p, STOWRS_MP_ERR_CALLBACK, off);
    return rv;
}

/* Hand bytes to the current part; outside a part (preamble) they are
 * dropped, so a part that never began gets no data. */
static apr_status_t mp_emit(stowrs_mp_parser_t *p, const char *d, apr_size_t n,
                            apr_off_t off)
{
    apr_status_t rv;

    if (!p->in_part || n == 0 || !p->cb.on_part_data) {
        return APR_SUCCESS;
    }
    rv = p->cb.on_part_data(p->baton, d, n);
    if (rv != APR_SUCCESS) {
        return mp_callback_failed(p, rv, off);
    }
    return APR_SUCCESS;
}

/* The bytes held as a possible delimiter were data after all. */
static apr_status_t mp_release_match(stowrs_mp_parser_t *p, apr_off_t off)
{
    apr_size_t from = p->sep_pending ? 2 : 0;
    apr_size_t n = p->match;

    p->sep_pending = 0;
    p->match = 0;
    if (n > from) {
        return mp_emit(p, p->delim + from, n - from, off);
    }
    return APR_SUCCESS;
}

static apr_status_t mp_end_part(stowrs_mp_parser_t *p, apr_off_t off)
{
    apr_status_t rv;

    p->in_part = 0;
    if (p->cb.on_part_end) {
        rv = p->cb.on_part_end(p->baton);
        if (rv != APR_SUCCESS) {
            return mp_callback_failed(p, rv, off);
        }
    }
    return APR_SUCCESS;
}

/* A whole delimiter ends at body offset @end; what follows decides. */
static void mp_delim_found(stowrs_mp_parser_t *p, apr_off_t end)
{
    if (!p->in_part) {
        /* The virtual CRLF at the start makes end - dlen -2 for a body
         * beginning with "--boundary". */
        apr_off_t pre = end - (apr_off_t)p->dlen;
        p->stats.preamble_bytes = pre > 0 ? pre : 0;
    }
    p->match = p->dlen;
    p->pad_run = 0;
    p->state = MP_AFTER_DELIM;
}

/* PREAMBLE and DATA: find the delimiter without touching bytes one by one
 * unless a match is already under way. */
static apr_status_t mp_scan(stowrs_mp_parser_t *p, const char *data,
                            apr_size_t len, apr_size_t *ppos)
{
    apr_size_t pos = *ppos;
    apr_off_t base = p->offset;
    const char *s, *hit;
    apr_size_t n, keep, tail, i;
    apr_status_t rv;

    if (p->match > 0) {
        while (pos < len && p->match < p->dlen
               && data[pos] == p->delim[p->match]) {
            pos++;
            p->match++;
        }
        *ppos = pos;
        if (p->match == p->dlen) {
            mp_delim_found(p, base + (apr_off_t)pos);
            return APR_SUCCESS;
        }
        if (pos == len) {
            return APR_SUCCESS;
        }
        /* data[pos] is left for the caller to look at again: it may be
         * the CR that starts the real delimiter. */
        return mp_release_match(p, base + (apr_off_t)pos);
    }

    s = data + pos;
    n = len - pos;
    hit = memmem(s, n, p->delim, p->dlen);
    if (hit) {
        keep = (apr_size_t)(hit - s);
        rv = mp_emit(p, s, keep, base + (apr_off_t)pos);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        *ppos = pos + keep + p->dlen;
        mp_delim_found(p, base + (apr_off_t)*ppos);
        return APR_SUCCESS;
    }

    /* No whole delimiter: only a CR within the last dlen-1 bytes can start
     * one that continues in the next feed. At most one CR there can do so,
     * since any later CR would sit inside the match. */
    keep = n;
    tail = n >= p->dlen ? n - (p->dlen - 1) : 0;
    for (i = n; i > tail; i--) {
        if (s[i - 1] == '\r') {
            if (memcmp(s + i - 1, p->delim, n - (i - 1)) == 0) {
                keep = i - 1;
            }
            break;
        }
    }
    rv = mp_emit(p, s, keep, base + (apr_off_t)pos);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    p->match = n - keep;
    *ppos = len;
    return APR_SUCCESS;
}

/* The byte after a whole delimiter. */
static apr_status_t mp_after_delim(stowrs_mp_parser_t *p, char c,
                                   apr_off_t off, apr_size_t *ppos)
{
    switch (c) {
    case '-':
        p->state = MP_CLOSE_DASH;
        (*ppos)++;
        return APR_SUCCESS;
    case ' ':
    case '\t':
        p->state = MP_PADDING;
        return APR_SUCCESS;
    case '\r':
        p->state = MP_DELIM_LF;
        (*ppos)++;
        return APR_SUCCESS;
    case '\n':
        return mp_fail(p, STOWRS_MP_ERR_LF_ONLY, off);
    default:
        /* "CRLF--boundary" followed by anything else is data: RFC 2046
         * forbids it in a body, but rejecting it would buy nothing. The
         * byte itself is looked at again by the scanner. */
        if (p->in_part) {
            p->stats.boundary_like_data++;
        }
        p->state = p->in_part ? MP_DATA : MP_PREAMBLE;
        return mp_release_match(p, off);
    }
}

/* CRLF after a delimiter: the previous part is complete, a new one starts. */
static apr_status_t mp_delim_line_end(stowrs_mp_parser_t *p, apr_off_t next)
{
    apr_status_t rv;

    p->match = 0;
    p->sep_pending = 0;
    if (p->in_part) {
        rv = mp_end_part(p, next);
        if (rv != APR_SUCCESS) {
            return rv;
        }
    }
    if (p->parts >= p->max_parts) {
        return mp_fail(p, STOWRS_MP_ERR_TOO_MANY_PARTS, next);
    }
    apr_pool_clear(p->hpool);
    p->hlen = 0;
    p->line_start = 0;
    p->hstart = next;
    p->state = MP_HEADERS;
    return APR_SUCCESS;
}

/* Turn the collected header block (lines ending in CRLF, without the empty
 * line) into a table and start the part. */
static apr_status_t mp_begin_part(stowrs_mp_parser_t *p, apr_off_t next)
{
    const char *b = p->hbuf;
    const char *end = p->hbuf + p->line_start;
    const char *name = NULL;
    apr_size_t vlen = 0;
    apr_table_t *t = apr_table_make(p->hpool, 8);
    apr_status_t rv;

    while (b < end) {
        const char *eol = memchr(b, '\r', (apr_size_t)(end - b));
        const char *v, *ve;
        apr_off_t line_off = p->hstart + (b - p->hbuf);

        if (!eol) {
            eol = end;          /* cannot happen: every line ends in CRLF */
        }
        if (mp_blank(*b)) {
            /* obs-fold: RFC 7230 §3.2.4 says replace it by a space */
            if (!name) {
                return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER, line_off);
            }
            v = b;
            ve = eol;
            while (v < ve && mp_blank(*v)) {
                v++;
            }
            while (ve > v && mp_blank(ve[-1])) {
                ve--;
            }
            if (ve > v) {
                if (vlen > 0) {
                    p->vbuf[vlen++] = ' ';
                }
                memcpy(p->vbuf + vlen, v, (apr_size_t)(ve - v));
                vlen += (apr_size_t)(ve - v);
            }
            p->stats.folded_headers++;
        }
        else {
            const char *colon = memchr(b, ':', (apr_size_t)(eol - b));
            const char *ne;

            if (name) {
                apr_table_addn(t, name,
                               apr_pstrmemdup(p->hpool, p->vbuf, vlen));
                name = NULL;
            }
            if (!colon) {
                return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER, line_off);
            }
            ne = colon;
            while (ne > b && mp_blank(ne[-1])) {
                ne--;
            }
            if (ne == b) {
                return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER, line_off);
            }
            name = apr_pstrmemdup(p->hpool, b, (apr_size_t)(ne - b));
            v = colon + 1;
            ve = eol;
            while (v < ve && mp_blank(*v)) {
                v++;
            }
            while (ve > v && mp_blank(ve[-1])) {
                ve--;
            }
            /* vbuf is as large as the whole block, so a value fits */
            vlen = (apr_size_t)(ve - v);
            memcpy(p->vbuf, v, vlen);
        }
        b = eol + 2;
    }
    if (name) {
        apr_table_addn(t, name, apr_pstrmemdup(p->hpool, p->vbuf, vlen));
    }

    p->parts++;
    p->in_part = 1;
    p->state = MP_DATA;
    p->match = 2;
    p->sep_pending = 1;
    if (p->cb.on_part_begin) {
        rv = p->cb.on_part_begin(p->baton, t);
        if (rv != APR_SUCCESS) {
            return mp_callback_failed(p, rv, next);
        }
    }
    return APR_SUCCESS;
}

/* A complete header line (hbuf[line_start..hlen), CR included) is either
 * "name: value" or, after such a line, an obs-fold continuation. Checked as
 * soon as the line ends, so the error points at it. */
static int mp_line_ok(const stowrs_mp_parser_t *p)
{
    const char *b = p->hbuf + p->line_start;
    const char *eol = p->hbuf + p->hlen - 1;
    const char *colon;

    if (mp_blank(*b)) {
        return p->line_start > 0;
    }
    colon = memchr(b, ':', (apr_size_t)(eol - b));
    if (!colon) {
        return 0;
    }
    while (colon > b && mp_blank(colon[-1])) {
        colon--;
    }
    return colon > b;
}

/* Header bytes one at a time: blocks are small and bounded. */
static apr_status_t mp_headers(stowrs_mp_parser_t *p, const char *data,
                               apr_size_t len, apr_size_t *ppos)
{
    apr_size_t pos = *ppos;

    while (pos < len) {
        char c = data[pos];
        apr_off_t off = p->offset + (apr_off_t)pos;

        if (p->hlen >= p->hmax) {
            return mp_fail(p, STOWRS_MP_ERR_HEADER_TOO_LONG, off);
        }
        if (c == '\n') {
            if (p->hlen == 0 || p->hbuf[p->hlen - 1] != '\r') {
                return mp_fail(p, STOWRS_MP_ERR_LF_ONLY, off);
            }
            pos++;
            if (p->hlen - p->line_start == 1) {
                *ppos = pos;
                return mp_begin_part(p, off + 1);
            }
            if (!mp_line_ok(p)) {
                return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER,
                               p->hstart + (apr_off_t)p->line_start);
            }
            p->hbuf[p->hlen++] = c;
            p->line_start = p->hlen;
            continue;
        }
        if (p->hlen > 0 && p->hbuf[p->hlen - 1] == '\r') {
            /* a bare CR would make line ends ambiguous */
            return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER, off);
        }
        if (c == '\0') {
            /* header values become C strings */
            return mp_fail(p, STOWRS_MP_ERR_BAD_HEADER, off);
        }
        p->hbuf[p->hlen++] = c;
        pos++;
    }
    *ppos = pos;
    return APR_SUCCESS;
}

apr_status_t stowrs_mp_create(apr_pool_t *pool, const char *boundary,
                              const stowrs_mp_callbacks_t *cb, void *baton,
                              apr_size_t max_header_bytes,
                              unsigned int max_parts, stowrs_mp_parser_t **out)
{
    stowrs_mp_parser_t *p;
    apr_size_t blen;
    apr_status_t rv;

    if (!stowrs_mp_boundary_valid(boundary)) {
        return APR_EINVAL;
    }
    blen = strlen(boundary);
    p = apr_pcalloc(pool, sizeof(*p));
    rv = apr_pool_create(&p->hpool, pool);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (cb) {
        p->cb = *cb;
    }
    p->baton = baton;
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, blen);
    p->dlen = 4 + blen;
    p->hmax = max_header_bytes ? max_header_bytes
                               : STOWRS_MP_DEFAULT_MAX_HEADER_BYTES;
    p->max_parts = max_parts ? max_parts : STOWRS_MP_DEFAULT_MAX_PARTS;
    p->hbuf = apr_palloc(pool, p->hmax);
    p->vbuf = apr_palloc(pool, p->hmax);
    p->state = MP_PREAMBLE;
    /* A virtual CRLF before the body, so "--boundary" at offset 0 is a
     * delimiter like "CRLF--boundary" anywhere else. */
    p->match = 2;
    p->err = STOWRS_MP_OK;
    *out = p;
    return APR_SUCCESS;
}

apr_status_t stowrs_mp_feed(stowrs_mp_parser_t *p, const char *data,
                            apr_size_t len)
{
    apr_size_t pos = 0;
    apr_status_t rv = APR_SUCCESS;

    if (p->state == MP_ERROR || p->finished) {
        return APR_EGENERAL;
    }
    while (pos < len && rv == APR_SUCCESS) {
        apr_off_t off = p->offset + (apr_off_t)pos;
        char c = data[pos];

        switch (p->state) {
        case MP_PREAMBLE:
        case MP_DATA:
            rv = mp_scan(p, data, len, &pos);
            break;
        case MP_AFTER_DELIM:
            rv = mp_after_delim(p, c, off, &pos);
            break;
        case MP_CLOSE_DASH:
            if (c != '-') {
                rv = mp_fail(p, STOWRS_MP_ERR_BAD_DELIMITER, off);
                break;
            }
            pos++;
            p->match = 0;
            p->sep_pending = 0;
            if (!p->in_part) {
                rv = mp_fail(p, STOWRS_MP_ERR_NO_PARTS, off);
                break;
            }
            p->state = MP_EPILOGUE;
            rv = mp_end_part(p, off + 1);
            break;
        case MP_PADDING:
            if (mp_blank(c)) {
                if (++p->pad_run > MP_MAX_PADDING) {
                    rv = mp_fail(p, STOWRS_MP_ERR_BAD_DELIMITER, off);
                    break;
                }
                p->stats.padding_bytes++;
                pos++;
            }
            else if (c == '\r') {
                p->state = MP_DELIM_LF;
                pos++;
            }
            else if (c == '\n') {
                rv = mp_fail(p, STOWRS_MP_ERR_LF_ONLY, off);
            }
            else {
                rv = mp_fail(p, STOWRS_MP_ERR_BAD_DELIMITER, off);
            }
            break;
        case MP_DELIM_LF:
            if (c != '\n') {
                rv = mp_fail(p, STOWRS_MP_ERR_BAD_DELIMITER, off);
                break;
            }
            pos++;
            rv = mp_delim_line_end(p, off + 1);
            break;
        case MP_HEADERS:
            rv = mp_headers(p, data, len, &pos);
            break;
        case MP_EPILOGUE:
            /* The CRLF that ends the close-delimiter line is no epilogue. */
            while (pos < len && p->close_crlf >= 0 && p->close_crlf < 2) {
                if (data[pos] == "\r\n"[p->close_crlf]) {
                    p->close_crlf++;
                    pos++;
                }
                else {
                    p->stats.epilogue_bytes += p->close_crlf;
                    p->close_crlf = -1;
                }
            }
            p->stats.epilogue_bytes += (apr_off_t)(len - pos);
            pos = len;
            break;
        case MP_ERROR:
        default:
            rv = APR_EGENERAL;
            break;
        }
    }
    p->offset += (apr_off_t)len;
    return rv;
}

apr_status_t stowrs_mp_finish(stowrs_mp_parser_t *p)
{
    if (p->finished || p->state == MP_ERROR) {
        p->finished = 1;
        return p->state == MP_ERROR ? APR_EGENERAL : APR_SUCCESS;
    }
    p->finished = 1;
    switch (p->state) {
    case MP_EPILOGUE:
        if (p->close_crlf == 0) {
            p->stats.missing_final_crlf = 1;
        }
        else if (p->close_crlf == 1) {
            p->stats.epilogue_bytes += 1;   /* a lone CR */
        }
        return APR_SUCCESS;
    case MP_PREAMBLE:
        p->stats.preamble_bytes = p->offset;
        return mp_fail(p, STOWRS_MP_ERR_NO_DELIMITER, p->offset);
    default:
        return mp_fail(p, STOWRS_MP_ERR_TRUNCATED, p->offset);
    }
}

stowrs_mp_error_e stowrs_mp_error(const stowrs_mp_parser_t *p)
{
    return p->err;
}

const char *stowrs_mp_error_reason(stowrs_mp_error_e e)
{
    switch (e) {
    case STOWRS_MP_OK:
        return "no error";
    case STOWRS_MP_ERR_LF_ONLY:
        return "line ends in LF without CR";
    case STOWRS_MP_ERR_BAD_DELIMITER:
        return "boundary followed by neither CRLF nor \"--\"";
    case STOWRS_MP_ERR_HEADER_TOO_LONG:
        return "part header block too long";
    case STOWRS_MP_ERR_BAD_HEADER:
        return "malformed part header line";
    case STOWRS_MP_ERR_TOO_MANY_PARTS:
        return "too many parts";
    case STOWRS_MP_ERR_NO_DELIMITER:
        return "body does not contain the boundary";
    case STOWRS_MP_ERR_NO_PARTS:
        return "close delimiter before any part";
    case STOWRS_MP_ERR_TRUNCATED:
        return "body ends before the close delimiter";
    case STOWRS_MP_ERR_CALLBACK:
        return "part consumer failed";
    }
    return "unknown multipart error";
}

apr_off_t stowrs_mp_error_offset(const stowrs_mp_parser_t *p)
{
    return p->err_off;
}

unsigned int stowrs_mp_part_count(const stowrs_mp_parser_t *p)
{
    return p->parts;
}

int stowrs_mp_in_part(const stowrs_mp_parser_t *p)
{
    return p->in_part;
}

const stowrs_mp_stats_t *stowrs_mp_stats(const stowrs_mp_parser_t *p)
{
    return &p->stats;
}

int stowrs_mp_boundary_valid(const char *boundary)
{
    apr_size_t i;

    if (!boundary || !*boundary) {
        return 0;
    }
    for (i = 0; boundary[i]; i++) {
        unsigned char c = (unsigned char)boundary[i];

        if (i >= STOWRS_MP_MAX_BOUNDARY || c < 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* --- media types ----------------------------------------------------- */

/* RFC 7230 tchar, spelled out so the locale cannot change it. */
static int mp_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9')) {
        return 1;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int mp_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static const char *mp_skip_ows(const char *s)
{
    while (mp_blank(*s)) {
        s++;
    }
    return s;
}

static const char *mp_skip_token(const char *s)
{
    while (mp_tchar((unsigned char)*s)) {
        s++;
    }
    return s;
}

static char *mp_lowerdup(apr_pool_t *pool, const char *s, apr_size_t n)
{
    char *d = apr_pstrmemdup(pool, s, n);
    char *q;

    for (q = d; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char)(*q - 'A' + 'a');
        }
    }
    return d;
}

apr_status_t stowrs_mp_parse_media_type(apr_pool_t *pool, const char *value,
                                        stowrs_media_type_t *out)
{
    const char *s, *b, *e;
    char *type;
    apr_table_t *params;

    if (!value) {
        return APR_EINVAL;
    }
    b = mp_skip_ows(value);
    s = mp_skip_token(b);
    if (s == b || *s != '/') {
        return APR_EINVAL;
    }
    e = mp_skip_token(s + 1);
    if (e == s + 1) {
        return APR_EINVAL;
    }
    type = mp_lowerdup(pool, b, (apr_size_t)(e - b));
    s = e;
    params = apr_table_make(pool, 4);

    for (;;) {
        const char *name;
        const char *val;

        s = mp_skip_ows(s);
        if (!*s) {
            break;
        }
        if (*s != ';') {
            return APR_EINVAL;
        }
        s = mp_skip_ows(s + 1);
        if (!*s || *s == ';') {
            continue;           /* empty parameter: ";;" or a trailing ";" */
        }
        b = s;
        s = mp_skip_token(s);
        if (s == b) {
            return APR_EINVAL;
        }
        name = mp_lowerdup(pool, b, (apr_size_t)(s - b));
        s = mp_skip_ows(s);
        if (*s != '=') {
            return APR_EINVAL;
        }
        s = mp_skip_ows(s + 1);
        if (*s == '"') {
            char *buf = apr_palloc(pool, strlen(s));
            char *w = buf;

            for (s++; *s != '"'; s++) {
                unsigned char c = (unsigned char)*s;

                if (c == '\\') {
                    c = (unsigned char)*++s;
                }
                if (c == '\0' || (mp_ctl(c) && c != '\t')) {
                    return APR_EINVAL;  /* unterminated, or a control */
                }
                *w++ = (char)c;
            }
            s++;
            *w = '\0';
            val = buf;
        }
        else {
            /* Leniently more than a token: unquoted boundaries seen in the
             * wild contain '=', '/' or ':'. */
            b = s;
            while (*s && !mp_ctl((unsigned char)*s) && *s != ' '
                   && *s != ';' && *s != '"') {
                s++;
            }
            val = apr_pstrmemdup(pool, b, (apr_size_t)(s - b));
        }
        if (!apr_table_get(params, name)) {
            apr_table_setn(params, name, val);
        }
    }
    out->type = type;
    out->params = params;
    return APR_SUCCESS;
}
