/*
 * stowrs_store.c - the archive on disk.
 *
 * Spool -> publish, in the manner of mod_dav_fs's stream functions: a part
 * is written to an exclusively created spool file inside the archive (so
 * publishing is a rename on one filesystem), inspected by the caller, then
 * fsynced, renamed into place and its directories fsynced. A pool cleanup
 * removes the spool on every path that does not publish it.
 *
 * Duplicates are found through an index of symlinks,
 * {archive}/.stowrs-index/{SOPInstanceUID} -> "{study}/{series}", created
 * with symlink(2), which fails atomically if the name exists: that is what
 * lets the A77B rule (same instance, other study or series) hold for any
 * layout and between concurrent requests.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <apr_strings.h>
#include <apr_file_info.h>
#include <apr_portable.h>

#include "stowrs_store.h"

struct stowrs_spool_t {
    apr_pool_t *pool;
    const stowrs_store_conf_t *conf;
    apr_file_t *file;           /* NULL once closed */
    const char *path;
    char *buf;
    apr_size_t bufsize;
    apr_size_t buffered;
    apr_off_t size;
    apr_status_t write_error;   /* sticky: later writes are dropped */
    int published;              /* the cleanup must not unlink */
};

static const char *const format_tokens[] = {
    "{StudyInstanceUID}", "{SeriesInstanceUID}", "{SOPInstanceUID}", "{SOPClassUID}"
};

const char *
stowrs_store_check_format(apr_pool_t *pool, const char *format)
{
    const char *p = format;
    const char *component = format;
    int has_sop = 0;

    if (!format || !*format) {
        return "the layout is empty";
    }
    if (*format == '/') {
        return "the layout must be relative to the archive";
    }
    while (*p) {
        if (*p == '{') {
            apr_size_t i;
            int known = 0;

            for (i = 0; i < sizeof(format_tokens) / sizeof(format_tokens[0]); i++) {
                apr_size_t n = strlen(format_tokens[i]);

                if (strncmp(p, format_tokens[i], n) == 0) {
                    known = 1;
                    has_sop |= (i == 2);
                    p += n;
                    break;
                }
            }
            if (!known) {
                return apr_psprintf(pool, "unknown token at \"%s\"", p);
            }
            continue;
        }
        if (*p == '}' || *p == '\\' || (unsigned char)*p < 0x20) {
            return apr_psprintf(pool, "character '%c' is not allowed", *p);
        }
        if (*p == '/') {
            apr_size_t len = (apr_size_t)(p - component);

            if (len == 0 || component[0] == '.') {
                return "empty path component, or one that starts with \".\"";
            }
            component = p + 1;
        }
        p++;
    }
    {
        apr_size_t len = (apr_size_t)(p - component);

        /* A leading dot would also reach .stowrs-tmp or .stowrs-index,
         * whose contents the module deletes and replaces. */
        if (len == 0 || component[0] == '.') {
            return "empty path component, or one that starts with \".\"";
        }
    }
    if (!has_sop) {
        return "the layout must contain {SOPInstanceUID}";
    }
    return NULL;
}

/* @return the index of the token at @c p, or -1 */
static int
token_at(const char *p)
{
    int i;

    for (i = 0; i < (int)(sizeof(format_tokens) / sizeof(format_tokens[0])); i++) {
        if (strncmp(p, format_tokens[i], strlen(format_tokens[i])) == 0) {
            return i;
        }
    }
    return -1;
}

const char *
stowrs_store_expand(apr_pool_t *pool, const char *format, const char *sop_class,
                    const char *study, const char *series, const char *sop)
{
    const char *values[4];
    apr_size_t len = 0;
    char *out, *o;
    const char *p;
    int pass, t;

    values[0] = study;
    values[1] = series;
    values[2] = sop;
    values[3] = sop_class;
    out = o = NULL;
    /* First pass measures, second writes. */
    for (pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            out = o = apr_palloc(pool, len + 1);
        }
        for (p = format; *p; ) {
            if (*p == '{' && (t = token_at(p)) >= 0) {
                apr_size_t vl = strlen(values[t]);

                if (pass == 0) {
                    len += vl;
                }
                else {
                    memcpy(o, values[t], vl);
                    o += vl;
                }
                p += strlen(format_tokens[t]);
            }
            else {
                if (pass == 0) {
                    len++;
                }
                else {
                    *o++ = *p;
                }
                p++;
            }
        }
    }
    *o = '\0';
    return out;
}

