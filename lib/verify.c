/*
 * verify.c - the OpenSSL glue. A certificate verification callback checks the reference identifier first; only
 * when it does not match does POSH run, and on a match the chain is verified by X509_verify_cert() with the
 * host names removed from this verification's parameters. No error is ever cleared by hand, so POSH cannot
 * launder an untrusted chain, an expired leaf or a revoked certificate, and the application's own verify
 * callback runs untouched (see notes/openssl-verification-and-preload.md).
 */
#include "client_internal.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE_BUF (2 * POSH_MAX_SERVICE_LEN + 4)

typedef int (*cert_verify_fn)(X509_STORE_CTX *xctx, void *arg);

typedef struct ctx_state {
    char service[SERVICE_BUF];     /* "" when only SSL_set_posh_verify() installed the callback */
    /*
     * NULL: the default client; else a reference (SSL_CTX_set_posh_client). Read without a lock by every
     * verification: a client it replaces goes to retired, never freed before the context, so a verification
     * that read it on another thread can go on using it (the SSL holds a reference to its SSL_CTX).
     */
    _Atomic(posh_client *) client;
    posh_client **retired;         /* clients replaced by SSL_CTX_set_posh_client(), released with the context */
    size_t nretired;
    int installed;                 /* the certificate verification callback is set on this context */
    int transparent;               /* installed by the shim: never adds a host name, service per connection */
    cert_verify_fn next;           /* the application's own cert verify callback (shim), NULL: X509_verify_cert */
    void *next_arg;
    atomic_int nonblocking;        /* SSL_CTX_set_posh_nonblocking(): a cold lookup suspends the handshake */
    atomic_int delegation;         /* SSL_CTX_set_posh_delegation(): delegation documents are read too */
    /*
     * Names POSH vouched for on this context, by hash (name_hint), one per slot, the last one wins: a
     * verification whose one host is here asks the cache before the name check (warm_reference), any other
     * checks the name first, so a name that matches pays no cache lookup. Only the order depends on it.
     */
    _Atomic uint32_t hints[64];
} ctx_state;

/*
 * The outcomes of every warm handshake (a name that matched, a certificate POSH vouched for) keep the parts of
 * their message and format it when the application first asks (message_of): formatting and escaping it on every
 * accepted handshake cost more than the decision itself, for a text most applications never read.
 */
typedef enum msg_kind {
    MSG_FORMATTED = 0,             /* message holds the text */
    MSG_CARRIES_NAME,              /* "%s: the certificate carries the name" (lazy_name: the host) */
    MSG_VOUCHED                    /* the descriptor lazy_index of lazy_res's last URL vouched for the certificate */
} msg_kind;

typedef struct ssl_state {
    char service[SERVICE_BUF];     /* set by SSL_set_posh_verify(), "" otherwise */
    char reference[POSH_MAX_DOMAIN_LEN + 2];  /* SSL_set_posh_reference(): for the next verification only */
    posh_status status;
    posh_err err;
    /*
     * POSH_MSG_LEN bytes once a message was formatted, NULL before (the message ""): valid when lazy is
     * MSG_FORMATTED, read through message_of(). Not in the state itself, which stays small enough for the
     * allocator's per-thread cache on every accepted handshake (no message is formatted on the warm path).
     */
    char *message;
    msg_kind lazy;
    char lazy_name[POSH_MAX_DOMAIN_LEN + 2];  /* the host (MSG_CARRIES_NAME) or the reference (MSG_VOUCHED) */
    int lazy_index;
    posh_result *lazy_res;         /* MSG_VOUCHED: a reference to the result, for its URL and service */
    posh_wait *wait;               /* non-blocking: the lookup this connection's verification waits for */
    posh_result *held[2];          /* non-blocking: answers obtained for this verification, by posh_lookup_kind */
    char vouched[POSH_MAX_DOMAIN_LEN + 2];  /* the source domain POSH vouched for (or delegated), "" if none */
} ssl_state;

/* Within glibc's per-thread cache (requests up to 1032 bytes): a malloc and a free of a few dozen instructions. */
_Static_assert(sizeof(ssl_state) <= 1024, "ssl_state grew past the allocator's per-thread cache");

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int ctx_index = -1;
static int ssl_index = -1;

/* Set while this thread runs a POSH lookup: its own HTTPS fetches must never be subjected to POSH. */
static _Thread_local int in_lookup;
static posh_shim_hooks shim_hooks;

/*
 * SSL_CTX_free: the context's references to its clients go with it (a client's memory, if it was the last). No
 * verification runs on the context any more: each SSL holds a reference to its SSL_CTX.
 */
static void ctx_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    ctx_state *st = ptr;
    if (st == NULL)
        return;
    posh_client_unref(atomic_load(&st->client));
    for (size_t i = 0; i < st->nretired; i++)
        posh_client_unref(st->retired[i]);
    free(st->retired);
    free(st);
}

/* The answers a suspended verification obtained: kept until the verification ends, then dropped. */
static void drop_held(ssl_state *st)
{
    for (size_t k = 0; k < sizeof(st->held) / sizeof(st->held[0]); k++) {
        posh_result_free(st->held[k]);
        st->held[k] = NULL;
    }
}

/* What a state holds besides itself: its wait, its answers, its message's result and text. */
static void ssl_state_release(ssl_state *st)
{
    if (st->wait != NULL)
        posh_wait_release(st->wait); /* the lookup itself goes on, into the cache */
    st->wait = NULL;
    drop_held(st);
    posh_result_free(st->lazy_res);
    st->lazy_res = NULL;
    free(st->message);
    st->message = NULL;
}

static void ssl_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    ssl_state *st = ptr;
    if (st != NULL)
        ssl_state_release(st);
    free(st);
}

/* SSL_dup() copies ex_data pointers: give the copy its own state. */
static int ssl_state_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx, long argl,
                         void *argp)
{
    ssl_state *copy;
    if (*from_d == NULL)
        return 1;
    if ((copy = malloc(sizeof(*copy))) == NULL)
        return 0;
    memcpy(copy, *from_d, sizeof(*copy));
    copy->wait = NULL; /* the original's wait and answers are the original's */
    copy->held[0] = copy->held[1] = NULL;
    if (copy->message != NULL) {
        const char *text = copy->message;
        if ((copy->message = malloc(POSH_MSG_LEN)) == NULL) {
            free(copy);
            return 0;
        }
        memcpy(copy->message, text, POSH_MSG_LEN);
    }
    if (copy->lazy_res != NULL)
        posh_result_ref(copy->lazy_res); /* the copy's message still has to be formatted from it */
    if (copy->status == POSH_STATUS_PENDING)
        copy->status = POSH_STATUS_NONE;
    *from_d = copy;
    return 1;
}

/*
 * Creating a context's state and installing the callback happen once per context, possibly from several
 * threads making their first connections at once (SSL_set_posh_verify): one lock serialises them. It is a leaf
 * lock (nothing else is locked while it is held), and fork() never finds it held by a thread the child lacks.
 */
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;

