# mod_stowrs: an apxs build with a few extra steps, see STYLE.md §13.
#   make            build mod_stowrs.so (.libs/mod_stowrs.so)
#   make install    install it into httpd's module directory, and on Debian
#                   stowrs.load and stowrs.conf into mods-available
#   make deb        the Debian package libapache2-mod-stowrs, in ..
#   make run        install missing Debian packages, build, run httpd on 127.0.0.1:8080
#   make test       the same set-up, then the unit tests and the pytest suite
#                   (SANITIZE=1: all of it built with and run under ASan/UBSan)
#   make valgrind   part of the pytest suite with httpd -X under valgrind memcheck
#   make lint       cppcheck and the clang build
# CC=clang CXX=clang++ builds with clang; SANITIZE=1 adds ASan and UBSan.

APXS     ?= apxs
ifeq ($(origin CC),default)
CC       := gcc
endif
ifeq ($(origin CXX),default)
CXX      := g++
endif
PYTHON   ?= /usr/bin/python3
LIBTOOL  := $(shell apr-1-config --apr-libtool 2>/dev/null)

WARN     := -Wall -Wextra -Werror
XML_CFLAGS := $(shell pkg-config --cflags libxml-2.0 2>/dev/null)
APR_CFLAGS := $(shell apr-1-config --cflags --cppflags --includes 2>/dev/null) \
              $(shell apu-1-config --includes 2>/dev/null)
APR_LIBS   := $(shell apr-1-config --link-ld --libs 2>/dev/null) \
              $(shell apu-1-config --link-ld --libs 2>/dev/null)
HTTPD_INCLUDES := -I$(shell $(APXS) -q INCLUDEDIR 2>/dev/null)
DCMTK_LIBS := -ldcmdata -loflog -lofstd
MOD_LIBS   := $(DCMTK_LIBS) -lxml2 -ljansson -lstdc++

