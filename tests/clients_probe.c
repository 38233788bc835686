/*
 * clients_probe.c - a small OpenSSL client (it knows nothing of posh) doing what the programs of issue 21 do, so
 * that test_clients can look at each answer: mbsync's and Node's SSL_VERIFY_NONE then its own name check, and
 * Ruby's verify callback reading an X509_dup() copy of the leaf.
 *
 *   clients_probe PORT CAFILE NAME MODE
 *     none      SSL_VERIFY_NONE with SNI, asks nothing (curl -k): prints "verify=N"
 *     none-ask  SSL_VERIFY_NONE with SNI, then asks about NAME on the peer certificate, a copy, a d2i re-parse,
 *               and the copy again once the connection and its certificate are gone
 *     peer-copy SSL_VERIFY_PEER with SNI; the verify callback checks NAME on an X509_dup() copy at depth 0 and
 *               fails the handshake with X509_V_ERR_HOSTNAME_MISMATCH if it is not there (Ruby)
 *     copy-withdrawn  SSL_VERIFY_PEER; the verify callback keeps a copy of the leaf, asks about NAME on it, then
 *               rejects the peer itself: the copy must stop answering with the approval withdrawn
 * Prints one line of key=value answers; exit 0 when the handshake completed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "probe_san.h"

static const char *name;

/* 1 when the certificate's subjectAltName (as the program reads it: X509_get_ext_d2i) lists name. */
static int san_has(X509 *x)
{
    return probe_san_has(x, name);
}

static int host_ok(X509 *x)
{
    return X509_check_host(x, name, 0, 0, NULL) == 1;
}

static int copy_callback(int ok, X509_STORE_CTX *xctx)
{
    X509 *copy;
    if (!ok || X509_STORE_CTX_get_error_depth(xctx) != 0)
        return ok;
    copy = X509_dup(X509_STORE_CTX_get_current_cert(xctx));
    ok = copy != NULL && host_ok(copy) && san_has(copy);
    X509_free(copy);
    if (!ok)
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_HOSTNAME_MISMATCH);
    return ok;
}

static X509 *kept;
static int kept_during = -1;

static int withdraw_callback(int ok, X509_STORE_CTX *xctx)
{
    if (X509_STORE_CTX_get_error_depth(xctx) != 0)
        return ok;
    kept = X509_dup(X509_STORE_CTX_get_current_cert(xctx));
    kept_during = kept != NULL && host_ok(kept);
    X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0; /* the application's own verdict: no */
}

static int connect_to(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        exit(2);
    }
    return fd;
}

int main(int argc, char **argv)
{
    SSL_CTX *ctx;
    SSL *ssl;
    X509 *cert, *copy, *parsed;
    unsigned char *der = NULL;
    const unsigned char *p;
    const char *mode;
    int fd, len;

    if (argc != 5) {
        fprintf(stderr, "usage: clients_probe PORT CAFILE NAME none|none-ask|peer-copy\n");
        return 2;
    }
    name = argv[3];
    mode = argv[4];
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1)
        return 2;
    if (strcmp(mode, "peer-copy") == 0)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, copy_callback);
    else if (strcmp(mode, "copy-withdrawn") == 0)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, withdraw_callback);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    fd = connect_to(atoi(argv[1]));
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    if (SSL_connect(ssl) != 1) {
        if (kept != NULL)
            printf("kept_during=%d kept_after=%d ", kept_during, host_ok(kept));
        X509_free(kept);
        printf("handshake failed verify=%ld\n", SSL_get_verify_result(ssl));
        ERR_print_errors_fp(stdout);
        /* Everything freed and said before exit: a sanitizer's leak report ends the process without flushing. */
        fflush(stdout);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        return 1;
    }
    printf("verify=%ld", SSL_get_verify_result(ssl));
    if (strcmp(mode, "none-ask") == 0) {
        cert = SSL_get1_peer_certificate(ssl);
        copy = X509_dup(cert);
        /* A copy OpenSSL itself makes (sk_X509_deep_copy calls X509_dup from libcrypto) shares nothing. */
        STACK_OF(X509) *one = sk_X509_new_null(), *deep = NULL;
        if (one != NULL && sk_X509_push(one, cert))
            deep = sk_X509_deep_copy(one, X509_dup, X509_free);
        len = i2d_X509(cert, &der);
        p = der;
        parsed = len > 0 ? d2i_X509(NULL, &p, len) : NULL;
        printf(" host=%d san=%d copy_host=%d copy_san=%d parsed_host=%d parsed_san=%d", host_ok(cert), san_has(cert),
               host_ok(copy), san_has(copy), parsed != NULL && host_ok(parsed), parsed != NULL && san_has(parsed));
        printf(" openssl_copy_host=%d", deep != NULL && sk_X509_num(deep) == 1 && host_ok(sk_X509_value(deep, 0)));
        sk_X509_pop_free(deep, X509_free);
        sk_X509_free(one);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        ssl = NULL;
        X509_free(cert);
        /* The connection and its certificate object are gone: the copy outlives the approval. */
        printf(" gone_copy_host=%d gone_copy_san=%d", host_ok(copy), san_has(copy));
        X509_free(copy);
        X509_free(parsed);
        OPENSSL_free(der);
    }
    printf("\n");
    if (ssl != NULL) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    close(fd);
    SSL_CTX_free(ctx);
    fflush(stdout);
    return 0;
}
