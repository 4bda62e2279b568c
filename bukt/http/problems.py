"""Errors as RFC 9457 problem documents (application/problem+json) with a stable `code`.

Every bukt.errors class has one status and keeps its own `code`, so a client acts on
`code` without reading messages. Errors the HTTP layer finds itself (a bad header, a
body too large, a rate limit) are `Problem`s with codes of their own, listed in
HTTP_CODES; falcon's own errors (no route, wrong method) get a code from their status.
"""

import json
import logging

import falcon

from bukt import errors

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("bukt.http")

# bukt.errors class -> HTTP status. A subclass not listed takes its base's status.
STATUS = {
    errors.InvalidArgument: 400,
    errors.SchemaError: 400,
    errors.ProtocolError: 400,
    errors.AuthError: 401,
    errors.PermissionDenied: 403,
    errors.BucketNotFound: 404,
    errors.NotFound: 404,
    errors.BucketExists: 409,
    errors.LimitExceeded: 409,
    errors.VersionMismatch: 412,
    errors.KeyTooLarge: 413,
    errors.ValueTooLarge: 413,
    errors.SegmentFull: 507,
    errors.ReadOnly: 503,
    errors.RingFull: 503,
    errors.WriterDown: 503,
    errors.DiskError: 503,
    errors.SegmentRetired: 503,
    errors.SegmentNotFound: 503,
    errors.SegmentInvalid: 503,
    errors.FormatMismatch: 503,
    errors.SegmentExists: 500,
    errors.IntegrityError: 500,
    errors.BuktError: 500,
}

# Codes of errors found by the HTTP layer, by the status falcon raises them with.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    412: "version_mismatch",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal",
    503: "unavailable",
    507: "segment_full",
}


def status_of(exc):
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


class Problem(falcon.HTTPError):
    """An error the HTTP layer reports itself: a status, a stable code, a detail."""

    def __init__(self, status, code, detail, headers=None):
        super().__init__(status, title=falcon.code_to_http_status(status)[4:],
                         description=detail, headers=headers)
        self.code = code


def problem_body(status, code, detail, instance=None):
    body = {"type": f"urn:bukt:problem:{code}",
            "title": falcon.code_to_http_status(status)[4:],
            "status": status, "code": code, "detail": detail or ""}
    if instance:
        body["instance"] = instance
    return json.dumps(body)


def serialize_error(req, resp, exc):
    """falcon's error serializer: every HTTPError leaves as problem+json."""
    status = exc.status_code
    code = getattr(exc, "code", None) or HTTP_CODES.get(status, "error")
    detail = exc.description or exc.title or ""
    resp.content_type = PROBLEM_JSON
    resp.text = problem_body(status, code, detail, req.path)


async def handle_bukt_error(req, resp, exc, params):
    status = status_of(exc)
    if status >= 500 and not isinstance(exc, (errors.SegmentFull,)):
        log.warning("%s on %s %s: %s", type(exc).__name__, req.method, req.path, exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="bukt"'}
    raise Problem(status, exc.code, str(exc) or exc.__doc__ or "", headers)


async def handle_unexpected(req, resp, exc, params):
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise Problem(500, "internal", "internal error; see the server log")


def install(app):
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(errors.BuktError, handle_bukt_error)
    app.set_error_serializer(serialize_error)
