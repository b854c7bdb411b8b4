/*
 * stowrs_stow.c - one request's body, from multipart events to outcomes.
 *
 * Data flows one way (DESIGN.md §2): parser -> spool file -> inspect ->
 * checks -> publish -> outcome. Each part lives in its own subpool, created
 * when the part begins and destroyed when it ends, so a request with ten
 * thousand parts uses the memory of one, and destroying the pool is also
 * what removes a spool file that was not published.
 *
 * Metadata requests (DESIGN.md §3.4) cannot build an instance before the
 * body has ended, since a bulk data part may follow any metadata part; so
 * their parts are kept ("held") in spool files until the close delimiter,
 * then each metadata object is built into a PS3.10 file and goes through
 * the same checks and publish as a received one.
 */

#include <stddef.h>
#include <string.h>

#include <apr_strings.h>

#include "stowrs_stow.h"
#include "stowrs_dicom.h"
#include "stowrs_meta.h"
#include "stowrs_uid.h"

/* Big enough that a 0.5 MB instance takes a handful of write(2) calls,
 * small enough that memory per request stays a few hundred KB. */
#define SPOOL_BUFFER_SIZE (256 * 1024)

/* Outcomes held back while their directory fsync waits in the batch; at
 * this many the batch is synced and they are reported. */
#define PENDING_MAX 32

/* An outcome decided but not yet reported (see flush_pending). */
typedef struct {
    int index;                      /* in outcomes */
    int deferred;                   /* its directory fsync is in the batch */
    stowrs_part_info_t info;
} pending_t;

struct stowrs_stow_t {
    apr_pool_t *pool;
    const stowrs_stow_conf_t *conf;
    stowrs_mp_parser_t *parser;
    stowrs_stow_outcome_fn fn;
    void *baton;
    apr_array_header_t *outcomes;
    char *buf;
    stowrs_store_batch_t *batch;    /* NULL without StowRSSync */
    apr_array_header_t *pending;    /* pending_t, in part order */

    apr_array_header_t *notes;      /* stowrs_stow_note_t */

    /* metadata requests: parts held until the body ends */
    apr_pool_t *held_pool;          /* owns held spools; destroyed at the end */
    apr_array_header_t *metadata;   /* held_part_t *, in order */
    apr_hash_t *bulk_by_location;   /* Content-Location as sent -> bulk_entry_t */
    apr_hash_t *bulk_by_key;        /* stowrs_meta_uri_key() -> bulk_entry_t */
    apr_array_header_t *bulk;       /* bulk_entry_t *, in order */

    /* the part in progress */
    apr_pool_t *part_pool;          /* NULL between parts */
    struct held_part_t *held;       /* set while a held part is spooled */
    int ignored;                    /* a part of a metadata request we skip */
    apr_status_t resolve_error;     /* a bulk part named by the last build failed to spool */
    stowrs_spool_t *spool;          /* NULL when the part is being discarded */
    unsigned int part_no;
    unsigned int early_reason;      /* decided before the part ended */
    const char *early_detail;
    const char *ts_param;
};

typedef enum {
    HELD_METADATA,
    HELD_BULK
} held_kind_e;

typedef struct held_part_t {
    held_kind_e kind;
    unsigned int part_no;
    stowrs_spool_t *spool;
    int too_large;                  /* metadata over max_metadata */
    apr_status_t error;             /* spooling failed */
    stowrs_bulk_t bulk;
} held_part_t;

/* All parts one Content-Location names (frames of one value). */
typedef struct {
    const char *location;
    apr_array_header_t *parts;      /* const stowrs_bulk_t * */
    unsigned int first_part_no;
    int referenced;
} bulk_entry_t;

static const char *
uid_or(apr_pool_t *pool, const char *uid, const char *fallback)
{
    return apr_pstrdup(pool, (uid && *uid) ? uid : fallback);
}

static const char *
fresh_uid(apr_pool_t *pool)
{
    const char *uid = stowrs_uid_generate(pool);

    return uid ? uid : "2.25.0";
}