static void setup_lock_acquire(void)
{
    pthread_mutex_lock(&setup_lock);
}

static void setup_lock_release(void)
{
    pthread_mutex_unlock(&setup_lock);
}

static void index_init(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_state_free);
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, ssl_state_dup, ssl_state_free);
    pthread_atfork(setup_lock_acquire, setup_lock_release, setup_lock_release);
}

static int indexes_ready(void)
{
    pthread_once(&index_once, index_init);
    return ctx_index >= 0 && ssl_index >= 0;
}

static ctx_state *ctx_state_get(SSL_CTX *ctx, int create)
{
    ctx_state *st = SSL_CTX_get_ex_data(ctx, ctx_index);
    if (st != NULL || !create)
        return st;
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return NULL;
    if (!SSL_CTX_set_ex_data(ctx, ctx_index, st)) {
        free(st);
        return NULL;
    }
    return st;
}

static ssl_state *ssl_state_get(const SSL *ssl, int create)
{
    ssl_state *st = SSL_get_ex_data(ssl, ssl_index);
    if (st != NULL || !create)
        return st;
    /* Every field, but not the unused tails of the names (what calloc would clear on every handshake). */
    if ((st = malloc(sizeof(*st))) == NULL)
        return NULL;
    st->service[0] = st->reference[0] = st->lazy_name[0] = st->vouched[0] = '\0';
    st->status = POSH_STATUS_NONE;
    st->err = POSH_OK;
    st->message = NULL;
    st->lazy = MSG_FORMATTED;
    st->lazy_index = 0;
    st->lazy_res = NULL;
    st->wait = NULL;
    st->held[0] = st->held[1] = NULL;
    if (!SSL_set_ex_data((SSL *)ssl, ssl_index, st)) {
        free(st);
        return NULL;
    }
    return st;
}

/* The chain verification POSH wraps: the application's own cert verify callback (shim) or OpenSSL's. */
static int next_verify(const ctx_state *cst, X509_STORE_CTX *xctx)
{
    if (cst != NULL && cst->next != NULL)
        return cst->next(xctx, cst->next_arg);
    return X509_verify_cert(xctx);
}

/* Validate a service and store its canonical SRV form. */
static int service_store(const char *service, char out[SERVICE_BUF])
{
    char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    if (service == NULL || posh_service_parse(service, svc, proto) != POSH_OK) {
        posh_log(POSH_LOG_ERROR, "invalid service name \"%.100s\"", service ? service : "(null)");
        return 0;
    }
    snprintf(out, SERVICE_BUF, "_%s._%s", svc, proto);
    return 1;
}

/* Forget a message not yet formatted, and the result it would have been formatted from. */
static void lazy_drop(ssl_state *st)
{
    st->lazy = MSG_FORMATTED;
    posh_result_free(st->lazy_res);
    st->lazy_res = NULL;
}

