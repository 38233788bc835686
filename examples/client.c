/*
 * client.c - the one-line POSH integration in a plain OpenSSL client.
 *
 *   posh-client-example CAFILE ADDR PORT DOMAIN [SERVICE [THREADS]]
 *
 * Connects to ADDR:PORT (THREADS connections at once, sharing one SSL_CTX), with SNI and reference identifier
 * DOMAIN, and prints for each connection whether the peer was accepted, and how. POSH's own HTTPS fetches are
 * configured from the environment (POSH_CA_FILE, POSH_CONNECT_TO, ...). Exit 0 when every connection was
 * accepted, 1 when any was rejected, 2 on usage or connection errors.
 */
#include <posh.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct job {
    SSL_CTX *ctx;
    const char *addr, *domain;
    int port;
    int rc;
};

static int tcp_connect(const char *addr, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd;
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1 || (fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *connect_one(void *arg)
{
    struct job *j = arg;
    SSL *ssl = SSL_new(j->ctx);
    int fd = tcp_connect(j->addr, j->port);
    long result;

    j->rc = 2;
    if (ssl == NULL || fd < 0) {
        fprintf(stderr, "cannot connect to %s:%d\n", j->addr, j->port);
        goto done;
    }
    /* Per connection, what any careful client does: SNI and the name to check. */
    SSL_set_tlsext_host_name(ssl, j->domain);
    SSL_set1_host(ssl, j->domain);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1 && (result = SSL_get_verify_result(ssl)) == X509_V_OK) {
        printf("accepted (%s): %s\n", SSL_get_posh_status(ssl) == POSH_STATUS_ACCEPTED ? "posh" : "pkix",
               SSL_get_posh_message(ssl));
        j->rc = 0;
    } else {
        result = SSL_get_verify_result(ssl);
        printf("rejected: %s; posh: %s\n", X509_verify_cert_error_string(result), SSL_get_posh_message(ssl));
        j->rc = 1;
    }
done:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *service = argc > 5 ? argv[5] : "xmpp-server";
    int threads = argc > 6 ? atoi(argv[6]) : 1, rc = 0;
    struct job *jobs;
    pthread_t *tids;
    SSL_CTX *ctx;

    if (argc < 5 || threads < 1 || threads > 1024) {
        fprintf(stderr, "usage: %s CAFILE ADDR PORT DOMAIN [SERVICE [THREADS]]\n", argv[0]);
        return 2;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, argv[1], NULL) != 1)
        return 2;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* The one line. */
    if (SSL_CTX_set_posh_verify(ctx, service) != 1) {
        fprintf(stderr, "cannot enable POSH: %s\n", posh_default_client_error());
        return 2;
    }
    jobs = calloc((size_t)threads, sizeof(*jobs));
    tids = calloc((size_t)threads, sizeof(*tids));
    if (jobs == NULL || tids == NULL)
        return 2;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (struct job){ctx, argv[2], argv[4], atoi(argv[3]), 2};
        pthread_create(&tids[i], NULL, connect_one, &jobs[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].rc > rc)
            rc = jobs[i].rc;
    }
    free(jobs);
    free(tids);
    SSL_CTX_free(ctx);
    return rc;
}
