"""HTTPS and authentication in front of mod_stowrs, with httpd's stock
modules (DESIGN.md §1: TLS, 401 and 403 are httpd's job; the module must
work with them).

The servers run mod_ssl with a certificate for 127.0.0.1 made by the test
(t/tlshelp.py), mod_auth_basic with a bcrypt htpasswd file (alice is
admitted, bob is a valid user who is not), or client-certificate
authentication (SSLVerifyClient require, `Require expr` on the subject CN).
A rejected request must never reach the module: nothing stored, nothing
spooled, no STOWRS log line, and with `Expect: 100-continue` no 100 and the
body never sent. The examples in conf/stowrs-tls.conf are checked with
`apache2 -t` and then run.
"""

import re
import ssl
import subprocess
import time
import types

import pytest

import dicomgen
import helpers_dicom as hd
import mime
import tlshelp
from stowrs_env import LOCATION, REPO, STOW_PATH, module_path

# Debian's mod_ssl warns at every start when the libssl3 installed is older
# than the one it was built against (AH01882), a state of the machine.
SSL_START = "AH01882"
# The event MPM logs these when a TLS client closes while httpd lingers
# on the connection (the tests do that on purpose); they are httpd's, not
# the module's, and come and go with timing.
EVENT_CLOSE = ("AH03092", "AH03093")
# authz_core: "user bob: authorization failure" / "client denied by server
# configuration" (Require expr); auth_basic: password mismatch
AUTHZ_USER = "AH01631"
AUTHZ_DENIED = "AH01630"
PASSWORD_MISMATCH = "AH01617"

ALICE = ("alice", "alice-Pw-7f3a")   # admitted by `Require user alice`
BOB = ("bob", "bob-Pw-91c2")         # a valid user, not admitted
REALM = "STOW-RS DCM4CHEE"
EXAMPLE = REPO / "conf" / "stowrs-tls.conf"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pki(new_workdir):
    d = new_workdir("tls-pki")
    p = tlshelp.make_pki(d / "pki")
    p.htpasswd = tlshelp.make_htpasswd(d / "stowrs.htpasswd", dict([ALICE, BOB]))
    return p


def basic_auth_conf(pki, forbidden_on_failure=True):
    """TLS for the whole server, and Basic authentication on the STOW-RS
    location: a second <Location> for the same path, after the LoadModule
    lines (the harness's own <Location> comes before conf_extra)."""
    return tlshelp.ssl_server_conf(pki) + """
<Location "%s">
    AuthType Basic
    AuthName "%s"
    AuthBasicProvider file
    AuthUserFile "%s"
    Require user alice
    %s
</Location>
""" % (LOCATION, REALM, pki.htpasswd,
       "AuthzSendForbiddenOnFailure On" if forbidden_on_failure else "")


@pytest.fixture
def basic_srv(make_httpd, pki):
    return make_httpd(conf_extra=basic_auth_conf(pki))


def cert_auth_conf(pki):
    return tlshelp.ssl_server_conf(pki, verify_client=True) + """
<Location "%s">
    Require expr %%{SSL_CLIENT_S_DN_CN} == 'modality1'
</Location>
""" % LOCATION


@pytest.fixture
def cert_srv(make_httpd, pki):
    return make_httpd(conf_extra=cert_auth_conf(pki))


@pytest.fixture
def conf_httpd(new_workdir, request):
    """Factory for tlshelp.ConfHttpd servers, stopped at teardown."""
    made = []

    def factory(render, start=True):
        h = tlshelp.ConfHttpd(new_workdir(request.node.name), render)
        made.append(h)
        if start:
            h.start()
        return h

    yield factory
    for h in made:
        h.stop()


def https(port):
    """What helpers_dicom.check_answer needs of a server: its base URL."""
    return types.SimpleNamespace(base_url="https://127.0.0.1:%d" % port)


def ct(rows=16, cols=16, **kw):
    return dicomgen.ct_image(rows=rows, cols=cols, **kw)


def wait_access_log(h, pattern, timeout=5.0):
    """The example's access log (written after the answer is sent) gets a
    line matching @pattern. @return the log text"""
    path = h.workdir / "stowrs_access.log"
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if re.search(pattern, text) or time.monotonic() > deadline:
            return text


def stowrs_lines(h, since):
    return [l for l in h.error_log_lines_since(since) if "STOWRS0" in l]


