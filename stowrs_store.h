/**
 * @file stowrs_store.h
 * @brief The archive: spool files, layout, duplicates, durable atomic publish.
 *
 * A part is written to a spool file in {archive}/.stowrs-tmp (same
 * filesystem, so publishing is a rename), held under an exclusive lock while
 * its writer lives so that a startup sweep removes only orphans. Publishing
 * fsyncs the file, renames it into place and fsyncs the directories it
 * changed; only then is an instance stored.
 */
#ifndef STOWRS_STORE_H
#define STOWRS_STORE_H

#include <apr_pools.h>
#include <apr_file_io.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Name of the spool directory inside an archive. */
#define STOWRS_STORE_SPOOL_DIR ".stowrs-tmp"
/** Name of the SOP Instance UID index inside an archive: symlinks named
 *  by SOP Instance UID whose target reads "{study}/{series}/{path}". */
#define STOWRS_STORE_INDEX_DIR ".stowrs-index"
/** Default layout below the archive. */
#define STOWRS_STORE_DEFAULT_FORMAT "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"

typedef enum {
    STOWRS_OVERWRITE_NEVER = 0,  /**< keep the stored file, report success */
    STOWRS_OVERWRITE_ALWAYS,     /**< replace atomically */
    STOWRS_OVERWRITE_REJECT      /**< fail with 0111 */
} stowrs_overwrite_e;

typedef struct {
    const char *archive;         /**< absolute directory */
    const char *path_format;     /**< checked by stowrs_store_check_format */
    int sync;                    /**< fsync files and directories */
    stowrs_overwrite_e overwrite;
} stowrs_store_conf_t;

typedef enum {
    STOWRS_PUBLISH_STORED = 0,   /**< new instance in place */
    STOWRS_PUBLISH_KEPT,         /**< duplicate, stored copy kept (Never) */
    STOWRS_PUBLISH_REPLACED,     /**< duplicate, replaced (Always) */
    STOWRS_PUBLISH_REJECTED,     /**< duplicate, refused (Reject): 0111 */
    STOWRS_PUBLISH_CONFLICT      /**< same SOP Instance UID in another study/series: A77B */
} stowrs_publish_e;

typedef struct stowrs_spool_t stowrs_spool_t;

/**
 * Check a layout: only the tokens {StudyInstanceUID}, {SeriesInstanceUID},
 * {SOPInstanceUID} and {SOPClassUID}, {SOPInstanceUID} present, relative,
 * no empty component and none that starts with "." (which keeps "..",
 * the spool and the index out of reach).
 * @return NULL if usable, else a message allocated from @c pool
 */
const char *stowrs_store_check_format(apr_pool_t *pool, const char *format);

/**
 * Expand a checked layout with UIDs that passed stowrs_uid_valid.
 * @return the relative path
 */
const char *stowrs_store_expand(apr_pool_t *pool, const char *format,
                                const char *sop_class, const char *study,
                                const char *series, const char *sop);

/**
 * Create a spool file for one part; a cleanup on @c pool closes and removes
 * it unless it was published.
 * @param pool    the part's pool
 * @param conf    the archive
 * @param buf     write-coalescing buffer the caller reuses across parts
 * @param bufsize its size
 * @param out     the spool
 * @return APR_SUCCESS or the creation error
 */
apr_status_t stowrs_store_spool_open(apr_pool_t *pool, const stowrs_store_conf_t *conf,
                                     char *buf, apr_size_t bufsize,
                                     stowrs_spool_t **out);

/** Append bytes; coalesced into the buffer, written when it is full. */
apr_status_t stowrs_store_spool_write(stowrs_spool_t *s, const char *data, apr_size_t len);

/** Flush the buffer. The file is fsynced (when conf->sync) by
 *  stowrs_store_publish, before it is renamed. */
apr_status_t stowrs_store_spool_close(stowrs_spool_t *s);

/** Flush the buffer only: for parts that are read back, never published
 *  (bulk data and metadata), whose durability does not matter. */
apr_status_t stowrs_store_spool_flush(stowrs_spool_t *s);

/** Take the size from the file itself, after someone else wrote it by
 *  path (the DICOM builder). */
apr_status_t stowrs_store_spool_restat(stowrs_spool_t *s);

/** @return the spool file's path (for inspection) */
const char *stowrs_store_spool_path(const stowrs_spool_t *s);

/** @return bytes written so far */
apr_off_t stowrs_store_spool_size(const stowrs_spool_t *s);

/**
 * Publish a closed spool under its UIDs (all passed stowrs_uid_valid),
 * applying the overwrite policy and the A77B rule. When conf->sync, the
 * file, the index entry and new directories are fsynced before the
 * rename and the final directory after it. A file already at the
 * final path counts as a duplicate even if the index does not know it.
 * When not published, the spool file goes with the part's pool.
 * @param s          the spool
 * @param sop_class  (0008,0016)
 * @param study      (0020,000D)
 * @param series     (0020,000E)
 * @param sop        (0008,0018)
 * @param result     what happened, set when APR_SUCCESS is returned
 * @param final_path the archive file, set when stored or kept
 * @return APR_SUCCESS, or the I/O error (nothing was published)
 */
apr_status_t stowrs_store_publish(stowrs_spool_t *s, const char *sop_class,
                                  const char *study, const char *series,
                                  const char *sop, stowrs_publish_e *result,
                                  const char **final_path);

/** Directories (final and index) whose fsync publishes of one request leave
 *  for later. */
typedef struct stowrs_store_batch_t stowrs_store_batch_t;

/** @return an empty batch in @c pool (the request's) */
stowrs_store_batch_t *stowrs_store_batch_make(apr_pool_t *pool);

/**
 * stowrs_store_publish, except that when conf->sync the fsyncs of the final
 * directory after the rename and of the index directory after a new entry
 * may be left to @c batch (*deferred set to 1): a request that stores
 * several instances in one series fsyncs each of those directories once.
 * The file and new directories are still fsynced before the rename. An
 * instance whose publish was deferred must not be reported stored before
 * stowrs_store_batch_sync succeeded.
 * @param batch    NULL to fsync at once, as stowrs_store_publish
 * @param deferred set to 1 if a directory fsync was left to @c batch;
 *                 may be NULL only when @c batch is NULL
 */
apr_status_t stowrs_store_publish_in(stowrs_spool_t *s, stowrs_store_batch_t *batch,
                                     const char *sop_class, const char *study,
                                     const char *series, const char *sop,
                                     stowrs_publish_e *result, const char **final_path,
                                     int *deferred);

/** @return the number of directories waiting for their fsync */
int stowrs_store_batch_pending(const stowrs_store_batch_t *b);

/**
 * fsync every directory left to @c batch, then forget them.
 * @return APR_SUCCESS, or the first error (all are tried)
 */
apr_status_t stowrs_store_batch_sync(stowrs_store_batch_t *b);

/**
 * Create the archive's spool and index directories if missing.
 * @return APR_SUCCESS or the error
 */
apr_status_t stowrs_store_prepare(apr_pool_t *pool, const char *archive);

/**
 * Remove spool files that no live writer holds (left by a crash or kill).
 * @param removed number of files removed
 * @return APR_SUCCESS, or the error reading the spool directory
 */
apr_status_t stowrs_store_sweep(apr_pool_t *pool, const char *archive, int *removed);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_STORE_H */
