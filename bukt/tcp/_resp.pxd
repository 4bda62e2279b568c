# The RESP fast path's C entry, for the epoll loop (bukt/tcp/_epoll.pyx) to call without a
# Python call; bukt/tcp/_resp.pyx says what it does. `why` gets one of resp_session.py's
# STOP_* codes (the same numbers as bukt/tcp/_wire.pxd's W_*).

cdef Py_ssize_t run_fast(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                         Py_ssize_t max_frame, list out, Py_ssize_t out_limit, int *why,
                         bint recheck) except -1