static void message_vformat(ssl_state *st, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void message_vformat(ssl_state *st, const char *fmt, va_list ap)
{
    char raw[POSH_MSG_LEN];
    if (st->message == NULL && (st->message = malloc(POSH_MSG_LEN)) == NULL)
        return; /* out of memory: the status and error code stand, the text stays "" */
    if (vsnprintf(raw, sizeof(raw), fmt, ap) < 0)
        raw[0] = '\0';
    /*
     * What a server sent arrives here inside a result's message, escaped already: keep its backslashes (no
     * second escape), and still let nothing outside printable ASCII into SSL_get_posh_message().
     */
    posh_escape(st->message, POSH_MSG_LEN, raw, POSH_ESCAPE_MESSAGE);
}

static void message_format(ssl_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void message_format(ssl_state *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    message_vformat(st, fmt, ap);
    va_end(ap);
}

static void record(ssl_state *st, posh_status status, posh_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void record(ssl_state *st, posh_status status, posh_err err, const char *fmt, ...)
{
    va_list ap;
    lazy_drop(st);
    st->status = status;
    st->err = err;
    va_start(ap, fmt);
    message_vformat(st, fmt, ap);
    va_end(ap);
}

/* The URL of a result's last request (where its document came from), or "". */
static const char *last_url(const posh_result *res)
{
    const char *url = "";
    if (posh_result_request_count(res) > 0)
        posh_result_request(res, posh_result_request_count(res) - 1, &url, NULL);
    return url;
}

/*
 * The message, formatted now if it was kept as parts: the same format and escaping as record(), so the text is
 * byte for byte what an eager record() would have written. Writes into st; an SSL is used by one thread at a
 * time, as OpenSSL requires.
 */
static const char *message_of(ssl_state *st)
{
    switch (st->lazy) {
    case MSG_FORMATTED:
        break;
    case MSG_CARRIES_NAME:
        message_format(st, "%s: the certificate carries the name", st->lazy_name);
        break;
    case MSG_VOUCHED:
        message_format(st, "%s %s: certificate vouched for by descriptor %d of %s", st->lazy_name,
                       posh_result_service(st->lazy_res), st->lazy_index, last_url(st->lazy_res));
        break;
    }
    lazy_drop(st);
    return st->message != NULL ? st->message : "";
}

/* No verdict yet: status, error, message and vouched name as before any verification. */
static void verdict_clear(ssl_state *st)
{
    st->status = POSH_STATUS_NONE;
    st->err = POSH_OK;
    lazy_drop(st);
    if (st->message != NULL)
        st->message[0] = '\0';
    st->vouched[0] = '\0';
}

/* record(st, POSH_STATUS_PKIX, POSH_OK, "%s: the certificate carries the name", host), formatted when asked. */
static void record_carries_name(ssl_state *st, const char *host)
{
    size_t len = strlen(host);
    if (len >= sizeof(st->lazy_name)) {
        /* A host name longer than any DNS name (the application's): formatted now, as before. */
        record(st, POSH_STATUS_PKIX, POSH_OK, "%s: the certificate carries the name", host);
        return;
    }
    lazy_drop(st);
    st->status = POSH_STATUS_PKIX;
    st->err = POSH_OK;
    memcpy(st->lazy_name, host, len + 1);
    st->lazy = MSG_CARRIES_NAME;
}

/*
 * record(st, POSH_STATUS_ACCEPTED, ...) for descriptor index of res, formatted when asked, with the service as
 * res names it: the same text whenever it is the service asked for (its canonical form, as contexts keep it).
 */
static void record_vouched(ssl_state *st, const char *reference, const char *service, int index,
                           posh_result *res)
{
    size_t rlen = strlen(reference);
    if (rlen >= sizeof(st->lazy_name) || strcmp(service, posh_result_service(res)) != 0) {
        record(st, POSH_STATUS_ACCEPTED, POSH_OK, "%s %s: certificate vouched for by descriptor %d of %s",
               reference, service, index, last_url(res));
        return;
    }
    lazy_drop(st);
    st->status = POSH_STATUS_ACCEPTED;
    st->err = POSH_OK;
    memcpy(st->lazy_name, reference, rlen + 1);
    st->lazy_index = index;
    st->lazy_res = posh_result_ref(res);
    st->lazy = MSG_VOUCHED;
}

/* Could this configured host name be a POSH source domain? Not ".domain" forms, wildcards or IP literals. */
static int eligible_reference(const char *host, char out[POSH_MAX_DOMAIN_LEN + 2])
{
    if (host[0] == '.' || strchr(host, '*') != NULL)
        return 0;
    return posh_domain_normalize(host, out, POSH_MAX_DOMAIN_LEN + 2) == POSH_OK;
}

/* Tell the shim that POSH vouched for this connection's certificate object under reference, and for how long. */
static void notify_vouched(posh_client *client, const posh_result *res, X509 *leaf, const char *reference)
{
    long ttl;

    if (shim_hooks.vouched == NULL)
        return; /* the library alone: no clock read on every accepted handshake */
    if ((ttl = (long)(posh_result_expires_at(res) - posh_config_now(client->cfg))) > 0)
        shim_hooks.vouched(leaf, reference, ttl);
}

/*
 * Non-blocking: the answer of kind (POSH or delegation) for (reference, service) if there is one now (1: *res,
 * *err as posh_lookup gives them), else 0: a lookup runs and st->wait waits for it. The answer is one this
 * verification already holds (a suspended verification runs again from the start, and must find the answers of
 * its earlier stages even if they were never cached, e.g. with a negative TTL of 0), the one the wait brought for
 * this very kind and (reference, service), or the cache's when fresh; a wait or an answer for anything else (an
 * SSL reused for another peer) is dropped. Past the engine's bounds the answer is POSH_ERR_BUSY: fail closed.
 */
static int obtain_nonblocking(ssl_state *st, posh_client *client, posh_lookup_kind kind, const char *reference,
                              const char *service, posh_result **res, posh_err *err)
{
    char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    posh_result **held = &st->held[kind];

    *res = NULL;
    if (*held != NULL) {
        if (strcmp(posh_result_domain(*held), reference) == 0 && strcmp(posh_result_service(*held), service) == 0) {
            *res = posh_result_ref(*held);
            *err = posh_lookup_outcome(res);
            return 1;
        }
        posh_result_free(*held);
        *held = NULL;
    }
    if (st->wait != NULL) {
        if (posh_wait_kind(st->wait) == kind && strcmp(posh_wait_domain(st->wait), reference) == 0 &&
            strcmp(posh_wait_service(st->wait), service) == 0) {
            if (!posh_wait_take(st->wait, res, err))
                return 0;
            posh_wait_release(st->wait);
            st->wait = NULL;
            if (*res != NULL)
                *held = posh_result_ref(*res);
            return 1;
        }
        posh_wait_release(st->wait);
        st->wait = NULL;
    }
    if ((*res = posh_lookup_peek(client, kind, reference, service)) != NULL) {
        *held = posh_result_ref(*res);
        *err = posh_lookup_outcome(res);
        return 1;
    }
    if ((*err = posh_service_parse(service, svc, proto)) == POSH_OK &&
        (*err = posh_wait_start(client, kind, reference, svc, proto, &st->wait)) == POSH_OK)
        return 0;
    return 1;
}

/*
 * The answer of kind for (reference, service): blocking (posh_lookup, posh_lookup_delegation) or not. 1 with
 * *res and *err, or 0: pending (non-blocking; st->wait). The lookup's own TLS work must leave the handshake's
 * error queue as it was, and must not meet POSH.
 */
static int obtain(ssl_state *st, posh_client *client, int nonblocking, posh_lookup_kind kind, const char *reference,
                  const char *service, posh_result **res, posh_err *err)
{
    int answered = 1;
    /* Warm (every handshake but the first): the cache's answer, which touches neither the error queue nor curl. */
    if (!nonblocking && (*res = posh_lookup_peek(client, kind, reference, service)) != NULL) {
        *err = posh_lookup_outcome(res);
        return 1;
    }
    ERR_set_mark();
    in_lookup++;
    if (nonblocking)
        answered = obtain_nonblocking(st, client, kind, reference, service, res, err);
    else if (kind == POSH_KIND_DELEGATION)
        *err = posh_lookup_delegation(client, reference, service, res);
    else
        *err = posh_lookup(client, reference, service, res);
    in_lookup--;
    ERR_pop_to_mark();
    return answered;
}

/*
 * What one verification learns about its leaf, once: its DER, encoded on first need (on the stack up to 4 KiB, a
 * usual leaf, else allocated), and the descriptor the warm answer remembers it matched.
 */
typedef struct leaf_der {
    unsigned char stack[4096];
    unsigned char *der;            /* NULL until encoded */
    int len;                       /* <= 0 after a failed encoding */
    int remembered;                /* the warm answer's remembered certificate is this leaf: its index; else -1 */
} leaf_der;

/* 1 encoded (d->der, d->len), 0 not: d->len <= 0 it cannot be encoded, else out of memory. */
static int leaf_der_get(leaf_der *d, X509 *leaf)
{
    unsigned char *p;
    if (d->der != NULL)
        return 1;
    if ((d->len = i2d_X509(leaf, NULL)) <= 0)
        return 0;
    if ((d->der = (size_t)d->len <= sizeof(d->stack) ? d->stack : malloc((size_t)d->len)) == NULL)
        return 0;
    p = d->der;
    i2d_X509(leaf, &p);
    return 1;
}

static void leaf_der_free(leaf_der *d)
{
    if (d->der != d->stack)
        free(d->der);
    d->der = NULL;
}

/*
 * Run POSH for reference against leaf (enc: its DER, encoded here if it was not yet): 1 vouched, 0 not (st says
 * why), 2 pending (non-blocking: st->wait). warm: the answer already taken from the cache, consumed, for a leaf
 * in its handshake's verification (compared with the certificate the answer remembers without being encoded:
 * posh_result_match_cert). note_flags:
 * 1 + the flags with which X509_check_host(leaf, reference) did not match in this verification, noted on the
 * answer when it vouches (posh_result_note_name_fails); 0: nothing to note.
 */
static int posh_vouches(ssl_state *st, posh_client *client, int nonblocking, const char *reference,
                        const char *service, X509 *leaf, posh_result *warm, leaf_der *enc, unsigned long note_flags)
{
    posh_result *res = warm;
    int match = 0, index = -1;
    posh_err err = POSH_OK;

    if (warm != NULL) {
        err = posh_lookup_outcome(&res);
    } else if (!obtain(st, client, nonblocking, POSH_KIND_POSH, reference, service, &res, &err)) {
        record(st, POSH_STATUS_PENDING, POSH_OK, "%s %s: waiting for the POSH lookup", reference, service);
        return 2;
    }
    if (err != POSH_OK) {
        record(st, POSH_STATUS_REJECTED, err, "%s %s: %s: %s", reference, service, posh_strerror(err),
               posh_result_message(res));
        goto done;
    }
    /* Warm: the leaf is the certificate this answer remembers, known without encoding it. */
    if (warm != NULL && ((index = enc->remembered) >= 0 || posh_result_match_cert(res, leaf, &index))) {
        match = 1;
        record_vouched(st, reference, service, index, res);
        goto vouched;
    }
    if (!leaf_der_get(enc, leaf)) {
        if (enc->len <= 0)
            record(st, POSH_STATUS_REJECTED, POSH_ERR_CERTIFICATE, "%s: the peer certificate cannot be encoded",
                   reference);
        else
            record(st, POSH_STATUS_REJECTED, POSH_ERR_NOMEM, "%s: out of memory", reference);
        goto done;
    }
    err = posh_match_der(client, res, enc->der, (size_t)enc->len, &match, &index);
    if (err != POSH_OK)
        record(st, POSH_STATUS_REJECTED, err, "%s: %s", reference, posh_strerror(err));
    else if (!match)
        record(st, POSH_STATUS_REJECTED, POSH_ERR_NO_MATCH,
               "%s %s: the certificate matches none of the %zu fingerprint descriptors of %s", reference, service,
               posh_result_descriptor_count(res), last_url(res));
    else
        record_vouched(st, reference, service, index, res);
    if (!match)
        goto done;
vouched:
    if (note_flags != 0)
        posh_result_note_name_fails(res, reference, leaf, (unsigned)(note_flags - 1));
    notify_vouched(client, res, leaf, reference);
done:
    posh_result_free(res);
    return match;
}

/*
 * Secure Service Delegation, once POSH did not vouch (st holds its rejection): does the source domain delegate
 * the service to a name the certificate carries? 1 yes (name filled, st says so), 0 no (st says why, keeping
 * POSH's error code and message first), 2 pending (non-blocking).
 */
static int posh_delegates(ssl_state *st, posh_client *client, int nonblocking, const char *reference,
                          const char *service, X509 *leaf, unsigned int flags, char name[POSH_MAX_DOMAIN_LEN + 2])
{
    char posh_said[POSH_MSG_LEN];
    posh_err posh_err_code = st->err, err = POSH_OK;
    posh_result *res = NULL;
    const char *domain;
    size_t n;

    memcpy(posh_said, message_of(st), sizeof(posh_said));
    if (!obtain(st, client, nonblocking, POSH_KIND_DELEGATION, reference, service, &res, &err)) {
        record(st, POSH_STATUS_PENDING, POSH_OK, "%s %s: waiting for the delegation lookup", reference, service);
        return 2;
    }
    if (err != POSH_OK) {
        record(st, POSH_STATUS_REJECTED, posh_err_code, "%s; delegation: %s: %s", posh_said, posh_strerror(err),
               posh_result_message(res));
        posh_result_free(res);
        return 0;
    }
    n = posh_result_delegation_count(res);
    for (size_t i = 0; i < n; i++) {
        if (posh_result_delegation(res, i, NULL, NULL, &domain) && X509_check_host(leaf, domain, 0, flags, NULL) > 0) {
            snprintf(name, POSH_MAX_DOMAIN_LEN + 2, "%s", domain);
            record(st, POSH_STATUS_DELEGATED, POSH_OK, "%s %s: delegated to %s by %s", reference, service, domain,
                   last_url(res));
            notify_vouched(client, res, leaf, reference);
            posh_result_free(res);
            return 1;
        }
    }
    record(st, POSH_STATUS_REJECTED, posh_err_code,
           "%s; delegation: the certificate carries none of the %zu names delegated by %s", posh_said, n,
           last_url(res));
    posh_result_free(res);
    return 0;
}

/*
 * The client of the context (NULL: it uses the default client). No lock and no reference per verification: the
 * context keeps every client it was given until it is freed (ctx_state), and it outlives the verification.
 */
static posh_client *ctx_client(ctx_state *cst)
{
    return cst != NULL ? atomic_load_explicit(&cst->client, memory_order_acquire) : NULL;
}

/*
 * The client a verification on cst's context uses, or NULL with st's rejection recorded: no default client
 * (POSH_ERR_CONFIG), or the client was freed (POSH_ERR_CANCELLED: fail closed before anything of it is used, its
 * caches, clock or engine; a wait from before the free was cancelled, its answer is not needed).
 */
static posh_client *verification_client(ssl_state *st, ctx_state *cst, const char *reference, const char *service)
{
    posh_client *client = ctx_client(cst);
    if (client == NULL) {
        /* Making the default client may touch OpenSSL: the handshake's error queue stays as it was. */
        ERR_set_mark();
        client = posh_default_client();
        ERR_pop_to_mark();
    }
    if (client == NULL) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_CONFIG, "%s", posh_default_client_error());
        return NULL;
    }
    if (posh_client_closed(client)) {
        posh_wait_release(st->wait);
        st->wait = NULL;
        record(st, POSH_STATUS_REJECTED, POSH_ERR_CANCELLED, "%s %s: the POSH client was freed (posh_client_free)",
               reference, service);
        return NULL;
    }
    return client;
}

/* The hint of a name (FNV-1a, never 0: an empty slot matches nothing). */
static uint32_t name_hint(const char *name)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i <= POSH_MAX_DOMAIN_LEN && name[i] != '\0'; i++)
        h = (h ^ (unsigned char)name[i]) * 16777619u;
    return h | 1;
}