static void
note(stowrs_stow_t *s, unsigned int part_no, const char *text)
{
    stowrs_stow_note_t *n = apr_array_push(s->notes);

    n->part_no = part_no;
    n->text = text;
}

/*
 * Make the held-back instances durable (their final directories' fsync)
 * and report every held outcome, in part order. If an fsync fails, the
 * instances that waited for it fail too: they were never reported stored.
 */
static void
flush_pending(stowrs_stow_t *s)
{
    apr_status_t rv;
    int i;

    if (s->pending->nelts == 0) {
        return;
    }
    rv = stowrs_store_batch_sync(s->batch);
    for (i = 0; i < s->pending->nelts; i++) {
        pending_t *pe = &APR_ARRAY_IDX(s->pending, i, pending_t);
        stowrs_outcome_t *o = &APR_ARRAY_IDX(s->outcomes, pe->index, stowrs_outcome_t);

        if (pe->deferred && rv != APR_SUCCESS) {
            o->failure_reason = stowrs_outcome_io_reason(rv);
            o->detail = apr_psprintf(s->pool, "publishing: %pm", &rv);
            o->study_instance_uid = NULL;
            o->series_instance_uid = NULL;
            o->duplicate = 0;
            pe->info.final_path = NULL;
        }
        if (s->fn) {
            if (o->failure_reason) {
                pe->info.action = "failed";
            }
            s->fn(s->baton, o, &pe->info);
        }
    }
    apr_array_clear(s->pending);
}

/* An outcome is decided. It is reported at once, unless it waits for a
 * directory fsync (@c deferred) or comes after one that does. */
static void
record(stowrs_stow_t *s, stowrs_outcome_t *o, apr_off_t bytes, const char *final_path,
       const char *action, int deferred)
{
    stowrs_part_info_t info;

    *(stowrs_outcome_t *)apr_array_push(s->outcomes) = *o;
    info.part_no = s->part_no;
    info.bytes = bytes;
    info.final_path = final_path;
    info.ts_param = s->ts_param;
    info.action = o->failure_reason ? "failed" : action;
    if (deferred || s->pending->nelts > 0) {
        pending_t *pe = apr_array_push(s->pending);

        pe->index = s->outcomes->nelts - 1;
        pe->deferred = deferred;
        pe->info = info;
        if (s->pending->nelts >= PENDING_MAX) {
            flush_pending(s);
        }
        return;
    }
    if (s->fn) {
        s->fn(s->baton, o, &info);
    }
}

/* A part of a metadata request that is kept until the body ends. */
static void
begin_held_part(stowrs_stow_t *s, held_kind_e kind, const stowrs_media_type_t *mt,
                const char *location)
{
    held_part_t *h = apr_pcalloc(s->held_pool, sizeof(*h));
    apr_status_t rv;

    h->kind = kind;
    h->part_no = s->part_no;
    rv = stowrs_store_spool_open(s->held_pool, &s->conf->store, s->buf, SPOOL_BUFFER_SIZE,
                                 &h->spool);
    if (rv != APR_SUCCESS) {
        h->spool = NULL;
        h->error = rv;
    }
    if (kind == HELD_METADATA) {
        APR_ARRAY_PUSH(s->metadata, held_part_t *) = h;
    }
    else {
        bulk_entry_t *e = apr_hash_get(s->bulk_by_location, location, APR_HASH_KEY_STRING);
        const char *key = stowrs_meta_uri_key(s->held_pool, s->conf->request_url, location);

        h->bulk.path = h->spool ? stowrs_store_spool_path(h->spool) : NULL;
        h->bulk.media_type = apr_pstrdup(s->held_pool, mt->type);
        h->bulk.transfer_syntax = apr_table_get(mt->params, "transfer-syntax");
        if (h->bulk.transfer_syntax) {
            h->bulk.transfer_syntax = apr_pstrdup(s->held_pool, h->bulk.transfer_syntax);
        }
        if (!e) {
            e = apr_pcalloc(s->held_pool, sizeof(*e));
            e->location = apr_pstrdup(s->held_pool, location);
            e->parts = apr_array_make(s->held_pool, 1, sizeof(const stowrs_bulk_t *));
            e->first_part_no = s->part_no;
            apr_hash_set(s->bulk_by_location, e->location, APR_HASH_KEY_STRING, e);
            if (key && !apr_hash_get(s->bulk_by_key, key, APR_HASH_KEY_STRING)) {
                apr_hash_set(s->bulk_by_key, key, APR_HASH_KEY_STRING, e);
            }
            APR_ARRAY_PUSH(s->bulk, bulk_entry_t *) = e;
        }
        APR_ARRAY_PUSH(e->parts, const stowrs_bulk_t *) = &h->bulk;
    }
    s->held = h;
    s->spool = h->spool;
}