static apr_status_t
spool_cleanup(void *data)
{
    stowrs_spool_t *s = data;

    if (s->file) {
        apr_file_close(s->file);
        s->file = NULL;
    }
    if (!s->published && s->path) {
        apr_file_remove(s->path, s->pool);
    }
    return APR_SUCCESS;
}

apr_status_t
stowrs_store_spool_open(apr_pool_t *pool, const stowrs_store_conf_t *conf,
                        char *buf, apr_size_t bufsize, stowrs_spool_t **out)
{
    stowrs_spool_t *s = apr_pcalloc(pool, sizeof(*s));
    char *tmpl;
    apr_os_file_t fd;
    apr_status_t rv;

    s->pool = pool;
    s->conf = conf;
    s->buf = buf;
    s->bufsize = bufsize;
    tmpl = apr_pstrcat(pool, conf->archive, "/" STOWRS_STORE_SPOOL_DIR "/part-XXXXXX", NULL);
    /* No APR_FOPEN_DELONCLOSE: the file must outlive its descriptor until
     * it is renamed; our own cleanup removes it otherwise. */
    rv = apr_file_mktemp(&s->file, tmpl,
                         APR_FOPEN_CREATE | APR_FOPEN_READ | APR_FOPEN_WRITE
                         | APR_FOPEN_EXCL | APR_FOPEN_NOCLEANUP, pool);
    if (rv != APR_SUCCESS) {
        s->file = NULL;
        return rv;
    }
    s->path = tmpl;
    apr_pool_cleanup_register(pool, s, spool_cleanup, apr_pool_cleanup_null);
    /* The lock tells the startup sweep that a live writer owns this file.
     * flock(2), not fcntl(2): a POSIX lock would be dropped as soon as the
     * DICOM inspection opens and closes the same file in this process. */
    if ((rv = apr_os_file_get(&fd, s->file)) != APR_SUCCESS) {
        return rv;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fchmod(fd, 0640) != 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    *out = s;
    return APR_SUCCESS;
}

static apr_status_t
spool_flush(stowrs_spool_t *s)
{
    apr_status_t rv;

    if (s->buffered == 0 || s->write_error != APR_SUCCESS) {
        s->buffered = 0;
        return s->write_error;
    }
    rv = apr_file_write_full(s->file, s->buf, s->buffered, NULL);
    s->buffered = 0;
    if (rv != APR_SUCCESS) {
        s->write_error = rv;
    }
    return rv;
}

apr_status_t
stowrs_store_spool_write(stowrs_spool_t *s, const char *data, apr_size_t len)
{
    if (s->write_error != APR_SUCCESS) {
        return s->write_error;
    }
    if (!s->file) {
        return APR_EINVAL;
    }
    s->size += (apr_off_t)len;
    /* httpd hands us buckets of at most 8000 bytes; a write(2) per bucket
     * costs about half the throughput, so coalesce. */
    if (s->buffered + len <= s->bufsize) {
        memcpy(s->buf + s->buffered, data, len);
        s->buffered += len;
        if (s->buffered == s->bufsize) {
            return spool_flush(s);
        }
        return APR_SUCCESS;
    }
    if (spool_flush(s) != APR_SUCCESS) {
        return s->write_error;
    }
    if (len >= s->bufsize) {
        apr_status_t rv = apr_file_write_full(s->file, data, len, NULL);

        if (rv != APR_SUCCESS) {
            s->write_error = rv;
        }
        return rv;
    }
    memcpy(s->buf, data, len);
    s->buffered = len;
    return APR_SUCCESS;
}

apr_status_t
stowrs_store_spool_close(stowrs_spool_t *s)
{
    /* The fdatasync is stowrs_store_publish's: there it comes after the
     * index entry and the directories are made, so that one journal
     * commit makes all of them durable, and a part that is not published
     * is never synced at all. */
    return spool_flush(s);
}

apr_status_t
stowrs_store_spool_flush(stowrs_spool_t *s)
{
    return spool_flush(s);
}

apr_status_t
stowrs_store_spool_restat(stowrs_spool_t *s)
{
    apr_finfo_t fi;
    apr_status_t rv = apr_file_info_get(&fi, APR_FINFO_SIZE, s->file);

    if (rv == APR_SUCCESS) {
        s->size = fi.size;
    }
    return rv;
}

const char *
stowrs_store_spool_path(const stowrs_spool_t *s)
{
    return s->path;
}

apr_off_t
stowrs_store_spool_size(const stowrs_spool_t *s)
{
    return s->size;
}

static apr_status_t
sync_dir(apr_pool_t *pool, const char *dir)
{
    apr_file_t *fd;
    apr_status_t rv = apr_file_open(&fd, dir, APR_FOPEN_READ, APR_OS_DEFAULT, pool);

    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = apr_file_sync(fd);
    apr_file_close(fd);
    return rv;
}

/*
 * mkdir -p below the archive for a relative path's directories. The
 * directories whose entries changed are pushed to @c changed, outermost
 * first, for the caller to fsync in that order (so a crash never leaves a
 * synced child under an unsynced parent).
 */
static apr_status_t
make_parents(apr_pool_t *pool, const char *archive, const char *rel,
             apr_array_header_t *changed)
{
    char *path = apr_pstrcat(pool, archive, "/", rel, NULL);
    char *slash = path + strlen(archive) + 1;
    apr_status_t rv;

    while ((slash = strchr(slash, '/')) != NULL) {
        *slash = '\0';
        rv = apr_dir_make(path, APR_OS_DEFAULT, pool);
        if (rv == APR_SUCCESS) {
            char *parent = apr_pstrdup(pool, path);

            *strrchr(parent, '/') = '\0';
            APR_ARRAY_PUSH(changed, const char *) = parent;
        }
        else if (!APR_STATUS_IS_EEXIST(rv)) {
            return rv;
        }
        *slash = '/';
        slash++;
    }
    return APR_SUCCESS;
}

static const char *
index_link(apr_pool_t *pool, const stowrs_store_conf_t *conf, const char *sop)
{
    return apr_pstrcat(pool, conf->archive, "/" STOWRS_STORE_INDEX_DIR "/", sop, NULL);
}

static apr_status_t
sync_index(apr_pool_t *pool, const stowrs_store_conf_t *conf)
{
    return conf->sync
        ? sync_dir(pool, apr_pstrcat(pool, conf->archive, "/" STOWRS_STORE_INDEX_DIR, NULL))
        : APR_SUCCESS;
}

/* Point an existing index entry elsewhere, atomically (symlink + rename).
 * The temporary name derives from the spool's, which is unique. */
static apr_status_t
index_replace(stowrs_spool_t *s, const char *link, const char *target)
{
    const char *tmp = apr_pstrcat(s->pool, link, ".", strrchr(s->path, '/') + 1, NULL);
    apr_status_t rv;

    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        unlink(tmp);
        return rv;
    }
    return sync_index(s->pool, s->conf);
}