static _Atomic uint32_t *hint_slot(ctx_state *cst, uint32_t h)
{
    return &cst->hints[h % (sizeof(cst->hints) / sizeof(cst->hints[0]))];
}

/*
 * Warm: host, the first host name, as the reference identifier without normalising it, when the cache holds an
 * answer for it (returned in *warm, a new reference). Only names that were normalised (valid, lower case, no
 * final dot) are ever cached keys, and normalising is idempotent, so a hit means eligible_reference(host) would
 * have chosen host itself; anything else misses and takes the full path. For a non-blocking verification only
 * when it holds no answer or wait from an earlier run (obtain_nonblocking's order), and its answer is then held
 * for a later run, as obtain_nonblocking holds it.
 */
static int warm_reference(ssl_state *st, ctx_state *cst, int nonblocking, const char *host, const char *service,
                          posh_result **warm, posh_client **from)
{
    posh_client *client = *from = ctx_client(cst);

    *warm = NULL;
    if (client == NULL)
        client = *from = posh_default_client_if_made();
    if (client == NULL || posh_client_closed(client) ||
        (nonblocking && (st->wait != NULL || st->held[POSH_KIND_POSH] != NULL)) ||
        (*warm = posh_lookup_peek(client, POSH_KIND_POSH, host, service)) == NULL)
        return 0;
    if (nonblocking)
        st->held[POSH_KIND_POSH] = posh_result_ref(*warm);
    return 1;
}

/*
 * The decision for one client connection. transparent (the shim): the application's own host names are the only
 * ones ever checked; POSH adds none, so a program that checks names itself keeps doing so.
 */
