/*
 * fuzz.h: what every fuzz target in fuzz/ shares (STYLE.md §15).
 *
 * Each target is one source built three ways: with libFuzzer
 * (clang -fsanitize=fuzzer, `make fuzz`), with standalone.c as a corpus
 * replay binary (gcc, `make fuzz-replay`, run by `make test`), and by
 * oss-fuzz-build.sh against $LIB_FUZZING_ENGINE. The engine calls
 * LLVMFuzzerInitialize once before the first input; so does standalone.c.
 *
 * A target reports a broken property with FUZZ_CHECK, which prints what
 * failed and calls abort(): libFuzzer then saves the input as a crash.
 */
#ifndef STOWRS_FUZZ_H
#define STOWRS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <apr_general.h>
#include <apr_pools.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The entry point every target implements. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/** One-time set-up, implemented by every target. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

#ifdef __cplusplus
}
#endif

#define FUZZ_CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", \
                    __FILE__, __LINE__, #cond); \
            abort(); \
        } \
    } while (0)

/* Process-wide APR set-up; every input then gets a subpool of this pool,
 * destroyed after the input, so nothing one input allocated can be seen
 * by the next. */
static apr_pool_t *fuzz_root_pool;

static inline void
fuzz_apr_init(void)
{
    if (fuzz_root_pool) {
        return;
    }
    if (apr_initialize() != APR_SUCCESS
        || apr_pool_create(&fuzz_root_pool, NULL) != APR_SUCCESS) {
        fprintf(stderr, "fuzz: cannot initialise APR\n");
        abort();
    }
}

static inline apr_pool_t *
fuzz_pool(void)
{
    apr_pool_t *p = NULL;

    fuzz_apr_init();
    if (apr_pool_create(&p, fuzz_root_pool) != APR_SUCCESS) {
        abort();
    }
    return p;
}

#endif /* STOWRS_FUZZ_H */
