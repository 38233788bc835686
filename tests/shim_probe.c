/*
 * shim_probe.c - a small OpenSSL client that knows nothing of posh, for the LD_PRELOAD shim's tests
 * (test_shim.c): the shapes of program a preload shim must survive that no Debian tool gives on demand.
 *
 *   posh-shim-probe MODE PORT CAFILE NAME [NAME2]
 *   once       one handshake with SSL_set1_host(NAME) and SNI NAME
 *   threads    8 threads x 4 handshakes on one SSL_CTX
 *   fork       a handshake with NAME, fork, then one with NAME2 in the child and, after it, in the parent
 *   app-cb     the application installs its own certificate verification callback (counts its calls)
 *   app-cb-deny   the same callback, which refuses the chain
 *   ctx-only   create a client SSL_CTX and exit without connecting
 *   xmpp-send, xmpp-write, xmpp-close-reuse, xmpp-dup2-reuse
 *              Prosody style: XMPP s2s STARTTLS with no SNI and no host for OpenSSL (SSL_VERIFY_PEER), the
 *              stream header (to=NAME) sent with send() or write(); then the program's own name check as LuaSec
 *              does it (X509_get_ext_by_NID, X509_get_ext, X509V3_EXT_d2i; the subject CN when there is no
 *              subjectAltName). The reuse modes first send a stream header to=NAME on another socket, then reuse
 *              its descriptor number (close and a new socket, or dup2) for the connection, whose own header goes
 *              out with writev() (which the shim does not read). Prints "verify=N names-match=M".
 *   san-threads  one handshake with SSL_set1_host(NAME) and SNI NAME, then 8 threads read the peer
 *              certificate's subjectAltName at once, 200 times each, with X509_get_ext_d2i (curl, Python) and
 *              the LuaSec way; prints "san-threads: R of T reads carry NAME" (the shim makes its substitute at the
 *              first read, which here is 8 threads racing)
 *   connect-flood  one handshake with SSL_set1_host(NAME) (the shim reads its service rule), then FLOOD
 *              connections to a listener of the probe's own, all kept open, then a handshake with no SNI and
 *              no host (the verification asks for the stream header's `to`, and the shim reports evicted
 *              records there). Under a service that is not XMPP no connection is recorded, so nothing is evicted
 *              (the test reads the shim's log).
 *   own-check  Postfix/Dovecot style: SSL_VERIFY_NONE and SSL_set1_host(NAME), then, after the handshake, the
 *              program's own X509_check_host(NAME) on the peer certificate; prints "verify=N own-check=R"
 *   xmpp-flood-accepted, xmpp-flood-stalled
 *              a flood of FLOOD streams first, each kept open, then xmpp-send to NAME. A forked peer process (the
 *              network) and the probe (an XMPP server) exchange them on a listener of the probe's own: accepted,
 *              the peer opens them and the probe writes a Prosody-style reply header on each (with `id`);
 *              stalled, the probe dials them (one `to` each), gets STARTTLS's proceed and sends its ClientHello
 *              with verification off, and the peer never answers it.
 *   xmpp-incoming-flood  (NAME2: the basename of a certificate and key, BASE.crt and BASE.key) the probe is an
 *              XMPP server under POSH_SERVICE=xmpp-server: a forked peer opens FLOOD streams to it, each with a
 *              header from='peerN.example' (N < 100: each domain claimed 11 times) up to STARTTLS's proceed,
 *              then stays silent (the probe hands each socket to OpenSSL, so with POSH_PREFETCH=1 an early
 *              lookup starts for each domain, and its handshake waits forever);
 *              then one stream from=NAME whose peer presents BASE as its client certificate. The probe verifies
 *              it (SSL_VERIFY_PEER, CAFILE) and checks its names as LuaSec does; prints "verify=N names-match=M"
 *              and "threads=T" (the process's threads at the end).
 *   xmpp-incoming, xmpp-incoming-nofrom, xmpp-incoming-badfrom  (NAME2 as above) the same without the
 *              flood: one stream claiming NAME, claiming nothing (no `from`), or an unusable `from`. The
 *              incoming modes listen on PORT (0: any free port).
 *   bad-pointer  write(), send() and sendto() of bad buffers ((void *)1, a PROT_NONE page, a mapped file
 *              truncated to nothing or to one of its two pages), with a connected TCP socket open to PORT;
 *              prints one line per call and exits 0 when each returned -1/EFAULT (or, for the half-truncated
 *              file, a short count), 1 otherwise; a signal kills it.
 *   signal-send  with 1,000 dialled streams open, the main thread sends stream headers and TLS handshake records
 *              in a loop while another thread interrupts it with SIGUSR1, whose handler sends the same on another
 *              socket; prints "signal-send: H handler sends, I of them inside a main send, M main sends" once
 *              H >= 10000 or after 10 s.
 * Prints one line per handshake ("accepted" or "rejected verify=N") and exits 0 when every handshake was
 * accepted, 1 otherwise, 2 on usage or connection errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "probe_san.h"

#define THREADS 8
#define PER_THREAD 4
#define FLOOD 1100   /* streams: more than the shim's 1,024 records of a kind */