static int verify_with_posh(X509_STORE_CTX *xctx, SSL *ssl, ctx_state *cst, ssl_state *st, const char *service,
                            const char *given_reference, int transparent)
{
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(xctx);
    X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
    posh_client *client = NULL;
    char reference[POSH_MAX_DOMAIN_LEN + 2] = "";
    STACK_OF(X509) *anchors = NULL;
    unsigned int flags = X509_VERIFY_PARAM_get_hostflags(param);
    const char *host;
    char delegated[POSH_MAX_DOMAIN_LEN + 2];
    posh_result *warm = NULL;
    posh_client *warm_from = NULL;
    leaf_der enc;
    const char *host0 = X509_VERIFY_PARAM_get0_host(param, 0);
    int single_host = host0 != NULL && X509_VERIFY_PARAM_get0_host(param, 1) == NULL;
    uint32_t hint = 0;
    int name_known_to_fail = 0;
    unsigned long note_flags = 0;
    int vouched, delegation, decided = 0;
    int have_hosts = host0 != NULL;
    int add_reference = !have_hosts && !transparent;
    /* Server side: OpenSSL 3.0 cannot suspend a client certificate's verification (see verify_server_side). */
    int nonblocking = cst != NULL && cst->nonblocking && !transparent && !SSL_is_server(ssl);
    int ret;

    verdict_clear(st);
    if (leaf == NULL)
        return next_verify(cst, xctx);
    enc.der = NULL;
    enc.remembered = -1;

    /*
     * Warm, for the one host the application named: the cache's answer for it as the reference (warm_reference),
     * and the name check's own answer when these very certificate bytes failed it before for this name and these
     * flags and the answer vouched for them (posh_result_name_fails): X509_check_host() is a function of the
     * bytes, the name and the flags, so running it again could only say no again.
     */
    if (given_reference[0] == '\0' && single_host && cst != NULL) {
        hint = name_hint(host0);
        if (atomic_load_explicit(hint_slot(cst, hint), memory_order_relaxed) == hint &&
            warm_reference(st, cst, nonblocking, host0, service, &warm, &warm_from))
            name_known_to_fail = posh_result_name_fails(warm, host0, leaf, flags, &enc.remembered);
    }
    /* The name check of the configured hosts, as OpenSSL's check_id would do it. */
    for (int i = 0; !name_known_to_fail && (host = X509_VERIFY_PARAM_get0_host(param, i)) != NULL; i++) {
        if (X509_check_host(leaf, host, 0, flags, NULL) > 0) {
            record_carries_name(st, host);
            posh_result_free(warm);
            leaf_der_free(&enc);
            return next_verify(cst, xctx);
        }
    }
    /* Reference identifier: SSL_set_posh_reference(), the first eligible host, the SNI name. */
    if (given_reference[0] != '\0') {
        memcpy(reference, given_reference, strlen(given_reference) + 1);
    } else if (warm != NULL) {
        memcpy(reference, host0, strlen(host0) + 1); /* a cached key's name: at most POSH_MAX_DOMAIN_LEN */
    } else {
        for (int i = 0; (host = X509_VERIFY_PARAM_get0_host(param, i)) != NULL; i++)
            if (eligible_reference(host, reference))
                break;
        if (reference[0] == '\0' && (host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) != NULL)
            eligible_reference(host, reference);
    }
    if (reference[0] == '\0') {
        if (have_hosts)
            record(st, POSH_STATUS_REJECTED, POSH_ERR_NO_REFERENCE_ID,
                   "no host name usable as a POSH source domain");
        return next_verify(cst, xctx);
    }
    if (!have_hosts) {
        /* The application set no host: the reference identifier is the name to check. */
        if (X509_check_host(leaf, reference, 0, flags, NULL) > 0) {
            record_carries_name(st, reference);
            if (add_reference && !X509_VERIFY_PARAM_set1_host(param, reference, 0))
                goto nomem;
            return next_verify(cst, xctx);
        }
    }
    /* Created on first need only: a process whose names all match never starts libcurl. */
    if ((client = verification_client(st, cst, reference, service)) != warm_from && warm != NULL) {
        /* The context was given another client meanwhile (another thread): ask that one. */
        posh_result_free(warm);
        warm = NULL;
    }
    if (client == NULL)
        goto rejected;
    delegation = (cst != NULL && cst->delegation) || client->cfg->delegation;
    /* The one host failed the name check just now and is the reference: worth noting if POSH vouches. */
    if (single_host && !name_known_to_fail && strcmp(host0, reference) == 0)
        note_flags = (unsigned long)flags + 1;
    vouched = posh_vouches(st, client, nonblocking, reference, service, leaf, warm, &enc, note_flags);
    if (vouched == 1 && note_flags != 0 && cst != NULL) {
        /* Next time on this context, this name asks the cache first. */
        if (hint == 0)
            hint = name_hint(host0);
        if (atomic_load_explicit(hint_slot(cst, hint), memory_order_relaxed) != hint)
            atomic_store_explicit(hint_slot(cst, hint), hint, memory_order_relaxed);
    }
    if (vouched == 0 && delegation)
        decided = posh_delegates(st, client, nonblocking, reference, service, leaf, flags, delegated);
    if (vouched == 1 || decided == 1)
        memcpy(st->vouched, reference, strlen(reference) + 1);
    if (vouched == 2 || decided == 2) {
        /* Suspend the handshake: SSL_connect() returns WANT_RETRY_VERIFY and this verification runs again. */
        if (SSL_set_retry_verify(ssl)) {
            ret = 1;
            goto done;
        }
        posh_wait_release(st->wait);
        st->wait = NULL;
        record(st, POSH_STATUS_REJECTED, POSH_ERR_INTERNAL, "%s: OpenSSL refused to suspend the handshake",
               reference);
    } else if (decided == 1) {
        /* Delegated: OpenSSL verifies the chain and the delegated name, as it would any name (no PIN mode here). */
        if (!X509_VERIFY_PARAM_set1_host(param, delegated, 0))
            goto nomem;
        ret = next_verify(cst, xctx);
        if ((ret <= 0 || X509_STORE_CTX_get_error(xctx) != X509_V_OK) && shim_hooks.withdrawn != NULL)
            shim_hooks.withdrawn(leaf);
        goto done;
    } else if (vouched) {
        /* Vouched: verify everything else exactly as before, without the host names. */
        if (!X509_VERIFY_PARAM_set1_host(param, NULL, 0))
            goto nomem;
        if (client->cfg->mode == POSH_MODE_PIN) {
            if ((anchors = sk_X509_new_null()) == NULL || !sk_X509_push(anchors, leaf))
                goto nomem;
            X509_STORE_CTX_set0_trusted_stack(xctx, anchors);
            X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
        }
        ret = next_verify(cst, xctx);
        sk_X509_free(anchors);
        /* The approval stands only for a connection whose verification passed as a whole. */
        if ((ret <= 0 || X509_STORE_CTX_get_error(xctx) != X509_V_OK) && shim_hooks.withdrawn != NULL)
            shim_hooks.withdrawn(leaf);
        goto done;
    }
rejected:
    posh_log(POSH_LOG_WARNING, "rejected: %s", message_of(st));
    /* Not vouched: let OpenSSL report the name mismatch through the application's callback. */
    if (add_reference && !X509_VERIFY_PARAM_set1_host(param, reference, 0))
        goto nomem;
    ret = next_verify(cst, xctx);
    goto done;
nomem:
    sk_X509_free(anchors);
    if (shim_hooks.withdrawn != NULL)
        shim_hooks.withdrawn(leaf);
    X509_STORE_CTX_set_error(xctx, X509_V_ERR_OUT_OF_MEM);
    ret = 0;
done:
    leaf_der_free(&enc);
    return ret;
}

