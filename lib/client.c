/*
 * client.c - the client: a private copy of the configuration, the cache, a pool of warm curl handles, and
 * the process-wide default client configured from the environment.
 */
#include "client_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDLE_HANDLES 16

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    const curl_version_info_data *v;
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    /* POSH is HTTPS or nothing: a libcurl without TLS cannot serve. */
    v = curl_version_info(CURLVERSION_NOW);
    if (curl_init_rc == CURLE_OK && (v == NULL || (v->features & CURL_VERSION_SSL) == 0)) {
        posh_log(POSH_LOG_ERROR, "libcurl %s has no TLS support", v != NULL ? v->version : "?");
        curl_init_rc = CURLE_NOT_BUILT_IN;
    }
}

const char *posh_client_curl_problem(void)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc == CURLE_OK)
        return NULL;
    return curl_init_rc == CURLE_NOT_BUILT_IN ? "libcurl has no TLS support" : curl_easy_strerror(curl_init_rc);
}

/*
 * fork() safety. Every live client is in a registry; around fork the handlers hold every lock so that none is
 * held by a thread that does not exist in the child. The child must not use the parent's connections (a TLS
 * close_notify from the child would break the parent's stream), so its idle handles are abandoned, never
 * cleaned up, and kept reachable in a graveyard.
 */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static posh_client *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

#define GRAVEYARD_MAX 256
static CURL *graveyard[GRAVEYARD_MAX];
static size_t graveyard_n;

static void atfork_prepare(void)
{
    posh_engine_atfork_prepare_all();
    pthread_mutex_lock(&registry_lock);
    for (posh_client *c = registry; c != NULL; c = c->next_client) {
        posh_engine_atfork_prepare(c);
        pthread_mutex_lock(&c->handles_lock);
        posh_cache_atfork_prepare(c->cache);
        posh_cache_atfork_prepare(c->targets);
        posh_cache_atfork_prepare(c->delegations);
        posh_store_atfork_prepare(c->store);
    }
}

static void atfork_parent(void)
{
    for (posh_client *c = registry; c != NULL; c = c->next_client) {
        posh_store_atfork_parent(c->store);
        posh_cache_atfork_parent(c->delegations);
        posh_cache_atfork_parent(c->targets);
        posh_cache_atfork_parent(c->cache);
        pthread_mutex_unlock(&c->handles_lock);
        posh_engine_atfork_parent(c);
    }
    pthread_mutex_unlock(&registry_lock);
    posh_engine_atfork_parent_all();
}

static void atfork_child(void)
{
    for (posh_client *c = registry; c != NULL; c = c->next_client) {
        /* The engine first: its waits are failed while the jobs still exist; the caches then drop its entries. */
        posh_engine_atfork_child(c);
        posh_store_atfork_child(c->store);
        posh_cache_atfork_child(c->delegations);
        posh_cache_atfork_child(c->targets);
        posh_cache_atfork_child(c->cache);
        for (size_t i = 0; i < c->n_idle; i++)
            if (graveyard_n < GRAVEYARD_MAX)
                graveyard[graveyard_n++] = c->idle[i]; /* beyond that, simply forgotten */
        c->n_idle = 0;
        pthread_mutex_unlock(&c->handles_lock);
    }
    pthread_mutex_unlock(&registry_lock);
    posh_engine_atfork_child_all();
}

