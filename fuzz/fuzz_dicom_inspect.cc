/*
 * fuzz_dicom_inspect.cc: the dcmtk shim's inspection (stowrs_dicom_inspect)
 * on arbitrary file bytes, then the §3.3 checks (stowrs_outcome_check) and
 * the SOP class category of every UID found (stowrs_dicom_sop_category).
 *
 * The input is written to one temporary file per process, in /dev/shm if
 * there is one (inspection works on the spooled part file, as in the
 * module), and inspected. Properties:
 * - every string in the result is NUL-terminated within its 65 bytes;
 * - the result code is one of the header's;
 * - stowrs_outcome_check gives 0 or one of the FailureReasons of §3.3, and
 *   0 only if every UID that can reach a path passes stowrs_uid_valid
 *   (DESIGN.md §3.5: no input can name a file outside the archive).
 *
 * dcmtk itself is a system library without coverage instrumentation:
 * libFuzzer is guided by the shim's code only. ASan still sees dcmtk's
 * heap use through its allocator interposition.
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include "fuzz.h"
#include "stowrs_dicom.h"
#include "stowrs_outcome.h"
#include "stowrs_uid.h"

namespace {

char tmp_path[256];
stowrs_accept_t accept_defaults;

void remove_tmp(void)
{
    if (tmp_path[0]) {
        unlink(tmp_path);
    }
}

void write_all(const uint8_t *data, size_t size)
{
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0) {
        std::perror(tmp_path);
        std::abort();
    }
    while (size > 0) {
        ssize_t n = write(fd, data, size);

        if (n <= 0) {
            std::perror(tmp_path);
            std::abort();
        }
        data += n;
        size -= static_cast<size_t>(n);
    }
    close(fd);
}

void check_field(const char *s)
{
    FUZZ_CHECK(memchr(s, '\0', 65) != NULL);
    /* exercises the category tables on whatever the file named */
    stowrs_sop_category_e cat = stowrs_dicom_sop_category(s);
    FUZZ_CHECK(cat >= STOWRS_SOP_UNKNOWN && cat <= STOWRS_SOP_OTHER);
}

bool known_reason(unsigned int r)
{
    switch (r) {
    case 0:
    case STOWRS_FR_PROCESSING_FAILURE:
    case STOWRS_FR_SOP_CLASS_NOT_SUPPORTED:
    case STOWRS_FR_DATASET_MISMATCH:
    case STOWRS_FR_TS_NOT_SUPPORTED:
    case STOWRS_FR_STUDY_MISMATCH:
    case STOWRS_FR_NOT_PARSEABLE:
        return true;
    default:
        return false;
    }
}

} /* namespace */

extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    /* tmpfs if there is one: on ext4 rewriting a truncated file flushes it
     * to disk at close (auto_da_alloc), which would cost most of the time */
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");

    (void)argc;
    (void)argv;
    fuzz_apr_init();
    if (stowrs_dicom_global_init(err, sizeof(err)) != 0) {
        std::fprintf(stderr, "fuzz_dicom_inspect: %s\n", err);
        std::abort();
    }
    stowrs_accept_defaults(fuzz_root_pool, &accept_defaults);
    std::snprintf(tmp_path, sizeof(tmp_path), "%s/fuzz_dicom_inspect.%ld.dcm",
                  dir && *dir ? dir : "/tmp", static_cast<long>(getpid()));
    std::atexit(remove_tmp);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stowrs_dicom_info_t info;
    char err[512];
    const char *detail = NULL;

    write_all(data, size);
    std::memset(&info, 0x55, sizeof(info));
    stowrs_dicom_rc_e rc = stowrs_dicom_inspect(tmp_path, &info, err, sizeof(err));

    FUZZ_CHECK(rc >= STOWRS_DICOM_OK && rc <= STOWRS_DICOM_INTERNAL);
    /* INTERNAL would be our own fault: the file is there and readable */
    FUZZ_CHECK(rc != STOWRS_DICOM_INTERNAL);
    FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    FUZZ_CHECK(rc == STOWRS_DICOM_OK || err[0] != '\0');
    FUZZ_CHECK(info.overlong == 0 || info.overlong == 1);
    FUZZ_CHECK(info.meta_readable == 0 || info.meta_readable == 1);
    check_field(info.meta_sop_class_uid);
    check_field(info.meta_sop_instance_uid);
    check_field(info.transfer_syntax_uid);
    check_field(info.sop_class_uid);
    check_field(info.sop_instance_uid);
    check_field(info.study_instance_uid);
    check_field(info.series_instance_uid);

    unsigned int reason = stowrs_outcome_check(rc, &info, &accept_defaults, NULL, &detail);
    FUZZ_CHECK(known_reason(reason));
    FUZZ_CHECK((reason == 0) == (detail == NULL));
    if (reason == 0) {
        FUZZ_CHECK(rc == STOWRS_DICOM_OK);
        FUZZ_CHECK(stowrs_uid_valid(info.sop_class_uid));
        FUZZ_CHECK(stowrs_uid_valid(info.sop_instance_uid));
        FUZZ_CHECK(stowrs_uid_valid(info.study_instance_uid));
        FUZZ_CHECK(stowrs_uid_valid(info.series_instance_uid));
        FUZZ_CHECK(std::strcmp(info.meta_sop_instance_uid, info.sop_instance_uid) == 0);
        FUZZ_CHECK(stowrs_dicom_sop_category(info.sop_class_uid) != STOWRS_SOP_UNKNOWN);
        /* POSTed to /studies/{its own study}: still fine */
        FUZZ_CHECK(stowrs_outcome_check(rc, &info, &accept_defaults,
                                        info.study_instance_uid, &detail) == 0);
        /* to another study: C409 */
        FUZZ_CHECK(stowrs_outcome_check(rc, &info, &accept_defaults, "1.2.3.999",
                                        &detail) == STOWRS_FR_STUDY_MISMATCH
                   || std::strcmp(info.study_instance_uid, "1.2.3.999") == 0);
    }
    return 0;
}