/*
 * Does POSH apply to a connection of a shim-installed context? Only where the program asked for a name check
 * that can fail: it set host names (checked by OpenSSL even under SSL_VERIFY_NONE, e.g. Postfix), or it
 * verifies the peer (SSL_VERIFY_PEER) and will check a name itself (curl, stunnel, Prosody): the SNI name it
 * sent or, for XMPP without either, the `to` of its stream header (stream_to, filled here when that applies).
 * 2: the program turned verification off and named no host, but sent SNI (mbsync, Node): it may check the name
 * itself after the handshake (or never: curl -k), so POSH is deferred to its first name question (deferred()).
 */
static int transparent_applies(SSL *ssl, X509_STORE_CTX *xctx, char stream_to[POSH_MAX_DOMAIN_LEN + 2])
{
    if (X509_VERIFY_PARAM_get0_host(X509_STORE_CTX_get0_param(xctx), 0) != NULL)
        return 1;
    if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) == 0)
        return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) != NULL ? 2 : 0;
    if (SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) != NULL)
        return 1;
    return shim_hooks.stream_to != NULL && shim_hooks.stream_to(ssl, stream_to, POSH_MAX_DOMAIN_LEN + 2);
}


/*
 * A reference set with SSL_set_posh_reference() serves the next certificate verification of the connection and
 * no other: an SSL reused with SSL_clear() for another peer must not be judged by the previous source domain.
 */
static void take_reference(ssl_state *st, char out[POSH_MAX_DOMAIN_LEN + 2])
{
    out[0] = '\0';
    if (st == NULL || st->reference[0] == '\0')
        return;
    memcpy(out, st->reference, strlen(st->reference) + 1);
    st->reference[0] = '\0';
}

/*
 * SSL_VERIFY_NONE with SNI and no host (transparent_applies: 2): verify the chain as OpenSSL would, and only if
 * it verified (the verify result is then X509_V_OK, and POSH's approval can never stand beside another error)
 * leave the lookup to the program's first name question. Nothing is fetched for a program that never asks.
 */
static int defer(X509_STORE_CTX *xctx, SSL *ssl, ctx_state *cst, const char *service)
{
    char reference[POSH_MAX_DOMAIN_LEN + 2];
    X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int ret = next_verify(cst, xctx);

    if (ret > 0 && X509_STORE_CTX_get_error(xctx) == X509_V_OK && leaf != NULL && sni != NULL &&
        shim_hooks.deferred != NULL && eligible_reference(sni, reference))
        shim_hooks.deferred(leaf, reference, service);
    return ret;
}

int posh_verify_deferred(X509 *leaf, const char *reference, const char *service)
{
    ssl_state st = {0};
    leaf_der enc;
    posh_client *client;
    int vouched;

    ERR_set_mark();
    client = posh_default_client();
    ERR_pop_to_mark();
    if (client == NULL) {
        posh_log(POSH_LOG_WARNING, "rejected: %s", posh_default_client_error());
        return 0;
    }
    enc.der = NULL;
    vouched = posh_vouches(&st, client, 0, reference, service, leaf, NULL, &enc, 0);
    leaf_der_free(&enc);
    if (vouched != 1)
        posh_log(POSH_LOG_WARNING, "rejected: %s", message_of(&st));
    ssl_state_release(&st); /* an acceptance keeps its result for the message, and the message its text */
    return vouched == 1;
}

/*
 * The service POSH checks a connection for, client side and server side alike: SSL_set_posh_verify()'s, else the
 * context's (SSL_CTX_set_posh_verify), else "" (the shim then chooses one per connection).
 */
static const char *configured_service(const ssl_state *st, const ctx_state *cst)
{
    return st != NULL && st->service[0] != '\0' ? st->service : cst != NULL ? cst->service : "";
}

/*
 * ---- server side: the client certificate of an incoming connection ----
 * A server checks no name on a client certificate unless the application names one, so POSH runs only for the
 * identity the application says the peer claims: SSL_set_posh_reference() before the handshake (for the shim,
 * the `from` of the XMPP stream header the peer sent on that socket). No reference: untouched. The leaf carries
 * the name: PKIX (the library API adds it as the host OpenSSL checks). Otherwise POSH decides exactly as for a
 * client, through verify_with_posh: vouched, the chain is verified without host names; not vouched, the
 * library API makes OpenSSL report the name mismatch, the shim leaves the program's own name check to fail.
 * Never the host names or the SNI name of the connection: on a server those are ours, not the peer's.
 * Always blocking: OpenSSL 3.0 verifies a client certificate inside tls_process_client_certificate() and goes on
 * with the handshake whatever SSL_set_retry_verify() asked (the suspension is only honoured for a server's
 * certificate), so a suspended verification would be an accepted one. SSL_check_posh_peer() is the
 * non-blocking form: after the handshake.
 */
static int verify_server_side(X509_STORE_CTX *xctx, SSL *ssl, ctx_state *cst)
{
    char given_reference[POSH_MAX_DOMAIN_LEN + 2], chosen[SERVICE_BUF];
    ssl_state *st = ssl_state_get(ssl, 0);
    const char *service = configured_service(st, cst);
    int transparent = service[0] == '\0' && cst != NULL && cst->transparent;
    int ret;

    take_reference(st, given_reference);
    if (transparent) {
        /* The shim: XMPP only, the claim the peer made in its stream header on the socket the program accepted. */
        if (shim_hooks.service == NULL || shim_hooks.stream_from == NULL || !shim_hooks.service(ssl, chosen,
            sizeof(chosen)) || !posh_service_is_xmpp(chosen) ||
            !shim_hooks.stream_from(ssl, given_reference, sizeof(given_reference)))
            return next_verify(cst, xctx);
        service = chosen;
    }
    if (service[0] == '\0' || given_reference[0] == '\0')
        return next_verify(cst, xctx);
    if (st == NULL && (st = ssl_state_get(ssl, 1)) == NULL) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_OUT_OF_MEM);
        return 0;
    }
    ret = verify_with_posh(xctx, ssl, cst, st, service, given_reference, transparent);
    drop_held(st);
    return ret;
}

