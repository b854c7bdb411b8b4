/**
 * @file stowrs_uid.h
 * @brief DICOM UID syntax checks and generation (PS3.5 §9.1).
 *
 * A UID that passes stowrs_uid_valid is safe as a path component: digits and
 * dots only, no empty component, so never "." or "..".
 */
#ifndef STOWRS_UID_H
#define STOWRS_UID_H

#include <apr_pools.h>

#ifdef __cplusplus
extern "C" {
#endif

/** UIDs are at most 64 characters (PS3.5 §9.1). */
#define STOWRS_UID_MAX 64

/**
 * @return 1 if @c uid is 1-64 characters of digits and dots, with no empty
 *         component and no component that starts with 0 unless it is "0"
 */
int stowrs_uid_valid(const char *uid);

/**
 * Generate a fresh UID under the 2.25 root from 128 random bits
 * (PS3.5 §B.2), for failures whose instance has no readable UID.
 * @param pool for the result
 * @return the UID, or NULL if no randomness was available
 */
const char *stowrs_uid_generate(apr_pool_t *pool);

#ifdef __cplusplus
}
#endif
#endif /* STOWRS_UID_H */
