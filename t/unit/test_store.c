/*
 * Unit tests of stowrs_store.c: the layout check and expansion, the spool
 * (coalesced writes, cleanup, flock), publishing with the overwrite
 * policies and the A77B rule through the index, and the startup sweep.
 * Every case runs in its own directory made by mkdtemp(3) under /tmp and
 * removed afterwards; every part gets its own subpool, as in the handler.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "stowrs_store.h"
#include "stowrs_uid.h"
#include "unit.h"

#define CLASS_CT  "1.2.840.10008.5.1.4.1.1.2"
#define CLASS_MR  "1.2.840.10008.5.1.4.1.1.4"
#define STUDY_A   "1.2.3.1"
#define STUDY_B   "1.2.3.2"
#define SERIES_A  "1.2.3.1.1"
#define SERIES_B  "1.2.3.1.2"
#define SOP_1     "1.2.3.1.1.1"
#define SOP_2     "1.2.3.1.1.2"
#define SOP_3     "1.2.3.1.1.3"
#define CLASS_LAYOUT \
    "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPClassUID}/{SOPInstanceUID}.dcm"

/* --- helpers ------------------------------------------------------------ */

typedef struct {
    apr_pool_t *pool;           /* the case's pool */
    char *root;                 /* mkdtemp directory */
    const char *archive;        /* {root}/archive */
    stowrs_store_conf_t conf;
    char *buf;                  /* the caller's write buffer */
    apr_size_t bufsize;
} fixture_t;

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) {
        fprintf(stderr, "remove %s: %s\n", path, strerror(errno));
    }
    return 0;
}

static void
rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
fixture_init(fixture_t *f, apr_pool_t *parent, const char *format,
             stowrs_overwrite_e overwrite, int sync, apr_size_t bufsize)
{
    char tmpl[] = "/tmp/stowrs-store-XXXXXX";
    char *dir;

    memset(f, 0, sizeof(*f));
    apr_pool_create(&f->pool, parent);
    dir = mkdtemp(tmpl);
    if (!dir) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        exit(2);
    }
    f->root = apr_pstrdup(f->pool, dir);
    f->archive = apr_pstrcat(f->pool, f->root, "/archive", NULL);
    f->conf.archive = f->archive;
    f->conf.path_format = format;
    f->conf.sync = sync;
    f->conf.overwrite = overwrite;
    f->bufsize = bufsize;
    f->buf = apr_palloc(f->pool, bufsize);
    CHECK_INT(stowrs_store_prepare(f->pool, f->archive), APR_SUCCESS);
}

static void
fixture_done(fixture_t *f)
{
    rm_rf(f->root);
    apr_pool_destroy(f->pool);
}

static const char *
apath(const fixture_t *f, const char *rel)
{
    return apr_pstrcat(f->pool, f->archive, "/", rel, NULL);
}

/* Entries of a directory other than "." and "..", or -1. */
static int
count_entries(const char *path)
{
    apr_pool_t *p;
    apr_dir_t *dir;
    apr_finfo_t fi;
    int n = 0;

    apr_pool_create(&p, NULL);
    if (apr_dir_open(&dir, path, p) != APR_SUCCESS) {
        apr_pool_destroy(p);
        return -1;
    }
    while (apr_dir_read(&fi, APR_FINFO_NAME, dir) == APR_SUCCESS) {
        if (strcmp(fi.name, ".") != 0 && strcmp(fi.name, "..") != 0) {
            n++;
        }
    }
    apr_dir_close(dir);
    apr_pool_destroy(p);
    return n;
}

static int
spool_entries(const fixture_t *f)
{
    return count_entries(apath(f, STOWRS_STORE_SPOOL_DIR));
}

static int
exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static int
is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static ino_t
inode_of(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* The whole file, NULL if it cannot be read. */
static char *
slurp(apr_pool_t *pool, const char *path, apr_size_t *len)
{
    apr_file_t *fd;
    apr_finfo_t fi;
    char *data;

    *len = 0;
    if (apr_file_open(&fd, path, APR_FOPEN_READ, APR_OS_DEFAULT, pool) != APR_SUCCESS) {
        return NULL;
    }
    if (apr_file_info_get(&fi, APR_FINFO_SIZE, fd) != APR_SUCCESS) {
        apr_file_close(fd);
        return NULL;
    }
    data = apr_palloc(pool, (apr_size_t)fi.size + 1);
    if (fi.size > 0
        && apr_file_read_full(fd, data, (apr_size_t)fi.size, NULL) != APR_SUCCESS) {
        apr_file_close(fd);
        return NULL;
    }
    apr_file_close(fd);
    data[fi.size] = '\0';
    *len = (apr_size_t)fi.size;
    return data;
}

static int
file_equals(apr_pool_t *pool, const char *path, const char *want, apr_size_t want_len)
{
    apr_size_t len;
    const char *got = slurp(pool, path, &len);

    return got && len == want_len && memcmp(got, want, len) == 0;
}

static char *
readlink_str(apr_pool_t *pool, const char *path)
{
    char got[PATH_MAX];
    ssize_t n = readlink(path, got, sizeof(got) - 1);

    if (n < 0) {
        return NULL;
    }
    got[n] = '\0';
    return apr_pstrdup(pool, got);
}

/* Bytes that differ with @c seed and with the offset. */
static char *
pattern(apr_pool_t *pool, apr_size_t len, unsigned seed)
{
    char *p = apr_palloc(pool, len + 1);
    apr_size_t i;
    unsigned x = seed * 2654435761u + 1;

    for (i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)(x >> 16);
    }
    p[len] = '\0';
    return p;
}

