/*
 * tsan_stress.c - the concurrent parts of libposh under ThreadSanitizer, as a plain program (Criterion does
 * not start under TSan). Against a real nginx and two real TLS servers on 127.0.0.1:
 *   - lookup threads: posh_lookup() of four services through one posh_client (a document, a reference, no
 *     POSH, bad JSON), and of hosted domains d0..d3 whose references name the same target URL (the URL cache,
 *     its single flight across domains), each result checked; the cache holds fewer entries than there are
 *     keys (LRU churn);
 *   - a clock thread moving the injected clock (posh_config_set_clock) so that entries keep expiring, a
 *     flush thread calling posh_client_flush() all along, and a thread giving the shared SSL_CTX one client
 *     and then another (SSL_CTX_set_posh_client) while its handshakes run: verifications read it without a lock;
 *   - handshake threads sharing one SSL_CTX with SSL_CTX_set_posh_verify(), and others using one SSL_CTX with
 *     SSL_set_posh_verify() per connection: a certificate the domain vouches for is accepted by POSH, another
 *     is rejected with POSH_ERR_NO_MATCH;
 *   - non-blocking (issue 12): handshake threads on a context with SSL_CTX_set_posh_nonblocking() (waiting on
 *     SSL_get_posh_wait_fd(), some freeing the SSL while its lookup runs), async threads making
 *     posh_lookup_async() batches (results checked in the callbacks, on the engine thread) and posh_prefetch()
 *     followed by a blocking posh_lookup() that joins it, all on the domains the blocking threads look up and
 *     the flush thread flushes; and each round, further clients freed with async lookups in flight, one after
 *     another at other points of the lookups' lives (every callback called before posh_client_free() returns,
 *     with POSH_ERR_CANCELLED or a result);
 *   - each round, a client freed while two threads make handshakes (blocking, non-blocking) on contexts given it:
 *     every handshake is accepted or, after the free, rejected with POSH_ERR_CANCELLED (security finding 1).
 * Exit status 0 only if every result was right; a TSan report fails it too (TSAN_OPTIONS=halt_on_error=1).
 * Usage: tsan_stress [--cold] [ROUNDS] (default 1 round). The per-connection SSL_CTX is never primed: its first
 * SSL_set_posh_verify() calls race on purpose (--cold is kept as a no-op).
 */
#include "fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOOKUP_THREADS 6
#define LOOKUPS_PER_THREAD 400
#define CTX_HANDSHAKE_THREADS 3
#define SSL_HANDSHAKE_THREADS 3
#define HANDSHAKES_PER_THREAD 60
#define NB_HANDSHAKE_THREADS 3
#define ASYNC_THREADS 2
#define ASYNC_BATCHES 25
#define ASYNC_BATCH 8           /* lookups in flight at once per async thread */
#define CANCELLED_LOOKUPS 16    /* in flight when a client is freed */
#define CANCELLED_CLIENTS 4     /* clients freed that way per round */
#define NB_WAIT_MS 120000       /* a non-blocking handshake's wait for its lookup: slow under TSan, never stuck */
#define FREED_MAX_HANDSHAKES 500 /* on a freed client's context: one must be cancelled by then */

#define XMPP_CLIENT_PATH "/.well-known/posh/xmpp-client.json"
#define SUBMISSION_PATH "/.well-known/posh/submission.json"
#define HOSTING_TARGET "/posh/foo-client.json"

