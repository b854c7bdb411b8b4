/*
 * mod_ceiling.c - the benchmark's ceiling and discard sink (bench/run.py).
 *
 * The ceiling is what httpd achieves on the same requests without any
 * DICOM work: the body is framed by the same parser (stowrs_multipart.c,
 * compiled in), each part goes to its own file with the same write path as
 * mod_stowrs (a spool buffer that coalesces httpd's 8000-byte buckets,
 * fdatasync, rename, fsync of the directory), but there is no inspection,
 * no index, no UID layout and no response document. mod_stowrs is measured
 * against it: the difference is the price of the DICOM contract.
 *
 *   LoadModule ceiling_module .../mod_ceiling.so
 *   <Location "/ceiling">
 *       SetHandler ceiling
 *       CeilingDir /tmp/x     # files land in /tmp/x/files, spools in /tmp/x/tmp
 *       CeilingMode store     # or discard: read the body, drop it
 *   </Location>
 *
 * "discard" reads the body with the same brigade loop and drops it; the
 * client reaching a rate there far above any server's shows that the
 * client is not what limits the measurements.
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

#include <apr_file_io.h>
#include <apr_strings.h>

#include "stowrs_multipart.h"

#if defined(__clang__)
#pragma clang diagnostic ignored "-Wnull-pointer-subtraction"
#endif

/* The same as mod_stowrs: STOWRS_READ_BLOCK in mod_stowrs.c and
 * SPOOL_BUFFER_SIZE in stowrs_stow.c. */
#define CEILING_READ_BLOCK (64 * 1024)
#define CEILING_BUFFER_SIZE (256 * 1024)

module AP_MODULE_DECLARE_DATA ceiling_module;

typedef enum {
    CEILING_UNSET = 0,
    CEILING_STORE,
    CEILING_DISCARD
} ceiling_mode_e;

typedef struct {
    const char *dir;
    ceiling_mode_e mode;
} ceiling_conf_t;

typedef struct {
    request_rec *r;
    const ceiling_conf_t *conf;
    apr_pool_t *part_pool;
    apr_file_t *file;
    char *path;
    char *buf;
    apr_size_t buffered;
    apr_status_t error;
    int stored;
    int failed;
} ceiling_req_t;

