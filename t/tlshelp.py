"""HTTPS and authentication for the integration tests (test_700_tls_auth).

- make_pki(dir): a test CA, a server certificate for 127.0.0.1 (SAN
  IP:127.0.0.1) and client certificates, made with the openssl CLI
- make_htpasswd(path, users): a bcrypt htpasswd file made with htpasswd(1)
- ssl_server_conf(pki): conf_extra that loads mod_ssl,
  mod_socache_shmcb and the Basic-auth modules and turns TLS on for the
  whole server, so that the harness's one listener speaks TLS
- ConfHttpd: a harness server run on a configuration of one's own (the
  examples in conf/)
- client_context(pki, cert=None): an ssl.SSLContext that trusts the test CA
  and optionally presents a client certificate
- send()/stow(): mime.send's HTTP/1.1 over TLS, one connection per request.
  Unlike mime.send it writes the body from the calling thread (an SSL
  connection must not be read and written from two threads at once), so a
  request is: head, [wait for 100 Continue or the final answer], body,
  answer.
"""

import base64
import pathlib
import secrets
import socket
import ssl
import subprocess
import time

import mime
from stowrs_env import (RUN_GROUP, RUN_USER, STOW_PATH, Httpd, free_port, is_root,
                        libexecdir)

OPENSSL = "openssl"
HTPASSWD = "htpasswd"


