/*
 * test_lifetime.c - a posh_client freed while contexts still use it (security finding 1): handshakes suspended on a
 * cold lookup and retried after posh_client_free(), new handshakes on the context afterwards, blocking and not,
 * with and without delegation, handshakes in other threads during the free, a cancelled lookup whose cache fill a
 * blocking handshake owns, and the memory going with the last of SSL_free/SSL_CTX_free (LSan under ASan). Real
 * servers on 127.0.0.1: nginx publishing FOO's POSH document, a TLS server presenting the provider's certificate,
 * and a relay that accepts and never answers (a web server too slow for any timeout but the free). Also: a
 * context given other clients while its handshakes run (verifications read the context's client without a lock),
 * and the shim's deferred verification, which must keep no reference to the result it accepted by.
 */
#include "fixture.h"
#include "client_internal.h"
#include "handshake.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVICE "xmpp-server"
#define FREED_MSG "the POSH client was freed (posh_client_free)"
#define WAIT_MS 30000 /* a bound that only a hang reaches */

static fx f;
static ts_tls *server;   /* presents f.svc (xmpp.hosting.example.net): FOO's name check fails, POSH decides */
static ts_relay *hang;   /* in front of nginx: accepts, never answers */

static void setup(void)
{
    setenv("POSH_LOG", "off", 1); /* rejections are what these tests make */
    fx_init(&f);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    fx_start(&f);
    server = ts_tls_start(ts_cert_x509(f.svc), ts_cert_chain(f.svc), ts_cert_key(f.svc));
    cr_assert_not_null(server, "TLS server did not start: %s", ts_error());
    cr_assert_not_null(hang = ts_relay_start(ts_nginx_port(f.nginx), 0, 1), "%s", ts_error());
}

static void teardown(void)
{
    ts_relay_stop(hang);
    hang = NULL;
    ts_tls_stop(server);
    server = NULL;
    fx_fini(&f);
}

TestSuite(lifetime, .init = setup, .fini = teardown, .timeout = 120);

/* A client whose every fetch goes to the relay that never answers, with a timeout only the free can beat. */
static posh_client *hanging_client(void)
{
    char ct[128];
    posh_config *cfg = fx_config(&f);
    snprintf(ct, sizeof(ct), "::127.0.0.1:%d", ts_relay_port(hang));
    cr_assert_eq(posh_config_set_connect_to(cfg, ct), POSH_OK, "%s", posh_config_error(cfg));
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 60000), POSH_OK);
    return fx_client_of(cfg);
}

static SSL_CTX *ctx_of(posh_client *client, int nonblocking, int delegation)
{
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, client, SERVICE);
    if (nonblocking)
        cr_assert_eq(SSL_CTX_set_posh_nonblocking(ctx, 1), 1);
    if (delegation)
        cr_assert_eq(SSL_CTX_set_posh_delegation(ctx, 1), 1);
    return ctx;
}

/* A non-blocking connection to the TLS server, for FOO (SNI and host). */
typedef struct nbconn {
    SSL *ssl;
    int fd;
} nbconn;

static nbconn nb_open(SSL_CTX *ctx)
{
    nbconn c = {SSL_new(ctx), hs_tcp_connect(ts_tls_port(server))};
    cr_assert_not_null(c.ssl);
    cr_assert_eq(fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK), 0);
    SSL_set_tlsext_host_name(c.ssl, FOO);
    SSL_set1_host(c.ssl, FOO);
    SSL_set_fd(c.ssl, c.fd);
    return c;
}

static void nb_close(nbconn *c)
{
    SSL_free(c->ssl);
    close(c->fd);
    c->ssl = NULL;
    ERR_clear_error();
}

/* Drive the handshake until it completes, fails, or suspends for POSH: 1, 0 or -1 (WANT_RETRY_VERIFY). */
static int nb_drive(nbconn *c)
{
    int64_t deadline = ts_now_ms() + WAIT_MS;
    for (;;) {
        int rc = SSL_connect(c->ssl), e;
        struct pollfd p = {.fd = c->fd};
        if (rc == 1)
            return 1;
        e = SSL_get_error(c->ssl, rc);
        if (e == SSL_ERROR_WANT_RETRY_VERIFY)
            return -1;
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return 0;
        p.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        cr_assert_lt(ts_now_ms(), deadline, "the handshake did not progress");
        cr_assert_geq(poll(&p, 1, WAIT_MS), 0);
    }
}

