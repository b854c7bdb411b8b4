/*
 * Unit tests of stowrs_dicom_build(): metadata trees built by hand (no
 * stowrs_meta.c), bulk data parts in temp files, the result read back with
 * stowrs_dicom_inspect() and checked byte by byte: native Pixel Data equal
 * to its part, the item structure of encapsulated Pixel Data, Encapsulated
 * Documents, sequences, private attributes, InlineBinary, the failures
 * (missing part, image attributes, media types), ENOSPC, a 512 MB native
 * build in bounded memory, and UTF-8 values against the declared Specific
 * Character Set (converted, or declared ISO_IR 192).
 *
 *   t/unit/test_build                     the unit tests
 *   t/unit/test_build --json DESC OUT     build OUT from a JSON description
 *                                         (t/test_015_build.py):
 *     {"dataset": <DICOM JSON object>,
 *      "parts": {"<uri>": [{"path": "...", "media_type": "...",
 *                           "transfer_syntax": "..." or null}, ...]}}
 *   prints "<rc> <os_error> <message>" and exits 0 if the build ran.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <jansson.h>

#include "stowrs_dicom.h"
#include "unit.h"

#define CLASS_CT    "1.2.840.10008.5.1.4.1.1.2"
#define CLASS_MF    "1.2.840.10008.5.1.4.1.1.7.4"     /* Multi-frame True Color SC */
#define CLASS_PDF   "1.2.840.10008.5.1.4.1.1.104.1"
#define CLASS_SR    "1.2.840.10008.5.1.4.1.1.88.11"
#define CLASS_VIDEO "1.2.840.10008.5.1.4.1.1.77.1.4.1"
#define TS_ELE      "1.2.840.10008.1.2.1"

static char dir[64];

/* --- memory of the trees -------------------------------------------------- */
/* The trees and paths the tests build live until the end of the run; they
 * are kept here and freed at exit, so that LeakSanitizer (make test
 * SANITIZE=1) reports only what the code under test leaks. */
static void **test_blocks;
static size_t test_nblocks, test_capblocks;

