/*
 * loadgen: a closed-loop load generator for Bukt's binary protocol and for RESP (Redis),
 * so that both servers are driven by the same client in the same run.
 *
 * One thread, one epoll loop, non-blocking sockets. Each connection sends `depth`
 * requests at once, waits for all `depth` responses, records each request's latency
 * (send of the batch -> arrival of its response), and starts over until `seconds` pass.
 * Workload: keys "key:<n>" with n uniform in [0, keys), values of `value` bytes,
 * `get` percent GETs and the rest SETs. It prints one line of JSON.
 *
 *   cc -O2 -o bench/loadgen bench/loadgen.c
 *   bench/loadgen --proto bukt --port 7071 --bucket bench --token T --conns 50
 *   bench/loadgen --proto resp --port 6379 --conns 1 --depth 16
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAXDEPTH 256

typedef struct {
    int fd;
    char out[BUF * 4];
    size_t out_len, out_off;
    char in[BUF * 4];
    size_t in_len;
    int waiting;          /* responses still expected for the batch */
    double sent_at;
    int authed;
} conn_t;

static const char *proto = "bukt", *host = "127.0.0.1", *bucket = "bench", *token = "";
static int port = 7071, nconns = 50, depth = 1, seconds = 5, keys = 100000, vsize = 100,
           get_pct = 90, prefill = 0;
static double *lat;
static size_t nlat, cap_lat;
static uint64_t rid_counter = 1, errors_seen = 0;
static char *value;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put32(char *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }
static uint32_t get32(const char *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }
static void put64(char *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }

static size_t bukt_header(char *p, uint32_t len, uint8_t cmd) {
    put32(p, len); p[4] = cmd; put64(p + 5, rid_counter++); return 13;
}

