/*
 * cache.c - results by (domain, service): bounded (LRU), thread-safe, with single flight: concurrent callers
 * for the same key share one lookup. The lock is never held while a lookup runs.
 */
#include "client_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *key;
    uint64_t hash;
    posh_result *result;       /* NULL while the first fill is pending */
    bool pending;
    unsigned long gen;         /* changes each time a fill completes */
    posh_cache_waiter *waiters; /* asynchronous callers waiting for the pending fill */
    struct entry *chain;       /* hash bucket */
    struct entry *prev, *next; /* LRU list, most recent first */
} entry;

struct posh_cache {
    pthread_mutex_t lock;
    pthread_cond_t filled;
    entry **buckets;
    size_t nbuckets;           /* power of two */
    size_t count;
    size_t max;
    unsigned long next_gen;
    entry lru;                 /* sentinel */
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

posh_cache *posh_cache_new(size_t max_entries)
{
    posh_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->filled, NULL);
    c->max = max_entries;
    c->lru.next = c->lru.prev = &c->lru;
    return c;
}

static void lru_unlink(entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push_front(posh_cache *c, entry *e)
{
    e->next = c->lru.next;
    e->prev = &c->lru;
    c->lru.next->prev = e;
    c->lru.next = e;
}

static entry *find(posh_cache *c, const char *key, uint64_t h)
{
    for (entry *e = c->buckets[h & (c->nbuckets - 1)]; e != NULL; e = e->chain)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/*
 * The cache lets go of an entry's result: marked retired first, so that a thread's memo of it (client.c,
 * posh_lookup_peek) stops answering with it from now on.
 */
static void drop_result(posh_result *r)
{
    if (r == NULL)
        return;
    __atomic_store_n(&r->retired, 1, __ATOMIC_RELEASE);
    posh_result_free(r);
}

static void remove_entry(posh_cache *c, entry *e)
{
    entry **p = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    lru_unlink(e);
    c->count--;
    drop_result(e->result);
    free(e->key);
    free(e);
}

/* Double the table when it is fuller than one entry per bucket; failure to grow only costs speed. */
static void maybe_grow(posh_cache *c)
{
    size_t n = c->nbuckets * 2;
    entry **b;
    if (c->count <= c->nbuckets || (b = calloc(n, sizeof(*b))) == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        entry *e = c->buckets[i];
        while (e != NULL) {
            entry *next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

/* Drop least recently used settled entries until there is room for one more. */
static void evict(posh_cache *c)
{
    entry *e = c->lru.prev;
    while (c->count >= c->max && e != &c->lru) {
        entry *prev = e->prev;
        if (!e->pending)
            remove_entry(c, e);
        e = prev;
    }
}

static entry *insert_pending(posh_cache *c, const char *key, uint64_t h)
{
    entry *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = strdup(key)) == NULL) {
        free(e);
        return NULL;
    }
    evict(c);
    e->hash = h;
    e->pending = true;
    e->chain = c->buckets[h & (c->nbuckets - 1)];
    c->buckets[h & (c->nbuckets - 1)] = e;
    lru_push_front(c, e);
    c->count++;
    maybe_grow(c);
    return e;
}

/*
 * Settle the pending entry e with r (a new reference is taken; NULL: the fill failed, the entry goes) and wake
 * every waiter: the blocking ones through the condition, the asynchronous ones are returned to be called
 * once the lock is released. Called with the lock held.
 */
static posh_cache_waiter *settle(posh_cache *c, entry *e, posh_result *r)
{
    posh_cache_waiter *w = e->waiters;
    drop_result(e->result);
    e->result = r != NULL ? posh_result_ref(r) : NULL;
    e->pending = false;
    e->waiters = NULL;
    e->gen = ++c->next_gen;
    if (r == NULL)
        remove_entry(c, e);
    pthread_cond_broadcast(&c->filled);
    return w;
}

/* Outside the lock: each waiter gets its own reference to r. */
static void call_waiters(posh_cache_waiter *w, posh_result *r)
{
    while (w != NULL) {
        posh_cache_waiter *next = w->next; /* w may be freed by its callback */
        w->fn(w->arg, r != NULL ? posh_result_ref(r) : NULL);
        w = next;
    }
}

/* A fresh entry's result (a new reference, the entry made most recent), or NULL. Lock held. */
static posh_result *fresh(posh_cache *c, entry *e, time_t now)
{
    if (e == NULL || e->pending || e->result == NULL || now >= e->result->expires_at)
        return NULL;
    lru_unlink(e);
    lru_push_front(c, e);
    return posh_result_ref(e->result);
}

posh_result *posh_cache_get(posh_cache *c, const char *key, time_t now, posh_result *(*fill)(void *arg),
                            void *arg)
{
    uint64_t h = hash_key(key);
    unsigned long waited_for = 0;
    bool waited = false;
    posh_cache_waiter *w;
    posh_result *r = NULL;
    entry *e;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        e = find(c, key, h);
        if ((r = fresh(c, e, now)) != NULL)
            goto out;
        if (e != NULL && !e->pending && e->result != NULL && waited && e->gen != waited_for) {
            /* The very fill we waited for, even if it expired at once (e.g. a TTL of 0). */
            lru_unlink(e);
            lru_push_front(c, e);
            r = posh_result_ref(e->result);
            goto out;
        }
        if (e == NULL || !e->pending)
            break;
        waited = true;
        waited_for = e->gen;
        pthread_cond_wait(&c->filled, &c->lock);
    }
    /* Missing or stale: this caller runs the lookup for everyone. */
    if (e == NULL && (e = insert_pending(c, key, h)) == NULL)
        goto out;
    e->pending = true;
    pthread_mutex_unlock(&c->lock);
    r = fill(arg);
    pthread_mutex_lock(&c->lock);
    w = settle(c, e, r);
    pthread_mutex_unlock(&c->lock);
    call_waiters(w, r);
    return r;
out:
    pthread_mutex_unlock(&c->lock);
    return r;
}

posh_cache_begin_result posh_cache_begin(posh_cache *c, const char *key, time_t now, posh_result **out,
                                         posh_cache_waiter *w)
{
    uint64_t h = hash_key(key);
    posh_cache_begin_result ret;
    entry *e;

    *out = NULL;
    pthread_mutex_lock(&c->lock);
    e = find(c, key, h);
    if ((*out = fresh(c, e, now)) != NULL) {
        ret = POSH_CACHE_FRESH;
    } else if (e != NULL && e->pending) {
        w->next = e->waiters;
        e->waiters = w;
        ret = POSH_CACHE_WAIT;
    } else if (e == NULL && (e = insert_pending(c, key, h)) == NULL) {
        ret = POSH_CACHE_NOMEM;
    } else {
        e->pending = true;
        ret = POSH_CACHE_OWNER;
    }
    pthread_mutex_unlock(&c->lock);
    return ret;
}

posh_result *posh_cache_peek(posh_cache *c, const char *key, time_t now)
{
    posh_result *r;
    pthread_mutex_lock(&c->lock);
    r = fresh(c, find(c, key, hash_key(key)), now);
    pthread_mutex_unlock(&c->lock);
    return r;
}

void posh_cache_complete(posh_cache *c, const char *key, posh_result *r)
{
    posh_cache_waiter *w = NULL;
    entry *e;

    pthread_mutex_lock(&c->lock);
    /* Pending entries are never evicted or flushed, so the owner's is still there (fork aside: see below). */
    if ((e = find(c, key, hash_key(key))) != NULL && e->pending)
        w = settle(c, e, r);
    pthread_mutex_unlock(&c->lock);
    call_waiters(w, r);
}

void posh_cache_flush(posh_cache *c)
{
    pthread_mutex_lock(&c->lock);
    for (entry *e = c->lru.next; e != &c->lru;) {
        entry *next = e->next;
        if (!e->pending)
            remove_entry(c, e);
        e = next;
    }
    pthread_mutex_unlock(&c->lock);
}

/*
 * fork(): the prepare handler takes the lock so that no other thread holds it at the moment of the fork; the
 * child then drops pending entries, whose owner threads (or engine) do not exist there, with their
 * asynchronous waiters (the abandoned engine's: engine.c), and starts with fresh waiters.
 */
void posh_cache_atfork_prepare(posh_cache *c)
{
    pthread_mutex_lock(&c->lock);
}

void posh_cache_atfork_parent(posh_cache *c)
{
    pthread_mutex_unlock(&c->lock);
}

void posh_cache_atfork_child(posh_cache *c)
{
    for (entry *e = c->lru.next; e != &c->lru;) {
        entry *next = e->next;
        if (e->pending)
            remove_entry(c, e);
        e = next;
    }
    pthread_cond_init(&c->filled, NULL);
    pthread_mutex_unlock(&c->lock);
}

size_t posh_cache_count(posh_cache *c)
{
    size_t n;
    pthread_mutex_lock(&c->lock);
    n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void posh_cache_free(posh_cache *c)
{
    if (c == NULL)
        return;
    for (entry *e = c->lru.next; e != &c->lru;) {
        entry *next = e->next;
        drop_result(e->result);
        free(e->key);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->filled);
    free(c->buckets);
    free(c);
}
