/*
 * mod_stowrs.c - httpd glue of the STOW-RS store service.
 *
 * Reads top to bottom like mod_reflector: the handler routes and runs the
 * pre-checks of DESIGN.md §3.1 before a byte of the body is read (so a
 * rejected request with Expect: 100-continue never gets 100 Continue),
 * pumps the request brigade into the core (stowrs_stow.c), and answers
 * from the outcome list. Everything that decides a FailureReason or a
 * status lives in the core files, which know nothing of httpd.
 */

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "unixd.h"
#include "mod_status.h"

#include <apr_strings.h>
#include <apr_uri.h>
#include <libxml/parser.h>

#include "stowrs_private.h"
#include "stowrs_dicom.h"
#include "stowrs_multipart.h"
#include "stowrs_response.h"
#include "stowrs_stow.h"
#include "stowrs_uid.h"

#if defined(__clang__)
/* APR's ring macros (APR_BRIGADE_SENTINEL) compute offsets from NULL. */
#pragma clang diagnostic ignored "-Wnull-pointer-subtraction"
#endif

/* Bytes asked of the input filters per read; httpd's own body reads
 * (ap_xml_parse_input) use the same order of magnitude. */
#define STOWRS_READ_BLOCK (64 * 1024)
#define STOWRS_RETRY_AFTER "60"

/* Per-request state the outcome callback needs for its log lines. */
typedef struct {
    request_rec *r;
    const char *where;
    const char *counter_name;       /* the <Location> whose counters move */
    int stored;
    int failed;
} stowrs_req_t;

static const char *
conf_location(const stowrs_dir_conf_t *conf)
{
    return conf->location ? conf->location : "";
}

/* The name a location's shared counters and request limit go by: its path,
 * and for a virtual host also the host's name, so two sites with the same
 * <Location> path do not share a limit. */
static const char *
counter_name(request_rec *r, const stowrs_dir_conf_t *conf)
{
    const server_rec *s = r->server;

    if (!s->is_virtual || !s->server_hostname) {
        return conf_location(conf);
    }
    return s->port ? apr_psprintf(r->pool, "%s@%s:%u", conf_location(conf),
                                  s->server_hostname, (unsigned int)s->port)
                   : apr_psprintf(r->pool, "%s@%s", conf_location(conf), s->server_hostname);
}

/*
 * Split r->uri into the service base and the study UID. @return 1 for
 * {base}/studies or {base}/studies/{uid} (uid possibly invalid), else 0.
 */
static int
route(request_rec *r, const stowrs_dir_conf_t *conf, const char **base, const char **study)
{
    const char *uri = r->uri;
    const char *rest = NULL;
    apr_size_t loclen = conf->location ? strlen(conf->location) : 0;

    if (conf->location && strncmp(uri, conf->location, loclen) == 0
        && (uri[loclen] == '/' || uri[loclen] == '\0')) {
        *base = conf->location;
        rest = uri + loclen;
    }
    else {
        /* Configured outside a plain <Location> (server level, a regex):
         * the service base is whatever precedes the last "/studies". */
        const char *p = uri, *hit = NULL;

        while ((p = strstr(p, "/studies")) != NULL) {
            if (p[8] == '\0' || p[8] == '/') {
                hit = p;
            }
            p += 8;
        }
        if (!hit) {
            return 0;
        }
        *base = apr_pstrmemdup(r->pool, uri, (apr_size_t)(hit - uri));
        rest = hit;
    }
    if (strcmp(rest, "/studies") == 0) {
        *study = NULL;
        return 1;
    }
    if (strncmp(rest, "/studies/", 9) == 0 && rest[9] && !strchr(rest + 9, '/')) {
        *study = rest + 9;
        return 1;
    }
    return 0;
}

/*
 * A protocol-level answer: short plain text, never an HTML error page.
 * The connection closes so httpd does not read or drain a body we refused.
 */
static int
answer_text(request_rec *r, int status, const char *msg)
{
    r->status = status;
    r->connection->keepalive = AP_CONN_CLOSE;
    if (status == HTTP_SERVICE_UNAVAILABLE) {
        apr_table_setn(r->headers_out, "Retry-After", STOWRS_RETRY_AFTER);
    }
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rvputs(r, msg, "\n", NULL);
    return OK;
}