/* The scenario, read-only once the threads run (except the atomics). */
static struct {
    ts_cert *svc, *other;
    const unsigned char *svc_der, *other_der;
    size_t svc_der_len, other_der_len;
    posh_client *client;
    posh_client *client2; /* given to ctx_posh in turn with client by swap_main */
    SSL_CTX *ctx_posh;   /* SSL_CTX_set_posh_verify() */
    SSL_CTX *ctx_plain;  /* SSL_set_posh_verify() on each connection */
    SSL_CTX *ctx_nb;     /* SSL_CTX_set_posh_verify() and SSL_CTX_set_posh_nonblocking() */
    posh_config *cfg;    /* the client's configuration, for the client freed with lookups in flight */
    const char *ca_file;
    int port_svc, port_other;
    atomic_long now;     /* the injected clock */
    atomic_int stop;     /* the lookups and handshakes are done: clock and flush threads end */
    atomic_long failures, lookups, handshakes, fetch_flushes, client_swaps;
    atomic_long async_lookups, prefetches, nb_waits, nb_abandoned, cancelled;
} S;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    /* Only the first few are printed: one wrong answer under load tends to repeat. */
    if (atomic_fetch_add(&S.failures, 1) < 20) {
        va_start(ap, fmt);
        fputs("tsan_stress: FAIL: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static void die(const char *what) __attribute__((noreturn));

static void die(const char *what)
{
    fprintf(stderr, "tsan_stress: setup failed: %s: %s\n", what, ts_error());
    exit(2);
}

static time_t fake_clock(void *arg)
{
    return (time_t)atomic_load((atomic_long *)arg);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- lookups ---- */

static const struct expect {
    const char *domain;
    const char *service;
    posh_err err;
    long ttl;          /* for POSH_OK: min(reference expires, fingerprints expires); after a reference at most */
    int reference;
} expects[] = {
    {FOO, "xmpp-server", POSH_OK, 3, 0},
    {FOO, "xmpp-client", POSH_OK, 2, 1},
    {"d0.example.com", "xmpp-client", POSH_OK, 2, 1},
    {FOO, "imap", POSH_ERR_NO_POSH, 0, 0},
    {"d1.example.com", "xmpp-client", POSH_OK, 2, 1},
    {FOO, "_submission._tcp", POSH_ERR_JSON, 0, 0},
    {"d2.example.com", "xmpp-client", POSH_OK, 2, 1},
    {"d3.example.com", "xmpp-client", POSH_OK, 2, 1},
};
#define HOSTED_DOMAINS 4
#define N_EXPECTS (sizeof(expects) / sizeof(expects[0]))

/* A result of S.client for e, from posh_lookup() or a posh_lookup_async() callback; released here. */
static void check_result(const struct expect *e, posh_err err, posh_result *r)
{
    long now = atomic_load(&S.now);
    int match = -1, index = -2;

    if (r == NULL) {
        fail("%s: no result (error %d)", e->service, (int)err);
        return;
    }
    if (err != e->err || posh_result_error(r) != err)
        fail("%s: error %d (%s), expected %d", e->service, (int)err, posh_result_message(r), (int)e->err);
    if (strcmp(posh_result_domain(r), e->domain) != 0)
        fail("%s: result for domain %s", e->service, posh_result_domain(r));
    if (err == POSH_OK) {
        /*
         * A result built on a target shared from the URL cache lives what is left of the target: never more
         * than the min rule, and 0 when the fetch it waited for ended after the target's life (this clock runs
         * 200 s per second, so a fetch under TSan often does).
         */
        long ttl = posh_result_ttl(r);
        if ((e->reference ? ttl < 0 || ttl > e->ttl : ttl != e->ttl) ||
            posh_result_followed_reference(r) != e->reference)
            fail("%s %s: ttl %ld reference %d", e->domain, e->service, ttl, posh_result_followed_reference(r));
        if (e->reference && posh_result_request_count(r) != 2)
            fail("%s %s: %zu requests", e->domain, e->service, posh_result_request_count(r));
        /* Fetched at some clock value no later than now. */
        if (posh_result_expires_at(r) - posh_result_ttl(r) > now)
            fail("%s: expires at %ld, fetched in the future (now %ld)", e->service,
                 (long)posh_result_expires_at(r), now);
        if (posh_match_der(S.client, r, S.svc_der, S.svc_der_len, &match, &index) != POSH_OK || match != 1 ||
            index != 0)
            fail("%s: the vouched certificate does not match (%d, %d)", e->service, match, index);
        if (posh_match_der(S.client, r, S.other_der, S.other_der_len, &match, &index) != POSH_OK || match != 0 ||
            index != -1)
            fail("%s: another certificate matches (%d, %d)", e->service, match, index);
    } else if (posh_match_der(S.client, r, S.svc_der, S.svc_der_len, &match, &index) != err || match != 0) {
        fail("%s: a failed result matched", e->service);
    }
    posh_result_free(r);
}

static void check_lookup(const struct expect *e)
{
    posh_result *r = NULL;
    posh_err err = posh_lookup(S.client, e->domain, e->service, &r);

    atomic_fetch_add(&S.lookups, 1);
    check_result(e, err, r);
}

static void *lookup_main(void *arg)
{
    size_t id = (size_t)arg;
    for (size_t i = 0; i < LOOKUPS_PER_THREAD; i++)
        check_lookup(&expects[(id + i) % N_EXPECTS]);
    return NULL;
}

/* ---- non-blocking lookups ---- */

typedef struct async_req {
    const struct expect *e;
    atomic_int *pending;   /* the batch's lookups whose callback has not returned */
    int probe;             /* also try a blocking posh_lookup() from the callback: it must be refused */
} async_req;

static void async_done(posh_err err, posh_result *r, void *arg)
{
    async_req *q = arg;
    if (q->probe) {
        posh_result *inner = NULL;
        /* On the engine thread, a blocking lookup would wait for the engine itself. */
        if (posh_lookup(S.client, q->e->domain, q->e->service, &inner) != POSH_ERR_INVALID_ARGUMENT)
            fail("posh_lookup() from a callback was not refused");
        if (inner != NULL)
            posh_result_free(inner);
    }
    check_result(q->e, err, r);
    atomic_fetch_sub(q->pending, 1); /* the last use of q: the thread waiting for the batch may now reuse it */
}

static void *async_main(void *arg)
{
    size_t id = (size_t)arg;
    async_req q[ASYNC_BATCH];
    atomic_int pending;
    posh_err err;

    for (size_t b = 0; b < ASYNC_BATCHES; b++) {
        const struct expect *e = &expects[(id + b) % N_EXPECTS];
        atomic_store(&pending, ASYNC_BATCH);
        for (size_t i = 0; i < ASYNC_BATCH; i++) {
            q[i] = (async_req){&expects[(id + b + i) % N_EXPECTS], &pending, i == 0 && b % 5 == 0};
            atomic_fetch_add(&S.async_lookups, 1);
            if ((err = posh_lookup_async(S.client, q[i].e->domain, q[i].e->service, async_done, &q[i])) !=
                POSH_OK) {
                fail("posh_lookup_async %s %s: %s", q[i].e->domain, q[i].e->service, posh_strerror(err));
                atomic_fetch_sub(&pending, 1);
            }
        }
        /* While they run: a prefetch, then a blocking lookup of the same key, which joins it or finds it cached. */
        if ((err = posh_prefetch(S.client, e->domain, e->service)) != POSH_OK)
            fail("posh_prefetch %s %s: %s", e->domain, e->service, posh_strerror(err));
        atomic_fetch_add(&S.prefetches, 1);
        check_lookup(e);
        while (atomic_load(&pending) > 0)
            sleep_ms(1);
    }
    return NULL;
}

typedef struct cancel_req {
    const struct expect *e;
    atomic_int *called;
} cancel_req;

static void cancel_done(posh_err err, posh_result *r, void *arg)
{
    cancel_req *q = arg;
    if (err == POSH_ERR_CANCELLED)
        atomic_fetch_add(&S.cancelled, 1);
    if ((err != POSH_ERR_CANCELLED && (err != q->e->err || r == NULL)) ||
        (r != NULL && (posh_result_error(r) != err || strcmp(posh_result_domain(r), q->e->domain) != 0)))
        fail("freed client, %s %s: error %d, result %s", q->e->domain, q->e->service, (int)err,
             r != NULL ? posh_result_message(r) : "none");
    if (r != NULL)
        posh_result_free(r);
    atomic_fetch_add(q->called, 1);
}

/* A client freed with async lookups in flight, after wait_ms: queued, fetching a document or a reference target. */
static void free_in_flight(long wait_ms)
{
    posh_client *client = posh_client_new(S.cfg);
    cancel_req q[CANCELLED_LOOKUPS];
    atomic_int called;
    int started = 0;

    atomic_store(&called, 0);
    if (client == NULL) {
        fail("posh_client_new for the client to free");
        return;
    }
    for (int i = 0; i < CANCELLED_LOOKUPS; i++) {
        q[i] = (cancel_req){&expects[i % N_EXPECTS], &called};
        if (posh_lookup_async(client, q[i].e->domain, q[i].e->service, cancel_done, &q[i]) == POSH_OK)
            started++;
        else
            fail("posh_lookup_async on the client to free");
    }
    sleep_ms(wait_ms);
    posh_client_free(client);
    /* Every callback has returned by now: q is about to go out of scope. */
    if (atomic_load(&called) != started)
        fail("posh_client_free returned with %d of %d callbacks called", atomic_load(&called), started);
}

static void free_under_handshakes(void);

static void *cancel_main(void *arg)
{
    size_t round = (size_t)arg;
    for (size_t k = 0; k < CANCELLED_CLIENTS; k++)
        free_in_flight((long)((round * CANCELLED_CLIENTS + k) % 8) * 8);
    free_under_handshakes();
    return NULL;
}

/* ---- handshakes ---- */

static int tcp_connect(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/*
 * SSL_connect() to its end. On the non-blocking context, WANT_RETRY_VERIFY means a lookup runs: wait for POSH's
 * descriptor and call it again, or with abandon return -1 at once (the caller frees the SSL while the lookup
 * runs). 1 connected, 0 failed.
 */
static int connect_posh(SSL *ssl, int nonblocking, int abandon)
{
    for (;;) {
        int r = SSL_connect(ssl), fd;
        struct pollfd pfd;
        if (r == 1)
            return 1;
        if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_RETRY_VERIFY)
            return 0;
        atomic_fetch_add(&S.nb_waits, 1);
        if (!nonblocking || SSL_get_posh_status(ssl) != POSH_STATUS_PENDING || (fd = SSL_get_posh_wait_fd(ssl)) < 0) {
            fail("WANT_RETRY_VERIFY: non-blocking %d, status %d, wait fd %d", nonblocking,
                 (int)SSL_get_posh_status(ssl), SSL_get_posh_wait_fd(ssl));
            return 0;
        }
        if (abandon)
            return -1;
        pfd = (struct pollfd){.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, NB_WAIT_MS) != 1) {
            fail("non-blocking handshake: POSH's descriptor not readable within %d ms", NB_WAIT_MS);
            return 0;
        }
    }
}

/*
 * One handshake to the server presenting svc (vouched for: accepted) or other (not: rejected). abandon: on the
 * non-blocking context, free the SSL as soon as it waits for a lookup (none of the checks then).
 */
static void check_handshake(SSL_CTX *ctx, int per_connection, int vouched, int abandon)
{
    int fd = tcp_connect(vouched ? S.port_svc : S.port_other);
    SSL *ssl = SSL_new(ctx);
    int connected;
    long vr;
    posh_status status;
    posh_err err;

    atomic_fetch_add(&S.handshakes, 1);
    if (fd < 0 || ssl == NULL) {
        fail("handshake: no connection or SSL");
        goto done;
    }
    SSL_set_tlsext_host_name(ssl, FOO);
    SSL_set1_host(ssl, FOO);
    if (per_connection && SSL_set_posh_verify(ssl, "xmpp-server") != 1) {
        fail("SSL_set_posh_verify failed");
        goto done;
    }
    SSL_set_fd(ssl, fd);
    if ((connected = connect_posh(ssl, ctx == S.ctx_nb, abandon)) < 0) {
        atomic_fetch_add(&S.nb_abandoned, 1);
        goto done;
    }
    vr = SSL_get_verify_result(ssl);
    status = SSL_get_posh_status(ssl);
    err = SSL_get_posh_error(ssl);
    if (vouched && (!connected || vr != X509_V_OK || status != POSH_STATUS_ACCEPTED || err != POSH_OK))
        fail("vouched certificate: connected %d, verify %ld, status %d, error %d: %s", connected, vr, (int)status,
             (int)err, SSL_get_posh_message(ssl));
    if (!vouched && (connected || vr != X509_V_ERR_HOSTNAME_MISMATCH || status != POSH_STATUS_REJECTED ||
                     err != POSH_ERR_NO_MATCH))
        fail("other certificate: connected %d, verify %ld, status %d, error %d: %s", connected, vr, (int)status,
             (int)err, SSL_get_posh_message(ssl));
done:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
}

static void *ctx_handshake_main(void *arg)
{
    size_t id = (size_t)arg;
    for (size_t i = 0; i < HANDSHAKES_PER_THREAD; i++)
        check_handshake(S.ctx_posh, 0, (id + i) % 3 != 0, 0);
    return NULL;
}

static void *ssl_handshake_main(void *arg)
{
    size_t id = (size_t)arg;
    for (size_t i = 0; i < HANDSHAKES_PER_THREAD; i++)
        check_handshake(S.ctx_plain, 1, (id + i) % 3 != 1, 0);
    return NULL;
}

static void *nb_handshake_main(void *arg)
{
    size_t id = (size_t)arg;
    for (size_t i = 0; i < HANDSHAKES_PER_THREAD; i++)
        check_handshake(S.ctx_nb, 0, (id + i) % 3 != 2, (id + i) % 7 == 0);
    return NULL;
}

/* ---- a client freed under handshakes ---- */

static SSL_CTX *client_ctx_of(posh_client *client, int nonblocking);

/* One handshake to the vouched server on a context of the client being freed: 1 accepted, 0 cancelled, -1 else. */
static int freed_handshake(SSL_CTX *ctx, int nonblocking)
{
    int fd = tcp_connect(S.port_svc), connected, outcome = -1;
    SSL *ssl = SSL_new(ctx);

    atomic_fetch_add(&S.handshakes, 1);
    if (fd < 0 || ssl == NULL) {
        fail("handshake: no connection or SSL");
        goto done;
    }
    SSL_set_tlsext_host_name(ssl, FOO);
    SSL_set1_host(ssl, FOO);
    SSL_set_fd(ssl, fd);
    connected = connect_posh(ssl, nonblocking, 0);
    if (connected && SSL_get_posh_status(ssl) == POSH_STATUS_ACCEPTED)
        outcome = 1;
    else if (!connected && SSL_get_posh_status(ssl) == POSH_STATUS_REJECTED &&
             SSL_get_posh_error(ssl) == POSH_ERR_CANCELLED)
        outcome = 0;
    else
        fail("client freed under handshakes: connected %d, status %d, error %d: %s", connected,
             (int)SSL_get_posh_status(ssl), (int)SSL_get_posh_error(ssl), SSL_get_posh_message(ssl));
done:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return outcome;
}

typedef struct freed_run {
    SSL_CTX *ctx;
    int nonblocking;
    pthread_barrier_t *go;
} freed_run;

/* One accepted handshake, the barrier (the free comes after it), then handshakes until one is cancelled. */
static void *freed_main(void *arg)
{
    freed_run *r = arg;
    int outcome = freed_handshake(r->ctx, r->nonblocking);
    pthread_barrier_wait(r->go);
    for (int i = 0; i < FREED_MAX_HANDSHAKES && outcome != 0; i++)
        outcome = freed_handshake(r->ctx, r->nonblocking);
    if (outcome != 0)
        fail("%s handshakes: none cancelled after posh_client_free", r->nonblocking ? "non-blocking" : "blocking");
    return NULL;
}

static void free_under_handshakes(void)
{
    posh_client *client = posh_client_new(S.cfg);
    pthread_barrier_t go;
    pthread_t t[2];
    freed_run r[2];

    if (client == NULL) {
        fail("posh_client_new for the client to free");
        return;
    }
    if (pthread_barrier_init(&go, NULL, 3) != 0)
        die("pthread_barrier_init");
    for (int i = 0; i < 2; i++) {
        r[i] = (freed_run){client_ctx_of(client, i), i, &go};
        if (pthread_create(&t[i], NULL, freed_main, &r[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&go);
    posh_client_free(client); /* the contexts keep its memory; their handshakes fail closed from now on */
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        SSL_CTX_free(r[i].ctx); /* the last one frees the client */
    }
    pthread_barrier_destroy(&go);
}

/* ---- churn ---- */

static void *clock_main(void *arg)
{
    while (!atomic_load(&S.stop)) {
        atomic_fetch_add(&S.now, 1);
        sleep_ms(5);
    }
    return NULL;
}

static void *flush_main(void *arg)
{
    while (!atomic_load(&S.stop)) {
        posh_client_flush(S.client);
        atomic_fetch_add(&S.fetch_flushes, 1);
        sleep_ms(10);
    }
    return NULL;
}

/* ctx_posh's handshakes read its client while this gives it the other one: both vouch, nothing else changes. */
static void *swap_main(void *arg)
{
    for (long i = 0; !atomic_load(&S.stop); i++) {
        if (SSL_CTX_set_posh_client(S.ctx_posh, i % 2 == 0 ? S.client2 : S.client) != 1)
            fail("SSL_CTX_set_posh_client while handshakes run");
        atomic_fetch_add(&S.client_swaps, 1);
        sleep_ms(10);
    }
    return NULL;
}

/* ---- setup ---- */

static ts_cert *issue(ts_ca *ca, const char *name)
{
    ts_cert_opts o = {0};
    ts_cert *c;
    o.dns[0] = name;
    o.cn = name;
    o.not_before_days = -1;
    o.not_after_days = 30;
    if ((c = ts_cert_issue(ca, &o)) == NULL)
        die(name);
    return c;
}

static char *doc_for(ts_cert *c, long expires)
{
    char *b64 = ts_cert_fingerprint_b64(c, "sha-256"), *s = NULL;
    if (b64 == NULL || asprintf(&s, "{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":%ld}", b64, expires) < 0)
        die("document");
    free(b64);
    return s;
}

static SSL_CTX *client_ctx(const char *ca_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
        die("SSL_CTX");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_posh_client(ctx, S.client) != 1)
        die("SSL_CTX_set_posh_client");
    return ctx;
}

/* A context with POSH for xmpp-server through client (non-blocking or not). */
static SSL_CTX *client_ctx_of(posh_client *client, int nonblocking)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, S.ca_file, NULL) != 1)
        die("SSL_CTX");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_posh_client(ctx, client) != 1 || SSL_CTX_set_posh_verify(ctx, "xmpp-server") != 1 ||
        (nonblocking && SSL_CTX_set_posh_nonblocking(ctx, 1) != 1))
        die("a context for the client to free");
    return ctx;
}

