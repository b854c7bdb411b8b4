/*
 * Minimal assertion helpers shared by the C unit tests. Each test binary
 * prints one line per failed check and ends with "N passed, N failed";
 * its exit status is non-zero when anything failed.
 */
#ifndef STOWRS_UNIT_H
#define STOWRS_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed;
static int unit_failed;

#define CHECK(cond) do { \
        if (cond) { unit_passed++; } \
        else { unit_failed++; \
               fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

#define CHECK_STR(got, want) do { \
        const char *g_ = (got), *w_ = (want); \
        if (g_ && w_ && strcmp(g_, w_) == 0) { unit_passed++; } \
        else if (!g_ && !w_) { unit_passed++; } \
        else { unit_failed++; \
               fprintf(stderr, "%s:%d: CHECK_STR failed: %s is \"%s\", want \"%s\"\n", \
                       __FILE__, __LINE__, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } \
    } while (0)

#define CHECK_INT(got, want) do { \
        long long g_ = (long long)(got), w_ = (long long)(want); \
        if (g_ == w_) { unit_passed++; } \
        else { unit_failed++; \
               fprintf(stderr, "%s:%d: CHECK_INT failed: %s is %lld, want %lld\n", \
                       __FILE__, __LINE__, #got, g_, w_); } \
    } while (0)

static int
unit_summary(void)
{
    printf("%d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}

#endif /* STOWRS_UNIT_H */