ifeq ($(SANITIZE),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
OPT_FLAGS ?= -O2 -g

CORE_SRC := stowrs_multipart.c stowrs_uid.c stowrs_outcome.c stowrs_response.c \
            stowrs_store.c stowrs_stow.c stowrs_meta.c
CORE_HDR := $(CORE_SRC:.c=.h) stowrs_dicom.h
MOD_SRC  := mod_stowrs.c mod_stowrs_shm.c $(CORE_SRC)

.PHONY: all install run test unit lint clean deps check-tree

all: .libs/mod_stowrs.so

stowrs_dicom.lo: stowrs_dicom.cc stowrs_dicom.h stowrs_meta.h
	$(LIBTOOL) --silent --mode=compile --tag=CC $(CXX) $(OPT_FLAGS) $(WARN) $(SAN_FLAGS) \
	    -fPIC -std=c++17 $(APR_CFLAGS) -c stowrs_dicom.cc -o stowrs_dicom.lo

.libs/mod_stowrs.so: $(MOD_SRC) $(CORE_HDR) stowrs_private.h stowrs_dicom.lo
	$(APXS) -S CC=$(CC) -c -o mod_stowrs.la \
	    -Wc,"$(WARN) $(OPT_FLAGS) $(SAN_FLAGS) -std=gnu99 $(XML_CFLAGS)" \
	    $(if $(SAN_FLAGS),-Wl$(comma)"$(SAN_FLAGS)") \
	    $(MOD_SRC) stowrs_dicom.lo $(MOD_LIBS)

comma := ,

# Debian's httpd layout: mods-available next to httpd's configuration, for
# `a2enmod stowrs`. Elsewhere MODS_AVAILABLE is empty and only the module is
# installed; set it when DESTDIR is a package root for such a layout.
# apxs -i ignores DESTDIR: with a DESTDIR the module is copied instead.
# An existing stowrs.conf is the admin's and is kept.
HTTPD_SYSCONFDIR := $(shell $(APXS) -q SYSCONFDIR 2>/dev/null)
HTTPD_MODDIR     := $(shell $(APXS) -q LIBEXECDIR 2>/dev/null)
MODS_AVAILABLE   ?= $(if $(wildcard $(HTTPD_SYSCONFDIR)/mods-available),$(HTTPD_SYSCONFDIR)/mods-available)

install: all
ifeq ($(DESTDIR),)
	$(APXS) -i -n stowrs mod_stowrs.la
else
	install -D -m 644 .libs/mod_stowrs.so $(DESTDIR)$(HTTPD_MODDIR)/mod_stowrs.so
endif
ifneq ($(MODS_AVAILABLE),)
	install -D -m 644 conf/stowrs.load $(DESTDIR)$(MODS_AVAILABLE)/stowrs.load
	@if [ -e $(DESTDIR)$(MODS_AVAILABLE)/stowrs.conf ]; then \
	    echo "kept $(DESTDIR)$(MODS_AVAILABLE)/stowrs.conf (new default: conf/stowrs-mod.conf)"; \
	else \
	    echo "install -m 644 conf/stowrs-mod.conf $(DESTDIR)$(MODS_AVAILABLE)/stowrs.conf"; \
	    install -m 644 conf/stowrs-mod.conf $(DESTDIR)$(MODS_AVAILABLE)/stowrs.conf; \
	fi
endif

# The Debian package (debian/), built from the committed tree (HEAD) in a
# scratch clone: dpkg-buildpackage cleans the tree it builds in, which here
# would remove the build products and unit test binaries, and a stale
# SANITIZE=1 or clang build must not be packaged. The .deb files, .changes
# and .buildinfo go to DEB_OUT, by default .. as dpkg-buildpackage's own.
DEB_OUT ?= ..

.PHONY: deb
deb: deps
	@set -e; \
	if [ -n "$$(git status --porcelain --untracked-files=no)" ]; then \
	    echo "make deb: packaging HEAD; uncommitted changes are left out"; \
	fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	git clone -q "$(CURDIR)" "$$tmp/mod-stowrs"; \
	(cd "$$tmp/mod-stowrs" && dpkg-buildpackage -us -uc -b); \
	mkdir -p "$(DEB_OUT)"; \
	cp "$$tmp"/*.deb "$$tmp"/*.changes "$$tmp"/*.buildinfo "$(DEB_OUT)"/; \
	for f in "$$tmp"/*.deb; do echo "make deb: $(DEB_OUT)/$${f##*/}"; done

# --- unit tests: the pure parts, compiled without httpd ---------------------
UNIT_CFLAGS := $(OPT_FLAGS) $(WARN) $(SAN_FLAGS) -std=gnu99 $(APR_CFLAGS) $(XML_CFLAGS) -I.
UNIT_BINS := t/unit/test_multipart t/unit/test_uid t/unit/test_response t/unit/test_store t/unit/test_meta \
             t/unit/test_build

t/unit/test_multipart: t/unit/test_multipart.c stowrs_multipart.c stowrs_multipart.h t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_multipart.c stowrs_multipart.c $(APR_LIBS)

t/unit/test_uid: t/unit/test_uid.c stowrs_uid.c stowrs_uid.h t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_uid.c stowrs_uid.c $(APR_LIBS)

# C compiled by $(CC) into t/unit/resp_*.o (apxs keeps its own objects next to
# the sources), linked by $(CXX) with the dcmtk shim for stowrs_dicom_sop_category.
TEST_RESPONSE_C := t/unit/test_response.c stowrs_response.c stowrs_outcome.c \
                   stowrs_uid.c stowrs_multipart.c
TEST_RESPONSE_O := $(addprefix t/unit/resp_,$(notdir $(TEST_RESPONSE_C:.c=.o)))

