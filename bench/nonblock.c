/*
 * nonblock.c - what cold POSH lookups do to an event loop (issue 12). One thread runs a poll() loop with a 10 ms
 * periodic timer and makes N TLS connections at once to the provider's service, one per cold hosted domain
 * dN.example.com (nginx's default site: a reference to the provider's document, as in many.c), POSH's fetches
 * going through a relay that holds every new connection DELAY ms, as a distant web server would. Blocking
 * handshakes stall the loop for a whole lookup each; non-blocking ones (SSL_CTX_set_posh_nonblocking) park on
 * SSL_get_posh_wait_fd() and the timer keeps time. Then warm non-blocking handshakes against plain PKIX.
 *
 * The timer is checked after every callback (each SSL_connect call), as a loop that runs its timers between
 * events: its lateness is the longest stall of the loop, not the sum of the TLS work that became ready at once.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#define TICK_NS 10000000 /* the loop's periodic timer: 10 ms */

typedef struct nb_conn {
    char domain[32];
    int fd;
    SSL *ssl;             /* NULL once done */
    int wait_fd;          /* what the connection waits for: its socket or POSH's descriptor */
    short events;
} nb_conn;

typedef struct nb_timer {
    int64_t due;          /* the next deadline, on the grid of TICK_NS from the start */
    double max_late_ms;
} nb_timer;

typedef struct nb_run {
    double total_ms;      /* first SSL_connect to the last handshake's end */
    double max_late_ms;   /* the timer's largest lateness */
    double max_step_ms;   /* the longest single SSL_connect() call */
    long accepted;        /* connections POSH accepted */
    long retry_verify;    /* SSL_connect calls that returned WANT_RETRY_VERIFY */
    long relayed;         /* connections the relay accepted: POSH's fetches */
    char first_error[300];
} nb_run;

static void timer_check(nb_timer *t)
{
    int64_t now = bench_now_ns();
    double late;
    if (now < t->due)
        return;
    late = (double)(now - t->due) / 1e6;
    if (late > t->max_late_ms)
        t->max_late_ms = late;
    /* Periodic: the next deadline on the grid after now; ticks missed while stalled are not run twice. */
    t->due += ((now - t->due) / TICK_NS + 1) * TICK_NS;
}