def assert_untouched(h, since):
    """A rejected request did not reach the module: nothing stored, no
    spool file, no STOWRS log line."""
    assert h.all_archive_files() == [], h.all_archive_files()
    assert h.wait_spool_empty() == []
    assert stowrs_lines(h, since) == []


def assert_stored_over_tls(h, port, resp, data, uids):
    r = hd.check_answer(https(port), resp, 200, stored=[uids])
    assert r["retrieve_url"].startswith("https://127.0.0.1:%d/" % port), r["retrieve_url"]
    for item in r["referenced"]:
        assert item["retrieve_url"].startswith("https://"), item
    h.assert_stored(data, uids)


# ---------------------------------------------------------------- Basic authentication
@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_01_no_credentials_401_before_the_body(basic_srv, pki):
    h = basic_srv
    data, uids = ct()
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), mime.dicom_body([data]),
                     expect_continue=True, check_close=True)
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == 'Basic realm="%s"' % REALM, r.headers
    # answered before the body: no 100 Continue, body never written, and
    # the connection closed since the declared body was not read
    assert not r.got_continue and r.interim == [], r.interim
    assert not r.body_sent
    assert r.sock_closed_after is True
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_02_no_credentials_without_expect(basic_srv, pki):
    """A client without Expect: 100-continue sends the body anyway; httpd
    answers 401 and the module never sees it."""
    h = basic_srv
    datas = [ct(rows=256, cols=256)[0] for _ in range(4)]   # ~0.5 MiB
    body = mime.dicom_body(datas)
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), body)
    assert r.body_sent and r.send_error is None
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == 'Basic realm="%s"' % REALM
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_03_without_expect_httpd_waits_for_the_body(basic_srv, pki):
    """What conf/stowrs-tls.conf says: without Expect: 100-continue, httpd
    reads (and throws away) the declared body before it answers 401, so an
    unauthenticated client can make it read up to LimitRequestBody."""
    h = basic_srv
    body = mime.dicom_body([ct()[0]])
    ctx = tlshelp.client_context(pki)
    mark = h.mark()
    r = tlshelp.stow(h.port, ctx, body, send_body=False, continue_wait=2.0)
    assert r.status is None, "httpd answered before the body: %r" % r
    # the same request with Expect is answered at once
    t0 = time.monotonic()
    r = tlshelp.stow(h.port, ctx, body, send_body=False, expect_continue=True,
                     continue_wait=10.0)
    assert r.status == 401, r
    assert time.monotonic() - t0 < 5
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, PASSWORD_MISMATCH)
def test_700_04_wrong_password_401(basic_srv, pki):
    h = basic_srv
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), mime.dicom_body([ct()[0]]),
                     auth=("alice", "not-the-password"), expect_continue=True)
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == 'Basic realm="%s"' % REALM
    assert not r.got_continue and not r.body_sent
    assert_untouched(h, mark)
    assert h.wait_log(PASSWORD_MISMATCH, since=mark), "no %s line" % PASSWORD_MISMATCH


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, AUTHZ_USER)
@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
def test_700_05_user_not_admitted_403(basic_srv, pki, expect):
    h = basic_srv
    data, uids = ct()
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), mime.dicom_body([data]),
                     auth=BOB, expect_continue=expect)
    assert r.status == 403, r
    assert r.header("WWW-Authenticate") is None, r.headers
    assert not r.got_continue
    assert r.body_sent is (not expect)
    h.assert_not_stored(uids)
    assert_untouched(h, mark)
    assert h.wait_log(AUTHZ_USER, since=mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, AUTHZ_USER)