static void
log_outcome(void *baton, const stowrs_outcome_t *o, const stowrs_part_info_t *info)
{
    stowrs_req_t *rq = baton;
    request_rec *r = rq->r;

    stowrs_shm_count_outcome(rq->counter_name, o->failure_reason, info->bytes);
    if (o->failure_reason) {
        rq->failed++;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0201)
                      "[%s] part %u: failed %04X (%s): %s", rq->where, info->part_no,
                      o->failure_reason, stowrs_outcome_reason_text(o->failure_reason),
                      o->detail ? o->detail : "");
    }
    else {
        rq->stored++;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0202)
                      "[%s] part %u: %s (%" APR_OFF_T_FMT " bytes)", rq->where,
                      info->part_no, info->action, info->bytes);
    }
    if (info->ts_param) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0203)
                      "[%s] part %u: transfer-syntax parameter disagrees with the "
                      "meta header; the meta header wins", rq->where, info->part_no);
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, STOWRS_LOGNO(0204)
                  "[%s] part %u: class %s instance %s study %s series %s path %s",
                  rq->where, info->part_no, o->sop_class_uid, o->sop_instance_uid,
                  o->study_instance_uid ? o->study_instance_uid : "-",
                  o->series_instance_uid ? o->series_instance_uid : "-",
                  info->final_path ? info->final_path : "-");
}

static void
log_notes(request_rec *r, const stowrs_req_t *rq, const stowrs_stow_t *stow)
{
    const apr_array_header_t *notes = stowrs_stow_notes(stow);
    int i;

    for (i = 0; i < notes->nelts; i++) {
        const stowrs_stow_note_t *n = &APR_ARRAY_IDX(notes, i, stowrs_stow_note_t);

        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0205)
                      "[%s] part %u: %s", rq->where, n->part_no, n->text);
    }
}

/* Fill the core's view of the configuration from the merged per-dir one. */
static void
core_conf(request_rec *r, const stowrs_dir_conf_t *conf, const char *study,
          stowrs_stow_conf_t *out)
{
    int i;

    memset(out, 0, sizeof(*out));
    out->store.archive = conf->archive;
    out->store.path_format = conf->path_format ? conf->path_format
                                               : STOWRS_STORE_DEFAULT_FORMAT;
    out->store.sync = conf->sync != 0;      /* unset means On */
    out->store.overwrite = conf->overwrite == STOWRS_UNSET
        ? STOWRS_OVERWRITE_NEVER : (stowrs_overwrite_e)conf->overwrite;
    stowrs_accept_defaults(r->pool, &out->accept);
    if (conf->sop_classes_set) {
        out->accept.sop_classes = conf->sop_classes;
    }
    for (i = STOWRS_SOP_IMAGE; i <= STOWRS_SOP_OTHER; i++) {
        if (conf->transfer_syntaxes[i]) {
            out->accept.transfer_syntaxes[i] = conf->transfer_syntaxes[i];
        }
    }
    out->url_study_uid = study;
}

static int
answer_outcomes(request_rec *r, const stowrs_req_t *rq, const apr_array_header_t *outcomes,
                stowrs_resp_format_e fmt, const char *retrieve_base)
{
    const char *body;
    apr_size_t len;
    apr_status_t rv;
    int i;

    for (i = 0; i < outcomes->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t);

        if (o->failure_reason) {
            apr_table_addn(r->headers_out, "Warning",
                           apr_psprintf(r->pool, "299 %s \"%04X: %s\"",
                                        ap_get_server_name(r), o->failure_reason,
                                        stowrs_outcome_reason_text(o->failure_reason)));
        }
    }
    apr_table_setn(r->notes, "stowrs-stored", apr_itoa(r->pool, rq->stored));
    apr_table_setn(r->notes, "stowrs-failed", apr_itoa(r->pool, rq->failed));
    rv = stowrs_resp_build(r->pool, fmt, outcomes, retrieve_base, &body, &len);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, STOWRS_LOGNO(0401)
                      "[%s] cannot build the response", rq->where);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    r->status = stowrs_outcome_http_status(outcomes);
    if (r->status == HTTP_SERVICE_UNAVAILABLE) {
        apr_table_setn(r->headers_out, "Retry-After", STOWRS_RETRY_AFTER);
    }
    ap_set_content_type(r, stowrs_resp_content_type(fmt));
    ap_set_content_length(r, (apr_off_t)len);
    ap_rwrite(body, (int)len, r);
    return OK;
}

