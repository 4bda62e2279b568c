"""The S3 gateway (bukt/http/s3/, docs/s3.md) against a real `bukt serve`, with boto3
and the aws CLI as clients."""
import hashlib
import hmac
import base64
import json
import os
import subprocess
import sys

import boto3
import botocore
import pytest
from botocore.config import Config

from serve_harness import Service, s3_service, unused_port, wait_for

from bukt.http.s3.sigv4 import s3_secret

pytestmark = pytest.mark.slow
MiB = 1 << 20


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with s3_service(tmp_path_factory.mktemp("s3"), "photos", "other") as s:
        s.token = s.tokens["photos"]
        s.other = s.tokens["other"]
        yield s


def endpoint(svc):
    return f"http://{svc.settings['s3']['bind']}"


def client(svc, key_id, secret, **cfg):
    return boto3.client("s3", endpoint_url=endpoint(svc), aws_access_key_id=key_id,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      signature_version="s3v4",
                                      retries={"max_attempts": 1}, **cfg))


@pytest.fixture(scope="module")
def s3(svc):
    return client(svc, "photos", s3_secret(svc.token))


@pytest.fixture(scope="module")
def admin(svc):
    return client(svc, "admin", s3_secret(svc.admin_token()))


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_put_get_head_delete(s3):
    body = b"hello, bucket" * 100
    r = s3.put_object(Bucket="photos", Key="a/b c.txt", Body=body,
                      ContentType="text/plain", Metadata={"who": "me"})
    assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket="photos", Key="a/b c.txt")
    assert got["Body"].read() == body
    assert got["ETag"] == r["ETag"]
    h = s3.head_object(Bucket="photos", Key="a/b c.txt")
    assert h["ContentLength"] == len(body)
    s3.delete_object(Bucket="photos", Key="a/b c.txt")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="a/b c.txt")
    assert code_of(e) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="photos", Key="a/b c.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_ranged_reads(s3):
    body = bytes(range(256)) * 1000
    s3.put_object(Bucket="photos", Key="range", Body=body)
    r = s3.get_object(Bucket="photos", Key="range", Range="bytes=100-199")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes 100-199/{len(body)}"
    assert r["Body"].read() == body[100:200]
    assert s3.get_object(Bucket="photos", Key="range", Range="bytes=-10")["Body"].read() \
        == body[-10:]
    assert s3.get_object(Bucket="photos", Key="range",
                         Range=f"bytes={len(body) - 5}-")["Body"].read() == body[-5:]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="range", Range=f"bytes={len(body)}-")
    assert code_of(e) == "InvalidRange"


def test_checksum_mismatch_stores_nothing(svc, s3):
    s3.put_object(Bucket="photos", Key="ck", Body=b"old")
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="photos", Key="ck", Body=b"new", ChecksumSHA256=wrong)
    assert code_of(e) == "BadDigest"
    assert s3.get_object(Bucket="photos", Key="ck")["Body"].read() == b"old"
    right = base64.b64encode(hashlib.sha256(b"new").digest()).decode()
    s3.put_object(Bucket="photos", Key="ck", Body=b"new", ChecksumSHA256=right)
    assert s3.get_object(Bucket="photos", Key="ck")["Body"].read() == b"new"