t/unit/test_response: $(TEST_RESPONSE_C) stowrs_response.h stowrs_outcome.h stowrs_uid.h \
                      stowrs_multipart.h stowrs_dicom.h stowrs_dicom.lo t/unit/unit.h
	for f in $(TEST_RESPONSE_C); do \
	    $(CC) $(UNIT_CFLAGS) -c $$f -o t/unit/resp_$$(basename $$f .c).o || exit 1; \
	done
	$(CXX) $(OPT_FLAGS) $(SAN_FLAGS) -o $@ $(TEST_RESPONSE_O) .libs/stowrs_dicom.o \
	    $(DCMTK_LIBS) -lxml2 -ljansson $(APR_LIBS)

t/unit/test_store: t/unit/test_store.c stowrs_store.c stowrs_uid.c t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_store.c stowrs_store.c stowrs_uid.c $(APR_LIBS)

# the builder of the dcmtk shim; also the CLI of t/test_015_build.py
t/unit/test_build: t/unit/test_build.c stowrs_dicom.h stowrs_meta.h stowrs_dicom.lo t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -c t/unit/test_build.c -o t/unit/test_build.o
	$(CXX) $(OPT_FLAGS) $(SAN_FLAGS) -o $@ t/unit/test_build.o .libs/stowrs_dicom.o \
	    $(DCMTK_LIBS) -ljansson

t/unit/test_meta: t/unit/test_meta.c stowrs_meta.c stowrs_meta.h t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_meta.c stowrs_meta.c $(APR_LIBS) -lxml2 -ljansson

# the dcmtk shim's test CLI, driven by t/test_010_dicom_shim.py
t/unit/dicom_inspect: t/unit/dicom_inspect.c stowrs_dicom.h stowrs_dicom.lo
	$(CC) $(OPT_FLAGS) $(WARN) $(SAN_FLAGS) -std=gnu99 $(APR_CFLAGS) -I. -c t/unit/dicom_inspect.c -o t/unit/dicom_inspect.o
	$(CXX) $(OPT_FLAGS) $(SAN_FLAGS) -o $@ t/unit/dicom_inspect.o .libs/stowrs_dicom.o $(DCMTK_LIBS)

unit: $(UNIT_BINS)
	@for b in $(UNIT_BINS); do echo "== $$b"; ./$$b || exit 1; done

clean:
	rm -rf .libs *.la *.lo *.o *.slo $(UNIT_BINS) t/__pycache__ .pytest_cache

# --- set-up, run, test --------------------------------------------------------
# Debian 12 packages the build, the tests and `make run` need; `make fuzz`
# needs libclang-rt-14-dev (libFuzzer for clang 14) and llvm-14 (llvm-symbolizer).
DEB_PACKAGES := make gcc g++ clang cppcheck pkg-config apache2 apache2-dev dcmtk libdcmtk-dev \
                libxml2-dev libjansson-dev curl python3-pytest python3-pydicom \
                python3-requests python3-lxml python3-numpy \
                debhelper dpkg-dev git \
                libclang-rt-14-dev llvm-14

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

RUN_DIR  := $(CURDIR)/run
RUN_PORT ?= 8080

# httpd in the foreground on 127.0.0.1:$(RUN_PORT), archive under ./run/archive.
run: deps
	$(MAKE) all
	mkdir -p $(RUN_DIR)/archive $(RUN_DIR)/logs
	sed -e 's|@RUN_DIR@|$(RUN_DIR)|g' -e 's|@MODULE@|$(CURDIR)/.libs/mod_stowrs.so|g' \
	    -e 's|@PORT@|$(RUN_PORT)|g' -e "s|@MODDIR@|$$($(APXS) -q LIBEXECDIR)|g" \
	    -e "s|@USER@|$$(if [ $$(id -u) = 0 ]; then echo 'User www-data'; fi)|" \
	    -e "s|@GROUP@|$$(if [ $$(id -u) = 0 ]; then echo 'Group www-data'; fi)|" \
	    conf/local.conf.in > $(RUN_DIR)/httpd.conf
	@echo "mod_stowrs: POST to http://127.0.0.1:$(RUN_PORT)/dcm4chee-arc/aets/DCM4CHEE/rs/studies"
	/usr/sbin/apache2 -f $(RUN_DIR)/httpd.conf -DFOREGROUND