static void start_threads(pthread_t *t, size_t n, void *(*fn)(void *), size_t *count)
{
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&t[*count], NULL, fn, (void *)i) != 0)
            die("pthread_create");
        (*count)++;
    }
}

int main(int argc, char **argv)
{
    int cold = argc > 1 && strcmp(argv[1], "--cold") == 0;
    int rounds = argc > 1 + cold ? atoi(argv[1 + cold]) : 1;
    char *dir, ca_file[512], crt[600], key[600], connect_to[512], *body;
    ts_ca *ca;
    ts_cert *web_foo, *web_hosting, *web_hosted;
    ts_nginx *nginx;
    ts_tls *srv_svc, *srv_other;
    posh_config *cfg;
    pthread_t workers[LOOKUP_THREADS + CTX_HANDSHAKE_THREADS + SSL_HANDSHAKE_THREADS + NB_HANDSHAKE_THREADS +
                      ASYNC_THREADS + 1],
        churn[3];
    size_t nworkers = 0;
    int port;

    if (rounds < 1)
        rounds = 1;
    if ((dir = ts_tmpdir()) == NULL || (ca = ts_ca_new("posh tsan CA")) == NULL)
        die("PKI");
    web_foo = issue(ca, FOO);
    web_hosting = issue(ca, HOSTING);
    web_hosted = issue(ca, "*.example.com");
    S.svc = issue(ca, "xmpp.hosting.example.net");
    S.other = issue(ca, "other.hosting.example.net");
    S.svc_der = ts_cert_der(S.svc, &S.svc_der_len);
    S.other_der = ts_cert_der(S.other, &S.other_der_len);
    snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", dir);
    if (ts_ca_write(ca, ca_file) != 0 || ts_cert_write(web_foo, dir, "foo") != 0 ||
        ts_cert_write(web_hosting, dir, "hosting") != 0 || ts_cert_write(web_hosted, dir, "hosted") != 0)
        die("write PKI");

    /* nginx first: it is forked while this process has no other thread yet. */
    if ((nginx = ts_nginx_new(dir)) == NULL)
        die("nginx");
    snprintf(crt, sizeof(crt), "%s/foo.crt", dir);
    snprintf(key, sizeof(key), "%s/foo.key", dir);
    if (ts_nginx_add_site(nginx, FOO, crt, key) != 0)
        die("nginx site");
    snprintf(crt, sizeof(crt), "%s/hosting.crt", dir);
    snprintf(key, sizeof(key), "%s/hosting.key", dir);
    if (ts_nginx_add_site(nginx, HOSTING, crt, key) != 0)
        die("nginx site");
    /* Hosted domains: one *.example.com certificate, each referring to the target xmpp-client refers to. */
    snprintf(crt, sizeof(crt), "%s/hosted.crt", dir);
    snprintf(key, sizeof(key), "%s/hosted.key", dir);
    for (int i = 0; i < HOSTED_DOMAINS; i++) {
        char name[64];
        snprintf(name, sizeof(name), "d%d.example.com", i);
        if (ts_nginx_add_site(nginx, name, crt, key) != 0 ||
            ts_nginx_put(nginx, name, XMPP_CLIENT_PATH,
                         "{\"url\":\"https://" HOSTING HOSTING_TARGET "\",\"expires\":5}") != 0)
            die("hosted site");
    }
    body = doc_for(S.svc, 3);
    if (ts_nginx_put(nginx, FOO, RFC7711_PATH, body) != 0)
        die("publish");
    free(body);
    if (ts_nginx_put(nginx, FOO, XMPP_CLIENT_PATH,
                     "{\"url\":\"https://" HOSTING HOSTING_TARGET "\",\"expires\":5}") != 0)
        die("publish");
    body = doc_for(S.svc, 2);
    if (ts_nginx_put(nginx, HOSTING, HOSTING_TARGET, body) != 0)
        die("publish");
    free(body);
    if (ts_nginx_put(nginx, FOO, SUBMISSION_PATH, "{\"fingerprints\":[") != 0)
        die("publish");
    if (ts_nginx_start(nginx) != 0)
        die("nginx start");
    port = ts_nginx_port(nginx);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d,%s:443:127.0.0.1:%d,::127.0.0.1:%d", FOO, port,
             HOSTING, port, port);

    if ((srv_svc = ts_tls_start(ts_cert_x509(S.svc), NULL, ts_cert_key(S.svc))) == NULL ||
        (srv_other = ts_tls_start(ts_cert_x509(S.other), NULL, ts_cert_key(S.other))) == NULL)
        die("TLS servers");
    S.port_svc = ts_tls_port(srv_svc);
    S.port_other = ts_tls_port(srv_other);

    atomic_store(&S.now, 1000);
    if ((cfg = posh_config_new()) == NULL || posh_config_set_ca_file(cfg, ca_file) != POSH_OK ||
        posh_config_set_connect_to(cfg, connect_to) != POSH_OK ||
        posh_config_set_clock(cfg, fake_clock, &S.now) != POSH_OK ||
        posh_config_set_negative_ttl(cfg, 1) != POSH_OK ||
        posh_config_set_cache_size(cfg, 2) != POSH_OK || /* fewer entries than keys: evictions all along */
        posh_config_set_async_transfers(cfg, 2) != POSH_OK || /* the engine's lookups wait in line all along */
        posh_config_set_timeout_ms(cfg, 60000) != POSH_OK) /* slow under TSan on a loaded machine, never wrong */
        die("config");
    if ((S.client = posh_client_new(cfg)) == NULL || (S.client2 = posh_client_new(cfg)) == NULL)
        die("client");
    S.cfg = cfg;
    S.ca_file = ca_file;
    S.ctx_posh = client_ctx(ca_file);
    if (SSL_CTX_set_posh_verify(S.ctx_posh, "xmpp-server") != 1)
        die("SSL_CTX_set_posh_verify");
    S.ctx_plain = client_ctx(ca_file);
    S.ctx_nb = client_ctx(ca_file);
    if (SSL_CTX_set_posh_verify(S.ctx_nb, "xmpp-server") != 1 || SSL_CTX_set_posh_nonblocking(S.ctx_nb, 1) != 1)
        die("SSL_CTX_set_posh_nonblocking");
    /* No priming: threads make the first SSL_set_posh_verify() calls on the fresh context at once. */
    (void)cold;

    for (int round = 0; round < rounds; round++) {
        atomic_store(&S.stop, 0);
        nworkers = 0;
        if (pthread_create(&churn[0], NULL, clock_main, NULL) != 0 ||
            pthread_create(&churn[1], NULL, flush_main, NULL) != 0 ||
            pthread_create(&churn[2], NULL, swap_main, NULL) != 0)
            die("pthread_create");
        start_threads(workers, LOOKUP_THREADS, lookup_main, &nworkers);
        start_threads(workers, CTX_HANDSHAKE_THREADS, ctx_handshake_main, &nworkers);
        start_threads(workers, SSL_HANDSHAKE_THREADS, ssl_handshake_main, &nworkers);
        start_threads(workers, NB_HANDSHAKE_THREADS, nb_handshake_main, &nworkers);
        start_threads(workers, ASYNC_THREADS, async_main, &nworkers);
        if (pthread_create(&workers[nworkers++], NULL, cancel_main, (void *)(size_t)round) != 0)
            die("pthread_create");
        for (size_t i = 0; i < nworkers; i++)
            pthread_join(workers[i], NULL);
        atomic_store(&S.stop, 1);
        pthread_join(churn[0], NULL);
        pthread_join(churn[1], NULL);
        pthread_join(churn[2], NULL);
    }

    printf("tsan_stress: %ld lookups, %ld handshakes, %ld flushes, %ld client swaps, clock moved %ld s, "
           "%ld nginx requests; "
           "non-blocking: %ld async lookups, %ld prefetches, %ld handshake waits (%ld abandoned), %ld cancelled; "
           "%ld failures\n",
           atomic_load(&S.lookups), atomic_load(&S.handshakes), atomic_load(&S.fetch_flushes),
           atomic_load(&S.client_swaps), atomic_load(&S.now) - 1000, ts_nginx_requests(nginx, NULL, NULL), atomic_load(&S.async_lookups),
           atomic_load(&S.prefetches), atomic_load(&S.nb_waits), atomic_load(&S.nb_abandoned),
           atomic_load(&S.cancelled), atomic_load(&S.failures));
    SSL_CTX_free(S.ctx_posh);
    SSL_CTX_free(S.ctx_plain);
    SSL_CTX_free(S.ctx_nb);
    posh_client_free(S.client);
    posh_client_free(S.client2);
    posh_config_free(S.cfg);
    ts_tls_stop(srv_svc);
    ts_tls_stop(srv_other);
    ts_nginx_free(nginx);
    ts_cert_free(web_foo);
    ts_cert_free(web_hosting);
    ts_cert_free(web_hosted);
    ts_cert_free(S.svc);
    ts_cert_free(S.other);
    ts_ca_free(ca);
    ts_rmtree(dir);
    free(dir);
    return atomic_load(&S.failures) == 0 ? 0 : 1;
}