static int port;
static const char *ca_file;
static atomic_int app_calls;
static int app_deny;

static int app_cert_verify(X509_STORE_CTX *xctx, void *arg)
{
    atomic_fetch_add(&app_calls, 1);
    if (app_deny) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return X509_verify_cert(xctx);
}

static SSL_CTX *client_ctx(int app_cb)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        fprintf(stderr, "probe: cannot set up the context\n");
        exit(2);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (app_cb)
        SSL_CTX_set_cert_verify_callback(ctx, app_cert_verify, NULL);
    return ctx;
}

/* One handshake: 1 accepted, 0 rejected. name NULL: no SNI and no host name. */
static int handshake(SSL_CTX *ctx, const char *name)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    long verify;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ssl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        fprintf(stderr, "probe: cannot connect to 127.0.0.1:%d\n", port);
        exit(2);
    }
    if (name != NULL) {
        SSL_set_tlsext_host_name(ssl, name);
        SSL_set1_host(ssl, name);
    }
    SSL_set_fd(ssl, fd);
    ok = SSL_connect(ssl) == 1;
    verify = SSL_get_verify_result(ssl);
    if (name == NULL)
        name = "(no name)";
    if (ok)
        SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    ok = ok && verify == X509_V_OK;
    if (ok)
        printf("accepted %s\n", name);
    else
        printf("rejected %s verify=%ld\n", name, verify);
    fflush(stdout);
    return ok;
}

typedef struct worker {
    pthread_t thread;
    SSL_CTX *ctx;
    const char *name;
    int accepted;
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    for (int i = 0; i < PER_THREAD; i++)
        w->accepted += handshake(w->ctx, w->name);
    return NULL;
}

static int run_threads(const char *name)
{
    worker w[THREADS];
    SSL_CTX *ctx = client_ctx(0);
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.ctx = ctx, .name = name};
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0)
            return 2;
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].accepted;
    }
    SSL_CTX_free(ctx);
    printf("accepted %d/%d\n", total, THREADS * PER_THREAD);
    return total == THREADS * PER_THREAD ? 0 : 1;
}

static int run_fork(const char *name, const char *name2)
{
    SSL_CTX *ctx = client_ctx(0);
    int status = 0, ok;
    pid_t pid;

    if (!handshake(ctx, name))
        return 1;
    fflush(stdout);
    if ((pid = fork()) < 0)
        return 2;
    if (pid == 0) {
        ok = handshake(ctx, name2);
        printf("child %s\n", ok ? "accepted" : "rejected");
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return 2;
    ok = handshake(ctx, name2);
    printf("parent %s\n", ok ? "accepted" : "rejected");
    SSL_CTX_free(ctx);
    return ok && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int tcp_to(int p)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)p)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        fprintf(stderr, "probe: cannot connect to 127.0.0.1:%d\n", p);
        exit(2);
    }
    return fd;
}

/* Read until needle has been seen (the server's replies carry no newlines). 1 seen, 0 not. */
static int read_until(int fd, const char *needle)
{
    char buf[4096];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(buf) - 1 && (n = read(fd, buf + have, 1)) == 1) {
        buf[++have] = '\0';
        if (strstr(buf, needle) != NULL)
            return 1;
    }
    return 0;
}

static void send_how(int fd, const char *s, const char *how)
{
    ssize_t n;
    if (strcmp(how, "send") == 0) {
        n = send(fd, s, strlen(s), 0);
    } else if (strcmp(how, "write") == 0) {
        n = write(fd, s, strlen(s));
    } else {
        struct iovec iov = {.iov_base = (void *)s, .iov_len = strlen(s)};
        n = writev(fd, &iov, 1);
    }
    if (n != (ssize_t)strlen(s))
        exit(2);
}