/*
 * One part as the handler does it: a subpool, spool, write in one piece,
 * close, publish, destroy the subpool. The final path is copied to the
 * fixture's pool.
 */
static apr_status_t
store_part(fixture_t *f, const char *data, apr_size_t len, const char *sop_class,
           const char *study, const char *series, const char *sop,
           stowrs_publish_e *result, const char **final_path)
{
    apr_pool_t *part;
    stowrs_spool_t *s = NULL;
    const char *fp = NULL;
    apr_status_t rv;

    *result = (stowrs_publish_e)-1;
    *final_path = NULL;
    apr_pool_create(&part, f->pool);
    rv = stowrs_store_spool_open(part, &f->conf, f->buf, f->bufsize, &s);
    if (rv == APR_SUCCESS) {
        rv = stowrs_store_spool_write(s, data, len);
    }
    if (rv == APR_SUCCESS) {
        rv = stowrs_store_spool_close(s);
    }
    if (rv == APR_SUCCESS) {
        rv = stowrs_store_publish(s, sop_class, study, series, sop, result, &fp);
    }
    if (fp) {
        *final_path = apr_pstrdup(f->pool, fp);
    }
    apr_pool_destroy(part);
    CHECK_INT(spool_entries(f), 0);
    return rv;
}

/* --- the layout ----------------------------------------------------------- */

static void
test_check_format(apr_pool_t *pool)
{
    static const char *const good[] = {
        STOWRS_STORE_DEFAULT_FORMAT,
        "{SOPInstanceUID}",
        "{SOPInstanceUID}.dcm",
        "{SOPClassUID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
        "dicom/{StudyInstanceUID}/{SOPInstanceUID}",
        "x{StudyInstanceUID}-{SeriesInstanceUID}_{SOPInstanceUID}.dcm",
        "{SOPInstanceUID}/{SOPInstanceUID}.dcm",
        "a.b/{SOPInstanceUID}",
    };
    static const char *const bad[] = {
        "",
        /* a leading dot could reach the spool or index directory */
        "..{SOPInstanceUID}",
        ".stowrs-tmp/{SOPInstanceUID}.dcm",
        ".stowrs-index/{SOPInstanceUID}",
        "/{SOPInstanceUID}.dcm",
        "/abs/{StudyInstanceUID}/{SOPInstanceUID}.dcm",
        "{StudyInstanceUID}/{SeriesInstanceUID}/{Foo}.dcm",
        "{SOPInstanceUID}{PatientID}",
        "{sopinstanceuid}.dcm",
        "{SOPInstanceUID",
        "{",
        "../{SOPInstanceUID}.dcm",
        "a/../{SOPInstanceUID}.dcm",
        "{StudyInstanceUID}/..",
        "./{SOPInstanceUID}.dcm",
        "a/./{SOPInstanceUID}.dcm",
        "a//{SOPInstanceUID}",
        "{StudyInstanceUID}//{SOPInstanceUID}.dcm",
        "{SOPInstanceUID}/",
        "{StudyInstanceUID}/{SeriesInstanceUID}.dcm",
        "{SOPClassUID}/x.dcm",
        "plain.dcm",
        "}{SOPInstanceUID}",
        "{SOPInstanceUID}}.dcm",
        "{SOPInstanceUID}\n.dcm",
        "{SOPInstanceUID}\t",
        "a\x01/{SOPInstanceUID}",
        "a\\{SOPInstanceUID}",
    };
    apr_size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *msg = stowrs_store_check_format(pool, good[i]);

        if (msg) {
            fprintf(stderr, "layout \"%s\" refused: %s\n", good[i], msg);
        }
        CHECK(msg == NULL);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *msg = stowrs_store_check_format(pool, bad[i]);

        if (!msg) {
            fprintf(stderr, "layout \"%s\" accepted\n", bad[i]);
        }
        CHECK(msg != NULL && *msg != '\0');
    }
    CHECK(stowrs_store_check_format(pool, NULL) != NULL);
}