/*
 * The index entry of an instance is a symlink .stowrs-index/{SOPInstanceUID}
 * whose target reads "{study}/{series}/{relative path}". UIDs hold no '/',
 * so the first two components are always the UIDs.
 * @return APR_SUCCESS with *existing NULL when newly claimed (the caller
 *         fsyncs the index before it renames), or with *existing set to
 *         the target of the entry that was there.
 */
static apr_status_t
index_claim(stowrs_spool_t *s, const char *link, const char *target, const char **existing)
{
    char got[4096];
    ssize_t n;

    *existing = NULL;
    if (symlink(target, link) == 0) {
        return APR_SUCCESS;
    }
    if (errno != EEXIST) {
        return APR_FROM_OS_ERROR(errno);
    }
    n = readlink(link, got, sizeof(got) - 1);
    if (n < 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    got[n] = '\0';
    *existing = apr_pstrdup(s->pool, got);
    return APR_SUCCESS;
}

/* Split an index target; @return 0 if it is not of our making. */
static int
index_parse(apr_pool_t *pool, const char *target, const char **study_series,
            const char **rel)
{
    const char *first = strchr(target, '/');
    const char *second = first ? strchr(first + 1, '/') : NULL;

    if (!second || !second[1]) {
        return 0;
    }
    *study_series = apr_pstrmemdup(pool, target, (apr_size_t)(second - target));
    *rel = second + 1;
    return 1;
}

struct stowrs_store_batch_t {
    apr_pool_t *pool;
    apr_array_header_t *dirs;       /* const char *, each once */
};

stowrs_store_batch_t *
stowrs_store_batch_make(apr_pool_t *pool)
{
    stowrs_store_batch_t *b = apr_palloc(pool, sizeof(*b));

    b->pool = pool;
    b->dirs = apr_array_make(pool, 2, sizeof(const char *));
    return b;
}

static void
batch_add(stowrs_store_batch_t *b, const char *dir)
{
    int i;

    for (i = b->dirs->nelts - 1; i >= 0; i--) {
        if (strcmp(APR_ARRAY_IDX(b->dirs, i, const char *), dir) == 0) {
            return;
        }
    }
    APR_ARRAY_PUSH(b->dirs, const char *) = apr_pstrdup(b->pool, dir);
}

int
stowrs_store_batch_pending(const stowrs_store_batch_t *b)
{
    return b->dirs->nelts;
}

apr_status_t
stowrs_store_batch_sync(stowrs_store_batch_t *b)
{
    apr_status_t rv = APR_SUCCESS, r;
    int i;

    for (i = 0; i < b->dirs->nelts; i++) {
        r = sync_dir(b->pool, APR_ARRAY_IDX(b->dirs, i, const char *));
        if (r != APR_SUCCESS && rv == APR_SUCCESS) {
            rv = r;
        }
    }
    apr_array_clear(b->dirs);
    return rv;
}

apr_status_t
stowrs_store_publish(stowrs_spool_t *s, const char *sop_class, const char *study,
                     const char *series, const char *sop, stowrs_publish_e *result,
                     const char **final_path)
{
    return stowrs_store_publish_in(s, NULL, sop_class, study, series, sop, result,
                                   final_path, NULL);
}

apr_status_t
stowrs_store_publish_in(stowrs_spool_t *s, stowrs_store_batch_t *batch,
                        const char *sop_class, const char *study, const char *series,
                        const char *sop, stowrs_publish_e *result,
                        const char **final_path, int *deferred)
{
    const stowrs_store_conf_t *conf = s->conf;
    apr_pool_t *pool = s->pool;
    const char *rel, *existing, *link, *study_series, *target;
    const char *old_full = NULL;        /* the copy already stored, if any */
    char *full;
    apr_finfo_t finfo;
    apr_array_header_t *changed;        /* directories made for this instance */
    int i;
    apr_status_t rv;

    *final_path = NULL;
    if (deferred) {
        *deferred = 0;
    }
    rel = stowrs_store_expand(pool, conf->path_format, sop_class, study, series, sop);
    /* The UIDs passed the UID check and the layout was checked at
     * configuration time; SECUREROOT is the second lock on the door. */
    rv = apr_filepath_merge(&full, conf->archive, rel,
                            APR_FILEPATH_SECUREROOT | APR_FILEPATH_NOTRELATIVE, pool);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    study_series = apr_pstrcat(pool, study, "/", series, NULL);
    target = apr_pstrcat(pool, study_series, "/", rel, NULL);
    link = index_link(pool, conf, sop);

    if ((rv = index_claim(s, link, target, &existing)) != APR_SUCCESS) {
        return rv;
    }
    if (existing) {
        const char *old_ss, *old_rel;

        if (index_parse(pool, existing, &old_ss, &old_rel)) {
            const char *candidate = apr_pstrcat(pool, conf->archive, "/", old_rel, NULL);

            if (apr_stat(&finfo, candidate, APR_FINFO_TYPE, pool) == APR_SUCCESS) {
                old_full = candidate;
            }
            if (old_full && strcmp(old_ss, study_series) != 0) {
                *result = STOWRS_PUBLISH_CONFLICT;
                return APR_SUCCESS;
            }
        }
        /* Our entry from now on: the old one was stale (its file gone, a
         * crash between claim and rename) or names another path. */
        if (strcmp(existing, target) != 0
            && (rv = index_replace(s, link, target)) != APR_SUCCESS) {
            return rv;
        }
    }
    if (!old_full && apr_stat(&finfo, full, APR_FINFO_TYPE, pool) == APR_SUCCESS) {
        old_full = full;        /* stored before the index knew of it */
    }
    if (old_full) {
        if (conf->overwrite == STOWRS_OVERWRITE_NEVER) {
            /* Reported stored, so it must be durable: it may be another
             * request's whose directory fsync is still in its batch. */
            if (conf->sync
                && (rv = sync_dir(pool, apr_pstrmemdup(pool, old_full,
                                                      (apr_size_t)(strrchr(old_full, '/')
                                                                   - old_full))))
                   != APR_SUCCESS) {
                return rv;
            }
            *result = STOWRS_PUBLISH_KEPT;
            *final_path = old_full;
            return APR_SUCCESS;
        }
        if (conf->overwrite == STOWRS_OVERWRITE_REJECT) {
            *result = STOWRS_PUBLISH_REJECTED;
            return APR_SUCCESS;
        }
    }

    changed = apr_array_make(pool, 2, sizeof(const char *));
    if ((rv = make_parents(pool, conf->archive, rel, changed)) != APR_SUCCESS) {
        return rv;
    }
    /* Data and new directories before the rename, so that a crash never
     * leaves a partial file at a final path. The file's fdatasync comes
     * first: on a journalling filesystem its commit carries the symlink
     * and mkdirs made above, so the directory fsyncs that follow find
     * nothing left to write. A new index entry only has to be durable
     * before the instance is reported, so with a batch its directory is
     * synced once per request, not once per instance: without it, a crash
     * can leave a file the index does not name, and the stat of the final
     * path above (old_full) still finds it when it is sent again. */
    if (conf->sync) {
        if ((rv = apr_file_datasync(s->file)) != APR_SUCCESS) {
            return rv;
        }
        if (!existing) {
            if (batch) {
                batch_add(batch, apr_pstrcat(pool, conf->archive,
                                             "/" STOWRS_STORE_INDEX_DIR, NULL));
                *deferred = 1;
            }
            else if ((rv = sync_index(pool, conf)) != APR_SUCCESS) {
                return rv;
            }
        }
        for (i = 0; i < changed->nelts; i++) {
            if ((rv = sync_dir(pool, APR_ARRAY_IDX(changed, i, const char *))) != APR_SUCCESS) {
                return rv;
            }
        }
    }
    /* rename(2) replaces atomically: readers see the old file or the new. */
    rv = apr_file_rename(s->path, full, pool);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    s->published = 1;
    if (s->file) {
        apr_file_close(s->file);
        s->file = NULL;
    }
    if (conf->sync) {
        const char *dir = apr_pstrmemdup(pool, full, (apr_size_t)(strrchr(full, '/') - full));

        /* The caller's batch may fsync the final directory later, once for
         * all its instances there, but before any of them is reported.
         * Not when an old copy elsewhere is removed next: the new one must
         * be durable first. */
        if (batch && !(old_full && strcmp(old_full, full) != 0)) {
            batch_add(batch, dir);
            *deferred = 1;
        }
        else if ((rv = sync_dir(pool, dir)) != APR_SUCCESS) {
            return rv;
        }
    }
    if (old_full && strcmp(old_full, full) != 0) {
        /* Always, and the layout put the new copy elsewhere (another SOP
         * class): one instance, one file. */
        apr_file_remove(old_full, pool);
    }
    *result = old_full ? STOWRS_PUBLISH_REPLACED : STOWRS_PUBLISH_STORED;
    *final_path = full;
    return APR_SUCCESS;
}

apr_status_t
stowrs_store_prepare(apr_pool_t *pool, const char *archive)
{
    apr_status_t rv;
    const char *dirs[2];
    int i;

    rv = apr_dir_make_recursive(archive, APR_OS_DEFAULT, pool);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        return rv;
    }
    dirs[0] = apr_pstrcat(pool, archive, "/" STOWRS_STORE_SPOOL_DIR, NULL);
    dirs[1] = apr_pstrcat(pool, archive, "/" STOWRS_STORE_INDEX_DIR, NULL);
    for (i = 0; i < 2; i++) {
        rv = apr_dir_make(dirs[i], APR_OS_DEFAULT, pool);
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
            return rv;
        }
    }
    return APR_SUCCESS;
}