def test_700_06_without_forbidden_on_failure_it_is_401(make_httpd, pki):
    """Why the example sets AuthzSendForbiddenOnFailure On: by default
    httpd answers a valid user whom Require does not admit with 401, as it
    does a wrong password."""
    h = make_httpd(conf_extra=basic_auth_conf(pki, forbidden_on_failure=False))
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), mime.dicom_body([ct()[0]]),
                     auth=BOB, expect_continue=True)
    assert r.status == 401, r
    assert r.header("WWW-Authenticate") == 'Basic realm="%s"' % REALM
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
def test_700_07_admitted_user_stores_over_tls(basic_srv, pki, expect):
    h = basic_srv
    data, uids = ct()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki), mime.dicom_body([data]),
                     auth=ALICE, expect_continue=expect)
    assert r.got_continue is expect
    assert_stored_over_tls(h, h.port, r, data, uids)
    assert h.wait_log("STOWRS0202")
    assert h.wait_spool_empty() == []


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_08_admitted_user_several_instances_json(basic_srv, pki):
    """More than one part and a JSON answer, over TLS: the module's output
    goes through mod_ssl's filters unchanged."""
    h = basic_srv
    study = dicomgen.uid()
    items = [ct(study=study, rows=128, cols=128) for _ in range(3)]
    r = tlshelp.stow(h.port, tlshelp.client_context(pki),
                     mime.dicom_body([d for d, _ in items]), auth=ALICE,
                     headers=[("Accept", "application/dicom+json")])
    assert r.header("Content-Type") == "application/dicom+json"
    parsed = hd.check_answer(https(h.port), r, 200, stored=[u for _, u in items])
    assert parsed["retrieve_url"] == "https://127.0.0.1:%d%s/studies/%s" % (
        h.port, LOCATION, study)
    for d, u in items:
        h.assert_stored(d, u)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_09_plain_http_to_the_tls_port_400(basic_srv):
    h = basic_srv
    data, uids = ct()
    body = mime.dicom_body([data])
    mark = h.mark()
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (STOW_PATH, h.port, tlshelp.basic(*ALICE), mime.content_type("myboundary"),
               len(body)))
    out = mime.send_raw(h.port, head.encode("latin-1") + body, timeout=10)
    assert re.match(rb"HTTP/1\.[01] 400 ", out), out[:200]
    assert b"plain HTTP" in out, out
    h.assert_not_stored(uids)
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
def test_700_10_curl_over_https_with_basic_auth(basic_srv, pki, new_workdir):
    """The README's curl command, with https, --cacert and -u: no
    credentials -> 401, alice -> 200 and stored."""
    h = basic_srv
    data, uids = ct(rows=64, cols=64)
    body_file = new_workdir("tls-curl") / "body"
    body_file.write_bytes(mime.dicom_body([data]))
    base = ["curl", "-sS", "--cacert", str(pki.ca), "-X", "POST",
            "-H", "Content-Type: " + mime.content_type("myboundary"),
            "--data-binary", "@%s" % body_file, "-o", "-", "-w", "\n%{http_code}",
            "https://127.0.0.1:%d%s" % (h.port, STOW_PATH)]
    r = subprocess.run(base, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rsplit(b"\n", 1)[1] == b"401", r.stdout[-300:]
    h.assert_not_stored(uids)
    r = subprocess.run(base[:1] + ["-u", "%s:%s" % ALICE] + base[1:],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    xml, code = r.stdout.rsplit(b"\n", 1)
    assert code == b"200", r.stdout[-300:]
    assert b">https://127.0.0.1:%d%s/studies/%s<" % (
        h.port, LOCATION.encode(), uids["study"].encode()) in xml, xml
    h.assert_stored(data, uids)


# ---------------------------------------------------------------- client certificates
TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def ctx_version(pki, cert, version):
    ctx = tlshelp.client_context(pki, cert)
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("who", ["no-cert", "untrusted-ca"])
def test_700_11_client_certificate_required(cert_srv, pki, version, who):
    """No certificate, or one from a CA the server does not trust: the
    handshake fails (under TLS 1.3 the client learns it at its first read)
    and no HTTP answer comes at all."""
    h = cert_srv
    data, uids = ct()
    cert = None if who == "no-cert" else pki.rogue
    mark = h.mark()
    with pytest.raises((ssl.SSLError, ConnectionError)) as e:
        tlshelp.stow(h.port, ctx_version(pki, cert, version), mime.dicom_body([data]),
                     expect_continue=True)
    if version == ssl.TLSVersion.TLSv1_3:
        want = "CERTIFICATE_REQUIRED" if who == "no-cert" else "UNKNOWN_CA"
        assert want in str(e.value), e.value
    h.assert_not_stored(uids)
    assert_untouched(h, mark)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START)
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_700_12_client_certificate_stores(cert_srv, pki, version):
    h = cert_srv
    data, uids = ct(rows=128, cols=128)
    r = tlshelp.stow(h.port, ctx_version(pki, pki.client("modality1"), version),
                     mime.dicom_body([data]), expect_continue=True)
    assert r.got_continue
    assert_stored_over_tls(h, h.port, r, data, uids)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, AUTHZ_DENIED)