static apr_status_t
flush_buf(ceiling_req_t *c)
{
    apr_status_t rv = APR_SUCCESS;

    if (c->buffered > 0 && c->error == APR_SUCCESS) {
        rv = apr_file_write_full(c->file, c->buf, c->buffered, NULL);
        if (rv != APR_SUCCESS) {
            c->error = rv;
        }
    }
    c->buffered = 0;
    return c->error;
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

static apr_status_t
on_begin(void *baton, apr_table_t *headers)
{
    ceiling_req_t *c = baton;
    apr_status_t rv;

    (void)headers;
    c->error = APR_SUCCESS;
    c->buffered = 0;
    if ((rv = apr_pool_create(&c->part_pool, c->r->pool)) != APR_SUCCESS) {
        return rv;
    }
    c->path = apr_pstrcat(c->part_pool, c->conf->dir, "/tmp/part-XXXXXX", NULL);
    rv = apr_file_mktemp(&c->file, c->path,
                         APR_FOPEN_CREATE | APR_FOPEN_READ | APR_FOPEN_WRITE
                         | APR_FOPEN_EXCL, c->part_pool);
    if (rv != APR_SUCCESS) {
        c->file = NULL;
        c->error = rv;
    }
    return APR_SUCCESS;
}

/* The coalescing of stowrs_store_spool_write(). */
static apr_status_t
on_data(void *baton, const char *data, apr_size_t len)
{
    ceiling_req_t *c = baton;

    if (!c->file || c->error != APR_SUCCESS) {
        return APR_SUCCESS;
    }
    if (c->buffered + len <= CEILING_BUFFER_SIZE) {
        memcpy(c->buf + c->buffered, data, len);
        c->buffered += len;
        if (c->buffered == CEILING_BUFFER_SIZE) {
            flush_buf(c);
        }
        return APR_SUCCESS;
    }
    if (flush_buf(c) != APR_SUCCESS) {
        return APR_SUCCESS;
    }
    if (len >= CEILING_BUFFER_SIZE) {
        c->error = apr_file_write_full(c->file, data, len, NULL);
        return APR_SUCCESS;
    }
    memcpy(c->buf, data, len);
    c->buffered = len;
    return APR_SUCCESS;
}

/* fdatasync, rename into files/, fsync files/: a durable publish. */
static apr_status_t
on_end(void *baton)
{
    ceiling_req_t *c = baton;
    apr_status_t rv = APR_SUCCESS;

    if (c->file) {
        rv = flush_buf(c);
        if (rv == APR_SUCCESS) {
            rv = apr_file_datasync(c->file);
        }
        apr_file_close(c->file);
        c->file = NULL;
        if (rv == APR_SUCCESS) {
            const char *name = strrchr(c->path, '/') + 1;
            const char *dir = apr_pstrcat(c->part_pool, c->conf->dir, "/files", NULL);

            rv = apr_file_rename(c->path, apr_pstrcat(c->part_pool, dir, "/", name,
                                                      ".dcm", NULL), c->part_pool);
            if (rv == APR_SUCCESS) {
                rv = sync_dir(c->part_pool, dir);
            }
            else {
                apr_file_remove(c->path, c->part_pool);
            }
        }
        else {
            apr_file_remove(c->path, c->part_pool);
        }
    }
    else {
        rv = c->error ? c->error : APR_EGENERAL;
    }
    if (rv == APR_SUCCESS) {
        c->stored++;
    }
    else {
        c->failed++;
    }
    if (c->part_pool) {
        apr_pool_destroy(c->part_pool);
        c->part_pool = NULL;
    }
    return APR_SUCCESS;
}

static int
answer(request_rec *r, int status, const char *text)
{
    r->status = status;
    ap_set_content_type(r, "text/plain");
    ap_rputs(text, r);
    return OK;
}

static int
ceiling_handler(request_rec *r)
{
    static const stowrs_mp_callbacks_t cbs = { on_begin, on_data, on_end };
    const ceiling_conf_t *conf;
    const char *ct;
    const char *boundary = NULL;
    stowrs_media_type_t mt;
    stowrs_mp_parser_t *mp = NULL;
    ceiling_req_t *c;
    apr_bucket_brigade *bb;
    apr_status_t rv;
    int seen_eos = 0;

    if (!r->handler || strcmp(r->handler, "ceiling") != 0) {
        return DECLINED;
    }
    if (r->method_number != M_POST) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    conf = ap_get_module_config(r->per_dir_config, &ceiling_module);
    c = apr_pcalloc(r->pool, sizeof(*c));
    c->r = r;
    c->conf = conf;
    if (conf->mode != CEILING_DISCARD) {
        ct = apr_table_get(r->headers_in, "Content-Type");
        if (!conf->dir || !ct || stowrs_mp_parse_media_type(r->pool, ct, &mt) != APR_SUCCESS
            || !(boundary = apr_table_get(mt.params, "boundary"))
            || stowrs_mp_create(r->pool, boundary, &cbs, c, 0, 0, &mp) != APR_SUCCESS) {
            return answer(r, HTTP_BAD_REQUEST, "no usable multipart body\n");
        }
        c->buf = apr_palloc(r->pool, CEILING_BUFFER_SIZE);
    }

    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    do {
        apr_bucket *b;

        rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ,
                            CEILING_READ_BLOCK);
        if (rv != APR_SUCCESS) {
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
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
            if ((rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ)) != APR_SUCCESS) {
                return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            }
            if (mp && stowrs_mp_feed(mp, data, len) != APR_SUCCESS) {
                break;
            }
        }
        apr_brigade_cleanup(bb);
        if (mp && stowrs_mp_error(mp) != STOWRS_MP_OK) {
            break;
        }
    } while (!seen_eos);
    apr_brigade_destroy(bb);

    if (!mp) {
        return answer(r, HTTP_OK, "discarded\n");
    }
    if (stowrs_mp_error(mp) == STOWRS_MP_OK) {
        stowrs_mp_finish(mp);
    }
    if (c->part_pool) {
        apr_pool_destroy(c->part_pool);     /* a part cut short */
        c->part_pool = NULL;
    }
    if (stowrs_mp_error(mp) != STOWRS_MP_OK) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return answer(r, HTTP_BAD_REQUEST,
                      apr_psprintf(r->pool, "malformed body: %s\n",
                                   stowrs_mp_error_reason(stowrs_mp_error(mp))));
    }
    return answer(r, c->failed ? HTTP_CONFLICT : HTTP_OK,
                  apr_psprintf(r->pool, "stored %d failed %d\n", c->stored, c->failed));
}

static void *
create_dir_conf(apr_pool_t *p, char *dir)
{
    (void)dir;
    return apr_pcalloc(p, sizeof(ceiling_conf_t));
}

static void *
merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    const ceiling_conf_t *base = basev, *add = addv;
    ceiling_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    conf->dir = add->dir ? add->dir : base->dir;
    conf->mode = add->mode != CEILING_UNSET ? add->mode : base->mode;
    return conf;
}

static const char *
set_dir(cmd_parms *cmd, void *dconf, const char *arg)
{
    ceiling_conf_t *conf = dconf;

    conf->dir = ap_server_root_relative(cmd->pool, arg);
    return conf->dir ? NULL : "CeilingDir: bad path";
}

static const char *
set_mode(cmd_parms *cmd, void *dconf, const char *arg)
{
    ceiling_conf_t *conf = dconf;

    (void)cmd;
    if (strcasecmp(arg, "store") == 0) {
        conf->mode = CEILING_STORE;
    }
    else if (strcasecmp(arg, "discard") == 0) {
        conf->mode = CEILING_DISCARD;
    }
    else {
        return "CeilingMode must be store or discard";
    }
    return NULL;
}

static const command_rec ceiling_cmds[] = {
    AP_INIT_TAKE1("CeilingDir", set_dir, NULL, RSRC_CONF | ACCESS_CONF,
                  "directory with files/ and tmp/ for the stored parts"),
    AP_INIT_TAKE1("CeilingMode", set_mode, NULL, RSRC_CONF | ACCESS_CONF,
                  "store (default) or discard"),
    { NULL, { NULL }, NULL, 0, 0, NULL }
};

static void
register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_handler(ceiling_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(ceiling) = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    NULL,
    NULL,
    ceiling_cmds,
    register_hooks,
    AP_MODULE_FLAG_NONE
};