/* Milliseconds to the next deadline, rounded up, as poll() takes them. */
static int timer_ms(const nb_timer *t)
{
    int64_t left = t->due - bench_now_ns();
    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

static void conn_done(nb_conn *c, int handshake_ok, nb_run *run, long *left)
{
    if (handshake_ok && SSL_get_verify_result(c->ssl) == X509_V_OK &&
        SSL_get_posh_status(c->ssl) == POSH_STATUS_ACCEPTED)
        run->accepted++;
    else if (run->first_error[0] == '\0')
        snprintf(run->first_error, sizeof(run->first_error), "%s: verify %ld: %s", c->domain,
                 SSL_get_verify_result(c->ssl), SSL_get_posh_message(c->ssl));
    ERR_clear_error();
    SSL_free(c->ssl);
    close(c->fd);
    c->ssl = NULL;
    (*left)--;
}

/* The connection's callback: drive the handshake, then say what it waits for. */
static void conn_step(nb_conn *c, nb_run *run, long *left)
{
    int64_t t0 = bench_now_ns();
    int r = SSL_connect(c->ssl);
    double ms = (double)(bench_now_ns() - t0) / 1e6;

    if (ms > run->max_step_ms)
        run->max_step_ms = ms;
    if (r == 1) {
        conn_done(c, 1, run, left);
        return;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->wait_fd = c->fd;
        c->events = POLLIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        c->wait_fd = c->fd;
        c->events = POLLOUT;
        break;
    case SSL_ERROR_WANT_RETRY_VERIFY:
        run->retry_verify++;
        if ((c->wait_fd = SSL_get_posh_wait_fd(c->ssl)) < 0)
            bench_fail("nonblock: %s: WANT_RETRY_VERIFY without a descriptor to wait on", c->domain);
        c->events = POLLIN;
        break;
    default:
        conn_done(c, 0, run, left);
        break;
    }
}

/* n connections to port with ctx, all at once, driven by one poll() loop with its periodic timer. */
static nb_run run_loop(SSL_CTX *ctx, int port, int n)
{
    nb_conn *conns = bench_xmalloc(sizeof(*conns) * (size_t)n);
    struct pollfd *pfd = bench_xmalloc(sizeof(*pfd) * (size_t)n);
    int *idx = bench_xmalloc(sizeof(*idx) * (size_t)n);
    nb_run run = {0};
    nb_timer timer;
    long left = n;
    int64_t t0;

    /* The TCP connections first, one after another (the server's accept backlog is 128), as single.c does. */
    for (int i = 0; i < n; i++) {
        nb_conn *c = &conns[i];
        snprintf(c->domain, sizeof(c->domain), "d%d.example.com", i);
        c->fd = bench_connect(port);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0)
            bench_fail("nonblock: O_NONBLOCK: %s", strerror(errno));
        if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
            SSL_set_tlsext_host_name(c->ssl, c->domain) != 1 || SSL_set1_host(c->ssl, c->domain) != 1)
            bench_fail("nonblock: SSL setup");
    }
    t0 = bench_now_ns();
    timer.due = t0 + TICK_NS;
    timer.max_late_ms = 0;
    for (int i = 0; i < n; i++) {
        conn_step(&conns[i], &run, &left);
        timer_check(&timer);
    }
    while (left > 0) {
        int nfds = 0;
        for (int i = 0; i < n; i++) {
            if (conns[i].ssl == NULL)
                continue;
            pfd[nfds] = (struct pollfd){.fd = conns[i].wait_fd, .events = conns[i].events};
            idx[nfds++] = i;
        }
        if (poll(pfd, (nfds_t)nfds, timer_ms(&timer)) < 0 && errno != EINTR)
            bench_fail("nonblock: poll: %s", strerror(errno));
        timer_check(&timer);
        for (int k = 0; k < nfds; k++) {
            if (pfd[k].revents == 0)
                continue;
            conn_step(&conns[idx[k]], &run, &left);
            timer_check(&timer);
        }
    }
    run.total_ms = (double)(bench_now_ns() - t0) / 1e6;
    run.max_late_ms = timer.max_late_ms;
    free(conns);
    free(pfd);
    free(idx);
    return run;
}

/* A client context verifying dN.example.com by POSH through client, blocking or not; full handshakes only. */
static SSL_CTX *loop_ctx(const bench_env *env, posh_client *client, int nonblocking)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, env->ca_file, NULL) != 1)
        bench_fail("nonblock: client context");
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_posh_client(ctx, client) != 1 || SSL_CTX_set_posh_verify(ctx, "xmpp-server") != 1)
        bench_fail("nonblock: SSL_CTX_set_posh_verify failed");
    if (nonblocking && SSL_CTX_set_posh_nonblocking(ctx, 1) != 1)
        bench_fail("nonblock: SSL_CTX_set_posh_nonblocking failed");
    return ctx;
}

/* One mode: a fresh client (cold cache, no connections), n connections through the loop. */
static nb_run run_mode(const bench_env *env, ts_relay *relay, const char *connect_to, int port, int n,
                       int nonblocking)
{
    posh_client *client = bench_client(env, connect_to);
    SSL_CTX *ctx = loop_ctx(env, client, nonblocking);
    long relayed = ts_relay_accepted(relay);
    nb_run run = run_loop(ctx, port, n);

    run.relayed = ts_relay_accepted(relay) - relayed;
    if (run.accepted != n)
        bench_fail("nonblock: %s mode: %ld of %d connections accepted; first failure: %s",
                   nonblocking ? "non-blocking" : "blocking", run.accepted, n, run.first_error);
    SSL_CTX_free(ctx);
    posh_client_free(client);
    return run;
}

/* A single blocking lookup of a cold hosted domain through the relay, new client: what one lookup costs. */
static double one_lookup_ms(const bench_env *env, const char *connect_to, const char *domain)
{
    posh_client *client = bench_client(env, connect_to);
    posh_result *r = NULL;
    int64_t t0 = bench_now_ns();
    posh_err err = posh_lookup(client, domain, "xmpp-server", &r);
    double ms = (double)(bench_now_ns() - t0) / 1e6;
    if (err != POSH_OK || !posh_result_followed_reference(r))
        bench_fail("nonblock: lookup of %s: %s: %s", domain, posh_strerror(err), posh_result_message(r));
    posh_result_free(r);
    posh_client_free(client);
    return ms;
}

