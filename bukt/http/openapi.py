"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json.

Written by hand next to the resources it describes; tests/integration/test_http_server.py runs
schemathesis against the served document, so a route or a response shape that drifts
from it fails there.
"""

from bukt._core import SCHEMAS
from bukt.http.wire import MAX_TTL
from bukt.tokens import TOKEN_RE

NAME = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
JSON_VALUE = {"type": ["string", "integer"]}
TTL = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TTL}
ENCODING = {"type": "string", "enum": ["utf-8", "base64"], "default": "utf-8",
            "description": "How keys and values are carried in JSON: UTF-8 text, or "
                           "base64 for any bytes."}
PERMS = {"type": "array", "minItems": 1, "uniqueItems": True,
         "items": {"type": "string", "enum": ["read", "write", "admin"]}}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required=(), **props):
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


GIVEN_TOKEN = {"type": "string", "pattern": f"^{TOKEN_RE.pattern}$",
               "description": "register this secret instead of making a token (admin "
               "token only; the same token on every node behind a proxy); not echoed"}


def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def json_response(description, schema, headers=None):
    r = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        r["headers"] = headers
    return r


def header(description, schema=None):
    return {"description": description, "schema": schema or {"type": "string"}}


PROBLEM = {"description": "An RFC 9457 problem; `code` is stable.",
           "content": {"application/problem+json": {"schema": ref("Problem")}}}
EMPTY = {"description": "Done; no content."}


def op(summary, responses, params=(), body=None, auth=True, op_id=None):
    o = {"summary": summary, "operationId": op_id,
         "responses": {**{str(k): v for k, v in responses.items()}, "default": PROBLEM}}
    if params:
        o["parameters"] = list(params)
    if body:
        o["requestBody"] = body
    if not auth:
        o["security"] = []
    return o


def path_param(name, schema):
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query(name, schema, description=""):
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def hdr(name, schema, description=""):
    return {"name": name, "in": "header", "required": False, "schema": schema,
            "description": description}


BUCKET = path_param("name", NAME)
KEY = path_param("key", {"type": "string", "minLength": 1})
ETAG = header("The entry's version, quoted.")
TTL_OUT = header("Remaining time to live in seconds, when the key has one.")
RAW_VALUE = {"application/octet-stream": {"schema": {"type": "string",
                                                     "format": "binary"}},
             "text/plain": {"schema": {"type": "string"}},
             "application/json": {"schema": {"description": "a json bucket's document"}}}
EXISTED = obj(["existed"], existed={"type": "boolean"})
KEYS_BODY = json_body(obj(["keys"], keys={"type": "array", "maxItems": 1000,
                                          "items": {"type": "string"}},
                          encoding=ENCODING))


def document():
    bucket = "/api/v1/buckets/{name}"
    paths = {
        "/healthz": {"get": op("Liveness of the segment and the writer", {
            200: json_response("Healthy", ref("Health")),
            503: json_response("Unhealthy, with the reason", ref("Health"))},
            auth=False, op_id="health"),
            "head": op("The GET's status and headers, without a body", {
                200: {"description": "Healthy"}, 503: {"description": "Unhealthy"}},
                auth=False, op_id="healthHead")},
        "/metrics": {"get": op("Counters: Prometheus text, or JSON with ?format=json", {
            200: {"description": "Metrics", "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}}}}},
            [query("format", {"type": "string", "enum": ["prometheus", "json"]})],
            op_id="metrics")},
        "/api/v1/service": {"get": op("The service at a glance (admin token): writer "
                                      "state and fsync policy, ring, memory by slab "
                                      "class, data directory and compaction, workers", {
            200: json_response("The service", ref("Service"))}, op_id="service")},
        "/api/v1/openapi.json": {"get": op("This document", {
            200: json_response("OpenAPI 3.1", {"type": "object"})}, auth=False,
            op_id="openapi")},
        "/api/v1/buckets": {
            "get": op("List buckets (admin token)", {
                200: json_response("Names", obj(["buckets"], buckets={
                    "type": "array", "items": {"type": "string"}}))}, op_id="listBuckets"),
            "post": op("Create a bucket (admin token); its first token is shown once", {
                201: json_response("Created", ref("BucketCreated"))},
                body=json_body(ref("BucketCreate")), op_id="createBucket")},
        bucket: {
            "parameters": [BUCKET],
            "get": op("Settings and stats (read)", {
                200: json_response("The bucket", ref("BucketInfo"))}, op_id="getBucket"),
            "delete": op("Drop the bucket and its keys (admin token or bucket admin; "
                         "the token may come in the body)", {204: EMPTY},
                         body=json_body(obj(token={"type": "string"}), required=False),
                         op_id="dropBucket")},
        f"{bucket}/tokens": {
            "parameters": [BUCKET],
            "get": op("Token ids and permissions, never secrets (admin)", {
                200: json_response("Tokens", obj(["tokens"], tokens={
                    "type": "array", "items": obj(["id", "permissions"], id={
                        "type": "integer"}, permissions=PERMS)}))}, op_id="listTokens"),
            "post": op("Make a token (admin); shown once", {
                201: json_response("Created", ref("TokenCreated"))},
                body=json_body(obj(["permissions"], permissions=PERMS, token=GIVEN_TOKEN)),
                op_id="createToken")},
        f"{bucket}/tokens/{{token_id}}": {
            "parameters": [BUCKET, path_param("token_id", {"type": "integer",
                                                           "minimum": 1,
                                                           "maximum": 4294967295})],
            "delete": op("Revoke a token (admin)", {204: EMPTY}, op_id="revokeToken")},
        f"{bucket}/watch": {"get": op(
            "The bucket's changes as Server-Sent Events (read): `id:` each change's "
            "sequence, `event:` its kind, `data:` its JSON; resume with `since` or "
            "Last-Event-ID; ends with a gone, cutoff or revoked event (docs/http.md)", {
                200: {"description": "An endless event stream", "content": {
                    "text/event-stream": {"schema": {"type": "string"}}}}},
            [BUCKET, query("prefix", {"type": "string"}, "keys starting with it"),
             query("since", {"type": "integer", "minimum": 0},
                   "resume after this sequence"),
             query("values", {"type": "boolean"}, "set and incr events carry the value"),
             hdr("Last-Event-ID", {"type": "string"}, "as since")],
            op_id="watchBucket")},
        f"{bucket}/keys": {"get": op("Scan keys by prefix with a cursor (read)", {
            200: json_response("A page", obj(["cursor", "encoding", "keys"], cursor={
                "type": "string", "pattern": "^[0-9]+$",
                "description": "\"0\" when the scan is done"},
                encoding={"type": "string", "enum": ["utf-8", "base64"],
                          "description": "How this page's keys are written: as asked, "
                                         "or base64 when a key of the page is not UTF-8"},
                keys={"type": "array", "items": {"type": "string"}}))},
            [BUCKET, query("prefix", {"type": "string"}),
             query("cursor", {"type": "string", "pattern": "^[0-9]+$"}),
             query("count", {"type": "integer", "minimum": 1, "maximum": 10000}),
             query("encoding", ENCODING)], op_id="scan")},
        f"{bucket}/keys/{{key}}": {
            "parameters": [BUCKET, KEY],
            "get": op("The raw value, with ETag and Bukt-TTL (read)", {
                200: {"description": "The value", "content": RAW_VALUE,
                      "headers": {"ETag": ETAG, "Bukt-TTL": TTL_OUT}},
                206: {"description": "A byte range of the value", "content": RAW_VALUE,
                      "headers": {"Content-Range": header("bytes a-b/size")}},
                304: {"description": "Not modified (If-None-Match)"}},
                [hdr("If-None-Match", {"type": "string"}),
                 hdr("If-Match", {"type": "string"}),
                 hdr("Range", {"type": "string"}),
                 hdr("If-Range", {"type": "string"}),
                 query("peek", {"type": "boolean"}, "true: read without consuming a "
                       "single-read key (the dashboard's key browser)")],
                op_id="getKey"),
            "head": op("The GET's headers, Content-Length included; a peek that never "
                       "consumes a single-read key (read)", {
                200: {"description": "Exists", "headers": {"ETag": ETAG,
                                                           "Bukt-TTL": TTL_OUT}},
                304: {"description": "Not modified"}},
                [hdr("If-None-Match", {"type": "string"}),
                 hdr("If-Match", {"type": "string"})], op_id="headKey"),
            "put": op("Store a value: a raw body, or JSON {value, ttl_seconds, "
                      "single_read} (the envelope); on a json bucket the body is the "
                      "document, and any other JSON body on a bytes bucket is stored "
                      "as its bytes (write)", {
                200: json_response("Stored (JSON request)", ref("PutResult"),
                                   {"ETag": ETAG}),
                204: {"description": "Stored (raw body)", "headers": {"ETag": ETAG}}},
                [query("ttl", TTL), query("single_read", {"type": "boolean"}),
                 hdr("Bukt-TTL", {"type": "string"}),
                 hdr("Bukt-Single-Read", {"type": "string"}),
                 hdr("If-Match", {"type": "string"}),
                 hdr("If-None-Match", {"type": "string"})],
                body={"required": False, "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}},
                    # the envelope, or any document (docs/http.md, JSON documents)
                    "application/json": {"schema": {"anyOf": [ref("PutJson"), {}],
                        "description": "On a json bucket: the document. Elsewhere: the "
                        "envelope when the body is a non-empty object of its keys alone, "
                        "else any JSON, stored as its bytes"}}}}, op_id="putKey"),
            "delete": op("Delete a key (write)", {204: EMPTY},
                         [hdr("If-Match", {"type": "string"})], op_id="deleteKey")},
        f"{bucket}/keys/{{key}}/incr": {
            "parameters": [BUCKET, KEY],
            "post": op("Add `by` to a decimal value; absent: initial + by (write)", {
                200: json_response("The new value", obj(["value"],
                                                        value={"type": "integer"}))},
                [query("by", {"type": "integer"}), query("initial", {"type": "integer"}),
                 query("ttl", TTL)], op_id="incr")},
        f"{bucket}/mget": {"parameters": [BUCKET], "post": op("Values of keys (read)", {
            200: json_response("null where absent", obj(["values"], values={
                "type": "array", "items": {"type": ["string", "integer", "null"]}}))},
            body=KEYS_BODY, op_id="mget")},
        f"{bucket}/mset": {"parameters": [BUCKET], "post": op("Store many (write)", {
            200: json_response("Versions in order", obj(["versions"], versions={
                "type": "array", "items": {"type": "integer"}}))},
            body=json_body(obj(["items"], items={
                "type": "object", "maxProperties": 1000,
                "additionalProperties": JSON_VALUE},
                ttl_seconds=TTL, encoding=ENCODING)), op_id="mset")},
        f"{bucket}/delete": {"parameters": [BUCKET], "post": op("Delete many (write)", {
            200: json_response("How many existed", obj(["deleted"], deleted={
                "type": "integer"}))}, body=KEYS_BODY, op_id="deleteMany")},
        f"{bucket}/exists": {"parameters": [BUCKET], "post": op("Count existing (read)", {
            200: json_response("How many exist", obj(["exists"], exists={
                "type": "integer"}))}, body=KEYS_BODY, op_id="exists")},
        f"{bucket}/expire": {"parameters": [BUCKET], "post": op(
            "Give a key a TTL (write)", {200: json_response("Whether the key existed", EXISTED)},
            body=json_body(obj(["key", "ttl_seconds"], key={"type": "string"},
                               ttl_seconds={"type": "number", "exclusiveMinimum": 0,
                                            "maximum": MAX_TTL},
                               encoding=ENCODING)), op_id="expire")},
        f"{bucket}/persist": {"parameters": [BUCKET], "post": op(
            "Remove a key's TTL (write)", {200: json_response("Whether the key existed",
                                                              EXISTED)},
            body=json_body(obj(["key"], key={"type": "string"}, encoding=ENCODING)),
            op_id="persist")},
        f"{bucket}/flush": {"parameters": [BUCKET], "post": op(
            "Delete every key of the bucket; it, its settings and tokens stay (admin)", {
                200: json_response("How many were deleted", obj(["deleted"], deleted={
                    "type": "integer"}))}, op_id="flushBucket")},
        "/api/v1/kv": {"post": op("Original API: store; the token names the bucket", {
            201: json_response("Stored", ref("KvEntry"))},
            body=json_body(obj(["key", "value"], key={"type": "string", "minLength": 1},
                               value=JSON_VALUE, ttl=TTL,
                               single_read={"type": "boolean"}, encoding=ENCODING)),
            op_id="kvSet")},
        "/api/v1/kv/{key}": {
            "parameters": [KEY],
            "get": op("Original API: read", {200: json_response("The entry",
                                                               ref("KvEntry"))},
                      [query("encoding", ENCODING)], op_id="kvGet"),
            "delete": op("Original API: delete", {204: EMPTY}, op_id="kvDelete")},
    }
    schemas = {
        "Problem": obj(["type", "title", "status", "code"], type={"type": "string"},
                       title={"type": "string"}, status={"type": "integer"},
                       code={"type": "string"}, detail={"type": "string"},
                       instance={"type": "string"}),
        "Health": obj(["status"], status={"type": "string", "enum": ["ok",
                                                                     "unavailable"]},
                      segment={"type": "string"}, reason={"type": "string"},
                      writer={"type": ["string", "object"]}),
        "BucketCreate": obj(["name"], name=NAME,
                            schema={"type": "string", "enum": list(SCHEMAS)},
                            eviction={"type": "string", "enum": ["lru", "none"]},
                            persist={"type": "boolean"}, default_ttl=TTL,
                            max_memory={"type": ["integer", "string", "null"],
                                        "description": "bytes of chunks its entries may "
                                        "take (or a size: \"64MiB\"); null: no limit"},
                            compression={"type": ["string", "null"],
                                         "enum": ["none", "zstd", "lz4", None],
                                         "description": "values stored compressed "
                                         "(default none)"},
                            compression_threshold={
                                "type": ["integer", "string", "null"],
                                "description": "smaller values are stored raw (bytes or "
                                "a size; default 1KiB)"},
                            compression_min_saving={
                                "type": ["integer", "null"], "minimum": 0, "maximum": 90,
                                "description": "percent; a smaller saving is stored raw "
                                "(default 10)"},
                            token=GIVEN_TOKEN),
        "BucketCreated": obj(["name", "token_id", "permissions"],
                             name={"type": "string"}, token={"type": "string"},
                             token_id={"type": "integer"}, permissions=PERMS),
        "BucketInfo": obj(["name", "schema", "eviction", "persist", "stats"],
                          name={"type": "string"}, schema={"type": "string"},
                          eviction={"type": "string"}, persist={"type": "boolean"},
                          default_ttl={"type": ["number", "null"]},
                          max_memory={"type": ["integer", "null"]},
                          compression={"type": "string"},
                          compression_threshold={"type": ["integer", "null"]},
                          compression_min_saving={"type": ["integer", "null"]},
                          stats={"type": "object",
                                 "additionalProperties": {"type": "number"}}),
        "Service": obj(
            ["instance", "writer", "ring", "memory", "classes", "faces"],
            instance={"type": "string"}, time={"type": "number"},
            serve_pid={"type": ["integer", "null"]},
            writer=obj(["state", "fsync"],
                       state={"type": "string",
                              "enum": ["ready", "starting", "error", "gone", "absent"]},
                       pid={"type": ["integer", "null"]},
                       error={"type": ["string", "null"]},
                       fsync={"type": "string", "enum": ["always", "everysec", "no"]},
                       fsync_lag_seconds={"type": ["number", "null"]},
                       heartbeat_age_seconds={"type": ["number", "null"]},
                       log_bytes={"type": "integer"}, flushed_seq={"type": "integer"}),
            ring=obj(["size", "depth", "unflushed"], size={"type": "integer"},
                     depth={"type": "integer"}, unflushed={"type": "integer"}),
            memory={"type": "object", "additionalProperties": {"type": "integer"}},
            classes={"type": "array", "items": obj(
                ["chunk_size", "slabs", "slab_bytes", "chunks", "used", "used_bytes"],
                chunk_size={"type": "integer"}, slabs={"type": "integer"},
                slab_bytes={"type": "integer"}, chunks={"type": "integer"},
                used={"type": "integer"}, used_bytes={"type": "integer"})},
            keys={"type": "integer"}, buckets={"type": "integer"},
            disk={"type": ["object", "null"]}, compaction={"type": ["object", "null"]},
            faces={"type": "object"}),
        "TokenCreated": obj(["id", "permissions"], id={"type": "integer"},
                            token={"type": "string"}, permissions=PERMS),
        "PutJson": obj(["value"], value=JSON_VALUE, ttl_seconds=TTL,
                       single_read={"type": "boolean"}, encoding=ENCODING),
        "PutResult": obj(["value", "expires_at"], value=JSON_VALUE,
                         expires_at={"type": ["string", "null"], "format": "date-time"}),
        "KvEntry": obj(["key", "value", "expires_at"], key={"type": "string"},
                       value=JSON_VALUE,
                       expires_at={"type": ["string", "null"], "format": "date-time"}),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bukt HTTP API", "version": "1",
                 "description": "A shared-memory key-value cache. Errors are "
                                "application/problem+json with a stable `code`."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "authToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"authToken": []}, {"apiKey": []}, {"bearer": []}],
    }