/* The §3.1 checks on the request line and headers, in the contract's order.
 * @return OK to go on, or the answer already given */
static int
precheck(request_rec *r, const stowrs_dir_conf_t *conf, const char *where,
         const char *study, const char **boundary, stowrs_resp_format_e *fmt,
         stowrs_stow_mode_e *mode)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    const char *type;
    stowrs_media_type_t mt;

    if (r->method_number != M_POST) {
        apr_table_setn(r->err_headers_out, "Allow", "POST");
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, STOWRS_LOGNO(0101)
                      "[%s] method %s not allowed", where, r->method);
        r->allowed = (AP_METHOD_BIT << M_POST);
        return answer_text(r, HTTP_METHOD_NOT_ALLOWED, "STOW-RS accepts POST only");
    }
    if (study && !stowrs_uid_valid(study)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0102)
                      "[%s] invalid Study Instance UID in the path", where);
        return answer_text(r, HTTP_BAD_REQUEST,
                           "the Study Instance UID in the path is not a valid UID");
    }
    if (!ct || stowrs_mp_parse_media_type(r->pool, ct, &mt) != APR_SUCCESS
        || strcmp(mt.type, "multipart/related") != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0103)
                      "[%s] Content-Type is not multipart/related", where);
        return answer_text(r, HTTP_UNSUPPORTED_MEDIA_TYPE,
                           "Content-Type must be multipart/related; type=\"application/dicom\"");
    }
    type = apr_table_get(mt.params, "type");
    if (type && strcasecmp(type, "application/dicom") == 0) {
        *mode = STOWRS_STOW_DICOM;
    }
    else if (type && strcasecmp(type, "application/dicom+xml") == 0) {
        *mode = STOWRS_STOW_XML;
    }
    else if (type && strcasecmp(type, "application/dicom+json") == 0) {
        *mode = STOWRS_STOW_JSON;
    }
    else {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0104)
                      "[%s] unsupported multipart/related type", where);
        return answer_text(r, HTTP_UNSUPPORTED_MEDIA_TYPE,
                           "the multipart/related type parameter must be application/dicom, "
                           "application/dicom+xml or application/dicom+json");
    }
    *boundary = apr_table_get(mt.params, "boundary");
    if (!*boundary || !stowrs_mp_boundary_valid(*boundary)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0105)
                      "[%s] missing or unusable boundary", where);
        return answer_text(r, HTTP_BAD_REQUEST,
                           "multipart/related needs a boundary of 1 to 70 characters");
    }
    if (stowrs_resp_negotiate(r->pool, apr_table_get(r->headers_in, "Accept"), fmt)
        != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0106)
                      "[%s] Accept lists nothing we can produce", where);
        return answer_text(r, HTTP_NOT_ACCEPTABLE,
                           "the response is application/dicom+xml or application/dicom+json");
    }
    if (!stowrs_shm_admit(r, counter_name(r, conf), conf->max_requests == STOWRS_UNSET
                                                   ? 0 : conf->max_requests)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0110)
                      "[%s] StowRSMaxRequests %d reached", where, conf->max_requests);
        return answer_text(r, HTTP_SERVICE_UNAVAILABLE,
                           "too many simultaneous STOW-RS requests; retry later");
    }
    if (cl && conf->max_body > 0) {
        apr_off_t declared;
        char *end;

        if (apr_strtoff(&declared, cl, &end, 10) == APR_SUCCESS && !*end
            && declared > conf->max_body) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0107)
                          "[%s] Content-Length %s over StowRSMaxBodySize %" APR_OFF_T_FMT,
                          where, cl, conf->max_body);
            return answer_text(r, HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "the request body is larger than this service accepts");
        }
    }
    return DECLINED;
}

/* A failed read: httpd's own filters may have answered already (413 for
 * LimitRequestBody), the client may be gone, else explain in plain text. */