static void *
test_keep(void *p)
{
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (test_nblocks == test_capblocks) {
        test_capblocks = test_capblocks ? 2 * test_capblocks : 256;
        test_blocks = realloc(test_blocks, test_capblocks * sizeof(*test_blocks));
        if (test_blocks == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    test_blocks[test_nblocks++] = p;
    return p;
}

static void *
test_alloc(size_t n)
{
    return test_keep(calloc(1, n ? n : 1));
}

/* realloc of a block from test_alloc/test_grow (or NULL) */
static void *
test_grow(void *old, size_t n)
{
    void *p = realloc(old, n);
    size_t i;

    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (i = 0; old != NULL && i < test_nblocks; i++) {
        if (test_blocks[i] == old) {
            test_blocks[i] = p;
            return p;
        }
    }
    return test_keep(p);
}

static void
test_free_all(void)
{
    size_t i;

    for (i = 0; i < test_nblocks; i++) {
        free(test_blocks[i]);
    }
    free(test_blocks);
    test_blocks = NULL;
    test_nblocks = test_capblocks = 0;
}

/* --- building trees ------------------------------------------------------ */

/* a growable dataset; elements are sorted by ds_done() */
typedef struct {
    stowrs_meta_ds_t ds;
    int cap;
} ds_builder_t;

static ds_builder_t *
ds_new(void)
{
    ds_builder_t *b = test_alloc(sizeof(*b));
    return b;
}

static stowrs_meta_elem_t *
ds_add(ds_builder_t *b, unsigned int tag, const char *vr)
{
    stowrs_meta_elem_t *e;
    if (b->ds.nelems == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 16;
        b->ds.elems = test_grow(b->ds.elems, (size_t)b->cap * sizeof(*b->ds.elems));
    }
    e = &b->ds.elems[b->ds.nelems++];
    memset(e, 0, sizeof(*e));
    e->tag = tag;
    memcpy(e->vr, vr, 2);
    e->vr[2] = '\0';
    return e;
}

static int
elem_cmp(const void *a, const void *b)
{
    const stowrs_meta_elem_t *x = a, *y = b;
    return x->tag < y->tag ? -1 : x->tag > y->tag;
}

static stowrs_meta_ds_t *
ds_done(ds_builder_t *b)
{
    if (b->ds.nelems > 0) {         /* qsort(NULL, 0, ...) is undefined */
        qsort(b->ds.elems, (size_t)b->ds.nelems, sizeof(*b->ds.elems), elem_cmp);
    }
    return &b->ds;
}

/* values: NULL-terminated list of strings (kept until exit, as the tree) */
static stowrs_meta_elem_t *
ds_val(ds_builder_t *b, unsigned int tag, const char *vr, ...)
{
    stowrs_meta_elem_t *e = ds_add(b, tag, vr);
    const char **v = test_alloc(16 * sizeof(*v));
    va_list ap;
    const char *s;
    va_start(ap, vr);
    while ((s = va_arg(ap, const char *)) != NULL && e->nvalues < 16) {
        v[e->nvalues++] = s;
    }
    va_end(ap);
    e->values = v;
    return e;
}

static void
ds_bulk(ds_builder_t *b, unsigned int tag, const char *vr, const char *uri)
{
    ds_add(b, tag, vr)->bulk_uri = uri;
}

static void
ds_inline(ds_builder_t *b, unsigned int tag, const char *vr, const void *data, size_t len)
{
    stowrs_meta_elem_t *e = ds_add(b, tag, vr);
    e->has_inline = 1;
    e->inline_data = data;
    e->inline_len = len;
}

static ds_builder_t *
ds_image(const char *cls, const char *iuid, const char *rows, const char *bits)
{
    ds_builder_t *b = ds_new();
    ds_val(b, 0x00080016, "UI", cls, NULL);
    ds_val(b, 0x00080018, "UI", iuid, NULL);
    ds_val(b, 0x00100010, "PN", "Doe^John", NULL);
    ds_val(b, 0x0020000D, "UI", "1.2.3.4", NULL);
    ds_val(b, 0x0020000E, "UI", "1.2.3.4.5", NULL);
    ds_val(b, 0x00280002, "US", "1", NULL);
    ds_val(b, 0x00280004, "CS", "MONOCHROME2", NULL);
    if (rows) {
        ds_val(b, 0x00280010, "US", rows, NULL);
    }
    ds_val(b, 0x00280011, "US", "4", NULL);
    ds_val(b, 0x00280100, "US", bits, NULL);
    ds_val(b, 0x00280101, "US", bits, NULL);
    ds_val(b, 0x00280103, "US", "0", NULL);
    return b;
}

/* --- bulk data parts and the resolver ------------------------------------ */

typedef struct {
    const char *uri;
    int n;
    stowrs_bulk_t parts[8];
    const stowrs_bulk_t *ptrs[8];
} bulk_entry_t;

typedef struct {
    int n;
    bulk_entry_t e[8];
} bulk_table_t;

static int
resolve(void *baton, const char *uri, const stowrs_bulk_t *const **parts)
{
    bulk_table_t *t = baton;
    for (int i = 0; t != NULL && i < t->n; i++) {
        if (strcmp(t->e[i].uri, uri) == 0) {
            for (int k = 0; k < t->e[i].n; k++) {
                t->e[i].ptrs[k] = &t->e[i].parts[k];
            }
            *parts = t->e[i].ptrs;
            return t->e[i].n;
        }
    }
    *parts = NULL;
    return 0;
}

static char *
tmp_path(const char *name)
{
    char *p = test_alloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static const char *
write_part(const char *name, const void *data, size_t len)
{
    char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(2);
    }
    return p;
}

static void
add_part(bulk_table_t *t, const char *uri, const char *path, const char *mt, const char *ts)
{
    bulk_entry_t *e = NULL;
    struct stat st;
    for (int i = 0; i < t->n; i++) {
        if (strcmp(t->e[i].uri, uri) == 0) {
            e = &t->e[i];
        }
    }
    if (e == NULL) {
        e = &t->e[t->n++];
        memset(e, 0, sizeof(*e));
        e->uri = uri;
    }
    stat(path, &st);
    e->parts[e->n].path = path;
    e->parts[e->n].length = (unsigned long long)st.st_size;
    e->parts[e->n].media_type = mt;
    e->parts[e->n].transfer_syntax = ts;
    e->n++;
}

/* --- reading results back ------------------------------------------------ */

static unsigned char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (f == NULL) {
        *len = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static unsigned long
le32(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16
        | (unsigned long)p[3] << 24;
}

/* offset of the first occurrence of needle, or -1 */
static long
find(const unsigned char *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static stowrs_build_rc_e
build(const stowrs_meta_ds_t *ds, bulk_table_t *t, const char *out, int *os_error)
{
    char err[256];
    int ose = 0;
    stowrs_build_rc_e rc = stowrs_dicom_build(ds, resolve, t, out, &ose, err, sizeof(err));
    if (rc != STOWRS_BUILD_OK && getenv("TEST_BUILD_VERBOSE")) {
        fprintf(stderr, "build %s: rc %d: %s\n", out, (int)rc, err);
    }
    if (os_error) {
        *os_error = ose;
    }
    return rc;
}

static void
check_inspect(const char *path, const char *cls, const char *iuid, const char *ts)
{
    stowrs_dicom_info_t info;
    char err[256];
    stowrs_dicom_rc_e rc = stowrs_dicom_inspect(path, &info, err, sizeof(err));
    CHECK_INT(rc, STOWRS_DICOM_OK);
    if (rc != STOWRS_DICOM_OK) {
        fprintf(stderr, "inspect %s: %s\n", path, err);
    }
    CHECK_STR(info.meta_sop_class_uid, cls);
    CHECK_STR(info.sop_class_uid, cls);
    CHECK_STR(info.meta_sop_instance_uid, iuid);
    CHECK_STR(info.sop_instance_uid, iuid);
    CHECK_STR(info.transfer_syntax_uid, ts);
}

/* --- the cases ----------------------------------------------------------- */

static void
test_native_ct(void)
{
    unsigned char px[32];
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_image(CLASS_CT, "1.2.3.4.5.6", "4", "16");
    const char *out = tmp_path("ct.dcm");
    size_t n;
    unsigned char *f;
    const unsigned char head[12] = { 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0, 32, 0, 0, 0 };

    for (size_t i = 0; i < sizeof(px); i++) {
        px[i] = (unsigned char)(i * 7 + 1);
    }
    ds_bulk(b, 0x7FE00010, "OW", "http://x/bulk/1");
    add_part(&t, "http://x/bulk/1", write_part("ct.raw", px, sizeof(px)),
             "application/octet-stream", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.4.5.6", TS_ELE);
    f = slurp(out, &n);
    CHECK(f != NULL && n > 44);
    if (f && n > 44) {
        CHECK(memcmp(f + n - 44, head, 12) == 0);
        CHECK(memcmp(f + n - 32, px, 32) == 0);
        CHECK(memcmp(f + 128, "DICM", 4) == 0);
        CHECK(find(f, n, "Doe^John", 8) > 0);
    }
    free(f);
}

/* 8-bit, 9 bytes as two parts (frames): OB, padded to 10 */
static void
test_native_odd(void)
{
    const unsigned char a[5] = { 1, 2, 3, 4, 5 }, c[4] = { 6, 7, 8, 9 };
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_image(CLASS_CT, "1.2.3.4.5.7", "3", "8");
    const char *out = tmp_path("odd.dcm");
    const unsigned char tail[22] = { 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 10, 0, 0, 0,
                                     1, 2, 3, 4, 5, 6, 7, 8, 9, 0 };
    size_t n;
    unsigned char *f;

    ds_val(b, 0x00280008, "IS", "2", NULL);
    ds_bulk(b, 0x7FE00010, "OB", "px");
    add_part(&t, "px", write_part("odd1.raw", a, sizeof(a)), "application/octet-stream",
             TS_ELE);
    add_part(&t, "px", write_part("odd2.raw", c, sizeof(c)), "application/octet-stream", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.4.5.7", TS_ELE);
    f = slurp(out, &n);
    CHECK(f != NULL && n > sizeof(tail) && memcmp(f + n - sizeof(tail), tail, sizeof(tail)) == 0);
    free(f);
}

/*
 * Check encapsulated Pixel Data at the end of @p f: OB, undefined length,
 * a Basic Offset Table of @p bot_entries entries (offsets checked), the
 * fragments equal to @p frags, the sequence delimiter.
 */
static void
check_encapsulated(const unsigned char *f, size_t n, const unsigned char *const *frags,
                   const size_t *lens, int nfrags, int bot_entries)
{
    const unsigned char head[12] = { 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0,
                                     0xFF, 0xFF, 0xFF, 0xFF };
    const unsigned char item[4] = { 0xFE, 0xFF, 0x00, 0xE0 };
    const unsigned char delim[8] = { 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0 };
    size_t total = 12 + 8 + 4 * (size_t)bot_entries + 8, pos;
    unsigned long off = 0;

    for (int i = 0; i < nfrags; i++) {
        total += 8 + lens[i] + (lens[i] & 1);
    }
    CHECK(n > total);
    if (n <= total) {
        return;
    }
    pos = n - total;
    CHECK(memcmp(f + pos, head, 12) == 0);
    pos += 12;
    CHECK(memcmp(f + pos, item, 4) == 0);
    CHECK_INT(le32(f + pos + 4), 4 * bot_entries);
    pos += 8;
    for (int i = 0; i < bot_entries; i++) {
        CHECK_INT(le32(f + pos + 4 * (size_t)i), off);
        off += 8 + lens[i] + (lens[i] & 1);
    }
    pos += 4 * (size_t)bot_entries;
    for (int i = 0; i < nfrags; i++) {
        CHECK(memcmp(f + pos, item, 4) == 0);
        CHECK_INT(le32(f + pos + 4), lens[i] + (lens[i] & 1));
        CHECK(memcmp(f + pos + 8, frags[i], lens[i]) == 0);
        if (lens[i] & 1) {
            CHECK_INT(f[pos + 8 + lens[i]], 0);
        }
        pos += 8 + lens[i] + (lens[i] & 1);
    }
    CHECK(memcmp(f + pos, delim, 8) == 0);
}

static void
test_jpeg_frames(void)
{
    static const unsigned char j1[] = { 0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9 };
    static const unsigned char j2[] = { 0xFF, 0xD8, 4, 5, 6, 7, 0xFF, 0xD9 };
    static const unsigned char j3[] = { 0xFF, 0xD8, 8, 0xFF, 0xD9 };
    const unsigned char *frags[3] = { j1, j2, j3 };
    const size_t lens[3] = { sizeof(j1), sizeof(j2), sizeof(j3) };
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_new();
    const char *out = tmp_path("mf.dcm");
    size_t n;
    unsigned char *f;

    ds_val(b, 0x00080016, "UI", CLASS_MF, NULL);
    ds_val(b, 0x00080018, "UI", "1.2.3.9", NULL);
    ds_val(b, 0x00280008, "IS", "3", NULL);
    ds_bulk(b, 0x7FE00010, "OB", "frames");
    add_part(&t, "frames", write_part("f1.jpg", j1, sizeof(j1)), "image/jpeg", NULL);
    add_part(&t, "frames", write_part("f2.jpg", j2, sizeof(j2)), "image/jpeg", NULL);
    add_part(&t, "frames", write_part("f3.jpg", j3, sizeof(j3)), "image/jpeg", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_MF, "1.2.3.9", "1.2.840.10008.1.2.4.50");
    f = slurp(out, &n);
    check_encapsulated(f, n, frags, lens, 3, 3);
    free(f);

    /* an explicit transfer-syntax parameter */
    t.e[0].parts[0].transfer_syntax = "1.2.840.10008.1.2.4.70";
    t.e[0].parts[1].transfer_syntax = "1.2.840.10008.1.2.4.70";
    t.e[0].parts[2].transfer_syntax = "1.2.840.10008.1.2.4.70";
    CHECK_INT(build(&b->ds, &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_MF, "1.2.3.9", "1.2.840.10008.1.2.4.70");

    /* parts disagree */
    t.e[0].parts[2].transfer_syntax = NULL;
    CHECK_INT(build(&b->ds, &t, out, NULL), STOWRS_BUILD_MEDIA_TYPE);
    t.e[0].parts[2].transfer_syntax = "1.2.840.10008.1.2.4.70";
    t.e[0].parts[2].media_type = "image/jls";
    CHECK_INT(build(&b->ds, &t, out, NULL), STOWRS_BUILD_MEDIA_TYPE);
}

static void
test_media_types(void)
{
    static const unsigned char data[] = { 1, 2, 3, 4 };
    const unsigned char *frags[1] = { data };
    const size_t lens[1] = { sizeof(data) };
    const char *part = write_part("c.bin", data, sizeof(data));
    struct {
        const char *mt, *ts;
        stowrs_build_rc_e rc;
        const char *want_ts;
        int bot;
    } cases[] = {
        { "image/png", NULL, STOWRS_BUILD_MEDIA_TYPE, NULL, 0 },
        { "image/jpeg", "1.2.840.10008.1.2.4.80", STOWRS_BUILD_MEDIA_TYPE, NULL, 0 },
        { "application/octet-stream", "1.2.840.10008.1.2.4.50", STOWRS_BUILD_MEDIA_TYPE, NULL, 0 },
        { "image/jp2", "1.2.840.10008.1.2.4.201", STOWRS_BUILD_MEDIA_TYPE, NULL, 0 },
        { "image/jphc", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.201", 1 },
        { "image/jphc", "1.2.840.10008.1.2.4.203", STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.203", 1 },
        { "image/jls", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.80", 1 },
        { "image/jp2", "1.2.840.10008.1.2.4.91", STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.91", 1 },
        { "image/jpx", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.92", 1 },
        { "image/dicom-rle", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.5", 1 },
        { "video/mpeg", "1.2.840.10008.1.2.4.101.1", STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.101.1", 0 },
        { "video/mp4", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.102", 0 },
        { "video/mp4", "1.2.840.10008.1.2.4.106.1", STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.106.1", 0 },
        { "video/h265", NULL, STOWRS_BUILD_OK, "1.2.840.10008.1.2.4.107", 0 },
        { "video/mp4", "1.2.840.10008.1.2.4.107", STOWRS_BUILD_MEDIA_TYPE, NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bulk_table_t t = { 0 };
        ds_builder_t *b = ds_new();
        const char *out = tmp_path("mt.dcm");
        const char *cls = strncmp(cases[i].mt, "video/", 6) == 0 ? CLASS_VIDEO : CLASS_CT;
        stowrs_build_rc_e rc;
        ds_val(b, 0x00080016, "UI", cls, NULL);
        ds_val(b, 0x00080018, "UI", "1.2.3.10", NULL);
        ds_bulk(b, 0x7FE00010, "OB", "p");
        add_part(&t, "p", part, cases[i].mt, cases[i].ts);
        rc = build(ds_done(b), &t, out, NULL);
        CHECK_INT(rc, cases[i].rc);
        if (rc != cases[i].rc) {
            fprintf(stderr, "  case %s %s\n", cases[i].mt, cases[i].ts ? cases[i].ts : "");
        }
        if (rc == STOWRS_BUILD_OK && cases[i].rc == STOWRS_BUILD_OK) {
            size_t n;
            unsigned char *f;
            check_inspect(out, cls, "1.2.3.10", cases[i].want_ts);
            f = slurp(out, &n);
            check_encapsulated(f, n, frags, lens, 1, cases[i].bot);
            free(f);
        }
    }
}

static void
test_pdf(void)
{
    static const char pdf[] = "%PDF-1.4 tiny";     /* 13 bytes: padded */
    const unsigned char head[12] = { 0x42, 0x00, 0x11, 0x00, 'O', 'B', 0, 0, 14, 0, 0, 0 };
    const unsigned char mime[24] = { 0x42, 0x00, 0x12, 0x00, 'L', 'O', 16, 0,
                                     'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n',
                                     '/', 'p', 'd', 'f', ' ' };
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_new();
    const char *out = tmp_path("pdf.dcm");
    size_t n;
    unsigned char *f;
    long at;

    ds_val(b, 0x00080016, "UI", CLASS_PDF, NULL);
    ds_val(b, 0x00080018, "UI", "1.2.3.11", NULL);
    ds_val(b, 0x0020000D, "UI", "1.2.3.4", NULL);
    ds_val(b, 0x0020000E, "UI", "1.2.3.4.6", NULL);
    ds_val(b, 0x00420010, "ST", "A title", NULL);
    ds_bulk(b, 0x00420011, "OB", "doc");
    add_part(&t, "doc", write_part("doc.pdf", pdf, strlen(pdf)), "application/pdf", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_PDF, "1.2.3.11", TS_ELE);
    f = slurp(out, &n);
    at = find(f, n, head, sizeof(head));
    CHECK(at > 0);
    if (at > 0) {
        CHECK(memcmp(f + at + 12, pdf, 13) == 0);
        CHECK_INT(f[at + 25], 0);
        CHECK(memcmp(f + at + 26, mime, sizeof(mime)) == 0);
    }
    free(f);

    /* a MIME type in the metadata wins */
    ds_val(b, 0x00420012, "LO", "application/x-pdf", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    f = slurp(out, &n);
    CHECK(find(f, n, "application/x-pdf", 17) > 0);
    CHECK(find(f, n, "application/pdf ", 16) < 0);
    free(f);

    /* an image type is no document */
    t.e[0].parts[0].media_type = "image/png";
    CHECK_INT(build(&b->ds, &t, out, NULL), STOWRS_BUILD_MEDIA_TYPE);
}

static void
test_sr_sequence(void)
{
    ds_builder_t *b = ds_new(), *item = ds_new(), *code = ds_new();
    stowrs_meta_elem_t *seq, *cseq;
    const char *out = tmp_path("sr.dcm");
    const unsigned char sq[8] = { 0x40, 0x00, 0x30, 0xA7, 'S', 'Q', 0, 0 };
    size_t n;
    unsigned char *f;

    ds_val(code, 0x00080100, "SH", "121071", NULL);
    ds_val(code, 0x00080102, "SH", "DCM", NULL);
    ds_val(code, 0x00080104, "LO", "Finding", NULL);
    ds_val(item, 0x0040A010, "CS", "CONTAINS", NULL);
    ds_val(item, 0x0040A040, "CS", "TEXT", NULL);
    cseq = ds_add(item, 0x0040A043, "SQ");
    cseq->nitems = 1;
    cseq->items = test_alloc(sizeof(*cseq->items));
    cseq->items[0] = ds_done(code);
    ds_val(item, 0x0040A160, "UT", "No acute findings \\ with a backslash", NULL);

    ds_val(b, 0x00080016, "UI", CLASS_SR, NULL);
    ds_val(b, 0x00080018, "UI", "1.2.3.12", NULL);
    ds_val(b, 0x00080060, "CS", "SR", NULL);
    ds_val(b, 0x0040A040, "CS", "CONTAINER", NULL);
    ds_val(b, 0x0040A050, "CS", "SEPARATE", NULL);
    seq = ds_add(b, 0x0040A730, "SQ");
    seq->nitems = 1;
    seq->items = test_alloc(sizeof(*seq->items));
    seq->items[0] = ds_done(item);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_SR, "1.2.3.12", TS_ELE);
    f = slurp(out, &n);
    CHECK(find(f, n, sq, sizeof(sq)) > 0);
    CHECK(find(f, n, "No acute findings \\ with a backslash", 36) > 0);
    CHECK(find(f, n, "121071", 6) > 0);
    free(f);
}

static void
test_private_and_inline(void)
{
    static const unsigned char icc[5] = { 9, 8, 7, 6, 5 };
    static const unsigned char lut[4] = { 0x34, 0x12, 0x78, 0x56 };
    const unsigned char creator[16] = { 0x09, 0x00, 0x10, 0x00, 'L', 'O', 4, 0,
                                        'A', 'C', 'M', 'E' };
    const unsigned char priv[14] = { 0x09, 0x00, 0x01, 0x10, 'L', 'O', 6, 0,
                                     'h', 'e', 'l', 'l', 'o', ' ' };
    const unsigned char icc_el[18] = { 0x28, 0x00, 0x00, 0x20, 'O', 'B', 0, 0, 6, 0, 0, 0,
                                       9, 8, 7, 6, 5, 0 };
    const unsigned char lut_el[16] = { 0x28, 0x00, 0x01, 0x12, 'O', 'W', 0, 0, 4, 0, 0, 0,
                                       0x34, 0x12, 0x78, 0x56 };
    const unsigned char us_el[12] = { 0x28, 0x00, 0x34, 0x00, 'U', 'S', 4, 0, 1, 0, 2, 0 };
    const unsigned char ss_el[10] = { 0x28, 0x00, 0x06, 0x01, 'S', 'S', 2, 0, 0xFB, 0xFF };
    const unsigned char at_el[12] = { 0x20, 0x00, 0x20, 0x90, 'A', 'T', 4, 0,
                                      0x10, 0x00, 0x20, 0x00 };
    const unsigned char fl_el[12] = { 0x18, 0x00, 0x10, 0x90, 'F', 'L', 4, 0,
                                      0x00, 0x00, 0xC0, 0x3F };
    ds_builder_t *b = ds_new();
    stowrs_meta_elem_t *e;
    const char *out = tmp_path("priv.dcm");
    size_t n;
    unsigned char *f;

    ds_val(b, 0x00080016, "UI", CLASS_CT, NULL);
    ds_val(b, 0x00080018, "UI", "1.2.3.13", NULL);
    e = ds_val(b, 0x00091001, "LO", "hello", NULL);
    e->private_creator = "ACME";
    ds_inline(b, 0x00282000, "OB", icc, sizeof(icc));
    ds_inline(b, 0x00281201, "OW", lut, sizeof(lut));
    ds_val(b, 0x00280034, "US", "1", "2", NULL);     /* Pixel Aspect Ratio is IS really;
                                                       any tag takes the VR given */
    ds_val(b, 0x00280106, "SS", "-5", NULL);
    ds_val(b, 0x00209020, "AT", "00100020", NULL);
    ds_val(b, 0x00189010, "FL", "1.5", NULL);
    ds_val(b, 0x00180050, "DS", "0.30000000000000004", NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.13", TS_ELE);
    f = slurp(out, &n);
    CHECK(find(f, n, creator, 12) > 0);
    CHECK(find(f, n, priv, sizeof(priv)) > 0);
    CHECK(find(f, n, icc_el, sizeof(icc_el)) > 0);
    CHECK(find(f, n, lut_el, sizeof(lut_el)) > 0);
    CHECK(find(f, n, us_el, sizeof(us_el)) > 0);
    CHECK(find(f, n, ss_el, sizeof(ss_el)) > 0);
    CHECK(find(f, n, at_el, sizeof(at_el)) > 0);
    CHECK(find(f, n, fl_el, sizeof(fl_el)) > 0);
    CHECK(find(f, n, "DS\x04\x00" "0.3 ", 8) > 0);
    free(f);

    /* the creator element exists with another value: the attribute goes
     * to a block of its own creator (test_private_blocks) */
    ds_val(b, 0x00090010, "LO", "OTHER", NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    for (int i = 0; i < b->ds.nelems; i++) {
        if (b->ds.elems[i].tag == 0x00090010) {
            b->ds.elems[i].values[0] = "ACME";
        }
    }
    CHECK_INT(build(&b->ds, NULL, out, NULL), STOWRS_BUILD_OK);
    f = slurp(out, &n);
    CHECK(find(f, n, creator, 12) > 0);
    CHECK(find(f, n, priv, sizeof(priv)) > 0);
    free(f);
}

/* a dataset of a CT with one private block attribute set, for test_private_blocks */
static ds_builder_t *
ds_priv(const char *iuid)
{
    ds_builder_t *b = ds_new();
    ds_val(b, 0x00080016, "UI", CLASS_CT, NULL);
    ds_val(b, 0x00080018, "UI", iuid, NULL);
    return b;
}

static stowrs_meta_elem_t *
ds_pval(ds_builder_t *b, unsigned int tag, const char *creator, const char *value)
{
    stowrs_meta_elem_t *e = ds_val(b, tag, "LO", value, NULL);
    e->private_creator = creator;
    return e;
}

/* @return the offset of LO element (group,elem) with the (even-length) value @v, or -1 */
static long
find_lo(const unsigned char *f, size_t n, unsigned g, unsigned el, const char *v)
{
    unsigned char e[8 + 64];
    const size_t len = strlen(v);
    e[0] = (unsigned char)g;
    e[1] = (unsigned char)(g >> 8);
    e[2] = (unsigned char)el;
    e[3] = (unsigned char)(el >> 8);
    e[4] = 'L';
    e[5] = 'O';
    e[6] = (unsigned char)len;
    e[7] = 0;
    memcpy(e + 8, v, len);
    return find(f, n, e, 8 + len);
}

/* @return whether the file has an element with tag (group,elem), whatever its VR */
static int
has_tag(const unsigned char *f, size_t n, unsigned g, unsigned el)
{
    const unsigned char t[4] = { (unsigned char)g, (unsigned char)(g >> 8),
                                 (unsigned char)el, (unsigned char)(el >> 8) };
    return find(f, n, t, 4) >= 0;
}

/*
 * A privateCreator names the block of its attribute (PS3.19, dcm4che): the
 * tag's block byte blanked (dcm2xml's gggg00ee), the creator already
 * reserving a block or not, a full tag in its creator's block or in another
 * creator's, inside sequence items (each with its own blocks).
 */
static void
test_private_blocks(void)
{
    const char *out = tmp_path("privblk.dcm");
    ds_builder_t *b, *item;
    stowrs_meta_elem_t *e;
    size_t n;
    unsigned char *f;
    long sq;

    /* blanked block, creator present at (0019,0010) */
    b = ds_priv("1.2.3.60");
    ds_val(b, 0x00190010, "LO", "STOWRS TEST", NULL);
    ds_pval(b, 0x00190001, "STOWRS TEST", "aa");
    ds_pval(b, 0x00190002, "STOWRS TEST ", "bb");     /* LO padding is no difference */
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.60", TS_ELE);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0019, 0x0010, "STOWRS TEST ") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1001, "aa") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1002, "bb") > 0);
    CHECK(!has_tag(f, n, 0x0019, 0x0001));
    CHECK(!has_tag(f, n, 0x0019, 0x0011));
    free(f);

    /* blanked block, creator in the second block */
    b = ds_priv("1.2.3.61");
    ds_val(b, 0x00190010, "LO", "OTHER", NULL);
    ds_val(b, 0x00190011, "LO", "STOWRS TEST", NULL);
    ds_pval(b, 0x00190001, "STOWRS TEST", "aa");
    ds_pval(b, 0x00191001, NULL, "cc");
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0019, 0x1101, "aa") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1001, "cc") > 0);
    free(f);

    /* blanked block, creator not reserved: the first free block is */
    b = ds_priv("1.2.3.62");
    ds_pval(b, 0x00190001, "NEW", "aa");
    ds_pval(b, 0x00190003, "NEW", "dd");
    ds_val(b, 0x00210010, "LO", "OTHER", NULL);
    ds_val(b, 0x00210012, "LO", "THIRD", NULL);
    ds_pval(b, 0x00210005, "NEW", "ee");
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.62", TS_ELE);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0019, 0x0010, "NEW ") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1001, "aa") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1003, "dd") > 0);
    CHECK(!has_tag(f, n, 0x0019, 0x0011));
    CHECK(find_lo(f, n, 0x0021, 0x0010, "OTHER ") > 0);
    CHECK(find_lo(f, n, 0x0021, 0x0011, "NEW ") > 0);
    CHECK(find_lo(f, n, 0x0021, 0x0012, "THIRD ") > 0);
    CHECK(find_lo(f, n, 0x0021, 0x1105, "ee") > 0);
    CHECK(!has_tag(f, n, 0x0021, 0x1005));
    CHECK(!has_tag(f, n, 0x0021, 0x1205));
    free(f);

    /* full tag whose block its creator reserves: kept; a full tag whose
     * block is free reserves that block */
    b = ds_priv("1.2.3.63");
    ds_val(b, 0x00190010, "LO", "OTHER", NULL);
    ds_val(b, 0x00190011, "LO", "ACME", NULL);
    ds_pval(b, 0x00191101, "ACME", "aa");
    ds_pval(b, 0x00191001, "OTHER", "bb");
    ds_pval(b, 0x00193001, "THIRD", "cc");
    ds_pval(b, 0x00190002, "FOURTH", "dd");    /* first free: 0x12 */
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0019, 0x1101, "aa") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1001, "bb") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x0030, "THIRD ") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x3001, "cc") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x0012, "FOURTH") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1202, "dd") > 0);
    free(f);

    /* full tag in a block another creator reserves: moved to its own
     * creator's block, reserved if need be */
    b = ds_priv("1.2.3.64");
    ds_val(b, 0x00190010, "LO", "OTHER", NULL);
    ds_val(b, 0x00190011, "LO", "ACME", NULL);
    ds_pval(b, 0x00191001, "ACME", "aa");
    ds_pval(b, 0x00191102, "NEW", "bb");
    ds_pval(b, 0x00191003, NULL, "cc");        /* no creator named: as given */
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.64", TS_ELE);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0019, 0x0010, "OTHER ") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x0011, "ACME") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x0012, "NEW ") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1101, "aa") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1202, "bb") > 0);
    CHECK(find_lo(f, n, 0x0019, 0x1003, "cc") > 0);
    CHECK(!has_tag(f, n, 0x0019, 0x1001));
    CHECK(!has_tag(f, n, 0x0019, 0x1102));
    free(f);

    /* moved onto an attribute that is there already */
    b = ds_priv("1.2.3.65");
    ds_val(b, 0x00190010, "LO", "ACME", NULL);
    ds_pval(b, 0x00190001, "ACME", "aa");
    ds_pval(b, 0x00191001, "ACME", "bb");
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);

    /* (gggg,0001-000F) without a creator: no legal private element */
    b = ds_priv("1.2.3.66");
    ds_val(b, 0x00190005, "LO", "aa", NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);
    b = ds_priv("1.2.3.66");
    ds_val(b, 0x00190010, "LO", "ACME", NULL);
    ds_pval(b, 0x00190005, "", "aa");
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);

    /* inside a sequence item: the item's own blocks, not the dataset's */
    b = ds_priv("1.2.3.67");
    ds_val(b, 0x00190010, "LO", "ACME", NULL);
    ds_pval(b, 0x00190001, "ACME", "top ");
    item = ds_new();
    ds_val(item, 0x00190010, "LO", "OTHER", NULL);
    ds_pval(item, 0x00190001, "ACME", "in");
    ds_pval(item, 0x00191002, "OTHER", "ot");
    e = ds_add(b, 0x0040A730, "SQ");
    e->nitems = 1;
    e->items = test_alloc(sizeof(*e->items));
    e->items[0] = ds_done(item);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.67", TS_ELE);
    f = slurp(out, &n);
    {
        const unsigned char sqtag[6] = { 0x40, 0x00, 0x30, 0xA7, 'S', 'Q' };
        sq = find(f, n, sqtag, sizeof(sqtag));
    }
    CHECK(sq > 0);
    CHECK(find_lo(f, n, 0x0019, 0x0010, "ACME") > 0 && find_lo(f, n, 0x0019, 0x0010, "ACME") < sq);
    CHECK(find_lo(f, n, 0x0019, 0x1001, "top ") > 0 && find_lo(f, n, 0x0019, 0x1001, "top ") < sq);
    CHECK(find_lo(f, n, 0x0019, 0x0010, "OTHER ") > sq);
    CHECK(find_lo(f, n, 0x0019, 0x0011, "ACME") > sq);
    CHECK(find_lo(f, n, 0x0019, 0x1101, "in") > sq);
    CHECK(find_lo(f, n, 0x0019, 0x1002, "ot") > sq);
    CHECK(!has_tag(f, n, 0x0019, 0x0001));
    free(f);

    /* a blanked block inside an item without creators */
    b = ds_priv("1.2.3.68");
    item = ds_new();
    ds_pval(item, 0x00290001, "ITEM", "it");
    e = ds_add(b, 0x0040A730, "SQ");
    e->nitems = 1;
    e->items = test_alloc(sizeof(*e->items));
    e->items[0] = ds_done(item);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    f = slurp(out, &n);
    CHECK(find_lo(f, n, 0x0029, 0x0010, "ITEM") > 0);
    CHECK(find_lo(f, n, 0x0029, 0x1001, "it") > 0);
    free(f);
}

static void
test_failures(void)
{
    static const unsigned char px[16] = { 0 };
    bulk_table_t t = { 0 };
    const char *out = tmp_path("fail.dcm");
    ds_builder_t *b;
    int ose = 0;

    /* BulkData URI with no part */
    b = ds_image(CLASS_CT, "1.2.3.14", "2", "16");
    ds_bulk(b, 0x7FE00010, "OW", "nothere");
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_BULK_MISSING);
    CHECK_INT(build(&b->ds, NULL, out, NULL), STOWRS_BUILD_BULK_MISSING);
    b = ds_new();
    ds_val(b, 0x00080016, "UI", CLASS_PDF, NULL);
    ds_val(b, 0x00080018, "UI", "1.2.3.14", NULL);
    ds_bulk(b, 0x00420011, "OB", "nodoc");
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_BULK_MISSING);

    /* native pixel data without Rows */
    add_part(&t, "px", write_part("f.raw", px, sizeof(px)), "application/octet-stream", NULL);
    b = ds_image(CLASS_CT, "1.2.3.15", NULL, "16");
    ds_bulk(b, 0x7FE00010, "OW", "px");
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_IMAGE_ATTRS);
    /* Bits Stored over Bits Allocated */
    b = ds_image(CLASS_CT, "1.2.3.15", "2", "16");
    for (int i = 0; i < b->ds.nelems; i++) {
        if (b->ds.elems[i].tag == 0x00280101) {
            b->ds.elems[i].values[0] = "17";
        }
    }
    ds_bulk(b, 0x7FE00010, "OW", "px");
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_IMAGE_ATTRS);

    /* no SOP Instance UID; a bad number; an unknown VR */
    b = ds_new();
    ds_val(b, 0x00080016, "UI", CLASS_CT, NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);
    ds_val(b, 0x00080018, "UI", "1.2.3.16", NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_OK);
    ds_val(b, 0x00280010, "US", "70000", NULL);
    CHECK_INT(build(ds_done(b), NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);
    b->ds.elems[b->ds.nelems - 1].values[0] = "12abc";
    CHECK_INT(build(&b->ds, NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);
    b->ds.elems[b->ds.nelems - 1].values[0] = "512";
    memcpy(b->ds.elems[b->ds.nelems - 1].vr, "XX", 2);
    CHECK_INT(build(&b->ds, NULL, out, NULL), STOWRS_BUILD_BAD_METADATA);
    memcpy(b->ds.elems[b->ds.nelems - 1].vr, "US", 2);
    CHECK_INT(build(&b->ds, NULL, out, NULL), STOWRS_BUILD_OK);

    /* ENOSPC reaches the caller */
    if (access("/dev/full", W_OK) == 0) {
        CHECK_INT(build(&b->ds, NULL, "/dev/full", &ose), STOWRS_BUILD_IO);
        CHECK_INT(ose, ENOSPC);
    }
    /* an output file that cannot be created */
    CHECK_INT(build(&b->ds, NULL, "/nonexistent/dir/x.dcm", &ose), STOWRS_BUILD_IO);
    CHECK_INT(ose, ENOENT);
}

/* attributes after Pixel Data are written after it */
static void
test_trailer(void)
{
    static const unsigned char px[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    static const unsigned char pad[4] = { 0, 0, 0, 0 };
    const unsigned char tail[24] = { 1, 2, 3, 4, 5, 6, 7, 8,
                                     0xFC, 0xFF, 0xFC, 0xFF, 'O', 'B', 0, 0, 4, 0, 0, 0,
                                     0, 0, 0, 0 };
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_image(CLASS_CT, "1.2.3.17", "2", "8");
    const char *out = tmp_path("trailer.dcm");
    size_t n;
    unsigned char *f;

    ds_bulk(b, 0x7FE00010, "OB", "px");
    ds_inline(b, 0xFFFCFFFC, "OB", pad, sizeof(pad));
    add_part(&t, "px", write_part("t.raw", px, sizeof(px)), "application/octet-stream", NULL);
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, "1.2.3.17", TS_ELE);
    f = slurp(out, &n);
    CHECK(n > sizeof(tail) && memcmp(f + n - sizeof(tail), tail, sizeof(tail)) == 0);
    free(f);
}

static long
max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 512 MB of native pixel data, built with a few MB of memory */
static void
test_large(void)
{
    const unsigned long long size = 512ull * 1024 * 1024;
    bulk_table_t t = { 0 };
    ds_builder_t *b = ds_image(CLASS_CT, "1.2.3.18", "16384", "16");
    char *part = tmp_path("big.raw");
    const char *out = tmp_path("big.dcm");
    struct stat st;
    long before, after;
    int fd;

    /* 16384 x 16384 x 2 bytes = 512 MiB; a sparse file reads as zeros */
    for (int i = 0; i < b->ds.nelems; i++) {
        if (b->ds.elems[i].tag == 0x00280011) {
            b->ds.elems[i].values[0] = "16384";
        }
    }
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
    /* a marker at the end: the copy must reach it */
    CHECK(pwrite(fd, "END!", 4, (off_t)size - 4) == 4);
    close(fd);
    ds_bulk(b, 0x7FE00010, "OW", "big");
    add_part(&t, "big", part, "application/octet-stream", NULL);
    before = max_rss_kb();
    CHECK_INT(build(ds_done(b), &t, out, NULL), STOWRS_BUILD_OK);
    after = max_rss_kb();
    printf("512 MiB native build: max RSS %ld kB before, %ld kB after (+%ld kB)\n",
           before, after, after - before);
    CHECK(after - before < 32 * 1024);
    check_inspect(out, CLASS_CT, "1.2.3.18", TS_ELE);
    CHECK(stat(out, &st) == 0 && (unsigned long long)st.st_size > size);
    fd = open(out, O_RDONLY);
    if (fd >= 0) {
        unsigned char h[16];
        CHECK(pread(fd, h, 16, st.st_size - (off_t)size - 12) == 16);
        CHECK(memcmp(h, "\xE0\x7F\x10\x00OW\x00\x00\x00\x00\x00\x20\x00\x00\x00\x00", 16) == 0);
        CHECK(pread(fd, h, 4, st.st_size - 4) == 4 && memcmp(h, "END!", 4) == 0);
        close(fd);
    }
    unlink(out);
    unlink(part);
}

/* --- character sets: UTF-8 metadata vs the declared (0008,0005) ---------- */

/* occurrences of needle */
static int
count(const unsigned char *hay, size_t n, const void *needle, size_t m)
{
    int c = 0;
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0) {
            c++;
        }
    }
    return c;
}

/* (0008,0005) CS with a 10-byte value, as written */
#define SCS(v)      "\x08\x00\x05\x00" "CS\x0a\x00" v
#define SCS_LEN     18
#define SCS_TAG     "\x08\x00\x05\x00" "CS"

static ds_builder_t *
cs_dataset(const char *iuid, const char *charset)
{
    ds_builder_t *b = ds_new();
    ds_val(b, 0x00080016, "UI", CLASS_CT, NULL);
    ds_val(b, 0x00080018, "UI", iuid, NULL);
    if (charset) {
        ds_val(b, 0x00080005, "CS", charset, NULL);
    }
    return b;
}

/* build, check it is readable, return the file */
static unsigned char *
cs_build(ds_builder_t *b, const char *iuid, bulk_table_t *t, size_t *n)
{
    const char *out = tmp_path("cs.dcm");
    CHECK_INT(build(ds_done(b), t, out, NULL), STOWRS_BUILD_OK);
    check_inspect(out, CLASS_CT, iuid, TS_ELE);
    return slurp(out, n);
}

static stowrs_meta_elem_t *
add_items(ds_builder_t *b, unsigned int tag, int n, ds_builder_t **items)
{
    stowrs_meta_elem_t *e = ds_add(b, tag, "SQ");
    e->nitems = n;
    e->items = test_alloc((size_t)n * sizeof(*e->items));
    for (int i = 0; i < n; i++) {
        e->items[i] = ds_done(items[i]);
    }
    return e;
}

static void
test_charset(void)
{
    static const unsigned char latin1_raw[4] = { 'R', 0xE4, 'w', ' ' };  /* "Räw " */
    ds_builder_t *b;
    size_t n;
    unsigned char *f;

    /* Latin-1 declared: the values are stored in Latin-1 */
    b = cs_dataset("1.2.3.30", "ISO_IR 100");
    ds_val(b, 0x00100010, "PN", "M\xc3\xbcller^J\xc3\xbcrgen", NULL);
    ds_val(b, 0x00081030, "LO", "Kopf\xc3\xbc" "bersicht \xc3\x9f", NULL);
    ds_val(b, 0x00081090, "LO", "Plain", NULL);
    f = cs_build(b, "1.2.3.30", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 100"), SCS_LEN) > 0);
    CHECK(find(f, n, "PN\x0e\x00M\xfcller^J\xfcrgen ", 18) > 0);
    CHECK(find(f, n, "LO\x10\x00Kopf\xfc" "bersicht \xdf ", 20) > 0);
    CHECK(find(f, n, "\xc3", 1) < 0);
    CHECK(find(f, n, "Plain", 5) > 0);
    free(f);

    /* Latin-1 declared, a character outside it: all stays UTF-8, declared so */
    b = cs_dataset("1.2.3.31", "ISO_IR 100");
    ds_val(b, 0x00100010, "PN", "M\xc3\xbcller^J\xc3\xbcrgen", NULL);
    ds_val(b, 0x00081030, "LO", "\xce\xa9mega", NULL);
    f = cs_build(b, "1.2.3.31", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 192"), SCS_LEN) > 0);
    CHECK_INT(count(f, n, SCS_TAG, 6), 1);
    CHECK(find(f, n, "M\xc3\xbcller^J\xc3\xbcrgen", 15) > 0);
    CHECK(find(f, n, "\xce\xa9mega", 6) > 0);
    free(f);

    /* nothing declared, non-ASCII: ISO_IR 192 is added */
    b = cs_dataset("1.2.3.32", NULL);
    ds_val(b, 0x00100010, "PN", "M\xc3\xbcller", NULL);
    f = cs_build(b, "1.2.3.32", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 192"), SCS_LEN) > 0);
    CHECK(find(f, n, "M\xc3\xbcller", 7) > 0);
    free(f);

    /* declared empty, or unknown, or with code extensions: ISO_IR 192 */
    {
        const char *const decls[] = { NULL, "ISO_IR 999", "ISO 2022 IR 6\\ISO 2022 IR 100",
                                      "ISO_IR 6" };
        for (size_t i = 0; i < sizeof(decls) / sizeof(decls[0]); i++) {
            b = cs_dataset("1.2.3.33", NULL);
            ds_val(b, 0x00080005, "CS", decls[i], NULL);   /* NULL: one empty value */
            ds_val(b, 0x00100010, "PN", "M\xc3\xbcller", NULL);
            f = cs_build(b, "1.2.3.33", NULL, &n);
            CHECK(find(f, n, SCS("ISO_IR 192"), SCS_LEN) > 0);
            CHECK_INT(count(f, n, SCS_TAG, 6), 1);
            CHECK(find(f, n, "M\xc3\xbcller", 7) > 0);
            free(f);
        }
    }

    /* pure ASCII: nothing added, a declaration kept */
    b = cs_dataset("1.2.3.34", NULL);
    ds_val(b, 0x00100010, "PN", "Doe^John", NULL);
    ds_val(b, 0x00081030, "LO", "Head", NULL);
    f = cs_build(b, "1.2.3.34", NULL, &n);
    CHECK(find(f, n, SCS_TAG, 6) < 0);
    CHECK(find(f, n, "Doe^John", 8) > 0);
    free(f);
    b = cs_dataset("1.2.3.34", "ISO_IR 100");
    ds_val(b, 0x00100010, "PN", "Doe^John", NULL);
    f = cs_build(b, "1.2.3.34", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 100"), SCS_LEN) > 0);
    free(f);

    /* UTF-8 declared: untouched; non-ASCII in other VRs does not count */
    b = cs_dataset("1.2.3.35", "ISO_IR 192");
    ds_val(b, 0x00100010, "PN", "M\xc3\xbcller^J\xc3\xbcrgen", NULL);
    f = cs_build(b, "1.2.3.35", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 192"), SCS_LEN) > 0);
    CHECK(find(f, n, "M\xc3\xbcller^J\xc3\xbcrgen", 15) > 0);
    free(f);
    b = cs_dataset("1.2.3.35", NULL);
    ds_val(b, 0x00080060, "CS", "\xc3\x9c", NULL);    /* invalid CS, but no text VR */
    f = cs_build(b, "1.2.3.35", NULL, &n);
    CHECK(find(f, n, SCS_TAG, 6) < 0);
    free(f);

    /* Greek; a value by InlineBinary is bytes already encoded: kept */
    b = cs_dataset("1.2.3.36", "ISO_IR 126");
    ds_val(b, 0x00100010, "PN", "\xce\xa9mega^\xce\xb1", NULL);
    ds_inline(b, 0x00204000, "LT", latin1_raw, sizeof(latin1_raw));
    f = cs_build(b, "1.2.3.36", NULL, &n);
    CHECK(find(f, n, SCS("ISO_IR 126"), SCS_LEN) > 0);
    CHECK(find(f, n, "PN\x08\x00\xd9mega^\xe1 ", 12) > 0);
    CHECK(find(f, n, "LT\x04\x00R\xe4w ", 8) > 0);
    free(f);

    /* nested items: one inherits Latin-1, one declares Greek, one declares
     * Latin-1 but cannot be converted (only that item becomes UTF-8), one
     * declares UTF-8; a sequence inside an inheriting item inherits too */
    {
        ds_builder_t *items[4], *deep = ds_new();
        b = cs_dataset("1.2.3.37", "ISO_IR 100");
        ds_val(b, 0x00100010, "PN", "J\xc3\xbcrgen", NULL);
        ds_val(deep, 0x00080104, "LO", "\xc3\xa9t\xc3\xa9", NULL);
        items[0] = ds_new();
        ds_val(items[0], 0x00081030, "LO", "Stra\xc3\x9f" "e", NULL);
        add_items(items[0], 0x00082218, 1, &deep);
        items[1] = ds_new();
        ds_val(items[1], 0x00080005, "CS", "ISO_IR 126", NULL);
        ds_val(items[1], 0x00081030, "LO", "\xce\x94\xce\xb5", NULL);
        items[2] = ds_new();
        ds_val(items[2], 0x00080005, "CS", "ISO_IR 100", NULL);
        ds_val(items[2], 0x00081030, "LO", "\xc3\xa4\xce\xa9", NULL);
        items[3] = ds_new();
        ds_val(items[3], 0x00080005, "CS", "ISO_IR 192", NULL);
        ds_val(items[3], 0x00081030, "LO", "\xc3\xb6\xc3\xb6", NULL);
        add_items(b, 0x00081140, 4, items);
        f = cs_build(b, "1.2.3.37", NULL, &n);
        CHECK_INT(count(f, n, SCS("ISO_IR 100"), SCS_LEN), 1);
        CHECK_INT(count(f, n, SCS("ISO_IR 126"), SCS_LEN), 1);
        CHECK_INT(count(f, n, SCS("ISO_IR 192"), SCS_LEN), 2);
        CHECK(find(f, n, "PN\x06\x00J\xfcrgen", 10) > 0);
        CHECK(find(f, n, "LO\x06\x00Stra\xdf" "e", 10) > 0);
        CHECK(find(f, n, "LO\x04\x00\xe9t\xe9 ", 8) > 0);
        CHECK(find(f, n, "LO\x02\x00\xc4\xe5", 6) > 0);
        CHECK(find(f, n, "LO\x04\x00\xc3\xa4\xce\xa9", 8) > 0);
        CHECK(find(f, n, "LO\x04\x00\xc3\xb6\xc3\xb6", 8) > 0);
        free(f);
    }

    /* attributes after Pixel Data follow the dataset's character set */
    {
        static const unsigned char px[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
        bulk_table_t t = { 0 };
        b = ds_image(CLASS_CT, "1.2.3.38", "2", "8");
        ds_val(b, 0x00080005, "CS", "ISO_IR 100", NULL);
        ds_bulk(b, 0x7FE00010, "OB", "px");
        ds_val(b, 0x7FE10010, "LO", "G\xc3\xbcnther", NULL);
        add_part(&t, "px", write_part("cs.raw", px, sizeof(px)), "application/octet-stream",
                 NULL);
        f = cs_build(b, "1.2.3.38", &t, &n);
        CHECK(find(f, n, SCS("ISO_IR 100"), SCS_LEN) > 0);
        CHECK(n > 16 && memcmp(f + n - 16, "\xe1\x7f\x10\x00LO\x08\x00G\xfcnther ", 16) == 0);
        free(f);
    }
}

/* --- the JSON description mode (t/test_015_build.py) ---------------------- */

static int
b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static unsigned char *
b64decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    unsigned char *out = malloc(n / 4 * 3 + 3);
    unsigned long acc = 0;
    int bits = 0;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            continue;                       /* '=' and white space */
        }
        acc = (acc << 6) | (unsigned long)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[(*len)++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    return out;
}

static char *
json_number_text(json_t *v)
{
    char buf[64];
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    }
    else {
        snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
    }
    return strdup(buf);
}

static stowrs_meta_ds_t *from_json(json_t *obj);

static char *
pn_text(json_t *v)
{
    const char *parts[3] = { "Alphabetic", "Ideographic", "Phonetic" };
    char buf[1024] = "";
    int last = -1;
    for (int i = 0; i < 3; i++) {
        if (json_string_value(json_object_get(v, parts[i]))) {
            last = i;
        }
    }
    for (int i = 0; i <= last; i++) {
        const char *s = json_string_value(json_object_get(v, parts[i]));
        if (i > 0) {
            strncat(buf, "=", sizeof(buf) - strlen(buf) - 1);
        }
        strncat(buf, s ? s : "", sizeof(buf) - strlen(buf) - 1);
    }
    return strdup(buf);
}

static stowrs_meta_ds_t *
from_json(json_t *obj)
{
    ds_builder_t *b = ds_new();
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        const char *vr = json_string_value(json_object_get(val, "vr"));
        json_t *values = json_object_get(val, "Value");
        json_t *inl = json_object_get(val, "InlineBinary");
        json_t *uri = json_object_get(val, "BulkDataURI");
        stowrs_meta_elem_t *e = ds_add(b, (unsigned int)strtoul(key, NULL, 16), vr ? vr : "UN");
        if (json_is_string(uri)) {
            e->bulk_uri = test_keep(strdup(json_string_value(uri)));
        }
        else if (json_is_string(inl)) {
            size_t len;
            e->has_inline = 1;
            e->inline_data = test_keep(b64decode(json_string_value(inl), &len));
            e->inline_len = len;
        }
        else if (json_is_array(values) && strcmp(e->vr, "SQ") == 0) {
            size_t i;
            json_t *it;
            e->nitems = (int)json_array_size(values);
            e->items = test_alloc((json_array_size(values) + 1) * sizeof(*e->items));
            json_array_foreach(values, i, it) {
                e->items[i] = from_json(it);
            }
        }
        else if (json_is_array(values)) {
            size_t i;
            json_t *it;
            const char **v = test_alloc((json_array_size(values) + 1) * sizeof(*v));
            e->nvalues = (int)json_array_size(values);
            json_array_foreach(values, i, it) {
                if (json_is_string(it)) {
                    v[i] = test_keep(strdup(json_string_value(it)));
                }
                else if (json_is_number(it)) {
                    v[i] = test_keep(json_number_text(it));
                }
                else if (json_is_object(it)) {
                    v[i] = test_keep(pn_text(it));
                }
            }
            e->values = v;
        }
    }
    return ds_done(b);
}

static int
json_mode(const char *desc, const char *out)
{
    json_error_t jerr;
    json_t *root = json_load_file(desc, 0, &jerr);
    json_t *parts, *list;
    const char *uri;
    bulk_table_t *t = test_alloc(sizeof(*t));
    char err[256];
    int ose = 0;
    stowrs_build_rc_e rc;

    if (root == NULL) {
        fprintf(stderr, "%s: %s\n", desc, jerr.text);
        return 2;
    }
    parts = json_object_get(root, "parts");
    json_object_foreach(parts, uri, list) {
        size_t i;
        json_t *p;
        json_array_foreach(list, i, p) {
            const char *ts = json_string_value(json_object_get(p, "transfer_syntax"));
            add_part(t, test_keep(strdup(uri)),
                     test_keep(strdup(json_string_value(json_object_get(p, "path")))),
                     test_keep(strdup(json_string_value(json_object_get(p, "media_type")))),
                     ts ? test_keep(strdup(ts)) : NULL);
        }
    }
    rc = stowrs_dicom_build(from_json(json_object_get(root, "dataset")), resolve, t, out,
                            &ose, err, sizeof(err));
    printf("%d %d %s\n", (int)rc, ose, err);
    json_decref(root);
    return 0;
}

/* --- main ---------------------------------------------------------------- */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int
main(int argc, char **argv)
{
    char err[256];

    if (stowrs_dicom_global_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "global init: %s\n", err);
        return 1;
    }
    if (argc == 4 && strcmp(argv[1], "--json") == 0) {
        int rc = json_mode(argv[2], argv[3]);

        test_free_all();
        return rc;
    }
    strcpy(dir, "/tmp/test_build.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_large();                  /* first: the RSS baseline is the smallest */
    test_native_ct();
    test_native_odd();
    test_jpeg_frames();
    test_media_types();
    test_pdf();
    test_sr_sequence();
    test_private_and_inline();
    test_private_blocks();
    test_failures();
    test_trailer();
    test_charset();
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    test_free_all();
    return unit_summary();
}
