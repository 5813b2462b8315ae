"""S3Wire: the GetObject and small PutObject requests the tool signs and sends itself, and
how it hands every request it cannot finish back to boto3.

Against the real S3 server (SeaweedFS checks every signature), directly, behind the tests'
flaky proxy (which records what arrives and can answer in its place), and behind a TLS
proxy made here.
"""

import calendar
import datetime
import hashlib
import os
import socket
import ssl
import threading
from types import SimpleNamespace
from unittest import mock

import botocore.endpoint
import pytest
from botocore.credentials import Credentials
from conftest import esb, s3_config
from flaky_proxy import FlakyProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def storage_at(bucket, **overrides):
    storage = esb.S3Storage(s3_config(bucket, **overrides))
    storage.prepare(create=True)
    return storage


def store(storage, key, data):
    storage.store(key.rpartition("/")[0], lambda sink: sink.write(data), lambda _: key)


def read(storage, key):
    with storage.open(key) as stream:
        return stream.read()


def handed_over():
    """Whether boto3's attempt about to be sent in this thread is the wire's, handed over
    (answered with what the wire got, not sent)."""
    handover = getattr(esb._WireHandover.mine, "handover", None)
    return handover is not None and handover.taken


def boto3_sends(storage):
    """The requests the storage's boto3 client sends from now on: [(method, url)] (not the
    wire's attempts it is handed over)."""
    sent = []

    def record(request, **_):
        if not handed_over():
            sent.append((request.method, request.url))
    storage.client.meta.events.register_first("before-send.s3", record)
    return sent


@pytest.fixture
def proxy(s3_bucket):
    """The server behind a flaky proxy with no faults unless ``proxy.plan`` asks for them:
    {method: [fault, ...]} used up first come, first served; ``proxy.seen`` records."""
    seen, plan = [], {}

    def choose(request):
        seen.append(request)
        faults = plan.get(request.method.decode(), [])
        return faults.pop(0) if faults else None

    with FlakyProxy(s3_bucket.endpoint_url, choose=choose) as flaky:
        flaky.seen, flaky.plan = seen, plan
        yield flaky


# ---------------------------------------------------------------------------- signing

def test_the_signature_is_aws_own_example():
    """The GET Object example of AWS's Signature Version 4 documentation ("Examples of
    signature calculations", authenticating requests in the Authorization header):
    its published signature."""
    wire = esb.S3Wire("https://examplebucket.s3.amazonaws.com/", "us-east-1",
                      Credentials("AKIAIOSFODNN7EXAMPLE",
                                  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), (1, 1))
    moment = calendar.timegm(datetime.datetime(2013, 5, 24).timetuple())
    headers = wire.signed("GET", wire.path("test.txt"), esb._EMPTY_SHA256,
                          {"range": "bytes=0-9"}, now=moment)
    assert headers["x-amz-date"] == "20130524T000000Z"
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_keys_are_encoded_once_as_s3_wants():
    wire = esb.S3Wire("http://127.0.0.1:1/bucket/", "us-east-1", None, (1, 1))
    assert wire.path("a b/\u00fc~+K%.enc") == "/bucket/a%20b/%C3%BC~%2BK%25.enc"


def test_a_session_token_is_sent_and_signed():
    wire = esb.S3Wire("http://h/b/", "r", Credentials("AK", "SK", "the-token"), (1, 1))
    headers = wire.signed("GET", "/b/k", esb._EMPTY_SHA256, {})
    assert headers["x-amz-security-token"] == "the-token"
    assert "x-amz-security-token" in headers["authorization"].split("SignedHeaders=")[1]


# Keys as a backup names them and as anything else might: any text S3 can hold (no lone
# surrogates), spaces, reserved and percent signs, non-ASCII; header values as the wire sends
# them (no leading, trailing or repeated spaces: storage classes, lock modes, dates).
KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40) | \
    st.text(st.sampled_from(list("aZ09 -_.~/!*'()&$+,;=:@%?#[]\u00fc\u4e2d\U0001f600")),
            min_size=1, max_size=40)
