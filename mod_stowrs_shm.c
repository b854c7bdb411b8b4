/*
 * mod_stowrs_shm.c - glue for what httpd's processes share: the
 * per-location limit of simultaneous requests (StowRSMaxRequests) and the
 * counters mod_status shows.
 *
 * One anonymous shared memory segment, created once in the process pool
 * of the parent so that it survives graceful restarts (a new generation of
 * children finds the same counts as the old one still serving uploads).
 *
 * The limit counts claimed worker entries rather than a bare counter: an
 * entry names the process that claimed it, so a child that dies by SIGKILL
 * or a segfault while it held one does not shrink the limit forever; its
 * entries stop counting once its pid is gone. Claims take a global mutex
 * so that N+1 racing requests cannot all see N-1.
 */

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mod_status.h"

#include <apr_atomic.h>
#include <apr_global_mutex.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "stowrs_private.h"

/* Locations with their own counters and limit; any beyond share the last
 * line (and so one limit, the stricter reading), with a warning. */
#define SHM_LOCATIONS 1024
#define SHM_NAME_MAX 256
/* The FailureReasons counted one by one; others go to "other". */
static const unsigned int counted_reasons[] = {
    STOWRS_FR_PROCESSING_FAILURE, STOWRS_FR_DUPLICATE_REJECTED,
    STOWRS_FR_SOP_CLASS_NOT_SUPPORTED, STOWRS_FR_OUT_OF_RESOURCES,
    STOWRS_FR_UID_CONFLICT, STOWRS_FR_DATASET_MISMATCH, STOWRS_FR_BULKDATA_MISSING,
    STOWRS_FR_CANNOT_UNDERSTAND, STOWRS_FR_TS_NOT_SUPPORTED, STOWRS_FR_STUDY_MISMATCH,
    STOWRS_FR_NOT_PARSEABLE
};
#define SHM_REASONS (sizeof(counted_reasons) / sizeof(counted_reasons[0]) + 1)

typedef struct {
    char name[SHM_NAME_MAX];        /* location path; empty = unused */
    apr_uint32_t requests;          /* 32-bit atomics: APR has no 64-bit add */
    apr_uint32_t requests_refused;
    apr_uint32_t instances_stored;
    apr_uint32_t mib_stored;        /* whole MiB, the rest in bytes_stored */
    apr_uint32_t bytes_stored;
    apr_uint32_t failures[SHM_REASONS];
} shm_location_t;

typedef struct {
    pid_t pid;                      /* 0 = free */
    int location;                   /* index into locations */
} shm_worker_t;

typedef struct {
    int nworkers;
    shm_location_t locations[SHM_LOCATIONS];
    shm_worker_t workers[1];        /* nworkers of them */
} shm_table_t;

/* Per process, set in post_config and inherited by the children. */
static shm_table_t *table;
static apr_global_mutex_t *claim_mutex;

/* What the parent keeps across restarts in its process pool. The statics
 * above cannot be trusted to survive one: httpd unloads and reloads the
 * module's DSO at a restart, and whether that resets them depends on
 * whether the dynamic linker really unmaps it (it did under ASan, and the
 * new generation then ran with no table: no limit, no counters). */
typedef struct {
    apr_shm_t *shm;
    apr_global_mutex_t *mutex;
} shm_kept_t;

static const char *const userdata_key = "mod_stowrs_shm";

apr_status_t
stowrs_shm_init(apr_pool_t *pconf, server_rec *s)
{
    apr_pool_t *proc = s->process->pool;
    void *data = NULL;
    shm_kept_t *kept;
    apr_shm_t *shm;
    apr_status_t rv;
    int daemons = 0, threads = 0;
    apr_size_t size;

    (void)pconf;
    apr_pool_userdata_get(&data, userdata_key, proc);
    if (data) {
        /* a restart: keep the segment and its counts */
        kept = data;
        table = apr_shm_baseaddr_get(kept->shm);
        claim_mutex = kept->mutex;
        return APR_SUCCESS;
    }
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons);
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &threads);
    if (daemons < 1) {
        daemons = 1;
    }
    if (threads < 1) {
        threads = 1;
    }
    size = sizeof(shm_table_t) + sizeof(shm_worker_t) * (apr_size_t)(daemons * threads);
    if ((rv = apr_shm_create(&shm, size, NULL, proc)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, STOWRS_LOGNO(0006)
                     "cannot create shared memory of %" APR_SIZE_T_FMT " bytes", size);
        return rv;
    }
    if ((rv = apr_global_mutex_create(&claim_mutex, NULL, APR_LOCK_DEFAULT, proc))
        != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, STOWRS_LOGNO(0007)
                     "cannot create the request-limit mutex");
        return rv;
    }
    table = apr_shm_baseaddr_get(shm);
    memset(table, 0, size);
    table->nworkers = daemons * threads;
    kept = apr_palloc(proc, sizeof(*kept));
    kept->shm = shm;
    kept->mutex = claim_mutex;
    apr_pool_userdata_set(kept, userdata_key, apr_pool_cleanup_null, proc);
    return APR_SUCCESS;
}

