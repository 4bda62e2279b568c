"""The S3 gateway's multipart listings and part copies (ListParts, ListMultipartUploads,
UploadPartCopy) against a real `bukt serve`, with boto3 as the client."""
import hashlib
import os

import boto3
import botocore
import pytest
from botocore.config import Config

import bukt
from serve_harness import s3_service

from bukt.http.s3.sigv4 import s3_secret

pytestmark = pytest.mark.slow
MiB = 1 << 20


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with s3_service(tmp_path_factory.mktemp("s3mp"), "photos") as s:
        s.token = s.tokens["photos"]
        yield s


@pytest.fixture(scope="module")
def s3(svc):
    return boto3.client("s3", endpoint_url=f"http://{svc.settings['s3']['bind']}",
                        aws_access_key_id="photos",
                        aws_secret_access_key=s3_secret(svc.token),
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      signature_version="s3v4",
                                      retries={"max_attempts": 1}))


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def uploads(s3, **kw):
    """(key, upload id) of every upload ListMultipartUploads gives, paged."""
    got, kw = [], dict(kw)
    while True:
        r = s3.list_multipart_uploads(Bucket="photos", **kw)
        got += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
        if not r["IsTruncated"]:
            return got
        kw.update(KeyMarker=r["NextKeyMarker"], UploadIdMarker=r["NextUploadIdMarker"])


def test_list_parts_during_an_upload(s3):
    uid = s3.create_multipart_upload(Bucket="photos", Key="lp")["UploadId"]
    sizes = {1: 5 * MiB, 2: 5 * MiB + 1, 3: 17, 5: 1000}      # a gap at 4
    data = {n: os.urandom(size) for n, size in sizes.items()}
    for n in (3, 1, 5, 2):                                   # in any order
        s3.upload_part(Bucket="photos", Key="lp", UploadId=uid, PartNumber=n, Body=data[n])
    r = s3.list_parts(Bucket="photos", Key="lp", UploadId=uid)
    assert r["IsTruncated"] is False and r["Key"] == "lp" and r["UploadId"] == uid
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in r["Parts"]] == \
        [(n, sizes[n], '"%s"' % hashlib.md5(data[n]).hexdigest()) for n in (1, 2, 3, 5)]
    # paged two at a time from part-number-marker
    seen, marker = [], 0
    while True:
        r = s3.list_parts(Bucket="photos", Key="lp", UploadId=uid, MaxParts=2,
                          PartNumberMarker=marker)
        seen.append([p["PartNumber"] for p in r["Parts"]])
        if not r["IsTruncated"]:
            break
        marker = r["NextPartNumberMarker"]
    assert seen == [[1, 2], [3, 5]]
    # a part uploaded again replaces the one listed
    again = os.urandom(5 * MiB)
    s3.upload_part(Bucket="photos", Key="lp", UploadId=uid, PartNumber=2, Body=again)
    r = s3.list_parts(Bucket="photos", Key="lp", UploadId=uid, PartNumberMarker=1,
                      MaxParts=1)
    assert [(p["PartNumber"], p["ETag"]) for p in r["Parts"]] == \
        [(2, '"%s"' % hashlib.md5(again).hexdigest())]
    assert r["IsTruncated"] is True and r["NextPartNumberMarker"] == 2
    # the parts the listing gives complete the upload
    listed = s3.list_parts(Bucket="photos", Key="lp", UploadId=uid)["Parts"]
    s3.complete_multipart_upload(
        Bucket="photos", Key="lp", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                   for p in listed if p["PartNumber"] != 5]})
    got = s3.get_object(Bucket="photos", Key="lp")["Body"].read()
    assert got == data[1] + again + data[3]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket="photos", Key="lp", UploadId=uid)
    assert code_of(e) == "NoSuchUpload"
    # another key's upload id is no upload of this key
    other = s3.create_multipart_upload(Bucket="photos", Key="lp2")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket="photos", Key="lp", UploadId=other)
    assert code_of(e) == "NoSuchUpload"
    s3.abort_multipart_upload(Bucket="photos", Key="lp2", UploadId=other)
    s3.delete_object(Bucket="photos", Key="lp")