HEADER_VALUES = st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                                 min_size=1, max_size=12), min_size=1, max_size=3).map(" ".join)
HEADERS = st.dictionaries(
    st.sampled_from(["content-md5", "x-amz-storage-class", "x-amz-object-lock-mode",
                     "x-amz-object-lock-retain-until-date", "range", "x-amz-meta-a"]),
    HEADER_VALUES, max_size=4)
TOKENS = st.none() | st.text(st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), min_size=1,
    max_size=300)


def at_moment(when):
    """botocore's signer's clock stopped at ``when`` (naive UTC): get_current_datetime in
    its auth module in newer versions (1.44), datetime.datetime.utcnow in older (1.36)."""
    import botocore.auth
    if hasattr(botocore.auth, "get_current_datetime"):
        return mock.patch("botocore.auth.get_current_datetime", return_value=when)
    clock = mock.Mock(wraps=datetime)
    clock.datetime = mock.Mock(wraps=datetime.datetime)
    clock.datetime.utcnow.return_value = when
    return mock.patch("botocore.auth.datetime", clock)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, headers=HEADERS, token=TOKENS, https=st.booleans(),
       body=st.none() | st.binary(max_size=64), moment=st.integers(0, 4_000_000_000))
def test_our_signature_is_botocores(key, headers, token, https, body, moment):
    """Differential: the same request signed by the wire and by botocore's own S3 signer
    (S3SigV4Auth) at the same moment has the same Authorization header, and the key's path
    is the one botocore puts in its URL."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.utils import percent_encode
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    base = ("https" if https else "http") + "://s3.eu-west-3.amazonaws.com/the-bucket/"
    wire = esb.S3Wire(base, "eu-west-3", credentials, (1, 1))
    path = wire.path(key)
    assert path == "/the-bucket/" + percent_encode(key, safe="/~")
    method = "PUT" if body is not None else "GET"
    payload = "UNSIGNED-PAYLOAD" if https else hashlib.sha256(body or b"").hexdigest()
    ours = wire.signed(method, path, payload, headers, now=moment)
    when = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).replace(tzinfo=None)
    request = AWSRequest(method, wire.url(path), data=body, headers=dict(headers))
    # over HTTPS the wire leaves the body unsigned, as boto3 does for a PutObject with its
    # Content-MD5 (and S3 allows for any request)
    request.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": not https})
    with at_moment(when):
        S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]


# ---------------------------------------------------------------------------- requests

def test_small_puts_and_every_get_go_through_the_wire(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url, base_path="base")
    assert storage.wire is not None
    by_boto3 = boto3_sends(storage)
    esb.take_requests()
    store(storage, "d\u00fcr/a b.enc", b"small")
    assert read(storage, "d\u00fcr/a b.enc") == b"small"
    big = bytes(range(256)) * (esb.WIRE_BODY_MAX // 256)
    store(storage, "big.enc", big)                          # too big for the wire: boto3's
    assert read(storage, "big.enc") == big                  # any size
    assert [method for method, _ in by_boto3] == ["PUT"]
    assert esb.take_requests() == {"PUT": 2, "GET": 2, "attempts": 4}
    small_put = next(r for r in proxy.seen if r.method == b"PUT")
    assert small_put.target == b"/" + s3_bucket.name.encode() + b"/base/d%C3%BCr/a%20b.enc"
    assert small_put.header(b"Expect") is None and small_put.header(b"Content-MD5")
    assert s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="base/d\u00fcr/a b.enc"
                                       )["Body"].read() == b"small"


def test_a_storage_class_is_sent(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url,
                         storage_class="STANDARD")
    store(storage, "k.enc", b"x")
    put = next(r for r in proxy.seen if r.method == b"PUT")
    assert put.header(b"x-amz-storage-class") == b"STANDARD"
    assert b"User-Agent: Boto3" not in put.raw_head                    # the wire's


@pytest.mark.parametrize("fault", ["slowdown", "error500", "drop", "reset"])
def test_a_failed_put_is_made_again_by_boto3_and_the_wire_stays_on(s3_bucket, proxy, fault):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    by_boto3 = boto3_sends(storage)
    esb.take_requests()
    proxy.plan["PUT"] = [fault]
    store(storage, "k.enc", b"data")
    assert len(by_boto3) == 1 and storage.wire is not None
    assert esb.take_requests() == {"PUT": 1, "attempts": 2}
    store(storage, "k2.enc", b"more")
    assert len(by_boto3) == 1                                   # the wire again
    assert read(storage, "k.enc") == b"data" and read(storage, "k2.enc") == b"more"


def test_a_failed_get_is_made_again_by_boto3(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    store(storage, "k.enc", b"data")
    by_boto3 = boto3_sends(storage)
    proxy.plan["GET"] = ["slowdown"]
    assert read(storage, "k.enc") == b"data"
    assert [method for method, _ in by_boto3] == ["GET"] and storage.wire is not None


@pytest.fixture
def backoffs(monkeypatch):
    """The delays boto3 waits before its retries, recorded instead of waited."""
    waited = []

    class Time:
        def __getattr__(self, name):
            return getattr(botocore.endpoint.__dict__["_real_time"], name)

        def sleep(self, seconds):
            waited.append(seconds)
    monkeypatch.setitem(botocore.endpoint.__dict__, "_real_time", botocore.endpoint.time)
    monkeypatch.setattr(botocore.endpoint, "time", Time())
    return waited


def arrived(proxy, method):
    return sum(request.method == method for request in proxy.seen)


@pytest.mark.parametrize("fault", ["slowdown", "error500", "drop"])
def test_a_failed_get_is_boto3s_first_attempt_and_it_backs_off(s3_bucket, proxy, backoffs,
                                                                 fault):
    """The wire's answer (or broken connection) is boto3's first attempt: boto3 waits its
    backoff before its next one, as after any of its own; nothing is sent twice."""
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    store(storage, "k.enc", b"data")
    esb.take_requests()
    proxy.plan["GET"] = [fault] * 3
    assert read(storage, "k.enc") == b"data"
    assert arrived(proxy, b"GET") == 4 and len(backoffs) == 3     # (without: 4 and 2)
    assert esb.take_requests() == {"GET": 1, "attempts": 4}
    assert storage.wire is not None


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_throttled_bucket_gets_one_retry_budget_not_a_wire_try_more(s3_bucket, proxy,
                                                                       backoffs, method):
    """503 SlowDown to every request: boto3's 11 attempts in all (max_attempts is 10
    retries), the wire's the first of them, a backoff before each of the 10 others; then
    the error of the last answer."""
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    store(storage, "k.enc", b"data")
    proxy.plan[method] = ["slowdown"] * 20
    with pytest.raises(esb.TransferError, match="^S3 error SlowDown$"):
        if method == "GET":
            read(storage, "k.enc")
        else:
            store(storage, "k2.enc", b"more")
    assert arrived(proxy, method.encode()) == 11 + (method == "PUT")   # (+ the first PUT)
    assert len(backoffs) == 10 and storage.wire is not None


def test_a_failed_get_is_worded_from_its_own_answer(s3_bucket, proxy):
    """A missing object: one GET, the wire's, whose 404 NoSuchKey boto3 reads."""
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    by_boto3 = boto3_sends(storage)
    esb.take_requests()
    with pytest.raises(esb.MissingError, match="gone.enc no longer exists"):
        storage.open("gone.enc")
    assert arrived(proxy, b"GET") == 1 and by_boto3 == []
    assert esb.take_requests() == {"GET": 1, "attempts": 1}