/* The handshake suspended, waiting for its lookup: its wait descriptor. */
static int nb_suspend(nbconn *c)
{
    int wfd;
    cr_assert_eq(nb_drive(c), -1, "the handshake suspends for the cold lookup (%s)", SSL_get_posh_message(c->ssl));
    cr_assert_eq(SSL_get_posh_status(c->ssl), POSH_STATUS_PENDING);
    cr_assert_geq(wfd = SSL_get_posh_wait_fd(c->ssl), 0);
    return wfd;
}

static void expect_readable(int fd, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, WAIT_MS), 1, "%s: the wait descriptor became readable", what);
}

/* What a verification on a freed client must say: rejected, cancelled, and why. */
static void expect_cancelled(int connected, long verify_result, posh_status status, posh_err err, const char *msg,
                             const char *what)
{
    cr_expect(!connected, "%s: the handshake fails closed", what);
    cr_expect_eq(verify_result, X509_V_ERR_HOSTNAME_MISMATCH, "%s: %s", what,
                 X509_verify_cert_error_string(verify_result));
    cr_expect_eq(status, POSH_STATUS_REJECTED, "%s: status %d (%s)", what, (int)status, msg);
    cr_expect_eq(err, POSH_ERR_CANCELLED, "%s: %s (%s)", what, posh_strerror(err), msg);
    cr_expect(strstr(msg, FREED_MSG) != NULL, "%s: message \"%s\"", what, msg);
}

static void expect_ssl_cancelled(SSL *ssl, int connected, const char *what)
{
    expect_cancelled(connected, SSL_get_verify_result(ssl), SSL_get_posh_status(ssl), SSL_get_posh_error(ssl),
                     SSL_get_posh_message(ssl), what);
}

static void expect_hs_cancelled(hs h, const char *what)
{
    expect_cancelled(h.connected, h.verify_result, h.status, h.err, h.msg, what);
    cr_expect_eq(h.suspensions, 0, "%s: nothing to wait for", what);
}

/* ---- 1. a suspended handshake retried after the free ---- */

static void retry_after_free(int delegation)
{
    posh_client *client = hanging_client();
    SSL_CTX *ctx = ctx_of(client, 1, delegation);
    nbconn c = nb_open(ctx);
    int wfd = nb_suspend(&c);

    posh_client_free(client);
    expect_readable(wfd, "after posh_client_free");
    /* The documented next step: retry. It must fail closed, never wait again, and never read a freed client. */
    expect_ssl_cancelled(c.ssl, nb_drive(&c), "retried after the free");
    cr_expect_eq(SSL_get_posh_wait_fd(c.ssl), -1);
    /* Again: the verdict stands (the handshake is over). */
    cr_expect_neq(SSL_connect(c.ssl), 1);
    nb_close(&c);
    SSL_CTX_free(ctx);
}

Test(lifetime, suspended_handshake_retried_after_free)
{
    retry_after_free(0);
}

Test(lifetime, suspended_handshake_retried_after_free_delegation)
{
    retry_after_free(1);
}

/* ---- 2. a new handshake on the context after the free ---- */

static void new_handshake_after_free(int delegation)
{
    posh_client *client = fx_client(&f);
    SSL_CTX *ctx = ctx_of(client, 0, delegation), *nbctx = ctx_of(client, 1, delegation);
    int port = ts_tls_port(server);
    long requests;
    hs h;

    /* While the client lives: accepted, and the answer cached. */
    h = hs_handshake(ctx, port, FOO, FOO, NULL);
    cr_assert(h.connected && h.status == POSH_STATUS_ACCEPTED, "before the free: %d %s", (int)h.status, h.msg);
    requests = fx_requests(&f, NULL, NULL);

    posh_client_free(client);
    /* The cached answer would accept: the verification must fail before it looks at the cache. */
    expect_hs_cancelled(hs_handshake(ctx, port, FOO, FOO, NULL), "blocking, after the free");
    expect_hs_cancelled(hs_handshake_nb(nbctx, port, FOO, NULL), "non-blocking, after the free");
    /* A name the certificate carries needs no POSH: unaffected. */
    h = hs_handshake(ctx, port, "xmpp.hosting.example.net", NULL, NULL);
    cr_expect(h.connected && h.status == POSH_STATUS_PKIX, "PKIX after the free: %d %s", (int)h.status, h.msg);
    cr_expect_eq(fx_requests(&f, NULL, NULL), requests, "nothing fetched after the free");
    SSL_CTX_free(ctx);
    SSL_CTX_free(nbctx);
}

