"""Objects: values larger than one entry, stored as chunks plus a manifest
(docs/design.md, "Objects"; the API is in bukt/objects/store.py)."""
from bukt.objects.manifest import (DigestMismatch, IntegrityError, Manifest, ObjectError,
                                   ObjectGone, ObjectTooLarge)
from bukt.objects.store import (ObjectReader, aput, check_size, configure, decode_manifest, delete,
                                head, max_object, open, put, read, store_large)

__all__ = ["put", "aput", "open", "read", "head", "delete", "configure", "max_object",
           "store_large", "decode_manifest", "check_size", "ObjectReader", "Manifest", "ObjectError",
           "ObjectTooLarge", "DigestMismatch", "IntegrityError", "ObjectGone"]