@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
def test_700_13_require_expr_on_the_common_name(cert_srv, pki, expect):
    """A certificate from the trusted CA with CN=other passes the handshake
    but not `Require expr %{SSL_CLIENT_S_DN_CN} == 'modality1'`: 403."""
    h = cert_srv
    data, uids = ct()
    mark = h.mark()
    r = tlshelp.stow(h.port, tlshelp.client_context(pki, pki.client("other")),
                     mime.dicom_body([data]), expect_continue=expect)
    assert r.status == 403, r
    assert not r.got_continue
    assert r.body_sent is (not expect)
    h.assert_not_stored(uids)
    assert_untouched(h, mark)
    assert h.wait_log(AUTHZ_DENIED, since=mark)
    # the admitted name still stores on the same server
    r = tlshelp.stow(h.port, tlshelp.client_context(pki, pki.client("modality1")),
                     mime.dicom_body([data]), expect_continue=expect)
    assert_stored_over_tls(h, h.port, r, data, uids)


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, "AH02018", "AH02257", "AH10228")
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_700_14_location_level_verify_client_buffers_the_body(make_httpd, pki, version):
    """Why the example sets SSLVerifyClient for a whole virtual host: in a
    <Location>, mod_ssl asks for the certificate after the request arrived
    (renegotiation, TLS 1.3 post-handshake authentication) and buffers the
    body for it, up to SSLRenegBufferSize (128 KiB): a small request
    stores, a larger one gets 413 and never reaches the module."""
    conf = tlshelp.ssl_server_conf(pki) + """
SSLCACertificateFile "%s"
<Location "%s">
    SSLVerifyClient require
</Location>
""" % (pki.ca, LOCATION)
    h = make_httpd(conf_extra=conf)
    ctx = ctx_version(pki, pki.client("modality1"), version)
    ctx.post_handshake_auth = True
    small, small_uids = ct(rows=64, cols=64)
    r = tlshelp.stow(h.port, ctx, mime.dicom_body([small]))
    assert_stored_over_tls(h, h.port, r, small, small_uids)
    big, big_uids = ct(rows=512, cols=512)       # 512 KiB of pixels
    mark = h.mark()
    r = tlshelp.stow(h.port, ctx, mime.dicom_body([big]))
    assert r.status == 413, r
    h.assert_not_stored(big_uids)
    assert stowrs_lines(h, mark) == []
    assert h.wait_log("AH02018", since=mark)


# ---------------------------------------------------------------- conf/stowrs-tls.conf
def example_text(h, pki, port, port2):
    """conf/stowrs-tls.conf made runnable here: every path and port it
    names replaced by the test's, each of which must be in the file."""
    text = EXAMPLE.read_text()
    subst = [
        ("/usr/lib/apache2/modules/mod_stowrs.so", module_path()),
        ("/etc/ssl/certs/pacs.example.org.pem", str(pki.server)),
        ("/etc/ssl/private/pacs.example.org.key", str(pki.server_key)),
        ("/etc/ssl/certs/stowrs-clients-ca.pem", str(pki.ca)),
        ("/etc/apache2/stowrs.htpasswd", str(pki.htpasswd)),
        ("/var/lib/stowrs/DCM4CHEE", str(h.archive)),
        ("<VirtualHost *:443>", "<VirtualHost 127.0.0.1:%d>" % port),
        ("Listen 8443", "Listen 127.0.0.1:%d" % port2),
        ("<VirtualHost *:8443>", "<VirtualHost 127.0.0.1:%d>" % port2),
        ("ServerName pacs.example.org", "ServerName 127.0.0.1"),
    ]
    for old, new in subst:
        assert old in text, "%s no longer names %r: update this test" % (EXAMPLE, old)
        text = text.replace(old, new)
    # what Debian's ports.conf gives when mod_ssl is enabled
    listen = "Listen 127.0.0.1:%d\n" % port
    return h.preamble(("socache_shmcb", "ssl") + tlshelp.AUTH_MODULES) + listen + text


def example_server(conf_httpd, pki, start=True):
    return conf_httpd(lambda h: example_text(h, pki, h.port, h.port2), start=start)


