/*
 * fuzz_meta.h: the tree walk shared by fuzz_meta_xml.c and fuzz_meta_json.c.
 *
 * Every field of every attribute is read (strings to their NUL, inline
 * data to its length), so ASan sees a string that is not terminated or a
 * length that overstates its buffer. The properties stowrs_meta.h promises
 * are checked on the way.
 */
#ifndef STOWRS_FUZZ_META_H
#define STOWRS_FUZZ_META_H

#include <string.h>

#include <apr_strings.h>

#include "fuzz.h"
#include "stowrs_meta.h"

/* A volatile sink, so the compiler cannot drop the reads. */
static volatile unsigned long fuzz_meta_sink;

static inline void
fuzz_meta_touch(const char *s)
{
    unsigned long h = 0;

    for (; *s; s++) {
        h = h * 31 + (unsigned char)*s;
    }
    fuzz_meta_sink += h;
}

/* A bulk data URI as a Content-Location would be matched. */
static inline void
fuzz_meta_uri(apr_pool_t *pool, const char *uri)
{
    static const char *const bases[] = {
        "http://host:8080/dcm4chee-arc/aets/DCM4CHEE/rs/studies",
        "https://host/rs/studies/1.2.3/",
        "/rs/studies",
        "",
        NULL
    };
    size_t i;

    for (i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        const char *key = stowrs_meta_uri_key(pool, bases[i], uri);

        if (key) {
            const char *q = strchr(key, '?');
            size_t plen = q ? (size_t)(q - key) : strlen(key);
            char *path = apr_pstrmemdup(pool, key, plen);
            char *seg;
            char *last = NULL;

            fuzz_meta_touch(key);
            /* a resolved path has no "." or ".." segments left (RFC 3986
             * §5.2.4), unless the reference was opaque and kept as is */
            if (strcmp(key, uri) == 0) {
                continue;
            }
            for (seg = apr_strtok(path, "/", &last); seg;
                 seg = apr_strtok(NULL, "/", &last)) {
                if (strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0) {
                    fprintf(stderr, "uri_key(%s, %s) = %s\n",
                            bases[i] ? bases[i] : "(null)", uri, key);
                    abort();
                }
            }
        }
    }
}

static void
fuzz_meta_walk(apr_pool_t *pool, const stowrs_meta_ds_t *ds, int depth)
{
    int i, k;

    FUZZ_CHECK(ds != NULL);
    FUZZ_CHECK(depth <= STOWRS_META_MAX_DEPTH);
    FUZZ_CHECK(ds->nelems >= 0);
    FUZZ_CHECK(ds->nelems == 0 || ds->elems != NULL);
    for (i = 0; i < ds->nelems; i++) {
        const stowrs_meta_elem_t *e = &ds->elems[i];
        int used;

        /* ascending, no duplicates, and found by stowrs_meta_find */
        FUZZ_CHECK(i == 0 || ds->elems[i - 1].tag < e->tag);
        FUZZ_CHECK(stowrs_meta_find(ds, e->tag) == e);
        FUZZ_CHECK(e->vr[0] >= 'A' && e->vr[0] <= 'Z');
        FUZZ_CHECK(e->vr[1] >= 'A' && e->vr[1] <= 'Z');
        FUZZ_CHECK(e->vr[2] == '\0');
        if (e->private_creator) {
            fuzz_meta_touch(e->private_creator);
        }
        FUZZ_CHECK(e->nvalues >= 0 && e->nitems >= 0);
        used = (e->nvalues > 0) + (e->nitems > 0) + (e->bulk_uri != NULL)
               + (e->has_inline != 0);
        FUZZ_CHECK(used <= 1);
        for (k = 0; k < e->nvalues; k++) {
            if (e->values[k]) {
                fuzz_meta_touch(e->values[k]);
            }
        }
        if (e->nitems > 0) {
            FUZZ_CHECK(strcmp(e->vr, "SQ") == 0);
        }
        for (k = 0; k < e->nitems; k++) {
            fuzz_meta_walk(pool, e->items[k], depth + 1);
        }
        if (e->bulk_uri) {
            FUZZ_CHECK(*e->bulk_uri != '\0');
            fuzz_meta_touch(e->bulk_uri);
            fuzz_meta_uri(pool, e->bulk_uri);
        }
        if (e->has_inline) {
            size_t n;
            unsigned long h = 0;

            FUZZ_CHECK(e->inline_len == 0 || e->inline_data != NULL);
            for (n = 0; n < e->inline_len; n++) {
                h += e->inline_data[n];
            }
            fuzz_meta_sink += h;
        }
        else {
            FUZZ_CHECK(e->inline_len == 0);
        }
    }
    /* a tag that is not there is not found */
    FUZZ_CHECK(stowrs_meta_find(ds, 0xFFFFFFFFu) == NULL
               || (ds->nelems > 0 && ds->elems[ds->nelems - 1].tag == 0xFFFFFFFFu));
}

/* The first line of the input (up to 512 bytes) as a URI reference and
 * as a base: stowrs_meta_uri_key on a slice of arbitrary bytes. */
static inline void
fuzz_meta_slice(apr_pool_t *pool, const uint8_t *data, size_t size)
{
    size_t n = size < 512 ? size : 512;
    const char *nl = memchr(data, '\n', n);
    char *slice;

    if (nl) {
        n = (size_t)(nl - (const char *)data);
    }
    slice = apr_pstrmemdup(pool, (const char *)data, n);
    fuzz_meta_uri(pool, slice);
    {
        const char *key = stowrs_meta_uri_key(pool, slice, "bulk/1?frame=2");

        if (key) {
            fuzz_meta_touch(key);
        }
        key = stowrs_meta_uri_key(pool, slice, "");
        if (key) {
            fuzz_meta_touch(key);
        }
    }
}

#endif /* STOWRS_FUZZ_META_H */
