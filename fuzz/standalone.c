/*
 * standalone.c: a main() for the fuzz targets without libFuzzer, so that
 * `make test` replays every seed corpus with the ordinary compiler and a
 * crash file from a campaign can be replayed under gdb or valgrind.
 *
 *   fuzz/bin/replay/fuzz_multipart fuzz/corpus/fuzz_multipart crash-1234
 *
 * Each argument is a file (one input) or a directory (each regular file
 * in it, in name order, one input each). Arguments that start with '-'
 * are libFuzzer options and are ignored, so a libFuzzer command line can
 * be reused. Prints one line per input with -v, and a count at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int verbose;
static unsigned long replayed;

static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;

    if (!f) {
        fprintf(stderr, "standalone: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t n;

        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap);
            if (!buf) {
                fclose(f);
                fprintf(stderr, "standalone: out of memory\n");
                return -1;
            }
        }
        n = fread(buf + len, 1, cap - len, f);
        if (n == 0) {
            break;
        }
        len += n;
    }
    if (ferror(f)) {
        fprintf(stderr, "standalone: %s: read error\n", path);
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    if (verbose) {
        fprintf(stderr, "standalone: %s (%lu bytes)\n", path, (unsigned long)len);
    }
    /* An exact-size copy, as libFuzzer hands inputs over: ASan then sees
     * a read past the end. */
    {
        unsigned char *exact = malloc(len ? len : 1);

        if (!exact) {
            free(buf);
            return -1;
        }
        if (len) {
            memcpy(exact, buf, len);
        }
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    replayed++;
    return 0;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
run_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    int rc = 0;

    if (!d) {
        fprintf(stderr, "standalone: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (!names) {
                closedir(d);
                return -1;
            }
        }
        names[n] = malloc(strlen(path) + strlen(de->d_name) + 2);
        if (!names[n]) {
            closedir(d);
            return -1;
        }
        sprintf(names[n], "%s/%s", path, de->d_name);
        n++;
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof(*names), name_cmp);
    }
    for (i = 0; i < n; i++) {
        struct stat st;

        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)
            && run_file(names[i]) != 0) {
            rc = -1;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int
main(int argc, char **argv)
{
    int i, rc = 0;

    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        struct stat st;

        if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
            continue;
        }
        if (argv[i][0] == '-') {
            continue;
        }
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "standalone: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
        }
        else if (S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i])) {
            rc = 1;
        }
    }
    printf("replayed %lu inputs\n", replayed);
    return rc;
}
