# This worker's row of the shared counters (bukt/tcp/stats.py), as each compiled loop of
# the TCP face keeps it (`include`d by _wire.pyx, _resp.pyx and _epoll.pyx, each with
# its own pointer): NULL while nothing is counted, so a counted event pays a NULL test
# and an add. bukt/tcp/stats.py points every module at the same row.

cdef uint64_t *STATS = NULL
cdef object STATS_ROW = None        # the memoryview STATS points into, kept alive


cdef point_stats(row):
    """STATS at `row` (a memoryview of u64 words), or NULL for None."""
    global STATS, STATS_ROW
    cdef uint64_t[::1] words
    if row is None:
        STATS, STATS_ROW = NULL, None
        return
    words = row
    STATS_ROW = words
    STATS = &words[0]