static int
answer_read_error(request_rec *r, apr_status_t rv)
{
    int status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);

    if (status == AP_FILTER_ERROR || r->connection->aborted) {
        return status;
    }
    answer_text(r, status, status == HTTP_REQUEST_ENTITY_TOO_LARGE
                ? "the request body is larger than this server accepts"
                : "the request body could not be read");
    return DONE;
}

/* Pump the body into the core. @return OK when the body was read to its
 * end and framed correctly; DONE when an answer was given; else a status. */
static int
read_body(request_rec *r, const stowrs_dir_conf_t *conf, stowrs_req_t *rq,
          stowrs_stow_t *stow)
{
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_off_t total = 0;
    apr_status_t rv;
    int seen_eos = 0;

    do {
        apr_bucket *b;

        rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ,
                            STOWRS_READ_BLOCK);
        if (rv != APR_SUCCESS) {
            stowrs_stow_abort(stow);
            apr_brigade_destroy(bb);
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, STOWRS_LOGNO(0301)
                          "[%s] reading the body failed after %" APR_OFF_T_FMT
                          " bytes; %d instance(s) stored before", rq->where, total,
                          rq->stored);
            return answer_read_error(r, rv);
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t len;

            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b)) {
                continue;
            }
            rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                stowrs_stow_abort(stow);
                apr_brigade_destroy(bb);
                ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, STOWRS_LOGNO(0302)
                              "[%s] reading a body bucket failed", rq->where);
                return answer_read_error(r, rv);
            }
            total += (apr_off_t)len;
            if (conf->max_body > 0 && total > conf->max_body) {
                stowrs_stow_abort(stow);
                apr_brigade_destroy(bb);
                ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0303)
                              "[%s] body over StowRSMaxBodySize %" APR_OFF_T_FMT
                              "; %d instance(s) stored before", rq->where,
                              conf->max_body, rq->stored);
                answer_text(r, HTTP_REQUEST_ENTITY_TOO_LARGE,
                            apr_psprintf(r->pool, "the request body is larger than "
                                         "this service accepts; %d instance(s) "
                                         "were stored before the limit", rq->stored));
                return DONE;
            }
            if (stowrs_stow_feed(stow, data, len) != APR_SUCCESS) {
                break;
            }
        }
        apr_brigade_cleanup(bb);
        if (stowrs_mp_error(stowrs_stow_parser(stow)) != STOWRS_MP_OK) {
            break;
        }
    } while (!seen_eos);
    apr_brigade_destroy(bb);

    if (stowrs_mp_error(stowrs_stow_parser(stow)) == STOWRS_MP_OK) {
        stowrs_stow_finish(stow);
    }
    if (stowrs_mp_error(stowrs_stow_parser(stow)) != STOWRS_MP_OK) {
        const stowrs_mp_parser_t *mp = stowrs_stow_parser(stow);
        const char *reason = stowrs_mp_error_reason(stowrs_mp_error(mp));

        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0304)
                      "[%s] malformed multipart body at offset %" APR_OFF_T_FMT
                      ": %s; %d instance(s) stored before", rq->where,
                      stowrs_mp_error_offset(mp), reason, rq->stored);
        apr_table_setn(r->notes, "stowrs-stored", apr_itoa(r->pool, rq->stored));
        answer_text(r, HTTP_BAD_REQUEST,
                    apr_psprintf(r->pool, "malformed multipart body at offset %"
                                 APR_OFF_T_FMT ": %s; %d instance(s) were stored "
                                 "before the fault", stowrs_mp_error_offset(mp),
                                 reason, rq->stored));
        return DONE;
    }
    return OK;
}

