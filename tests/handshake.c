/*
 * handshake.c - see handshake.h.
 */
#include "handshake.h"
#include "support.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#define HS_MAX_THREADS 64

hs_cb_seen hs_cb;

int hs_tcp_connect(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect to the TLS server");
    return fd;
}

SSL_CTX *hs_client_ctx(const char *ca_file, posh_client *client, const char *service)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(ctx);
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca_file, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (client != NULL)
        cr_assert_eq(SSL_CTX_set_posh_client(ctx, client), 1);
    if (service != NULL)
        cr_assert_eq(SSL_CTX_set_posh_verify(ctx, service), 1, "%s",
                     client != NULL ? "" : posh_default_client_error());
    return ctx;
}

static void record(SSL *ssl, hs *h)
{
    h->verify_result = SSL_get_verify_result(ssl);
    h->status = SSL_get_posh_status(ssl);
    h->err = SSL_get_posh_error(ssl);
    snprintf(h->msg, sizeof(h->msg), "%s", SSL_get_posh_message(ssl));
}

hs hs_handshake_on(SSL *ssl, int fd)
{
    hs h = {0};
    SSL_set_fd(ssl, fd);
    h.connected = SSL_connect(ssl) == 1;
    record(ssl, &h);
    return h;
}

hs hs_handshake(SSL_CTX *ctx, int port, const char *host, const char *sni, void (*tweak)(SSL *))
{
    SSL *ssl = SSL_new(ctx);
    int fd = hs_tcp_connect(port);
    hs h;
    cr_assert_not_null(ssl);
    if (sni != NULL)
        SSL_set_tlsext_host_name(ssl, sni);
    if (host != NULL)
        SSL_set1_host(ssl, host);
    if (tweak != NULL)
        tweak(ssl);
    h = hs_handshake_on(ssl, fd);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return h;
}

hs hs_handshake_nb(SSL_CTX *ctx, int port, const char *host, void (*tweak)(SSL *))
{
    SSL *ssl = SSL_new(ctx);
    int fd = hs_tcp_connect(port);
    int64_t deadline = ts_now_ms() + 30000;
    hs h = {0};
    cr_assert_not_null(ssl);
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    if (tweak != NULL)
        tweak(ssl);
    SSL_set_fd(ssl, fd);
    for (;;) {
        int rc = SSL_connect(ssl), e;
        struct pollfd p = {.fd = fd};
        if (rc == 1) {
            h.connected = 1;
            break;
        }
        e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_WANT_RETRY_VERIFY) {
            h.suspensions++;
            cr_assert_eq(SSL_get_posh_status(ssl), POSH_STATUS_PENDING, "%s", SSL_get_posh_message(ssl));
            p.fd = SSL_get_posh_wait_fd(ssl);
            cr_assert_geq(p.fd, 0, "a suspended handshake has a descriptor to wait for");
            p.events = POLLIN;
        } else if (e == SSL_ERROR_WANT_READ) {
            p.events = POLLIN;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            p.events = POLLOUT;
        } else {
            break; /* failed */
        }
        cr_assert_lt(h.suspensions, 10, "a handshake suspended again and again");
        cr_assert_lt(ts_now_ms(), deadline, "the non-blocking handshake did not finish");
        cr_assert_geq(poll(&p, 1, 10000), 0);
    }
    record(ssl, &h);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return h;
}

typedef struct parallel {
    SSL_CTX *ctx;
    hs (*handshake)(SSL_CTX *);
    posh_status want;
    int n;
    long ok;
} parallel;

static void *parallel_main(void *arg)
{
    parallel *p = arg;
    for (int i = 0; i < p->n; i++) {
        hs h = p->handshake(p->ctx);
        if (h.connected && h.verify_result == X509_V_OK && h.status == p->want)
            p->ok++;
    }
    return NULL;
}

long hs_parallel(SSL_CTX *ctx, hs (*handshake)(SSL_CTX *), posh_status want, int threads, int per_thread)
{
    pthread_t t[HS_MAX_THREADS];
    parallel p[HS_MAX_THREADS];
    long total = 0;

    cr_assert_leq(threads, HS_MAX_THREADS);
    for (int i = 0; i < threads; i++) {
        p[i] = (parallel){.ctx = ctx, .handshake = handshake, .want = want, .n = per_thread};
        cr_assert_eq(pthread_create(&t[i], NULL, parallel_main, &p[i]), 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += p[i].ok;
    }
    return total;
}

int hs_accept_all(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

int hs_same_failure(long got, long want)
{
    if (want == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE || want == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
        return got == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE || got == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
    return got == want;
}

void hs_load_crl(SSL_CTX *ctx, const char *path)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    cr_assert_eq(X509_STORE_load_file(store, path), 1, "load CRL");
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
}

void hs_cb_reset(void)
{
    hs_cb = (hs_cb_seen){.calls = 0, .depth0_ok = -1, .depth0_err = 0};
}

int hs_recording_cb(int ok, X509_STORE_CTX *x)
{
    if (X509_STORE_CTX_get_error_depth(x) == 0) {
        hs_cb.depth0_ok = ok;
        hs_cb.depth0_err = X509_STORE_CTX_get_error(x);
    }
    hs_cb.calls++;
    return ok;
}

void hs_expect_cb_sees_mismatch(SSL_CTX *ctx, hs (*handshake)(SSL_CTX *))
{
    hs h;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_recording_cb);
    hs_cb_reset();
    h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(hs_cb.depth0_ok, 0);
    cr_expect_eq(hs_cb.depth0_err, X509_V_ERR_HOSTNAME_MISMATCH);
}
