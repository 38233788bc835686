/*
 * handshake.h - the client side of the TLS tests: a client SSL_CTX with POSH verification, handshakes against a
 * ts_tls server on 127.0.0.1 (blocking, or non-blocking through the POSH wait descriptor), what OpenSSL and POSH
 * decided for each, and the application callbacks the tests install.
 */
#ifndef POSH_TEST_HANDSHAKE_H
#define POSH_TEST_HANDSHAKE_H

#include <posh.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* What OpenSSL and POSH decided for one handshake. */
typedef struct hs {
    int connected;
    long verify_result;
    posh_status status;
    posh_err err;
    char msg[512];
    int suspensions; /* non-blocking: WANT_RETRY_VERIFY returns */
} hs;

/* A blocking TCP connection to 127.0.0.1:port. Asserts on failure. */
int hs_tcp_connect(int port);
/*
 * A client context trusting ca_file and verifying the peer, with POSH for service through client. client NULL: the
 * default client (configured from the environment); service NULL: POSH is not enabled on the context. Caller frees.
 */
SSL_CTX *hs_client_ctx(const char *ca_file, posh_client *client, const char *service);
/* The blocking handshake of ssl over fd; ssl and fd stay open. */
hs hs_handshake_on(SSL *ssl, int fd);
/* One blocking handshake on a new connection to port; host (SSL_set1_host) and sni may be NULL; tweak may adjust
 * the SSL before connecting. Clears OpenSSL's error queue. */
hs hs_handshake(SSL_CTX *ctx, int port, const char *host, const char *sni, void (*tweak)(SSL *));
/* The same, non-blocking, with host as SNI too: poll the socket, or the POSH wait descriptor while a lookup runs.
 * Asserts that it ends within 30 s and suspends fewer than 10 times. */
hs hs_handshake_nb(SSL_CTX *ctx, int port, const char *host, void (*tweak)(SSL *));
/*
 * threads threads doing per_thread handshakes each (handshake(ctx), which must not fail a Criterion assertion
 * outside the test's thread); how many connected with X509_V_OK and POSH status want.
 */
long hs_parallel(SSL_CTX *ctx, hs (*handshake)(SSL_CTX *), posh_status want, int threads, int per_thread);

/* An application verify callback that accepts everything. */
int hs_accept_all(int ok, X509_STORE_CTX *x);
/* got is the failure want: an untrusted leaf is reported as 20 when verification stops there, 21 when a callback
 * lets it go on (either for either). */
int hs_same_failure(long got, long want);
/* Load the CRL in path into ctx's store and check revocation. */
void hs_load_crl(SSL_CTX *ctx, const char *path);

/* What hs_recording_cb, an application verify callback that returns ok, saw (since hs_cb_reset). */
typedef struct hs_cb_seen {
    int calls;
    int depth0_ok;  /* ok at depth 0; -1: not called there */
    int depth0_err; /* the error at depth 0 */
} hs_cb_seen;

extern hs_cb_seen hs_cb;
void hs_cb_reset(void);
int hs_recording_cb(int ok, X509_STORE_CTX *x);
/* With hs_recording_cb set on ctx (last), expect handshake(ctx) to fail and the callback to see, at depth 0, the
 * name mismatch. */
void hs_expect_cb_sees_mismatch(SSL_CTX *ctx, hs (*handshake)(SSL_CTX *));

#endif
