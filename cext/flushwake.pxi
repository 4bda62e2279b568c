# flushwake.pxi: THE FLUSH WAKER, how the writer wakes a waiting event loop itself.
#
# Under `fsync: always` a front end's event loop (a TCP worker's epoll loop, an HTTP
# worker's asyncio loop) holds each write's response until the writer's flushed
# position passes the write's record. The loop cannot sleep on the flush_epoch futex
# (Store.wait_durable, what local programs do), so the writer tells it: each process
# that waits binds a datagram socket in the abstract namespace,
# "\0bukt-wake-<pid>-<name, 8 hex digits>" (a random name, nonzero), and keeps in its
# process row (bk_proc, the row its counters are in) the name, the ring position it
# waits for (wake_pos) and a flag (wake_armed). After every flush the writer looks at
# the rows and sends one datagram to each armed one whose position the flush covers;
# the loop watches the socket with its other file descriptors. One wake-up a flush
# for the waiting process, none for anyone else: before, a thread of the worker slept
# on the futex and wrote an eventfd the loop watched (flushnote.pxi, still the
# fallback), two wake-ups on the way to every acknowledgement.
#
# THE ORDER, in one place:
#
#     owner (arm):   wake_pos = pos; wake_armed = 1 (release); full fence;
#                    read flushed_pos: >= pos -> CAS wake_armed 1 -> 0, answer now
#     writer:        flushed_pos = f (release); epoch bump and futex wake; full fence;
#                    for each row: wake_armed == 1 (acquire) and wake_pos <= f
#                    -> CAS wake_armed 1 -> 0 -> one datagram to its name
#
# Each side stores, fences, then loads what the other stored, so at least one of them
# sees the other: either the owner finds the flush and answers at once, or the writer
# finds the armed row and sends. The CAS makes the datagram once per arming; the owner
# arms again, with the position of its next waiter, after each look. The writer pays
# a system call only for a row that is armed and covered: nobody waiting costs a scan
# of max_procs rows (a load each) per flush.
#
# NOTHING IS TRUSTED. A datagram means only "look": the loop re-reads flushed_pos and
# releases what it has passed, so a spurious or forged one (anyone on the host may
# send to an abstract name) releases nothing early; a lost one (a full socket buffer,
# which means one is already waiting) costs at most the loop's fallback timer.
#
# DEAD OWNERS. The wake fields live in the process row, claimed with the counters
# (store.pxi, _claim_counter_row: a free row, or one whose owner is dead by pid and
# start time); whoever claims a row clears its wake fields, so a dead process's waker
# lasts exactly as long as its row is not reused. A dead owner's socket is gone with
# it: the writer's one datagram to an armed dead row fails (ECONNREFUSED) and, the row
# disarmed by the CAS, nothing more is sent to it.
#
# FALLBACKS. A process without a row of its own (row 0, the shared overflow, when
# max_procs rows are taken; a read-only store), or a second Store in a process whose
# row already has a waker, gets the flush notifier's thread instead, with the same
# interface (fd, arm, disarm, clear). After a fork the inherited waker arms nothing
# (its socket and name are the parent's): Store.flush_waker() makes a new one. After a
# re-attach (store.pxi, RETIREMENT) the next arm writes the name into the new
# segment's row. Everywhere the loop's timers remain for the deadlines.

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int fw_socklen_t "socklen_t"
    struct fw_sockaddr "sockaddr":
        pass
    int fw_socket "socket"(int domain, int type, int protocol)
    int fw_bind "bind"(int fd, const fw_sockaddr *addr, fw_socklen_t len)
    ssize_t fw_sendto "sendto"(int fd, const void *buf, size_t n, int flags,
                               const fw_sockaddr *addr, fw_socklen_t len)
    ssize_t fw_recv "recv"(int fd, void *buf, size_t n, int flags)
    int FW_AF_UNIX "AF_UNIX"
    int FW_SOCK_DGRAM "SOCK_DGRAM"
    int FW_SOCK_NONBLOCK "SOCK_NONBLOCK"
    int FW_SOCK_CLOEXEC "SOCK_CLOEXEC"
    int FW_MSG_DONTWAIT "MSG_DONTWAIT"

cdef extern from "<sys/un.h>" nogil:
    struct fw_sockaddr_un "sockaddr_un":
        unsigned short sun_family
        char sun_path[108]

cdef extern from "<stdio.h>" nogil:
    int fw_snprintf "snprintf"(char *buf, size_t n, const char *fmt, ...)

cdef extern from "<stddef.h>" nogil:
    size_t fw_offsetof_path "offsetof(struct sockaddr_un, sun_path)"

cdef int _wake_send_fd = -1         # the writer's sending socket, made on first use
cdef uint64_t wakes_sent = 0        # datagrams the writer sent (tests, benchmarks)


cdef fw_socklen_t wake_addr(fw_sockaddr_un *a, uint32_t pid, uint32_t name) noexcept nogil:
    """The abstract address of a waker: NUL, then "bukt-wake-<pid>-<name>"."""
    cdef int n
    memset(a, 0, sizeof(fw_sockaddr_un))
    a.sun_family = FW_AF_UNIX
    n = fw_snprintf(a.sun_path + 1, 100, "bukt-wake-%u-%08x", pid, name)
    return <fw_socklen_t>(fw_offsetof_path + 1 + n)


