/*
 * gnutls_compat_probe.c - a program linked with GnuTLS's OpenSSL compatibility library (libgnutls-openssl27, as
 * ssmtp and wput are): the shim must leave it exactly as it runs without it (issue 21: it died with SIGSEGV at
 * its first SSL_CTX_new). With a port, it also connects and shakes hands (GnuTLS's own verification).
 */
#include <arpa/inet.h>
#include <gnutls/openssl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    SSL_CTX *ctx;
    SSL *ssl;
    int fd, rc;

    SSL_library_init();
    if ((ctx = SSL_CTX_new(SSLv23_client_method())) == NULL) {
        printf("SSL_CTX_new failed\n");
        return 3;
    }
    printf("context ok\n");
    if (argc < 2) {
        SSL_CTX_free(ctx);
        return 0;
    }
    sa.sin_port = htons((unsigned short)atoi(argv[1]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return 2;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    rc = SSL_connect(ssl);
    printf("handshake %s\n", rc == 1 ? "ok" : "failed");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return rc == 1 ? 0 : 1;
}
