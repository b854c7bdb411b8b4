"""Debian packaging (debian/, `make deb`, `make install`).

The package is built by `make deb` from a clone of HEAD (uncommitted changes
are not packaged, so not tested here) and inspected. As root, it is then
installed into the system, enabled with a2enmod and used by the system's
/usr/sbin/apache2, which loads the module through /etc/apache2/mods-enabled
and stores an instance; then it is disabled and purged. Without root the
same .deb is unpacked with dpkg-deb -x and its module and configuration
serve the request instead.

As root this test changes the system, and puts it back:
- a libapache2-mod-stowrs already installed (an earlier run's) is purged first;
- mod_stowrs.so, stowrs.load and stowrs.conf that `make install` put there
  (owned by no package) are moved aside and restored afterwards, and
  re-enabled if they were enabled.
httpd is never started with the system's configuration (port 80 on every
address) and systemctl is not used. The package installs the module
disabled, so its postinst does not restart httpd, and the test disables the
module before removing the package, so prerm and postrm find nothing to restart.
"""

import glob
import os
import pathlib
import pwd
import shutil
import subprocess

import pytest

import dicomgen
import mime
from stowrs_env import Httpd, REPO, is_root, libexecdir

PKG = "libapache2-mod-stowrs"
MODS_AVAILABLE = "/etc/apache2/mods-available"
MODS_ENABLED = "/etc/apache2/mods-enabled"
SO = "/usr/lib/apache2/modules/mod_stowrs.so"
LOAD = MODS_AVAILABLE + "/stowrs.load"
CONF = MODS_AVAILABLE + "/stowrs.conf"
ENABLED = (MODS_ENABLED + "/stowrs.load", MODS_ENABLED + "/stowrs.conf")
LOAD_LINE = "LoadModule stowrs_module /usr/lib/apache2/modules/mod_stowrs.so"
EXAMPLE_LOCATION = "/dcm4chee-arc/aets/DCM4CHEE/rs"  # commented out in stowrs.conf
PKG_LOCATION = "/stowrs-package/rs"


def run(args, ok=True, timeout=120, **kw):
    env = kw.pop("env", None) or dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout, env=env, **kw)
    if ok:
        assert r.returncode == 0, "%s: exit %d\n%s\n%s" % (
            " ".join(map(str, args)), r.returncode, r.stdout[-4000:], r.stderr[-4000:])
    return r


