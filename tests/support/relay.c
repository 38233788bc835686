/*
 * relay.c - a TCP relay on 127.0.0.1 in front of another local server, modelling a slow or dead web server:
 * one thread and one poll() loop for every connection (hundreds at once cost no thread each), the delay of a
 * connection being a deadline in that loop, which a stop cuts short.
 */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_BUF 16384
#define RELAY_BACKLOG 1024

typedef enum relay_state {
    RELAY_WAITING,    /* accepted; upstream is connected once due_ms has come */
    RELAY_CONNECTING, /* non-blocking connect() to upstream in progress */
    RELAY_COPYING,    /* bytes go both ways */
    RELAY_HANGING     /* hang mode: reads and drops what the client sends, never answers */
} relay_state;

typedef struct relay_conn {
    int client, upstream;         /* -1 when not open */
    relay_state state;
    int64_t due_ms;               /* RELAY_WAITING: when to connect upstream */
    int client_eof, upstream_eof;
    size_t to_upstream_len, to_client_len;
    int client_slot, upstream_slot; /* index in this pass's pollfd array, -1 if not polled */
    char to_upstream[RELAY_BUF];
    char to_client[RELAY_BUF];
    struct relay_conn *next;
} relay_conn;

struct ts_relay {
    int lfd, port, upstream_port, delay_ms, hang;
    int stop_pipe[2];             /* written once by ts_relay_stop: the loop's poll() returns */
    pthread_t thread;
    atomic_long accepted;
    atomic_long peak_waiting;     /* the most connections held in RELAY_WAITING at once */
    relay_conn *conns;            /* owned by the relay thread until it returns */
};

static void conn_close(relay_conn *c)
{
    if (c->client >= 0)
        close(c->client);
    if (c->upstream >= 0)
        close(c->upstream);
    c->client = c->upstream = -1;
}