cdef void wake_flushed(Store s, uint64_t flushed) noexcept:
    """The writer, after publishing flushed_pos = `flushed`: one datagram to each
    armed process row whose position it covers (THE ORDER above)."""
    global _wake_send_fd, wakes_sent
    cdef bk_proc *p
    cdef uint32_t i, name, pid
    cdef fw_sockaddr_un a
    cdef fw_socklen_t alen
    cdef char one = 102             # "f"
    bk_fence_full()
    for i in range(1, s.max_procs):
        p = &s.procs[i]
        if not bk_load_acq32(&p.wake_armed):
            continue
        if bk_load_acq64(&p.wake_pos) > flushed or not bk_cas32(&p.wake_armed, 1, 0):
            continue
        name = bk_load_acq32(&p.wake_name)
        pid = bk_load_acq32(&p.pid)
        if name == 0 or pid == 0:
            continue
        if _wake_send_fd < 0:
            _wake_send_fd = fw_socket(FW_AF_UNIX, FW_SOCK_DGRAM | FW_SOCK_NONBLOCK
                                      | FW_SOCK_CLOEXEC, 0)
            if _wake_send_fd < 0:
                return                      # the owners' timers remain
        alen = wake_addr(&a, pid, name)
        if fw_sendto(_wake_send_fd, &one, 1, FW_MSG_DONTWAIT, <fw_sockaddr *>&a, alen) == 1:
            wakes_sent += 1


cdef uint64_t flushed_pos_of(object store) noexcept:
    """The writer's flushed position (Store.ring_position()[2]) without a Python call,
    0 when `store` is closed. Declared in bukt/_core.pxd: the compiled RESP loop asks
    it before each batch of a connection whose replies wait (bukt/tcp/_resp.pyx)."""
    cdef Store s = <Store>store
    if not s.mapped:
        return 0
    return bk_load_acq64(&s.hdr.flushed_pos)


cdef uint64_t last_pos_of(object store) noexcept:
    """Store.last_pos without a Python call (0 when closed): the position a write of
    this process that must be durable waits for. Declared in bukt/_core.pxd."""
    cdef Store s = <Store>store
    if not s.mapped:
        return 0
    return s.last_pos


def wake_address(uint32_t pid, uint32_t name):
    """A waker's abstract socket address as bytes (wake_addr's, for bind and tests)."""
    cdef fw_sockaddr_un a
    cdef fw_socklen_t n = wake_addr(&a, pid, name)
    return (<char *>a.sun_path)[:n - fw_offsetof_path]


def wake_counts():
    """Datagrams this process sent as a writer (THE FLUSH WAKER)."""
    return wakes_sent


cdef class FlushWaker:
    """A datagram socket (`fd`) the writer sends to after a flush covers the position
    last given to `arm` (THE FLUSH WAKER above). One a process, from
    Store.flush_waker(); an event loop watches `fd`, calls `clear()` when it is
    readable, reads the flushed position itself, and arms again for its next waiter."""
    cdef Store store
    cdef object sock
    cdef readonly int fd
    cdef readonly uint32_t name
    cdef int epoch

    def __cinit__(self):
        self.fd = -1

    cdef int _start(self, Store s) except -1:
        import socket as _socket
        cdef uint32_t name = 0
        while name == 0:
            name = <uint32_t>_secrets.randbits(32)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK
                              | _socket.SOCK_CLOEXEC)
        try:
            sock.bind(wake_address(os.getpid(), name))
        except OSError:
            sock.close()
            raise
        self.store, self.sock, self.fd, self.name = s, sock, sock.fileno(), name
        self.epoch = _fork_epoch
        bk_store_rel32(&s.procs[s.my_row].wake_name, name)
        return 0

    cdef bk_proc *_row(self) noexcept:
        """This process's row, with our name in it; NULL when we cannot be woken."""
        cdef Store s = self.store
        cdef bk_proc *p
        if s is None or not s.mapped or self.epoch != _fork_epoch or s.my_row == 0:
            return NULL
        p = &s.procs[s.my_row]
        if bk_load_acq32(&p.wake_name) != self.name:   # a re-attach: a new segment's row
            bk_store_rel32(&p.wake_name, self.name)
        return p

    def arm(self, uint64_t pos):
        """Have the writer send after the flush that reaches `pos`. True when the
        flushed position is there already (nothing will be sent: look now)."""
        cdef bk_proc *p = self._row()
        if p == NULL:
            self.store._mapped()
            return bk_load_acq64(&self.store.hdr.flushed_pos) >= pos
        bk_store_rel64(&p.wake_pos, pos)
        bk_store_rel32(&p.wake_armed, 1)
        bk_fence_full()
        if bk_load_acq64(&self.store.hdr.flushed_pos) >= pos:
            bk_cas32(&p.wake_armed, 1, 0)
            return True
        return False

    def disarm(self):
        """Nobody waits: the writer sends nothing."""
        cdef bk_proc *p = self._row()
        if p != NULL:
            bk_store_rel32(&p.wake_armed, 0)

    def clear(self):
        """Take the datagram that made `fd` readable. One: the writer sends one per
        arming, and a second recv to see the queue empty (EAGAIN) was a system call
        for nothing on every wake-up; any more (forged ones) leave `fd` readable, and
        the loop, level-triggered, comes back for them."""
        cdef char buf[64]
        if self.fd >= 0:
            fw_recv(self.fd, buf, sizeof(buf), FW_MSG_DONTWAIT)

    cdef void _stop(self) noexcept:
        """Before the store is unmapped: leave the row (if it is still ours) and close
        the socket."""
        cdef Store s = self.store
        cdef bk_proc *p
        if s is not None and s.mapped and self.epoch == _fork_epoch and s.my_row:
            p = &s.procs[s.my_row]
            if bk_cas32(&p.wake_name, self.name, 0):
                bk_store_rel32(&p.wake_armed, 0)
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        self.sock, self.fd, self.store = None, -1, None
