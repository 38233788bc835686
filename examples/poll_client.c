/*
 * poll_client.c - non-blocking POSH in a single-threaded poll() client: many TLS connections at once, none of
 * them held up while POSH fetches a document for another.
 *
 *   posh-poll-example SERVICE CAFILE HOST:PORT:DOMAIN [HOST:PORT:DOMAIN...]
 *   posh-poll-example SERVICE CAFILE HOST:PORT:DOMAIN COUNT
 *
 * One connection per HOST:PORT:DOMAIN (HOST an IP address: 127.0.0.1, [::1]), or COUNT connections to one, a
 * "*" in DOMAIN replaced by the connection's number (d*.example.com: d0.example.com, d1.example.com, ...). SNI
 * and the reference identifier are DOMAIN; the peer's chain must be trusted by CAFILE. Compared with a blocking
 * client, POSH adds two things: SSL_CTX_set_posh_nonblocking() once, and when SSL_connect() fails with
 * SSL_ERROR_WANT_RETRY_VERIFY, poll SSL_get_posh_wait_fd() for POLLIN, then call SSL_connect() again.
 * POSH's own HTTPS fetches are configured from the environment (POSH_CA_FILE, POSH_CONNECT_TO, POSH_TIMEOUT_MS,
 * POSH_ASYNC_LOOKUPS, ...). Prints one line per connection: DOMAIN, then pkix, posh or rejected, and why.
 * Exit 0 when every connection was accepted, 1 when any was rejected, 2 on usage or connection errors.
 */
#include <posh.h>

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 1000
#define IDLE_TIMEOUT_MS 30000 /* give up when nothing at all happens for this long */

struct conn {
    char domain[256];
    int fd;
    SSL *ssl;
    int wait_fd;   /* what the connection waits for: its socket, or POSH's descriptor */
    short events;
    int rc;        /* -1 while running, then 0 accepted, 1 rejected, 2 error */
};