static apr_status_t
on_part_begin(void *baton, apr_table_t *headers)
{
    stowrs_stow_t *s = baton;
    const char *ct = apr_table_get(headers, "Content-Type");
    stowrs_media_type_t mt;
    int parsed;
    apr_status_t rv;

    s->part_no++;
    s->spool = NULL;
    s->held = NULL;
    s->ignored = 0;
    s->early_reason = 0;
    s->early_detail = NULL;
    s->ts_param = NULL;
    if ((rv = apr_pool_create(&s->part_pool, s->pool)) != APR_SUCCESS) {
        s->part_pool = NULL;
        return rv;
    }
    parsed = ct && stowrs_mp_parse_media_type(s->part_pool, ct, &mt) == APR_SUCCESS;
    if (s->conf->mode != STOWRS_STOW_DICOM
        && !(parsed && strcmp(mt.type, "application/dicom") == 0)) {
        const char *meta_type = s->conf->mode == STOWRS_STOW_XML ? "application/dicom+xml"
                                                                 : "application/dicom+json";
        const char *location = apr_table_get(headers, "Content-Location");

        if (parsed && strcmp(mt.type, meta_type) == 0) {
            begin_held_part(s, HELD_METADATA, &mt, NULL);
        }
        else if (parsed && location && *location) {
            begin_held_part(s, HELD_BULK, &mt, location);
        }
        else {
            note(s, s->part_no, parsed ? "bulk data part without Content-Location ignored"
                                       : "part without a usable Content-Type ignored");
            s->ignored = 1;
        }
        return APR_SUCCESS;
    }
    if (!parsed || strcmp(mt.type, "application/dicom") != 0) {
        s->early_reason = STOWRS_FR_PROCESSING_FAILURE;
        s->early_detail = ct ? "part Content-Type is not application/dicom"
                             : "part has no Content-Type";
        return APR_SUCCESS;
    }
    s->ts_param = apr_table_get(mt.params, "transfer-syntax");
    rv = stowrs_store_spool_open(s->part_pool, &s->conf->store, s->buf,
                                 SPOOL_BUFFER_SIZE, &s->spool);
    if (rv != APR_SUCCESS) {
        s->spool = NULL;
        s->early_reason = stowrs_outcome_io_reason(rv);
        s->early_detail = apr_psprintf(s->part_pool, "cannot create spool file: %pm", &rv);
    }
    return APR_SUCCESS;
}

static apr_status_t
on_part_data(void *baton, const char *data, apr_size_t len)
{
    stowrs_stow_t *s = baton;
    apr_status_t rv;

    if (!s->spool || s->early_reason) {
        return APR_SUCCESS;     /* failed already: read on, keep nothing */
    }
    if (s->held) {
        held_part_t *h = s->held;

        if (h->error || h->too_large) {
            return APR_SUCCESS;
        }
        if (h->kind == HELD_METADATA && s->conf->max_metadata > 0
            && stowrs_store_spool_size(h->spool) + (apr_off_t)len > s->conf->max_metadata) {
            h->too_large = 1;
            return APR_SUCCESS;
        }
        if ((rv = stowrs_store_spool_write(h->spool, data, len)) != APR_SUCCESS) {
            h->error = rv;
        }
        return APR_SUCCESS;
    }
    rv = stowrs_store_spool_write(s->spool, data, len);
    if (rv != APR_SUCCESS) {
        s->early_reason = stowrs_outcome_io_reason(rv);
        s->early_detail = apr_psprintf(s->part_pool, "writing spool file: %pm", &rv);
    }
    return APR_SUCCESS;
}

