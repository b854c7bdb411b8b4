# mod_stowrs: an apxs build with a few extra steps, see STYLE.md §13.
#   make            build mod_stowrs.so (.libs/mod_stowrs.so)
#   make install    install it into httpd's module directory
#   make run        install missing Debian packages, build, run httpd on 127.0.0.1:8080
#   make test       the same set-up, then the unit tests and the pytest suite
#   make lint       cppcheck and the clang build
# CC=clang CXX=clang++ builds with clang; SANITIZE=1 adds ASan and UBSan.

APXS     ?= apxs
CC       ?= gcc
CXX      ?= g++
PYTHON   ?= /usr/bin/python3
LIBTOOL  := $(shell apr-1-config --apr-libtool)

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
            stowrs_store.c stowrs_stow.c
CORE_HDR := $(CORE_SRC:.c=.h) stowrs_dicom.h
MOD_SRC  := mod_stowrs.c $(CORE_SRC)

.PHONY: all install run test unit lint clean deps check-tree

all: .libs/mod_stowrs.so

stowrs_dicom.lo: stowrs_dicom.cc stowrs_dicom.h
	$(LIBTOOL) --silent --mode=compile --tag=CXX $(CXX) $(OPT_FLAGS) $(WARN) $(SAN_FLAGS) \
	    -fPIC -std=c++11 -c stowrs_dicom.cc -o stowrs_dicom.lo

.libs/mod_stowrs.so: $(MOD_SRC) $(CORE_HDR) stowrs_private.h stowrs_dicom.lo
	$(APXS) -S CC=$(CC) -c -o mod_stowrs.la \
	    -Wc,"$(WARN) $(OPT_FLAGS) $(SAN_FLAGS) -std=gnu99 $(XML_CFLAGS)" \
	    $(if $(SAN_FLAGS),-Wl$(comma)"$(SAN_FLAGS)") \
	    $(MOD_SRC) stowrs_dicom.lo $(MOD_LIBS)

comma := ,

install: all
	$(APXS) -i -n stowrs mod_stowrs.la

# --- unit tests: the pure parts, compiled without httpd ---------------------
UNIT_CFLAGS := $(OPT_FLAGS) $(WARN) $(SAN_FLAGS) -std=gnu99 $(APR_CFLAGS) $(XML_CFLAGS) -I.
UNIT_BINS := t/unit/test_multipart t/unit/test_uid t/unit/test_response t/unit/test_store

t/unit/test_multipart: t/unit/test_multipart.c stowrs_multipart.c stowrs_multipart.h t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_multipart.c stowrs_multipart.c $(APR_LIBS)

t/unit/test_uid: t/unit/test_uid.c stowrs_uid.c stowrs_uid.h t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_uid.c stowrs_uid.c $(APR_LIBS)

t/unit/test_response: t/unit/test_response.c stowrs_response.c stowrs_outcome.c stowrs_uid.c stowrs_multipart.c stowrs_dicom.lo t/unit/unit.h
	$(CXX) $(OPT_FLAGS) $(SAN_FLAGS) -o $@ -x c -std=gnu99 $(WARN) $(APR_CFLAGS) $(XML_CFLAGS) -I. \
	    t/unit/test_response.c stowrs_response.c stowrs_outcome.c stowrs_uid.c stowrs_multipart.c \
	    -x none .libs/stowrs_dicom.o $(DCMTK_LIBS) -lxml2 -ljansson $(APR_LIBS)

t/unit/test_store: t/unit/test_store.c stowrs_store.c stowrs_uid.c t/unit/unit.h
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/test_store.c stowrs_store.c stowrs_uid.c $(APR_LIBS)

unit: $(UNIT_BINS)
	@for b in $(UNIT_BINS); do echo "== $$b"; ./$$b || exit 1; done

clean:
	rm -rf .libs *.la *.lo *.o *.slo $(UNIT_BINS) t/__pycache__ .pytest_cache