/* The stream header (to=name), features, STARTTLS, proceed: ready for the handshake. */
static void xmpp_starttls(int fd, const char *name, const char *how)
{
    char header[512];
    snprintf(header, sizeof(header),
             "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
             "xmlns:stream='http://etherx.jabber.org/streams' to='%s' from='origin.example.org' version='1.0'>",
             name);
    send_how(fd, header, how);
    if (!read_until(fd, "</stream:features>"))
        exit(2);
    send_how(fd, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", how);
    if (!read_until(fd, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
        exit(2);
}

/* LuaSec's cert:extensions() and cert:subject(), as Prosody's util.x509 uses them. */
static int luasec_names_match(X509 *cert, const char *name)
{
    int i = -1, had_san = 0, match = 0;
    while ((i = X509_get_ext_by_NID(cert, NID_subject_alt_name, i)) != -1) {
        X509_EXTENSION *ext = X509_get_ext(cert, i);
        GENERAL_NAMES *gens = ext != NULL ? X509V3_EXT_d2i(ext) : NULL;
        if (gens == NULL)
            break;
        for (int k = 0; k < sk_GENERAL_NAME_num(gens); k++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, k);
            if (g->type != GEN_DNS)
                continue;
            had_san = 1;
            if (strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), name) == 0)
                match = 1;
        }
        GENERAL_NAMES_free(gens);
    }
    if (!had_san) {
        X509_NAME *subject = X509_get_subject_name(cert);
        for (int k = 0; k < X509_NAME_entry_count(subject); k++) {
            X509_NAME_ENTRY *e = X509_NAME_get_entry(subject, k);
            if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) == NID_commonName &&
                strcmp((const char *)ASN1_STRING_get0_data(X509_NAME_ENTRY_get_data(e)), name) == 0)
                match = 1;
        }
    }
    return match;
}

static int run_xmpp(const char *variant, const char *name)
{
    SSL_CTX *ctx = client_ctx(0);
    SSL *ssl = SSL_new(ctx);
    X509 *peer;
    int fd, match = 0;
    long verify;

    if (strcmp(variant, "send") == 0 || strcmp(variant, "write") == 0) {
        fd = tcp_to(port);
        xmpp_starttls(fd, name, variant);
    } else {
        /* A first socket sends a header naming NAME and goes away; its descriptor number is reused. */
        int first = tcp_to(port);
        char header[512];
        snprintf(header, sizeof(header), "<stream:stream xmlns='jabber:server' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>", name);
        send_how(first, header, "send");
        if (strcmp(variant, "close-reuse") == 0) {
            close(first);
            fd = tcp_to(port);
            if (fd != first) {
                fprintf(stderr, "probe: descriptor %d not reused (got %d)\n", first, fd);
                return 2;
            }
        } else {
            int second = tcp_to(port);
            if (dup2(second, first) != first)
                return 2;
            close(second);
            fd = first;
        }
        xmpp_starttls(fd, name, "writev");
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        printf("handshake failed\n");
        return 1;
    }
    verify = SSL_get_verify_result(ssl);
    if ((peer = SSL_get1_peer_certificate(ssl)) != NULL)
        match = luasec_names_match(peer, name);
    X509_free(peer);
    printf("verify=%ld names-match=%d\n", verify, match);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return verify == X509_V_OK && match ? 0 : 1;
}

#define SAN_THREADS 8
#define SAN_READS 200

typedef struct san_reader {
    pthread_t t;
    X509 *cert;
    const char *name;
    pthread_barrier_t *start;
    int matched;
} san_reader;

static void *san_reader_main(void *p)
{
    san_reader *r = p;
    pthread_barrier_wait(r->start); /* every thread's first read at once: the substitute is made in a race */
    for (int i = 0; i < SAN_READS; i++)
        r->matched += (i % 2 ? luasec_names_match(r->cert, r->name) : probe_san_has(r->cert, r->name));
    return NULL;
}

