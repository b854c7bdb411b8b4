#!/usr/bin/python3
"""make bench: mod_stowrs against Orthanc + DICOMweb and against a ceiling.

Three servers on 127.0.0.1, started fresh (empty storage) for every
measurement, driven by the same client (bench/client):

  stowrs    httpd + mod_stowrs (StowRSSync On, the default)
  orthanc   Orthanc + DICOMweb plugin, SyncStorageArea true, no compression
  ceiling   httpd + bench/mod_ceiling.so: the same framing and write path
            (coalescing, fdatasync, rename, directory fsync), no DICOM work

Scenarios (DESIGN.md §5, the issue's S1-S5):
  S1  200 CT slices (512x512x16 bit, 0.5 MB), 10 per request, 1 and 4 clients
  S2  one 256 MiB and one 2 GiB multi-frame instance
  S3  200 sequential single-instance requests: p50, p99 latency
  S4  512 single-instance requests with 1, 4, 16, 64 clients
  S5  bench/parser_bench: the parser alone, 1 GiB in memory, 8000-byte pieces

Every (scenario, server) pair runs once per repetition; within a repetition
the servers take turns in a rotating order, so the ratios quoted come from
runs that were minutes apart on the same noisy machine. Numbers are medians
over repetitions with min and max; ratios are computed per repetition and
then summarised the same way.

Data goes to /tmp/stowrs-bench-data (generated with pydicom), servers and
storage to /tmp/stowrs-bench-run; both are removed at the end unless
--keep-data. Traffic goes to 127.0.0.1 only.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
DATA = "/tmp/stowrs-bench-data"
RUNDIR = "/tmp/stowrs-bench-run"
DATA_VERSION = 5            # bump when the generated data changes
APACHE2 = os.environ.get("STOWRS_APACHE2", "/usr/sbin/apache2")
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
RUN_USER = os.environ.get("STOWRS_RUN_USER", "www-data")
TICK = os.sysconf("SC_CLK_TCK")
MB = 1e6
GB = 1e9

N_CT = 512                  # S4 uses all, S1 and S3 the first 200
N_S1 = 200
PER_REQUEST = 10
N_S3 = 200
S4_CLIENTS = (1, 4, 16, 64)
N_WARM = max(S4_CLIENTS)    # warm-up instances: one per client of the run
MF_SIZES = {"mf256": 256, "mf2048": 2048}   # MiB of pixel data

SERVERS = ("stowrs", "orthanc", "ceiling")

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MF_CLASS = "1.2.840.10008.5.1.4.1.1.7.3"    # Multi-frame Grayscale Word SC
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


# --- data ----------------------------------------------------------------

def _dataset(sop_class, sop, study, series, number):
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = EXPLICIT_LE
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "STOWRS_BENCH"
    ds = FileDataset("bench.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_implicit_VR = False
    ds.is_little_endian = True
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = "BENCH^PATIENT"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "BENCH1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows = 512
    ds.Columns = 512
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _phantom(np):
    """A CT-like slice: air, a body ellipse, some bone, 12-bit values."""
    y, x = np.mgrid[0:512, 0:512]
    img = np.zeros((512, 512), dtype=np.float32)
    body = ((x - 256) / 200.0) ** 2 + ((y - 256) / 160.0) ** 2 <= 1
    img[body] = 1064
    bone = ((x - 256) / 40.0) ** 2 + ((y - 330) / 30.0) ** 2 <= 1
    img[bone] = 2200
    return img


def _bytes_of(ds):
    buf = io.BytesIO()
    ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


def _body_part(boundary, first):
    return (b"" if first else b"\r\n") + b"--" + boundary + \
        b"\r\nContent-Type: application/dicom\r\n\r\n"


def generate(data, boundary):
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    log("generating data in %s (pydicom %s)" % (data, pydicom.__version__))
    for sub in ("ct", "bodies"):
        os.makedirs(os.path.join(data, sub), exist_ok=True)
    rng = np.random.default_rng(20240101)
    base = _phantom(np)
    study = generate_uid()
    series = generate_uid()
    manifest = {"version": DATA_VERSION, "boundary": boundary.decode(), "ct": [], "mf": {}}
    bnd = boundary
    close = b"\r\n--" + bnd + b"--\r\n"

    def ct_instance(i, series_uid):
        sop = generate_uid()
        ds = _dataset(CT_CLASS, sop, study, series_uid, i + 1)
        ds.Modality = "CT"
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.SliceThickness = 1.0
        ds.ImagePositionPatient = [-250.0, -250.0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        img = base + rng.normal(0, 20, (512, 512)).astype(np.float32)
        ds.PixelData = np.clip(img, 0, 4095).astype("<u2").tobytes()
        return sop, _bytes_of(ds)

    for i in range(N_CT):
        sop, raw = ct_instance(i, series)
        path = os.path.join(data, "ct", "%04d.dcm" % i)
        with open(path, "wb") as f:
            f.write(raw)
        manifest["ct"].append({"path": path, "sop": sop, "size": len(raw),
                               "sha256": hashlib.sha256(raw).hexdigest()})
    # the warm-up instances a server stores before a measurement, with as
    # many clients at once as the measurement: its threads, connection
    # pools and buffers are then in use already, as in a server that runs
    manifest["warm"] = []
    warm_series = generate_uid()
    for i in range(N_WARM):
        sop, raw = ct_instance(N_CT + i, warm_series)
        path = os.path.join(data, "bodies", "warm-%02d.body" % i)
        with open(path, "wb") as f:
            f.write(_body_part(bnd, True) + raw + close)
        manifest["warm"].append({"path": path, "sop": sop, "size": len(raw),
                                 "sha256": hashlib.sha256(raw).hexdigest()})

    def write_body(path, members):
        with open(path, "wb") as f:
            for k, m in enumerate(members):
                f.write(_body_part(bnd, k == 0))
                with open(m["path"], "rb") as g:
                    f.write(g.read())
            f.write(close)

    s1 = []
    for r in range(N_S1 // PER_REQUEST):
        path = os.path.join(data, "bodies", "s1-%02d.body" % r)
        write_body(path, manifest["ct"][r * PER_REQUEST:(r + 1) * PER_REQUEST])
        s1.append(path)
    single = []
    for i, m in enumerate(manifest["ct"]):
        path = os.path.join(data, "bodies", "single-%04d.body" % i)
        write_body(path, [m])
        single.append(path)
    manifest["s1_bodies"] = s1
    manifest["single_bodies"] = single

    # Multi-frame: header from pydicom, Pixel Data streamed after it, so a
    # 2 GiB instance never sits in memory.
    frame_bytes = 512 * 512 * 2
    bank = [np.clip(base + rng.normal(0, 20, (512, 512)).astype(np.float32), 0, 4095)
            .astype("<u2").tobytes() for _ in range(16)]
    for name, mib in MF_SIZES.items():
        frames = mib * 1024 * 1024 // frame_bytes
        sop = generate_uid()
        ds = _dataset(MF_CLASS, sop, study, generate_uid(), 1)
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
        head = _bytes_of(ds)
        pixel_len = frames * frame_bytes
        head += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_len)
        h = hashlib.sha256()
        path = os.path.join(data, "bodies", name + ".body")
        with open(path, "wb") as f:
            f.write(_body_part(bnd, True))
            f.write(head)
            h.update(head)
            chunk = b"".join(bank)
            left = pixel_len
            while left > 0:
                piece = chunk[:left]
                f.write(piece)
                h.update(piece)
                left -= len(piece)
            f.write(close)
        manifest["mf"][name] = {"path": path, "sop": sop, "size": len(head) + pixel_len,
                                "sha256": h.hexdigest(), "frames": frames}
    with open(os.path.join(data, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def load_or_generate(data):
    path = os.path.join(data, "manifest.json")
    try:
        with open(path) as f:
            m = json.load(f)
        if m.get("version") == DATA_VERSION and all(
                os.path.exists(x["path"]) for x in m["mf"].values()):
            log("reusing data in %s" % data)
            return m
    except (OSError, ValueError):
        pass
    shutil.rmtree(data, ignore_errors=True)
    boundary = ("stowrs-bench-%032x" % random.getrandbits(128)).encode()
    return generate(data, boundary)


# --- processes -------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def proc_cpu(pid, children_too=False):
    """utime+stime (and reaped children's) of @pid in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    t = int(fields[11]) + int(fields[12])
    if children_too:
        t += int(fields[13]) + int(fields[14])
    return t / TICK


def proc_mem(pid):
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def reset_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    except OSError:
        pass


def http_get(url, timeout=5):
    assert url.startswith("http://127.0.0.1:")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return r.status, r.read()


def stop_process(proc, timeout=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Server:
    name = "?"
    path = "/"

    def __init__(self, root):
        self.root = root
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d%s" % (self.port, self.path)

    def pids(self):
        return [self.proc.pid] + children_of(self.proc.pid)

    def cpu(self):
        total = 0.0
        for pid in self.pids():
            try:
                total += proc_cpu(pid, children_too=(pid == self.proc.pid))
            except OSError:
                pass
        return total

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self.proc = None

    def stored_files(self):
        raise NotImplementedError


class Httpd(Server):
    def __init__(self, root, kind, name=None, module=None):
        Server.__init__(self, root)
        self.name = name or kind
        self.kind = kind
        self.module = module or os.path.join(TOP, ".libs", "mod_stowrs.so")
        self.path = "/rs/studies" if kind == "stowrs" else "/" + kind

    def start(self):
        shutil.rmtree(self.root, ignore_errors=True)
        self.store = os.path.join(self.root, "store")
        for d in ("logs", "store", "store/files", "store/tmp"):
            os.makedirs(os.path.join(self.root, d))
        self.port = free_port()
        mods = subprocess.check_output(["apxs", "-q", "LIBEXECDIR"], text=True).strip()
        lines = [
            'ServerRoot "%s"' % self.root,
            "ServerName 127.0.0.1",
            "Listen 127.0.0.1:%d" % self.port,
            'PidFile "%s/httpd.pid"' % self.root,
            'DefaultRuntimeDir "%s"' % self.root,
            'ErrorLog "%s/logs/error.log"' % self.root,
            "LogLevel warn",
            'LoadModule mpm_event_module "%s/mod_mpm_event.so"' % mods,
            'LoadModule authz_core_module "%s/mod_authz_core.so"' % mods,
            # fixed processes and threads: no child comes or goes mid-run
            "StartServers 2", "ServerLimit 2", "ThreadsPerChild 64",
            "MaxRequestWorkers 128", "MinSpareThreads 1", "MaxSpareThreads 128",
            "MaxConnectionsPerChild 0", "Timeout 600", "KeepAlive On",
            "MaxKeepAliveRequests 0", "KeepAliveTimeout 60",
            # httpd >= 2.4.54 refuses bodies over 1 GiB by default
            "LimitRequestBody 0",
            "<Directory />", "    AllowOverride None", "</Directory>",
        ]
        if os.getuid() == 0:
            lines += ["User %s" % RUN_USER, "Group %s" % RUN_USER]
        if self.kind == "stowrs":
            lines += [
                'LoadModule stowrs_module "%s"' % self.module,
                '<Location "/rs">',
                "    SetHandler stowrs",
                '    StowRSArchive "%s"' % self.store,
                "    StowRSSync On",
                "</Location>",
            ]
        else:
            lines += [
                'LoadModule ceiling_module "%s"' % os.path.join(HERE, "mod_ceiling.so"),
                '<Location "/ceiling">',
                "    SetHandler ceiling",
                '    CeilingDir "%s"' % self.store,
                "    CeilingMode store",
                "</Location>",
                '<Location "/discard">',
                "    SetHandler ceiling",
                "    CeilingMode discard",
                "</Location>",
            ]
        conf = os.path.join(self.root, "httpd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        if os.getuid() == 0:
            subprocess.check_call(["chown", "-R", "%s:%s" % (RUN_USER, RUN_USER), self.store,
                                   os.path.join(self.root, "logs")])
        self.proc = subprocess.Popen([APACHE2, "-f", conf, "-DFOREGROUND"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s: httpd exited: %s" % (self.name, self.error_log()))
            if len(children_of(self.proc.pid)) >= 2:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("%s: httpd did not come up" % self.name)

    def error_log(self):
        try:
            with open(os.path.join(self.root, "logs", "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stored_files(self):
        if self.kind == "ceiling":
            d = os.path.join(self.store, "files")
            return [os.path.join(d, n) for n in os.listdir(d)]
        out = []
        for dirpath, dirnames, filenames in os.walk(self.store):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out += [os.path.join(dirpath, n) for n in filenames if n.endswith(".dcm")]
        return out

    def problems(self):
        """Leftover spools and error-log lines, both signs of a fault."""
        out = []
        spool = os.path.join(self.store, "tmp" if self.kind == "ceiling" else ".stowrs-tmp")
        if os.path.isdir(spool) and os.listdir(spool):
            out.append("%d leftover spool file(s)" % len(os.listdir(spool)))
        text = self.error_log()
        bad = [ln for ln in text.splitlines()
               if re.search(r"\[(\w+:)?(error|crit|alert|emerg)\]", ln)]
        if bad:
            out.append("error log: " + bad[-1][:200])
        return out


class Orthanc(Server):
    name = "orthanc"
    path = "/dicom-web/studies"

    def start(self):
        shutil.rmtree(self.root, ignore_errors=True)
        self.store = os.path.join(self.root, "storage")
        os.makedirs(self.store)
        os.makedirs(os.path.join(self.root, "index"))
        self.port = free_port()
        conf = {
            "Name": "stowrs-bench",
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "StorageDirectory": self.store,
            "IndexDirectory": os.path.join(self.root, "index"),
            "SyncStorageArea": True,
            "StorageCompression": False,
            "HttpThreadsCount": 64,
            "HttpRequestTimeout": 600,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "SaveJobs": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        path = os.path.join(self.root, "orthanc.json")
        with open(path, "w") as f:
            json.dump(conf, f, indent=1)
        self.logf = open(os.path.join(self.root, "orthanc.log"), "w")
        self.proc = subprocess.Popen([ORTHANC, path], stdout=self.logf, stderr=self.logf,
                                     cwd=self.root)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("orthanc exited; see %s/orthanc.log" % self.root)
            try:
                if http_get("http://127.0.0.1:%d/system" % self.port, 2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("orthanc did not come up")

    def stop(self):
        Server.stop(self)
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def pids(self):
        return [self.proc.pid]

    def stored_files(self):
        out = []
        for dirpath, dirnames, filenames in os.walk(self.store):
            out += [os.path.join(dirpath, n) for n in filenames]
        return out

    def rest_count(self):
        st, body = http_get("http://127.0.0.1:%d/statistics" % self.port, 30)
        return json.loads(body)["CountInstances"]

    def problems(self):
        return []


# --- runs ------------------------------------------------------------------

def sha256_files(paths):
    if not paths:
        return {}
    out = subprocess.check_output(["openssl", "dgst", "-sha256", "-r"] + paths, text=True,
                                  timeout=600)
    res = {}
    for line in out.splitlines():
        digest, name = line.split(" ", 1)
        res[name.lstrip("*")] = digest
    return res


def run_client(server, bodies, clients, timeout):
    cmd = [os.path.join(HERE, "client"), "-u", server.url, "-c", str(clients), "-t",
           'multipart/related; type="application/dicom"; boundary=%s' % BOUNDARY,
           "-T", str(timeout)] + bodies
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=timeout * max(1, len(bodies) // clients + 1) + 60)
    if out.returncode != 0:
        raise RuntimeError("client failed: %s" % out.stderr[-500:])
    return json.loads(out.stdout)


def measure(server, bodies, clients, expected, timeout, hash_all_big):
    """Start @server fresh, warm it up, run the client, verify the store."""
    server.start()
    try:
        warm_set = WARM[:max(1, clients)]
        warm = run_client(server, [w["path"] for w in warm_set], len(warm_set), 120)
        bad = [r for r in warm["requests"] if r[1] != 200]
        if bad:
            raise RuntimeError("%s: warm-up answered %s" % (server.name, bad[0]))
        time.sleep(0.2)
        pids = server.pids()
        for pid in pids:
            reset_hwm(pid)
        before = {pid: proc_mem(pid)[0] for pid in pids}
        cpu0 = server.cpu()
        res = run_client(server, bodies, clients, timeout)
        cpu1 = server.cpu()
        growth = 0
        for pid in pids:
            try:
                growth += max(0, proc_mem(pid)[1] - before[pid])
            except OSError:
                pass
        failed = sum(1 for r in res["requests"] if r[1] != 200)
        ver = verify(server, expected, warm_set, hash_all_big)
        return {
            "wall": res["wall"], "client_cpu": res["cpu"], "bytes": res["bytes"],
            "cpu": cpu1 - cpu0, "growth": growth, "failed": failed,
            "latencies": [r[2] for r in res["requests"]],
            "instances": len(expected), "inst_bytes": sum(e["size"] for e in expected),
            "verify": ver,
        }
    finally:
        server.stop()
        retire(server.root, big=any(e["size"] > 64 * 1024 * 1024 for e in expected))


GRAVEYARD = os.path.join(RUNDIR, "old")


def retire(root, big):
    """Move a server's root aside; it is removed after the last measurement.
    Deleting hundreds of files between measurements would make the next
    server pay for it: ext4 skips recently deleted inodes when it allocates
    new ones (ialloc.c, recently_deleted()), and mod_stowrs, which makes two
    inodes per instance (file and index entry), would pay twice what the
    ceiling pays. Large instances are few inodes and much disk, so they go
    at once."""
    if not os.path.exists(root):
        return
    if big:
        shutil.rmtree(root, ignore_errors=True)
        return
    os.makedirs(GRAVEYARD, exist_ok=True)
    os.rename(root, os.path.join(GRAVEYARD, "%s-%d" % (os.path.basename(root),
                                                      len(os.listdir(GRAVEYARD)))))


def verify(server, expected, warm_set, hash_all_big):
    """Count the stored files and check a sample of sha256s (and sizes of all)."""
    files = server.stored_files()
    want = len(expected) + len(warm_set)
    problems = []
    if len(files) != want:
        problems.append("%d files stored, %d expected" % (len(files), want))
    if isinstance(server, Orthanc):
        n = server.rest_count()
        if n != want:
            problems.append("Orthanc counts %d instances, %d expected" % (n, want))
    by_size = {}
    for e in expected:
        by_size.setdefault(e["size"], set()).add(e["sha256"])
    sizes = {f: os.path.getsize(f) for f in files}
    big = [f for f in files if sizes[f] > 64 * 1024 * 1024]
    small = [f for f in files if sizes[f] <= 64 * 1024 * 1024]
    sample = random.sample(small, min(8, len(small)))
    if hash_all_big:
        sample += big
    digests = sha256_files(sample)
    known = {e["sha256"] for e in expected} | {w["sha256"] for w in warm_set}
    bad = [f for f in sample if digests.get(f) not in known]
    if bad:
        problems.append("%d of %d sampled files differ from what was sent" % (len(bad),
                                                                             len(sample)))
    sent_sizes = {e["size"] for e in expected} | {w["size"] for w in warm_set}
    wrong_size = [f for f in files if sizes[f] not in sent_sizes]
    if wrong_size:
        problems.append("%d files of a size never sent" % len(wrong_size))
    problems += server.problems()
    return {"files": len(files), "hashed": len(sample), "problems": problems}


def load_avg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def wait_quiet(max_minutes, threshold):
    deadline = time.time() + max_minutes * 60
    while True:
        la = load_avg()
        if la[0] <= threshold:
            log("load %.2f %.2f %.2f: starting" % la)
            return True
        if time.time() >= deadline:
            log("load %.2f %.2f %.2f: not quiet after %d min, running anyway"
                % (la + (max_minutes,)))
            return False
        log("load %.2f %.2f %.2f: waiting for <= %.1f" % (la + (threshold,)))
        time.sleep(30)


# --- summary ---------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def fmt(xs, digits=1):
    m, lo, hi = med(xs)
    if m is None:
        return "n/a"
    f = "%%.%df" % digits
    return "%s (%s–%s)" % (f % m, f % lo, f % hi)


def pct(lat, q):
    s = sorted(lat)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))
    return s[k]


def metrics(r):
    if r is None or "error" in r:
        return None
    ok = r["failed"] == 0
    return {
        "ips": r["instances"] / r["wall"] if ok else None,
        "mbs": r["inst_bytes"] / MB / r["wall"] if ok else None,
        "cpu_gb": r["cpu"] / (r["inst_bytes"] / GB),
        "growth": r["growth"] / MB,
        "p50": pct(r["latencies"], 0.50) * 1000,
        "p99": pct(r["latencies"], 0.99) * 1000,
        "failed": r["failed"],
        "client_cpu": r["client_cpu"],
        "wall": r["wall"],
    }


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    global DATA, BOUNDARY, WARM
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions (default 5, or 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repetition, 40 CT slices, 16 and 64 MiB instead of "
                         "256 MiB and 2 GiB, 64 MiB parser body")
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=5,
                    help="minutes to wait for a 1-minute load <= --load before starting")
    ap.add_argument("--load", type=float, default=1.2)
    ap.add_argument("--base-module", metavar="SO",
                    help="another build of mod_stowrs.so, run as server \"base\" "
                         "(--servers stowrs,base,...) to measure a change in the same run")
    ap.add_argument("--budget", type=float, default=45,
                    help="minutes; no new repetition starts after this")
    args = ap.parse_args()

    t_start = time.time()
    shutil.rmtree(RUNDIR, ignore_errors=True)     # an interrupted run's
    scen = set(args.scenarios.split(","))
    servers_wanted = args.servers.split(",")
    for tool in ("client", "parser_bench", "mod_ceiling.so"):
        if not os.path.exists(os.path.join(HERE, tool)):
            sys.exit("bench/%s missing: run make bench" % tool)
    so = os.path.join(TOP, ".libs", "mod_stowrs.so")
    if "asan" in subprocess.run(["ldd", so], stdout=subprocess.PIPE, text=True).stdout:
        sys.exit("%s is a SANITIZE=1 build; rebuild without it" % so)
    if args.quick:
        global N_CT, N_S1, N_S3, MF_SIZES, S4_CLIENTS
        DATA = DATA + "-quick"
        N_CT, N_S1, N_S3 = 64, 40, 40
        MF_SIZES = {"mf256": 16, "mf2048": 64}
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    st = os.statvfs("/tmp")
    free_gb = st.f_bavail * st.f_frsize / GB
    # data and bodies, one large instance stored at a time, and the small
    # instances kept until the end (see retire())
    need = (3 * sum(MF_SIZES.values()) * 1.1 / 1024 + 1
            + 0.55 * N_CT * (args.reps or 5) * 3 * 8 / 1000)
    if free_gb < need:
        sys.exit("/tmp has %.1f GB free, the run needs about %.0f GB" % (free_gb, need))

    manifest = load_or_generate(DATA)
    BOUNDARY = manifest["boundary"]
    WARM = manifest["warm"]
    ct = manifest["ct"]

    quiet = wait_quiet(0 if args.quick else args.wait_quiet, args.load)
    load_start = load_avg()
    t_measure = time.time()
    os.makedirs(RUNDIR, exist_ok=True)

    servers = {}
    for name in servers_wanted:
        root = os.path.join(RUNDIR, name)
        if name == "orthanc":
            servers[name] = Orthanc(root)
        elif name == "base":
            servers[name] = Httpd(root, "stowrs", "base", args.base_module)
        else:
            servers[name] = Httpd(root, name)
    discard = Httpd(os.path.join(RUNDIR, "discard"), "ceiling")

    plan = []           # (key, bodies, clients, expected, timeout)
    s1_bodies = manifest["s1_bodies"]
    if "S1" in scen:
        for c in (1, 4):
            plan.append(("S1 %d client%s" % (c, "s" if c > 1 else ""), s1_bodies, c,
                         ct[:N_S1], 300))
    if "S2" in scen:
        for name in MF_SIZES:
            m = manifest["mf"][name]
            plan.append(("S2 %d MiB" % MF_SIZES[name], [m["path"]], 1, [m], 1800))
    if "S3" in scen:
        plan.append(("S3 sequential", manifest["single_bodies"][:N_S3], 1, ct[:N_S3], 300))
    if "S4" in scen:
        for c in S4_CLIENTS:
            plan.append(("S4 %d clients" % c, manifest["single_bodies"][:N_CT], c, ct[:N_CT],
                         300))

    results = {}        # key -> server -> [per-rep result]
    discard_runs = {"S1 4 clients": [], "S2 big": []}
    parser_runs = {"parts": [], "one": []}
    reps_done = 0
    for rep in range(args.reps):
        if rep > 0 and time.time() - t_start > args.budget * 60:
            log("budget of %.0f min used: stopping after %d repetitions" % (args.budget, rep))
            break
        order = servers_wanted[rep % len(servers_wanted):] + \
            servers_wanted[:rep % len(servers_wanted)]
        log("repetition %d/%d, order %s" % (rep + 1, args.reps, " ".join(order)))
        for key, bodies, clients, expected, timeout in plan:
            for name in order:
                srv = servers[name]
                try:
                    r = measure(srv, bodies, clients, expected, timeout,
                                hash_all_big=(rep == 0))
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    r = {"error": str(e)[:300]}
                results.setdefault(key, {}).setdefault(name, []).append(r)
                m = metrics(r)
                if m:
                    log("  %-14s %-8s %8.1f inst/s %8.1f MB/s cpu %6.2f s/GB mem +%6.1f MB "
                        "p50 %7.1f ms failed %d%s" % (
                            key, name, m["ips"] or 0, m["mbs"] or 0, m["cpu_gb"],
                            m["growth"], m["p50"], m["failed"],
                            "  PROBLEMS: " + "; ".join(r["verify"]["problems"])
                            if r["verify"]["problems"] else ""))
                else:
                    log("  %-14s %-8s ERROR %s" % (key, name, r.get("error")))
        # the client against a sink that only reads
        if "S1" in scen or "S2" in scen:
            discard.start()
            try:
                discard.path = "/discard"
                if "S1" in scen:
                    res = run_client(discard, s1_bodies, 4, 300)
                    discard_runs["S1 4 clients"].append(
                        (sum(e["size"] for e in ct[:N_S1]) / MB / res["wall"], res["cpu"],
                         res["wall"]))
                if "S2" in scen:
                    big = manifest["mf"]["mf2048"]
                    res = run_client(discard, [big["path"]], 1, 1800)
                    discard_runs["S2 big"].append((big["size"] / MB / res["wall"], res["cpu"],
                                                   res["wall"]))
            finally:
                discard.stop()
                retire(discard.root, big=False)
        if "S5" in scen:
            out = subprocess.run([os.path.join(HERE, "parser_bench"), "-n", "1", "-s",
                                  "64" if args.quick else "1024", ct[0]["path"]],
                                 stdout=subprocess.PIPE, text=True, timeout=600, check=True)
            pr = json.loads(out.stdout)
            parser_runs["parts"] += pr["parts"]
            parser_runs["one"] += pr["one"]
            parser_runs["part_count"] = pr["part_count"]
            parser_runs["bytes"] = pr["bytes"]
            log("  S5 parser: %.2f GB/s (CT parts), %.2f GB/s (one part)"
                % (pr["parts"][0], pr["one"][0]))
        reps_done += 1

    load_end = load_avg()
    t_end = time.time()
    report = write_report(args, manifest, results, discard_runs, parser_runs, reps_done,
                          load_start, load_end, quiet, t_start, t_measure, t_end)
    with open(args.out, "w") as f:
        f.write(report)
    with open(os.path.join(RUNDIR, "raw.json"), "w") as f:
        json.dump({"results": results, "discard": discard_runs, "parser": parser_runs}, f)
    log("wrote %s (raw numbers: %s/raw.json)" % (args.out, RUNDIR))
    shutil.rmtree(GRAVEYARD, ignore_errors=True)
    if not args.keep_data:
        shutil.rmtree(DATA, ignore_errors=True)
        log("removed %s" % DATA)


def machine():
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def cmd(*c):
        try:
            return subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import pydicom
    fs = "?"
    try:
        best = ""
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if "/tmp".startswith(mnt) and len(mnt) > len(best):
                    best, fs = mnt, "%s on %s (%s)" % (mnt, dev, typ)
    except OSError:
        pass
    commit = cmd("git", "-C", TOP, "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--untracked-files=no",
                            "--", "*.c", "*.h", "*.cc"],
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    return [
        ("CPU", "%s, %d cores" % (first("/proc/cpuinfo", "model name"), os.cpu_count())),
        ("memory", first("/proc/meminfo", "MemTotal")),
        ("kernel", platform.release()),
        ("/tmp", fs),
        ("httpd", cmd(APACHE2, "-v").replace("Server version: ", "")),
        ("Orthanc", cmd(ORTHANC, "--version") + ", DICOMweb plugin " +
         cmd("dpkg-query", "-W", "-f=${Version}", "orthanc-dicomweb")),
        ("libcurl", cmd("curl-config", "--version")),
        ("pydicom", pydicom.__version__),
        ("mod_stowrs", "%s%s" % (commit, " + uncommitted C changes" if dirty else "")),
    ]


def write_report(args, manifest, results, discard_runs, parser_runs, reps, load_start,
                 load_end, quiet, t_start, t_measure, t_end):
    L = []
    w = L.append
    w("# mod_stowrs benchmark results\n")
    w("Generated by `make bench` (bench/run.py) on %s; do not edit by hand.\n"
      % time.strftime("%Y-%m-%d %H:%M %Z"))
    w("## Machine and run\n")
    w("| | |")
    w("|---|---|")
    for k, v in machine():
        w("| %s | %s |" % (k, v.replace("|", "/")))
    w("| command | `%s` |" % ("make bench" + (" BENCH_ARGS='%s'" % " ".join(sys.argv[1:])
                                                if sys.argv[1:] else "")))
    w("| repetitions | %d%s |" % (reps, " (smoke run, small data)" if args.quick else ""))
    w("| load average (1, 5, 15 min) | at start %.2f %.2f %.2f, at end %.2f %.2f %.2f%s |"
      % (load_start + load_end
         + ("" if quiet else "; the machine never got quiet (other agents' tests and fuzzer)",)))
    w("| duration | %.1f min in all, %.1f min measuring |"
      % ((t_end - t_start) / 60, (t_end - t_measure) / 60))
    w("")
    mf = manifest["mf"]
    w("Data (pydicom, in %s, removed after the run): %d CT slices of %d bytes (512×512, "
      "16 bit allocated, 12 stored, Explicit VR Little Endian), multi-frame instances of %s "
      "bytes. MB = 10^6 bytes, GB = 10^9 bytes of stored instances. Each cell is the median "
      "over repetitions with (min–max). Every measurement starts its server fresh with "
      "empty storage and stores warm-up instances, as many at once as the measurement has "
      "clients (one per client: threads, connections and buffers are in use, as in a server "
      "that has been running), then runs the client; the server CPU "
      "is utime+stime of all its processes (httpd: parent, children and reaped children) "
      "during the client run; memory growth is the sum over the server's processes of "
      "peak RSS (VmHWM, reset through /proc/PID/clear_refs) minus RSS before the run.\n"
      % (DATA, len(manifest["ct"]), manifest["ct"][0]["size"],
         " and ".join("%d" % m["size"] for m in mf.values())))

    M = {k: {s: [metrics(r) for r in v] for s, v in d.items()} for k, d in results.items()}

    def col(key, server, field):
        return [m[field] if m else None for m in M.get(key, {}).get(server, [])]

    def per_rep_ratio(key, a, b, field, key_b=None):
        xa, xb = col(key, a, field), col(key_b or key, b, field)
        return [ratio(x, y) for x, y in zip(xa, xb)]

    w("## Results\n")
    w("| scenario | server | instances/s | MB/s | server CPU s/GB | memory growth MB | "
      "p50 ms | p99 ms | failed requests |")
    w("|---|---|---|---|---|---|---|---|---|")
    for key in results:
        for s in results[key]:
            errs = [r["error"] for r in results[key][s] if "error" in r]
            failed = sum(m["failed"] for m in M[key][s] if m)
            lat = key.startswith("S3")
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %d%s |" % (
                key, s, fmt(col(key, s, "ips")), fmt(col(key, s, "mbs")),
                fmt(col(key, s, "cpu_gb"), 2), fmt(col(key, s, "growth")),
                fmt(col(key, s, "p50")) if lat else "", fmt(col(key, s, "p99")) if lat else "",
                failed, (" + %d run(s) failed: %s" % (len(errs), errs[0][:120])) if errs else ""))
    w("")

    checks = []

    def target(name, values, ok, goal, digits=2, unit="×"):
        m, lo, hi = med(values)
        if m is None:
            checks.append((name, goal, "n/a", "not measured"))
            return
        checks.append((name, goal, "%.*f%s (%.*f–%.*f)" % (digits, m, unit, digits, lo, digits,
                                                            hi), "met" if ok(m) else "MISSED"))

    k = "S1 4 clients"
    target("S1 4 clients: instances/s vs Orthanc", per_rep_ratio(k, "stowrs", "orthanc", "ips"),
           lambda m: m >= 3, "≥ 3×")
    target("S1 4 clients: instances/s vs ceiling", per_rep_ratio(k, "stowrs", "ceiling", "ips"),
           lambda m: m >= 0.9, "≥ 0.9×")
    k = "S1 1 client"
    target("S1 1 client: instances/s vs Orthanc (no target)",
           per_rep_ratio(k, "stowrs", "orthanc", "ips"), lambda m: True, "—")
    target("S1 1 client: instances/s vs ceiling (no target)",
           per_rep_ratio(k, "stowrs", "ceiling", "ips"), lambda m: True, "—")
    for key in [x for x in results if x.startswith("S2")]:
        target("%s: MB/s vs Orthanc" % key, per_rep_ratio(key, "stowrs", "orthanc", "mbs"),
               lambda m: m >= 5, "≥ 5×")
        target("%s: MB/s vs ceiling" % key, per_rep_ratio(key, "stowrs", "ceiling", "mbs"),
               lambda m: m >= 0.9, "≥ 0.9×")
    big = [x for x in results if x.startswith("S2")]
    if big:
        key = big[-1]
        g = col(key, "stowrs", "growth")
        mx = max([x for x in g if x is not None], default=None)
        checks.append(("%s: mod_stowrs memory growth (max over runs)" % key, "< 32 MB",
                       "%.1f MB" % mx if mx is not None else "n/a",
                       "met" if mx is not None and mx < 32 else "MISSED"))
        go = col(key, "orthanc", "growth")
        inst = manifest["mf"]["mf2048"]["size"] / MB
        target("%s: Orthanc memory growth / instance size (for scale)" % key,
               [x / inst if x is not None else None for x in go], lambda m: True, "—")
    k = "S3 sequential"
    target("S3: p50 latency vs Orthanc", per_rep_ratio(k, "stowrs", "orthanc", "p50"),
           lambda m: m <= 1 / 3, "≤ 0.33×")
    target("S3: p50 latency vs ceiling", per_rep_ratio(k, "stowrs", "ceiling", "p50"),
           lambda m: m <= 1.5, "≤ 1.5×")
    if any(x.startswith("S4") for x in results):
        f64 = sum(m["failed"] for m in M.get("S4 64 clients", {}).get("stowrs", []) if m)
        e64 = sum(1 for m in M.get("S4 64 clients", {}).get("stowrs", []) if m is None)
        checks.append(("S4 64 clients: failed requests (mod_stowrs, all runs)", "0",
                       "%d%s" % (f64, " + %d runs in error" % e64 if e64 else ""),
                       "met" if f64 == 0 and e64 == 0 else "MISSED"))
        for c in (16, 64):
            target("S4: mod_stowrs instances/s, %d vs 4 clients" % c,
                   [ratio(a, b) for a, b in zip(col("S4 %d clients" % c, "stowrs", "ips"),
                                                col("S4 4 clients", "stowrs", "ips"))],
                   lambda m: m >= 0.9, "≥ 0.9× (not falling)")
    if parser_runs["parts"]:
        target("S5: parser GB/s, CT slices as parts", parser_runs["parts"],
               lambda m: m >= 2, "≥ 2 GB/s", unit=" GB/s")
        target("S5: parser GB/s, one part", parser_runs["one"], lambda m: m >= 2,
               "≥ 2 GB/s", unit=" GB/s")

    w("## Targets (ratios from the same repetition, then median (min–max))\n")
    w("| target | goal | measured | |")
    w("|---|---|---|---|")
    for name, goal, got, verdict in checks:
        w("| %s | %s | %s | %s |" % (name, goal, got, verdict))
    w("")

    w("## The client is not the bottleneck\n")
    w("The same client against a sink in httpd that reads the body and drops it "
      "(`CeilingMode discard` of bench/mod_ceiling.c), in the same repetitions:\n")
    w("| requests | sink MB/s | client CPU s | fastest server MB/s | sink / fastest |")
    w("|---|---|---|---|---|")
    for label, key in (("S1 4 clients", "S1 4 clients"), ("S2 big", big[-1] if big else None)):
        runs = discard_runs.get(label) or []
        if not runs or not key:
            continue
        fastest = [max([x for x in xs if x is not None], default=None)
                   for xs in zip(*[col(key, s, "mbs") for s in results.get(key, {})])]
        w("| %s | %s | %s | %s | %s |" % (
            key, fmt([r[0] for r in runs]), fmt([r[1] for r in runs], 2), fmt(fastest),
            fmt([ratio(r[0], f) for r, f in zip(runs, fastest)], 2)))
    w("")
    if parser_runs["parts"]:
        w("S5 body: %d bytes in memory, fed in 8000-byte pieces on one thread; \"CT slices "
          "as parts\" is %d application/dicom parts of the benchmark's CT slice, \"one "
          "part\" the same bytes as a single part.\n"
          % (parser_runs["bytes"], parser_runs["part_count"]))

    w("## Verification\n")
    n_runs = n_files = n_hashed = 0
    probs = []
    for key, d in results.items():
        for s, runs in d.items():
            for r in runs:
                if "verify" in r:
                    n_runs += 1
                    n_files += r["verify"]["files"]
                    n_hashed += r["verify"]["hashed"]
                    probs += ["%s %s: %s" % (key, s, p) for p in r["verify"]["problems"]]
    w("After every measurement the storage was walked: the number of stored files must be "
      "the number of instances sent plus the warm-up instances (for Orthanc also its "
      "/statistics count), every file must have the size of an instance sent, and a sample "
      "(8 per run, plus the large instances in the first repetition) is hashed with sha256 "
      "and must match an instance sent. %d runs, %d stored files counted, %d hashed. %s\n"
      % (n_runs, n_files, n_hashed,
         "No problems." if not probs else "Problems: " + "; ".join(probs[:20])))

    w("## Notes\n")
    w("- Servers: httpd with the event MPM, 2 processes × 64 threads, `LimitRequestBody 0`, "
      "no access log, `LogLevel warn`, children as `%s`; mod_stowrs with its defaults "
      "(`StowRSSync On`). Orthanc with `SyncStorageArea` true, `StorageCompression` false, "
      "`HttpThreadsCount` 64, only the DICOMweb plugin. All listen on 127.0.0.1, except "
      "that Orthanc 1.10 has no bind-address option and listens on all interfaces "
      "(`RemoteAccessAllowed` false makes it refuse non-local clients; no traffic goes "
      "anywhere but 127.0.0.1).\n"
      "- The client (bench/client.c, libcurl) maps every body before the clock starts, "
      "keeps one connection per client thread and sends no `Expect: 100-continue`.\n"
      "- The ceiling (bench/mod_ceiling.c) frames the body with the same parser and writes "
      "each part like mod_stowrs (256 KiB coalescing buffer, fdatasync, rename, fsync of the "
      "directory) but does no DICOM inspection, keeps no index and fsyncs one directory per "
      "part where mod_stowrs fsyncs the index and the series directories." % RUN_USER)
    w("")
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().rstrip() + "\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
