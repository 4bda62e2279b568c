"""rclone (the real binary, Debian's package; .ci/run installs it) against a real `bukt
serve` with the S3 gateway on, configured exactly as docs/s3.md's rclone section says."""
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request

import boto3
import pytest
from botocore.config import Config

import bukt
from bukt import objects
from serve_harness import s3_service

from bukt.http.s3.sigv4 import s3_secret

pytestmark = pytest.mark.slow
MiB = 1 << 20
# what docs/s3.md tells rclone users to pass so a file over 5 MiB goes up in parts
MULTIPART = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    assert shutil.which("rclone"), "these tests drive rclone: apt-get install rclone"
    with s3_service(tmp_path_factory.mktemp("s3rclone"), "photos") as s:
        s.token = s.tokens["photos"]
        yield s


def remote(name, endpoint, key_id, secret):
    """docs/s3.md's rclone.conf section, word for word but the values."""
    return (f"[{name}]\ntype = s3\nprovider = Other\nendpoint = {endpoint}\n"
            f"access_key_id = {key_id}\nsecret_access_key = {secret}\n"
            "region = us-east-1\nforce_path_style = true\n\n")


@pytest.fixture(scope="module")
def rclone(svc, tmp_path_factory):
    conf = tmp_path_factory.mktemp("rclone") / "rclone.conf"
    endpoint = f"http://{svc.settings['s3']['bind']}"
    conf.write_text(remote("bukt", endpoint, "photos", s3_secret(svc.token)) +
                    remote("buktadmin", endpoint, "admin", s3_secret(svc.admin_token())))
    # none of the caller's rclone or AWS settings (rclone 1.60's S3 backend fails
    # with an AWS_CA_BUNDLE set, even over plain http)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RCLONE_", "AWS_"))}
    env["HOME"] = str(conf.parent)

    def run(*args, check=True, binary=False, input=None):
        """rclone's result; stdout as bytes when `binary` (cat); `input` its stdin."""
        r = subprocess.run(["rclone", "--config", str(conf), "--retries", "1",
                            "--low-level-retries", "1", *args], env=env, input=input,
                           capture_output=True, timeout=300)
        if not binary:
            r.stdout = r.stdout.decode()
        r.stderr = r.stderr.decode(errors="replace")
        if check:
            # some failures (settier's) leave rclone's exit status 0: its log says
            assert r.returncode == 0 and " ERROR : " not in r.stderr, \
                f"rclone {' '.join(args)}:\n{r.stderr}"
        return r
    return run


def tree(root):
    """A directory of small files in two levels and one of 12 MiB (over the 5 MiB
    cutoff: a multipart upload of three parts)."""
    files = {"a.txt": b"alpha\n", "b/c.txt": b"c" * 1000, "b/d e.bin": os.urandom(70000),
             "big.bin": os.urandom(12 * MiB), "empty": b""}
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def test_copy_ls_check_cat_sync_delete(svc, rclone, tmp_path):
    src = tmp_path / "src"
    files = tree(src)
    rclone("copy", *MULTIPART, str(src), "bukt:photos/rc")
    store = bukt.attach(svc.name)
    try:
        # the big file went up in three parts (its ETag says so), the rest whole
        bucket = store.bucket("photos")
        assert objects.head(bucket, b"rc/big.bin").etag.endswith("-3")
        assert "-" not in objects.head(bucket, b"rc/a.txt").etag
        check_tree(rclone, src, files, tmp_path)
        # delete: every file under the path
        rclone("delete", "bukt:photos/rc")
        assert rclone("ls", "bukt:photos/rc").stdout == ""
        assert bucket.scan(prefix=b"rc/", count=1000)[1] == []
        assert store.check() == []
    finally:
        store.close()


def check_tree(rclone, src, files, tmp_path):

    # ls: every file with its size (ListObjects)
    listed = {}
    for line in rclone("ls", "bukt:photos/rc").stdout.splitlines():
        size, name = line.strip().split(" ", 1)
        listed[name] = int(size)
    assert listed == {k: len(v) for k, v in files.items()}

    # lsjson with hashes: a single-PUT object's MD5 is its ETag; the multipart one's
    # is the md5chksum rclone stored in its metadata (HeadObject)
    got = json.loads(rclone("lsjson", "-R", "--hash", "--files-only",
                            "bukt:photos/rc").stdout)
    by = {e["Path"]: e for e in got}
    assert set(by) == set(files)
    for name, data in files.items():
        assert by[name]["Size"] == len(data)
        assert by[name]["Hashes"]["md5"] == hashlib.md5(data).hexdigest(), name

    # check: sizes and MD5s of both sides agree (and it fails when one differs)
    rclone("check", str(src), "bukt:photos/rc")
    (src / "a.txt").write_bytes(b"alphA\n")
    r = rclone("check", str(src), "bukt:photos/rc", check=False)
    assert r.returncode != 0 and "a.txt" in r.stderr
    (src / "a.txt").write_bytes(files["a.txt"])

    # cat with --offset/--count: ranged GETs, within the big object and across a part boundary
    big = files["big.bin"]
    for off, count in ((0, 10), (5 * MiB - 3, 7), (12 * MiB - 100, 100)):
        out = rclone("cat", "--offset", str(off), "--count", str(count),
                     "bukt:photos/rc/big.bin", binary=True).stdout
        assert out == big[off:off + count], (off, count)
    assert rclone("cat", "bukt:photos/rc/b/c.txt", binary=True).stdout == files["b/c.txt"]

    # copy back: every byte the same
    back = tmp_path / "back"
    rclone("copy", "bukt:photos/rc", str(back))
    for name, data in files.items():
        assert (back / name).read_bytes() == data, name

    # sync deletes on the remote what the source lost
    (src / "b" / "c.txt").unlink()
    rclone("sync", *MULTIPART, str(src), "bukt:photos/rc")
    names = {line.strip().split(" ", 1)[1]
             for line in rclone("ls", "bukt:photos/rc").stdout.splitlines()}
    assert names == set(files) - {"b/c.txt"}
    rclone("check", str(src), "bukt:photos/rc")