PYTEST_ARGS ?=

# SANITIZE=1 builds the module, the dcmtk shim and the test binaries with
# ASan and UBSan; STOWRS_SANITIZE tells the harness (t/stowrs_env.py) to
# preload their runtimes into the uninstrumented httpd and to fail a test on
# any sanitizer report. make does not rebuild on a change of flags, so
# check-sanitize refuses a tree built the other way (make clean first).
SAN_WANT := $(if $(filter 1,$(SANITIZE)),1,0)
SAN_BUILT_FILES := .libs/mod_stowrs.so $(UNIT_BINS) t/unit/dicom_inspect

test: deps
	$(MAKE) all unit-bins t/unit/dicom_inspect SANITIZE=$(SANITIZE)
	@$(MAKE) --no-print-directory check-sanitize SANITIZE=$(SANITIZE)
	STOWRS_SANITIZE=$(SAN_WANT) $(PYTHON) -m pytest -ra $(PYTEST_ARGS) t/

.PHONY: check-sanitize
check-sanitize:
	@for f in $(SAN_BUILT_FILES); do \
	    if grep -qa __asan_init $$f; then got=1; else got=0; fi; \
	    if [ $$got != $(SAN_WANT) ]; then \
	        echo "$$f was built with SANITIZE=$$got, this run wants SANITIZE=$(SAN_WANT):" \
	             "make clean, then run again (make does not track flags)" >&2; \
	        exit 1; \
	    fi; \
	done

# --- valgrind -----------------------------------------------------------------
# The pytest files below, each httpd run as httpd -X under valgrind memcheck
# (STOWRS_VALGRIND=1 in t/stowrs_env.py): a test fails if its server's log
# shows an invalid access, a use of uninitialised memory or a bad free. Then
# t/stowrs_env.py valgrind-leaks sends 10 and then 100 requests of every kind
# to a fresh httpd -X each and fails if the definitely lost bytes or the heap
# still in use at exit grow with the number of requests.
# Needs a build without SANITIZE=1 (valgrind and ASan do not mix).
VALGRIND_TESTS ?= t/test_100_store.py t/test_200_multipart.py t/test_300_dicom.py \
                  t/test_600_metadata.py
VALGRIND_SELECT ?= not 2gb and not memory

.PHONY: valgrind
valgrind: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES=valgrind
	$(MAKE) all unit-bins t/unit/dicom_inspect SANITIZE=
	@$(MAKE) --no-print-directory check-sanitize SANITIZE=
	STOWRS_VALGRIND=1 STOWRS_SANITIZE=0 $(PYTHON) -m pytest -ra $(PYTEST_ARGS) \
	    -k '$(VALGRIND_SELECT)' $(VALGRIND_TESTS)
	STOWRS_VALGRIND=1 STOWRS_SANITIZE=0 $(PYTHON) t/stowrs_env.py valgrind-leaks 10 100

unit-bins: $(UNIT_BINS)

check-tree:
	sh t/check_tree.sh

lint: deps
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --inline-suppr -I. $(CORE_SRC) stowrs_dicom.cc
	$(MAKE) clean
	$(MAKE) all unit-bins CC=clang CXX=clang++

