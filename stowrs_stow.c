/*
 * stowrs_stow.c - one request's body, from multipart events to outcomes.
 *
 * Data flows one way (DESIGN.md §2): parser -> spool file -> inspect ->
 * checks -> publish -> outcome. Each part lives in its own subpool, created
 * when the part begins and destroyed when it ends, so a request with ten
 * thousand parts uses the memory of one, and destroying the pool is also
 * what removes a spool file that was not published.
 */

#include <string.h>

#include <apr_strings.h>

#include "stowrs_stow.h"
#include "stowrs_dicom.h"
#include "stowrs_uid.h"

/* Big enough that a 0.5 MB instance takes a handful of write(2) calls,
 * small enough that memory per request stays a few hundred KB. */
#define SPOOL_BUFFER_SIZE (256 * 1024)

struct stowrs_stow_t {
    apr_pool_t *pool;
    const stowrs_stow_conf_t *conf;
    stowrs_mp_parser_t *parser;
    stowrs_stow_outcome_fn fn;
    void *baton;
    apr_array_header_t *outcomes;
    char *buf;

    /* the part in progress */
    apr_pool_t *part_pool;          /* NULL between parts */
    stowrs_spool_t *spool;          /* NULL when the part is being discarded */
    unsigned int part_no;
    unsigned int early_reason;      /* decided before the part ended */
    const char *early_detail;
    const char *ts_param;
};

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
record(stowrs_stow_t *s, stowrs_outcome_t *o, apr_off_t bytes, const char *final_path,
       const char *action)
{
    stowrs_part_info_t info;

    *(stowrs_outcome_t *)apr_array_push(s->outcomes) = *o;
    if (s->fn) {
        info.part_no = s->part_no;
        info.bytes = bytes;
        info.final_path = final_path;
        info.ts_param = s->ts_param;
        info.action = o->failure_reason ? "failed" : action;
        s->fn(s->baton, o, &info);
    }
}

static apr_status_t
on_part_begin(void *baton, apr_table_t *headers)
{
    stowrs_stow_t *s = baton;
    const char *ct = apr_table_get(headers, "Content-Type");
    stowrs_media_type_t mt;
    apr_status_t rv;

    s->part_no++;
    s->spool = NULL;
    s->early_reason = 0;
    s->early_detail = NULL;
    s->ts_param = NULL;
    if ((rv = apr_pool_create(&s->part_pool, s->pool)) != APR_SUCCESS) {
        s->part_pool = NULL;
        return rv;
    }
    if (!ct || stowrs_mp_parse_media_type(s->part_pool, ct, &mt) != APR_SUCCESS
        || strcmp(mt.type, "application/dicom") != 0) {
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

/* Inspect, check and publish a fully received part; fills @c o. */
static void
finish_instance(stowrs_stow_t *s, stowrs_outcome_t *o, const char **final_path,
                const char **action)
{
    stowrs_dicom_info_t info;
    stowrs_dicom_rc_e rc;
    stowrs_publish_e published;
    char errbuf[256];
    const char *detail = NULL;
    unsigned int reason;
    apr_status_t rv;

    rv = stowrs_store_spool_close(s->spool);
    if (rv != APR_SUCCESS) {
        o->failure_reason = stowrs_outcome_io_reason(rv);
        o->detail = apr_psprintf(s->pool, "writing spool file: %pm", &rv);
        o->sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
        o->sop_instance_uid = fresh_uid(s->pool);
        return;
    }
    errbuf[0] = '\0';
    rc = stowrs_dicom_inspect(stowrs_store_spool_path(s->spool), &info, errbuf, sizeof(errbuf));
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

    rv = stowrs_store_publish(s->spool, info.sop_class_uid, info.study_instance_uid,
                              info.series_instance_uid, info.sop_instance_uid,
                              &published, final_path);
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
    apr_off_t bytes = s->spool ? stowrs_store_spool_size(s->spool) : 0;

    memset(&o, 0, sizeof(o));
    if (s->early_reason) {
        o.failure_reason = s->early_reason;
        o.detail = apr_pstrdup(s->pool, s->early_detail);
        o.sop_class_uid = STOWRS_UNKNOWN_SOP_CLASS_UID;
        o.sop_instance_uid = fresh_uid(s->pool);
        s->ts_param = NULL;
    }
    else {
        finish_instance(s, &o, &final_path, &action);
    }
    record(s, &o, bytes, final_path, action);
    drop_part(s);
    return APR_SUCCESS;
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
    return rv;
}

void
stowrs_stow_abort(stowrs_stow_t *s)
{
    drop_part(s);
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