Test(lifetime, new_handshake_after_free)
{
    new_handshake_after_free(0);
}

Test(lifetime, new_handshake_after_free_delegation)
{
    new_handshake_after_free(1);
}

/* ---- 3, 4. the memory goes with the last holder, whichever it is (LSan under ASan) ---- */

/* A suspended handshake, the client freed, then SSL_free and SSL_CTX_free in either order without a retry. */
static void free_in_order(int ctx_first)
{
    posh_client *client = hanging_client();
    SSL_CTX *ctx = ctx_of(client, 1, 0);
    nbconn c = nb_open(ctx);
    int wfd = nb_suspend(&c);

    posh_client_free(client);
    expect_readable(wfd, "after posh_client_free");
    if (ctx_first) {
        SSL_CTX_free(ctx); /* the SSL holds the context, which holds the client */
        nb_close(&c);
    } else {
        nb_close(&c);
        SSL_CTX_free(ctx);
    }
}

Test(lifetime, ssl_then_ctx_freed_after_the_client)
{
    free_in_order(0);
}

Test(lifetime, ctx_then_ssl_freed_after_the_client)
{
    free_in_order(1);
}

Test(lifetime, ctx_outlives_the_client)
{
    posh_client *client = fx_client(&f), *other = fx_client(&f);
    SSL_CTX *ctx = ctx_of(client, 1, 1), *ctx2 = ctx_of(client, 0, 0);
    hs h = hs_handshake_nb(ctx, ts_tls_port(server), FOO, NULL);

    cr_assert(h.connected && h.status == POSH_STATUS_ACCEPTED, "%d %s", (int)h.status, h.msg);
    posh_client_free(client); /* its engine ran: stopped here, its memory kept by ctx and ctx2 */
    cr_expect_eq(SSL_CTX_set_posh_client(ctx, client), 0, "a freed client is refused");
    SSL_CTX_free(ctx);
    /* Replaced: the context works with the new one; the freed client's memory goes with ctx2 (SSL_CTX_free). */
    cr_assert_eq(SSL_CTX_set_posh_client(ctx2, other), 1);
    h = hs_handshake(ctx2, ts_tls_port(server), FOO, FOO, NULL);
    cr_expect(h.connected && h.status == POSH_STATUS_ACCEPTED, "%d %s", (int)h.status, h.msg);
    SSL_CTX_free(ctx2);
    posh_client_free(other);
}

/* ---- a free while other threads make handshakes on the client's context ---- */

#define THREADS 4
#define MAX_ROUNDS 200 /* a thread that has not seen the free by then: the free did not close the client */

typedef struct racer {
    SSL_CTX *ctx;
    pthread_barrier_t *go;
    int port;
    int before;      /* 1: the handshake before the barrier was accepted */
    int cancelled;   /* a later handshake was rejected with POSH_ERR_CANCELLED */
    int wrong;       /* a handshake that was neither accepted nor cancelled */
    char msg[600];
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    hs h = hs_handshake(r->ctx, r->port, FOO, FOO, NULL);
    r->before = h.connected && h.status == POSH_STATUS_ACCEPTED;
    pthread_barrier_wait(r->go);
    for (int i = 0; i < MAX_ROUNDS && !r->cancelled; i++) {
        h = hs_handshake(r->ctx, r->port, FOO, FOO, NULL);
        if (!h.connected && h.status == POSH_STATUS_REJECTED && h.err == POSH_ERR_CANCELLED)
            r->cancelled = 1;
        else if (!(h.connected && h.status == POSH_STATUS_ACCEPTED) && !r->wrong) {
            r->wrong = 1;
            snprintf(r->msg, sizeof(r->msg), "%d %s", (int)h.status, h.msg);
        }
    }
    return NULL;
}