void
stowrs_shm_child_init(apr_pool_t *p, server_rec *s)
{
    apr_status_t rv;

    if (!claim_mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&claim_mutex,
                                     apr_global_mutex_lockfile(claim_mutex), p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, STOWRS_LOGNO(0008)
                     "cannot attach to the request-limit mutex");
    }
}

/* @return the counters of @c location, created on first use; when the
 * table is full, the shared last line. NULL only without a table. */
static shm_location_t *
location_slot(const char *location, int *index)
{
    const char *name = *location ? location : "/";
    int i;

    if (!table) {
        return NULL;
    }
    for (i = 0; i < SHM_LOCATIONS - 1; i++) {
        if (table->locations[i].name[0]
            && strncmp(table->locations[i].name, name, SHM_NAME_MAX - 1) == 0) {
            *index = i;
            return &table->locations[i];
        }
    }
    /* New name: claim a free line under the mutex so two processes do
     * not take the same one. */
    if (apr_global_mutex_lock(claim_mutex) != APR_SUCCESS) {
        return NULL;
    }
    for (i = 0; i < SHM_LOCATIONS - 1; i++) {
        shm_location_t *l = &table->locations[i];

        if (!l->name[0]) {
            apr_cpystrn(l->name, name, SHM_NAME_MAX);
        }
        if (strncmp(l->name, name, SHM_NAME_MAX - 1) == 0) {
            apr_global_mutex_unlock(claim_mutex);
            *index = i;
            return l;
        }
    }
    if (!table->locations[SHM_LOCATIONS - 1].name[0]) {
        apr_cpystrn(table->locations[SHM_LOCATIONS - 1].name, "(other locations)",
                    SHM_NAME_MAX);
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, NULL, STOWRS_LOGNO(0009)
                     "more than %d STOW-RS locations: the rest share one counter line "
                     "and one StowRSMaxRequests count", SHM_LOCATIONS - 1);
    }
    apr_global_mutex_unlock(claim_mutex);
    *index = SHM_LOCATIONS - 1;
    return &table->locations[SHM_LOCATIONS - 1];
}

static apr_status_t
release_worker(void *data)
{
    shm_worker_t *w = data;

    w->location = -1;
    w->pid = 0;
    return APR_SUCCESS;
}

static int
worker_alive(const shm_worker_t *w, pid_t self)
{
    return w->pid == self || (w->pid > 0 && (kill(w->pid, 0) == 0 || errno == EPERM));
}

int
stowrs_shm_admit(request_rec *r, const char *location, int max_requests)
{
    shm_location_t *l;
    shm_worker_t *mine = NULL;
    pid_t self = getpid();
    int index = -1, active = 0, i;

    l = location_slot(location, &index);
    if (!l) {
        return 1;
    }
    apr_atomic_inc32(&l->requests);
    if (max_requests <= 0) {
        return 1;
    }
    if (apr_global_mutex_lock(claim_mutex) != APR_SUCCESS) {
        return 1;   /* counting is best effort; refusing work on it is not */
    }
    for (i = 0; i < table->nworkers; i++) {
        shm_worker_t *w = &table->workers[i];

        if (w->pid && !worker_alive(w, self)) {
            w->pid = 0;     /* its process died holding it */
        }
        if (!w->pid) {
            if (!mine) {
                mine = w;
            }
        }
        else if (w->location == index) {
            active++;
        }
    }
    if (active >= max_requests || !mine) {
        apr_global_mutex_unlock(claim_mutex);
        apr_atomic_inc32(&l->requests_refused);
        return 0;
    }
    mine->pid = self;
    mine->location = index;
    apr_global_mutex_unlock(claim_mutex);
    apr_pool_cleanup_register(r->pool, mine, release_worker, apr_pool_cleanup_null);
    ap_set_module_config(r->request_config, &stowrs_module, mine);
    return 1;
}