static int run_san_threads(const char *name)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    SSL_CTX *ctx = client_ctx(0);
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0), total = 0;
    san_reader r[SAN_THREADS];
    pthread_barrier_t start;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ssl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        fprintf(stderr, "probe: cannot connect to 127.0.0.1:%d\n", port);
        return 2;
    }
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1 || SSL_get_verify_result(ssl) != X509_V_OK) {
        printf("rejected %s verify=%ld\n", name, SSL_get_verify_result(ssl));
        return 1;
    }
    pthread_barrier_init(&start, NULL, SAN_THREADS);
    for (int i = 0; i < SAN_THREADS; i++) {
        r[i] = (san_reader){.cert = SSL_get0_peer_certificate(ssl), .name = name, .start = &start};
        if (pthread_create(&r[i].t, NULL, san_reader_main, &r[i]) != 0)
            return 2;
    }
    for (int i = 0; i < SAN_THREADS; i++) {
        pthread_join(r[i].t, NULL);
        total += r[i].matched;
    }
    pthread_barrier_destroy(&start);
    printf("san-threads: %d of %d reads carry %s\n", total, SAN_THREADS * SAN_READS, name);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return total == SAN_THREADS * SAN_READS ? 0 : 1;
}

/* Exit 0 when the verification passed and the program's own check says yes, 1 otherwise. */
static int run_own_check(const char *name)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    SSL_CTX *ctx = client_ctx(0);
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0), own = -2;
    long verify;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ssl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        return 2;
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        return 2;
    verify = SSL_get_verify_result(ssl);
    if (SSL_get0_peer_certificate(ssl) != NULL)
        own = X509_check_host(SSL_get0_peer_certificate(ssl), name, 0, 0, NULL);
    printf("verify=%ld own-check=%d\n", verify, own);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return verify == X509_V_OK && own == 1 ? 0 : 1;
}

/* ---- floods: FLOOD streams kept open, then the one stream that needs POSH ---- */

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4 * FLOOD) {
        rl.rlim_cur = rl.rlim_max < 4 * FLOOD ? rl.rlim_max : 4 * FLOOD;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            exit(2);
    }
}

/* A listener on 127.0.0.1:*port_out (0: any port), its port into *port_out. */
static int listen_local(int *port_out)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)*port_out)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 2 * FLOOD) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        exit(2);
    *port_out = ntohs(sin.sin_port);
    return fd;
}

/* Read until needle was seen, in chunks: the other side says nothing more before it gets an answer. */
static int recv_until(int fd, const char *needle)
{
    char buf[2048];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(buf) - 1 && (n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0)) > 0) {
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, needle) != NULL)
            return 1;
    }
    return 0;
}

/*
 * The network's side of a flood, in a child process (its sockets and the shim's records for them are its
 * own): it opens FLOOD streams to the probe (accepted) or answers the FLOOD the probe opens up to STARTTLS's
 * proceed and then stays silent (stalled), and holds them until the probe closes *hold. Returns in the probe.
 */
static pid_t flood_peer(int lfd, int lport, int stalled, int *hold)
{
    int p[2];
    pid_t pid;
    char ch;

    if (pipe(p) != 0 || (pid = fork()) < 0)
        exit(2);
    if (pid > 0) {
        close(p[0]);
        *hold = p[1];
        return pid;
    }
    close(p[1]);
    for (int i = 0; i < FLOOD; i++) {
        char header[512];
        int c;
        if (stalled) {
            if ((c = accept(lfd, NULL, NULL)) < 0 || !recv_until(c, "version='1.0'>"))
                _exit(2);
            snprintf(header, sizeof(header), "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:"
                     "stream='http://etherx.jabber.org/streams' id='stall-%d' from='stalled%d.example' version="
                     "'1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
                     "</starttls></stream:features>", i, i);
            if (send(c, header, strlen(header), 0) != (ssize_t)strlen(header) || !recv_until(c, "<starttls"))
                _exit(2);
            if (send(c, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 50, 0) != 50)
                _exit(2);
            continue; /* c stays open: the ClientHello that comes is never answered */
        }
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)lport)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if ((c = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(c, (struct sockaddr *)&sin, sizeof(sin)) != 0)
            _exit(2);
        snprintf(header, sizeof(header), "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
                 "'http://etherx.jabber.org/streams' from='peer%d.example' to='origin.example.org' version='1.0'>",
                 i);
        if (send(c, header, strlen(header), 0) != (ssize_t)strlen(header))
            _exit(2);
    }
    while (read(p[0], &ch, 1) > 0)
        ; /* until the probe is done */
    _exit(0);
}