static void
drop_part(stowrs_stow_t *s)
{
    if (s->part_pool) {
        apr_pool_destroy(s->part_pool);     /* removes an unpublished spool */
        s->part_pool = NULL;
        s->spool = NULL;
    }
}

/* Inspect, check and publish a complete PS3.10 file in @c spool (received
 * or built); fills @c o. */
static void
finish_instance(stowrs_stow_t *s, stowrs_spool_t *spool, stowrs_outcome_t *o,
                const char **final_path, const char **action, int *deferred)
{
    stowrs_dicom_info_t info;
    stowrs_dicom_rc_e rc;
    stowrs_publish_e published;
    char errbuf[256];
    const char *detail = NULL;
    unsigned int reason;
    apr_status_t rv;

    rv = stowrs_store_spool_close(spool);
    if (rv != APR_SUCCESS) {
        o->failure_reason = stowrs_outcome_io_reason(rv);
        o->detail = apr_psprintf(s->pool, "writing spool file: %pm", &rv);
        o->sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
        o->sop_instance_uid = fresh_uid(s->pool);
        return;
    }
    errbuf[0] = '\0';
    rc = stowrs_dicom_inspect(stowrs_store_spool_path(spool), &info, errbuf, sizeof(errbuf));
    reason = stowrs_outcome_check(rc, &info, &s->conf->accept, s->conf->url_study_uid, &detail);

    if (reason == STOWRS_FR_NOT_PARSEABLE || !info.sop_instance_uid[0]) {
        /* PS3.18 wants some UID in the item; the meta header's if any. */
        o->sop_class_uid = uid_or(s->pool, info.meta_sop_class_uid, STOWRS_UNKNOWN_SOP_CLASS_UID);
        o->sop_instance_uid = info.meta_sop_instance_uid[0]
            ? apr_pstrdup(s->pool, info.meta_sop_instance_uid) : fresh_uid(s->pool);
    }
    else {
        o->sop_class_uid = uid_or(s->pool, info.sop_class_uid,
                                  info.meta_sop_class_uid[0] ? info.meta_sop_class_uid
                                                             : STOWRS_UNKNOWN_SOP_CLASS_UID);
        o->sop_instance_uid = apr_pstrdup(s->pool, info.sop_instance_uid);
    }
    /* A hostile value must not reach a UI element of the response. */
    if (!stowrs_uid_valid(o->sop_class_uid)) {
        o->sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
    }
    if (!stowrs_uid_valid(o->sop_instance_uid)) {
        o->sop_instance_uid = fresh_uid(s->pool);
    }
    if (s->ts_param && info.transfer_syntax_uid[0]
        && strcmp(s->ts_param, info.transfer_syntax_uid) != 0) {
        s->ts_param = apr_pstrdup(s->pool, s->ts_param);
    }
    else {
        s->ts_param = NULL;
    }
    if (reason) {
        o->failure_reason = reason;
        o->detail = (errbuf[0] && rc != STOWRS_DICOM_OK)
            ? apr_pstrcat(s->pool, detail ? detail : "", ": ", errbuf, NULL)
            : detail;
        return;
    }

    rv = stowrs_store_publish_in(spool, s->batch, info.sop_class_uid,
                                 info.study_instance_uid, info.series_instance_uid,
                                 info.sop_instance_uid, &published, final_path, deferred);
    if (rv != APR_SUCCESS) {
        o->failure_reason = stowrs_outcome_io_reason(rv);
        o->detail = apr_psprintf(s->pool, "publishing: %pm", &rv);
        *final_path = NULL;
        return;
    }
    switch (published) {
    case STOWRS_PUBLISH_STORED:
    case STOWRS_PUBLISH_KEPT:
    case STOWRS_PUBLISH_REPLACED:
        o->study_instance_uid = apr_pstrdup(s->pool, info.study_instance_uid);
        o->series_instance_uid = apr_pstrdup(s->pool, info.series_instance_uid);
        o->duplicate = (published != STOWRS_PUBLISH_STORED);
        *action = published == STOWRS_PUBLISH_STORED ? "stored"
                : published == STOWRS_PUBLISH_KEPT ? "duplicate kept" : "duplicate replaced";
        *final_path = *final_path ? apr_pstrdup(s->pool, *final_path) : NULL;
        break;
    case STOWRS_PUBLISH_REJECTED:
        o->failure_reason = STOWRS_FR_DUPLICATE_REJECTED;
        o->detail = "instance already stored";
        *final_path = NULL;
        break;
    case STOWRS_PUBLISH_CONFLICT:
        o->failure_reason = STOWRS_FR_UID_CONFLICT;
        o->detail = "SOP Instance UID already stored in another study or series";
        *final_path = NULL;
        break;
    }
}

