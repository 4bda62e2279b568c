"""Tokens: how they are made, where a request carries one, and what it may do.

A token is 32 random bytes from `secrets`, shown once in URL-safe base64. Only its
SHA-256 digest is kept: the admin token's digest in this process, bucket tokens' in the
segment (store.add_token), where store.find_token compares in constant time. A
request's token is never logged, echoed or written anywhere.

THE WORKER'S CACHE. Hashing a token and comparing it with every token of every bucket
(find_token) costs more than the store lookup a GET is for, and grows with the number
of buckets. So each worker remembers, in its own memory, the tokens it has recognised:
token -> (Principal, the Bucket object it was found in). A remembered token is trusted
again only after one cheap check against the segment, store.has_token(bucket, id,
perms): the Bucket object still names a live bucket (a dropped and re-created bucket,
whose token ids start again, is a new object with a new generation) and the bucket
still holds the token id with those permissions (ids are never reused within a
bucket, so a revoked token is refused from the next request on, whoever revoked it:
this worker, another, the CLI or a TCP session). Unknown tokens are not
remembered, so guessing fills nothing; the cache is emptied at TOKEN_CACHE_MAX
entries. Looking a token up in a dict is not constant time, but its hash is SipHash
with a per-process key and the only full comparison is with an equal-hashing entry.

Decision order, so that nothing leaks to a caller who may not know it:
  no token, or an unknown one          -> 401 (the bucket's existence is not revealed)
  a token of another bucket            -> 403
  a token of the bucket without the bit -> 403
  the admin token                      -> everything; a missing bucket is then 404
"""

import hmac
import logging
import math
from time import monotonic as _monotonic

from bukt.authguard import H_HORIZON, locked_message
from bukt.errors import AuthError, BuktError, PermissionDenied
from bukt.http.problems import Problem
from bukt.http.wire import header

READ, WRITE, ADMIN = 1, 2, 4
from bukt.tokens import REPLICATE  # noqa: E402 (one definition, shared)
PERM_NAMES = {"read": READ, "write": WRITE, "admin": ADMIN, "replicate": REPLICATE}
log = logging.getLogger("bukt.http")


from bukt.tokens import admin_token, digest, new_token  # noqa: E402,F401 (one definition, shared)


def perms_to_names(perms):
    return [name for name, bit in PERM_NAMES.items() if perms & bit]


def names_to_perms(names):
    """["read", "write"] -> READ|WRITE; ValueError on an unknown or empty list."""
    if not isinstance(names, list) or not names:
        raise ValueError("permissions must be a non-empty list of read, write, admin, "
                         "replicate")
    perms = 0
    if len(set(map(repr, names))) != len(names):
        raise ValueError("a permission is named twice")
    for name in names:
        if not isinstance(name, str) or name not in PERM_NAMES:
            raise ValueError(f"unknown permission {name!r}; use read, write, admin, "
                             "replicate")
        perms |= PERM_NAMES[name]
    return perms


def token_of(req):
    """The token a request carries in X-Auth-Token, X-API-Key or Authorization: Bearer."""
    token = header(req, b"x-auth-token") or header(req, b"x-api-key")
    if token:
        return token.strip()
    authz = header(req, b"authorization")
    if authz:
        scheme, _, value = authz.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class Principal:
    """Who a token is: its bucket (None for the admin token), id and permissions."""

    __slots__ = ("bucket", "token_id", "perms")

    def __init__(self, bucket, token_id, perms):
        self.bucket, self.token_id, self.perms = bucket, token_id, perms

    @property
    def is_admin(self):
        return self.bucket is None


ADMIN_PRINCIPAL = Principal(None, 0, READ | WRITE | ADMIN)


TOKEN_CACHE_MAX = 1024    # tokens a worker remembers (see THE WORKER'S CACHE)