def build_env(workdir):
    """The environment for `make deb`: none of the outer make's jobserver or
    of a SANITIZE=1 test build; and a git that accepts a checkout owned by
    another user than the one running the tests (root in CI)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SANITIZE")}
    if REPO.stat().st_uid != os.geteuid():
        gitconfig = workdir / "gitconfig"
        gitconfig.write_text("[safe]\n\tdirectory = %s\n\tdirectory = %s/.git\n" % (REPO, REPO))
        env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
    return env



@pytest.fixture(scope="module")
def deb(new_workdir):
    """libapache2-mod-stowrs_*.deb, from `make deb` (deps taken as done)."""
    out = new_workdir("deb")
    r = run(["make", "--no-print-directory", "-C", REPO, "-o", "deps", "deb",
             "DEB_OUT=%s" % out], timeout=600, env=build_env(out), ok=False)
    assert r.returncode == 0, "make deb failed:\n%s\n%s" % (r.stdout[-6000:], r.stderr[-6000:])
    debs = glob.glob(str(out / (PKG + "_*.deb")))
    assert len(debs) == 1, (debs, r.stdout[-2000:])
    return pathlib.Path(debs[0])


@pytest.fixture(scope="module")
def unpacked(deb, new_workdir):
    root = new_workdir("deb-x")
    run(["dpkg-deb", "-x", deb, root])
    return root


# --------------------------------------------------------------- the .deb
def test_800_01_package_contents(deb, unpacked):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for p in (SO, LOAD, CONF, "/usr/share/doc/%s/copyright" % PKG,
              "/usr/share/doc/%s/examples/stowrs.conf" % PKG):
        assert p in paths, "%s not in %s:\n%s" % (p, deb.name, listing)

    fields = run(["dpkg-deb", "-f", deb, "Package", "Depends"]).stdout
    assert "Package: %s" % PKG in fields
    depends = fields.split("Depends:", 1)[1]
    # dh_apache2's: the httpd module API; dh_shlibdeps': what the .so links
    for dep in ("apache2-api-20120211", "libdcmtk", "libxml2", "libjansson"):
        assert dep in depends, fields

    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert sorted(conffiles) == [CONF, LOAD]
    # installed disabled: no postinst; prerm disables the module on removal
    assert run(["dpkg-deb", "-I", deb, "postinst"], ok=False).returncode != 0
    assert "apache2_invoke dismod" in run(["dpkg-deb", "-I", deb, "prerm"]).stdout

    assert [l for l in (unpacked / LOAD[1:]).read_text().splitlines()
            if not l.startswith("#")] == [LOAD_LINE]
    active = [l for l in (unpacked / CONF[1:]).read_text().splitlines()
              if l.strip() and not l.lstrip().startswith("#")]
    assert active == [], "enabling the module must configure nothing: %r" % active
    so = (unpacked / SO[1:]).read_bytes()
    assert so[:4] == b"\x7fELF"
    assert b"__asan_init" not in so and b"__ubsan_handle" not in so, \
        "the packaged module was built with SANITIZE=1"


def test_800_02_make_install_destdir(new_workdir):
    """`make install DESTDIR=...` puts the module and the a2enmod files into
    the package root (apxs -i alone would write to the real system)."""
    dest = new_workdir("destdir")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run(["make", "--no-print-directory", "-C", REPO, "install", "DESTDIR=%s" % dest],
        timeout=600, env=env)
    assert (dest / SO[1:]).is_file()
    assert (dest / LOAD[1:]).read_text() == (REPO / "conf/stowrs.load").read_text()
    assert (dest / CONF[1:]).read_text() == (REPO / "conf/stowrs-mod.conf").read_text()
    # an admin's stowrs.conf is kept
    (dest / CONF[1:]).write_text("# mine\n")
    run(["make", "--no-print-directory", "-C", REPO, "install", "DESTDIR=%s" % dest],
        timeout=600, env=env)
    assert (dest / CONF[1:]).read_text() == "# mine\n"


# --------------------------------------------------------------- serving
class PackagedHttpd(Httpd):
    """httpd whose modules come from @head (LoadModule / Include lines), with
    one <Location PKG_LOCATION> of its own; the rest as Httpd's."""

    def __init__(self, workdir, head):
        self.head = head
        super().__init__(workdir)

    def config_text(self, conf_extra=None, location_conf=None):
        lines = [
            "# generated by t/test_800_package.py",
            'ServerRoot "%s"' % self.workdir,
            "ServerName 127.0.0.1",
            "Listen 127.0.0.1:%d" % self.port,
            'PidFile "%s"' % self.pid_file,
            'DefaultRuntimeDir "%s"' % self.workdir,
            'ErrorLog "%s"' % self.error_log,
            "LogLevel %s" % self.log_level,
            'CustomLog "%s" common' % self.access_log,
            'DocumentRoot "%s"' % self.workdir,
        ] + self.head + [
            # what the system's mime.conf would say (not included)
            "<IfModule mod_mime.c>",
            "    TypesConfig /etc/mime.types",
            "</IfModule>",
        ]
        if is_root():
            lines += ["User www-data", "Group www-data"]
        lines += [
            '<Location "%s">' % PKG_LOCATION,
            "    SetHandler stowrs",
            '    StowRSArchive "%s"' % self.archive,
            "</Location>",
            "",
        ]
        return "\n".join(lines)


def store_one(h):
    """POST one instance to the package's location: 200, stored as sent. The
    commented-out example location of stowrs.conf serves nothing."""
    data, u = dicomgen.ct_image()
    r = mime.stow(h.port, mime.dicom_body([data]), path=PKG_LOCATION + "/studies")
    assert r.status == 200, r
    res = mime.parse_stow_response(r)
    assert res["failed"] == []
    assert [ref["instance"] for ref in res["referenced"]] == [u["sop"]]
    path = h.assert_stored(data, u)
    if is_root():
        assert path.stat().st_uid == pwd.getpwnam("www-data").pw_uid
    r = mime.stow(h.port, mime.dicom_body([dicomgen.ct_image()[0]]),
                  path=EXAMPLE_LOCATION + "/studies")
    assert r.status == 404, r