static int posh_cert_verify(X509_STORE_CTX *xctx, void *arg)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    char chosen[SERVICE_BUF], given_reference[POSH_MAX_DOMAIN_LEN + 2];
    char kept_reference[POSH_MAX_DOMAIN_LEN + 2];
    ctx_state *cst;
    ssl_state *st;
    const char *service;
    int transparent, ret;

    if (ssl == NULL || !indexes_ready())
        return X509_verify_cert(xctx);
    cst = ctx_state_get(SSL_get_SSL_CTX(ssl), 0);
    if (in_lookup)
        return next_verify(cst, xctx);
    if (SSL_is_server(ssl))
        return verify_server_side(xctx, ssl, cst);
    st = ssl_state_get(ssl, 0);
    take_reference(st, given_reference);
    memcpy(kept_reference, given_reference, strlen(given_reference) + 1);
    service = configured_service(st, cst);
    transparent = service[0] == '\0' && cst != NULL && cst->transparent;
    /* The application turned verification off and named no host: nobody will hear POSH's answer, so no request. */
    if (!transparent && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) == 0 && given_reference[0] == '\0' &&
        X509_VERIFY_PARAM_get0_host(X509_STORE_CTX_get0_param(xctx), 0) == NULL)
        return next_verify(cst, xctx);
    if (transparent) {
        char stream_to[POSH_MAX_DOMAIN_LEN + 2] = "";
        int applies = transparent_applies(ssl, xctx, stream_to);
        if (applies == 0 || shim_hooks.service == NULL || !shim_hooks.service(ssl, chosen, sizeof(chosen)))
            return next_verify(cst, xctx);
        if (applies == 2)
            return defer(xctx, ssl, cst, chosen);
        if (stream_to[0] != '\0') {
            if (!posh_service_is_xmpp(chosen))
                return next_verify(cst, xctx);
            if (given_reference[0] == '\0')
                memcpy(given_reference, stream_to, sizeof(given_reference));
        }
        service = chosen;
    }
    if (service[0] == '\0')
        return next_verify(cst, xctx);
    if (st == NULL && (st = ssl_state_get(ssl, 1)) == NULL) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_OUT_OF_MEM);
        return 0;
    }
    ret = verify_with_posh(xctx, ssl, cst, st, service, given_reference, transparent);
    /* A suspended verification runs again from the start: it must find the reference it was given. */
    if (st->status == POSH_STATUS_PENDING)
        memcpy(st->reference, kept_reference, strlen(kept_reference) + 1);
    else
        drop_held(st);
    return ret;
}

/* ---- for the LD_PRELOAD shim (client_internal.h) ---- */

void posh_verify_set_shim_hooks(const posh_shim_hooks *hooks)
{
    shim_hooks = *hooks;
}

int posh_ctx_install_transparent(SSL_CTX *ctx)
{
    ctx_state *st;
    if (ctx == NULL || !indexes_ready())
        return 0;
    pthread_mutex_lock(&setup_lock);
    if ((st = ctx_state_get(ctx, 1)) != NULL && !st->installed) {
        SSL_CTX_set_cert_verify_callback(ctx, posh_cert_verify, NULL);
        st->installed = 1;
        st->transparent = 1;
    }
    pthread_mutex_unlock(&setup_lock);
    return st != NULL;
}

int posh_ctx_chain_cert_verify(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg)
{
    ctx_state *st;
    int ok;
    if (ctx == NULL || !indexes_ready())
        return 0;
    pthread_mutex_lock(&setup_lock);
    ok = (st = ctx_state_get(ctx, 0)) != NULL && st->installed;
    if (ok) {
        st->next = cb;
        st->next_arg = cb != NULL ? arg : NULL;
    }
    pthread_mutex_unlock(&setup_lock);
    return ok;
}

int posh_is_cert_verify_callback(int (*cb)(X509_STORE_CTX *, void *))
{
    return cb == posh_cert_verify;
}

int (*posh_cert_verify_callback(void))(X509_STORE_CTX *, void *)
{
    return posh_cert_verify;
}

int posh_verify_in_lookup(void)
{
    return in_lookup != 0;
}

void posh_verify_mark_lookup_thread(void)
{
    in_lookup = 1;
}

/* ---- public API ---- */

int SSL_CTX_set_posh_verify(SSL_CTX *ctx, const char *service)
{
    char canon[SERVICE_BUF];
    ctx_state *st;
    int own_client;

    if (ctx == NULL || !indexes_ready() || !service_store(service, canon))
        return 0;
    pthread_mutex_lock(&setup_lock);
    st = ctx_state_get(ctx, 1);
    own_client = st != NULL && atomic_load(&st->client) != NULL;
    pthread_mutex_unlock(&setup_lock);
    if (st == NULL)
        return 0;
    /* Outside the setup lock: the default client takes locks of its own. */
    if (!own_client && posh_default_client() == NULL) {
        posh_log(POSH_LOG_ERROR, "POSH not enabled: %s", posh_default_client_error());
        return 0;
    }
    pthread_mutex_lock(&setup_lock);
    memcpy(st->service, canon, sizeof(st->service));
    SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx) | SSL_VERIFY_PEER, SSL_CTX_get_verify_callback(ctx));
    SSL_CTX_set_cert_verify_callback(ctx, posh_cert_verify, NULL);
    st->installed = 1;
    pthread_mutex_unlock(&setup_lock);
    return 1;
}

/* Set one of a context's switches (which: the field in its state), where SSL_CTX_set_posh_verify() installed POSH. */
static int ctx_switch(SSL_CTX *ctx, atomic_int *(*which)(ctx_state *), int on)
{
    ctx_state *st;
    int ok;
    if (ctx == NULL || !indexes_ready())
        return 0;
    pthread_mutex_lock(&setup_lock);
    ok = (st = ctx_state_get(ctx, 0)) != NULL && st->installed && !st->transparent;
    if (ok)
        atomic_store(which(st), on != 0);
    pthread_mutex_unlock(&setup_lock);
    return ok;
}

static atomic_int *nonblocking_switch(ctx_state *st)
{
    return &st->nonblocking;
}

static atomic_int *delegation_switch(ctx_state *st)
{
    return &st->delegation;
}

int SSL_CTX_set_posh_nonblocking(SSL_CTX *ctx, int on)
{
    return ctx_switch(ctx, nonblocking_switch, on);
}

int SSL_CTX_set_posh_delegation(SSL_CTX *ctx, int on)
{
    return ctx_switch(ctx, delegation_switch, on);
}

int SSL_get_posh_wait_fd(const SSL *ssl)
{
    ssl_state *st = ssl != NULL && indexes_ready() ? ssl_state_get(ssl, 0) : NULL;
    return st != NULL && st->wait != NULL && st->status == POSH_STATUS_PENDING ? posh_wait_fd(st->wait) : -1;
}

int SSL_CTX_set_posh_client(SSL_CTX *ctx, posh_client *client)
{
    posh_client *old, **retired;
    ctx_state *st;
    int ok = 0;
    if (ctx == NULL || client == NULL || !indexes_ready())
        return 0;
    if (posh_client_closed(client)) {
        posh_log(POSH_LOG_ERROR, "SSL_CTX_set_posh_client: the client was freed (posh_client_free)");
        return 0;
    }
    pthread_mutex_lock(&setup_lock);
    if ((st = ctx_state_get(ctx, 1)) != NULL) {
        old = atomic_load(&st->client);
        if (old == client) {
            ok = 1;
        } else if (old == NULL || (retired = realloc(st->retired, (st->nretired + 1) * sizeof(*retired))) != NULL) {
            /* The replaced client is kept, not released: verifications on other threads may be using it now. */
            if (old != NULL) {
                st->retired = retired;
                st->retired[st->nretired++] = old;
            }
            /* The context keeps the client's memory until it is freed itself. */
            atomic_store_explicit(&st->client, posh_client_ref(client), memory_order_release);
            ok = 1;
        }
    }
    pthread_mutex_unlock(&setup_lock);
    return ok;
}

