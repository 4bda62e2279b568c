"""SigV4 (bukt/http/s3/sigv4.py) against the worked examples of AWS's S3 documentation
("Signature Calculations for the Authorization Header" and "Signature Calculation:
Transfer Payload in Multiple Chunks"): the same secret, dates and requests, the
signatures AWS published."""
import hashlib

import pytest

from bukt.http.s3 import sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CRED = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def test_get_object_example():
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": sigv4.EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": "AWS4-HMAC-SHA256 Credential=" + CRED +
                         ",SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91"
                         "039c6036bdb41",
    }
    p = sigv4.parse(headers, [])
    sts = sigv4.string_to_sign(p, "GET", b"/test.txt", [],
                               {k: [v] for k, v in headers.items()})
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    assert sigv4.matches(key, sts, p.signature)
    wrong = sigv4.signing_key(SECRET + "x", "20130524", "us-east-1", "s3")
    assert not sigv4.matches(wrong, sts, p.signature)
    # a header changed after signing breaks it
    changed = {k: [v] for k, v in headers.items()}
    changed["range"] = ["bytes=0-10"]
    assert not sigv4.matches(key, sigv4.string_to_sign(p, "GET", b"/test.txt", [], changed),
                             p.signature)


def test_presigned_example():
    query = [("X-Amz-Algorithm", "AWS4-HMAC-SHA256"), ("X-Amz-Credential", CRED),
             ("X-Amz-Date", "20130524T000000Z"), ("X-Amz-Expires", "86400"),
             ("X-Amz-SignedHeaders", "host"),
             ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751"
                                 "f604d404")]
    p = sigv4.parse({"host": "examplebucket.s3.amazonaws.com"}, query)
    assert p.presigned
    sts = sigv4.string_to_sign(p, "GET", b"/test.txt", query,
                               {"host": ["examplebucket.s3.amazonaws.com"]})
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    assert sigv4.matches(key, sts, p.signature)
    with pytest.raises(sigv4.SigError) as e:
        sigv4.check_time(p, p.date + 86401, 900)
    assert e.value.code == "AccessDenied"
    sigv4.check_time(p, p.date + 86399, 900)


def chunked(data, size, sigs):
    out = b""
    pieces = [data[i:i + size] for i in range(0, len(data), size)] + [b""]
    for piece, sig in zip(pieces, sigs):
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), sig.encode(), piece)
    return out


SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
              "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
              "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def decoder():
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    return sigv4.ChunkDecoder(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request",
                              SEED)


def test_streaming_chunks_example():
    body = chunked(b"a" * 66560, 65536, CHUNK_SIGS)
    for step in (1, 7, 4096, len(body)):     # however the body arrives
        d = decoder()
        got = b""
        for i in range(0, len(body), step):
            got += b"".join(d.feed(body[i:i + step]))
        d.finish()
        assert got == b"a" * 66560


def test_streaming_chunk_tampered():
    body = bytearray(chunked(b"a" * 66560, 65536, CHUNK_SIGS))
    body[200] = ord("b")
    d = decoder()
    with pytest.raises(sigv4.SigError) as e:
        d.feed(bytes(body))
    assert e.value.code == "SignatureDoesNotMatch"
    # a body cut before its last chunk is incomplete
    d = decoder()
    d.feed(chunked(b"a" * 66560, 65536, CHUNK_SIGS)[:65600])
    with pytest.raises(sigv4.SigError):
        d.finish()


def test_unsigned_trailer_chunks():
    d = sigv4.ChunkDecoder()
    got = d.feed(b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n")
    d.finish()
    assert b"".join(got) == b"hello"
    assert d.trailer == {"x-amz-checksum-crc32": "NhCmhg=="}


def test_secret_is_the_segment_digest():
    assert sigv4.s3_secret("bkt_x") == hashlib.sha256(b"bkt_x").hexdigest()
    assert sigv4.secret_of_digest(hashlib.sha256(b"bkt_x").digest()) == \
        sigv4.s3_secret("bkt_x")


def test_anonymous_and_other_schemes():
    assert sigv4.parse({}, []) is None
    with pytest.raises(sigv4.SigError):
        sigv4.parse({"authorization": "AWS AKID:sig"}, [])