apr_status_t
stowrs_store_sweep(apr_pool_t *pool, const char *archive, int *removed)
{
    const char *spool = apr_pstrcat(pool, archive, "/" STOWRS_STORE_SPOOL_DIR, NULL);
    apr_dir_t *dir;
    apr_finfo_t fi;
    apr_status_t rv;
    apr_pool_t *scratch;

    *removed = 0;
    rv = apr_dir_open(&dir, spool, pool);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_create(&scratch, pool);
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, dir) == APR_SUCCESS) {
        const char *path;
        apr_file_t *f;
        apr_os_file_t fd;

        if (fi.filetype != APR_REG) {
            continue;
        }
        apr_pool_clear(scratch);
        path = apr_pstrcat(scratch, spool, "/", fi.name, NULL);
        if (apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_WRITE,
                          APR_OS_DEFAULT, scratch) != APR_SUCCESS) {
            continue;
        }
        /* A writer that is alive holds its lock; leave its file alone. */
        if (apr_os_file_get(&fd, f) == APR_SUCCESS && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            if (apr_file_remove(path, scratch) == APR_SUCCESS) {
                (*removed)++;
            }
        }
        apr_file_close(f);
    }
    apr_dir_close(dir);
    apr_pool_destroy(scratch);
    return APR_SUCCESS;
}