int SSL_set_posh_verify(SSL *ssl, const char *service)
{
    char canon[SERVICE_BUF];
    SSL_CTX *ctx;
    ctx_state *cst;
    ssl_state *st;

    if (ssl == NULL || !indexes_ready() || !service_store(service, canon))
        return 0;
    ctx = SSL_get_SSL_CTX(ssl);
    pthread_mutex_lock(&setup_lock);
    if ((cst = ctx_state_get(ctx, 1)) != NULL && !cst->installed) {
        /* First use on this context: install the pass-through callback (connections without POSH unaffected). */
        SSL_CTX_set_cert_verify_callback(ctx, posh_cert_verify, NULL);
        cst->installed = 1;
    }
    pthread_mutex_unlock(&setup_lock);
    if (cst == NULL)
        return 0;
    if (ctx_client(cst) == NULL && posh_default_client() == NULL) {
        posh_log(POSH_LOG_ERROR, "POSH not enabled: %s", posh_default_client_error());
        return 0;
    }
    if ((st = ssl_state_get(ssl, 1)) == NULL)
        return 0;
    memcpy(st->service, canon, sizeof(st->service));
    SSL_set_verify(ssl, SSL_get_verify_mode(ssl) | SSL_VERIFY_PEER, SSL_get_verify_callback(ssl));
    return 1;
}

int SSL_set_posh_reference(SSL *ssl, const char *source_domain)
{
    char dom[POSH_MAX_DOMAIN_LEN + 2];
    ssl_state *st;
    if (ssl == NULL || !indexes_ready())
        return 0;
    if (source_domain == NULL) {
        if ((st = ssl_state_get(ssl, 0)) != NULL)
            st->reference[0] = '\0';
        return 1;
    }
    if (posh_domain_normalize(source_domain, dom, sizeof(dom)) != POSH_OK || (st = ssl_state_get(ssl, 1)) == NULL)
        return 0;
    memcpy(st->reference, dom, sizeof(st->reference));
    return 1;
}

posh_status SSL_get_posh_status(const SSL *ssl)
{
    ssl_state *st = ssl != NULL && indexes_ready() ? ssl_state_get(ssl, 0) : NULL;
    return st != NULL ? st->status : POSH_STATUS_NONE;
}

posh_err SSL_get_posh_error(const SSL *ssl)
{
    ssl_state *st = ssl != NULL && indexes_ready() ? ssl_state_get(ssl, 0) : NULL;
    return st != NULL ? st->err : POSH_OK;
}

const char *SSL_get_posh_message(const SSL *ssl)
{
    ssl_state *st = ssl != NULL && indexes_ready() ? ssl_state_get(ssl, 0) : NULL;
    return st != NULL ? message_of(st) : "";
}

/* Only for a connection whose verification passed as a whole: POSH's approval never outlives another error. */
const char *SSL_get_posh_vouched_name(const SSL *ssl)
{
    ssl_state *st = ssl != NULL && indexes_ready() ? ssl_state_get(ssl, 0) : NULL;
    if (st == NULL || st->vouched[0] == '\0' ||
        (st->status != POSH_STATUS_ACCEPTED && st->status != POSH_STATUS_DELEGATED) ||
        SSL_get_verify_result(ssl) != X509_V_OK || SSL_get0_peer_certificate(ssl) == NULL)
        return NULL;
    return st->vouched;
}

/*
 * ---- server side, after the handshake (SSL_check_posh_peer) ----
 * For protocols whose claimed identity arrives only inside TLS (XMPP direct TLS, XEP-0368). POSH here answers
 * the name question alone: the chain must have verified in full during the handshake (SSL_get_verify_result()
 * X509_V_OK, so nothing is laundered, whatever the application's verify callback returned), and the answer is
 * recorded on the connection like a handshake's. Never in POSH_MODE_PIN's sense: a match here is no trust anchor.
 */
posh_status SSL_check_posh_peer(SSL *ssl, const char *domain, const char *service, int nonblocking)
{
    char canon[SERVICE_BUF], reference[POSH_MAX_DOMAIN_LEN + 2];
    leaf_der enc;
    posh_client *client;
    ssl_state *st;
    X509 *leaf;
    long vr;
    int vouched;

    if (ssl == NULL || !indexes_ready() || (st = ssl_state_get(ssl, 1)) == NULL)
        return POSH_STATUS_REJECTED;
    if (st->status != POSH_STATUS_PENDING)
        verdict_clear(st);
    if (domain == NULL || posh_domain_normalize(domain, reference, sizeof(reference)) != POSH_OK) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_BAD_DOMAIN, "\"%.100s\" is not a DNS name",
               domain != NULL ? domain : "(null)");
        goto finished;
    }
    if (service == NULL || !service_store(service, canon)) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_BAD_SERVICE, "%s: \"%.100s\" is not a service name", reference,
               service != NULL ? service : "(null)");
        goto finished;
    }
    if (!SSL_is_init_finished(ssl)) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_INVALID_ARGUMENT, "%s: the handshake has not finished", reference);
        goto finished;
    }
    if ((leaf = SSL_get0_peer_certificate(ssl)) == NULL) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_CERTIFICATE, "%s: the peer presented no certificate", reference);
        goto finished;
    }
    if ((vr = SSL_get_verify_result(ssl)) != X509_V_OK) {
        record(st, POSH_STATUS_REJECTED, POSH_ERR_CERTIFICATE,
               "%s: the peer's certificate did not verify (%ld: %s): POSH vouches only for a verified chain",
               reference, vr, X509_verify_cert_error_string(vr));
        goto finished;
    }
    if (X509_check_host(leaf, reference, 0, 0, NULL) > 0) {
        record(st, POSH_STATUS_PKIX, POSH_OK, "%s: the certificate carries the name", reference);
        goto finished;
    }
    if ((client = verification_client(st, ctx_state_get(SSL_get_SSL_CTX(ssl), 0), reference, canon)) == NULL)
        goto finished;
    enc.der = NULL;
    vouched = posh_vouches(st, client, nonblocking != 0, reference, canon, leaf, NULL, &enc, 0);
    leaf_der_free(&enc);
    if (vouched == 1)
        memcpy(st->vouched, reference, strlen(reference) + 1); /* SSL_get_posh_vouched_name() */
    if (vouched == 2)
        goto done; /* pending: the answers obtained so far stay with st until the call is repeated */
finished:
    if (st->wait != NULL) {
        posh_wait_release(st->wait); /* a wait for another question, or abandoned by a blocking call */
        st->wait = NULL;
    }
    drop_held(st);
done:
    return st->status;
}