def test_list_objects_v2(s3):
    keys = [f"list/{d}/{i:03d}" for d in ("x", "y") for i in range(7)] + ["list/top"]
    for k in keys:
        s3.put_object(Bucket="photos", Key=k, Body=k.encode())
    got, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="photos", Prefix="list/", MaxKeys=4, **kw)
        got += [c["Key"] for c in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == sorted(keys)
    r = s3.list_objects_v2(Bucket="photos", Prefix="list/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["list/x/", "list/y/"]
    assert [c["Key"] for c in r["Contents"]] == ["list/top"]
    assert r["Contents"][0]["Size"] == len(b"list/top")
    # paged with a delimiter: prefixes are not repeated across pages
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="photos", Prefix="list/", Delimiter="/", MaxKeys=1,
                               **kw)
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + \
            [c["Key"] for c in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert seen == ["list/top", "list/x/", "list/y/"] or \
        sorted(seen) == ["list/top", "list/x/", "list/y/"]
    s3.delete_objects(Bucket="photos",
                      Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    assert s3.list_objects_v2(Bucket="photos", Prefix="list/")["KeyCount"] == 0


def test_delete_objects_reports(s3):
    s3.put_object(Bucket="photos", Key="d1", Body=b"1")
    s3.put_object(Bucket="photos", Key="d2", Body=b"2")
    r = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "d1"},
                                                               {"Key": "d2"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["d1", "d2"]
    assert s3.list_objects_v2(Bucket="photos", Prefix="d")["KeyCount"] == 0


def test_copy_object(s3):
    s3.put_object(Bucket="photos", Key="src", Body=b"copy me", ContentType="text/plain")
    r = s3.copy_object(Bucket="photos", Key="dst",
                       CopySource={"Bucket": "photos", "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"copy me").hexdigest()
    assert s3.get_object(Bucket="photos", Key="dst")["Body"].read() == b"copy me"


def test_banner_names_the_gateway(svc):
    assert f"S3           http://{svc.settings['s3']['bind']}" in svc.log()


def test_buckets_follow_token_permissions(svc, s3, admin):
    names = [b["Name"] for b in admin.list_buckets()["Buckets"]]
    assert {"photos", "other"} <= set(names)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["photos"]
    s3.head_bucket(Bucket="photos")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="mine")
    assert code_of(e) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="other")
    assert code_of(e) == "AccessDenied"
    # its own bucket: it has it already (what S3 tells an owner; tools take it as done)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="photos")
    assert code_of(e) == "BucketAlreadyOwnedByYou"
    admin.create_bucket(Bucket="fresh")
    admin.head_bucket(Bucket="fresh")
    admin.put_object(Bucket="fresh", Key="k", Body=b"v")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        admin.delete_bucket(Bucket="fresh")
    assert code_of(e) == "BucketNotEmpty"
    admin.delete_object(Bucket="fresh", Key="k")
    admin.delete_bucket(Bucket="fresh")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        admin.head_bucket(Bucket="fresh")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        admin.get_object(Bucket="fresh", Key="k")
    assert code_of(e) == "NoSuchBucket"


def test_wrong_signatures_refused(svc, s3):
    s3.put_object(Bucket="photos", Key="secret", Body=b"s")
    bad = client(svc, "photos", s3_secret("not the token"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.get_object(Bucket="photos", Key="secret")
    assert code_of(e) == "SignatureDoesNotMatch"
    # an access key id naming no bucket gets the same answer: whether a bucket
    # exists is not told to a caller who cannot sign for it
    unknown = client(svc, "nosuchbucket", s3_secret(svc.token))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.get_object(Bucket="photos", Key="secret")
    assert code_of(e) == "SignatureDoesNotMatch"
    # another bucket's credentials, valid for that bucket, do not open this one
    other = client(svc, "other", s3_secret(svc.other))
    other.put_object(Bucket="other", Key="mine", Body=b"o")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.get_object(Bucket="photos", Key="secret")
    assert code_of(e) == "AccessDenied"
    # anonymous
    anon = boto3.client("s3", endpoint_url=endpoint(svc), region_name="us-east-1",
                        config=Config(signature_version=botocore.UNSIGNED,
                                      s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        anon.get_object(Bucket="photos", Key="secret")
    assert code_of(e) == "AccessDenied"


def test_request_time_outside_15_minutes_refused(svc, monkeypatch):
    import botocore.auth
    import datetime
    s3 = client(svc, "photos", s3_secret(svc.token))
    s3.put_object(Bucket="photos", Key="clock", Body=b"c")
    for skew in (-16 * 60, 16 * 60):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: (
            datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            + datetime.timedelta(seconds=skew)))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="photos", Key="clock")
        assert code_of(e) == "RequestTimeTooSkewed"
    for skew in (-14 * 60, 14 * 60):      # within 15 minutes: served
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: (
            datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            + datetime.timedelta(seconds=skew)))
        assert s3.get_object(Bucket="photos", Key="clock")["Body"].read() == b"c"


def test_presigned_url(svc, s3):
    import urllib.request
    s3.put_object(Bucket="photos", Key="shared", Body=b"look")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos",
                                                          "Key": "shared"}, ExpiresIn=60)
    assert urllib.request.urlopen(url, timeout=10).read() == b"look"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("shared", "sharez"), timeout=10)
    assert e.value.code == 403


def test_multipart_upload(svc, s3):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(123)]
    up = s3.create_multipart_upload(Bucket="photos", Key="big", ContentType="video/x")
    uid = up["UploadId"]
    done = []
    for n, data in enumerate(parts, 1):
        r = s3.upload_part(Bucket="photos", Key="big", UploadId=uid, PartNumber=n, Body=data)
        assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    r = s3.complete_multipart_upload(Bucket="photos", Key="big", UploadId=uid,
                                     MultipartUpload={"Parts": done})
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert r["ETag"] == f'"{want}"'
    whole = b"".join(parts)
    got = s3.get_object(Bucket="photos", Key="big")
    assert got["Body"].read() == whole
    assert got["ETag"] == f'"{want}"'
    r = s3.get_object(Bucket="photos", Key="big", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 2}")
    assert r["Body"].read() == whole[5 * MiB - 3:5 * MiB + 3]
    # the upload is gone once completed
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket="photos", Key="big", UploadId=uid, PartNumber=4, Body=b"x")
    assert code_of(e) == "NoSuchUpload"
    # abort
    up = s3.create_multipart_upload(Bucket="photos", Key="never")
    s3.upload_part(Bucket="photos", Key="never", UploadId=up["UploadId"], PartNumber=1,
                   Body=b"abc")
    s3.abort_multipart_upload(Bucket="photos", Key="never", UploadId=up["UploadId"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="photos", Key="never")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # nothing of the uploads shows in a listing
    keys = [c["Key"] for c in s3.list_objects_v2(Bucket="photos").get("Contents", [])]
    assert all(not k.startswith("\x00") for k in keys)
    s3.delete_object(Bucket="photos", Key="big")


def test_too_large_refused(svc, s3):
    # limits.max_object is 64 MiB by default; a declared length past it is refused
    # before the body is read
    import http.client
    conn = http.client.HTTPConnection(*svc.settings["s3"]["bind"].split(":"), timeout=10)
    import botocore.auth
    import botocore.awsrequest
    creds = botocore.credentials.Credentials("photos", s3_secret(svc.token))
    req = botocore.awsrequest.AWSRequest(
        method="PUT", url=f"{endpoint(svc)}/photos/huge",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                 "Content-Length": str(65 * MiB)})
    botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    conn.putrequest("PUT", "/photos/huge", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", svc.settings["s3"]["bind"])
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 400 and b"EntityTooLarge" in r.read()
    conn.close()


def aws(svc, token, *args, key_id="photos"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=s3_secret(token),
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    exe = os.path.join(os.path.dirname(sys.executable), "aws")
    cmd = [exe if os.path.exists(exe) else "aws", "--endpoint-url", endpoint(svc), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_aws_cli(svc, tmp_path):
    src = tmp_path / "f.bin"
    data = os.urandom(12 * MiB)       # over the CLI's 8 MiB threshold: multipart
    src.write_bytes(data)
    small = tmp_path / "s.txt"
    small.write_text("small")
    r = aws(svc, svc.token, "s3", "cp", str(src), "s3://photos/cli/f.bin")
    assert r.returncode == 0, r.stderr
    r = aws(svc, svc.token, "s3", "cp", str(small), "s3://photos/cli/s.txt")
    assert r.returncode == 0, r.stderr
    r = aws(svc, svc.token, "s3", "ls", "s3://photos/cli/")
    assert r.returncode == 0, r.stderr
    assert "f.bin" in r.stdout and "s.txt" in r.stdout
    out = tmp_path / "back.bin"
    r = aws(svc, svc.token, "s3", "cp", "s3://photos/cli/f.bin", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    r = aws(svc, svc.token, "s3api", "head-object", "--bucket", "photos", "--key",
            "cli/s.txt")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ContentLength"] == 5
    r = aws(svc, svc.token, "s3", "rm", "s3://photos/cli/", "--recursive")
    assert r.returncode == 0, r.stderr
    r = aws(svc, svc.token, "s3api", "list-objects-v2", "--bucket", "photos", "--prefix",
            "cli/")
    assert r.returncode == 0, r.stderr
    assert "Contents" not in (json.loads(r.stdout) if r.stdout.strip() else {})
    r = aws(svc, "wrong", "s3", "ls", "s3://photos/")
    assert r.returncode != 0 and "SignatureDoesNotMatch" in r.stderr


def signed(svc, method, path, body=b"", headers=None, sign_body=None, token=None):
    """(headers to send) for a request signed by botocore's SigV4 over `sign_body`
    (the body as signed, `body` unless given)."""
    import botocore.auth
    import botocore.awsrequest
    creds = botocore.credentials.Credentials("photos", s3_secret(token or svc.token))
    req = botocore.awsrequest.AWSRequest(method=method, url=endpoint(svc) + path,
                                         data=body if sign_body is None else sign_body,
                                         headers=dict(headers or {}))
    botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    out = dict(req.headers)
    out["Host"] = svc.settings["s3"]["bind"]
    out["Content-Length"] = str(len(body))
    return out


def raw(svc, method, path, headers, body=b""):
    import http.client
    host, port = svc.settings["s3"]["bind"].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_payload_hash_mismatch_stores_nothing(svc, s3):
    s3.put_object(Bucket="photos", Key="pay", Body=b"before")
    h = signed(svc, "PUT", "/photos/pay", body=b"tampered", sign_body=b"original")
    status, body = raw(svc, "PUT", "/photos/pay", h, b"tampered")
    assert status == 400 and b"XAmzContentSHA256Mismatch" in body
    assert s3.get_object(Bucket="photos", Key="pay")["Body"].read() == b"before"


def test_streaming_signed_upload(svc, s3):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD: aws-chunked with a signature per chunk."""
    import datetime
    import hashlib as hl
    from bukt.http.s3 import sigv4
    data = os.urandom(150_000)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    key = sigv4.signing_key(s3_secret(svc.token), day, "us-east-1", "s3")
    host = svc.settings["s3"]["bind"]
    size = 64 << 10
    pieces = [data[i:i + size] for i in range(0, len(data), size)] + [b""]

    def framing(sig):
        return sum(len(b"%x;chunk-signature=" % len(p)) + 64 + 4 + len(p) for p in pieces)
    hdrs = {"host": host, "content-encoding": "aws-chunked",
            "x-amz-content-sha256": sigv4.STREAMING, "x-amz-date": amz,
            "x-amz-decoded-content-length": str(len(data)),
            "content-length": str(framing(None))}
    names = sorted(hdrs)
    creq = "\n".join(["PUT", "/photos/streamed", "",
                      "".join(f"{n}:{hdrs[n]}\n" for n in names), ";".join(names),
                      sigv4.STREAMING])
    sts = "\n".join([sigv4.ALGORITHM, amz, scope, hl.sha256(creq.encode()).hexdigest()])

    def sign(text):
        return hmac.new(key, text.encode(), hl.sha256).hexdigest()
    seed = sign(sts)
    hdrs["authorization"] = (f"{sigv4.ALGORITHM} Credential=photos/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={seed}")

    def body(tamper=False):
        out, prev = b"", seed
        for p in pieces:
            sig = sign("\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz, scope, prev,
                                  sigv4.EMPTY_SHA256, hl.sha256(p).hexdigest()]))
            prev = sig
            if tamper and p:
                p = bytes([p[0] ^ 1]) + p[1:]
            out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(p), sig.encode(), p)
        return out
    status, answer = raw(svc, "PUT", "/photos/streamed", hdrs, body(tamper=True))
    assert status == 403 and b"SignatureDoesNotMatch" in answer
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket="photos", Key="streamed")
    status, answer = raw(svc, "PUT", "/photos/streamed", hdrs, body())
    assert status == 200, answer
    assert s3.get_object(Bucket="photos", Key="streamed")["Body"].read() == data


KILLED_CLIENT = r"""
import os, signal, socket, sys, json
host, port, headers, part = json.loads(sys.argv[1])
s = socket.create_connection((host, port))
s.sendall(("PUT /photos/victim HTTP/1.1\r\n" +
           "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
s.sendall(os.urandom(part))
print("sent", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_client_killed_mid_put_leaves_old_object(svc, s3):
    import bukt
    old = os.urandom(300_000)
    s3.put_object(Bucket="photos", Key="victim", Body=old)
    store = bukt.attach(svc.name)
    try:
        bucket = store.bucket("photos")
        before = set(_hidden_keys(bucket))
        new = os.urandom(3 * MiB)
        h = signed(svc, "PUT", "/photos/victim", body=new)
        host, port = svc.settings["s3"]["bind"].split(":")
        p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT,
                              json.dumps([host, int(port), h, 2 * MiB])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "sent"
        # the body is being stored as it comes: chunks of the new object exist
        wait_for(lambda: set(_hidden_keys(bucket)) - before,
                 what="the upload's first chunks")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(10) == -9
        # the chunks the dead client's body became are deleted when the server sees
        # the connection gone
        wait_for(lambda: set(_hidden_keys(bucket)) <= before,
                 what="the dead upload's chunks to go")
        assert s3.get_object(Bucket="photos", Key="victim")["Body"].read() == old
        assert store.check() == []
    finally:
        store.close()


def test_presigned_put_and_expiry(svc, s3, monkeypatch):
    import datetime
    import urllib.request
    import botocore.auth
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "photos",
                                                          "Key": "via-url"}, ExpiresIn=60)
    r = urllib.request.urlopen(urllib.request.Request(url, data=b"uploaded", method="PUT"),
                               timeout=10)
    assert r.status == 200
    assert s3.get_object(Bucket="photos", Key="via-url")["Body"].read() == b"uploaded"
    # signed ten minutes ago for sixty seconds: expired (though within the clock skew)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: (
        datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        - datetime.timedelta(minutes=10)))
    old = s3.generate_presigned_url("get_object", Params={"Bucket": "photos",
                                                          "Key": "via-url"}, ExpiresIn=60)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(old, timeout=10)
    assert e.value.code == 403 and b"expired" in e.value.read()


def test_token_permissions_apply(svc, s3):
    status, body = svc.http("POST", "/api/v1/buckets/photos/tokens",
                            {"permissions": ["read"]}, {"X-Auth-Token": svc.token})
    assert status == 201, body
    reader = client(svc, "photos", s3_secret(json.loads(body)["token"]))
    s3.put_object(Bucket="photos", Key="ro", Body=b"r")
    assert reader.get_object(Bucket="photos", Key="ro")["Body"].read() == b"r"
    for call in (lambda: reader.put_object(Bucket="photos", Key="ro", Body=b"w"),
                 lambda: reader.delete_object(Bucket="photos", Key="ro"),
                 lambda: reader.delete_bucket(Bucket="photos")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == "AccessDenied"
    # a revoked token's secret stops working with the next request
    tid = json.loads(body)["id"]
    status, _ = svc.http("DELETE", f"/api/v1/buckets/photos/tokens/{tid}",
                         headers={"X-Auth-Token": svc.token})
    assert status == 204
    with pytest.raises(botocore.exceptions.ClientError) as e:
        reader.get_object(Bucket="photos", Key="ro")
    assert code_of(e) == "SignatureDoesNotMatch"


def test_same_keys_through_every_face(svc, s3):
    s3.put_object(Bucket="photos", Key="shared/one", Body=b"from s3")
    status, body = svc.http("GET", "/api/v1/buckets/photos/keys/shared%2Fone",
                            headers={"X-Auth-Token": svc.token})
    assert (status, body) == (200, b"from s3")
    status, _ = svc.http("PUT", "/api/v1/buckets/photos/keys/shared%2Ftwo", b"from http",
                         {"X-Auth-Token": svc.token})
    assert status in (200, 201, 204)
    got = s3.get_object(Bucket="photos", Key="shared/two")
    assert got["Body"].read() == b"from http"
    assert got["ETag"] == '"%s"' % hashlib.md5(b"from http").hexdigest()


@pytest.mark.parametrize("key", ["ünï/cödé ✓", "a+b=c&d", "100%/x y", "sp ace/ ", "~t.i-l_d",
                                 "q?uery#frag", "dots/../x", "a//b"])
def test_odd_keys(s3, key):
    s3.put_object(Bucket="photos", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == key.encode()
    listed = [c["Key"] for c in s3.list_objects_v2(Bucket="photos",
                                                    Prefix=key[:3]).get("Contents", [])]
    assert key in listed
    s3.delete_object(Bucket="photos", Key=key)


def test_empty_object(s3):
    s3.put_object(Bucket="photos", Key="empty", Body=b"")
    r = s3.get_object(Bucket="photos", Key="empty")
    assert r["Body"].read() == b"" and r["ContentLength"] == 0
    assert r["ETag"] == '"%s"' % hashlib.md5(b"").hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="empty", Range="bytes=0-0")
    assert code_of(e) == "InvalidRange"


def test_list_objects_v1(s3):
    keys = [f"v1/{c}" for c in "abcdefg"] + ["v1/sub/x", "v1/sub/y"]
    for k in keys:
        s3.put_object(Bucket="photos", Key=k, Body=b"1")
    got, marker = [], ""
    while True:
        r = s3.list_objects(Bucket="photos", Prefix="v1/", Delimiter="/", MaxKeys=3,
                            Marker=marker)
        page = [c["Key"] for c in r.get("Contents", [])] + \
            [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        got += page
        if not r["IsTruncated"]:
            break
        marker = r["NextMarker"]
    assert sorted(got) == [f"v1/{c}" for c in "abcdefg"] + ["v1/sub/"]
    s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": k} for k in keys]})


def test_corrupt_object_never_served_whole(svc, s3):
    """A chunk changed behind the objects layer's back: a GET is cut short (the client
    sees an incomplete body), never handed the wrong bytes as the object."""
    import bukt
    from bukt.objects.manifest import parse_hidden
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket="photos", Key="rotten", Body=data)
    store = bukt.attach(svc.name)
    try:
        b = store.bucket("photos")
        m = __import__("bukt.objects", fromlist=["head"]).head(b, b"rotten")
        key = [k for k in _hidden_keys(b) if parse_hidden(k) and parse_hidden(k)[0] ==
               "chunk" and parse_hidden(k)[1] == m.oid][0]
        value, flags, _, _ = b.read_entry(key, peek=True)
        b.put_entry(key, bytes([value[0] ^ 0xFF]) + value[1:], flags)
    finally:
        store.close()
    with pytest.raises((botocore.exceptions.ClientError,
                        botocore.exceptions.IncompleteReadError,
                        botocore.exceptions.ResponseStreamingError,
                        botocore.exceptions.ConnectionClosedError)):
        got = s3.get_object(Bucket="photos", Key="rotten")["Body"].read()
        assert got != data     # (not reached: the read fails)
        raise AssertionError("a corrupt object was served whole")
    s3.delete_object(Bucket="photos", Key="rotten")


def _hidden_keys(bucket):
    cursor, out = 0, []
    while True:
        cursor, keys = bucket.scan_hidden(cursor, 1000)
        out += keys
        if not cursor:
            return out


def test_abandoned_upload_reclaimed(tmp_path):
    """An upload nobody completes or aborts goes whole after objects.upload_timeout:
    its record, its parts and their chunks."""
    import bukt
    svc = Service(tmp_path, memory="64MiB", s3={"bind": f"127.0.0.1:{unused_port()}"},
                  objects={"upload_timeout": "2s", "sweep_interval": "0.2s"})
    try:
        svc.start()
        svc.token = svc.create_bucket("photos")
        s3 = client(svc, "photos", s3_secret(svc.token))
        store = bukt.attach(svc.name)
        try:
            bucket = store.bucket("photos")
            before = set(_hidden_keys(bucket))
            up = s3.create_multipart_upload(Bucket="photos", Key="left")
            s3.upload_part(Bucket="photos", Key="left", UploadId=up["UploadId"],
                           PartNumber=1, Body=os.urandom(3 * MiB))
            assert len(set(_hidden_keys(bucket)) - before) >= 4   # record, part, chunks
            wait_for(lambda: set(_hidden_keys(bucket)) <= before, timeout=60,
                     what="the abandoned upload to be reclaimed")
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3.upload_part(Bucket="photos", Key="left", UploadId=up["UploadId"],
                               PartNumber=2, Body=b"late")
            assert code_of(e) == "NoSuchUpload"
            assert store.check() == []
        finally:
            store.close()
        assert svc.stop() == 0
    finally:
        svc.cleanup()


def test_readers_never_see_a_mix_during_overwrites(svc):
    """Two bodies of several chunks written in turn under one key while readers GET
    it whole: every read is one body or the other, never pieces of both."""
    import threading
    bodies = [os.urandom(3 * MiB + 17), os.urandom(3 * MiB + 17)]
    digests = {hashlib.sha256(b).hexdigest() for b in bodies}
    writer = client(svc, "photos", s3_secret(svc.token))
    writer.put_object(Bucket="photos", Key="flip", Body=bodies[0])
    stop, seen, errors = threading.Event(), [], []

    def read():
        c = client(svc, "photos", s3_secret(svc.token))
        while not stop.is_set():
            try:
                data = c.get_object(Bucket="photos", Key="flip")["Body"].read()
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(repr(e))
                return
            seen.append(hashlib.sha256(data).hexdigest())
    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(30):
            writer.put_object(Bucket="photos", Key="flip", Body=bodies[i % 2])
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not errors
    assert seen and set(seen) <= digests
    writer.delete_object(Bucket="photos", Key="flip")
    import bukt
    store = bukt.attach(svc.name)
    try:
        assert store.check() == []
    finally:
        store.close()


def test_requests_are_counted(svc, s3):
    s3.list_objects_v2(Bucket="photos", Prefix="none/")
    status, body = svc.http("GET", "/metrics", headers={"X-Auth-Token": svc.admin_token()})
    assert status == 200
    assert b'route="s3"' in body


def test_bucket_location_and_region(s3):
    assert s3.get_bucket_location(Bucket="photos").get("LocationConstraint") in (None, "")
    h = s3.head_bucket(Bucket="photos")
    assert h["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_bucket_round_trips(svc, admin, codec):
    """Objects through S3 in a compressing bucket: what goes in comes out, whole and in
    ranges, with its MD5 ETag (the body's, not the stored bytes')."""
    name = f"squeezed-{codec}"
    token = svc.create_bucket(name, compression=codec)
    c = client(svc, name, s3_secret(token))
    text = (b"the quick brown fox jumps over the lazy dog " * 40000)[:1_500_000]
    small = b"x" * 5000
    for key, body in (("big.txt", text), ("small.txt", small)):
        r = c.put_object(Bucket=name, Key=key, Body=body)
        assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
        got = c.get_object(Bucket=name, Key=key)
        assert got["Body"].read() == body and got["ETag"] == r["ETag"]
        assert c.get_object(Bucket=name, Key=key, Range="bytes=1000-1999")["Body"].read() \
            == body[1000:2000]
        c.delete_object(Bucket=name, Key=key)


def test_standard_headers_kept(s3):
    """Cache-Control, Content-Disposition, Content-Encoding, Content-Language and
    Expires set on a PUT, a multipart upload or a copy's REPLACE come back with GET and
    HEAD; a COPY keeps the source's."""
    import datetime
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    given = dict(CacheControl="max-age=60", ContentDisposition='attachment; filename="x"',
                 ContentEncoding="gzip", ContentLanguage="fr", Expires=expires)

    def kept(r):
        return {k: r.get(k) for k in given}
    s3.put_object(Bucket="photos", Key="hdr", Body=b"zz", **given)
    assert kept(s3.head_object(Bucket="photos", Key="hdr")) == given
    assert kept(s3.get_object(Bucket="photos", Key="hdr")) == given
    up = s3.create_multipart_upload(Bucket="photos", Key="hdr-mp", **given)
    r = s3.upload_part(Bucket="photos", Key="hdr-mp", UploadId=up["UploadId"],
                       PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(Bucket="photos", Key="hdr-mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": r["ETag"]}]})
    assert kept(s3.head_object(Bucket="photos", Key="hdr-mp")) == given
    s3.copy_object(Bucket="photos", Key="hdr-copy", CopySource="photos/hdr")
    assert kept(s3.head_object(Bucket="photos", Key="hdr-copy")) == given
    s3.copy_object(Bucket="photos", Key="hdr-copy", CopySource="photos/hdr",
                   MetadataDirective="REPLACE", CacheControl="no-store")
    got = s3.head_object(Bucket="photos", Key="hdr-copy")
    assert got["CacheControl"] == "no-store" and "ContentEncoding" not in got
    s3.put_object(Bucket="photos", Key="hdr", Body=b"plain")     # none: none given back
    got = s3.head_object(Bucket="photos", Key="hdr")
    assert not {"CacheControl", "ContentDisposition", "ContentEncoding",
                "ContentLanguage", "Expires"} & got.keys()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="photos", Key="hdr", Body=b"x", CacheControl="c" * 2100)
    assert code_of(e) == "InvalidArgument"
    for k in ("hdr", "hdr-mp", "hdr-copy"):
        s3.delete_object(Bucket="photos", Key=k)


def test_list_object_versions(s3):
    """Never versioned: ListObjectVersions gives every object once, version "null",
    the latest; GET of version "null" is the object, of any other NoSuchVersion."""
    keys = ["ver/a", "ver/b/1", "ver/b/2", "ver/c"]
    for k in keys:
        s3.put_object(Bucket="photos", Key=k, Body=k.encode())
    got, kw = [], {}
    while True:
        r = s3.list_object_versions(Bucket="photos", Prefix="ver/", MaxKeys=1, **kw)
        got += [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"])
                for v in r.get("Versions", [])]
        if not r["IsTruncated"]:
            break
        kw = dict(KeyMarker=r["NextKeyMarker"], VersionIdMarker=r["NextVersionIdMarker"])
    assert got == [(k, "null", True, len(k)) for k in keys]
    r = s3.list_object_versions(Bucket="photos", Prefix="ver/", Delimiter="/")
    assert [v["Key"] for v in r["Versions"]] == ["ver/a", "ver/c"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["ver/b/"]
    assert "DeleteMarkers" not in r
    assert s3.get_object(Bucket="photos", Key="ver/a", VersionId="null")["Body"].read() \
        == b"ver/a"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="ver/a", VersionId="3HL4kqtJlcpXroDTDmJ")
    assert code_of(e) == "NoSuchVersion"
    for k in keys:
        s3.delete_object(Bucket="photos", Key=k)


def test_calls_we_lack_are_refused_not_mistaken(svc, s3):
    """A query naming a call the gateway does not answer is NotImplemented, never taken
    for another: DeleteObjectTagging used to delete the object."""
    import urllib.request
    s3.put_object(Bucket="photos", Key="tagged", Body=b"keep me")
    for call in (lambda: s3.delete_object_tagging(Bucket="photos", Key="tagged"),
                 lambda: s3.get_object_tagging(Bucket="photos", Key="tagged"),
                 lambda: s3.get_object_retention(Bucket="photos", Key="tagged"),
                 lambda: s3.get_object_lock_configuration(Bucket="photos"),
                 lambda: s3.get_bucket_notification_configuration(Bucket="photos")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_object(Bucket="photos", Key="tagged", VersionId="3HL4kqtJlcpXroDTDmJ")
    assert code_of(e) == "NoSuchVersion"
    assert s3.get_object(Bucket="photos", Key="tagged")["Body"].read() == b"keep me"
    # GetObject's partNumber: part 1 of an object stored whole is the object; any other
    # part, or a part of an object uploaded in parts, is refused, not the whole object
    r = s3.get_object(Bucket="photos", Key="tagged", PartNumber=1)
    assert r["Body"].read() == b"keep me" and r["ContentRange"] == "bytes 0-6/7"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="tagged", PartNumber=2)
    assert code_of(e) == "NotImplemented"
    up = s3.create_multipart_upload(Bucket="photos", Key="inparts")
    p = s3.upload_part(Bucket="photos", Key="inparts", UploadId=up["UploadId"],
                       PartNumber=1, Body=b"one part")
    s3.complete_multipart_upload(Bucket="photos", Key="inparts", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": p["ETag"]}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="inparts", PartNumber=1)
    assert code_of(e) == "NotImplemented"
    # the response-* overrides, signed or presigned
    r = s3.get_object(Bucket="photos", Key="tagged", ResponseContentType="text/x-over",
                      ResponseContentDisposition="attachment; filename=t.txt")
    assert r["ContentType"] == "text/x-over"
    assert r["ContentDisposition"] == "attachment; filename=t.txt"
    url = s3.generate_presigned_url("get_object", ExpiresIn=60, Params={
        "Bucket": "photos", "Key": "tagged", "ResponseCacheControl": "no-cache"})
    got = urllib.request.urlopen(url, timeout=10)
    assert got.headers["Cache-Control"] == "no-cache" and got.read() == b"keep me"
    # an SDK's lower-case x-amz-* query parameter is no call of its own
    path = "/photos/tagged?x-amz-checksum-mode=ENABLED"
    assert raw(svc, "GET", path, signed(svc, "GET", path)) == (200, b"keep me")
    for k in ("tagged", "inparts"):
        s3.delete_object(Bucket="photos", Key=k)


def test_conditional_writes_refused(s3):
    """A write's If-None-Match/If-Match is refused, not ignored: ignored, a create-only
    PUT would overwrite the object it meant to keep."""
    s3.put_object(Bucket="photos", Key="cond", Body=b"first")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="photos", Key="cond", Body=b"second", IfNoneMatch="*")
    assert code_of(e) == "NotImplemented"
    assert s3.get_object(Bucket="photos", Key="cond")["Body"].read() == b"first"
    up = s3.create_multipart_upload(Bucket="photos", Key="cond")
    p = s3.upload_part(Bucket="photos", Key="cond", UploadId=up["UploadId"], PartNumber=1,
                       Body=b"third")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="photos", Key="cond", UploadId=up["UploadId"],
                                     IfNoneMatch="*", MultipartUpload={"Parts": [
                                         {"PartNumber": 1, "ETag": p["ETag"]}]})
    assert code_of(e) == "NotImplemented"
    assert s3.get_object(Bucket="photos", Key="cond")["Body"].read() == b"first"
    s3.abort_multipart_upload(Bucket="photos", Key="cond", UploadId=up["UploadId"])
    s3.delete_object(Bucket="photos", Key="cond")