def test_a_key_that_cannot_be_a_path_fails_its_request_never_the_run(s3_bucket, proxy):
    """A name that is not UTF-8 (surrogates from os.fsdecode): the wire hands the request
    back, sending nothing and handing nothing over; through the storage it is that file's
    UnusableNameError, before any request."""
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    wire, odd = storage.wire, os.fsdecode(b"caf\xe9.enc")
    arrivals = len(proxy.seen)
    assert wire.put(odd, b"x", {}) is False and wire.get(odd) is None
    assert wire.on and not handed_over() and len(proxy.seen) == arrivals
    with pytest.raises(esb.UnusableNameError, match="not UTF-8"):
        store(storage, odd, b"x")
    with pytest.raises(esb.UnusableNameError, match="not UTF-8"):
        storage.open(odd)
    assert len(proxy.seen) == arrivals and storage.wire is wire
    store(storage, "k.enc", b"fine")                    # and the next file goes out
    assert read(storage, "k.enc") == b"fine"


def test_a_handover_is_for_its_own_request_only(s3_bucket, proxy, backoffs):
    """A handover answers boto3's next request in its thread when that is the same
    request, and is dropped when another one comes first: it never answers a later one."""
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    store(storage, "k.enc", b"data")
    wire, client = storage.wire, storage.client

    def get_by_boto3():
        with client.get_object(Bucket=s3_bucket.name, Key="k.enc")["Body"] as body:
            return body.read()

    def throttled():
        esb._WireHandover("GET", wire.path("k.enc"), 503, {}, b"", wire.url("/")).give()

    throttled()
    storage.stat("k.enc")                                  # a HEAD comes first: dropped
    before = arrived(proxy, b"GET")
    assert get_by_boto3() == b"data" and backoffs == []
    throttled()
    assert get_by_boto3() == b"data"           # the 503 was its first attempt, then a retry
    assert len(backoffs) == 1 and arrived(proxy, b"GET") == before + 2


