/*
 * tlsserver.c - an in-process TLS server on 127.0.0.1: an accept thread and a thread per connection, all of
 * which a stop wakes (a self-pipe for waits, shutdown() of every socket for blocked reads and writes).
 */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

struct ts_conn {
    ts_tls *srv;
    int fd;     /* -1 once closed; guarded by srv->mu */
    SSL *ssl;
    pthread_t thread;
    int done;   /* the thread is about to return; guarded by srv->mu */
    int abort;  /* no close_notify */
    ts_conn *next;
};

struct ts_tls {
    SSL_CTX *ctx;
    int lfd, port;
    int stop_pipe[2]; /* written once at stop and never read: readable for every poller from then on */
    atomic_int stopping;
    pthread_t acceptor;
    pthread_mutex_t mu;
    ts_conn *conns;
    atomic_long accepted, handshakes;
    ts_tls_handler handler;
    void *arg;
};

static void tls_error(const char *what)
{
    unsigned long e = ERR_get_error();
    ts_set_error("tlsserver: %s%s%s", what, e ? ": " : "", e ? ERR_error_string(e, NULL) : "");
    ERR_clear_error();
}

static void *conn_main(void *p)
{
    ts_conn *c = p;
    ts_tls *s = c->srv;
    sigset_t set;

    /* A peer that has gone makes write() raise SIGPIPE in the writing thread: blocked here, it stays pending
     * in this thread only and the write fails with EPIPE, without touching the process's signal setup. */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    c->ssl = SSL_new(s->ctx);
    if (c->ssl != NULL && SSL_set_fd(c->ssl, c->fd) == 1 && SSL_accept(c->ssl) == 1) {
        atomic_fetch_add(&s->handshakes, 1);
        if (s->handler != NULL)
            s->handler(c, s->arg);
        if (!c->abort && !atomic_load(&s->stopping))
            SSL_shutdown(c->ssl);
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    ERR_clear_error();
    pthread_mutex_lock(&s->mu);
    close(c->fd);
    c->fd = -1;
    c->done = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Join and free the connections whose threads have finished (all of them if all is set). */
static void reap(ts_tls *s, int all)
{
    ts_conn **pp = &s->conns;
    for (;;) {
        ts_conn *c;
        pthread_mutex_lock(&s->mu);
        while (*pp != NULL && !all && !(*pp)->done)
            pp = &(*pp)->next;
        c = *pp;
        if (c != NULL)
            *pp = c->next;
        pthread_mutex_unlock(&s->mu);
        if (c == NULL)
            return;
        pthread_join(c->thread, NULL);
        free(c);
    }
}

static void *accept_main(void *p)
{
    ts_tls *s = p;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
        ts_conn *c;
        int fd;

        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            ts_set_error("tlsserver: poll: %s", strerror(errno));
            return NULL;
        }
        if (atomic_load(&s->stopping))
            return NULL;
        if (!(pfd[0].revents & POLLIN))
            continue;
        fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue; /* EAGAIN: the client went away before we got it */
        atomic_fetch_add(&s->accepted, 1);
        reap(s, 0);
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            ts_set_error("tlsserver: out of memory");
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            pthread_mutex_unlock(&s->mu);
            ts_set_error("tlsserver: pthread_create failed");
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        s->conns = c;
        pthread_mutex_unlock(&s->mu);
    }
}

ts_tls *ts_tls_start_with(X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key, ts_tls_handler handler, void *arg)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t salen = sizeof(sa);
    ts_tls *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        ts_set_error("tlsserver: out of memory");
        return NULL;
    }
    s->lfd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->handler = handler;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    s->ctx = SSL_CTX_new(TLS_server_method());
    if (s->ctx == NULL || !SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION) ||
        SSL_CTX_use_certificate(s->ctx, leaf) != 1 || (chain != NULL && SSL_CTX_set1_chain(s->ctx, chain) != 1) ||
        SSL_CTX_use_PrivateKey(s->ctx, key) != 1 || SSL_CTX_check_private_key(s->ctx) != 1) {
        tls_error("context (certificate, chain, key)");
        goto err;
    }
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (pipe2(s->stop_pipe, O_CLOEXEC) != 0 || (s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s->lfd, 128) != 0 ||
        getsockname(s->lfd, (struct sockaddr *)&sa, &salen) != 0) {
        ts_set_error("tlsserver: listen on 127.0.0.1: %s", strerror(errno));
        goto err;
    }
    s->port = ntohs(sa.sin_port);
    if (pthread_create(&s->acceptor, NULL, accept_main, s) != 0) {
        ts_set_error("tlsserver: pthread_create failed");
        goto err;
    }
    return s;
err:
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->stop_pipe[0] >= 0) {
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
    }
    SSL_CTX_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

ts_tls *ts_tls_start(X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key)
{
    return ts_tls_start_with(leaf, chain, key, NULL, NULL);
}

int ts_tls_port(ts_tls *s)
{
    return s->port;
}

long ts_tls_accepted(ts_tls *s)
{
    return atomic_load(&s->accepted);
}

long ts_tls_handshakes(ts_tls *s)
{
    return atomic_load(&s->handshakes);
}

void ts_tls_stop(ts_tls *s)
{
    ssize_t w;
    if (s == NULL)
        return;
    atomic_store(&s->stopping, 1);
    do
        w = write(s->stop_pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->acceptor, NULL);
    pthread_mutex_lock(&s->mu);
    for (ts_conn *c = s->conns; c != NULL; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    reap(s, 1);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    SSL_CTX_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

SSL *ts_conn_ssl(ts_conn *c)
{
    return c->ssl;
}

void ts_conn_abort(ts_conn *c)
{
    c->abort = 1;
}

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int ts_conn_wait(ts_conn *c, int timeout_ms)
{
    long deadline = mono_ms() + timeout_ms;
    if (SSL_pending(c->ssl) > 0)
        return -1;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = c->srv->stop_pipe[0], .events = POLLIN},
                                {.fd = c->fd, .events = POLLIN | POLLRDHUP}};
        int left = timeout_ms < 0 ? -1 : (int)(deadline - mono_ms());
        int n;
        if (atomic_load(&c->srv->stopping))
            return -1;
        if (timeout_ms >= 0 && left <= 0)
            return 0;
        n = poll(pfd, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != 0)
            return -1;
    }
}