static void
test_expand(apr_pool_t *pool)
{
    /* 64 characters, the longest UID. */
    const char *sop64 = "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18"
                        ".19.20.21.22.23.24.2";
    const char *rel;
    const char *fmt;
    const char *want;
    int i;

    CHECK_INT(strlen(sop64), 64);
    CHECK_INT(stowrs_uid_valid(sop64), 1);

    CHECK_STR(stowrs_store_expand(pool, STOWRS_STORE_DEFAULT_FORMAT, CLASS_CT,
                                  STUDY_A, SERIES_A, SOP_1),
              STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
    CHECK_STR(stowrs_store_expand(pool, "{SOPInstanceUID}.dcm", CLASS_CT,
                                  STUDY_A, SERIES_A, SOP_1),
              SOP_1 ".dcm");
    CHECK_STR(stowrs_store_expand(pool, "{SOPClassUID}/{SOPInstanceUID}", CLASS_CT,
                                  STUDY_A, SERIES_A, SOP_1),
              CLASS_CT "/" SOP_1);
    CHECK_STR(stowrs_store_expand(pool, "by-class/{SOPClassUID}/{StudyInstanceUID}"
                                  "/{SOPInstanceUID}.{SOPClassUID}", CLASS_MR,
                                  STUDY_A, SERIES_A, SOP_1),
              "by-class/" CLASS_MR "/" STUDY_A "/" SOP_1 "." CLASS_MR);

    /* Repeated tokens. */
    CHECK_STR(stowrs_store_expand(pool, "{StudyInstanceUID}/{StudyInstanceUID}"
                                  "-{SeriesInstanceUID}/{SOPInstanceUID}"
                                  "/{SOPInstanceUID}.dcm",
                                  CLASS_CT, STUDY_A, SERIES_A, SOP_1),
              STUDY_A "/" STUDY_A "-" SERIES_A "/" SOP_1 "/" SOP_1 ".dcm");
    rel = stowrs_store_expand(pool, "{SOPInstanceUID}/{SOPInstanceUID}/{SOPInstanceUID}"
                              "/{SOPInstanceUID}", "1", "1", "1", sop64);
    CHECK_STR(rel, apr_pstrcat(pool, sop64, "/", sop64, "/", sop64, "/", sop64, NULL));

    /* Literal text that looks like the start of a token. */
    CHECK_STR(stowrs_store_expand(pool, "{SOPInstanceUID}.{dcm", CLASS_CT,
                                  STUDY_A, SERIES_A, SOP_1),
              SOP_1 ".{dcm");

    /* Any checked layout expands, however often a token repeats. */
    fmt = "{SOPInstanceUID}";
    want = sop64;
    for (i = 1; i < 8; i++) {
        fmt = apr_pstrcat(pool, fmt, "/{SOPInstanceUID}", NULL);
        want = apr_pstrcat(pool, want, "/", sop64, NULL);
    }
    CHECK(stowrs_store_check_format(pool, fmt) == NULL);
    rel = stowrs_store_expand(pool, fmt, "1.2", "1.2", "1.2", sop64);
    if (!rel) {
        fprintf(stderr, "expand of a checked layout (8 x {SOPInstanceUID}, 64-char UID)"
                " returned NULL\n");
    }
    CHECK_STR(rel, want);
}

/* --- prepare ------------------------------------------------------------ */

static void
test_prepare(apr_pool_t *pool)
{
    fixture_t f;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, 0, 4096);
    CHECK(is_dir(f.archive));
    CHECK(is_dir(apath(&f, STOWRS_STORE_SPOOL_DIR)));
    CHECK(is_dir(apath(&f, STOWRS_STORE_INDEX_DIR)));
    CHECK_INT(spool_entries(&f), 0);
    /* Idempotent. */
    CHECK_INT(stowrs_store_prepare(f.pool, f.archive), APR_SUCCESS);
    CHECK_INT(stowrs_store_prepare(f.pool, f.archive), APR_SUCCESS);
    CHECK(is_dir(apath(&f, STOWRS_STORE_SPOOL_DIR)));
    CHECK(is_dir(apath(&f, STOWRS_STORE_INDEX_DIR)));
    CHECK_INT(count_entries(f.archive), 2);
    /* A deeper archive is made with its parents. */
    CHECK_INT(stowrs_store_prepare(f.pool, apr_pstrcat(f.pool, f.root, "/a/b/c", NULL)),
              APR_SUCCESS);
    CHECK(is_dir(apr_pstrcat(f.pool, f.root, "/a/b/c/" STOWRS_STORE_INDEX_DIR, NULL)));
    fixture_done(&f);
}

/* --- the spool ---------------------------------------------------------- */

