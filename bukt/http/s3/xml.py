"""S3's XML: error documents and the few response bodies the gateway writes, and the
request bodies it reads (DeleteObjects, CompleteMultipartUpload)."""

import time
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_TYPE = b"application/xml"
MAX_XML_BODY = 1 << 20      # DeleteObjects' 1000 keys of 1 KiB fit

# code -> HTTP status (S3's own pairs; docs/s3.md lists the ones Bukt uses)
STATUS = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    def __init__(self, code, message, resource="", **extra):
        super().__init__(message)
        self.code, self.message, self.resource, self.extra = code, message, resource, extra

    @property
    def status(self):
        return STATUS.get(self.code, 400)


def error_body(code, message, resource="", request_id="", extra=None):
    fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in (extra or {}).items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message><Resource>{escape(resource)}</Resource>"
            f"{fields}<RequestId>{request_id}</RequestId></Error>").encode()


def iso(ms):
    """S3's timestamps in listings: 2009-10-12T17:50:30.000Z."""
    s, ms = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % ms


def http_date(ms):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(int(ms) // 1000))


def doc(root, inner):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}">{inner}'
            f"</{root}>").encode()


def el(name, value):
    return f"<{name}>{escape(str(value))}</{name}>"


def parse(body, what):
    """An ElementTree root with S3's namespace taken off every tag; MalformedXML when
    it is not XML."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML", f"the {what} body is not well-formed XML") from None
    for e in root.iter():
        if isinstance(e.tag, str) and "}" in e.tag:
            e.tag = e.tag.split("}", 1)[1]
    return root