/* A non-blocking TCP connection to the address host, port port; the connect completes later (POLLOUT). */
static int tcp_start(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai;
    int fd = -1;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* The connection's end: one line, its SSL and socket released. sys_errno: the socket's error, if any. */
static void finish(struct conn *c, int connected, int sys_errno)
{
    long vr = SSL_get_verify_result(c->ssl);

    if (connected && vr == X509_V_OK) {
        c->rc = 0;
        printf("%s: %s: %s\n", c->domain, SSL_get_posh_status(c->ssl) == POSH_STATUS_ACCEPTED ? "posh" : "pkix",
               SSL_get_posh_message(c->ssl));
    } else if (vr != X509_V_OK) {
        c->rc = 1;
        printf("%s: rejected: %s; posh: %s\n", c->domain, X509_verify_cert_error_string(vr),
               SSL_get_posh_message(c->ssl));
    } else {
        c->rc = 2;
        printf("%s: error: %s\n", c->domain,
               sys_errno ? strerror(sys_errno) : ERR_peek_error() ? ERR_reason_error_string(ERR_peek_error())
                                                                  : "the connection ended during the handshake");
    }
    ERR_clear_error();
    SSL_free(c->ssl);
    close(c->fd);
}

/* Take the handshake as far as it goes without waiting, then say what it waits for. 1 when it is over. */
static int step(struct conn *c)
{
    int r, sys_errno;
    errno = 0;
    r = SSL_connect(c->ssl);
    sys_errno = errno;
    if (r == 1) {
        finish(c, 1, 0);
        return 1;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->wait_fd = c->fd;
        c->events = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->wait_fd = c->fd;
        c->events = POLLOUT;
        return 0;
    case SSL_ERROR_WANT_RETRY_VERIFY:
        /* POSH is fetching the domain's document: its descriptor becomes readable when the answer is in. */
        c->wait_fd = SSL_get_posh_wait_fd(c->ssl);
        c->events = POLLIN;
        if (c->wait_fd >= 0)
            return 0;
        break;
    case SSL_ERROR_SYSCALL:
        finish(c, 0, sys_errno);
        return 1;
    default:
        break;
    }
    finish(c, 0, 0);
    return 1;
}

/* Split HOST:PORT:DOMAIN in place (HOST may be [IPv6]). 0 ok, -1 malformed. */
static int parse_target(char *arg, char **host, char **port, char **domain)
{
    char *c2 = strrchr(arg, ':'), *c1;
    if (c2 == NULL)
        return -1;
    *c2 = '\0';
    if ((c1 = strrchr(arg, ':')) == NULL)
        return -1;
    *c1 = '\0';
    *host = arg;
    *port = c1 + 1;
    *domain = c2 + 1;
    if (**host == '[' && (*host)[strlen(*host) - 1] == ']') {
        (*host)[strlen(*host) - 1] = '\0';
        (*host)++;
    }
    return **host && **port && **domain ? 0 : -1;
}

/* The number n in place of the first "*" of pattern. */
static void domain_name(char *out, size_t len, const char *pattern, int n)
{
    const char *star = strchr(pattern, '*');
    if (star == NULL)
        snprintf(out, len, "%s", pattern);
    else
        snprintf(out, len, "%.*s%d%s", (int)(star - pattern), pattern, n, star + 1);
}

int main(int argc, char **argv)
{
    struct conn *conns;
    struct pollfd *pfd;
    int *idx, count = 0, left, rc = 0;
    char *host, *port, *domain, *end;
    long repeat = 0;
    SSL_CTX *ctx;

    if (argc == 5) {
        repeat = strtol(argv[4], &end, 10);
        if (*end != '\0')
            repeat = 0; /* a fourth target, not a count */
        else if (repeat < 1 || repeat > MAX_CONNS)
            argc = 0;
    }
    if (argc < 4 || (repeat == 0 && argc - 3 > MAX_CONNS)) {
        fprintf(stderr, "usage: %s SERVICE CAFILE HOST:PORT:DOMAIN [HOST:PORT:DOMAIN...]\n"
                        "       %s SERVICE CAFILE HOST:PORT:DOMAIN COUNT   (at most %d; '*' in DOMAIN: 0..COUNT-1)\n",
                argv[0], argv[0], MAX_CONNS);
        return 2;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1) {
        fprintf(stderr, "cannot load %s\n", argv[2]);
        return 2;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* POSH for SERVICE, and its lookups off the handshake: SSL_connect() never waits for one. */
    if (SSL_CTX_set_posh_verify(ctx, argv[1]) != 1 || SSL_CTX_set_posh_nonblocking(ctx, 1) != 1) {
        fprintf(stderr, "cannot enable POSH: %s\n", posh_default_client_error());
        return 2;
    }

    left = repeat > 0 ? (int)repeat : argc - 3;
    conns = calloc((size_t)left, sizeof(*conns));
    pfd = calloc((size_t)left, sizeof(*pfd));
    idx = calloc((size_t)left, sizeof(*idx));
    if (conns == NULL || pfd == NULL || idx == NULL)
        return 2;
    for (int i = 3; i < argc && (repeat == 0 || i == 3); i++) {
        if (parse_target(argv[i], &host, &port, &domain) != 0) {
            fprintf(stderr, "not HOST:PORT:DOMAIN: %s\n", argv[i]);
            return 2;
        }
        for (long k = 0; k < (repeat > 0 ? repeat : 1); k++) {
            struct conn *c = &conns[count++];
            domain_name(c->domain, sizeof(c->domain), domain, (int)k);
            if ((c->fd = tcp_start(host, port)) < 0 || (c->ssl = SSL_new(ctx)) == NULL) {
                fprintf(stderr, "cannot connect to %s port %s\n", host, port);
                return 2;
            }
            /* Per connection, what any careful client does: SNI and the name to check. */
            SSL_set_tlsext_host_name(c->ssl, c->domain);
            SSL_set1_host(c->ssl, c->domain);
            SSL_set_fd(c->ssl, c->fd);
            c->wait_fd = c->fd; /* first, the TCP connect: writable when done */
            c->events = POLLOUT;
            c->rc = -1;
        }
    }

    /* The event loop: wait for what each connection waits for, and step the ones that are ready. */
    while (left > 0) {
        int n = 0, ready;
        for (int i = 0; i < count; i++)
            if (conns[i].rc < 0) {
                pfd[n] = (struct pollfd){.fd = conns[i].wait_fd, .events = conns[i].events};
                idx[n++] = i;
            }
        ready = poll(pfd, (nfds_t)n, IDLE_TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            for (int k = 0; k < n; k++) {
                struct conn *c = &conns[idx[k]];
                printf("%s: error: %s\n", c->domain, ready == 0 ? "timed out" : strerror(errno));
                c->rc = 2;
                SSL_free(c->ssl);
                close(c->fd);
            }
            break;
        }
        for (int k = 0; k < n; k++)
            if (pfd[k].revents != 0 && step(&conns[idx[k]]))
                left--;
    }
    for (int i = 0; i < count; i++)
        if (conns[i].rc > rc)
            rc = conns[i].rc;
    free(conns);
    free(pfd);
    free(idx);
    SSL_CTX_free(ctx);
    return rc;
}