def test_a_missing_object_is_missing(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    with pytest.raises(esb.MissingError, match="gone.enc no longer exists"):
        storage.open("gone.enc")
    assert storage.wire is not None


def test_a_body_cut_short_is_a_transfer_error(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    store(storage, "k.enc", b"0123456789" * 100)
    proxy.plan["GET"] = ["cut", "cut"]
    with pytest.raises(esb.TransferError, match="S3 read failed"):
        read(storage, "k.enc")
    with pytest.raises(esb.TransferError, match="S3 read failed: the connection ended"):
        with storage.open("k.enc") as stream:
            while stream.read(64):
                pass
    assert read(storage, "k.enc") == b"0123456789" * 100


def test_an_answer_it_does_not_expect_turns_the_wire_off(s3_bucket, proxy, monkeypatch):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    monkeypatch.setattr(esb, "WIRE_RETRY_STATUS", frozenset())   # a 503 is now unexpected
    by_boto3 = boto3_sends(storage)
    proxy.plan["PUT"] = ["slowdown"]
    store(storage, "k.enc", b"data")
    assert storage.wire is None and len(by_boto3) == 1
    store(storage, "k2.enc", b"more")
    assert read(storage, "k2.enc") == b"more" and len(by_boto3) == 3


def test_wrong_credentials_fail_as_before(s3_bucket):
    storage = esb.S3Storage(s3_config(s3_bucket, aws_secret_access_key="wrong"))
    with pytest.raises(esb.TransferError, match="S3 error SignatureDoesNotMatch"):
        store(storage, "k.enc", b"data")
    assert storage.wire is None


def test_a_kept_alive_connection_the_server_closed_is_replaced(s3_bucket):
    storage = storage_at(s3_bucket)
    store(storage, "k.enc", b"data")
    wire = storage.wire
    assert len(wire._idle) == 1
    wire._idle[0].sock.shutdown(socket.SHUT_RDWR)       # as if the server had closed it
    by_boto3 = boto3_sends(storage)
    store(storage, "k2.enc", b"more")
    assert by_boto3 == [] and len(wire._idle) == 1
    assert read(storage, "k2.enc") == b"more"


def test_one_connection_serves_request_after_request(s3_bucket):
    storage = storage_at(s3_bucket)
    for i in range(20):
        store(storage, f"k{i}.enc", b"%d" % i)
        assert read(storage, f"k{i}.enc") == b"%d" % i
    assert len(storage.wire._idle) == 1


def test_no_wire_behind_a_proxy_or_with_another_signature(s3_bucket, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert esb.S3Storage(s3_config(s3_bucket)).wire is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert esb.S3Storage(s3_config(s3_bucket)).wire is not None
    monkeypatch.delenv("HTTP_PROXY")
    assert esb.S3Storage(s3_config(s3_bucket, signature_version="s3")).wire is None


def test_a_botocore_without_the_parts_the_wire_reads_leaves_boto3_alone(s3_bucket,
                                                                         monkeypatch):
    import botocore.httpsession
    monkeypatch.delattr(botocore.httpsession, "get_cert_path")
    storage = storage_at(s3_bucket)
    assert storage.wire is None
    store(storage, "k.enc", b"data")
    assert read(storage, "k.enc") == b"data"


def test_the_wire_is_made_per_process_and_never_pickled(s3_bucket):
    import pickle
    storage = storage_at(s3_bucket)
    assert storage.wire is not None
    copy = pickle.loads(pickle.dumps(storage))
    assert copy._wire is None and copy._client is None
    store(copy, "k.enc", b"x")
    assert copy.wire is not storage.wire


# ---------------------------------------------------------------------------- HTTPS

class TlsProxy:
    """https://127.0.0.1:PORT in front of the plain server: a self-signed certificate for
    127.0.0.1 (its file in ``cert``), each connection forwarded both ways."""

    def __init__(self, upstream_url, folder):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import ipaddress
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert, key_file = folder / "cert.pem", folder / "key.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key_file)
        host, port = upstream_url.rsplit("//", 1)[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            client = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        upstream = socket.create_connection(self.upstream)

        def pipe(source, sink):
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self):
        self.listener.close()


def test_https_with_the_ca_bundle_boto3_uses(s3_bucket, tmp_path, monkeypatch):
    tls = TlsProxy(s3_bucket.endpoint_url, tmp_path)
    try:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.cert))
        storage = storage_at(s3_bucket, endpoint_url=tls.endpoint_url)
        wire = storage.wire
        assert wire is not None and wire.https and wire.cafile == str(tls.cert)
        by_boto3 = boto3_sends(storage)
        for i in range(5):
            store(storage, f"k{i}.enc", b"secret %d" % i)
            assert read(storage, f"k{i}.enc") == b"secret %d" % i
        assert by_boto3 == [] and len(wire._idle) == 1
        # without the bundle the certificate is not trusted: the wire hands the request to
        # boto3 (which refuses it too, after its retries)
        monkeypatch.delenv("AWS_CA_BUNDLE")
        untrusting = esb.S3Storage(s3_config(s3_bucket, endpoint_url=tls.endpoint_url)).wire
        assert untrusting.cafile != str(tls.cert)
        assert untrusting.put("k.enc", b"x", {}) is False and untrusting._idle == []
        assert not untrusting.on                  # (a refused certificate turns it off)
        # REQUESTS_CA_BUNDLE, which botocore honours too
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.cert))
        trusting = esb.S3Storage(s3_config(s3_bucket, endpoint_url=tls.endpoint_url))
        assert trusting.wire.cafile == str(tls.cert)
        assert read(trusting, "k0.enc") == b"secret 0" and trusting.wire is not None
    finally:
        tls.close()


