/*
 * fuzz_meta_xml.c: the PS3.19 Native DICOM Model reader
 * (stowrs_meta_read_xml) on arbitrary bytes, and stowrs_meta_uri_key on
 * every BulkData uri it returns and on the input's first line.
 *
 * Properties (stowrs_meta.h): on STOWRS_META_OK a tree whose datasets are
 * in ascending tag order without duplicates, nested at most
 * STOWRS_META_MAX_DEPTH deep, two-letter VRs, at most one kind of content
 * per attribute; otherwise no tree and a reason. libxml2 allocates with
 * malloc, so LeakSanitizer sees a reader or string that is not freed.
 */
#include <libxml/parser.h>

#include "fuzz_meta.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    xmlInitParser();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    stowrs_meta_ds_t *ds = (stowrs_meta_ds_t *)1;
    const char *error = (const char *)1;
    stowrs_meta_rc_e rc;

    rc = stowrs_meta_read_xml(pool, (const char *)data, size, &ds, &error);
    FUZZ_CHECK(rc >= STOWRS_META_OK && rc <= STOWRS_META_NOMEM);
    if (rc == STOWRS_META_OK) {
        FUZZ_CHECK(error == NULL);
        fuzz_meta_walk(pool, ds, 0);
    }
    else {
        FUZZ_CHECK(ds == NULL);
        FUZZ_CHECK(error != NULL && *error != '\0');
        fuzz_meta_touch(error);
        /* an input we can build cannot exhaust memory */
        FUZZ_CHECK(rc != STOWRS_META_NOMEM);
    }
    if (size > 0) {
        fuzz_meta_slice(pool, data, size);
    }
    apr_pool_destroy(pool);
    return 0;
}