void
stowrs_shm_release(request_rec *r)
{
    shm_worker_t *mine = ap_get_module_config(r->request_config, &stowrs_module);

    if (mine) {
        apr_pool_cleanup_run(r->pool, mine, release_worker);
        ap_set_module_config(r->request_config, &stowrs_module, NULL);
    }
}

void
stowrs_shm_count_outcome(const char *location, unsigned int failure_reason,
                         apr_off_t bytes)
{
    shm_location_t *l;
    int index;
    apr_size_t i;

    if (!(l = location_slot(location, &index))) {
        return;
    }
    if (!failure_reason) {
        apr_atomic_inc32(&l->instances_stored);
        apr_atomic_add32(&l->mib_stored, (apr_uint32_t)(bytes >> 20));
        if (apr_atomic_add32(&l->bytes_stored, (apr_uint32_t)(bytes & 0xFFFFF))
            + (apr_uint32_t)(bytes & 0xFFFFF) >= (1u << 30)) {
            /* fold whole MiB back so bytes_stored cannot overflow */
            apr_atomic_sub32(&l->bytes_stored, 1u << 30);
            apr_atomic_add32(&l->mib_stored, 1u << 10);
        }
        return;
    }
    for (i = 0; i < SHM_REASONS - 1; i++) {
        if (counted_reasons[i] == failure_reason) {
            break;
        }
    }
    apr_atomic_inc32(&l->failures[i]);
}

int
stowrs_shm_status_hook(request_rec *r, int flags)
{
    int i;
    apr_size_t k;

    if (!table) {
        return OK;
    }
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("<hr />\n<h2>mod_stowrs</h2>\n<table border=\"1\"><tr><th>location</th>"
                 "<th>requests</th><th>refused (limit)</th><th>instances stored</th>"
                 "<th>bytes stored</th><th>failures by FailureReason</th></tr>\n", r);
    }
    for (i = 0; i < SHM_LOCATIONS; i++) {
        const shm_location_t *l = &table->locations[i];
        apr_off_t bytes;
        char name[SHM_NAME_MAX];

        if (!l->name[0]) {
            continue;
        }
        apr_cpystrn(name, l->name, sizeof(name));
        bytes = ((apr_off_t)apr_atomic_read32((apr_uint32_t *)&l->mib_stored) << 20)
                + apr_atomic_read32((apr_uint32_t *)&l->bytes_stored);
        if (flags & AP_STATUS_SHORT) {
            ap_rprintf(r, "StowRSRequests[%s]: %u\nStowRSRefused[%s]: %u\n"
                       "StowRSInstancesStored[%s]: %u\nStowRSBytesStored[%s]: %"
                       APR_OFF_T_FMT "\n", name, l->requests, name, l->requests_refused,
                       name, l->instances_stored, name, bytes);
            for (k = 0; k < SHM_REASONS; k++) {
                if (l->failures[k]) {
                    ap_rprintf(r, "StowRSFailures%s[%s]: %u\n",
                               k < SHM_REASONS - 1
                               ? apr_psprintf(r->pool, "%04X", counted_reasons[k]) : "Other",
                               name, l->failures[k]);
                }
            }
            continue;
        }
        ap_rprintf(r, "<tr><td>%s</td><td>%u</td><td>%u</td><td>%u</td><td>%" APR_OFF_T_FMT
                   "</td><td>", ap_escape_html(r->pool, name), l->requests,
                   l->requests_refused, l->instances_stored, bytes);
        for (k = 0; k < SHM_REASONS; k++) {
            if (l->failures[k]) {
                ap_rprintf(r, "%s: %u ", k < SHM_REASONS - 1
                           ? apr_psprintf(r->pool, "%04X", counted_reasons[k]) : "other",
                           l->failures[k]);
            }
        }
        ap_rputs("</td></tr>\n", r);
    }
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("</table>\n", r);
    }
    return OK;
}