/* Copied bytes go out at once: without it Nagle's algorithm adds ~40 ms per exchange to the modelled delay. */
static void no_delay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Start the non-blocking connect to upstream. 0, or -1 (the connection is to be dropped). */
static int start_upstream(ts_relay *r, relay_conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)r->upstream_port)};

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->upstream = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->upstream < 0) {
        fprintf(stderr, "test support: relay: socket: %s\n", strerror(errno));
        return -1;
    }
    no_delay(c->upstream);
    if (connect(c->upstream, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        c->state = RELAY_COPYING;
    else if (errno == EINPROGRESS)
        c->state = RELAY_CONNECTING;
    else {
        fprintf(stderr, "test support: relay: connect to 127.0.0.1:%d: %s\n", r->upstream_port, strerror(errno));
        return -1;
    }
    return 0;
}

/* Read what fd has into buf (len bytes used of RELAY_BUF). 0: ok or nothing now; 1: EOF; -1: error. */
static int fill(int fd, char *buf, size_t *len)
{
    ssize_t n = recv(fd, buf + *len, RELAY_BUF - *len, 0);
    if (n > 0) {
        *len += (size_t)n;
        return 0;
    }
    if (n == 0)
        return 1;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Send what buf holds to fd, keeping the rest. 0 or -1 (error). */
static int drain(int fd, char *buf, size_t *len)
{
    ssize_t n = send(fd, buf, *len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    memmove(buf, buf + n, *len - (size_t)n);
    *len -= (size_t)n;
    return 0;
}

/* The events this connection waits for; slots are assigned in fds. */
static void want(relay_conn *c, struct pollfd *fds, size_t *n)
{
    short ce = 0, ue = 0;

    c->client_slot = c->upstream_slot = -1;
    switch (c->state) {
    case RELAY_WAITING:
        ce = POLLRDHUP; /* a client that gives up while it waits is let go at once */
        break;
    case RELAY_HANGING:
        ce = POLLIN;
        break;
    case RELAY_CONNECTING:
        ce = POLLRDHUP;
        ue = POLLOUT;
        break;
    case RELAY_COPYING:
        if (!c->client_eof && c->to_upstream_len < RELAY_BUF)
            ce |= POLLIN;
        if (c->to_client_len > 0)
            ce |= POLLOUT;
        if (!c->upstream_eof && c->to_client_len < RELAY_BUF)
            ue |= POLLIN;
        if (c->to_upstream_len > 0)
            ue |= POLLOUT;
        break;
    }
    c->client_slot = (int)*n;
    fds[(*n)++] = (struct pollfd){.fd = c->client, .events = ce};
    if (c->upstream >= 0) {
        c->upstream_slot = (int)*n;
        fds[(*n)++] = (struct pollfd){.fd = c->upstream, .events = ue};
    }
}

/* Act on one connection's poll results. 0: keep it; -1: close it. */
static int step(ts_relay *r, relay_conn *c, const struct pollfd *fds, int64_t now)
{
    short cr = c->client_slot >= 0 ? fds[c->client_slot].revents : 0;
    short ur = c->upstream_slot >= 0 ? fds[c->upstream_slot].revents : 0;
    char junk[4096];

    switch (c->state) {
    case RELAY_WAITING:
        if (cr & (POLLRDHUP | POLLHUP | POLLERR))
            return -1;
        if (now < c->due_ms)
            return 0;
        return start_upstream(r, c);
    case RELAY_HANGING:
        if (cr != 0) {
            ssize_t n = recv(c->client, junk, sizeof(junk), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return -1;
        }
        return 0;
    case RELAY_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        if (cr & (POLLRDHUP | POLLHUP | POLLERR))
            return -1;
        if (ur == 0)
            return 0;
        if (getsockopt(c->upstream, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            fprintf(stderr, "test support: relay: connect to 127.0.0.1:%d: %s\n", r->upstream_port,
                    strerror(err));
            return -1;
        }
        c->state = RELAY_COPYING;
        return 0;
    }
    case RELAY_COPYING:
        /* POLLHUP/POLLERR without POLLIN: recv() reports the end or the error. */
        if ((cr & (POLLIN | POLLHUP | POLLERR)) && !c->client_eof) {
            int rc = fill(c->client, c->to_upstream, &c->to_upstream_len);
            if (rc < 0)
                return -1;
            c->client_eof = rc;
        }
        if ((ur & (POLLIN | POLLHUP | POLLERR)) && !c->upstream_eof) {
            int rc = fill(c->upstream, c->to_client, &c->to_client_len);
            if (rc < 0)
                return -1;
            c->upstream_eof = rc;
        }
        if (c->to_upstream_len > 0 && drain(c->upstream, c->to_upstream, &c->to_upstream_len) != 0)
            return -1;
        if (c->to_client_len > 0 && drain(c->client, c->to_client, &c->to_client_len) != 0)
            return -1;
        /* Either side closing ends the connection, once what it sent has been passed on. */
        if ((c->client_eof && c->to_upstream_len == 0) || (c->upstream_eof && c->to_client_len == 0))
            return -1;
        return 0;
    }
    return -1;
}

static void accept_all(ts_relay *r, int64_t now, int *paused)
{
    for (;;) {
        relay_conn *c;
        int fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop polling the listener until a connection closes, not spin. */
                fprintf(stderr, "test support: relay: accept: %s\n", strerror(errno));
                *paused = 1;
            }
            return;
        }
        atomic_fetch_add(&r->accepted, 1);
        c = malloc(sizeof(*c));
        if (c == NULL) {
            fprintf(stderr, "test support: relay: out of memory\n");
            close(fd);
            continue;
        }
        c->client = fd;
        no_delay(fd);
        c->upstream = -1;
        c->state = r->hang ? RELAY_HANGING : RELAY_WAITING;
        c->due_ms = now + r->delay_ms;
        c->client_eof = c->upstream_eof = 0;
        c->to_upstream_len = c->to_client_len = 0;
        c->client_slot = c->upstream_slot = -1;
        c->next = r->conns;
        r->conns = c;
    }
}

static void *relay_main(void *p)
{
    ts_relay *r = p;
    struct pollfd *fds = NULL;
    size_t cap = 0;
    int paused = 0;

    for (;;) {
        size_t n = 0, count = 0;
        int64_t now = ts_now_ms(), next_due = -1;
        int timeout;

        for (relay_conn *c = r->conns; c != NULL; c = c->next)
            count++;
        if (2 * count + 2 > cap) {
            struct pollfd *more = realloc(fds, (2 * count + 64) * sizeof(*fds));
            if (more == NULL) {
                fprintf(stderr, "test support: relay: out of memory; the relay stops relaying\n");
                break;
            }
            fds = more;
            cap = 2 * count + 64;
        }
        fds[n++] = (struct pollfd){.fd = r->stop_pipe[0], .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = paused ? -1 : r->lfd, .events = POLLIN};
        for (relay_conn *c = r->conns; c != NULL; c = c->next) {
            want(c, fds, &n);
            if (c->state == RELAY_WAITING && (next_due < 0 || c->due_ms < next_due))
                next_due = c->due_ms;
        }
        timeout = next_due < 0 ? -1 : next_due <= now ? 0 : (int)(next_due - now);
        if (poll(fds, n, timeout) < 0 && errno != EINTR) {
            fprintf(stderr, "test support: relay: poll: %s\n", strerror(errno));
            break;
        }
        if (fds[0].revents != 0)
            break;
        now = ts_now_ms();
        for (relay_conn **pp = &r->conns; *pp != NULL;) {
            relay_conn *c = *pp;
            if (step(r, c, fds, now) == 0) {
                pp = &c->next;
                continue;
            }
            *pp = c->next;
            conn_close(c);
            free(c);
            paused = 0;
        }
        if (fds[1].revents != 0) {
            long waiting = 0;
            accept_all(r, now, &paused);
            for (relay_conn *c = r->conns; c != NULL; c = c->next)
                waiting += c->state == RELAY_WAITING;
            if (waiting > atomic_load(&r->peak_waiting))
                atomic_store(&r->peak_waiting, waiting);
        }
    }
    free(fds);
    return NULL;
}

ts_relay *ts_relay_start(int upstream_port, int delay_ms, int hang)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t salen = sizeof(sa);
    ts_relay *r;

    if (upstream_port <= 0 || upstream_port > 65535 || delay_ms < 0) {
        ts_set_error("ts_relay_start: bad upstream port %d or delay %d", upstream_port, delay_ms);
        return NULL;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        ts_set_error("ts_relay_start: out of memory");
        return NULL;
    }
    r->lfd = r->stop_pipe[0] = r->stop_pipe[1] = -1;
    r->upstream_port = upstream_port;
    r->delay_ms = delay_ms;
    r->hang = hang;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (pipe2(r->stop_pipe, O_CLOEXEC) != 0 ||
        (r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(r->lfd, RELAY_BACKLOG) != 0 ||
        getsockname(r->lfd, (struct sockaddr *)&sa, &salen) != 0) {
        ts_set_error("ts_relay_start: listen on 127.0.0.1: %s", strerror(errno));
        goto err;
    }
    r->port = ntohs(sa.sin_port);
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        ts_set_error("ts_relay_start: pthread_create failed");
        goto err;
    }
    return r;
err:
    if (r->lfd >= 0)
        close(r->lfd);
    if (r->stop_pipe[0] >= 0) {
        close(r->stop_pipe[0]);
        close(r->stop_pipe[1]);
    }
    free(r);
    return NULL;
}

int ts_relay_port(ts_relay *r)
{
    return r->port;
}

long ts_relay_accepted(ts_relay *r)
{
    return atomic_load(&r->accepted);
}

long ts_relay_peak_waiting(ts_relay *r)
{
    return atomic_load(&r->peak_waiting);
}

void ts_relay_stop(ts_relay *r)
{
    ssize_t w;
    if (r == NULL)
        return;
    do
        w = write(r->stop_pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(r->thread, NULL);
    /* The thread has returned: its connections are ours to close (their clients see the end at once). */
    while (r->conns != NULL) {
        relay_conn *c = r->conns;
        r->conns = c->next;
        conn_close(c);
        free(c);
    }
    close(r->lfd);
    close(r->stop_pipe[0]);
    close(r->stop_pipe[1]);
    free(r);
}
