from libc.stdint cimport uint32_t

# The RESP fast path's C entry, for the epoll loop (bukt/tcp/_epoll.pyx) to call without a
# Python call; bukt/tcp/_resp.pyx says what it does. `why` gets one of resp_session.py's
# STOP_* codes (the same numbers as bukt/tcp/_wire.pxd's W_*).

cdef Py_ssize_t run_fast(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                         Py_ssize_t max_frame, list out, Py_ssize_t out_limit, int *why,
                         bint recheck) except -1

# PREFETCH (bukt/tcp/_resp.pyx): where the key of the one-key command that starts p[:n]
# starts, its length in *klen; -1 when p[:n] does not start with one, whole. A hint only.
cdef Py_ssize_t request_key(const char *p, Py_ssize_t n, Py_ssize_t max_bulk,
                            uint32_t *klen) noexcept

# The bucket the last run_fast ran on, if a bukt._core.Bucket (else None): a hint's.
cdef object batch_bucket()