static apr_status_t
on_part_end(void *baton)
{
    stowrs_stow_t *s = baton;
    stowrs_outcome_t o;
    const char *final_path = NULL;
    const char *action = "stored";
    int deferred = 0;
    apr_off_t bytes = s->spool ? stowrs_store_spool_size(s->spool) : 0;

    if (s->held) {
        held_part_t *h = s->held;

        if (h->spool && !h->error) {
            h->error = stowrs_store_spool_flush(h->spool);
            h->bulk.length = (unsigned long long)stowrs_store_spool_size(h->spool);
        }
        s->held = NULL;
        s->spool = NULL;
        drop_part(s);
        return APR_SUCCESS;
    }
    if (s->ignored) {
        s->ignored = 0;
        drop_part(s);
        return APR_SUCCESS;
    }
    memset(&o, 0, sizeof(o));
    if (s->early_reason) {
        o.failure_reason = s->early_reason;
        o.detail = apr_pstrdup(s->pool, s->early_detail);
        o.sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
        o.sop_instance_uid = fresh_uid(s->pool);
        s->ts_param = NULL;
    }
    else {
        finish_instance(s, s->spool, &o, &final_path, &action, &deferred);
    }
    record(s, &o, bytes, final_path, action, deferred);
    drop_part(s);
    return APR_SUCCESS;
}

/* Remove every held spool file: the body ended or failed. */
static void
drop_held(stowrs_stow_t *s)
{
    if (s->held_pool) {
        apr_pool_destroy(s->held_pool);
        s->held_pool = NULL;
        s->held = NULL;
    }
}

static int
resolve_bulk(void *baton, const char *uri, const stowrs_bulk_t *const **parts)
{
    stowrs_stow_t *s = baton;
    bulk_entry_t *e = apr_hash_get(s->bulk_by_location, uri, APR_HASH_KEY_STRING);
    int i;

    if (!e) {
        const char *key = stowrs_meta_uri_key(s->part_pool, s->conf->request_url, uri);

        e = key ? apr_hash_get(s->bulk_by_key, key, APR_HASH_KEY_STRING) : NULL;
    }
    if (!e) {
        return 0;
    }
    e->referenced = 1;
    for (i = 0; i < e->parts->nelts; i++) {
        const stowrs_bulk_t *b = APR_ARRAY_IDX(e->parts, i, const stowrs_bulk_t *);
        const held_part_t *h = (const held_part_t *)((const char *)b
                                                     - offsetof(held_part_t, bulk));

        if (h->error || !b->path) {
            s->resolve_error = h->error ? h->error : APR_EGENERAL;
            return 0;
        }
    }
    *parts = (const stowrs_bulk_t *const *)e->parts->elts;
    return e->parts->nelts;
}