static void atfork_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void registry_add(posh_client *c)
{
    pthread_once(&atfork_once, atfork_init);
    pthread_mutex_lock(&registry_lock);
    c->next_client = registry;
    if (registry != NULL)
        registry->prev_client = c;
    registry = c;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(posh_client *c)
{
    pthread_mutex_lock(&registry_lock);
    if (c->prev_client != NULL)
        c->prev_client->next_client = c->next_client;
    else if (registry == c)
        registry = c->next_client;
    if (c->next_client != NULL)
        c->next_client->prev_client = c->prev_client;
    pthread_mutex_unlock(&registry_lock);
}

posh_client *posh_client_new(const posh_config *cfg)
{
    posh_config *defaults = NULL;
    posh_client *c = NULL;
    char why[POSH_MSG_LEN];

    if (cfg == NULL && (cfg = defaults = posh_config_new()) == NULL)
        return NULL;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        goto fail;
    atomic_init(&c->refs, 1); /* the caller's, dropped by posh_client_free() */
    atomic_init(&c->closed, false);
    pthread_mutex_init(&c->handles_lock, NULL);
    pthread_mutex_init(&c->engine_lock, NULL);
    c->max_idle = MAX_IDLE_HANDLES;
    if ((c->cfg = posh_config_dup(cfg)) == NULL || (c->idle = calloc(c->max_idle, sizeof(CURL *))) == NULL ||
        (c->cache = posh_cache_new((size_t)cfg->cache_size)) == NULL ||
        (c->targets = posh_cache_new((size_t)cfg->cache_size)) == NULL ||
        (c->delegations = posh_cache_new((size_t)cfg->cache_size)) == NULL ||
        posh_connect_to_parse(cfg->connect_to, &c->connect_to, why, sizeof(why)) != POSH_OK)
        goto fail;
    c->store = posh_store_open(c->cfg); /* NULL: none, or unsafe (logged); memory only */
    registry_add(c);
    posh_config_free(defaults);
    return c;
fail:
    posh_config_free(defaults);
    posh_client_free(c);
    return NULL;
}

/* The last reference went: nobody can reach the client any more, and its engine thread was joined (closed). */
static void client_destroy(posh_client *c)
{
    registry_remove(c);
    posh_engine_destroy(c);
    for (size_t i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    free(c->idle);
    posh_cache_free(c->cache);
    posh_cache_free(c->targets);
    posh_cache_free(c->delegations);
    posh_store_free(c->store);
    curl_slist_free_all(c->connect_to);
    posh_config_free(c->cfg);
    pthread_mutex_destroy(&c->handles_lock);
    pthread_mutex_destroy(&c->engine_lock);
    free(c);
}

posh_client *posh_client_ref(posh_client *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void posh_client_unref(posh_client *c)
{
    /* acq_rel: every use of the client by another reference's holder happens before its destruction. */
    if (c != NULL && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        client_destroy(c);
}

bool posh_client_closed(const posh_client *c)
{
    return atomic_load(&c->closed);
}

void posh_client_free(posh_client *c)
{
    if (c == NULL)
        return;
    if (posh_engine_is_current_thread(c)) {
        /* From one of its own callbacks: the engine cannot stop itself. Refused (leaked), never a crash. */
        posh_log(POSH_LOG_ERROR, "posh_client_free() called from the client's own callback: refused");
        return;
    }
    if (atomic_exchange(&c->closed, true)) {
        /* A second free would drop a reference a context holds: refused (when the memory still exists at all). */
        posh_log(POSH_LOG_ERROR, "posh_client_free() called twice on one client: refused");
        return;
    }
    /* Closed first, so that the engine refuses to start again; then stopped: callbacks delivered before we return. */
    posh_engine_stop(c);
    posh_client_unref(c);
}

void posh_client_flush(posh_client *c)
{
    if (c == NULL)
        return;
    posh_cache_flush(c->cache);
    posh_cache_flush(c->targets);
    posh_cache_flush(c->delegations);
    posh_store_flush(c->store);
}

CURL *posh_client_handle_get(posh_client *c)
{
    CURL *curl = NULL;
    pthread_mutex_lock(&c->handles_lock);
    if (c->n_idle > 0)
        curl = c->idle[--c->n_idle];
    pthread_mutex_unlock(&c->handles_lock);
    if (curl != NULL)
        return curl;
    /* libcurl is set up on the first fetch: a client that answers from its caches never pays for it. */
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK || (curl = curl_easy_init()) == NULL)
        return NULL;
    if (posh_fetch_handle_setup(curl, c->cfg, c->connect_to) != POSH_OK) {
        curl_easy_cleanup(curl);
        return NULL;
    }
    return curl;
}

void posh_client_handle_put(posh_client *c, CURL *curl)
{
    if (curl == NULL)
        return;
    pthread_mutex_lock(&c->handles_lock);
    if (c->n_idle < c->max_idle) {
        c->idle[c->n_idle++] = curl;
        curl = NULL;
    }
    pthread_mutex_unlock(&c->handles_lock);
    if (curl != NULL)
        curl_easy_cleanup(curl);
}

/* ---- lookups through the cache ---- */

typedef struct fill_args {
    posh_client *client;
    const char *domain, *svc, *proto;
} fill_args;

/* A memory miss: the persistent cache's entry if it is sound and fresh, else the lookup (which persists it). */
static posh_result *fill_lookup(void *arg)
{
    fill_args *a = arg;
    posh_result *r;
    if (a->client->store != NULL) {
        char service[2 * POSH_MAX_SERVICE_LEN + 4];
        snprintf(service, sizeof(service), "_%s._%s", a->svc, a->proto);
        if ((r = posh_store_load(a->client, a->domain, service)) != NULL)
            return r;
    }
    return posh_lookup_uncached(a->client, a->domain, a->svc, a->proto);
}

/* A result that only carries an input error (never cached). */
static posh_result *input_error(posh_err err, const char *what, const char *value)
{
    char msg[POSH_MSG_LEN];
    posh_msg(msg, sizeof(msg), "\"%.300s\" is not a valid %s", value, what);
    return posh_result_build(&(posh_result_parts){.domain = "", .service = "", .err = err, .message = msg});
}

/* The normalised (domain, svc, proto) of a lookup's arguments, or the input error (with *bad, when not NULL). */
static posh_err lookup_args(const char *domain, const char *service, char dom[POSH_MAX_DOMAIN_LEN + 2],
                            char svc[POSH_MAX_SERVICE_LEN + 1], char proto[POSH_MAX_SERVICE_LEN + 1],
                            posh_result **bad)
{
    posh_err err;
    if ((err = posh_domain_normalize(domain, dom, POSH_MAX_DOMAIN_LEN + 2)) != POSH_OK) {
        if (bad != NULL && (*bad = input_error(err, "DNS domain name", domain)) == NULL)
            return POSH_ERR_NOMEM;
        return err;
    }
    if ((err = posh_service_parse(service, svc, proto)) != POSH_OK) {
        if (bad != NULL && (*bad = input_error(err, "service name", service)) == NULL)
            return POSH_ERR_NOMEM;
        return err;
    }
    return POSH_OK;
}

static posh_result *fill_delegation(void *arg)
{
    fill_args *a = arg;
    return posh_delegation_uncached(a->client, a->domain, a->svc, a->proto);
}

/*
 * The cache key "DOMAIN _SVC._PROTO" of lookups whose parts lookup_args() checked (the buffers bound their
 * lengths; key holds their sizes and 2 bytes more). Built on every warm handshake: no printf.
 */
static void cache_key(char *key, const char *dom, const char *svc, const char *proto)
{
    size_t d = strlen(dom), s = strlen(svc), p = strlen(proto);
    memcpy(key, dom, d);
    memcpy(key + d, " _", 2);
    memcpy(key + d + 2, svc, s);
    memcpy(key + d + 2 + s, "._", 2);
    memcpy(key + d + 4 + s, proto, p + 1);
}

/* A blocking lookup through one of the client's caches (fill runs the lookup on a miss, once for everyone). */
static posh_err lookup_through(posh_client *client, posh_cache *(*which)(posh_client *), posh_result *(*fill)(void *),
                               const char *domain, const char *service, posh_result **out)
{
    char dom[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    char key[sizeof(dom) + sizeof(svc) + sizeof(proto) + 4];
    fill_args args;
    posh_err err;

    if (out == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (client == NULL || domain == NULL || service == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (posh_engine_is_current_thread(NULL)) {
        /* A callback on an engine thread: waiting here could wait for this very thread's own work. */
        posh_log(POSH_LOG_ERROR, "a blocking lookup called from an async callback: refused (use posh_lookup_async)");
        return POSH_ERR_INVALID_ARGUMENT;
    }
    if ((err = lookup_args(domain, service, dom, svc, proto, out)) != POSH_OK)
        return err;
    cache_key(key, dom, svc, proto);
    args = (fill_args){client, dom, svc, proto};
    *out = posh_cache_get(which(client), key, posh_config_now(client->cfg), fill, &args);
    return posh_lookup_outcome(out);
}

/*
 * The last answer this thread took from a cache through posh_lookup_peek(), with a reference: the next
 * handshake with the same domain takes it again without the cache's lock, hash, bucket and entry, which on the
 * warm path are cold cache lines each (bench/RESULTS.md). It answers exactly as the cache would: only while the
 * cache still holds that very result (a cache marks a result retired, under its lock, before letting it go)
 * and while it is fresh by the client's clock. Every 64th use asks the cache itself, which keeps the entry's
 * place in its LRU order. The thread's reference goes when the memo changes or the thread ends.
 */
typedef struct peek_memo {
    const posh_cache *cache;
    posh_result *result;           /* a reference, or NULL */
    unsigned uses;
    size_t key_len;
    char key[POSH_MAX_DOMAIN_LEN + 2 * POSH_MAX_SERVICE_LEN + 8];
} peek_memo;

static _Thread_local peek_memo memo;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static pthread_key_t memo_key;     /* its destructor drops an ending thread's reference */
static bool memo_key_ok;

static void memo_release(void *arg)
{
    peek_memo *m = arg;
    posh_result_free(m->result);
    m->result = NULL;
}

static void memo_key_init(void)
{
    memo_key_ok = pthread_key_create(&memo_key, memo_release) == 0;
}

/* Keep r (a new reference is taken) as this thread's memo of key in cache. */
static void memo_set(const posh_cache *cache, const char *key, size_t key_len, posh_result *r)
{
    pthread_once(&memo_once, memo_key_init);
    if (!memo_key_ok || (memo.result == NULL && pthread_setspecific(memo_key, &memo) != 0))
        return; /* no destructor for this thread: no memo, the cache answers every time */
    posh_result_free(memo.result);
    memo.result = posh_result_ref(r);
    memo.cache = cache;
    memo.uses = 0;
    memo.key_len = key_len;
    memcpy(memo.key, key, key_len);
}

posh_result *posh_lookup_peek(posh_client *client, posh_lookup_kind kind, const char *domain, const char *service)
{
    char key[POSH_MAX_DOMAIN_LEN + 2 * POSH_MAX_SERVICE_LEN + 8];
    size_t d = strnlen(domain, POSH_MAX_DOMAIN_LEN + 1), s = strnlen(service, 2 * POSH_MAX_SERVICE_LEN + 4);
    posh_cache *cache = kind == POSH_KIND_DELEGATION ? client->delegations : client->cache;
    time_t now;
    posh_result *r;

    if (d > POSH_MAX_DOMAIN_LEN || s > 2 * POSH_MAX_SERVICE_LEN + 3)
        return NULL;
    memcpy(key, domain, d);
    key[d] = ' ';
    memcpy(key + d + 1, service, s + 1);
    now = posh_config_now(client->cfg);
    if (memo.result != NULL && memo.cache == cache && memo.key_len == d + s + 2 && ++memo.uses % 64 != 0 &&
        !__atomic_load_n(&memo.result->retired, __ATOMIC_ACQUIRE) && now < memo.result->expires_at &&
        memcmp(memo.key, key, d + s + 2) == 0)
        return posh_result_ref(memo.result);
    if ((r = posh_cache_peek(cache, key, now)) != NULL)
        memo_set(cache, key, d + s + 2, r);
    return r;
}

posh_cache *posh_client_posh_cache(posh_client *client)
{
    return client->cache;
}

posh_cache *posh_client_delegation_cache(posh_client *client)
{
    return client->delegations;
}

posh_err posh_lookup(posh_client *client, const char *domain, const char *service, posh_result **out)
{
    return lookup_through(client, posh_client_posh_cache, fill_lookup, domain, service, out);
}

posh_err posh_lookup_delegation(posh_client *client, const char *domain, const char *service, posh_result **out)
{
    return lookup_through(client, posh_client_delegation_cache, fill_delegation, domain, service, out);
}

posh_err posh_lookup_outcome(posh_result **r)
{
    posh_err err;
    if (*r == NULL)
        return POSH_ERR_NOMEM;
    err = (*r)->err;
    if (err == POSH_ERR_NOMEM || err == POSH_ERR_INVALID_ARGUMENT) {
        /* posh.h: no result for these two. A caller that trusts it frees nothing, so keeping one would leak. */
        posh_result_free(*r);
        *r = NULL;
    }
    return err;
}

posh_err posh_lookup_async(posh_client *client, const char *domain, const char *service, posh_lookup_callback cb,
                           void *arg)
{
    char dom[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    posh_err err;

    if (client == NULL || domain == NULL || service == NULL || cb == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if ((err = lookup_args(domain, service, dom, svc, proto, NULL)) != POSH_OK)
        return err;
    return posh_engine_submit(client, dom, svc, proto, cb, arg);
}

posh_err posh_prefetch(posh_client *client, const char *domain, const char *service)
{
    char dom[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    char key[sizeof(dom) + sizeof(svc) + sizeof(proto) + 4];
    posh_result *r;
    posh_err err;

    if (client == NULL || domain == NULL || service == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if ((err = lookup_args(domain, service, dom, svc, proto, NULL)) != POSH_OK)
        return err;
    cache_key(key, dom, svc, proto);
    if ((r = posh_cache_peek(client->cache, key, posh_config_now(client->cfg))) != NULL) {
        posh_result_free(r);
        return POSH_OK; /* fresh already: nothing to do */
    }
    return posh_engine_submit(client, dom, svc, proto, NULL, NULL);
}

posh_err posh_match_der(const posh_client *client, const posh_result *result, const unsigned char *der,
                        size_t der_len, int *match, int *index)
{
    int idx = -1;
    posh_err err;

    if (match != NULL)
        *match = 0;
    if (index != NULL)
        *index = -1;
    if (client == NULL || result == NULL || der == NULL || der_len == 0 || match == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (result->err != POSH_OK)
        return result->err;
    err = posh_result_match(result, der, der_len, &idx);
    if (err != POSH_OK)
        return err;
    *match = idx >= 0;
    if (index != NULL)
        *index = idx;
    return POSH_OK;
}

/* ---- the default client ---- */

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static posh_client *default_client;
static _Atomic(posh_client *) default_ready; /* default_client once made, for posh_default_client_if_made() */
static char default_error[POSH_MSG_LEN] = "";

static void default_init(void)
{
    posh_config *cfg = posh_config_new();
    posh_err err;
    if (cfg == NULL) {
        posh_msg(default_error, sizeof(default_error), "out of memory");
        return;
    }
    err = posh_config_load_env(cfg);
    if (err != POSH_OK) {
        posh_msg(default_error, sizeof(default_error), "%s", posh_config_error(cfg));
        posh_log(POSH_LOG_ERROR, "invalid environment: %s", default_error);
    } else if ((default_client = posh_client_new(cfg)) == NULL) {
        posh_msg(default_error, sizeof(default_error), "could not create the client (out of memory or libcurl)");
    }
    posh_config_free(cfg);
    atomic_store_explicit(&default_ready, default_client, memory_order_release);
}

posh_client *posh_default_client_if_made(void)
{
    return atomic_load_explicit(&default_ready, memory_order_acquire);
}

posh_client *posh_default_client(void)
{
    pthread_once(&default_once, default_init);
    return default_client;
}

const char *posh_default_client_error(void)
{
    pthread_once(&default_once, default_init);
    return default_error;
}
