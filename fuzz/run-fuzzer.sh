#!/bin/sh
# run-fuzzer.sh TARGET: one libFuzzer campaign, called by `make fuzz`.
#
# Runs fuzz/bin/TARGET with one job over the committed corpus
# fuzz/corpus/TARGET plus a scratch directory that receives new inputs,
# for FUZZ_RUNS executions (default 10000000) or FUZZ_TIME seconds. A
# crash leaves its input in fuzz/bin/crashes/ and fails. Afterwards the
# new inputs that add coverage (libFuzzer -merge=1) are copied into the
# corpus, named by the sha256 of their content, smallest first, while the
# corpus stays under 300 files and 2 MB. The log is kept in fuzz/bin/logs/.
#
# Environment: FUZZ_RUNS, FUZZ_TIME, FUZZ_SCRATCH (default /tmp/stowrs-fuzz),
# FUZZ_ARGS (more libFuzzer options, e.g. -max_len=65536).
set -eu

t=$1
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/fuzz/bin/$t
corpus=$root/fuzz/corpus/$t
dict=$root/fuzz/$t.dict
scratch=${FUZZ_SCRATCH:-/tmp/stowrs-fuzz}/$t
runs=${FUZZ_RUNS:-10000000}
time=${FUZZ_TIME:-}
max_files=300
max_bytes=2000000

[ -x "$bin" ] || { echo "run-fuzzer: $bin not built (make fuzz-build)" >&2; exit 2; }
rm -rf "$scratch"
mkdir -p "$scratch/new" "$scratch/merged" "$corpus" "$root/fuzz/bin/crashes" \
         "$root/fuzz/bin/logs"
if [ -n "$time" ]; then
    limit="-max_total_time=$time"
else
    limit="-runs=$runs"
fi

echo "run-fuzzer: $t: $limit, started $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
# -jobs=1 runs the fuzzer in a child whose output goes to fuzz-0.log in
# the current directory (copied to stderr when it ends): hence the cd.
cd "$scratch"
set +e
# shellcheck disable=SC2086
# -malloc_limit_mb: no input of a few KB may make any target allocate
# 256 MB at once (the deflated-dataset bug in the dcmtk shim did).
"$bin" -jobs=1 $limit -dict="$dict" -timeout=25 -malloc_limit_mb=256 -print_final_stats=1 \
    -artifact_prefix="$root/fuzz/bin/crashes/$t-" ${FUZZ_ARGS:-} \
    "$scratch/new" "$corpus" > "$scratch/parent.log" 2>&1
rc=$?
set -e
cp fuzz-0.log "$root/fuzz/bin/logs/$t.log" 2>/dev/null || cp parent.log "$root/fuzz/bin/logs/$t.log"
grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
    "$root/fuzz/bin/logs/$t.log" | sed "s/^/run-fuzzer: $t: /" || true
if [ $rc -ne 0 ]; then
    cat parent.log >&2
    echo "run-fuzzer: $t failed (exit $rc); crash inputs in fuzz/bin/crashes/," \
         "log in fuzz/bin/logs/$t.log" >&2
    exit $rc
fi

# Merge: the corpus first, so only new inputs that add coverage join it.
cp "$corpus"/. "$scratch/merged/" -R
"$bin" -merge=1 "$scratch/merged" "$scratch/new" > merge.log 2>&1 || {
    cat merge.log >&2; echo "run-fuzzer: $t: merge failed" >&2; exit 1; }
count=$(find "$corpus" -type f | wc -l)
bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
added=0
skipped=0
for f in $(find "$scratch/merged" -type f -printf '%s %p\n' | sort -n | cut -d' ' -f2-); do
    name=$(basename "$f")
    [ -e "$corpus/$name" ] && continue
    sum=$(sha256sum "$f" | cut -d' ' -f1)
    [ -e "$corpus/$sum" ] && continue
    size=$(stat -c %s "$f")
    if [ $((count + 1)) -ge $max_files ] || [ $((bytes + size)) -ge $max_bytes ]; then
        skipped=$((skipped + 1))
        continue
    fi
    cp "$f" "$corpus/$sum"
    count=$((count + 1))
    bytes=$((bytes + size))
    added=$((added + 1))
done
echo "run-fuzzer: $t: merged $added new inputs into fuzz/corpus/$t ($count files," \
     "$bytes bytes); $skipped left out by the size limits"