Test(lifetime, free_during_handshakes_in_other_threads)
{
    posh_client *client = fx_client(&f);
    SSL_CTX *ctx = ctx_of(client, 0, 1);
    pthread_barrier_t go;
    pthread_t t[THREADS];
    racer r[THREADS];

    cr_assert_eq(pthread_barrier_init(&go, NULL, THREADS + 1), 0);
    for (int i = 0; i < THREADS; i++) {
        r[i] = (racer){.ctx = ctx, .go = &go, .port = ts_tls_port(server)};
        cr_assert_eq(pthread_create(&t[i], NULL, racer_main, &r[i]), 0);
    }
    pthread_barrier_wait(&go);
    posh_client_free(client); /* while the threads make handshakes on ctx */
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        cr_expect(r[i].before, "thread %d: accepted before the free", i);
        cr_expect(r[i].cancelled, "thread %d: rejected with POSH_ERR_CANCELLED after the free", i);
        cr_expect(!r[i].wrong, "thread %d: a handshake neither accepted nor cancelled: %s", i, r[i].msg);
    }
    pthread_barrier_destroy(&go);
    SSL_CTX_free(ctx);
}

/* ---- a cancelled non-blocking wait whose cache fill a blocking handshake owns ---- */

typedef struct owner {
    SSL_CTX *ctx;
    int port;
    hs h;
} owner;

static void *owner_main(void *arg)
{
    owner *o = arg;
    o->h = hs_handshake(o->ctx, o->port, FOO, FOO, NULL);
    return NULL;
}

/* Wait until the relay has accepted n connections (the lookups reached the web server). */
static void wait_accepted(long n)
{
    int64_t deadline = ts_now_ms() + WAIT_MS;
    while (ts_relay_accepted(hang) < n) {
        cr_assert_lt(ts_now_ms(), deadline, "%ld connections reached the relay, want %ld", ts_relay_accepted(hang), n);
        poll(NULL, 0, 5);
    }
}

Test(lifetime, free_while_a_wait_joins_a_blocking_lookup)
{
    posh_client *client = hanging_client();
    SSL_CTX *blocking = ctx_of(client, 0, 0), *ctx = ctx_of(client, 1, 0);
    owner o = {.ctx = blocking, .port = ts_tls_port(server)};
    pthread_t t;
    nbconn c;
    int wfd;

    /* A blocking handshake owns FOO's cache entry: its fetch hangs at the relay. */
    cr_assert_eq(pthread_create(&t, NULL, owner_main, &o), 0);
    wait_accepted(1);
    /* A non-blocking one joins that lookup (its engine job waits for the blocking thread's fill). */
    c = nb_open(ctx);
    wfd = nb_suspend(&c);
    /* The engine starts jobs in order: once this later prefetch fetches, the handshake's job waits. */
    cr_assert_eq(posh_prefetch(client, HOSTING, SERVICE), POSH_OK);
    wait_accepted(2);

    posh_client_free(client);
    expect_readable(wfd, "after posh_client_free");
    expect_ssl_cancelled(c.ssl, nb_drive(&c), "the joined wait, retried");
    nb_close(&c);
    /* The blocking lookup ends (its web server goes) and completes the fill the cancelled job waited for. */
    ts_relay_stop(hang);
    hang = NULL;
    pthread_join(t, NULL);
    cr_expect(!o.h.connected && o.h.status == POSH_STATUS_REJECTED && o.h.err != POSH_OK,
              "the blocking handshake failed with its fetch: %d %s", (int)o.h.status, o.h.msg);
    SSL_CTX_free(ctx);
    SSL_CTX_free(blocking);
}

/* ---- a context given other clients while other threads make handshakes on it ---- */

#define SWAPS 60

typedef struct swap_racer {
    SSL_CTX *ctx;
    int port;
    atomic_int *stop;
    int accepted;    /* handshakes accepted by POSH */
    int wrong;       /* neither accepted nor cancelled (a replaced client freed by its owner meanwhile) */
    char msg[600];
} swap_racer;

static void *swap_racer_main(void *arg)
{
    swap_racer *r = arg;
    while (!atomic_load(r->stop)) {
        hs h = hs_handshake(r->ctx, r->port, FOO, FOO, NULL);
        if (h.connected && h.status == POSH_STATUS_ACCEPTED)
            r->accepted++;
        else if (!(!h.connected && h.status == POSH_STATUS_REJECTED && h.err == POSH_ERR_CANCELLED) && !r->wrong) {
            r->wrong = 1;
            snprintf(r->msg, sizeof(r->msg), "%d %s", (int)h.status, h.msg);
        }
    }
    return NULL;
}

/*
 * Verifications read the context's client without a lock or a reference of their own: a client replaced by
 * SSL_CTX_set_posh_client() must stay in memory until the context goes, even once its owner freed it, since a
 * verification on another thread may have read it just before. Each client here is new (a cold cache: the
 * verification uses it across a whole lookup) and freed by its owner right after it is replaced. Under ASan a
 * replaced client released at once is a heap-use-after-free; here every handshake must be accepted, or rejected
 * as cancelled by a client freed while it verified, and nothing else.
 */