static size_t add_request(conn_t *c, int is_get, long k) {
    char key[32];
    int kl = snprintf(key, sizeof key, "key:%ld", k);
    char *p = c->out + c->out_len;
    size_t n;
    if (proto[0] == 'b') {
        if (is_get) {
            n = bukt_header(p, 13 + 4 + kl, 0x02);
            put32(p + n, kl); memcpy(p + n + 4, key, kl); n += 4 + kl;
        } else {
            n = bukt_header(p, 13 + 17 + 4 + kl + 4 + vsize, 0x01);
            memset(p + n, 0, 17); n += 17;
            put32(p + n, kl); memcpy(p + n + 4, key, kl); n += 4 + kl;
            put32(p + n, vsize); memcpy(p + n + 4, value, vsize); n += 4 + vsize;
        }
    } else if (is_get) {
        n = sprintf(p, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
    } else {
        n = sprintf(p, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", kl, key, vsize);
        memcpy(p + n, value, vsize); n += vsize;
        memcpy(p + n, "\r\n", 2); n += 2;
    }
    c->out_len += n;
    return n;
}

static void add_auth(conn_t *c) {
    char *p = c->out + c->out_len;
    size_t bl = strlen(bucket), tl = strlen(token);
    size_t n = bukt_header(p, 13 + 8 + bl + tl, 0x30);
    put32(p + n, bl); memcpy(p + n + 4, bucket, bl); n += 4 + bl;
    put32(p + n, tl); memcpy(p + n + 4, token, tl); n += 4 + tl;
    c->out_len += n;
}

/* Length of one whole response at the start of buf, 0 if incomplete. */
static size_t response_len(const char *buf, size_t len, int *is_error) {
    if (proto[0] == 'b') {
        if (len < 13) return 0;
        uint32_t n = get32(buf);
        if (len < n) return 0;
        *is_error = (uint8_t)buf[4] >= 0x10;
        return n;
    }
    const char *eol = memmem(buf, len, "\r\n", 2);
    if (!eol) return 0;
    size_t line = eol - buf + 2;
    *is_error = buf[0] == '-';
    if (buf[0] != '$') return line;
    long n = strtol(buf + 1, NULL, 10);
    if (n < 0) return line;
    if (len < line + n + 2) return 0;
    return line + n + 2;
}

static void record(double v) {
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[nlat++] = v;
}

static void new_batch(conn_t *c) {
    for (int i = 0; i < depth; i++)
        add_request(c, rand() % 100 < get_pct, rand() % keys);
    c->waiting = depth;
    c->sent_at = now();
}

static int flush_out(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) return errno == EAGAIN ? 0 : -1;
        c->out_off += w;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); exit(2); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void do_prefill(void) {
    /* Every key once, pipelined 64 deep on one blocking connection. */
    conn_t *c = calloc(1, sizeof *c);
    c->fd = connect_one();
    fcntl(c->fd, F_SETFL, 0);
    int expect = 0;
    if (proto[0] == 'b') { add_auth(c); expect++; }
    for (long k = 0; k < keys || expect; ) {
        while (k < keys && c->out_len < sizeof c->out - 4096 && expect < 64) {
            add_request(c, 0, k++); expect++;
        }
        if (flush_out(c) < 0) { perror("prefill write"); exit(2); }
        ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (r <= 0) { perror("prefill read"); exit(2); }
        c->in_len += r;
        size_t off = 0, n; int err;
        while ((n = response_len(c->in + off, c->in_len - off, &err))) { off += n; expect--; }
        memmove(c->in, c->in + off, c->in_len - off); c->in_len -= off;
    }
    close(c->fd);
    free(c);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--proto")) proto = v;
        else if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--conns")) nconns = atoi(v);
        else if (!strcmp(k, "--depth")) depth = atoi(v);
        else if (!strcmp(k, "--seconds")) seconds = atoi(v);
        else if (!strcmp(k, "--keys")) keys = atoi(v);
        else if (!strcmp(k, "--value")) vsize = atoi(v);
        else if (!strcmp(k, "--get")) get_pct = atoi(v);
        else if (!strcmp(k, "--bucket")) bucket = v;
        else if (!strcmp(k, "--token")) token = v;
        else if (!strcmp(k, "--prefill")) prefill = atoi(v);
        else { fprintf(stderr, "unknown option %s\n", k); return 2; }
    }
    if (depth < 1 || depth > MAXDEPTH) { fprintf(stderr, "depth 1..%d\n", MAXDEPTH); return 2; }
    value = malloc(vsize);
    memset(value, 'v', vsize);
    srand(1);
    if (prefill) do_prefill();

    int ep = epoll_create1(0);
    conn_t *conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->fd = connect_one();
        if (proto[0] == 'b') { add_auth(c); c->waiting = 1; c->authed = 0; }
        else { c->authed = 1; new_batch(c); }
        flush_out(c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    double start = now(), end = start + seconds;
    uint64_t done = 0;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "connection closed by server\n");
                return 3;
            }
            c->in_len += r;
            size_t off = 0, len; int err = 0;
            double t = now();
            while (c->waiting && (len = response_len(c->in + off, c->in_len - off, &err))) {
                off += len;
                c->waiting--;
                if (err) errors_seen++;
                if (c->authed) { record(t - c->sent_at); done++; }
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (!c->waiting) {
                c->authed = 1;
                new_batch(c);
                if (flush_out(c) < 0) { perror("write"); return 3; }
            }
        }
    }
    double elapsed = now() - start;
    qsort(lat, nlat, sizeof *lat, cmpd);
#define pct(q) (nlat ? lat[(size_t)(nlat * (q))] * 1e6 : 0)
    printf("{\"proto\": \"%s\", \"conns\": %d, \"depth\": %d, \"ops\": %llu, "
           "\"seconds\": %.3f, \"ops_per_s\": %.0f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"errors\": %llu}\n",
           proto, nconns, depth, (unsigned long long)done, elapsed, done / elapsed,
           pct(0.5), pct(0.9), pct(0.99), pct(0.999), (unsigned long long)errors_seen);
    return 0;
}
