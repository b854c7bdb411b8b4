/**
 * @file dicom_inspect.c
 * @brief Test CLI for the dcmtk shim: inspect each file named on the command
 *        line and print one JSON object per file on stdout.
 *
 *   t/unit/dicom_inspect FILE...
 *   t/unit/dicom_inspect --category UID...   (sop_category only)
 *   t/unit/dicom_inspect --uid NAME...       (uid_by_name only)
 *
 * Exit status: 0 if every call ran (whatever the verdicts), 2 on usage,
 * 1 if global_init failed.
 */
#include <stdio.h>
#include <string.h>

#include "stowrs_dicom.h"

static const char *rc_name(stowrs_dicom_rc_e rc)
{
    switch (rc) {
    case STOWRS_DICOM_OK:         return "OK";
    case STOWRS_DICOM_NOT_PART10: return "NOT_PART10";
    case STOWRS_DICOM_UNKNOWN_TS: return "UNKNOWN_TS";
    case STOWRS_DICOM_NOMEM:      return "NOMEM";
    case STOWRS_DICOM_INTERNAL:   return "INTERNAL";
    }
    return "?";
}

static const char *category_name(stowrs_sop_category_e c)
{
    switch (c) {
    case STOWRS_SOP_UNKNOWN: return "UNKNOWN";
    case STOWRS_SOP_IMAGE:   return "IMAGE";
    case STOWRS_SOP_VIDEO:   return "VIDEO";
    case STOWRS_SOP_SR:      return "SR";
    case STOWRS_SOP_OTHER:   return "OTHER";
    }
    return "?";
}

/** A JSON string; every byte outside printable ASCII as \u00XX. */
static void put_str(const char *key, const char *s, int comma)
{
    printf("\"%s\": ", key);
    if (s == NULL) {
        fputs("null", stdout);
    }
    else {
        putchar('"');
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
            if (*p == '"' || *p == '\\') {
                printf("\\%c", *p);
            }
            else if (*p < 0x20 || *p >= 0x7f) {
                printf("\\u%04x", *p);
            }
            else {
                putchar(*p);
            }
        }
        putchar('"');
    }
    if (comma) {
        fputs(", ", stdout);
    }
}

int main(int argc, char **argv)
{
    char err[512];
    int i;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE... | --category UID... | --uid NAME...\n", argv[0]);
        return 2;
    }
    if (stowrs_dicom_global_init(err, sizeof(err)) != 0) {
        printf("{");
        put_str("init_error", err, 0);
        printf("}\n");
        return 1;
    }
    if (strcmp(argv[1], "--category") == 0) {
        for (i = 2; i < argc; i++) {
            printf("{");
            put_str("uid", argv[i], 1);
            put_str("category", category_name(stowrs_dicom_sop_category(argv[i])), 0);
            printf("}\n");
        }
        return 0;
    }
    if (strcmp(argv[1], "--uid") == 0) {
        for (i = 2; i < argc; i++) {
            printf("{");
            put_str("name", argv[i], 1);
            put_str("uid", stowrs_dicom_uid_by_name(argv[i]), 0);
            printf("}\n");
        }
        return 0;
    }
    for (i = 1; i < argc; i++) {
        stowrs_dicom_info_t info;
        stowrs_dicom_rc_e rc;

        rc = stowrs_dicom_inspect(argv[i], &info, err, sizeof(err));
        printf("{");
        put_str("path", argv[i], 1);
        put_str("rc", rc_name(rc), 1);
        put_str("err", err, 1);
        put_str("meta_sop_class_uid", info.meta_sop_class_uid, 1);
        put_str("meta_sop_instance_uid", info.meta_sop_instance_uid, 1);
        put_str("transfer_syntax_uid", info.transfer_syntax_uid, 1);
        put_str("sop_class_uid", info.sop_class_uid, 1);
        put_str("sop_instance_uid", info.sop_instance_uid, 1);
        put_str("study_instance_uid", info.study_instance_uid, 1);
        put_str("series_instance_uid", info.series_instance_uid, 1);
        printf("\"overlong\": %d, \"meta_readable\": %d, ", info.overlong, info.meta_readable);
        put_str("category", category_name(stowrs_dicom_sop_category(info.sop_class_uid)), 0);
        printf("}\n");
        fflush(stdout);
    }
    return 0;
}
