/*
 * selfcheck_probe.c - a client in the manner of socat: the library's one line (SSL_CTX_set_posh_verify) plus its
 * own name check after the handshake, which is where SSL_check_posh_host() goes (README "Programs that check
 * names themselves").
 *
 *   selfcheck_probe PORT CAFILE NAME MODE
 *     plain     no POSH: the program's own check is X509_check_host()
 *     posh      SSL_CTX_set_posh_verify(ctx, "xmpp-server"), own check SSL_check_posh_host()
 *     verify0   the same, then verification turned off (socat's verify=0): no POSH request may follow
 * Prints what each check said; exit 0 when the handshake completed and the own check accepted NAME.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <posh.h>

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    SSL_CTX *ctx;
    SSL *ssl;
    X509 *cert, *copy, *ca;
    FILE *fp;
    const char *name, *mode, *vouched;
    int fd, own, ok = 0;

    if (argc != 5)
        return 2;
    name = argv[3];
    mode = argv[4];
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1)
        return 2;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (strcmp(mode, "plain") != 0 && SSL_CTX_set_posh_verify(ctx, "xmpp-server") != 1) {
        printf("posh: %s\n", posh_default_client_error());
        return 2;
    }
    if (strcmp(mode, "verify0") == 0)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    sa.sin_port = htons((unsigned short)atoi(argv[1]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return 2;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    if (SSL_connect(ssl) != 1) {
        printf("handshake failed: verify=%ld posh=%s\n", SSL_get_verify_result(ssl), SSL_get_posh_message(ssl));
        fflush(stdout); /* before a sanitizer's leak check can end the process */
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        return 1;
    }
    cert = SSL_get1_peer_certificate(ssl);
    copy = X509_dup(cert);
    vouched = SSL_get_posh_vouched_name(ssl);
    /* The one changed line of a program like socat: X509_check_host() becomes SSL_check_posh_host(). */
    own = strcmp(mode, "plain") == 0 ? X509_check_host(cert, name, 0, 0, NULL)
                                     : SSL_check_posh_host(ssl, cert, name, 0, 0, NULL);
    printf("verify=%ld vouched=%s x509_check_host=%d own_check=%d copy=%d other_name=%d", SSL_get_verify_result(ssl),
           vouched != NULL ? vouched : "(none)", X509_check_host(cert, name, 0, 0, NULL), own,
           SSL_check_posh_host(ssl, copy, name, 0, 0, NULL), SSL_check_posh_host(ssl, cert, "bar.example.org", 0, 0,
                                                                                 NULL));
    /* Another certificate (the CA's) is not the connection's peer: POSH's approval does not speak for it. */
    if ((fp = fopen(argv[2], "r")) != NULL && (ca = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL) {
        printf(" other_cert=%d", SSL_check_posh_host(ssl, ca, name, 0, 0, NULL));
        X509_free(ca);
    }
    if (fp != NULL)
        fclose(fp);
    printf("\n");
    ok = SSL_get_verify_result(ssl) == X509_V_OK && own == 1;
    X509_free(copy);
    X509_free(cert);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return ok ? 0 : 1;
}