# === fuzzing: begin (fuzz/README.md, STYLE.md §15) ===========================
# One source per target, three builds: libFuzzer with clang, ASan and UBSan
# into fuzz/bin/ (`make fuzz`); a corpus replay with fuzz/standalone.c as
# main(), by gcc, with ASan and UBSan when SANITIZE=1, into fuzz/bin/replay/
# or fuzz/bin/replay-san/ (`make fuzz-replay`, run by t/test_050_fuzz_replay.py);
# and fuzz/oss-fuzz-build.sh for OSS-Fuzz.
#   make fuzz                               each target for FUZZ_RUNS executions
#   make fuzz FUZZ_TIME=900                 ... or for FUZZ_TIME seconds each
#   make fuzz FUZZ_TARGETS=fuzz_multipart   one target
# New inputs go to a scratch directory under FUZZ_SCRATCH; only those that
# add coverage are merged back into fuzz/corpus/<target>/ (fuzz/run-fuzzer.sh).
FUZZ_ALL     := fuzz_multipart fuzz_content_type fuzz_dicom_inspect fuzz_meta_xml \
                fuzz_meta_json fuzz_response
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_RUNS    ?= 10000000
FUZZ_TIME    ?=
FUZZ_SCRATCH ?= /tmp/stowrs-fuzz
FUZZ_ARGS    ?=
FUZZ_CC      ?= clang
FUZZ_CXX     ?= clang++

# the core sources each target links besides its own fuzz/<target>.c[c]
FUZZ_SRC_fuzz_multipart     := stowrs_multipart.c
FUZZ_SRC_fuzz_content_type  := stowrs_multipart.c stowrs_response.c
FUZZ_SRC_fuzz_dicom_inspect := stowrs_dicom.cc stowrs_outcome.c stowrs_uid.c
FUZZ_SRC_fuzz_meta_xml      := stowrs_meta.c
FUZZ_SRC_fuzz_meta_json     := stowrs_meta.c
FUZZ_SRC_fuzz_response      := stowrs_response.c stowrs_outcome.c stowrs_uid.c \
                               stowrs_multipart.c stowrs_dicom.cc
fuzz_main = fuzz/$(1).$(if $(filter fuzz_dicom_inspect,$(1)),cc,c)
fuzz_objs = $(addprefix $(1)/obj/,$(notdir $(addsuffix .o,$(basename $(2)))))

FUZZ_HDRS := fuzz/fuzz.h fuzz/fuzz_meta.h $(CORE_HDR)
FUZZ_LIBS := $(DCMTK_LIBS) -lxml2 -ljansson $(APR_LIBS)
FUZZ_INC  := $(APR_CFLAGS) $(XML_CFLAGS) -I. -Ifuzz

FUZZ_LF_DIR := fuzz/bin
FUZZ_LF_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LF_CC  := $(FUZZ_CC) -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link \
               $(FUZZ_LF_SAN) $(WARN) -std=gnu99 $(FUZZ_INC)
FUZZ_LF_CXX := $(FUZZ_CXX) -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link \
               $(FUZZ_LF_SAN) $(WARN) -std=c++17 $(FUZZ_INC)
FUZZ_LF_LD  := $(FUZZ_CXX) -g -fsanitize=fuzzer $(FUZZ_LF_SAN)

FUZZ_RP_DIR := fuzz/bin/replay$(if $(SAN_FLAGS),-san)
FUZZ_RP_CC  := $(CC) $(OPT_FLAGS) $(SAN_FLAGS) $(WARN) -std=gnu99 $(FUZZ_INC)
FUZZ_RP_CXX := $(CXX) $(OPT_FLAGS) $(SAN_FLAGS) $(WARN) -std=c++17 $(FUZZ_INC)
FUZZ_RP_LD  := $(CXX) $(OPT_FLAGS) $(SAN_FLAGS)

# $(1) object directory, $(2) source, $(3) name of the compile command variable
define FUZZ_OBJ_RULE
$(call fuzz_objs,$(1),$(2)): $(2) $(FUZZ_HDRS)
	@mkdir -p $(1)/obj
	$$($(3)) -c $(2) -o $$@
endef