/* A metadata object that never became a file. */
static void
fail_object(stowrs_stow_t *s, const stowrs_meta_ds_t *ds, unsigned int reason,
            const char *detail)
{
    stowrs_outcome_t o;
    const stowrs_meta_elem_t *cls = ds ? stowrs_meta_find(ds, 0x00080016u) : NULL;
    const stowrs_meta_elem_t *sop = ds ? stowrs_meta_find(ds, 0x00080018u) : NULL;

    memset(&o, 0, sizeof(o));
    o.failure_reason = reason;
    o.detail = detail ? apr_pstrdup(s->pool, detail) : NULL;
    o.sop_class_uid = (cls && cls->nvalues == 1 && stowrs_uid_valid(cls->values[0]))
        ? apr_pstrdup(s->pool, cls->values[0]) : STOWRS_UNKNOWN_SOP_CLASS_UID;
    o.sop_instance_uid = (sop && sop->nvalues == 1 && stowrs_uid_valid(sop->values[0]))
        ? apr_pstrdup(s->pool, sop->values[0]) : fresh_uid(s->pool);
    record(s, &o, 0, NULL, "failed", 0);
}

static unsigned int
build_reason(stowrs_build_rc_e rc, int os_error, apr_status_t resolve_error)
{
    switch (rc) {
    case STOWRS_BUILD_BULK_MISSING:
        return resolve_error ? stowrs_outcome_io_reason(resolve_error)
                             : STOWRS_FR_BULKDATA_MISSING;
    case STOWRS_BUILD_IMAGE_ATTRS:
        return STOWRS_FR_DATASET_MISMATCH;
    case STOWRS_BUILD_MEDIA_TYPE:
        return STOWRS_FR_TS_NOT_SUPPORTED;
    case STOWRS_BUILD_BAD_METADATA:
        return STOWRS_FR_CANNOT_UNDERSTAND;
    case STOWRS_BUILD_IO:
        return stowrs_outcome_io_reason(os_error ? APR_FROM_OS_ERROR(os_error) : APR_EGENERAL);
    default:
        return STOWRS_FR_PROCESSING_FAILURE;
    }
}

/* @return 1 if @c ds has a non-empty single value for @c tag */
static int
has_value(const stowrs_meta_ds_t *ds, unsigned int tag)
{
    const stowrs_meta_elem_t *e = stowrs_meta_find(ds, tag);

    return e && e->nvalues >= 1 && e->values[0] && e->values[0][0];
}

