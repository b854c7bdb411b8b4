/*
 * parser_bench.c - S5 of the benchmark: the multipart parser alone.
 *
 *   parser_bench [-s MiB] [-n PASSES] [-p PIECE] INSTANCE.dcm
 *
 * Builds two bodies of -s MiB (default 1024) in memory, touched before
 * the clock starts:
 *   "parts": INSTANCE.dcm repeated as application/dicom parts (for the
 *            benchmark's CT slice, about 2000 parts of 0.5 MB);
 *   "one":   a single part whose data is INSTANCE.dcm repeated.
 * Each pass feeds a whole body to a fresh parser in PIECE-byte pieces
 * (default 8000, what httpd hands a handler) on one thread, with callbacks
 * that only count. The counts are checked after every pass.
 *
 * Output, one JSON object on stdout:
 *   {"bytes": n, "piece": n, "parts": [GB/s per pass], "one": [GB/s per pass]}
 * with GB = 1e9 bytes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "stowrs_multipart.h"

#define BOUNDARY "stowrs-bench-8f3a2c91d0e74b6a9c1e5f2b7a4d6c03"

typedef struct {
    unsigned long long data_bytes;
    unsigned int begun;
    unsigned int ended;
} counts_t;

static apr_status_t
on_begin(void *baton, apr_table_t *headers)
{
    (void)headers;
    ((counts_t *)baton)->begun++;
    return APR_SUCCESS;
}

static apr_status_t
on_data(void *baton, const char *data, apr_size_t len)
{
    (void)data;
    ((counts_t *)baton)->data_bytes += len;
    return APR_SUCCESS;
}

static apr_status_t
on_end(void *baton)
{
    ((counts_t *)baton)->ended++;
    return APR_SUCCESS;
}

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0) {
        perror(path);
        exit(1);
    }
    buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Append, failing loudly rather than overrunning. */
static void
put(char *body, size_t cap, size_t *len, const char *src, size_t n)
{
    if (*len + n > cap) {
        fprintf(stderr, "parser_bench: body overflow\n");
        exit(1);
    }
    memcpy(body + *len, src, n);
    *len += n;
}

/* @return the body; *len its size, *parts the part count, *data the data bytes */
static char *
build(const char *inst, size_t ilen, size_t target, int one_part, size_t *len,
      unsigned int *parts, unsigned long long *data)
{
    static const char head[] = "--" BOUNDARY "\r\nContent-Type: application/dicom\r\n\r\n";
    static const char next[] = "\r\n--" BOUNDARY "\r\nContent-Type: application/dicom\r\n\r\n";
    static const char close_delim[] = "\r\n--" BOUNDARY "--\r\n";
    size_t cap = target + ilen + 4096;
    char *body = malloc(cap);

    if (!body) {
        fprintf(stderr, "parser_bench: out of memory\n");
        exit(1);
    }
    *len = 0;
    *parts = 0;
    *data = 0;
    put(body, cap, len, head, sizeof(head) - 1);
    (*parts)++;
    while (*len + ilen + sizeof(close_delim) <= target) {
        if (!one_part && *data > 0) {
            put(body, cap, len, next, sizeof(next) - 1);
            (*parts)++;
        }
        put(body, cap, len, inst, ilen);
        *data += ilen;
    }
    put(body, cap, len, close_delim, sizeof(close_delim) - 1);
    return body;
}

static double
pass(apr_pool_t *pool, const char *body, size_t len, size_t piece, unsigned int parts,
     unsigned long long data)
{
    static const stowrs_mp_callbacks_t cbs = { on_begin, on_data, on_end };
    stowrs_mp_parser_t *mp;
    counts_t c;
    size_t off;
    double t0, t;

    memset(&c, 0, sizeof(c));
    if (stowrs_mp_create(pool, BOUNDARY, &cbs, &c, 0, 1000000, &mp) != APR_SUCCESS) {
        fprintf(stderr, "parser_bench: stowrs_mp_create failed\n");
        exit(1);
    }
    t0 = now();
    for (off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;

        if (stowrs_mp_feed(mp, body + off, n) != APR_SUCCESS) {
            break;
        }
    }
    if (stowrs_mp_finish(mp) != APR_SUCCESS) {
        fprintf(stderr, "parser_bench: parse failed: %s\n",
                stowrs_mp_error_reason(stowrs_mp_error(mp)));
        exit(1);
    }
    t = now() - t0;
    if (c.begun != parts || c.ended != parts || c.data_bytes != data) {
        fprintf(stderr, "parser_bench: wrong events: %u/%u parts, %llu/%llu bytes\n",
                c.begun, parts, c.data_bytes, data);
        exit(1);
    }
    return (double)len / t / 1e9;
}

int
main(int argc, char **argv)
{
    apr_pool_t *pool, *scratch;
    size_t mib = 1024, piece = 8000, ilen, len[2];
    unsigned int parts[2];
    unsigned long long data[2];
    char *inst, *body[2];
    int passes = 5, opt, i, k;

    while ((opt = getopt(argc, argv, "s:n:p:")) != -1) {
        switch (opt) {
        case 's':
            mib = (size_t)atol(optarg);
            break;
        case 'n':
            passes = atoi(optarg);
            break;
        case 'p':
            piece = (size_t)atol(optarg);
            break;
        default:
            fprintf(stderr, "usage: parser_bench [-s MiB] [-n PASSES] [-p PIECE] INSTANCE\n");
            return 2;
        }
    }
    if (optind != argc - 1 || mib < 1 || passes < 1 || passes > 100 || piece < 1) {
        fprintf(stderr, "usage: parser_bench [-s MiB] [-n PASSES] [-p PIECE] INSTANCE\n");
        return 2;
    }
    apr_initialize();
    apr_pool_create(&pool, NULL);
    inst = read_file(argv[optind], &ilen);
    for (k = 0; k < 2; k++) {
        body[k] = build(inst, ilen, mib << 20, k, &len[k], &parts[k], &data[k]);
    }
    printf("{\"bytes\": %zu, \"piece\": %zu, \"part_count\": %u", len[0], piece, parts[0]);
    for (k = 0; k < 2; k++) {
        printf(", \"%s\": [", k ? "one" : "parts");
        for (i = 0; i < passes; i++) {
            apr_pool_create(&scratch, pool);
            printf("%s%.3f", i ? ", " : "", pass(scratch, body[k], len[k], piece, parts[k],
                                                  data[k]));
            fflush(stdout);
            apr_pool_destroy(scratch);
        }
        printf("]");
    }
    printf("}\n");
    free(body[0]);
    free(body[1]);
    free(inst);
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}