# $(1) binary directory, $(2) target, $(3) name of the link command variable,
# $(4) extra sources
define FUZZ_BIN_RULE
$(1)/$(2): $(call fuzz_objs,$(1),$(call fuzz_main,$(2)) $(FUZZ_SRC_$(2)) $(4))
	$$($(3)) -o $$@ $$^ $$(FUZZ_LIBS)
endef

FUZZ_ALL_SRC := $(sort $(foreach t,$(FUZZ_ALL),$(call fuzz_main,$(t)) $(FUZZ_SRC_$(t))))
$(foreach s,$(FUZZ_ALL_SRC),$(eval $(call FUZZ_OBJ_RULE,$(FUZZ_LF_DIR),$(s),$(if $(filter %.cc,$(s)),FUZZ_LF_CXX,FUZZ_LF_CC))))
$(foreach s,$(FUZZ_ALL_SRC) fuzz/standalone.c,$(eval $(call FUZZ_OBJ_RULE,$(FUZZ_RP_DIR),$(s),$(if $(filter %.cc,$(s)),FUZZ_RP_CXX,FUZZ_RP_CC))))
$(foreach t,$(FUZZ_ALL),$(eval $(call FUZZ_BIN_RULE,$(FUZZ_LF_DIR),$(t),FUZZ_LF_LD,)))
$(foreach t,$(FUZZ_ALL),$(eval $(call FUZZ_BIN_RULE,$(FUZZ_RP_DIR),$(t),FUZZ_RP_LD,fuzz/standalone.c)))

.PHONY: fuzz fuzz-build fuzz-replay fuzz-clean

fuzz-build: $(addprefix $(FUZZ_LF_DIR)/,$(FUZZ_TARGETS))

# One target after another, each with one job (-jobs=1): one core.
fuzz: deps
	$(MAKE) fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    FUZZ_RUNS='$(FUZZ_RUNS)' FUZZ_TIME='$(FUZZ_TIME)' FUZZ_SCRATCH='$(FUZZ_SCRATCH)' \
	    FUZZ_ARGS='$(FUZZ_ARGS)' sh fuzz/run-fuzzer.sh $$t; \
	done

fuzz-replay: $(addprefix $(FUZZ_RP_DIR)/,$(FUZZ_ALL))

fuzz-clean:
	rm -rf fuzz/bin
# === fuzzing: end ============================================================

# --- benchmark (bench/run.py; results in bench/RESULTS.md) --------------------
# Orthanc and libcurl only for the benchmark, so `make test` never installs them.
BENCH_PACKAGES := libcurl4-openssl-dev orthanc orthanc-dicomweb openssl
BENCH_BINS := bench/client bench/parser_bench bench/mod_ceiling.so
BENCH_ARGS ?=

.PHONY: bench bench-deps bench-bins

bench/client: bench/client.c
	$(CC) -O2 -g $(WARN) -std=gnu99 -o $@ bench/client.c -lcurl -lpthread

bench/parser_bench: bench/parser_bench.c stowrs_multipart.c stowrs_multipart.h
	$(CC) $(OPT_FLAGS) $(WARN) -std=gnu99 $(APR_CFLAGS) -I. -o $@ \
	    bench/parser_bench.c stowrs_multipart.c $(APR_LIBS)

# Built with plain $(CC), not apxs: apxs would put its objects for
# stowrs_multipart.c next to the module's own.
bench/mod_ceiling.so: bench/mod_ceiling.c stowrs_multipart.c stowrs_multipart.h
	$(CC) $(OPT_FLAGS) $(WARN) -std=gnu99 -fPIC -shared $(APR_CFLAGS) $(HTTPD_INCLUDES) -I. \
	    -o $@ bench/mod_ceiling.c stowrs_multipart.c

bench-bins: $(BENCH_BINS)

bench-deps:
	@missing=$$(for p in $(BENCH_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench: deps bench-deps
	$(MAKE) all bench-bins
	$(PYTHON) bench/run.py $(BENCH_ARGS)
