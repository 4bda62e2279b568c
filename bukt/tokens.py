"""Access tokens: made here, stored in the segment only as their SHA-256.

Every front end (HTTP, TCP, the CLI) makes and hashes tokens with these two functions,
so a token made by one is accepted by the others. A token is "bkt_" and 43 URL-safe
characters (256 random bits): the prefix makes a leaked token easy to recognise in
logs and scanners, and means a token never starts with "-", which a command line would
take for an option.
"""
import hashlib
import secrets

PREFIX = "bkt_"
TOKEN_BYTES = 32


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(token) -> bytes:
    """The SHA-256 the segment keeps (store.add_token / store.find_token)."""
    if isinstance(token, str):
        token = token.encode("utf-8", "surrogateescape")
    return hashlib.sha256(token).digest()