def test_700_20_example_tls_conf_syntax_ok(conf_httpd, pki):
    h = example_server(conf_httpd, pki, start=False)
    text = h.config_text()
    assert "ServerRoot" in text
    rc, out = h.config_test(text)
    assert rc == 0, out + "\n" + text
    assert "Syntax OK" in out, out
    # and a mistake in it is caught (the check is not vacuous)
    rc, out = h.config_test(text.replace("AuthUserFile", "AuthUserFiel", 1))
    assert rc != 0 and "AuthUserFiel" in out, out


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, AUTHZ_USER)
def test_700_21_example_basic_auth_vhost(conf_httpd, pki):
    h = example_server(conf_httpd, pki)
    ctx = tlshelp.client_context(pki)
    data, uids = ct()
    body = mime.dicom_body([data])
    mark = h.mark()
    r = tlshelp.stow(h.port, ctx, body, expect_continue=True)
    assert r.status == 401 and not r.got_continue and not r.body_sent, r
    assert r.header("WWW-Authenticate") == 'Basic realm="%s"' % REALM
    r = tlshelp.stow(h.port, ctx, body, auth=BOB, expect_continue=True)
    assert r.status == 403 and not r.got_continue and not r.body_sent, r
    assert_untouched(h, mark)
    # a client certificate does not open the password vhost
    r = tlshelp.stow(h.port, tlshelp.client_context(pki, pki.client("modality1")), body)
    assert r.status == 401, r
    h.assert_not_stored(uids)
    r = tlshelp.stow(h.port, ctx, body, auth=ALICE, expect_continue=True)
    assert r.got_continue
    assert_stored_over_tls(h, h.port, r, data, uids)
    # the access log of the example names the user
    pattern = r" alice .* 200 \d+ stored=1 failed=0 cert=- "
    log = wait_access_log(h, pattern)
    assert re.search(pattern, log), log


@pytest.mark.expect_log(*EVENT_CLOSE, SSL_START, AUTHZ_DENIED)
def test_700_22_example_client_certificate_vhost(conf_httpd, pki):
    h = example_server(conf_httpd, pki)
    data, uids = ct()
    body = mime.dicom_body([data])
    mark = h.mark()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tlshelp.stow(h.port2, tlshelp.client_context(pki), body, expect_continue=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tlshelp.stow(h.port2, tlshelp.client_context(pki, pki.rogue), body,
                     expect_continue=True)
    # Basic credentials do not replace the certificate there
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tlshelp.stow(h.port2, tlshelp.client_context(pki), body, auth=ALICE)
    r = tlshelp.stow(h.port2, tlshelp.client_context(pki, pki.client("other")), body,
                     expect_continue=True)
    assert r.status == 403 and not r.got_continue and not r.body_sent, r
    assert_untouched(h, mark)
    r = tlshelp.stow(h.port2, tlshelp.client_context(pki, pki.client("modality1")), body,
                     expect_continue=True)
    assert r.got_continue
    assert_stored_over_tls(h, h.port2, r, data, uids)
    pattern = r" - .* 200 \d+ stored=1 failed=0 cert=modality1 "
    log = wait_access_log(h, pattern)
    assert re.search(pattern, log), log


def test_700_23_pki_is_what_the_tests_claim(pki):
    """The generated certificates: the server's names 127.0.0.1 as an IP
    SAN, the clients chain to the CA, the rogue one does not."""
    def openssl(*args):
        return subprocess.run(["openssl"] + list(args), capture_output=True, text=True,
                              timeout=60)
    out = openssl("x509", "-in", str(pki.server), "-noout", "-ext", "subjectAltName").stdout
    assert "IP Address:127.0.0.1" in out, out
    for cn in ("modality1", "other"):
        cert = pki.client(cn)[0]
        assert openssl("verify", "-CAfile", str(pki.ca), str(cert)).returncode == 0
        subj = openssl("x509", "-in", str(cert), "-noout", "-subject").stdout
        assert subj.strip().endswith("CN = %s" % cn), subj
    assert openssl("verify", "-CAfile", str(pki.ca), str(pki.rogue[0])).returncode != 0
    line = [l for l in pki.htpasswd.read_text().splitlines() if l.startswith("alice:")]
    assert line and line[0].split(":", 1)[1].startswith("$2y$"), line  # bcrypt
