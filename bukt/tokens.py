"""Access tokens: made here, stored in the segment only as their SHA-256.

Every front end (HTTP, TCP, the CLI) makes and hashes tokens with these two functions,
so a token made by one is accepted by the others. A token is "bkt_" and 43 URL-safe
characters (256 random bits): the prefix makes a leaked token easy to recognise in
logs and scanners, and means a token never starts with "-", which a command line would
take for an option.
"""
import hashlib
import logging
import os
import re
import secrets
import sys

# The permission to replicate (docs/design.md, Replicas): a token with it may take a
# full copy of the whole store and follow its log, every bucket's data and tokens
# included, whichever bucket it belongs to. Only the admin session gives it.
REPLICATE = 8

PREFIX = "bkt_"
TOKEN_BYTES = 32
ADMIN_FILE = "admin.token"     # in data_dir, mode 0600
ADMIN_ENV = "BUKT_ADMIN_TOKEN"

log = logging.getLogger("bukt")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


# The shape of every token new_token() makes; a token an operator gives (the same
# secret registered on several nodes: docs/scale-out.md) must have it too, so it is as
# strong as a generated one and safe on a command line, in YAML and in a RESP AUTH.
TOKEN_RE = re.compile(PREFIX + r"[A-Za-z0-9_-]{%d}" % len(secrets.token_urlsafe(TOKEN_BYTES)))


def check_given(token: str) -> str:
    """`token` if it has the shape of a generated token, else ValueError saying how to
    make one."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise ValueError(f"a given token must look like one Bukt makes: {PREFIX} and "
                         f"{len(secrets.token_urlsafe(TOKEN_BYTES))} URL-safe base64 "
                         "characters (256 random bits); take the token another node "
                         "printed, or make one with `bukt tokens new`")
    return token


def read_given(path: str) -> str:
    """A token from a file, or from stdin when `path` is "-" (never from the command
    line, where `ps` and the shell's history would show it): its first line, checked
    with check_given."""
    if path == "-":
        text = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as f:
            text = f.readline()
    return check_given(text.strip())


def digest(token) -> bytes:
    """The SHA-256 the segment keeps (store.add_token / store.find_token)."""
    if isinstance(token, str):
        token = token.encode("utf-8", "surrogateescape")
    return hashlib.sha256(token).digest()


def admin_token(configured, data_dir, *, create=False):
    """The admin token, the same way for every face: auth.admin_token (`configured`),
    else $BUKT_ADMIN_TOKEN, else data_dir/admin.token. Returns (token, source): source
    "config", "env" or the file's path; (None, None) when there is none and `create` is
    false (a face that then has no admin session). With `create` (the service's first
    start, the HTTP face) a missing file is generated; without data_dir that is a
    ValueError. An empty file is a ValueError either way.

    The file appears complete or not at all: the token is written to a temporary file,
    fsynced, and linked to its name (a link, unlike a rename, never replaces a token
    another process wrote meanwhile), then the directory is fsynced. A first start that
    fails for a full disk leaves no empty admin.token behind to refuse the next one."""
    if configured:
        return configured, "config"
    if os.environ.get(ADMIN_ENV):
        return os.environ[ADMIN_ENV], "env"
    if not data_dir:
        if not create:
            return None, None
        raise ValueError("no admin token: set auth.admin_token, BUKT_ADMIN_TOKEN or "
                         "data_dir (where one is generated)")
    path = os.path.join(data_dir, ADMIN_FILE)
    if not os.path.exists(path):
        if not create:
            return None, None
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        token = new_token()
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(token + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, path)
            finally:
                os.unlink(tmp)
        except FileExistsError:
            pass                                # another process wrote one first: read it
        else:
            from bukt.writer.aof import fsync_dir
            fsync_dir(data_dir)
            log.warning("generated the admin token into %s (mode 0600)", path)
            return token, path
    mode = os.stat(path).st_mode
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); chmod 600 it", path, mode & 0o777)
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path} is empty; remove it to have a new one generated")
    return token, path