def serve_unpacked(unpacked, new_workdir):
    """Without root: the unpacked package's module and stowrs.conf, loaded
    by the system's /usr/sbin/apache2."""
    work = new_workdir("pkg-unpacked")
    load = work / "stowrs.load"
    load.write_text((unpacked / LOAD[1:]).read_text().replace(SO, str(unpacked / SO[1:])))
    mods = libexecdir()
    h = PackagedHttpd(work, [
        'LoadModule mpm_event_module "%s/mod_mpm_event.so"' % mods,
        'LoadModule authz_core_module "%s/mod_authz_core.so"' % mods,
        'Include "%s"' % load,
        'Include "%s"' % (unpacked / CONF[1:]),
    ])
    h.start()
    try:
        store_one(h)
    finally:
        h.stop()


# --------------------------------------------------------------- the system
def pkg_status():
    """dpkg's status of PKG: 'install ok installed', 'deinstall ok
    config-files', or '' when dpkg does not know it (any more)."""
    r = run(["dpkg-query", "-W", "-f=${Status}", PKG], ok=False)
    status = r.stdout.strip() if r.returncode == 0 else ""
    return "" if status.endswith("not-installed") else status


def enabled_links():
    return [p for p in ENABLED if os.path.lexists(p)]


def disable_and_purge():
    """a2dismod first: then prerm and postrm have no httpd to restart."""
    if enabled_links():
        run(["a2dismod", "-q", "stowrs"])
    if pkg_status():
        run(["dpkg", "--purge", PKG])


class SetAside:
    """Files `make install` left (no package owns them) are moved away for
    the test and put back, with their a2enmod state, at the end."""

    def __init__(self, workdir):
        self.dir = workdir
        self.moved = []
        self.enabled = False

    def __enter__(self):
        unowned = [p for p in (SO, LOAD, CONF) if os.path.lexists(p)
                   and run(["dpkg", "-S", p], ok=False).returncode != 0]
        if unowned:
            self.enabled = bool(enabled_links())
            if self.enabled:
                run(["a2dismod", "-q", "stowrs"])
            for p in unowned:
                dest = self.dir / p.replace("/", "_")
                shutil.move(p, dest)
                self.moved.append((p, dest))
        return self

    def __exit__(self, *exc):
        for p, dest in self.moved:
            shutil.move(dest, p)
        if self.enabled:
            run(["a2enmod", "-q", "stowrs"])
        return False


def test_800_03_install_enable_store_remove(deb, unpacked, new_workdir):
    if not is_root():
        # dpkg -i, a2enmod and the system's mods-enabled need root: the
        # packaged module serves from the unpacked .deb instead
        serve_unpacked(unpacked, new_workdir)
        return

    if pkg_status():                     # an earlier run's, or a crash's
        disable_and_purge()
    assert pkg_status() == ""
    work = new_workdir("pkg-system")
    h = None
    with SetAside(work):
        try:
            run(["dpkg", "-i", deb])
            assert pkg_status() == "install ok installed"
            for p in (SO, LOAD, CONF):
                assert os.path.isfile(p), p
            assert enabled_links() == [], "the package must install the module disabled"

            run(["a2enmod", "stowrs"])
            for p in ENABLED:
                assert os.path.islink(p), p
                assert os.path.realpath(p) == os.path.join(
                    MODS_AVAILABLE, os.path.basename(p)), p
            # the system configuration with the module enabled (not started)
            r = run(["apache2ctl", "-t"])
            assert "Syntax OK" in r.stdout + r.stderr

            # the system httpd binary with what the system has enabled,
            # stowrs.load and stowrs.conf included, on a loopback port
            h = PackagedHttpd(work / "httpd", [
                "Include %s/*.load" % MODS_ENABLED,
                "Include %s/stowrs.conf" % MODS_ENABLED,
            ])
            h.start()
            store_one(h)
            h.stop()

            run(["a2dismod", "stowrs"])
            assert enabled_links() == []
            run(["dpkg", "-r", PKG])
            assert pkg_status() == "deinstall ok config-files"
            assert not os.path.exists(SO)
            run(["dpkg", "--purge", PKG])
            assert pkg_status() == ""
            for p in (SO, LOAD, CONF):
                assert not os.path.lexists(p), p
        finally:
            if h is not None:
                h.stop()
            disable_and_purge()
