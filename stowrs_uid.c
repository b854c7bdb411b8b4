/*
 * stowrs_uid.c - DICOM UID syntax checks and generation (PS3.5 §9.1, §B.2).
 *
 * A UID that passes stowrs_uid_valid() later becomes a path component in
 * the archive, so the check is deliberately strict: it is the only thing
 * standing between request bytes and a file name.
 */

#include <apr_general.h>
#include <apr_strings.h>

#include "stowrs_uid.h"

/* The UID root for UUID-derived UIDs (PS3.5 §B.2). */
#define STOWRS_UID_ROOT_2_25 "2.25."

/* 128 bits need at most 39 decimal digits (2^128 - 1 has 39). */
#define STOWRS_UID_RANDOM_BYTES 16
#define STOWRS_UID_MAX_DIGITS 39

int
stowrs_uid_valid(const char *uid)
{
    const char *p;
    apr_size_t comp_len = 0;
    int comp_zero = 0;

    if (uid == NULL || *uid == '\0') {
        return 0;
    }
    for (p = uid; *p; p++) {
        if (p - uid >= STOWRS_UID_MAX) {
            return 0;
        }
        if (*p == '.') {
            /* An empty component would also allow ".." in a path. */
            if (comp_len == 0) {
                return 0;
            }
            comp_len = 0;
            comp_zero = 0;
        }
        else if (*p >= '0' && *p <= '9') {
            /* "0" is a component of its own; "01" is not a number in a UID. */
            if (comp_zero) {
                return 0;
            }
            if (comp_len == 0 && *p == '0') {
                comp_zero = 1;
            }
            comp_len++;
        }
        else {
            return 0;
        }
    }
    /* A trailing dot leaves the last component empty. */
    return comp_len > 0;
}

const char *
stowrs_uid_generate(apr_pool_t *pool)
{
    unsigned char num[STOWRS_UID_RANDOM_BYTES];
    char digits[STOWRS_UID_MAX_DIGITS + 1];
    apr_size_t ndigits = 0;
    apr_size_t start = 0;
    apr_size_t i;

    if (apr_generate_random_bytes(num, sizeof(num)) != APR_SUCCESS) {
        return NULL;
    }

    /*
     * Big-endian 128-bit number to decimal: divide the byte array by 10
     * until it is zero, collecting remainders (least significant first).
     * Leading zero bytes are skipped as they appear, so the loop does not
     * keep dividing them.
     */
    do {
        unsigned int rem = 0;

        while (start < sizeof(num) && num[start] == 0) {
            start++;
        }
        for (i = start; i < sizeof(num); i++) {
            unsigned int cur = (rem << 8) | num[i];

            num[i] = (unsigned char)(cur / 10);
            rem = cur % 10;
        }
        digits[ndigits++] = (char)('0' + rem);
        while (start < sizeof(num) && num[start] == 0) {
            start++;
        }
    } while (start < sizeof(num) && ndigits < STOWRS_UID_MAX_DIGITS);

    /* Reverse into most-significant-first order. */
    for (i = 0; i < ndigits / 2; i++) {
        char c = digits[i];

        digits[i] = digits[ndigits - 1 - i];
        digits[ndigits - 1 - i] = c;
    }
    digits[ndigits] = '\0';

    return apr_pstrcat(pool, STOWRS_UID_ROOT_2_25, digits, NULL);
}