static void
spool_writes(apr_pool_t *pool, apr_size_t bufsize, int sync)
{
    static const apr_size_t sizes[] = {
        1, 7, 0, 100, 4095, 1, 4096, 4097, 8000, 3, 20000, 65536, 8192,
        13, 4094, 2, 100000, 1, 1, 8000, 8000, 8000, 12345
    };
    fixture_t f;
    apr_pool_t *part;
    stowrs_spool_t *s = NULL;
    apr_size_t total = 0, off = 0, i;
    const char *data;
    const char *path;
    const char *spool_dir;
    int round;
    int bad = 0;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, sync,
                 bufsize);
    for (round = 0; round < 3; round++) {
        for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            total += sizes[i];
        }
    }
    /* Many small writes too: 2000 of 1 to 13 bytes. */
    for (i = 0; i < 2000; i++) {
        total += 1 + i % 13;
    }
    data = pattern(f.pool, total, (unsigned)bufsize);

    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    CHECK(s != NULL);
    if (!s) {
        fixture_done(&f);
        return;
    }
    path = apr_pstrdup(f.pool, stowrs_store_spool_path(s));
    spool_dir = apath(&f, STOWRS_STORE_SPOOL_DIR "/");
    CHECK(strncmp(path, spool_dir, strlen(spool_dir)) == 0);
    CHECK(strchr(path + strlen(spool_dir), '/') == NULL);
    CHECK(exists(path));
    CHECK_INT(spool_entries(&f), 1);
    CHECK_INT(stowrs_store_spool_size(s), 0);

    for (round = 0; round < 3; round++) {
        for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            if (stowrs_store_spool_write(s, data + off, sizes[i]) != APR_SUCCESS) {
                bad++;
            }
            off += sizes[i];
            if (stowrs_store_spool_size(s) != (apr_off_t)off) {
                bad++;
            }
        }
    }
    for (i = 0; i < 2000; i++) {
        apr_size_t n = 1 + i % 13;

        if (stowrs_store_spool_write(s, data + off, n) != APR_SUCCESS) {
            bad++;
        }
        off += n;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(off, total);
    CHECK_INT(stowrs_store_spool_size(s), total);
    CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_size(s), total);
    CHECK(file_equals(f.pool, path, data, total));

    /* Not published: destroying the part's pool removes the spool. */
    apr_pool_destroy(part);
    CHECK(!exists(path));
    CHECK_INT(spool_entries(&f), 0);

    /* A spool that is never written or closed is removed too. */
    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    CHECK_INT(spool_entries(&f), 1);
    CHECK_INT(stowrs_store_spool_write(s, data, 10), APR_SUCCESS);
    apr_pool_destroy(part);
    CHECK_INT(spool_entries(&f), 0);

    /* An empty part: the file exists and is empty. */
    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_size(s), 0);
    CHECK(file_equals(f.pool, stowrs_store_spool_path(s), "", 0));
    apr_pool_destroy(part);
    CHECK_INT(spool_entries(&f), 0);

    /* The buffer is reused by the next part of the same request. */
    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_write(s, data + 5, bufsize - 1), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_write(s, data + 5 + bufsize - 1, 2), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
    CHECK(file_equals(f.pool, stowrs_store_spool_path(s), data + 5, bufsize + 1));
    apr_pool_destroy(part);
    CHECK_INT(spool_entries(&f), 0);

    fixture_done(&f);
}

static void
test_spool(apr_pool_t *pool)
{
    spool_writes(pool, 4096, 0);
    spool_writes(pool, 4096, 1);
    spool_writes(pool, 64 * 1024, 0);
    spool_writes(pool, 256 * 1024, 1);
    spool_writes(pool, 1, 0);
}

/* Two spools open at once get different files. */
static void
test_spool_concurrent(apr_pool_t *pool)
{
    fixture_t f;
    apr_pool_t *p1, *p2;
    stowrs_spool_t *s1 = NULL, *s2 = NULL;
    char buf2[4096];
    stowrs_publish_e result;
    const char *fp = NULL;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, 0, 4096);
    apr_pool_create(&p1, f.pool);
    apr_pool_create(&p2, f.pool);
    CHECK_INT(stowrs_store_spool_open(p1, &f.conf, f.buf, f.bufsize, &s1), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_open(p2, &f.conf, buf2, sizeof(buf2), &s2), APR_SUCCESS);
    CHECK(strcmp(stowrs_store_spool_path(s1), stowrs_store_spool_path(s2)) != 0);
    CHECK_INT(spool_entries(&f), 2);
    CHECK_INT(stowrs_store_spool_write(s1, "one", 3), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_write(s2, "two!", 4), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s1), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s2), APR_SUCCESS);
    CHECK_INT(stowrs_store_publish(s2, CLASS_CT, STUDY_A, SERIES_A, SOP_2, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_INT(spool_entries(&f), 1);
    CHECK(file_equals(f.pool, apath(&f, STUDY_A "/" SERIES_A "/" SOP_2 ".dcm"),
                      "two!", 4));
    apr_pool_destroy(p2);
    CHECK_INT(spool_entries(&f), 1);
    CHECK(file_equals(f.pool, stowrs_store_spool_path(s1), "one", 3));
    apr_pool_destroy(p1);
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);
}

/* --- publish ------------------------------------------------------------ */

