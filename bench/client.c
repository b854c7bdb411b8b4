/*
 * client.c - the benchmark's HTTP client (bench/run.py drives it).
 *
 *   client -u URL -c CLIENTS -t CONTENT_TYPE [-T TIMEOUT_S] BODY...
 *
 * Each BODY is a file holding one complete request body; all are mapped
 * read-only (and faulted in) before the clock starts and POSTed as they are. CLIENTS threads, each with its own
 * connection (kept alive), take the next body from a shared counter until
 * all are sent. Every request is bounded by TIMEOUT_S (default 900) and
 * the run by TIMEOUT_S * number of bodies.
 *
 * Output, one JSON object on stdout:
 *   {"wall": s, "cpu": s, "bytes": n,
 *    "requests": [[index, http_status, latency_s, curl_code], ...]}
 * where "cpu" is the client's own user+system time, so run.py can show the
 * client is not the bottleneck.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <curl/curl.h>

#define MAX_CLIENTS 256

typedef struct {
    const char *path;
    const char *map;
    long status;
    double latency;
    int curl_code;
    long long size;
} job_t;

static const char *url;
static const char *content_type;
static long timeout_s = 900;
static job_t *jobs;
static int njobs;
static int next_job;
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
take_job(void)
{
    int j;

    pthread_mutex_lock(&job_lock);
    j = next_job < njobs ? next_job++ : -1;
    pthread_mutex_unlock(&job_lock);
    return j;
}

/* The answer is read and dropped: only its status matters here. */
static size_t
discard(char *ptr, size_t size, size_t n, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * n;
}

/* Map every body before the clock starts, pages populated, so the timed
 * run pays neither the open nor the page faults. */
static int
map_job(job_t *job)
{
    struct stat st;
    void *map;
    int fd = open(job->path, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "client: %s: %s\n", job->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    job->size = (long long)st.st_size;
    job->map = "";
    if (st.st_size > 0) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (map == MAP_FAILED) {
            fprintf(stderr, "client: mmap %s: %s\n", job->path, strerror(errno));
            close(fd);
            return -1;
        }
        job->map = map;
    }
    close(fd);
    return 0;
}

static void
run_job(CURL *h, struct curl_slist *hdrs, job_t *job)
{
    double t0;
    CURLcode rc;

    job->status = 0;
    job->curl_code = -1;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, job->map);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->size);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
    /* loopback only: never follow a redirect elsewhere, no proxy */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");

    t0 = now();
    rc = curl_easy_perform(h);
    job->latency = now() - t0;
    job->curl_code = (int)rc;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &job->status);
    }
    else {
        fprintf(stderr, "client: %s: %s\n", job->path, curl_easy_strerror(rc));
    }
}

static void *
worker(void *arg)
{
    struct curl_slist *hdrs = arg;
    CURL *h = curl_easy_init();
    int j;

    if (!h) {
        fprintf(stderr, "client: curl_easy_init failed\n");
        return NULL;
    }
    while ((j = take_job()) >= 0) {
        run_job(h, hdrs, &jobs[j]);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
        + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
usage(void)
{
    fprintf(stderr, "usage: client -u URL -c CLIENTS -t CONTENT_TYPE [-T TIMEOUT_S] BODY...\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    pthread_t threads[MAX_CLIENTS];
    struct curl_slist *hdrs = NULL;
    char *ct_header;
    long long bytes = 0;
    double t0, wall, cpu0, cpu;
    int clients = 1, opt, i;

    while ((opt = getopt(argc, argv, "u:c:t:T:")) != -1) {
        switch (opt) {
        case 'u':
            url = optarg;
            break;
        case 'c':
            clients = atoi(optarg);
            break;
        case 't':
            content_type = optarg;
            break;
        case 'T':
            timeout_s = atol(optarg);
            break;
        default:
            usage();
        }
    }
    if (!url || !content_type || optind >= argc || clients < 1 || clients > MAX_CLIENTS
        || timeout_s < 1) {
        usage();
    }
    if (strncmp(url, "http://127.0.0.1:", 17) != 0) {
        fprintf(stderr, "client: only http://127.0.0.1 is allowed\n");
        return 2;
    }
    njobs = argc - optind;
    jobs = calloc((size_t)njobs, sizeof(*jobs));
    if (!jobs) {
        return 1;
    }
    for (i = 0; i < njobs; i++) {
        jobs[i].path = argv[optind + i];
        if (map_job(&jobs[i]) != 0) {
            return 1;
        }
    }
    if (clients > njobs) {
        clients = njobs;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ct_header = malloc(strlen(content_type) + sizeof("Content-Type: "));
    if (!ct_header) {
        return 1;
    }
    sprintf(ct_header, "Content-Type: %s", content_type);
    hdrs = curl_slist_append(hdrs, ct_header);
    /* No 100-continue round trip, for every server alike. */
    hdrs = curl_slist_append(hdrs, "Expect:");

    cpu0 = cpu_seconds();
    t0 = now();
    for (i = 0; i < clients; i++) {
        if (pthread_create(&threads[i], NULL, worker, hdrs) != 0) {
            fprintf(stderr, "client: pthread_create failed\n");
            return 1;
        }
    }
    for (i = 0; i < clients; i++) {
        pthread_join(threads[i], NULL);
    }
    wall = now() - t0;
    cpu = cpu_seconds() - cpu0;

    for (i = 0; i < njobs; i++) {
        bytes += jobs[i].size;
    }
    printf("{\"wall\": %.6f, \"cpu\": %.6f, \"bytes\": %lld, \"requests\": [", wall, cpu, bytes);
    for (i = 0; i < njobs; i++) {
        printf("%s[%d, %ld, %.6f, %d]", i ? ", " : "", i, jobs[i].status, jobs[i].latency,
               jobs[i].curl_code);
    }
    printf("]}\n");
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    free(ct_header);
    free(jobs);
    return 0;
}
