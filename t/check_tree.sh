#!/bin/sh
# Tree hygiene that a formatter gate would not give us (STYLE.md §3, §6, §8):
# no tabs, trailing blanks or CRLF in sources; every log tag used once;
# every directive of the command table documented in README.md and shown
# in conf/; every per-dir config field created and merged.
set -u
cd "$(dirname "$0")/.."
fail=0
srcs=$(ls *.c *.h *.cc t/unit/*.c t/unit/*.h 2>/dev/null)

for f in $srcs; do
    if grep -n "$(printf '\t')" "$f" >/dev/null; then
        echo "check_tree: tab in $f"; fail=1
    fi
    if grep -n ' $' "$f" >/dev/null; then
        echo "check_tree: trailing blank in $f"; fail=1
    fi
    if grep -n "$(printf '\r')" "$f" >/dev/null; then
        echo "check_tree: CR in $f"; fail=1
    fi
done

dups=$(grep -oh 'STOWRS_LOGNO([0-9]*)' *.c *.cc 2>/dev/null | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "check_tree: log tags used more than once: $dups"; fail=1
fi

for d in $(grep -o 'AP_INIT_[A-Z0-9_]*("StowRS[A-Za-z]*"' mod_stowrs.c | sed 's/.*("//; s/"$//'); do
    grep -q "$d" README.md || { echo "check_tree: $d not documented in README.md"; fail=1; }
    grep -q "$d" conf/*.conf* || { echo "check_tree: $d not shown in conf/"; fail=1; }
done

# Each stowrs_dir_conf_t field must appear in merge_dir_conf.
fields=$(awk '/^typedef struct {/ { body = "" ; inside = 1; next }
              inside && /^}/ { if ($2 == "stowrs_dir_conf_t;") print body; inside = 0; next }
              inside { body = body "\n" $0 }' stowrs_private.h \
         | sed 's|/\*.*||' | grep -o '[a-z_]*\(\[.*\]\)\{0,1\};' | sed 's/\[.*//; s/;//')
merge=$(sed -n '/^merge_dir_conf/,/^}/p' mod_stowrs.c)
for f in $fields; do
    echo "$merge" | grep -q "conf->$f" || { echo "check_tree: field $f not merged"; fail=1; }
done

[ $fail = 0 ] && echo "check_tree: ok"
exit $fail
