# The frame loop's C entry points, for the epoll loop (bukt/tcp/_epoll.pyx) to call without
# a Python call; bukt/tcp/_wire.pyx says what they do. `why` gets one of the stops below.

from libc.stdint cimport uint32_t

cdef enum:
    W_PARTIAL = 0
    W_FATAL = 1
    W_QUIT = 2
    W_DEFERRED = 3
    W_FULL = 4
    W_PARK = 5

cdef class Hot:
    # What run_frames reads of a Session for every batch, kept by a caller that runs
    # many batches of one connection (bukt/tcp/_wire.pyx says when it is refreshed).
    cdef object bucket
    cdef int perms
    cdef bint persist
    cdef bint stale

cdef Py_ssize_t request_key(const char *p, Py_ssize_t n, uint32_t *klen) noexcept

cdef Py_ssize_t run_frames(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                           Py_ssize_t max_frame, list out, Py_ssize_t out_limit,
                           int *why, bint recheck=*, Hot hot=*) except -1