def test_mkdir_rmdir_bucket(svc, rclone):
    # only the admin token creates buckets (docs/s3.md): its remote makes and drops one
    rclone("mkdir", "buktadmin:fresh")
    assert "fresh" in rclone("lsd", "buktadmin:").stdout
    rclone("copyto", "/etc/hostname", "buktadmin:fresh/h")
    r = rclone("rmdir", "buktadmin:fresh", check=False)
    assert r.returncode != 0                  # not empty: BucketNotEmpty
    rclone("delete", "buktadmin:fresh/h")
    rclone("rmdir", "buktadmin:fresh")
    assert "fresh" not in rclone("lsd", "buktadmin:").stdout
    # a bucket token sees its own bucket, and may not make another
    assert rclone("lsd", "bukt:").stdout.split()[-1] == "photos"
    r = rclone("mkdir", "bukt:another", check=False)
    assert r.returncode != 0 and "AccessDenied" in r.stderr
    assert "another" not in rclone("lsd", "buktadmin:").stdout


def test_own_bucket_created_first(svc, rclone):
    """rclone creates the bucket before it writes when it has not listed it first
    (mkdir, rcat): a bucket token creating its own bucket is told it has it already."""
    rclone("mkdir", "bukt:photos")
    rclone("mkdir", "bukt:photos/dir")
    small = b"streamed, size unknown\n"
    rclone("rcat", "bukt:photos/rcat/small", input=small)
    big = os.urandom(11 * MiB)               # streamed in 5 MiB parts
    rclone("rcat", "--s3-chunk-size", "5M", "bukt:photos/rcat/big", input=big)
    assert rclone("cat", "bukt:photos/rcat/small", binary=True).stdout == small
    assert rclone("cat", "bukt:photos/rcat/big", binary=True).stdout == big
    rclone("purge", "bukt:photos/rcat")
    assert rclone("ls", "bukt:photos/rcat").stdout == ""
    assert "photos" in rclone("lsd", "buktadmin:").stdout     # purge left the bucket


def test_open_uploads_listed_and_cleaned_up(svc, rclone):
    """rclone's multipart housekeeping: ListMultipartUploads, then AbortMultipartUpload
    of the ones older than max-age."""
    s3 = boto3.client("s3", endpoint_url=f"http://{svc.settings['s3']['bind']}",
                      aws_access_key_id="photos", aws_secret_access_key=s3_secret(svc.token),
                      region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"},
                                    signature_version="s3v4"))
    uid = s3.create_multipart_upload(Bucket="photos", Key="left/x")["UploadId"]
    s3.upload_part(Bucket="photos", Key="left/x", UploadId=uid, PartNumber=1, Body=b"p")
    got = json.loads(rclone("backend", "list-multipart-uploads", "bukt:photos").stdout)
    assert [(u["Key"], u["UploadId"]) for u in got["photos"]] == [("left/x", uid)]
    rclone("backend", "cleanup", "bukt:photos")               # only those over 24 h
    got = json.loads(rclone("backend", "list-multipart-uploads", "bukt:photos").stdout)
    assert [u["UploadId"] for u in got["photos"]] == [uid]
    rclone("backend", "cleanup", "-o", "max-age=1ms", "bukt:photos")
    got = json.loads(rclone("backend", "list-multipart-uploads", "bukt:photos").stdout)
    assert got["photos"] == []
    assert s3.list_multipart_uploads(Bucket="photos").get("Uploads", []) == []