Test(lifetime, clients_replaced_during_handshakes_in_other_threads)
{
    posh_client *client = fx_client(&f), *next;
    SSL_CTX *ctx = ctx_of(client, 0, 0);
    atomic_int stop = 0;
    pthread_t t[THREADS];
    swap_racer r[THREADS];
    int accepted = 0;

    for (int i = 0; i < THREADS; i++) {
        r[i] = (swap_racer){.ctx = ctx, .port = ts_tls_port(server), .stop = &stop};
        cr_assert_eq(pthread_create(&t[i], NULL, swap_racer_main, &r[i]), 0);
    }
    for (int i = 0; i < SWAPS; i++) {
        next = fx_client(&f);
        cr_assert_eq(SSL_CTX_set_posh_client(ctx, next), 1);
        posh_client_free(client); /* the owner's reference; the context's stays until SSL_CTX_free */
        client = next;
        poll(NULL, 0, 2);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        cr_expect(!r[i].wrong, "thread %d: a handshake neither accepted nor cancelled: %s", i, r[i].msg);
        accepted += r[i].accepted;
    }
    cr_expect_gt(accepted, 0, "handshakes were accepted while the clients changed");
    /* The context still works with the last client, and releases every client it was given when freed. */
    hs h = hs_handshake(ctx, ts_tls_port(server), FOO, FOO, NULL);
    cr_expect(h.connected && h.status == POSH_STATUS_ACCEPTED, "%d %s", (int)h.status, h.msg);
    SSL_CTX_free(ctx);
    posh_client_free(client);
}

/* ---- the shim's deferred verification (mbsync, Node: the name question comes after the handshake) ---- */

/*
 * posh_verify_deferred() decides on a connection state of its own; an acceptance keeps its result for the
 * message of that state. Once it returns, the state is gone: the reference must be gone with it, or every
 * deferred acceptance leaks one (the result then outlives its cache entry forever).
 */
Test(lifetime, deferred_verification_keeps_no_result)
{
    posh_result *r = NULL;
    int refs;

    fx_export_env(&f);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(posh_verify_deferred(ts_cert_x509(f.svc), FOO, "_" SERVICE "._tcp"), 1, "vouched");
    cr_assert_eq(posh_lookup(posh_default_client(), FOO, SERVICE, &r), POSH_OK);
    /* The cache's, this thread's memo of it (posh_lookup_peek) and this one, however many verifications ran. */
    refs = __atomic_load_n(&r->refs, __ATOMIC_SEQ_CST);
    cr_expect_leq(refs, 3);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(posh_verify_deferred(ts_cert_x509(f.svc), FOO, "_" SERVICE "._tcp"), 1, "vouched");
    cr_expect_eq(__atomic_load_n(&r->refs, __ATOMIC_SEQ_CST), refs, "five more verifications left none behind");
    posh_result_free(r);
}

/*
 * libposh as a plug-in: dlopen()ed, used on a thread of the program's, dlclose()d while the program's context
 * and that thread live on (tests/dlclose_probe.c). The context's free (libposh's ex_data callback), the thread's
 * end (libposh's destructor of its last answer) and the exit (libposh's handlers) all run after the dlclose();
 * -z nodelete keeps the library's code there for them. The probe's two handshakes must have been accepted by
 * POSH (the second from the thread's memo), and it must exit cleanly rather than die in unmapped code.
 */
Test(lifetime, library_closed_while_its_objects_live)
{
    char port[16], path[] = "/tmp/posh-dlclose-XXXXXX", *out;
    const char *const argv[] = {POSH_DLCLOSE_PROBE, POSH_LIBPOSH, f.ca_file, port, NULL};
    int fd = mkstemp(path), status = -1;
    pid_t pid;

    cr_assert_geq(fd, 0);
    snprintf(port, sizeof(port), "%d", ts_tls_port(server));
    fx_export_env(&f);
    pid = ts_spawn(argv, environ, -1, fd, 1);
    cr_assert_gt(pid, 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    close(fd);
    out = ts_read_file(path, NULL);
    unlink(path);
    cr_assert_not_null(out);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the probe ends cleanly: status %d\n%s", status, out);
    cr_expect_str_eq(out, "accepted by POSH\naccepted by POSH\nclosed, freed, ended\n");
    free(out);
}