static void
publish_new(apr_pool_t *pool, int sync)
{
    fixture_t f;
    apr_pool_t *part;
    stowrs_spool_t *s = NULL;
    stowrs_publish_e result = (stowrs_publish_e)-1;
    const char *fp = NULL;
    const char *spool_path;
    const char *want;
    char *data;
    struct stat st;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, sync,
                 4096);
    want = apath(&f, STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
    data = pattern(f.pool, 10000, 1);

    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    spool_path = apr_pstrdup(f.pool, stowrs_store_spool_path(s));
    CHECK_INT(stowrs_store_spool_write(s, data, 3000), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_write(s, data + 3000, 7000), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
    CHECK_INT(stowrs_store_publish(s, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_STR(fp, want);
    CHECK(!exists(spool_path));
    CHECK_INT(spool_entries(&f), 0);
    CHECK(file_equals(f.pool, want, data, 10000));
    CHECK_STR(readlink_str(f.pool, apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1)),
              STUDY_A "/" SERIES_A "/" STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
    CHECK(lstat(apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1), &st) == 0
          && S_ISLNK(st.st_mode));
    apr_pool_destroy(part);
    /* Published: the cleanup leaves the stored file alone. */
    CHECK(file_equals(f.pool, want, data, 10000));
    CHECK_INT(spool_entries(&f), 0);

    /* A second instance in the same series. */
    CHECK_INT(store_part(&f, data, 10, CLASS_CT, STUDY_A, SERIES_A, SOP_2, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_STR(fp, apath(&f, STUDY_A "/" SERIES_A "/" SOP_2 ".dcm"));
    CHECK(file_equals(f.pool, fp, data, 10));
    CHECK(file_equals(f.pool, want, data, 10000));
    CHECK_INT(count_entries(apath(&f, STUDY_A "/" SERIES_A)), 2);
    CHECK_INT(count_entries(apath(&f, STOWRS_STORE_INDEX_DIR)), 2);
    fixture_done(&f);
}

static void
publish_duplicates(apr_pool_t *pool, int sync)
{
    static const struct {
        stowrs_overwrite_e policy;
        stowrs_publish_e result;
    } cases[] = {
        { STOWRS_OVERWRITE_NEVER, STOWRS_PUBLISH_KEPT },
        { STOWRS_OVERWRITE_ALWAYS, STOWRS_PUBLISH_REPLACED },
        { STOWRS_OVERWRITE_REJECT, STOWRS_PUBLISH_REJECTED },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fixture_t f;
        stowrs_publish_e result;
        const char *fp;
        const char *target;
        const char *first = "first copy";
        const char *second = "the second, longer copy";
        ino_t ino;

        fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, cases[i].policy, sync, 4096);
        target = apath(&f, STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
        CHECK_INT(store_part(&f, first, strlen(first), CLASS_CT, STUDY_A, SERIES_A, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_STORED);
        ino = inode_of(target);
        CHECK(ino != 0);

        CHECK_INT(store_part(&f, second, strlen(second), CLASS_CT, STUDY_A, SERIES_A,
                             SOP_1, &result, &fp), APR_SUCCESS);
        CHECK_INT(result, cases[i].result);
        if (cases[i].policy == STOWRS_OVERWRITE_ALWAYS) {
            CHECK_STR(fp, target);
            CHECK(file_equals(f.pool, target, second, strlen(second)));
            CHECK(inode_of(target) != ino);
        }
        else {
            if (cases[i].policy == STOWRS_OVERWRITE_NEVER) {
                CHECK_STR(fp, target);
            }
            else {
                CHECK(fp == NULL);
            }
            CHECK(file_equals(f.pool, target, first, strlen(first)));
            CHECK(inode_of(target) == ino);
        }
        CHECK_INT(count_entries(apath(&f, STUDY_A "/" SERIES_A)), 1);
        CHECK_STR(readlink_str(f.pool, apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1)),
                  STUDY_A "/" SERIES_A "/" STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
        CHECK_INT(spool_entries(&f), 0);

        /* And once more: the policy holds for the third copy too. */
        CHECK_INT(store_part(&f, "3", 1, CLASS_CT, STUDY_A, SERIES_A, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK_INT(result, cases[i].result);
        if (cases[i].policy == STOWRS_OVERWRITE_ALWAYS) {
            CHECK(file_equals(f.pool, target, "3", 1));
        }
        else {
            CHECK(file_equals(f.pool, target, first, strlen(first)));
        }
        fixture_done(&f);
    }
}

static void
publish_conflicts(apr_pool_t *pool, int sync)
{
    static const stowrs_overwrite_e policies[] = {
        STOWRS_OVERWRITE_NEVER, STOWRS_OVERWRITE_ALWAYS, STOWRS_OVERWRITE_REJECT
    };
    apr_size_t i;

    for (i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        fixture_t f;
        stowrs_publish_e result;
        const char *fp;
        const char *target;
        const char *first = "stored in study A, series A";
        ino_t ino;

        fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, policies[i], sync, 4096);
        target = apath(&f, STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
        CHECK_INT(store_part(&f, first, strlen(first), CLASS_CT, STUDY_A, SERIES_A, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_STORED);
        ino = inode_of(target);

        /* Same SOP Instance UID, another study. */
        CHECK_INT(store_part(&f, "other study", 11, CLASS_CT, STUDY_B, SERIES_A, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
        CHECK(fp == NULL);
        CHECK(!exists(apath(&f, STUDY_B)));

        /* Same study, another series. */
        CHECK_INT(store_part(&f, "other series", 12, CLASS_CT, STUDY_A, SERIES_B, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
        CHECK(fp == NULL);
        CHECK(!exists(apath(&f, STUDY_A "/" SERIES_B)));

        CHECK(file_equals(f.pool, target, first, strlen(first)));
        CHECK(inode_of(target) == ino);
        CHECK_INT(count_entries(f.archive), 3);
        CHECK_INT(count_entries(apath(&f, STUDY_A)), 1);
        CHECK_STR(readlink_str(f.pool, apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1)),
                  STUDY_A "/" SERIES_A "/" STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
        CHECK_INT(spool_entries(&f), 0);

        /* The owner may still store it under its own policy. */
        CHECK_INT(store_part(&f, "again", 5, CLASS_CT, STUDY_A, SERIES_A, SOP_1,
                             &result, &fp), APR_SUCCESS);
        CHECK(result != STOWRS_PUBLISH_CONFLICT && result != STOWRS_PUBLISH_STORED);
        fixture_done(&f);
    }
}

/*
 * The index records study/series only; with {SOPClassUID} in the layout the
 * same instance sent again with another SOP Class UID must still be found.
 */
static void
publish_conflict_class_layout(apr_pool_t *pool)
{
    fixture_t f;
    stowrs_publish_e result;
    const char *fp;
    const char *target;

    fixture_init(&f, pool, CLASS_LAYOUT, STOWRS_OVERWRITE_NEVER, 0, 4096);
    target = apath(&f, STUDY_A "/" SERIES_A "/" CLASS_CT "/" SOP_1 ".dcm");
    CHECK_INT(store_part(&f, "ct", 2, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_STR(fp, target);

    /* Same class, other study: found. */
    CHECK_INT(store_part(&f, "ct2", 3, CLASS_CT, STUDY_B, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);

    /* Other class, other study: the same SOP Instance UID is stored in
     * study A, so this is A77B too. */
    CHECK_INT(store_part(&f, "mr", 2, CLASS_MR, STUDY_B, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    if (result != STOWRS_PUBLISH_CONFLICT) {
        fprintf(stderr, "layout with {SOPClassUID}: sop %s stored in study %s, sent again"
                " with another class in study %s: result %d, want CONFLICT (%d)\n",
                SOP_1, STUDY_A, STUDY_B, (int)result, (int)STOWRS_PUBLISH_CONFLICT);
    }
    CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
    CHECK(!exists(apath(&f, STUDY_B)));
    CHECK(file_equals(f.pool, target, "ct", 2));
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);

    /* Other class, same study and series: a duplicate (Never: kept), not
     * a second copy under the other class. */
    fixture_init(&f, pool, CLASS_LAYOUT, STOWRS_OVERWRITE_NEVER, 0, 4096);
    target = apath(&f, STUDY_A "/" SERIES_A "/" CLASS_CT "/" SOP_1 ".dcm");
    CHECK_INT(store_part(&f, "ct", 2, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_INT(store_part(&f, "mr", 2, CLASS_MR, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    if (result != STOWRS_PUBLISH_KEPT) {
        fprintf(stderr, "layout with {SOPClassUID}: sop %s sent again with another class"
                " in the same series: result %d, want KEPT (%d)\n",
                SOP_1, (int)result, (int)STOWRS_PUBLISH_KEPT);
    }
    CHECK_INT(result, STOWRS_PUBLISH_KEPT);
    CHECK(!exists(apath(&f, STUDY_A "/" SERIES_A "/" CLASS_MR)));
    CHECK(file_equals(f.pool, target, "ct", 2));
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);
}

static void
publish_stale_index(apr_pool_t *pool, int sync)
{
    fixture_t f;
    stowrs_publish_e result;
    const char *fp;
    const char *old_target;
    const char *new_target;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_REJECT, sync,
                 4096);
    old_target = apath(&f, STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
    new_target = apath(&f, STUDY_B "/" SERIES_B "/" SOP_1 ".dcm");
    CHECK_INT(store_part(&f, "old", 3, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_INT(unlink(old_target), 0);

    /* The index still names study A, but its file is gone. */
    CHECK_INT(store_part(&f, "new owner", 9, CLASS_CT, STUDY_B, SERIES_B, SOP_1,
                         &result, &fp), APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK_STR(fp, new_target);
    CHECK(file_equals(f.pool, new_target, "new owner", 9));
    CHECK_STR(readlink_str(f.pool, apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1)),
              STUDY_B "/" SERIES_B "/" STUDY_B "/" SERIES_B "/" SOP_1 ".dcm");
    CHECK_INT(count_entries(apath(&f, STOWRS_STORE_INDEX_DIR)), 1);
    CHECK(!exists(old_target));

    /* Now study B owns it: study A gets A77B. */
    CHECK_INT(store_part(&f, "back", 4, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
    CHECK(!exists(old_target));
    /* And the owner a duplicate under its policy. */
    CHECK_INT(store_part(&f, "dup", 3, CLASS_CT, STUDY_B, SERIES_B, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_REJECTED);
    CHECK(file_equals(f.pool, new_target, "new owner", 9));

    /* Stale entry for the same study/series: stored again, not a duplicate. */
    CHECK_INT(unlink(new_target), 0);
    CHECK_INT(store_part(&f, "restored", 8, CLASS_CT, STUDY_B, SERIES_B, SOP_1,
                         &result, &fp), APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK(file_equals(f.pool, new_target, "restored", 8));
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);
}

/* A layout without study or series: the index still carries the A77B rule. */
static void
publish_flat_layout(apr_pool_t *pool, int sync)
{
    static const struct {
        stowrs_overwrite_e policy;
        stowrs_publish_e result;
    } cases[] = {
        { STOWRS_OVERWRITE_NEVER, STOWRS_PUBLISH_KEPT },
        { STOWRS_OVERWRITE_ALWAYS, STOWRS_PUBLISH_REPLACED },
        { STOWRS_OVERWRITE_REJECT, STOWRS_PUBLISH_REJECTED },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fixture_t f;
        stowrs_publish_e result;
        const char *fp;
        const char *target;
        ino_t ino;

        fixture_init(&f, pool, "{SOPInstanceUID}.dcm", cases[i].policy, sync, 4096);
        target = apath(&f, SOP_1 ".dcm");
        CHECK_INT(store_part(&f, "flat", 4, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result,
                             &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_STORED);
        CHECK_STR(fp, target);
        CHECK_STR(readlink_str(f.pool, apath(&f, STOWRS_STORE_INDEX_DIR "/" SOP_1)),
                  STUDY_A "/" SERIES_A "/" SOP_1 ".dcm");
        ino = inode_of(target);

        /* Another study: A77B whatever the policy, the file untouched. */
        CHECK_INT(store_part(&f, "other", 5, CLASS_CT, STUDY_B, SERIES_A, SOP_1, &result,
                             &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
        CHECK_INT(store_part(&f, "other", 5, CLASS_CT, STUDY_A, SERIES_B, SOP_1, &result,
                             &fp), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_CONFLICT);
        CHECK(file_equals(f.pool, target, "flat", 4));
        CHECK(inode_of(target) == ino);

        /* Same study and series: a duplicate. */
        CHECK_INT(store_part(&f, "flat2", 5, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result,
                             &fp), APR_SUCCESS);
        CHECK_INT(result, cases[i].result);
        if (cases[i].policy == STOWRS_OVERWRITE_ALWAYS) {
            CHECK(file_equals(f.pool, target, "flat2", 5));
        }
        else {
            CHECK(file_equals(f.pool, target, "flat", 4));
            CHECK(inode_of(target) == ino);
        }
        /* The archive holds the file and the two hidden directories. */
        CHECK_INT(count_entries(f.archive), 3);
        CHECK_INT(spool_entries(&f), 0);
        fixture_done(&f);
    }
}

/* Failures leave nothing in the spool either. */
static void
publish_failure(apr_pool_t *pool)
{
    fixture_t f;
    stowrs_publish_e result;
    const char *fp;

    fixture_init(&f, pool, "{StudyInstanceUID}/{SOPInstanceUID}.dcm",
                 STOWRS_OVERWRITE_NEVER, 0, 4096);
    /* A file where the study directory should be: mkdir fails. */
    CHECK_INT(close(open(apath(&f, STUDY_A), O_CREAT | O_WRONLY, 0600)), 0);
    CHECK(store_part(&f, "x", 1, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp)
          != APR_SUCCESS);
    CHECK(fp == NULL);
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);
}

/* Publishing into a batch: the final directory's fsync and, for a new
 * entry, the index directory's are left to the batch, each once however
 * many instances the request stores; a duplicate adds nothing new. */
static void
publish_batched(apr_pool_t *pool)
{
    fixture_t f;
    stowrs_store_batch_t *batch;
    const char *sops[3] = { SOP_1, SOP_2, SOP_3 };
    const char *data = "batched instance";
    int i;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, 1, 4096);
    batch = stowrs_store_batch_make(f.pool);
    for (i = 0; i < 3; i++) {
        apr_pool_t *part;
        stowrs_spool_t *s = NULL;
        stowrs_publish_e result = (stowrs_publish_e)-1;
        const char *fp = NULL;
        int deferred = 0;

        apr_pool_create(&part, f.pool);
        CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
        CHECK_INT(stowrs_store_spool_write(s, data, strlen(data)), APR_SUCCESS);
        CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
        CHECK_INT(stowrs_store_publish_in(s, batch, CLASS_CT, STUDY_A, SERIES_A, sops[i],
                                          &result, &fp, &deferred), APR_SUCCESS);
        CHECK_INT(result, STOWRS_PUBLISH_STORED);
        CHECK_INT(deferred, 1);
        CHECK(fp != NULL && file_equals(f.pool, fp, data, strlen(data)));
        apr_pool_destroy(part);
    }
    /* the series directory and .stowrs-index, once each */
    CHECK_INT(stowrs_store_batch_pending(batch), 2);
    CHECK_INT(stowrs_store_batch_sync(batch), APR_SUCCESS);
    CHECK_INT(stowrs_store_batch_pending(batch), 0);
    CHECK_INT(count_entries(apath(&f, STOWRS_STORE_INDEX_DIR)), 3);
    CHECK_INT(spool_entries(&f), 0);
    fixture_done(&f);
}

static void
test_publish(apr_pool_t *pool)
{
    int sync;

    for (sync = 0; sync <= 1; sync++) {
        publish_new(pool, sync);
        publish_duplicates(pool, sync);
        publish_conflicts(pool, sync);
        publish_stale_index(pool, sync);
        publish_flat_layout(pool, sync);
    }
    publish_conflict_class_layout(pool);
    publish_failure(pool);
    publish_batched(pool);
}

/* --- sweep -------------------------------------------------------------- */

static void
test_sweep(apr_pool_t *pool)
{
    fixture_t f;
    apr_pool_t *part;
    stowrs_spool_t *s = NULL;
    stowrs_publish_e result;
    const char *fp = NULL;
    const char *live_path;
    const char *orphan = NULL;
    const char *held;
    const char *subdir;
    int removed = -1;
    int fd;

    fixture_init(&f, pool, STOWRS_STORE_DEFAULT_FORMAT, STOWRS_OVERWRITE_NEVER, 1, 4096);

    /* Nothing to do. */
    CHECK_INT(stowrs_store_sweep(f.pool, f.archive, &removed), APR_SUCCESS);
    CHECK_INT(removed, 0);

    /* An orphan, as a crash leaves it. */
    orphan = apath(&f, STOWRS_STORE_SPOOL_DIR "/part-orphan");
    fd = open(orphan, O_CREAT | O_WRONLY | O_EXCL, 0640);
    CHECK(fd >= 0);
    CHECK_INT(write(fd, "partial", 7), 7);
    close(fd);
    CHECK_INT(stowrs_store_sweep(f.pool, f.archive, &removed), APR_SUCCESS);
    CHECK_INT(removed, 1);
    CHECK(!exists(orphan));
    CHECK_INT(spool_entries(&f), 0);

    /* A live spool holds its flock: the sweep (a second open file
     * description, even in this process) leaves it alone. */
    apr_pool_create(&part, f.pool);
    CHECK_INT(stowrs_store_spool_open(part, &f.conf, f.buf, f.bufsize, &s), APR_SUCCESS);
    live_path = apr_pstrdup(f.pool, stowrs_store_spool_path(s));
    CHECK_INT(stowrs_store_spool_write(s, "before sweep;", 13), APR_SUCCESS);
    fd = open(orphan, O_CREAT | O_WRONLY | O_EXCL, 0640);
    CHECK(fd >= 0);
    close(fd);
    /* A file someone else holds locked stays too. */
    held = apath(&f, STOWRS_STORE_SPOOL_DIR "/part-held");
    fd = open(held, O_CREAT | O_RDWR | O_EXCL, 0640);
    CHECK(fd >= 0);
    CHECK_INT(flock(fd, LOCK_EX | LOCK_NB), 0);
    /* A directory is not a spool file. */
    subdir = apath(&f, STOWRS_STORE_SPOOL_DIR "/subdir");
    CHECK_INT(mkdir(subdir, 0750), 0);
    CHECK_INT(spool_entries(&f), 4);

    CHECK_INT(stowrs_store_sweep(f.pool, f.archive, &removed), APR_SUCCESS);
    CHECK_INT(removed, 1);
    CHECK(!exists(orphan));
    CHECK(exists(live_path));
    CHECK(exists(held));
    CHECK(is_dir(subdir));

    /* The live spool is still usable and publishes. */
    CHECK_INT(stowrs_store_spool_write(s, " after sweep", 12), APR_SUCCESS);
    CHECK_INT(stowrs_store_spool_close(s), APR_SUCCESS);
    CHECK_INT(stowrs_store_publish(s, CLASS_CT, STUDY_A, SERIES_A, SOP_1, &result, &fp),
              APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK(file_equals(f.pool, apath(&f, STUDY_A "/" SERIES_A "/" SOP_1 ".dcm"),
                      "before sweep; after sweep", 25));
    CHECK(!exists(live_path));
    apr_pool_destroy(part);

    /* Once released, the held file is an orphan. */
    close(fd);
    CHECK_INT(stowrs_store_sweep(f.pool, f.archive, &removed), APR_SUCCESS);
    CHECK_INT(removed, 1);
    CHECK(!exists(held));
    CHECK_INT(rmdir(subdir), 0);
    CHECK_INT(spool_entries(&f), 0);

    /* A new part after the sweep. */
    CHECK_INT(store_part(&f, "later", 5, CLASS_CT, STUDY_A, SERIES_A, SOP_2,
                         &result, &fp), APR_SUCCESS);
    CHECK_INT(result, STOWRS_PUBLISH_STORED);
    CHECK(file_equals(f.pool, fp, "later", 5));

    /* The stored files are not touched by a sweep. */
    CHECK_INT(stowrs_store_sweep(f.pool, f.archive, &removed), APR_SUCCESS);
    CHECK_INT(removed, 0);
    CHECK_INT(count_entries(apath(&f, STUDY_A "/" SERIES_A)), 2);

    /* No spool directory: an error. */
    CHECK(stowrs_store_sweep(f.pool, apr_pstrcat(f.pool, f.root, "/nowhere", NULL),
                             &removed) != APR_SUCCESS);
    CHECK_INT(removed, 0);
    fixture_done(&f);
}

int
main(void)
{
    apr_pool_t *pool;

    apr_initialize();
    apr_pool_create(&pool, NULL);

    test_check_format(pool);
    test_expand(pool);
    test_prepare(pool);
    test_spool(pool);
    test_spool_concurrent(pool);
    test_publish(pool);
    test_sweep(pool);

    apr_pool_destroy(pool);
    apr_terminate();
    return unit_summary();
}