def test_list_multipart_uploads(svc, s3):
    assert uploads(s3) == []
    a = s3.create_multipart_upload(Bucket="photos", Key="dir/a")["UploadId"]
    b = s3.create_multipart_upload(Bucket="photos", Key="b")["UploadId"]
    s3.upload_part(Bucket="photos", Key="b", UploadId=b, PartNumber=1, Body=b"x" * 100)
    r = s3.list_multipart_uploads(Bucket="photos")
    assert [(u["Key"], u["UploadId"]) for u in r["Uploads"]] == [("b", b), ("dir/a", a)]
    assert all(u["StorageClass"] == "STANDARD" and u["Initiated"] for u in r["Uploads"])
    # a key's uploads are listed in the order they began; paged one at a time
    a2 = s3.create_multipart_upload(Bucket="photos", Key="dir/a")["UploadId"]
    assert uploads(s3) == [("b", b), ("dir/a", a), ("dir/a", a2)]
    assert uploads(s3, MaxUploads=1) == [("b", b), ("dir/a", a), ("dir/a", a2)]
    assert uploads(s3, Prefix="dir/") == [("dir/a", a), ("dir/a", a2)]
    assert uploads(s3, KeyMarker="dir/a", UploadIdMarker=a) == [("dir/a", a2)]
    assert uploads(s3, KeyMarker="b") == [("dir/a", a), ("dir/a", a2)]
    r = s3.list_multipart_uploads(Bucket="photos", Delimiter="/")
    assert [(u["Key"]) for u in r["Uploads"]] == ["b"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/"]
    # the objects' listing shows none of them
    assert "Contents" not in s3.list_objects_v2(Bucket="photos")
    # after abort: gone from the list
    s3.abort_multipart_upload(Bucket="photos", Key="dir/a", UploadId=a)
    assert uploads(s3) == [("b", b), ("dir/a", a2)]
    # after complete: gone from the list
    s3.complete_multipart_upload(Bucket="photos", Key="b", UploadId=b,
                                 MultipartUpload={"Parts": [
                                     {"PartNumber": 1,
                                      "ETag": '"%s"' % hashlib.md5(b"x" * 100).hexdigest()}]})
    assert uploads(s3) == [("dir/a", a2)]
    s3.abort_multipart_upload(Bucket="photos", Key="dir/a", UploadId=a2)
    assert uploads(s3) == []
    s3.delete_object(Bucket="photos", Key="b")
    store = bukt.attach(svc.name)
    try:
        assert store.check() == []
    finally:
        store.close()


def test_upload_part_copy(s3):
    src = os.urandom(12 * MiB)
    s3.put_object(Bucket="photos", Key="src", Body=src)
    etag = s3.head_object(Bucket="photos", Key="src")["ETag"]
    uid = s3.create_multipart_upload(Bucket="photos", Key="pc")["UploadId"]
    r1 = s3.upload_part_copy(Bucket="photos", Key="pc", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": "photos", "Key": "src"},
                             CopySourceRange=f"bytes={MiB}-{7 * MiB - 1}",
                             CopySourceIfMatch=etag)
    assert r1["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src[MiB:7 * MiB]).hexdigest()
    tail = b"the end"
    r2 = s3.upload_part(Bucket="photos", Key="pc", UploadId=uid, PartNumber=2, Body=tail)
    r3 = s3.upload_part_copy(Bucket="photos", Key="pc", UploadId=uid, PartNumber=3,
                             CopySource="photos/src", CopySourceRange="bytes=0-9")
    assert [p["Size"] for p in s3.list_parts(Bucket="photos", Key="pc",
                                             UploadId=uid)["Parts"]] == [6 * MiB, 7, 10]
    # out of the source's bounds, or a condition that does not hold: no part made
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket="photos", Key="pc", UploadId=uid, PartNumber=4,
                            CopySource="photos/src",
                            CopySourceRange=f"bytes=0-{12 * MiB}")
    assert code_of(e) == "InvalidArgument"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket="photos", Key="pc", UploadId=uid, PartNumber=4,
                            CopySource="photos/src", CopySourceIfNoneMatch=etag)
    assert code_of(e) == "PreconditionFailed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket="photos", Key="pc", UploadId=uid, PartNumber=4,
                            CopySource="photos/nothing")
    assert code_of(e) == "NoSuchKey"
    assert len(s3.list_parts(Bucket="photos", Key="pc", UploadId=uid)["Parts"]) == 3
    s3.complete_multipart_upload(
        Bucket="photos", Key="pc", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
            {"PartNumber": 2, "ETag": r2["ETag"]}]})
    assert s3.get_object(Bucket="photos", Key="pc")["Body"].read() == \
        src[MiB:7 * MiB] + tail
    assert r3["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src[:10]).hexdigest()
    # the whole source as a part
    uid = s3.create_multipart_upload(Bucket="photos", Key="pc2")["UploadId"]
    r = s3.upload_part_copy(Bucket="photos", Key="pc2", UploadId=uid, PartNumber=1,
                            CopySource="photos/src")
    s3.complete_multipart_upload(
        Bucket="photos", Key="pc2", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="photos", Key="pc2")["Body"].read() == src
    # CopyObject checks the same conditions; a date condition is refused, not ignored
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="photos", Key="c", CopySource="photos/src",
                       CopySourceIfMatch='"%s"' % ("0" * 32))
    assert code_of(e) == "PreconditionFailed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="photos", Key="c", CopySource="photos/src",
                       CopySourceIfModifiedSince="2020-01-01T00:00:00Z")
    assert code_of(e) == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="photos", Key="c")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.copy_object(Bucket="photos", Key="c", CopySource="photos/src", CopySourceIfMatch=etag)
    assert s3.get_object(Bucket="photos", Key="c")["Body"].read() == src
    for k in ("src", "pc", "pc2", "c"):
        s3.delete_object(Bucket="photos", Key=k)