class Authenticator:
    def __init__(self, store, admin_token, guard=None):
        self.store = store
        self.guard = guard        # failed tokens per address (bukt/authguard.py), or None
        self._horizon = guard.table.words if guard is not None else None
        self._admin_digest = digest(admin_token) if admin_token else None
        self._known = {}          # token (str or bytes, as sent) -> (Principal, Bucket)
        # Tokens this worker recognised and then found revoked: a client still sending
        # one is stale, not guessing, and is not counted as a failure (it cannot be
        # put here without knowing a token that was valid).
        self._revoked = {}

    def identify(self, req, token=None):
        """The Principal of the request's token; AuthError when missing or unknown."""
        token = token if token is not None else token_of(req)
        if not token:
            raise AuthError("a token is needed: X-Auth-Token, X-API-Key or "
                            "Authorization: Bearer")
        guard = self.guard
        if guard is not None and self.guarded():
            # A locked-out address: refused before its token is looked at, valid or
            # not (bukt/authguard.py says why), with no wait on the loop.
            address = _peer(req)
            left = guard.check(address)
            if left:
                raise Problem(429, "auth_locked", locked_message(address, left),
                              {"Retry-After": str(max(1, math.ceil(left)))})
        p = self.lookup(token)
        if p is None:
            if guard is not None and _raw(token) not in self._revoked:
                guard.failed(_peer(req))
            raise AuthError("unknown or revoked token")
        return p

    def guarded(self):
        """Whether some address may be locked out now (one read of shared memory):
        while not, no request needs its address checked. The fast path (fastpath.py)
        leaves every request to the slow path while it is."""
        return self._horizon is not None and _monotonic() < self._horizon[H_HORIZON]

    def lookup(self, token):
        """The Principal of a token (str, or the header's bytes), or None when it is
        unknown."""
        found = self.resolve(token)
        return found[0] if found is not None else None

    def resolve(self, token):
        """(Principal, the Bucket object its token belongs to) for a token, or None
        when it is unknown. The Bucket is None for the admin token, and for a token
        whose bucket is going away. FAST PATH: a token this worker has seen, still
        valid; SLOW PATH: hash it and search the segment."""
        known = self._known.get(token)
        if known is not None:
            p, bucket = known
            if bucket is None or self.store.has_token(bucket, p.token_id, p.perms):
                return known
            del self._known[token]
            if len(self._revoked) >= TOKEN_CACHE_MAX:
                self._revoked.clear()
            self._revoked[_raw(token)] = True
        d = digest(token.decode("latin-1") if isinstance(token, bytes) else token)
        if self._admin_digest is not None and hmac.compare_digest(d, self._admin_digest):
            p, bucket = ADMIN_PRINCIPAL, None
        else:
            found = self.store.find_token(d)
            if found is None:
                return None
            p = Principal(*found)
            try:
                bucket = self.store.bucket(p.bucket)
            except BuktError:
                return p, None
        if len(self._known) >= TOKEN_CACHE_MAX:
            self._known.clear()
        known = self._known[token] = p, bucket
        return known

    def require(self, req, bucket, perm, token=None):
        """The Principal if its token may do `perm` on `bucket` (None: admin only)."""
        p = self.identify(req, token)
        req.context.bucket = bucket
        if p.is_admin:
            return p
        if bucket is None:
            raise PermissionDenied("this needs the admin token")
        if p.bucket != bucket:
            raise PermissionDenied("this token belongs to another bucket")
        if not p.perms & perm:
            raise PermissionDenied(f"this token lacks the {perms_to_names(perm)[0]} "
                                   "permission")
        return p


def _raw(token):
    """A token as the header's bytes, whichever path (fast: bytes, slow: str) has it."""
    return token if isinstance(token, bytes) else token.encode("latin-1")


def _peer(req):
    client = req.scope.get("client")
    return client[0] if client else "-"


def resolve_admin_token(settings):
    """The admin token for the HTTP face, generated into data_dir/admin.token at first
    start: (token, source), bukt.tokens.admin_token."""
    return admin_token(settings.admin_token, settings.data_dir, create=True)
