#!/bin/sh
# oss-fuzz-build.sh: the fuzz targets for OSS-Fuzz (or any libFuzzer-style
# engine), the third build of STYLE.md §15. OSS-Fuzz's build.sh calls it
# from the source tree; it uses OSS-Fuzz's variables and puts into $OUT each
# target, its dictionary and its seed corpus as <target>_seed_corpus.zip.
#
#   CC CXX CFLAGS CXXFLAGS LIB_FUZZING_ENGINE OUT   as set by OSS-Fuzz
#
# The project's Dockerfile installs the Debian packages of the build:
#   libapr1-dev libaprutil1-dev libxml2-dev libjansson-dev libdcmtk-dev zip
# The runner image does not have them: the shared libraries the targets
# need are copied to $OUT/lib, found through an $ORIGIN rpath.
# Locally:
#   CC=clang CXX=clang++ CFLAGS=-fsanitize=address,fuzzer-no-link \
#   CXXFLAGS=-fsanitize=address,fuzzer-no-link \
#   LIB_FUZZING_ENGINE=-fsanitize=fuzzer OUT=/tmp/out sh fuzz/oss-fuzz-build.sh
set -eu

cd "$(dirname "$0")/.."
: "${CC:=clang}" "${CXX:=clang++}" "${CFLAGS:=}" "${CXXFLAGS:=}"
: "${LIB_FUZZING_ENGINE:=-fsanitize=fuzzer}" "${OUT:=fuzz/bin/oss-fuzz}"
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
mkdir -p "$OUT/lib"
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT

inc="$(apr-1-config --cflags --cppflags --includes) $(apu-1-config --includes) \
$(pkg-config --cflags libxml-2.0) -I. -Ifuzz"
libs="-ldcmdata -loflog -lofstd -lxml2 -ljansson \
$(apr-1-config --link-ld --libs) $(apu-1-config --link-ld --libs)"

# the core sources of each target, as in the Makefile's FUZZ_SRC_<target>
sources() {
    case $1 in
    fuzz_multipart)     echo fuzz/fuzz_multipart.c stowrs_multipart.c ;;
    fuzz_content_type)  echo fuzz/fuzz_content_type.c stowrs_multipart.c stowrs_response.c ;;
    fuzz_dicom_inspect) echo fuzz/fuzz_dicom_inspect.cc stowrs_dicom.cc stowrs_outcome.c \
                             stowrs_uid.c ;;
    fuzz_meta_xml)      echo fuzz/fuzz_meta_xml.c stowrs_meta.c ;;
    fuzz_meta_json)     echo fuzz/fuzz_meta_json.c stowrs_meta.c ;;
    fuzz_response)      echo fuzz/fuzz_response.c stowrs_response.c stowrs_outcome.c \
                             stowrs_uid.c stowrs_multipart.c stowrs_dicom.cc ;;
    esac
}

for t in fuzz_multipart fuzz_content_type fuzz_dicom_inspect fuzz_meta_xml \
         fuzz_meta_json fuzz_response; do
    objs=
    for src in $(sources $t); do
        o=$obj/$t-$(basename "$src").o
        case $src in
        # shellcheck disable=SC2086
        *.cc) $CXX $CXXFLAGS -std=c++17 $inc -c "$src" -o "$o" ;;
        # shellcheck disable=SC2086
        *)    $CC $CFLAGS -std=gnu99 $inc -c "$src" -o "$o" ;;
        esac
        objs="$objs $o"
    done
    # shellcheck disable=SC2086
    $CXX $CXXFLAGS $objs $LIB_FUZZING_ENGINE $libs -Wl,-rpath,'$ORIGIN/lib' -o "$OUT/$t"
    cp "fuzz/$t.dict" "$OUT/$t.dict"
    rm -f "$OUT/${t}_seed_corpus.zip"
    (cd "fuzz/corpus/$t" && zip -q -j "$OUT/${t}_seed_corpus.zip" ./*)
    # distribution libraries the runner image lacks
    ldd "$OUT/$t" | awk '/=> \// { print $3 }' \
        | grep -E 'lib(apr|aprutil|dcm|oflog|ofstd|xml2|jansson|icu|expat|uuid|crypt|z\.|lzma)' \
        | while read -r lib; do cp -L -n "$lib" "$OUT/lib/" 2>/dev/null || true; done
    echo "oss-fuzz-build: $OUT/$t"
done
