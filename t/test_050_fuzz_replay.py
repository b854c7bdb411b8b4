"""Replays every fuzz target's seed corpus (fuzz/corpus/<target>/) with the
standalone driver (fuzz/standalone.c), built by gcc with ASan and UBSan
(`make fuzz-replay SANITIZE=1`, into fuzz/bin/replay-san/). Any crash,
failed property (abort), sanitizer report or leak fails the test; so does
an allocation of 256 MB or more, as `make fuzz` treats one (STYLE.md §15,
fuzz/README.md). No httpd is involved.
"""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS = ["fuzz_multipart", "fuzz_content_type", "fuzz_dicom_inspect", "fuzz_meta_xml",
           "fuzz_meta_json", "fuzz_response"]
REPLAY = ROOT / "fuzz" / "bin" / "replay-san"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "fuzz check failed", "SUMMARY: ")


@pytest.fixture(scope="module")
def replay_bins():
    r = subprocess.run(["make", "-s", "fuzz-replay", "SANITIZE=1"], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    return REPLAY


def test_050_01_corpus_limits():
    # the committed corpus stays small (fuzz/run-fuzzer.sh enforces it on merge)
    for t in TARGETS:
        files = [p for p in (ROOT / "fuzz" / "corpus" / t).iterdir() if p.is_file()]
        assert 0 < len(files) < 300, (t, len(files))
        assert sum(p.stat().st_size for p in files) < 2 * 1000 * 1000, t
        assert (ROOT / "fuzz" / ("%s.dict" % t)).is_file(), t


@pytest.mark.parametrize("target", TARGETS)
def test_050_02_replay(replay_bins, target):
    corpus = ROOT / "fuzz" / "corpus" / target
    n = len([p for p in corpus.iterdir() if p.is_file()])
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "max_allocation_size_mb=256:detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    r = subprocess.run([str(replay_bins / target), str(corpus)], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, "%s exited %d\n%s%s" % (target, r.returncode, out, err[-8000:])
    for mark in SANITIZER_MARKS:
        assert mark not in err, err[-8000:]
    assert "replayed %d inputs" % n in out, out


def test_050_03_corpus_names_are_sha256():
    import hashlib
    for t in TARGETS:
        for p in (ROOT / "fuzz" / "corpus" / t).iterdir():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, p