def test_metadata_kept(svc, rclone, tmp_path):
    """rclone -M: the user metadata and the standard headers it sets come back."""
    f = tmp_path / "m.txt"
    f.write_bytes(b"metadata")
    sets = {"cache-control": "no-cache", "content-disposition": "inline",
            "content-language": "de", "content-type": "text/x-bukt", "color": "red"}
    args = [a for k, v in sets.items() for a in ("--metadata-set", f"{k}={v}")]
    rclone("copyto", "-M", *args, str(f), "bukt:photos/meta/m.txt")
    got = json.loads(rclone("lsjson", "-M", "bukt:photos/meta/m.txt").stdout)[0]
    assert {k: got["Metadata"].get(k) for k in sets} == sets
    # a server-side copy keeps them
    rclone("copyto", "bukt:photos/meta/m.txt", "bukt:photos/meta/n.txt")
    got = json.loads(rclone("lsjson", "-M", "bukt:photos/meta/n.txt").stdout)[0]
    assert {k: got["Metadata"].get(k) for k in sets} == sets
    rclone("purge", "bukt:photos/meta")


def test_link_and_versions(svc, rclone, tmp_path):
    """rclone link (a presigned GET, a week by default) and --s3-versions /
    --s3-version-at (ListObjectVersions: one version of each object)."""
    f = tmp_path / "v.txt"
    f.write_bytes(b"versioned?")
    rclone("copyto", str(f), "bukt:photos/ver/v.txt")
    url = rclone("link", "bukt:photos/ver/v.txt").stdout.strip()
    assert urllib.request.urlopen(url, timeout=30).read() == b"versioned?"
    assert rclone("ls", "--s3-versions", "bukt:photos/ver").stdout.split() == \
        ["10", "v.txt"]
    # the version at a time: a GET of version "null"; none before the object was made
    assert rclone("cat", "--s3-version-at", "2100-01-01", "--include", "v.txt",
                  "bukt:photos/ver", binary=True).stdout == b"versioned?"
    assert rclone("ls", "--s3-version-at", "2000-01-01", "bukt:photos/ver").stdout == ""
    rclone("purge", "bukt:photos/ver")


def test_settier_standard(svc, rclone, tmp_path):
    """rclone settier copies each object onto itself with x-amz-storage-class; the one
    class there is, STANDARD, leaves it as it was."""
    f = tmp_path / "t.txt"
    f.write_bytes(b"tiered")
    rclone("copyto", "-M", "--metadata-set", "color=blue", str(f), "bukt:photos/tier/t.txt")
    rclone("settier", "STANDARD", "bukt:photos/tier")     # no ERROR logged (run())
    got = json.loads(rclone("lsjson", "-M", "bukt:photos/tier/t.txt").stdout)[0]
    assert got["Tier"] == "STANDARD" and got["Metadata"]["color"] == "blue"
    assert rclone("cat", "bukt:photos/tier/t.txt", binary=True).stdout == b"tiered"
    rclone("purge", "bukt:photos/tier")


def test_server_side_copy_in_parts(svc, rclone, tmp_path):
    """A server-side copy over --s3-copy-cutoff goes as UploadPartCopy of ranges."""
    f = tmp_path / "big.bin"
    data = os.urandom(12 * MiB)
    f.write_bytes(data)
    rclone("copyto", str(f), "bukt:photos/ssc/big.bin")
    r = rclone("copyto", "-vv", "--s3-copy-cutoff", "5M", "bukt:photos/ssc/big.bin",
               "bukt:photos/ssc/copy.bin")
    assert "multipart copy with 3 parts" in r.stderr
    store = bukt.attach(svc.name)
    try:
        assert objects.head(store.bucket("photos"), b"ssc/copy.bin").etag.endswith("-3")
    finally:
        store.close()
    assert rclone("cat", "bukt:photos/ssc/copy.bin", binary=True).stdout == data
    rclone("check", str(tmp_path), "bukt:photos/ssc", "--include", "big.bin")
    rclone("purge", "bukt:photos/ssc")


ODD_NAMES = ["a+b", "c%20d", "ünï cödé", "x#y", "q?r", "semi;colon", "tilde~",
             "paren(1)", "amp&er", "eq=x", "star*", "quote'", "sub dir/deep+1",
             "brack[1]", "dollar$", "日本/語"]


@pytest.mark.parametrize("listing", [["--s3-list-version", "1"],
                                     ["--s3-list-version", "2"],
                                     ["--s3-list-url-encode=false"]],
                         ids=["v1", "v2", "no-url-encode"])
def test_odd_names(svc, rclone, tmp_path, listing):
    """Names that need escaping in a URL, a signature or a listing's XML go up, list
    and compare as they are, whichever listing rclone asks for."""
    src = tmp_path / "odd"
    for i, name in enumerate(ODD_NAMES):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode() * (i + 1))
    rclone("copy", *listing, str(src), "bukt:photos/odd")
    listed = {line.strip().split(" ", 1)[1]
              for line in rclone("ls", *listing, "bukt:photos/odd").stdout.splitlines()}
    assert listed == set(ODD_NAMES)
    rclone("check", *listing, str(src), "bukt:photos/odd")
    rclone("purge", *listing, "bukt:photos/odd")
