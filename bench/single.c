/*
 * single.c - single flight: 256 concurrent handshakes for one cold domain make exactly one lookup, counted at
 * the web server. The document is served slowly (dripped by the fault-injecting server) so that the handshakes
 * really are waiting for the same lookup rather than finding it done. The TCP connections are made first, one
 * after another (the server's accept backlog is 128), then every TLS handshake starts at once.
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

typedef struct sf_shared {
    SSL_CTX *ctx;
    int port;
    pthread_barrier_t start;
} sf_shared;

typedef struct sf_thread {
    sf_shared *sh;
    pthread_t tid;
    int fd;
    int64_t certificate;      /* when the server's Certificate message arrived: verification follows */
    int64_t ended;            /* when SSL_connect returned */
    int accepted;
    char why[256];
} sf_thread;

static void on_message(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
                       void *arg)
{
    sf_thread *t = arg;
    if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
        ((const unsigned char *)buf)[0] == SSL3_MT_CERTIFICATE)
        t->certificate = bench_now_ns();
}

static void *one(void *p)
{
    sf_thread *t = p;
    SSL *ssl;

    if ((ssl = SSL_new(t->sh->ctx)) == NULL || SSL_set_fd(ssl, t->fd) != 1 ||
        SSL_set_tlsext_host_name(ssl, SINGLE) != 1 || SSL_set1_host(ssl, SINGLE) != 1)
        bench_fail("single flight: SSL setup");
    SSL_set_msg_callback(ssl, on_message);
    SSL_set_msg_callback_arg(ssl, t);
    pthread_barrier_wait(&t->sh->start);
    if (SSL_connect(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK &&
        SSL_get_posh_status(ssl) == POSH_STATUS_ACCEPTED)
        t->accepted = 1;
    else
        snprintf(t->why, sizeof(t->why), "%s", SSL_get_posh_message(ssl));
    t->ended = bench_now_ns();
    ERR_clear_error();
    SSL_free(ssl);
    close(t->fd);
    return NULL;
}

void bench_single_flight(bench_env *env)
{
    int n = env->smoke ? 32 : 256, accepted = 0, overlapped = 0;
    char *doc = bench_doc(env, 86400), connect_to[64];
    ts_evil_route_opts slow = {.body = doc, .drip_ms = env->smoke ? 5 : 40, .drip_bytes = 8}; /* ~1 s in full */
    sf_thread *t = bench_xmalloc(sizeof(*t) * (size_t)n);
    posh_client *client;
    sf_shared sh;
    ts_evil *web;
    ts_tls *server;
    int64_t t0, t1, first_end = INT64_MAX;

    web = ts_evil_new(ts_cert_x509(env->web), ts_cert_key(env->web));
    BENCH_CHECK(web != NULL && ts_evil_route(web, RFC7711_PATH, &slow) == 0 && ts_evil_start(web) == 0,
                "slow web server");
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d", SINGLE, ts_evil_port(web));
    client = bench_client(env, connect_to);
    server = ts_tls_start(ts_cert_x509(env->svc), NULL, ts_cert_key(env->svc));
    BENCH_CHECK(server != NULL, "TLS server");

    sh.port = ts_tls_port(server);
    if ((sh.ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(sh.ctx, env->ca_file, NULL) != 1)
        bench_fail("single flight: client context");
    SSL_CTX_set_verify(sh.ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_posh_client(sh.ctx, client) != 1 || SSL_CTX_set_posh_verify(sh.ctx, "xmpp-server") != 1)
        bench_fail("single flight: SSL_CTX_set_posh_verify failed");
    pthread_barrier_init(&sh.start, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        t[i].sh = &sh;
        t[i].fd = bench_connect(sh.port);
        if (pthread_create(&t[i].tid, NULL, one, &t[i]) != 0)
            bench_fail("single flight: pthread_create (%d threads)", i);
    }
    pthread_barrier_wait(&sh.start);
    t0 = bench_now_ns();
    for (int i = 0; i < n; i++)
        pthread_join(t[i].tid, NULL);
    t1 = bench_now_ns();
    pthread_barrier_destroy(&sh.start);

    for (int i = 0; i < n; i++) {
        if (t[i].accepted)
            accepted++;
        else
            bench_note("single flight: handshake %d not accepted: %s", i, t[i].why);
        if (t[i].ended < first_end)
            first_end = t[i].ended;
    }
    /*
     * The lookup ends just before the first handshake does (every waiter wakes then): a handshake that had the
     * server's certificate earlier was verifying it, i.e. waiting for that one lookup.
     */
    for (int i = 0; i < n; i++)
        if (t[i].certificate != 0 && t[i].certificate < first_end)
            overlapped++;

    bench_figure("single", "concurrent handshakes for one cold domain", n, "", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("single", "handshakes accepted by POSH", accepted, "", BENCH_EXACT, BENCH_EQ, n);
    bench_figure("single", "lookups counted at the web server", (double)ts_evil_requests(web, NULL), "",
                 BENCH_EXACT, BENCH_EQ, 1);
    bench_figure("single", "handshakes that waited for that lookup", overlapped, "", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("single", "wall time (slow document included)", (double)(t1 - t0) / 1e6, "ms", BENCH_INFO,
                 BENCH_NONE, 0);

    SSL_CTX_free(sh.ctx);
    ts_tls_stop(server);
    posh_client_free(client);
    ts_evil_stop(web);
    free(t);
    free(doc);
}
