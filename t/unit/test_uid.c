/*
 * Unit tests of stowrs_uid.c: the syntax check that guards every path
 * component, and 2.25 UID generation.
 */

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "stowrs_uid.h"
#include "unit.h"

typedef struct {
    const char *uid;
    int valid;
} uid_case_t;

static const uid_case_t cases[] = {
    { "1", 1 },
    { "0", 1 },
    { "0.0", 1 },
    { "1.2", 1 },
    { "1.2.840.10008.1.2.1", 1 },
    { "1.2.840.10008.5.1.4.1.1.2", 1 },
    { "2.25.329800735698586629295641978511506172918", 1 },
    { "1.2.40.0.13.1.15.110.3.165.2", 1 },
    { "10.20.0.300", 1 },
    { "", 0 },
    { ".", 0 },
    { "..", 0 },
    { "../x", 0 },
    { "1.2/../3", 0 },
    { "1..2", 0 },
    { ".1", 0 },
    { "1.", 0 },
    { "01.2", 0 },
    { "1.02", 0 },
    { "1.00", 0 },
    { "00", 0 },
    { "1.2.a", 0 },
    { "1.2 ", 0 },
    { " 1.2", 0 },
    { "1,2", 0 },
    { "-1.2", 0 },
    { "+1", 0 },
    { "1.2\n", 0 },
    { "1.2\\3", 0 },
    { "1.2/3", 0 },
};

/* A UID of exactly @c n characters: "1.1.1...." ending in a digit. */
static const char *
uid_of_length(apr_pool_t *pool, apr_size_t n)
{
    char *s = apr_palloc(pool, n + 1);
    apr_size_t i;

    for (i = 0; i < n; i++) {
        s[i] = (i % 2) ? '.' : '1';
    }
    if (n > 0 && s[n - 1] == '.') {
        s[n - 1] = '2';
        s[n - 2] = '1';
    }
    s[n] = '\0';
    return s;
}

static void
test_valid_table(void)
{
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = stowrs_uid_valid(cases[i].uid);

        if (got != cases[i].valid) {
            fprintf(stderr, "uid \"%s\": valid=%d, want %d\n",
                    cases[i].uid, got, cases[i].valid);
        }
        CHECK_INT(got, cases[i].valid);
    }
    CHECK_INT(stowrs_uid_valid(NULL), 0);
}

static void
test_length(apr_pool_t *pool)
{
    const char *u63 = uid_of_length(pool, 63);
    const char *u64 = uid_of_length(pool, 64);
    const char *u65 = uid_of_length(pool, 65);
    const char *long_digits;

    CHECK_INT(strlen(u63), 63);
    CHECK_INT(strlen(u64), 64);
    CHECK_INT(strlen(u65), 65);
    CHECK_INT(stowrs_uid_valid(u63), 1);
    CHECK_INT(stowrs_uid_valid(u64), 1);
    CHECK_INT(stowrs_uid_valid(u65), 0);

    /* One component of 64 digits, then 65. */
    long_digits = "1234567890123456789012345678901234567890123456789012345678901234";
    CHECK_INT(strlen(long_digits), 64);
    CHECK_INT(stowrs_uid_valid(long_digits), 1);
    CHECK_INT(stowrs_uid_valid(apr_pstrcat(pool, long_digits, "5", NULL)), 0);
    CHECK_INT(stowrs_uid_valid(apr_pstrcat(pool, long_digits, ".", NULL)), 0);
}

static void
test_generate(apr_pool_t *pool)
{
    apr_hash_t *seen = apr_hash_make(pool);
    int i;
    int bad = 0;
    int dup = 0;
    int long_ones = 0;
    apr_size_t max_len = 0;
    const char *max128 = "340282366920938463463374607431768211455";

    for (i = 0; i < 1000; i++) {
        const char *u = stowrs_uid_generate(pool);

        if (u == NULL) {
            bad++;
            continue;
        }
        if (strlen(u) > max_len) {
            max_len = strlen(u);
        }
        if (strncmp(u, "2.25.", 5) != 0 || !stowrs_uid_valid(u)
            || strlen(u) > STOWRS_UID_MAX) {
            fprintf(stderr, "generated UID not valid: %s\n", u);
            bad++;
        }
        /* Fewer than 37 digits happens to 0.3% of 128-bit numbers. */
        if (strlen(u) >= 5 + 37) {
            long_ones++;
        }
        /* The conversion never exceeds 2^128 - 1. */
        if (strlen(u) == 5 + 39 && strcmp(u + 5, max128) > 0) {
            fprintf(stderr, "generated UID above 2^128-1: %s\n", u);
            bad++;
        }
        if (apr_hash_get(seen, u, APR_HASH_KEY_STRING)) {
            dup++;
        }
        apr_hash_set(seen, u, APR_HASH_KEY_STRING, u);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(dup, 0);
    CHECK_INT(apr_hash_count(seen), 1000);
    CHECK(max_len <= 5 + 39);
    CHECK(long_ones > 980);
}

int
main(void)
{
    apr_pool_t *pool;

    apr_initialize();
    apr_pool_create(&pool, NULL);

    test_valid_table();
    test_length(pool);
    test_generate(pool);

    apr_pool_destroy(pool);
    apr_terminate();
    return unit_summary();
}