# ---------------------------------------------------------------- PKI
class Pki:
    """Paths of the generated files: ca, ca_key, server, server_key,
    clients {cn: (cert, key)}, rogue (a client certificate from another CA)."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.clients = {}

    def client(self, cn):
        return self.clients[cn]


def _openssl(*args, cwd):
    r = subprocess.run([OPENSSL] + list(args), cwd=str(cwd), capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(d, name, cn):
    _openssl("req", "-x509", *_EC, "-keyout", name + ".key", "-out", name + ".pem",
             "-days", "3", "-subj", "/CN=%s" % cn,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / (name + ".pem"), d / (name + ".key")


def _make_leaf(d, name, subject, ca, ca_key, ext):
    (d / (name + ".ext")).write_text(ext)
    _openssl("req", *_EC, "-keyout", name + ".key", "-out", name + ".csr",
             "-subj", subject, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", str(ca), "-CAkey", str(ca_key),
             "-set_serial", str(secrets.randbits(62) + 1),
             "-out", name + ".pem", "-days", "3", "-extfile", name + ".ext", cwd=d)
    return d / (name + ".pem"), d / (name + ".key")


def make_pki(root, client_cns=("modality1", "other")):
    """CA, server certificate for 127.0.0.1 and one client certificate per
    CN in @client_cns, all signed by the CA; plus `rogue`, a client
    certificate with CN modality1 signed by a CA the server does not trust.
    Files are world-readable: httpd reads them as root, or as the test
    user when the tests do not run as root."""
    d = pathlib.Path(root)
    d.mkdir(parents=True, exist_ok=True)
    p = Pki(d)
    p.ca, p.ca_key = _make_ca(d, "ca", "mod_stowrs test CA")
    p.server, p.server_key = _make_leaf(
        d, "server", "/CN=127.0.0.1", p.ca, p.ca_key,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n")
    client_ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=clientAuth\n")
    for cn in client_cns:
        p.clients[cn] = _make_leaf(d, "client-" + cn, "/O=Hospital/CN=%s" % cn,
                                   p.ca, p.ca_key, client_ext)
    rogue_ca, rogue_key = _make_ca(d, "rogue-ca", "untrusted CA")
    p.rogue = _make_leaf(d, "client-rogue", "/O=Hospital/CN=modality1",
                         rogue_ca, rogue_key, client_ext)
    for f in d.iterdir():
        f.chmod(0o644)
    d.chmod(0o755)
    return p


def make_htpasswd(path, users):
    """Write @users {name: password} with `htpasswd -bB` (bcrypt)."""
    path = pathlib.Path(path)
    first = True
    for user, pw in users.items():
        args = [HTPASSWD, "-bcB" if first else "-bB", str(path), user, pw]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(args[:3]), r.stderr))
        first = False
    path.chmod(0o644)
    return path


# ---------------------------------------------------------------- httpd
AUTH_MODULES = ("auth_basic", "authn_core", "authn_file", "authz_user")


def load_modules_conf(names):
    mods = libexecdir()
    return "\n".join('LoadModule %s_module "%s/mod_%s.so"' % (n, mods, n) for n in names)


def ssl_server_conf(pki, verify_client=False):
    """conf_extra for a harness server: the modules for TLS and Basic
    authentication, and TLS for the whole server, so that its one listener
    speaks HTTPS (the harness's start-up probe, plain HTTP, then gets
    mod_ssl's 400, which is an answer). A session cache is configured since
    mod_ssl warns without one; a relative shmcb path is below
    DefaultRuntimeDir, the server's own workdir."""
    lines = [
        load_modules_conf(("socache_shmcb", "ssl") + AUTH_MODULES),
        "SSLSessionCache shmcb:ssl_scache(512000)",
        "SSLEngine on",
        'SSLCertificateFile "%s"' % pki.server,
        'SSLCertificateKeyFile "%s"' % pki.server_key,
    ]
    if verify_client:
        lines += ["SSLVerifyClient require", "SSLVerifyDepth 2",
                  'SSLCACertificateFile "%s"' % pki.ca]
    return "\n".join(lines) + "\n"


class ConfHttpd(Httpd):
    """A server whose whole configuration is preamble() plus a text (an
    example from conf/ with its paths and ports substituted), instead of the
    harness's generated one. @render(self) returns that text; it is called
    at every start, after the port may have changed. self.port is the port
    the start-up probe uses, self.port2 a second free port."""

    def __init__(self, workdir, render, **kw):
        super().__init__(workdir, **kw)
        self.port2 = free_port()
        self.render = render

    def config_text(self, conf_extra=None, location_conf=None):
        return self.render(self)

    def preamble(self, modules=()):
        """Server-wide lines a Debian apache2.conf and mods-enabled/ would
        give: paths, logs, MPM, modules, APACHE_LOG_DIR, session cache."""
        mods = libexecdir()
        lines = [
            "# generated by t/tlshelp.py",
            'ServerRoot "%s"' % self.workdir,
            "ServerName 127.0.0.1",
            'PidFile "%s"' % self.pid_file,
            'DefaultRuntimeDir "%s"' % self.workdir,
            'ErrorLog "%s"' % self.error_log,
            "LogLevel %s" % self.log_level,
            'Define APACHE_LOG_DIR "%s"' % self.workdir,
            'LoadModule mpm_%s_module "%s/mod_mpm_%s.so"' % (self.mpm, mods, self.mpm),
            load_modules_conf(("authz_core",) + tuple(modules)),
            'DocumentRoot "%s"' % self.workdir,
            "Timeout 60",
            "SSLSessionCache shmcb:ssl_scache(512000)" if "ssl" in modules else "",
        ]
        if is_root():
            lines += ["User %s" % RUN_USER, "Group %s" % RUN_GROUP]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- client
def client_context(pki, cert=None):
    """TLS client context trusting only the test CA; @cert (cert, key)
    to present a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca))
    ctx.check_hostname = True
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def connect(port, ctx, host="127.0.0.1", timeout=30):
    """A TLS connection to @port; raises ssl.SSLError if the handshake fails."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def send(port, method, path, ctx, headers=None, body=None, expect_continue=False,
         send_body=True, timeout=30, host="127.0.0.1", continue_wait=3.0,
         check_close=False):
    """One HTTP/1.1 request over TLS on a fresh connection; @return a
    mime.Response, with sock_closed_after when @check_close (see _closes).

    @param body bytes or None; Content-Length is always declared
    @param send_body False: declare the body but never write it, and wait
           at most @continue_wait seconds for an answer; status stays None
           if none came (the server waits for the body)
    @param expect_continue send "Expect: 100-continue" and write the body
           only after 100 Continue (or @continue_wait seconds of silence);
           a final answer first means the body is not written
    """
    hdrs = mime._header_items(headers) if headers is not None else []
    names = {n.lower() for n, _ in hdrs}
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    if "host" not in names:
        head += "Host: %s:%d\r\n" % (host, port)
    for n, v in hdrs:
        head += "%s: %s\r\n" % (n, v)
    if body is not None and "content-length" not in names:
        head += "Content-Length: %d\r\n" % len(body)
    if expect_continue and "expect" not in names:
        head += "Expect: 100-continue\r\n"
    head += "\r\n"

    resp = mime.Response()
    resp.sock_closed_after = None
    sock = connect(port, ctx, host, timeout)
    reader = mime._Reader(sock)
    try:
        sock.sendall(head.encode("latin-1"))
        write = body is not None and send_body
        if body is not None and (expect_continue or not send_body):
            ready = _wait_data(sock, reader, continue_wait)
            sock.settimeout(timeout)
            if not ready and not send_body:
                return resp
            if ready:
                version, status, reason, hs = mime._read_head(reader)
                if status == 100:
                    resp.got_continue = True
                    resp.interim.append(status)
                else:
                    resp.version, resp.status, resp.reason, resp.headers = \
                        version, status, reason, hs
                    write = False
        if write:
            try:
                sock.sendall(body)
                resp.body_sent = True
            except OSError as e:
                resp.send_error = e
        while resp.status is None:
            version, status, reason, hs = mime._read_head(reader)
            if 100 <= status < 200:
                resp.interim.append(status)
                resp.got_continue = resp.got_continue or status == 100
                continue
            resp.version, resp.status, resp.reason, resp.headers = \
                version, status, reason, hs
        resp.body = mime._read_body(reader, resp, method)
        if check_close:
            resp.sock_closed_after = _closes(sock, reader)
    finally:
        try:
            sock.close()
        except OSError:
            pass
    return resp


def _wait_data(sock, reader, seconds):
    """Whether the server sends something (or closes) within @seconds.
    select() will not do: under TLS 1.3 the socket turns readable for
    session tickets that carry no application data."""
    deadline = time.monotonic() + seconds
    while not reader.buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not reader._fill():
                return True
        except (socket.timeout, TimeoutError):
            return False
    return True


def _closes(sock, reader):
    """The server closes the connection (EOF or reset) within 5 s."""
    if reader.buf:
        return False
    sock.settimeout(5)
    try:
        return not sock.recv(1)
    except (socket.timeout, TimeoutError):
        return False
    except OSError:  # ssl.SSLError included
        return True


def stow(port, ctx, body, boundary="myboundary", path=STOW_PATH, auth=None,
         headers=None, **kw):
    """POST a multipart/related body over TLS; @auth (user, password)."""
    hdrs = [("Content-Type", mime.content_type(boundary))]
    if auth is not None:
        hdrs.append(("Authorization", basic(*auth)))
    hdrs += mime._header_items(headers) if headers else []
    return send(port, "POST", path, ctx, hdrs, body, **kw)