static int
stowrs_handler(request_rec *r)
{
    stowrs_dir_conf_t *conf;
    stowrs_stow_conf_t *core;
    stowrs_stow_t *stow;
    stowrs_req_t *rq;
    stowrs_resp_format_e fmt = STOWRS_RESP_XML;
    stowrs_stow_mode_e mode = STOWRS_STOW_DICOM;
    const char *base = NULL, *study = NULL, *boundary = NULL, *retrieve_base;
    int rc;

    if (!r->handler || strcmp(r->handler, "stowrs") != 0) {
        return DECLINED;
    }
    conf = ap_get_module_config(r->per_dir_config, &stowrs_module);
    ap_allow_methods(r, 1, "POST", NULL);

    if (!route(r, conf, &base, &study)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, STOWRS_LOGNO(0108)
                      "[%s] no STOW-RS resource at this path", conf_location(conf));
        return answer_text(r, HTTP_NOT_FOUND,
                           "not a STOW-RS resource: POST to .../studies or "
                           ".../studies/{StudyInstanceUID}");
    }
    rc = precheck(r, conf, base, study, &boundary, &fmt, &mode);
    if (rc != DECLINED) {
        stowrs_shm_release(r);
        return rc;
    }
    if (!conf->archive) {
        stowrs_shm_release(r);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, STOWRS_LOGNO(0109)
                      "[%s] no StowRSArchive configured for this location", base);
        return answer_text(r, HTTP_INTERNAL_SERVER_ERROR,
                           "this STOW-RS location has no archive configured");
    }

    core = apr_palloc(r->pool, sizeof(*core));
    core_conf(r, conf, study, core);
    core->mode = mode;
    core->request_url = ap_construct_url(r->pool, r->uri, r);
    core->max_metadata = conf->max_metadata == STOWRS_UNSET ? STOWRS_DEFAULT_MAX_METADATA
                                                            : conf->max_metadata;
    rq = apr_pcalloc(r->pool, sizeof(*rq));
    rq->r = r;
    rq->where = base;
    rq->counter_name = counter_name(r, conf);
    if (stowrs_stow_create(r->pool, core, boundary, log_outcome, rq, &stow) != APR_SUCCESS) {
        return answer_text(r, HTTP_BAD_REQUEST, "unusable boundary");
    }
    rc = read_body(r, conf, rq, stow);
    stowrs_shm_release(r);
    log_notes(r, rq, stow);
    if (rc != OK) {
        return rc == DONE ? OK : rc;
    }
    if (stowrs_stow_outcomes(stow)->nelts == 0) {
        /* Well framed, but nothing in it was an instance (an empty JSON
         * array, only ignored parts): no item could say why, so say it here. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, STOWRS_LOGNO(0305)
                      "[%s] the request held no instance", base);
        return answer_text(r, HTTP_BAD_REQUEST,
                           "the request holds no instance: no application/dicom part, "
                           "and no metadata object of the request's type");
    }
    retrieve_base = conf->retrieve_base ? conf->retrieve_base
                                        : ap_construct_url(r->pool, base, r);
    return answer_outcomes(r, rq, stowrs_stow_outcomes(stow), fmt, retrieve_base);
}

/* --- configuration ----------------------------------------------------- */

static void *
create_dir_conf(apr_pool_t *p, char *dir)
{
    stowrs_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    if (dir) {
        char *d = apr_pstrdup(p, dir);
        apr_size_t n = strlen(d);

        /* <Location "/x/rs/"> and <Location "/x/rs"> name the same base. */
        while (n > 1 && d[n - 1] == '/') {
            d[--n] = '\0';
        }
        conf->location = (n == 1 && d[0] == '/') ? "" : d;
    }
    conf->sync = STOWRS_UNSET;
    conf->overwrite = STOWRS_UNSET;
    conf->max_body = STOWRS_UNSET;
    conf->max_metadata = STOWRS_UNSET;
    conf->max_requests = STOWRS_UNSET;
    return conf;
}

static void *
merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    const stowrs_dir_conf_t *base = basev, *add = addv;
    stowrs_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
    int i;

    /* The base path is that of the block that names the archive, so a
     * nested block that only changes a policy keeps the service's base. */
    conf->location = add->archive ? add->location
                                  : (base->location ? base->location : add->location);
    conf->archive = add->archive ? add->archive : base->archive;
    conf->path_format = add->path_format ? add->path_format : base->path_format;
    conf->sync = add->sync != STOWRS_UNSET ? add->sync : base->sync;
    conf->overwrite = add->overwrite != STOWRS_UNSET ? add->overwrite : base->overwrite;
    conf->max_body = add->max_body != STOWRS_UNSET ? add->max_body : base->max_body;
    conf->max_metadata = add->max_metadata != STOWRS_UNSET ? add->max_metadata
                                                           : base->max_metadata;
    conf->max_requests = add->max_requests != STOWRS_UNSET ? add->max_requests
                                                           : base->max_requests;
    conf->retrieve_base = add->retrieve_base ? add->retrieve_base : base->retrieve_base;
    conf->sop_classes_set = add->sop_classes_set || base->sop_classes_set;
    conf->sop_classes = add->sop_classes_set ? add->sop_classes : base->sop_classes;
    for (i = 0; i <= STOWRS_SOP_OTHER; i++) {
        conf->transfer_syntaxes[i] = add->transfer_syntaxes[i] ? add->transfer_syntaxes[i]
                                                               : base->transfer_syntaxes[i];
    }
    return conf;
}