/* Build one metadata object into a PS3.10 file, then check and publish it. */
static void
build_object(stowrs_stow_t *s, const stowrs_meta_ds_t *ds)
{
    stowrs_outcome_t o;
    stowrs_spool_t *spool;
    stowrs_build_rc_e rc;
    const char *final_path = NULL, *action = "stored";
    char errbuf[256];
    int os_error = 0, deferred = 0;
    apr_status_t rv;

    /* Without them there is no meta header to write; DESIGN.md §3.3 calls
     * a missing SOP UID A900 however the instance arrived. */
    if (!has_value(ds, 0x00080016u) || !has_value(ds, 0x00080018u)) {
        fail_object(s, ds, STOWRS_FR_DATASET_MISMATCH, "SOP Class or Instance UID missing");
        return;
    }

    if (apr_pool_create(&s->part_pool, s->pool) != APR_SUCCESS) {
        s->part_pool = NULL;
        fail_object(s, ds, STOWRS_FR_PROCESSING_FAILURE, "out of memory");
        return;
    }
    rv = stowrs_store_spool_open(s->part_pool, &s->conf->store, s->buf, SPOOL_BUFFER_SIZE,
                                 &spool);
    if (rv != APR_SUCCESS) {
        fail_object(s, ds, stowrs_outcome_io_reason(rv),
                    apr_psprintf(s->part_pool, "cannot create spool file: %pm", &rv));
        drop_part(s);
        return;
    }
    errbuf[0] = '\0';
    s->resolve_error = APR_SUCCESS;
    rc = stowrs_dicom_build(ds, resolve_bulk, s, stowrs_store_spool_path(spool), &os_error,
                            errbuf, sizeof(errbuf));
    if (rc != STOWRS_BUILD_OK) {
        const char *detail;

        /* The administrator of a full disk needs the OS error, as a PS3.10
         * part's line gives it, not "names no bulk data part". */
        if (rc == STOWRS_BUILD_BULK_MISSING && s->resolve_error != APR_SUCCESS) {
            detail = apr_psprintf(s->part_pool, "writing a bulk data part: %pm",
                                  &s->resolve_error);
        }
        else if (rc == STOWRS_BUILD_IO && os_error) {
            rv = APR_FROM_OS_ERROR(os_error);
            detail = apr_psprintf(s->part_pool, "cannot build the instance: %s: %pm",
                                  errbuf, &rv);
        }
        else {
            detail = apr_pstrcat(s->part_pool, "cannot build the instance: ", errbuf, NULL);
        }
        fail_object(s, ds, build_reason(rc, os_error, s->resolve_error), detail);
        drop_part(s);
        return;
    }
    memset(&o, 0, sizeof(o));
    s->ts_param = NULL;
    if ((rv = stowrs_store_spool_restat(spool)) != APR_SUCCESS) {
        fail_object(s, ds, STOWRS_FR_PROCESSING_FAILURE, "cannot stat the built file");
        drop_part(s);
        return;
    }
    finish_instance(s, spool, &o, &final_path, &action, &deferred);
    record(s, &o, stowrs_store_spool_size(spool), final_path, action, deferred);
    drop_part(s);
}

/* The body has ended: turn every held metadata object into an outcome. */
static void
process_metadata(stowrs_stow_t *s)
{
    int i, j;

    for (i = 0; i < s->metadata->nelts; i++) {
        held_part_t *h = APR_ARRAY_IDX(s->metadata, i, held_part_t *);
        const char *path = h->spool ? stowrs_store_spool_path(h->spool) : NULL;
        const char *error = NULL;
        apr_pool_t *meta_pool;
        stowrs_meta_rc_e rc;

        s->part_no = h->part_no;
        if (h->error) {
            fail_object(s, NULL, stowrs_outcome_io_reason(h->error),
                        apr_psprintf(s->pool, "spooling the metadata part: %pm", &h->error));
            continue;
        }
        if (h->too_large) {
            fail_object(s, NULL, STOWRS_FR_CANNOT_UNDERSTAND,
                        "metadata part larger than StowRSMaxMetadataSize");
            continue;
        }
        if (apr_pool_create(&meta_pool, s->pool) != APR_SUCCESS) {
            fail_object(s, NULL, STOWRS_FR_PROCESSING_FAILURE, "out of memory");
            continue;
        }
        if (s->conf->mode == STOWRS_STOW_XML) {
            stowrs_meta_ds_t *ds = NULL;

            rc = stowrs_meta_read_xml_file(meta_pool, path, &ds, &error);
            if (rc != STOWRS_META_OK) {
                fail_object(s, NULL, rc == STOWRS_META_NOMEM ? STOWRS_FR_PROCESSING_FAILURE
                                                             : STOWRS_FR_CANNOT_UNDERSTAND,
                            apr_pstrcat(s->pool, "metadata: ", error ? error : "", NULL));
            }
            else {
                build_object(s, ds);
            }
        }
        else {
            apr_array_header_t *objects = NULL;

            rc = stowrs_meta_read_json_file(meta_pool, path, &objects, &error);
            if (rc != STOWRS_META_OK) {
                fail_object(s, NULL, rc == STOWRS_META_NOMEM ? STOWRS_FR_PROCESSING_FAILURE
                                                             : STOWRS_FR_CANNOT_UNDERSTAND,
                            apr_pstrcat(s->pool, "metadata: ", error ? error : "", NULL));
            }
            for (j = 0; rc == STOWRS_META_OK && j < objects->nelts; j++) {
                const stowrs_meta_object_t *obj = &APR_ARRAY_IDX(objects, j,
                                                                 stowrs_meta_object_t);

                if (obj->rc != STOWRS_META_OK) {
                    fail_object(s, NULL, obj->rc == STOWRS_META_NOMEM
                                ? STOWRS_FR_PROCESSING_FAILURE : STOWRS_FR_CANNOT_UNDERSTAND,
                                apr_psprintf(s->pool, "metadata object %d: %s", j + 1,
                                             obj->error ? obj->error : ""));
                }
                else {
                    build_object(s, obj->ds);
                }
            }
        }
        apr_pool_destroy(meta_pool);
    }
    for (i = 0; i < s->bulk->nelts; i++) {
        const bulk_entry_t *e = APR_ARRAY_IDX(s->bulk, i, const bulk_entry_t *);

        if (!e->referenced) {
            note(s, e->first_part_no, "bulk data part not referenced by any metadata, ignored");
        }
    }
}