def test_the_wire_is_made_only_when_needed_and_making_it_sends_nothing(s3_bucket, proxy):
    storage = storage_at(s3_bucket, endpoint_url=proxy.endpoint_url)
    list(storage.list_files(esb.ListReport()))
    assert storage._wire is None                      # a listing needs no wire
    esb.take_requests()
    arrived = len(proxy.seen)
    assert storage.wire is not None
    assert esb.take_requests() == {} and len(proxy.seen) == arrived


def test_making_the_wire_leaves_other_threads_head_requests_alone(s3_bucket, monkeypatch):
    """The HeadObject that finds the request URL is stopped before it is signed, in the
    thread making the wire only: another thread's HeadObject at that moment goes out."""
    storage = storage_at(s3_bucket)
    store(storage, "k.enc", b"data")
    storage._wire_pid = 0                          # the wire is made again, below
    real_wire, answers = esb.s3_wire, []

    def wire_with_a_head_meanwhile(session, client, *rest):
        inside = threading.Thread(target=lambda: answers.append(storage.stat("k.enc")))
        prober, original = threading.get_ident(), client.head_object

        def head_object(**kwargs):                 # the probe's, with the other thread's
            if threading.get_ident() == prober:    # request made while it is under way
                inside.start()
                inside.join()
            return original(**kwargs)

        client.head_object = head_object
        try:
            return real_wire(session, client, *rest)
        finally:
            del client.head_object

    monkeypatch.setattr(esb, "s3_wire", wire_with_a_head_meanwhile)
    assert storage.wire is not None
    assert [(a.key, a.size) for a in answers] == [("k.enc", 4)]