static void *
create_server_conf(apr_pool_t *p, server_rec *s)
{
    stowrs_server_conf_t *sconf = apr_pcalloc(p, sizeof(*sconf));

    (void)s;
    sconf->archives = apr_array_make(p, 4, sizeof(const char *));
    return sconf;
}

static const char *
set_archive(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;
    stowrs_server_conf_t *sconf = ap_get_module_config(cmd->server->module_config,
                                                       &stowrs_module);
    char *dir;
    apr_size_t n;

    if (!ap_os_is_path_absolute(cmd->pool, arg)) {
        return apr_psprintf(cmd->pool, "StowRSArchive: \"%s\" is not an absolute path", arg);
    }
    if (apr_filepath_merge(&dir, NULL, arg, APR_FILEPATH_TRUENAME, cmd->pool) != APR_SUCCESS
        && apr_filepath_merge(&dir, NULL, arg, 0, cmd->pool) != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "StowRSArchive: \"%s\" is not a usable path", arg);
    }
    n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') {
        dir[--n] = '\0';
    }
    conf->archive = dir;
    APR_ARRAY_PUSH(sconf->archives, const char *) = dir;
    return NULL;
}

static const char *
set_path_format(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;
    const char *err = stowrs_store_check_format(cmd->pool, arg);

    if (err) {
        return apr_psprintf(cmd->pool, "StowRSPathFormat \"%s\": %s", arg, err);
    }
    conf->path_format = arg;
    return NULL;
}

/* A UID, or a dcmtk name such as CTImageStorage or JPEGLSLossless. */
static const char *
uid_argument(cmd_parms *cmd, const char *arg, const char **uid)
{
    if (stowrs_uid_valid(arg)) {
        *uid = arg;
        return NULL;
    }
    *uid = stowrs_dicom_uid_by_name(arg);
    if (!*uid) {
        return apr_psprintf(cmd->pool, "%s: \"%s\" is neither a UID nor a name dcmtk knows",
                            cmd->cmd->name, arg);
    }
    return NULL;
}

static const char *
set_accept_sop_class(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    stowrs_dir_conf_t *conf = dconf;
    apr_hash_t *set;
    int i;

    if (argc < 1) {
        return "StowRSAcceptSOPClass needs \"all\" or at least one UID or name";
    }
    if (argc == 1 && strcasecmp(argv[0], "all") == 0) {
        conf->sop_classes_set = 1;
        conf->sop_classes = NULL;
        return NULL;
    }
    set = apr_hash_make(cmd->pool);
    for (i = 0; i < argc; i++) {
        const char *uid;
        const char *err = uid_argument(cmd, argv[i], &uid);

        if (err) {
            return err;
        }
        apr_hash_set(set, uid, APR_HASH_KEY_STRING, uid);
    }
    conf->sop_classes_set = 1;
    conf->sop_classes = set;
    return NULL;
}

static const char *
set_accept_transfer_syntax(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    static const char *const names[] = { NULL, "image", "video", "sr", "other" };
    stowrs_dir_conf_t *conf = dconf;
    apr_array_header_t *list;
    int category = 0, i;

    if (argc < 2) {
        return "StowRSAcceptTransferSyntax needs a category (image, video, sr, other) "
               "and at least one UID or name";
    }
    for (i = STOWRS_SOP_IMAGE; i <= STOWRS_SOP_OTHER; i++) {
        if (strcasecmp(argv[0], names[i]) == 0) {
            category = i;
        }
    }
    if (!category) {
        return apr_psprintf(cmd->pool, "StowRSAcceptTransferSyntax: unknown category \"%s\" "
                            "(image, video, sr or other)", argv[0]);
    }
    list = apr_array_make(cmd->pool, argc - 1, sizeof(const char *));
    for (i = 1; i < argc; i++) {
        const char *uid;
        const char *err = uid_argument(cmd, argv[i], &uid);

        if (err) {
            return err;
        }
        APR_ARRAY_PUSH(list, const char *) = uid;
    }
    conf->transfer_syntaxes[category] = list;
    return NULL;
}

