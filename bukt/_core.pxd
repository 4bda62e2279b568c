# The core's C boundary: what other extension modules call in bukt._core without a
# Python call (the faces' fast paths: bukt/tcp/_wire.pyx, bukt/tcp/_epoll.pyx). It is
# the only place they are declared. bukt._core is compiled from cext/core.pyx, which
# defines them (cext/bucket.pxi, cext/meta.pxi) and finds this file through the project
# root on its include path (pyproject.toml); Cython exports each function below in
# bukt._core.__pyx_capi__ and binds it, signature checked, when a module that cimports
# it is imported:
#
#     from bukt._core cimport read_into, READ_HIT, READ_MISS
#
# Each takes the object as it comes (object, not the cdef class, whose layout stays
# private to the core) and casts it without a check: the caller makes sure first that
# it is exactly a bukt._core.Bucket or Store (`type(x) is _core.Bucket`).

from libc.stdint cimport uint32_t, uint64_t

cdef enum:                      # what read_into found
    READ_HANDED_BACK = -1       # not settled here: the caller asks Bucket.get
    READ_MISS = 0
    READ_HIT = 1

# A GET of a bytes bucket into a buffer the caller lays out: the value copied once into
# a new bytes object after `room` bytes reserved for the caller's header, and counted as
# Bucket.get counts it (cext/bucket.pxi says when it hands back). For a Bucket.
cdef object read_into(object bucket, const char *k, uint32_t n, Py_ssize_t room,
                      int *found)

# Memory fetches for a key read soon, in two stages (cext/bucket.pxi, PREFETCH: which
# lines). Reads nothing it trusts, writes nothing, never fails. For a Bucket.
cdef void prefetch_key(object bucket, const char *k, uint32_t n, int stage) noexcept

# The segment's meta_epoch (Store.meta_epoch), 0 when the store is closed. For a Store.
cdef uint64_t meta_epoch_of(object store) noexcept

# Under `fsync: always` (cext/flushwake.pxi, THE FLUSH WAKER): the writer's flushed ring
# position, and the position just past this process's last record (Store.last_pos);
# both 0 when the store is closed. For a Store.
cdef uint64_t flushed_pos_of(object store) noexcept
cdef uint64_t last_pos_of(object store) noexcept
