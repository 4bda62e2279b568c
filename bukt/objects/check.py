"""Checking objects (`bukt check`, tests): every object read whole against its
SHA-256 (and each chunk against its CRC-32), and the hidden entries that no object
needs counted (orphans: garbage the next sweep takes, or would take once readers are
done)."""
from bukt.errors import BuktError
from bukt.objects import store as objstore
from bukt.objects.reclaim import Reclaimer

SCAN_COUNT = 1000


def verify(store, upload_timeout=3600.0, digests=True) -> dict:
    """{"objects", "bytes", "bad": [{"bucket", "key", "error"}], "orphans",
    "orphan_objects"} over every bucket of the store."""
    out = {"objects": 0, "bytes": 0, "bad": [], "orphans": 0, "orphan_objects": 0}
    r = Reclaimer(upload_timeout)
    for name in store.buckets():
        try:
            bucket = store.bucket(name)
        except BuktError:
            continue
        garbage = r._garbage(bucket)
        out["orphan_objects"] += len(garbage)
        out["orphans"] += sum(len([k for k in keys if _exists(bucket, k)])
                              for keys in garbage.values())
        if not digests:
            continue
        cursor = 0
        while True:
            cursor, keys = bucket.scan(b"", cursor, SCAN_COUNT)
            for key in keys:
                _verify_one(bucket, name, key, out)
            if not cursor:
                break
    return out


def _exists(bucket, key):
    return bucket.read_entry(key, peek=True) is not None


def _verify_one(bucket, name, key, out):
    entry = bucket.read_entry(key, peek=True)
    if entry is None or not entry[1] & objstore.F_MANIFEST:
        return
    out["objects"] += 1
    try:
        reader = objstore.open(bucket, key, peek=True)
        if reader is None:
            return                  # gone since the scan
        with reader:
            if not reader.is_object:
                return
            for piece in reader.iter():
                out["bytes"] += len(piece)
    except BuktError as e:
        out["bad"].append({"bucket": name, "key": key, "error": str(e)})