/* A byte count, as core's LimitRequestBody: apr_strtoff, then the end
 * and the sign. */
static const char *
byte_count(cmd_parms *cmd, const char *arg, apr_off_t *out)
{
    apr_off_t n;
    char *end;

    if (apr_strtoff(&n, arg, &end, 10) != APR_SUCCESS || end == arg || *end || n < 0) {
        return apr_psprintf(cmd->pool, "%s: \"%s\" is not a number of bytes (0 = unlimited)",
                            cmd->cmd->name, arg);
    }
    *out = n;
    return NULL;
}

static const char *
set_max_body_size(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;

    return byte_count(cmd, arg, &conf->max_body);
}

static const char *
set_max_metadata_size(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;

    return byte_count(cmd, arg, &conf->max_metadata);
}

static const char *
set_max_requests(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;
    char *end;
    apr_int64_t n = apr_strtoi64(arg, &end, 10);

    if (end == arg || *end || n < 0 || n > 1000000) {
        return apr_psprintf(cmd->pool, "StowRSMaxRequests: \"%s\" is not a number of "
                            "requests from 0 (unlimited) to 1000000", arg);
    }
    conf->max_requests = (int)n;
    return NULL;
}

static const char *
set_overwrite_policy(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;

    if (strcasecmp(arg, "Never") == 0) {
        conf->overwrite = STOWRS_OVERWRITE_NEVER;
    }
    else if (strcasecmp(arg, "Always") == 0) {
        conf->overwrite = STOWRS_OVERWRITE_ALWAYS;
    }
    else if (strcasecmp(arg, "Reject") == 0) {
        conf->overwrite = STOWRS_OVERWRITE_REJECT;
    }
    else {
        return apr_psprintf(cmd->pool, "StowRSOverwritePolicy: \"%s\" is not Never, Always "
                            "or Reject", arg);
    }
    return NULL;
}

static const char *
set_retrieve_base(cmd_parms *cmd, void *dconf, const char *arg)
{
    stowrs_dir_conf_t *conf = dconf;
    apr_uri_t uri;
    char *base;
    apr_size_t n;

    if (apr_uri_parse(cmd->pool, arg, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname
        || (strcasecmp(uri.scheme, "http") != 0 && strcasecmp(uri.scheme, "https") != 0)
        || uri.query || uri.fragment) {
        return apr_psprintf(cmd->pool, "StowRSRetrieveBase: \"%s\" is not an absolute "
                            "http(s) URL without query or fragment", arg);
    }
    base = apr_pstrdup(cmd->pool, arg);
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/') {
        base[--n] = '\0';
    }
    conf->retrieve_base = base;
    return NULL;
}

static const char *
set_sync(cmd_parms *cmd, void *dconf, int flag)
{
    stowrs_dir_conf_t *conf = dconf;

    (void)cmd;
    conf->sync = flag ? 1 : 0;
    return NULL;
}

static const command_rec stowrs_cmds[] = {
    AP_INIT_TAKE1("StowRSArchive", set_archive, NULL, RSRC_CONF | ACCESS_CONF,
                  "absolute directory where instances are stored"),
    AP_INIT_TAKE1("StowRSPathFormat", set_path_format, NULL, RSRC_CONF | ACCESS_CONF,
                  "layout below the archive, e.g. "
                  "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"),
    AP_INIT_TAKE_ARGV("StowRSAcceptSOPClass", set_accept_sop_class, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "\"all\" or the SOP class UIDs or dcmtk names accepted"),
    AP_INIT_TAKE_ARGV("StowRSAcceptTransferSyntax", set_accept_transfer_syntax, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "a category (image, video, sr, other) and its accepted transfer "
                      "syntax UIDs or names"),
    AP_INIT_TAKE1("StowRSMaxBodySize", set_max_body_size, NULL, RSRC_CONF | ACCESS_CONF,
                  "largest request body in bytes, 0 for no limit"),
    AP_INIT_TAKE1("StowRSMaxMetadataSize", set_max_metadata_size, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "largest metadata part (application/dicom+xml or +json) in bytes, "
                  "0 for no limit"),
    AP_INIT_TAKE1("StowRSMaxRequests", set_max_requests, NULL, RSRC_CONF | ACCESS_CONF,
                  "simultaneous requests this location serves across all httpd "
                  "processes, 0 for no limit"),
    AP_INIT_TAKE1("StowRSOverwritePolicy", set_overwrite_policy, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "what a duplicate instance does: Never, Always or Reject"),
    AP_INIT_TAKE1("StowRSRetrieveBase", set_retrieve_base, NULL, RSRC_CONF | ACCESS_CONF,
                  "WADO-RS base URL used in RetrieveURL"),
    AP_INIT_FLAG("StowRSSync", set_sync, NULL, RSRC_CONF | ACCESS_CONF,
                 "fsync instances and directories before reporting them stored"),
    { NULL, { NULL }, NULL, 0, 0, NULL }
};