static int run_flood(const char *kind, const char *name)
{
    int lport = 0, hold, status, ret;
    int lfd;
    pid_t peer;
    SSL_CTX *off = NULL;
    static SSL *stalled[FLOOD];

    raise_fd_limit();
    lfd = listen_local(&lport);
    if (strcmp(kind, "accepted") == 0) {
        peer = flood_peer(lfd, lport, 0, &hold);
        for (int i = 0; i < FLOOD; i++) {
            /* As Prosody answers an incoming stream: the reply header names the peer and carries an id. */
            char reply[512];
            int c = accept(lfd, NULL, NULL);
            if (c < 0 || !recv_until(c, "version='1.0'>"))
                return 2;
            snprintf(reply, sizeof(reply), "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:"
                     "stream='http://etherx.jabber.org/streams' id='in-%d' from='origin.example.org' to='peer%d."
                     "example' version='1.0'><stream:features/>", i, i);
            send_how(c, reply, "send");
        }
    } else if (strcmp(kind, "stalled") == 0) {
        peer = flood_peer(lfd, lport, 1, &hold);
        if ((off = SSL_CTX_new(TLS_client_method())) == NULL)
            return 2;
        SSL_CTX_set_verify(off, SSL_VERIFY_NONE, NULL);
        for (int i = 0; i < FLOOD; i++) {
            char to[64];
            int fd = tcp_to(lport);
            SSL *ssl = stalled[i] = SSL_new(off);
            snprintf(to, sizeof(to), "stalled%d.example", i);
            xmpp_starttls(fd, to, "send");
            /* Non-blocking: SSL_connect sends the ClientHello and waits for an answer that never comes. */
            if (ssl == NULL || fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || SSL_set_fd(ssl, fd) != 1 ||
                SSL_connect(ssl) != -1 || SSL_get_error(ssl, -1) != SSL_ERROR_WANT_READ)
                return 2;
            ERR_clear_error(); /* ssl and fd stay as they are until the probe is done */
        }
    } else {
        return 2;
    }
    printf("flood: %d %s streams open\n", FLOOD, kind);
    fflush(stdout);
    ret = run_xmpp("send", name);
    for (int i = 0; i < FLOOD; i++)
        SSL_free(stalled[i]);
    SSL_CTX_free(off);
    close(hold);
    if (waitpid(peer, &status, 0) != peer || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 2;
    return ret;
}

/* ---- incoming streams: the probe is the XMPP server, the peer claims its names ---- */

#define INCOMING_DOMAINS 100 /* the flood's streams claim these many domains, each eleven times */

static const char incoming_reply[] = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
                                     "'http://etherx.jabber.org/streams' id='in' from='origin.example.org' version="
                                     "'1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                                     "<required/></starttls></stream:features>";

/* The peer's side up to STARTTLS's proceed on a new connection to lport, claiming from (NULL: no `from`). */
static int incoming_peer_preamble(int lport, const char *from)
{
    char header[512], attr[300] = "";
    int c = tcp_to(lport);
    if (from != NULL)
        snprintf(attr, sizeof(attr), " from='%s'", from);
    snprintf(header, sizeof(header), "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
             "'http://etherx.jabber.org/streams'%s to='origin.example.org' version='1.0'>", attr);
    if (send(c, header, strlen(header), 0) != (ssize_t)strlen(header) || !recv_until(c, "</stream:features>") ||
        send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 51, 0) != 51 ||
        !recv_until(c, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
        _exit(2);
    return c;
}

/* The network, in a child: n_silent silent streams, then one claiming from (NULL: none), presenting base.crt. */
static pid_t incoming_peer(int lport, int n_silent, const char *from, const char *base, int *hold)
{
    char crt[600], key[600], byte;
    int p[2], c;
    pid_t pid;
    SSL_CTX *ctx;
    SSL *ssl;

    if (pipe(p) != 0 || (pid = fork()) < 0)
        exit(2);
    if (pid > 0) {
        close(p[0]);
        *hold = p[1];
        return pid;
    }
    close(p[1]);
    setenv("POSH_PREFETCH", "0", 1); /* the peer's own early lookups are not what is counted */
    for (int i = 0; i < n_silent; i++) {
        char claim[64];
        snprintf(claim, sizeof(claim), "peer%d.example", i % INCOMING_DOMAINS);
        (void)incoming_peer_preamble(lport, claim); /* stays open and silent */
    }
    c = incoming_peer_preamble(lport, from);
    snprintf(crt, sizeof(crt), "%s.crt", base);
    snprintf(key, sizeof(key), "%s.key", base);
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL || SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || (ssl = SSL_new(ctx)) == NULL)
        _exit(2);
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    SSL_set_fd(ssl, c);
    if (SSL_connect(ssl) == 1)
        (void)SSL_read(ssl, &byte, 1); /* TLS 1.3: until the server has judged the certificate */
    while (read(p[0], &byte, 1) > 0)
        ; /* until the probe is done */
    _exit(0);
}

/* The probe's side of an accepted stream up to proceed; the socket handed to a new server SSL. */
static SSL *incoming_accept(int lfd, SSL_CTX *ctx, int nonblocking)
{
    int c = accept(lfd, NULL, NULL);
    SSL *ssl;
    if (c < 0 || !recv_until(c, "version='1.0'>") ||
        send(c, incoming_reply, sizeof(incoming_reply) - 1, 0) != (ssize_t)sizeof(incoming_reply) - 1 ||
        !recv_until(c, "<starttls") ||
        send(c, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 50, 0) != 50 ||
        (nonblocking && fcntl(c, F_SETFL, O_NONBLOCK) != 0) || (ssl = SSL_new(ctx)) == NULL)
        exit(2);
    SSL_set_fd(ssl, c); /* as LuaSec does when STARTTLS proceeds: the shim's early lookup starts here */
    return ssl;
}

static int threads_now(void)
{
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return n;
}

/*
 * n_silent silent streams, then one claiming from (NULL: no `from`) whose names are checked for name. Exit 0
 * when it verified and its names matched as LuaSec checks them, 1 otherwise.
 */
static int run_incoming(int n_silent, const char *from, const char *name, const char *base)
{
    char crt[600], key[600];
    int lport = port, hold, status, match = 0, lfd;
    static SSL *silent[FLOOD];
    SSL_CTX *ctx;
    SSL *ssl;
    pid_t peer;
    long verify;

    raise_fd_limit();
    lfd = listen_local(&lport);
    peer = incoming_peer(lport, n_silent, from, base, &hold);
    snprintf(crt, sizeof(crt), "%s.crt", base);
    snprintf(key, sizeof(key), "%s.key", base);
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL || SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
        return 2;
    /* As Prosody: ask for the peer's certificate, check its names afterwards. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    for (int i = 0; i < n_silent; i++) {
        silent[i] = incoming_accept(lfd, ctx, 1);
        if (SSL_accept(silent[i]) != -1 || SSL_get_error(silent[i], -1) != SSL_ERROR_WANT_READ)
            return 2;
        ERR_clear_error();
    }
    printf("incoming-flood: %d silent streams open\n", n_silent);
    fflush(stdout);
    ssl = incoming_accept(lfd, ctx, 0);
    if (SSL_accept(ssl) != 1) {
        printf("handshake failed verify=%ld\n", SSL_get_verify_result(ssl));
        return 1;
    }
    verify = SSL_get_verify_result(ssl);
    if (SSL_get0_peer_certificate(ssl) != NULL)
        match = luasec_names_match(SSL_get0_peer_certificate(ssl), name);
    printf("verify=%ld names-match=%d\nthreads=%d\n", verify, match, threads_now());
    fflush(stdout);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    for (int i = 0; i < n_silent; i++)
        SSL_free(silent[i]);
    SSL_CTX_free(ctx);
    close(hold);
    if (waitpid(peer, &status, 0) != peer || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 2;
    return verify == X509_V_OK && match ? 0 : 1;
}

/* ---- bad buffers: what the kernel refuses must reach the program as -1/EFAULT, never as a signal ---- */

static int report(const char *what, ssize_t n, int err, int short_ok, size_t len)
{
    int ok = (n == -1 && err == EFAULT) || (short_ok && n > 0 && (size_t)n < len);
    printf("%s: %zd%s%s %s\n", what, n, n == -1 ? " " : "", n == -1 ? strerror(err) : "", ok ? "ok" : "WRONG");
    fflush(stdout);
    return ok;
}

static int run_bad_pointer(void)
{
    long page = sysconf(_SC_PAGESIZE);
    int tcp = tcp_to(port), sp[2], all = 1, mf;
    char path[] = "/tmp/posh-shim-probe-XXXXXX", what[128];
    void *none = mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *map;
    const struct {
        const char *name;
        const void *p;
    } bad[] = {{"(void *)1", (const void *)1}, {"a PROT_NONE page", none}};
    ssize_t n;

    if (none == MAP_FAILED || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        return 2;
    /* tcp: a socket the program connected, the kind whose stream header the shim records. */
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        for (size_t len = 2; len <= 64; len *= 32) {
            int fds[2] = {sp[0], tcp};
            for (int k = 0; k < 2; k++) {
                const char *on = k == 0 ? "socketpair" : "tcp";
                errno = 0;
                n = write(fds[k], bad[b].p, len);
                snprintf(what, sizeof(what), "write(%s, %s, %zu)", on, bad[b].name, len);
                all &= report(what, n, errno, 0, len);
                errno = 0;
                n = send(fds[k], bad[b].p, len, MSG_NOSIGNAL);
                snprintf(what, sizeof(what), "send(%s, %s, %zu)", on, bad[b].name, len);
                all &= report(what, n, errno, 0, len);
                errno = 0;
                n = sendto(fds[k], bad[b].p, len, MSG_NOSIGNAL, NULL, 0);
                snprintf(what, sizeof(what), "sendto(%s, %s, %zu)", on, bad[b].name, len);
                all &= report(what, n, errno, 0, len);
            }
        }
    }
    /* A mapped file that opens with a stream header, truncated under the program (another process could). */
    if ((mf = mkstemp(path)) < 0 || unlink(path) != 0 || ftruncate(mf, 2 * page) != 0)
        return 2;
    map = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, mf, 0);
    if (map == MAP_FAILED)
        return 2;
    memset(map, ' ', 2 * (size_t)page);
    memcpy(map, "<stream:stream to='mapped.example' version='1.0'>", 49);
    if (ftruncate(mf, page) != 0)
        return 2;
    errno = 0;
    n = send(sp[0], map, 2 * (size_t)page, MSG_NOSIGNAL);
    all &= report("send(socketpair, a mapped file truncated to its first page)", n, errno, 1, 2 * (size_t)page);
    if (ftruncate(mf, 0) != 0)
        return 2;
    errno = 0;
    n = send(sp[0], map, 2 * (size_t)page, MSG_NOSIGNAL);
    all &= report("send(socketpair, a mapped file truncated to nothing)", n, errno, 0, 0);
    errno = 0;
    n = write(tcp, map, 2 * (size_t)page);
    all &= report("write(tcp, a mapped file truncated to nothing)", n, errno, 0, 0);
    errno = 0;
    n = sendto(tcp, map, 2 * (size_t)page, MSG_NOSIGNAL, NULL, 0);
    all &= report("sendto(tcp, a mapped file truncated to nothing)", n, errno, 0, 0);
    return all ? 0 : 1;
}

/* ---- a signal handler that sends what the shim looks at, while the program is sending the same ---- */

static const char signal_header[] = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/"
                                    "streams' to='signal.example' version='1.0'>";
static const unsigned char signal_hello[] = {0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00};
static int signal_fd;
static atomic_int handler_sends, signal_done, in_send, inside_sends;

static void on_usr1(int sig)
{
    int saved = errno;
    (void)sig;
    if (atomic_load(&in_send))
        atomic_fetch_add(&inside_sends, 1); /* it interrupted the main thread's send(), in the shim or the kernel */
    if (atomic_fetch_add(&handler_sends, 1) % 2 == 0)
        (void)send(signal_fd, signal_header, sizeof(signal_header) - 1, MSG_DONTWAIT);
    else
        (void)send(signal_fd, signal_hello, sizeof(signal_hello), MSG_DONTWAIT);
    errno = saved;
}

static void *signaller(void *p)
{
    pthread_t target = *(pthread_t *)p;
    while (!atomic_load(&signal_done)) {
        pthread_kill(target, SIGUSR1);
        sched_yield();
    }
    return NULL;
}

/* A connected UDP socket whose receiver nobody reads: every send is accepted (the kernel drops the data). */
static int udp_sink(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (r < 0 || s < 0 || bind(r, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(r, (struct sockaddr *)&sin, &len) != 0 || connect(s, (struct sockaddr *)&sin, len) != 0)
        exit(2);
    return s;
}

static int run_signal_send(void)
{
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    pthread_t self = pthread_self(), thread;
    int lport = 0, main_fd = udp_sink();
    long sends = 0;

    /*
     * First a thousand streams the program dialled (to a listener of its own, never accepted), each with its
     * header sent: the shim then holds that many records, and its slow path a long time under its lock, where
     * the signals below are meant to land.
     */
    raise_fd_limit();
    if (listen_local(&lport) < 0) /* stays open: the connections wait in its backlog */
        return 2;
    for (int i = 0; i < 1000; i++) {
        char header[256];
        snprintf(header, sizeof(header), "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber"
                 ".org/streams' to='busy%d.example' version='1.0'>", i);
        send_how(tcp_to(lport), header, "send");
    }
    signal_fd = udp_sink();
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || pthread_create(&thread, NULL, signaller, &self) != 0)
        return 2;
    /* Bounded by a count or, on a loaded machine, by time: a deadlock shows as no end at all. */
    time_t end = time(NULL) + 10;
    while (atomic_load(&handler_sends) < 10000 && (sends % 1024 != 0 || time(NULL) < end)) {
        atomic_store(&in_send, 1);
        if (sends++ % 2 == 0)
            (void)send(main_fd, signal_header, sizeof(signal_header) - 1, MSG_DONTWAIT);
        else
            (void)send(main_fd, signal_hello, sizeof(signal_hello), MSG_DONTWAIT);
        atomic_store(&in_send, 0);
    }
    atomic_store(&signal_done, 1);
    pthread_join(thread, NULL);
    printf("signal-send: %d handler sends, %d of them inside a main send, %ld main sends\n",
           atomic_load(&handler_sends), atomic_load(&inside_sends), sends);
    return 0;
}

static int run_connect_flood(const char *name)
{
    SSL_CTX *ctx = client_ctx(0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    int lport = 0, lfd, first = handshake(ctx, name);

    raise_fd_limit();
    lfd = listen_local(&lport);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)lport);
    for (int i = 0; i < FLOOD; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
            return 2;
    }
    printf("flood: %d connections open\n", FLOOD);
    fflush(stdout);
    (void)handshake(ctx, NULL);
    close(lfd);
    SSL_CTX_free(ctx);
    return first ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode;
    SSL_CTX *ctx;
    int ok;

    if (argc < 5) {
        fprintf(stderr, "usage: posh-shim-probe MODE PORT CAFILE NAME [NAME2]\n");
        return 2;
    }
    mode = argv[1];
    port = atoi(argv[2]);
    ca_file = argv[3];
    if (strcmp(mode, "threads") == 0)
        return run_threads(argv[4]);
    if (strcmp(mode, "fork") == 0)
        return argc == 6 ? run_fork(argv[4], argv[5]) : 2;
    if (strcmp(mode, "own-check") == 0)
        return run_own_check(argv[4]);
    if (strcmp(mode, "xmpp-incoming-flood") == 0)
        return argc == 6 ? run_incoming(FLOOD, argv[4], argv[4], argv[5]) : 2;
    if (strcmp(mode, "xmpp-incoming") == 0)
        return argc == 6 ? run_incoming(0, argv[4], argv[4], argv[5]) : 2;
    if (strcmp(mode, "xmpp-incoming-nofrom") == 0)
        return argc == 6 ? run_incoming(0, NULL, argv[4], argv[5]) : 2;
    if (strcmp(mode, "xmpp-incoming-badfrom") == 0)
        return argc == 6 ? run_incoming(0, "bad domain!", argv[4], argv[5]) : 2;
    if (strncmp(mode, "xmpp-flood-", 11) == 0)
        return run_flood(mode + 11, argv[4]);
    if (strncmp(mode, "xmpp-", 5) == 0)
        return run_xmpp(mode + 5, argv[4]);
    if (strcmp(mode, "bad-pointer") == 0)
        return run_bad_pointer();
    if (strcmp(mode, "san-threads") == 0)
        return run_san_threads(argv[4]);
    if (strcmp(mode, "connect-flood") == 0)
        return run_connect_flood(argv[4]);
    if (strcmp(mode, "signal-send") == 0)
        return run_signal_send();
    if (strcmp(mode, "ctx-only") == 0) {
        SSL_CTX_free(client_ctx(0));
        return 0;
    }
    if (strcmp(mode, "once") != 0 && strcmp(mode, "app-cb") != 0 && strcmp(mode, "app-cb-deny") != 0)
        return 2;
    app_deny = strcmp(mode, "app-cb-deny") == 0;
    ctx = client_ctx(strcmp(mode, "once") != 0);
    ok = handshake(ctx, argv[4]);
    SSL_CTX_free(ctx);
    if (strcmp(mode, "once") != 0)
        printf("app callback calls %d\n", atomic_load(&app_calls));
    return ok ? 0 : 1;
}
