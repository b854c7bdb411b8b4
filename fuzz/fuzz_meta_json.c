/*
 * fuzz_meta_json.c: the DICOM JSON reader (stowrs_meta_read_json) on
 * arbitrary bytes, and stowrs_meta_uri_key on every BulkDataURI it
 * returns and on the input's first line.
 *
 * Properties (stowrs_meta.h): a document that is not well-formed fails
 * whole, with no objects; one that parses gives one entry per object,
 * each either a tree (checked as in fuzz_meta_xml.c) or a reason.
 */
#include "fuzz_meta.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    apr_array_header_t *objects = (apr_array_header_t *)1;
    const char *error = (const char *)1;
    stowrs_meta_rc_e rc;
    int i;

    rc = stowrs_meta_read_json(pool, (const char *)data, size, &objects, &error);
    FUZZ_CHECK(rc >= STOWRS_META_OK && rc <= STOWRS_META_NOMEM);
    if (rc == STOWRS_META_OK) {
        FUZZ_CHECK(objects != NULL);
        FUZZ_CHECK(objects->elt_size == sizeof(stowrs_meta_object_t));
        for (i = 0; i < objects->nelts; i++) {
            const stowrs_meta_object_t *o = &APR_ARRAY_IDX(objects, i,
                                                           stowrs_meta_object_t);

            FUZZ_CHECK(o->rc >= STOWRS_META_OK && o->rc <= STOWRS_META_NOMEM);
            if (o->rc == STOWRS_META_OK) {
                fuzz_meta_walk(pool, o->ds, 0);
            }
            else {
                FUZZ_CHECK(o->ds == NULL);
                FUZZ_CHECK(o->error != NULL && *o->error != '\0');
                fuzz_meta_touch(o->error);
            }
        }
    }
    else {
        FUZZ_CHECK(objects == NULL);
        FUZZ_CHECK(error != NULL && *error != '\0');
        fuzz_meta_touch(error);
        FUZZ_CHECK(rc != STOWRS_META_NOMEM);
    }
    if (size > 0) {
        fuzz_meta_slice(pool, data, size);
    }
    apr_pool_destroy(pool);
    return 0;
}