/* --- start-up ------------------------------------------------------------ */

/* Root creates the directories; the children, running as User, write them. */
static void
give_to_user(apr_pool_t *p, const char *dir)
{
    const char *sub[3];
    int i;

    if (geteuid() != 0) {
        return;
    }
    sub[0] = dir;
    sub[1] = apr_pstrcat(p, dir, "/" STOWRS_STORE_SPOOL_DIR, NULL);
    sub[2] = apr_pstrcat(p, dir, "/" STOWRS_STORE_INDEX_DIR, NULL);
    for (i = 0; i < 3; i++) {
        if (chown(sub[i], ap_unixd_config.user_id, ap_unixd_config.group_id) != 0) {
            ap_log_perror(APLOG_MARK, APLOG_WARNING, APR_FROM_OS_ERROR(errno), p,
                          STOWRS_LOGNO(0004) "cannot hand %s to the httpd user", sub[i]);
        }
    }
}

static int
stowrs_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    char errbuf[256];
    server_rec *vs;

    (void)plog;
    /* httpd reads its configuration twice at startup; do the work once. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    xmlInitParser();
    if (stowrs_shm_init(pconf, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (stowrs_dicom_global_init(errbuf, sizeof(errbuf)) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, STOWRS_LOGNO(0001)
                     "dcmtk is not usable: %s", errbuf);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    for (vs = s; vs; vs = vs->next) {
        stowrs_server_conf_t *sconf = ap_get_module_config(vs->module_config, &stowrs_module);
        int i;

        for (i = 0; sconf && i < sconf->archives->nelts; i++) {
            const char *dir = APR_ARRAY_IDX(sconf->archives, i, const char *);
            apr_status_t rv = stowrs_store_prepare(ptemp, dir);
            int removed = 0;

            if (rv != APR_SUCCESS) {
                /* Not fatal: a missing mount may come back; requests then
                 * fail per instance and say so. */
                ap_log_error(APLOG_MARK, APLOG_ERR, rv, vs, STOWRS_LOGNO(0002)
                             "cannot prepare archive %s", dir);
                continue;
            }
            give_to_user(ptemp, dir);
            rv = stowrs_store_sweep(ptemp, dir, &removed);
            if (rv != APR_SUCCESS) {
                ap_log_error(APLOG_MARK, APLOG_ERR, rv, vs, STOWRS_LOGNO(0003)
                             "cannot sweep the spool of archive %s", dir);
            }
            else if (removed) {
                ap_log_error(APLOG_MARK, APLOG_INFO, 0, vs, STOWRS_LOGNO(0005)
                             "removed %d stale spool file(s) from %s", removed, dir);
            }
        }
    }
    return OK;
}

static void
stowrs_child_init(apr_pool_t *p, server_rec *s)
{
    stowrs_shm_child_init(p, s);
}

static void
stowrs_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_post_config(stowrs_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(stowrs_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, stowrs_shm_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(stowrs_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

/* Spelled out rather than AP_DECLARE_MODULE, whose APLOG_USE_MODULE is
 * already in stowrs_private.h. */
module AP_MODULE_DECLARE_DATA stowrs_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_server_conf,
    NULL,
    stowrs_cmds,
    stowrs_register_hooks,
    AP_MODULE_FLAG_NONE
};