apr_status_t
stowrs_stow_create(apr_pool_t *pool, const stowrs_stow_conf_t *conf, const char *boundary,
                   stowrs_stow_outcome_fn fn, void *baton, stowrs_stow_t **out)
{
    static const stowrs_mp_callbacks_t callbacks = {
        on_part_begin, on_part_data, on_part_end
    };
    stowrs_stow_t *s = apr_pcalloc(pool, sizeof(*s));
    apr_status_t rv;

    s->pool = pool;
    s->conf = conf;
    s->fn = fn;
    s->baton = baton;
    s->outcomes = apr_array_make(pool, 16, sizeof(stowrs_outcome_t));
    s->pending = apr_array_make(pool, PENDING_MAX, sizeof(pending_t));
    s->batch = conf->store.sync ? stowrs_store_batch_make(pool) : NULL;
    s->notes = apr_array_make(pool, 4, sizeof(stowrs_stow_note_t));
    if (conf->mode != STOWRS_STOW_DICOM) {
        if ((rv = apr_pool_create(&s->held_pool, pool)) != APR_SUCCESS) {
            return rv;
        }
        s->metadata = apr_array_make(s->held_pool, 4, sizeof(held_part_t *));
        s->bulk = apr_array_make(s->held_pool, 4, sizeof(bulk_entry_t *));
        s->bulk_by_location = apr_hash_make(s->held_pool);
        s->bulk_by_key = apr_hash_make(s->held_pool);
    }
    s->buf = apr_palloc(pool, SPOOL_BUFFER_SIZE);
    rv = stowrs_mp_create(pool, boundary, &callbacks, s, conf->max_header_bytes,
                          conf->max_parts, &s->parser);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    *out = s;
    return APR_SUCCESS;
}

apr_status_t
stowrs_stow_feed(stowrs_stow_t *s, const char *data, apr_size_t len)
{
    apr_status_t rv = stowrs_mp_feed(s->parser, data, len);

    if (rv != APR_SUCCESS) {
        drop_part(s);       /* broken framing ends the request */
        drop_held(s);
        flush_pending(s);   /* instances completed before it stay stored */
    }
    return rv;
}

apr_status_t
stowrs_stow_finish(stowrs_stow_t *s)
{
    apr_status_t rv = stowrs_mp_finish(s->parser);

    if (rv != APR_SUCCESS) {
        drop_part(s);
    }
    else if (s->held_pool) {
        process_metadata(s);
    }
    drop_held(s);
    flush_pending(s);
    return rv;
}

void
stowrs_stow_abort(stowrs_stow_t *s)
{
    drop_part(s);
    drop_held(s);
    flush_pending(s);
}

const apr_array_header_t *
stowrs_stow_notes(const stowrs_stow_t *s)
{
    return s->notes;
}

const apr_array_header_t *
stowrs_stow_outcomes(const stowrs_stow_t *s)
{
    return s->outcomes;
}

const stowrs_mp_parser_t *
stowrs_stow_parser(const stowrs_stow_t *s)
{
    return s->parser;
}