void bench_nonblock(bench_env *env)
{
    int n = env->smoke ? 20 : 200, delay_ms = env->smoke ? 100 : 300, reps = env->smoke ? 1 : 3;
    double lookups[3], one_ms, wall_ratio, cpu_ratio;
    char connect_to[64], name[96];
    ts_relay *relay;
    ts_tls *server;
    nb_run blocking, nonblocking;

    BENCH_CHECK((relay = ts_relay_start(ts_nginx_port(env->nginx), delay_ms, 0)) != NULL, "relay");
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_relay_port(relay));
    BENCH_CHECK((server = ts_tls_start(ts_cert_x509(env->svc), NULL, ts_cert_key(env->svc))) != NULL,
                "TLS server");

    /* Warm-up without the relay (code paths, libcurl's global setup), then the single cold lookups. */
    one_lookup_ms(env, NULL, "warmup.example.com");
    for (int i = 0; i < reps; i++) {
        char domain[32];
        snprintf(domain, sizeof(domain), "one%d.example.com", i);
        lookups[i] = one_lookup_ms(env, connect_to, domain);
    }
    one_ms = bench_median(lookups, (size_t)reps);

    blocking = run_mode(env, relay, connect_to, ts_tls_port(server), n, 0);
    nonblocking = run_mode(env, relay, connect_to, ts_tls_port(server), n, 1);
    bench_note("nonblock: %d connections per mode, relay delay %d ms; relayed connections: blocking %ld, "
               "non-blocking %ld; WANT_RETRY_VERIFY returns: blocking %ld, non-blocking %ld",
               n, delay_ms, blocking.relayed, nonblocking.relayed, blocking.retry_verify,
               nonblocking.retry_verify);
    if (blocking.retry_verify != 0 || nonblocking.retry_verify < n)
        bench_fail("nonblock: WANT_RETRY_VERIFY returned %ld times blocking, %ld times non-blocking (%d connections)",
                   blocking.retry_verify, nonblocking.retry_verify, n);

    snprintf(name, sizeof(name), "one cold lookup via relay +%d ms (reference, 2 hosts)", delay_ms);
    bench_figure("nonblock", name, one_ms, "ms", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("nonblock", "blocking: largest lateness of the 10 ms timer", blocking.max_late_ms, "ms", BENCH_INFO,
                 BENCH_NONE, 0);
    bench_figure("nonblock", "non-blocking: largest lateness of the 10 ms timer", nonblocking.max_late_ms, "ms",
                 BENCH_MEASURED, BENCH_LE, 5);
    bench_figure("nonblock", "blocking: longest SSL_connect() call", blocking.max_step_ms, "ms", BENCH_INFO,
                 BENCH_NONE, 0);
    bench_figure("nonblock", "non-blocking: longest SSL_connect() call", nonblocking.max_step_ms, "ms", BENCH_INFO,
                 BENCH_NONE, 0);
    snprintf(name, sizeof(name), "blocking: %d cold connections, total time", n);
    bench_figure("nonblock", name, blocking.total_ms, "ms", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "non-blocking: %d cold connections, total time", n);
    bench_figure("nonblock", name, nonblocking.total_ms, "ms", BENCH_MEASURED, BENCH_LE, 3 * one_ms);
    bench_figure("nonblock", "non-blocking total time / one cold lookup", nonblocking.total_ms / one_ms, "",
                 BENCH_MEASURED, BENCH_LE, 3);
    ts_tls_stop(server);
    ts_relay_stop(relay);

    bench_handshake_nonblocking(env, &wall_ratio, &cpu_ratio);
    bench_figure("nonblock", "warm non-blocking / plain PKIX handshake rate", wall_ratio, "", BENCH_MEASURED,
                 BENCH_GE, 0.97);
    bench_figure("nonblock", "warm non-blocking / plain PKIX client capacity", cpu_ratio, "", BENCH_INFO,
                 BENCH_NONE, 0);
}
