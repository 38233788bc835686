/*
 * engine.c - non-blocking lookups: one thread per client drives every lookup in flight through libcurl's multi
 * interface (many transfers, one thread), with the same steps as a blocking lookup (posh_run, lookup.c), the
 * same caches and the same single flight (posh_cache_begin/complete, cache.c).
 *
 * A job is one asynchronous request for (domain, service): posh_lookup_async(), posh_prefetch() or a handshake
 * waiting in non-blocking mode (a posh_wait, which the SSL holds). It either finds the answer fresh in the
 * cache, waits for a fill in flight (anyone's: a blocking thread's or another job's), or owns the fill and runs
 * the lookup itself. Every job ends by delivering exactly once: a callback, or a wait made readable.
 *
 * Threads and locks. Jobs belong to the engine thread: only it starts, advances and ends them. Other threads
 * touch an engine only under its lock, to submit a job or to wake one whose cache fill completed (the cache's
 * waiter callback, which may run on any thread that completes a fill, the engine's own included); they then
 * wake the thread with curl_multi_wakeup(), still under the lock (the multi handle goes once the engine stopped).
 * The engine lock is a leaf: none of ours is taken while it is held, and the engine thread holds it only to move
 * jobs between lists.
 *
 * Lifetime. posh_client_free() closes the client and stops the thread: every job still in flight is delivered
 * POSH_ERR_CANCELLED and the cache entries it owned are released (a blocking waiter then fills them itself); the
 * engine never starts again for that client. Its memory stays until the client's last reference goes
 * (posh_engine_destroy): a thread holding the client (a handshake on a context given it) may still submit, and is
 * refused with POSH_ERR_CANCELLED, or complete a fill that a cancelled job was waiting for, and finds the job
 * orphaned (job_wake frees it). At exit() an atexit
 * handler, registered once libcurl (and so OpenSSL) is initialised so that it runs before OpenSSL's own
 * cleanup, stops every engine thread without delivering anything. In the child of fork() the engine is
 * abandoned (its thread does not exist there; its transfers' connections belong to the parent): its waits are
 * failed with POSH_ERR_CANCELLED on descriptors of the child's own, its callbacks are never called, and the
 * child's next asynchronous request starts a new engine.
 */
#include "client_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#define KEY_LEN (POSH_MAX_DOMAIN_LEN + 2 * POSH_MAX_SERVICE_LEN + 8)

/* A handshake waiting for a lookup (verify.c holds one reference, the job the other). */
struct posh_wait {
    atomic_int refs;
    int fd;                        /* eventfd: readable once done */
    atomic_bool done;
    posh_result *result;           /* written before done is set; taken by posh_wait_take */
    posh_err err;
    posh_lookup_kind kind;
    char domain[POSH_MAX_DOMAIN_LEN + 2];
    char service[2 * POSH_MAX_SERVICE_LEN + 4];
};

typedef enum job_state {
    JOB_NEW,
    JOB_WAIT_DOMAIN,               /* another caller's fill of the domain's entry is in flight */
    JOB_QUEUED,                    /* owns the domain's entry, waits for a transfer (posh_engine.queue) */
    JOB_SOURCE,                    /* fetching a source document */
    JOB_WAIT_TARGET,               /* another caller's fill of the reference target is in flight */
    JOB_TARGET,                    /* fetching the reference target */
    JOB_DELEGATION                 /* fetching a delegation document */
} job_state;

/*
 * What a job needs to fetch (about 8 KiB), apart from the job so that the many that only wait (for another's
 * lookup, or in line for a transfer) stay small: 10000 waiting handshakes hold a few MiB, not 80.
 */
typedef struct job_work {
    posh_run run;
    bool running;                  /* run is initialised */
    posh_fetch_op op;
    posh_lookup_state tst;         /* the target's (or the delegation document's) fetch: trace and message */
    bool tst_live;                 /* tst is initialised */
    char deleg_url[POSH_MAX_URL_LEN + 1];
    time_t t_started;
    int64_t t_started_wall;
    int target_tries;
} job_work;

typedef struct job {
    struct job *prev, *next;       /* the engine's jobs (under its lock) */
    struct job *queue_next;        /* incoming or woken (under its lock) */
    bool queued;
    posh_engine *engine;
    posh_lookup_kind kind;
    posh_cache *cache;             /* the kind's cache (the client's POSH results or delegations) */
    char key[KEY_LEN];
    char domain[POSH_MAX_DOMAIN_LEN + 2];
    char svc[POSH_MAX_SERVICE_LEN + 1];
    char proto[POSH_MAX_SERVICE_LEN + 1];
    /* delivery: exactly one of these, or neither (a prefetch) */
    posh_lookup_callback cb;
    void *cb_arg;
    posh_wait *wait;
    /* progress (engine thread only) */
    job_state state;
    bool owner;                    /* owns the domain's cache entry: must complete it */
    bool target_owner;             /* owns the target's entry (run.src.url) */
    bool has_transfer;             /* counts in posh_engine.transfers (holds curl) */
    struct job *queue_later;       /* JOB_QUEUED: the next in line */
    int64_t queued_ms;             /* JOB_QUEUED: since when (posh_now_ms) */
    job_work *work;                /* the fetching state, from the job's turn to fetch (job_go) on */
    CURL *curl;
    bool in_multi;
    posh_cache_waiter waiter;
    /*
     * The waiter is linked to a cache entry (set before posh_cache_begin; cleared by job_wake, under the lock). A job
     * cancelled while it is linked, to a fill a blocking thread owns, becomes an orphan: delivered at once, freed by
     * whichever of job_wake and its delivery ends last (holds).
     */
    bool waiter_linked;
    bool orphan;
    atomic_int holds;
    posh_result *woken;            /* what the fill we waited for produced (set by the waiter, under the lock) */
    posh_err done_err;             /* a delivered callback job: what its callback gets, once the pass is over */
    posh_result *done_result;
} job;

struct posh_engine {
    posh_client *client;
    pthread_mutex_t lock;
    /*
     * Held by the engine thread for each pass (everything but the wait in curl_multi_poll): the pass runs libcurl
     * and OpenSSL, whose internal locks a fork() in the middle of it would leave taken in the child. The fork
     * handlers take it, so a fork happens between passes only.
     */
    pthread_mutex_t work;
    pthread_cond_t go;             /* the thread starts work once the engine is registered (fork handlers see it) */
    bool registered;
    pthread_t thread;
    CURLM *multi;
    bool stop;                     /* posh_client_free: cancel everything, deliver, end; submissions refused */
    bool joined;                   /* stopped and its thread joined: only the memory is left (posh_engine_destroy) */
    bool quit;                     /* exit(): end at once */
    job jobs;                      /* sentinel of every job not yet delivered */
    job *incoming;                 /* submitted, not started */
    job *woken;                    /* their fill completed */
    job *delivered;                /* callback jobs done in this pass: called after it, outside every lock */
    size_t n_async;                /* jobs for posh_lookup_async / posh_prefetch (handshakes' waits: n_waiting) */
    /* Transfers (engine thread only): jobs fetching at once, at most max_transfers; the rest wait in line. */
    size_t transfers, max_transfers;
    job *queue, *queue_last;       /* JOB_QUEUED jobs, oldest first */
    atomic_long n_waiting;
    struct posh_engine *next_engine;   /* every running engine, for exit() */
};

static _Thread_local posh_engine *current_engine; /* the engine whose thread this is */

static pthread_mutex_t engines_lock = PTHREAD_MUTEX_INITIALIZER;
static posh_engine *engines;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

/* ---- waits ---- */

static void wait_unref(posh_wait *w)
{
    if (w == NULL || atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    close(w->fd);
    posh_result_free(w->result);
    free(w);
}

static void wait_deliver(posh_wait *w, posh_err err, posh_result *r)
{
    uint64_t one = 1;
    w->result = r;
    w->err = err;
    atomic_store_explicit(&w->done, true, memory_order_release);
    /* An eventfd write of 1 cannot fail short of a counter overflow, which one write per wait never reaches. */
    if (write(w->fd, &one, sizeof(one)) < 0)
        posh_log(POSH_LOG_ERROR, "non-blocking wait: eventfd write failed");
}

int posh_wait_fd(const posh_wait *w)
{
    return w->fd;
}

const char *posh_wait_domain(const posh_wait *w)
{
    return w->domain;
}

const char *posh_wait_service(const posh_wait *w)
{
    return w->service;
}

posh_lookup_kind posh_wait_kind(const posh_wait *w)
{
    return w->kind;
}

int posh_wait_take(posh_wait *w, posh_result **result, posh_err *err)
{
    if (!atomic_load_explicit(&w->done, memory_order_acquire))
        return 0;
    *result = w->result;
    *err = w->err;
    w->result = NULL;
    return 1;
}

void posh_wait_release(posh_wait *w)
{
    wait_unref(w);
}

/* ---- delivery ---- */

/* A delivered job's memory: an orphan's goes when both its delivery and its cache waiter are done with it. */
static void job_free(job *j)
{
    if (j->orphan && atomic_fetch_sub(&j->holds, 1) != 1)
        return;
    free(j);
}

static void job_unlink(job *j)
{
    posh_engine *e = j->engine;
    pthread_mutex_lock(&e->lock);
    j->prev->next = j->next;
    j->next->prev = j->prev;
    if (j->wait == NULL)
        e->n_async--;
    pthread_mutex_unlock(&e->lock);
}

/* Hand r (owned; may be NULL) to whoever asked, once, and free the job. */
static void job_deliver(job *j, posh_err err, posh_result *r)
{
    job_unlink(j);
    free(j->work); /* its run and fetches are over (finished, or cleared by job_cancel) */
    j->work = NULL;
    if (j->cb != NULL) {
        /* Called once the pass is over (run_delivered): a callback never runs under the engine's work lock. */
        j->done_err = err;
        j->done_result = r;
        j->queue_next = j->engine->delivered;
        j->engine->delivered = j;
        return;
    } else if (j->wait != NULL) {
        /* No longer waiting for a lookup (the descriptor is the SSL's until it retries or is freed). */
        atomic_fetch_sub(&j->engine->n_waiting, 1);
        wait_deliver(j->wait, err, r);
    } else {
        posh_result_free(r);
    }
    wait_unref(j->wait);
    job_free(j);
}

static void job_release_curl(job *j)
{
    if (j->in_multi) {
        curl_multi_remove_handle(j->engine->multi, j->curl);
        j->in_multi = false;
    }
    if (j->work != NULL)
        posh_fetch_op_clear(&j->work->op);
    if (j->curl != NULL)
        curl_easy_setopt(j->curl, CURLOPT_PRIVATE, NULL);
    posh_client_handle_put(j->engine->client, j->curl);
    j->curl = NULL;
    if (j->has_transfer) {
        j->has_transfer = false;
        j->engine->transfers--;
    }
}

/* The domain's lookup is over: r (owned; NULL when out of memory) goes to the cache (if ours) and to the job. */
static void job_finish(job *j, posh_result *r)
{
    job_release_curl(j);
    if (j->owner)
        posh_cache_complete(j->cache, j->key, r);
    job_deliver(j, posh_lookup_outcome(&r), r);
}

/* ---- the steps ---- */

static void source_next(job *j);
static void target_begin(job *j);

/*
 * A waiter callback: any thread that completes a fill we wait for. The wakeup is made under the lock, which
 * posh_engine_stop takes to retire the multi handle once the thread has ended.
 */
static void job_wake(void *arg, posh_result *r)
{
    job *j = arg;
    posh_engine *e = j->engine;
    pthread_mutex_lock(&e->lock);
    if (j->orphan) {
        /* Cancelled by posh_client_free while we waited (a blocking thread owned the fill): nobody wants r. */
        pthread_mutex_unlock(&e->lock);
        posh_result_free(r);
        job_free(j);
        return;
    }
    j->waiter_linked = false;
    j->woken = r;
    j->queue_next = e->woken;
    e->woken = j;
    j->queued = true;
    if (e->multi != NULL)
        curl_multi_wakeup(e->multi);
    pthread_mutex_unlock(&e->lock);
}

/* Start (or continue after a redirect) the transfer the op has set curl up for. */
static bool transfer_add(job *j)
{
    if (curl_multi_add_handle(j->engine->multi, j->curl) != CURLM_OK)
        return false;
    j->in_multi = true;
    return true;
}

/*
 * Begin fetching url (which must outlive the transfer) into st's trace and message, within deadline_ms, on the
 * job's handle: POSH_OK once the transfer runs, else the error (st's message says why).
 */
static posh_err transfer_start(job *j, const char *url, int64_t deadline_ms, posh_lookup_state *st)
{
    posh_err err = posh_fetch_begin(&j->work->op, j->curl, j->engine->client->cfg, url, deadline_ms, &st->trace,
                                    st->message, sizeof(st->message));
    if (err != POSH_OK || transfer_add(j))
        return err;
    posh_fetch_op_clear(&j->work->op);
    posh_msg(st->message, sizeof(st->message), "%s: the transfer engine refused the request", url);
    return POSH_ERR_INTERNAL;
}

static void source_done(job *j, posh_err err, posh_fetch_result *fr)
{
    switch (posh_run_source_done(&j->work->run, err, fr)) {
    case POSH_RUN_NEXT_SOURCE:
        source_next(j);
        return;
    case POSH_RUN_TARGET:
        target_begin(j);
        return;
    case POSH_RUN_FINISH:
        break;
    }
    job_finish(j, posh_run_finish(&j->work->run));
}

static void source_next(job *j)
{
    posh_fetch_result fr = {0};
    const char *url = posh_run_next_source(&j->work->run);
    posh_err err;

    if (url == NULL) {
        job_finish(j, posh_run_finish(&j->work->run));
        return;
    }
    j->state = JOB_SOURCE;
    if ((err = transfer_start(j, url, j->work->run.deadline_ms, &j->work->run.st)) != POSH_OK)
        source_done(j, err, &fr);
}

static void target_got(job *j, posh_result *target, bool ran)
{
    if (posh_run_target_retry(&j->work->run, target, ran, j->work->target_tries++)) {
        posh_result_free(target);
        target_begin(j);
        return;
    }
    posh_run_target_done(&j->work->run, target, ran);
    job_finish(j, posh_run_finish(&j->work->run));
}

/* The target fetch ended: its result for the URL cache, then for this lookup. */
static void target_done(job *j, posh_err err, posh_fetch_result *fr)
{
    posh_client *c = j->engine->client;
    job_work *w = j->work;
    posh_result *tr = posh_target_result(c, w->run.src.url, w->t_started, w->t_started_wall, err, fr, &w->tst);
    posh_lookup_state_clear(&w->tst);
    w->tst_live = false;
    j->target_owner = false;
    posh_cache_complete(c->targets, w->run.src.url, tr);
    target_got(j, tr, true);
}

static void target_begin(job *j)
{
    posh_client *c = j->engine->client;
    posh_result *tr = NULL;
    posh_fetch_result fr = {0};
    posh_cache_begin_result begun;
    posh_err err;

    j->waiter = (posh_cache_waiter){.fn = job_wake, .arg = j};
    /* Before the link: the fill may complete on another thread before posh_cache_begin returns. */
    j->waiter_linked = true;
    begun = posh_cache_begin(c->targets, j->work->run.src.url, posh_config_now(c->cfg), &tr, &j->waiter);
    if (begun != POSH_CACHE_WAIT) /* nothing linked: no other thread knows of j (with WAIT, job_wake may have run) */
        j->waiter_linked = false;
    switch (begun) {
    case POSH_CACHE_FRESH:
        target_got(j, tr, false);
        return;
    case POSH_CACHE_WAIT:
        j->state = JOB_WAIT_TARGET;
        return;
    case POSH_CACHE_NOMEM:
        target_got(j, NULL, false);
        return;
    case POSH_CACHE_OWNER:
        break;
    }
    j->target_owner = true;
    j->state = JOB_TARGET;
    j->work->t_started = posh_config_now(c->cfg);
    j->work->t_started_wall = posh_config_wall_now(c->cfg);
    posh_lookup_state_init(&j->work->tst, c->store != NULL);
    j->work->tst_live = true;
    if ((err = transfer_start(j, j->work->run.src.url, j->work->run.deadline_ms, &j->work->tst)) != POSH_OK)
        target_done(j, err, &fr);
}

/* The delegation document's fetch ended. */
static void delegation_done(job *j, posh_err err, posh_fetch_result *fr)
{
    posh_client *c = j->engine->client;
    char service[2 * POSH_MAX_SERVICE_LEN + 4];
    posh_result *r;

    snprintf(service, sizeof(service), "_%s._%s", j->svc, j->proto);
    r = posh_delegation_result(c, j->domain, service, j->work->t_started, err, fr, &j->work->tst);
    posh_lookup_state_clear(&j->work->tst);
    j->work->tst_live = false;
    job_finish(j, r);
}

/* The one request of a delegation lookup (the job owns its cache entry and has a handle). */
static void delegation_begin(job *j)
{
    posh_client *c = j->engine->client;
    char url[POSH_MAX_URL_LEN + 1];
    posh_fetch_result fr = {0};
    posh_err err = POSH_ERR_BAD_DOMAIN;

    j->state = JOB_DELEGATION;
    j->work->t_started = posh_config_now(c->cfg);
    posh_lookup_state_init(&j->work->tst, false);
    j->work->tst_live = true;
    if (posh_delegation_url(j->domain, j->svc, url, sizeof(url)) != NULL) {
        /* The op keeps a pointer to the URL: the job's own copy, which lives as long as the transfer. */
        snprintf(j->work->deleg_url, sizeof(j->work->deleg_url), "%s", url);
        if ((err = transfer_start(j, j->work->deleg_url, posh_now_ms() + c->cfg->timeout_ms, &j->work->tst)) == POSH_OK)
            return;
    }
    delegation_done(j, err, &fr);
}

/* A transfer of this job ended with rc. */
static void transfer_done(job *j, CURLcode rc)
{
    posh_fetch_result fr;
    posh_err err;

    curl_multi_remove_handle(j->engine->multi, j->curl);
    j->in_multi = false;
    if (!posh_fetch_step(&j->work->op, rc, &fr, &err)) {
        /* A redirect: the next hop is set up on the same handle. */
        if (transfer_add(j))
            return;
        posh_fetch_op_clear(&j->work->op);
        err = POSH_ERR_INTERNAL;
        memset(&fr, 0, sizeof(fr));
    }
    if (j->state == JOB_TARGET)
        target_done(j, err, &fr);
    else if (j->state == JOB_DELEGATION)
        delegation_done(j, err, &fr);
    else
        source_done(j, err, &fr);
}

/* A lookup that owns its cache entry ends before any request: err, with why (NULL: none) as its message. */
static void job_fail(job *j, posh_err err, const char *why)
{
    posh_client *c = j->engine->client;
    if (j->work == NULL && (j->work = calloc(1, sizeof(*j->work))) == NULL) {
        job_finish(j, NULL);
        return;
    }
    if (j->kind == POSH_KIND_POSH) {
        posh_run_init(&j->work->run, c, j->domain, j->svc, j->proto);
        j->work->running = true;
        posh_run_fail(&j->work->run, err, why);
        job_finish(j, posh_run_finish(&j->work->run));
    } else {
        posh_fetch_result fr = {0};
        j->work->t_started = posh_config_now(c->cfg);
        posh_lookup_state_init(&j->work->tst, false);
        j->work->tst_live = true;
        posh_msg(j->work->tst.message, sizeof(j->work->tst.message), "%s", why != NULL ? why : "");
        delegation_done(j, err, &fr);
    }
}

/* The owner of a domain's entry takes a transfer and makes its first request. */
static void job_go(job *j)
{
    posh_client *c = j->engine->client;
    const char *why;

    if ((j->work = calloc(1, sizeof(*j->work))) == NULL) {
        job_finish(j, NULL); /* out of memory: the entry is released, the caller gets POSH_ERR_NOMEM */
        return;
    }
    if ((j->curl = posh_client_handle_get(c)) == NULL) {
        why = posh_client_curl_problem();
        job_fail(j, why != NULL ? POSH_ERR_INTERNAL : POSH_ERR_NOMEM, why);
        return;
    }
    j->has_transfer = true;
    j->engine->transfers++;
    curl_easy_setopt(j->curl, CURLOPT_PRIVATE, (void *)j);
    if (j->kind == POSH_KIND_DELEGATION) {
        delegation_begin(j);
        return;
    }
    posh_run_init(&j->work->run, c, j->domain, j->svc, j->proto);
    j->work->running = true;
    source_next(j);
}

static void job_start(job *j)
{
    posh_engine *e = j->engine;
    posh_client *c = e->client;
    posh_result *r = NULL;
    posh_cache_begin_result begun;

    j->waiter = (posh_cache_waiter){.fn = job_wake, .arg = j};
    j->waiter_linked = true; /* before the link, as in target_begin */
    begun = posh_cache_begin(j->cache, j->key, posh_config_now(c->cfg), &r, &j->waiter);
    if (begun != POSH_CACHE_WAIT)
        j->waiter_linked = false;
    switch (begun) {
    case POSH_CACHE_FRESH:
        job_deliver(j, posh_lookup_outcome(&r), r);
        return;
    case POSH_CACHE_WAIT:
        j->state = JOB_WAIT_DOMAIN;
        return;
    case POSH_CACHE_NOMEM:
        job_deliver(j, POSH_ERR_NOMEM, NULL);
        return;
    case POSH_CACHE_OWNER:
        break;
    }
    j->owner = true;
    /* A memory miss: the persistent cache's entry if it is sound and fresh (a small local read), else fetch. */
    if (j->kind == POSH_KIND_POSH && c->store != NULL) {
        char service[2 * POSH_MAX_SERVICE_LEN + 4];
        snprintf(service, sizeof(service), "_%s._%s", j->svc, j->proto);
        if ((r = posh_store_load(c, j->domain, service)) != NULL) {
            job_finish(j, r);
            return;
        }
    }
    if (e->transfers < e->max_transfers && e->queue == NULL) {
        job_go(j);
        return;
    }
    /* Every transfer is taken: wait in line (queue_admit starts it, or fails it once it has waited too long). */
    j->state = JOB_QUEUED;
    j->queued_ms = posh_now_ms();
    j->queue_later = NULL;
    if (e->queue_last != NULL)
        e->queue_last->queue_later = j;
    else
        e->queue = j;
    e->queue_last = j;
}

/* Waiting in line longer than the timeout: fail with BUSY, never cached (the web server was not even asked). */
static void queue_expire(job *j)
{
    char why[POSH_MSG_LEN];
    posh_engine *e = j->engine;
    posh_msg(why, sizeof(why),
             "no HTTPS transfer became free within %ld ms (%zu run at once: POSH_ASYNC_TRANSFERS); nothing was "
             "fetched",
             e->client->cfg->timeout_ms, e->max_transfers);
    job_fail(j, POSH_ERR_BUSY, why);
}

/* Start the jobs in line while transfers are free; fail those that waited past the timeout. */
static void queue_admit(posh_engine *e)
{
    int64_t now = posh_now_ms();
    while (e->queue != NULL) {
        job *j = e->queue;
        bool expired = now - j->queued_ms >= e->client->cfg->timeout_ms;
        if (!expired && e->transfers >= e->max_transfers)
            return; /* in order: nobody behind the first has waited longer */
        if ((e->queue = j->queue_later) == NULL)
            e->queue_last = NULL;
        j->queue_later = NULL;
        if (expired)
            queue_expire(j);
        else
            job_go(j);
    }
}

/* How long the engine may sleep before the first in line has waited the whole timeout (at most max_ms). */
static int queue_sleep_ms(const posh_engine *e, int max_ms)
{
    int64_t left;
    if (e->queue == NULL)
        return max_ms;
    left = e->queue->queued_ms + e->client->cfg->timeout_ms - posh_now_ms();
    return left <= 0 ? 0 : left < max_ms ? (int)left : max_ms;
}

static void job_resume(job *j)
{
    posh_result *r = j->woken;
    j->woken = NULL;
    if (j->state == JOB_WAIT_TARGET)
        target_got(j, r, false);
    else
        job_deliver(j, posh_lookup_outcome(&r), r); /* the fill we waited for (JOB_WAIT_DOMAIN) */
}

/* posh_client_free: end a job without its answer. Owned entries are released for the next caller to fill. */
static void job_cancel(job *j)
{
    posh_engine *e = j->engine;
    posh_client *c = e->client;
    pthread_mutex_lock(&e->lock);
    if (j->waiter_linked) {
        /* A blocking thread owns the fill we wait for and will call job_wake(j) when it ends: j outlives us. */
        j->orphan = true;
        atomic_init(&j->holds, 2);
    }
    pthread_mutex_unlock(&e->lock);
    if (j->target_owner) /* only a job with work fetches a target */
        posh_cache_complete(c->targets, j->work->run.src.url, NULL);
    if (j->work != NULL && j->work->tst_live)
        posh_lookup_state_clear(&j->work->tst);
    job_release_curl(j);
    if (j->work != NULL && j->work->running)
        posh_run_clear(&j->work->run);
    if (j->owner)
        posh_cache_complete(j->cache, j->key, NULL);
    posh_result_free(j->woken);
    j->woken = NULL;
    job_deliver(j, POSH_ERR_CANCELLED, NULL);
}

/* ---- the thread ---- */

/* The callbacks of the jobs delivered in the last pass, in delivery order, outside every lock; the jobs freed. */
static void run_delivered(posh_engine *e)
{
    job *j = e->delivered, *prev = NULL;
    e->delivered = NULL;
    while (j != NULL) { /* newest first: reverse */
        job *next = j->queue_next;
        j->queue_next = prev;
        prev = j;
        j = next;
    }
    for (j = prev; j != NULL;) {
        job *next = j->queue_next;
        j->cb(j->done_err, j->done_result, j->cb_arg);
        job_free(j);
        j = next;
    }
}

static job *reverse(job *list)
{
    job *prev = NULL;
    while (list != NULL) {
        job *next = list->queue_next;
        list->queue_next = prev;
        prev = list;
        list = next;
    }
    return prev;
}

typedef enum cancel_pass { OWNS_TARGET, OWNS_DOMAIN, ANY } cancel_pass;

/* The first job of the pass, or NULL. */
static job *first_job(posh_engine *e, cancel_pass pass)
{
    job *found = NULL;
    pthread_mutex_lock(&e->lock);
    for (job *j = e->jobs.next; j != &e->jobs && found == NULL; j = j->next)
        if (pass == ANY || (pass == OWNS_TARGET && j->target_owner) || (pass == OWNS_DOMAIN && j->owner))
            found = j;
    pthread_mutex_unlock(&e->lock);
    return found;
}

static void *engine_main(void *arg)
{
    posh_engine *e = arg;
    bool stop = false;

    current_engine = e;
    posh_verify_mark_lookup_thread(); /* the engine's own HTTPS fetches are never subject to POSH */
    pthread_mutex_lock(&e->lock);
    while (!e->registered && !e->stop && !e->quit)
        pthread_cond_wait(&e->go, &e->lock);
    pthread_mutex_unlock(&e->lock);
    for (;;) {
        job *in, *woken;
        CURLMsg *msg;
        int running, left;

        pthread_mutex_lock(&e->work);
        pthread_mutex_lock(&e->lock);
        if (e->quit) {
            pthread_mutex_unlock(&e->lock);
            pthread_mutex_unlock(&e->work);
            return NULL;
        }
        stop = e->stop;
        in = e->incoming;
        woken = e->woken;
        e->incoming = e->woken = NULL;
        for (job *j = in; j != NULL; j = j->queue_next)
            j->queued = false;
        for (job *j = woken; j != NULL; j = j->queue_next)
            j->queued = false;
        pthread_mutex_unlock(&e->lock);
        if (stop)
            break;
        in = reverse(in); /* the lists are newest first: start and resume in order */
        woken = reverse(woken);
        while (in != NULL) {
            job *next = in->queue_next;
            job_start(in);
            in = next;
        }
        while (woken != NULL) {
            job *next = woken->queue_next;
            job_resume(woken);
            woken = next;
        }
        queue_admit(e);
        curl_multi_perform(e->multi, &running);
        while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
            job *j = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            if (j != NULL)
                transfer_done(j, msg->data.result);
        }
        /* Transfers just freed go to the next in line now (a new transfer's timer makes the poll return). */
        queue_admit(e);
        /* The pass's transfers are serviced and the next ones started: now the lookups it ended go to disk. */
        posh_store_drain(e->client->store);
        pthread_mutex_unlock(&e->work);
        run_delivered(e);
        curl_multi_poll(e->multi, NULL, 0, queue_sleep_ms(e, 1000), NULL);
    }
    /*
     * Stopped by posh_client_free: every job not yet delivered is cancelled. A job waiting for a fill has its
     * waiter linked to that entry, so it must outlive the fill's owner: owners of a target entry go first
     * (they wait for nothing: they fetch), then owners of a domain entry (whose waits, on targets, are over
     * now), then everyone else. Releasing an entry wakes its waiters: queued, never resumed.
     */
    e->queue = e->queue_last = NULL; /* the jobs in line own their domain's entry: the second pass ends them */
    for (cancel_pass pass = OWNS_TARGET; pass <= ANY; pass++)
        for (job *j; (j = first_job(e, pass)) != NULL;)
            job_cancel(j);
    posh_store_drain(e->client->store); /* lookups that ended in the last pass are still worth keeping */
    pthread_mutex_unlock(&e->work);
    run_delivered(e);
    return NULL;
}

/* exit(): stop every engine thread before OpenSSL's and libcurl's own cleanup, delivering nothing. */
static void engines_quit(void)
{
    posh_engine *list;
    /* Taken off the list first: the lock is not held while threads are joined (a callback may start an engine). */
    pthread_mutex_lock(&engines_lock);
    list = engines;
    engines = NULL;
    pthread_mutex_unlock(&engines_lock);
    for (posh_engine *e = list; e != NULL; e = e->next_engine) {
        if (current_engine == e)
            continue; /* exit() from a callback: this very thread cannot be joined; its loop never resumes */
        pthread_mutex_lock(&e->lock);
        e->quit = true;
        pthread_cond_broadcast(&e->go);
        pthread_mutex_unlock(&e->lock);
        curl_multi_wakeup(e->multi);
        pthread_join(e->thread, NULL);
    }
}

static void atexit_init(void)
{
    atexit(engines_quit);
}

/*
 * The bound on transfers at once: the configured one, or a quarter of the descriptors this process may open (each
 * transfer holds a socket; the application's own connections need the rest), between 4 and 256.
 */
static size_t max_transfers(const posh_config *cfg)
{
    struct rlimit rl;
    if (cfg->async_transfers > 0)
        return (size_t)cfg->async_transfers;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur / 4 >= 256)
        return 256;
    return rl.rlim_cur / 4 < 4 ? 4 : (size_t)(rl.rlim_cur / 4);
}

static posh_engine *engine_new(posh_client *c)
{
    posh_engine *e;
    /* libcurl (and with it OpenSSL) first: their exit handlers must run after ours (atexit is last in, first out). */
    if (posh_client_curl_problem() != NULL)
        return NULL;
    pthread_once(&atexit_once, atexit_init);
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return NULL;
    e->client = c;
    e->jobs.next = e->jobs.prev = &e->jobs;
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->work, NULL);
    pthread_cond_init(&e->go, NULL);
    e->max_transfers = max_transfers(c->cfg);
    if ((e->multi = curl_multi_init()) == NULL)
        goto fail;
    /* Idle connections kept for reuse hold sockets too: no more of them than transfers at once. */
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->max_transfers);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        goto fail;
    return e;
fail:
    if (e->multi != NULL)
        curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->work);
    pthread_cond_destroy(&e->go);
    free(e);
    return NULL;
}

/*
 * The client's engine, started on first use: POSH_OK with *out, or why there is none: POSH_ERR_CANCELLED once the
 * client is closed (posh_client_free: never a new engine), POSH_ERR_INTERNAL (libcurl unusable), POSH_ERR_NOMEM.
 */
static posh_err engine_get(posh_client *c, posh_engine **out)
{
    posh_engine *e;
    posh_err err = POSH_OK;

    pthread_mutex_lock(&c->engine_lock);
    e = c->engine;
    pthread_mutex_unlock(&c->engine_lock);
    /* After the lock: posh_client_free closes the client before it takes the lock to stop the engine. */
    if (posh_client_closed(c))
        return POSH_ERR_CANCELLED;
    if ((*out = e) != NULL)
        return POSH_OK;
    /*
     * Created and registered under both locks, in the fork handlers' order (engines_lock, then the client's), so
     * that posh_engine_stop finds either no engine or a registered one, and none is made after it looked.
     */
    pthread_mutex_lock(&engines_lock);
    pthread_mutex_lock(&c->engine_lock);
    if (posh_client_closed(c)) {
        err = POSH_ERR_CANCELLED;
    } else if ((e = c->engine) == NULL) {
        if ((e = engine_new(c)) == NULL) {
            err = posh_client_curl_problem() != NULL ? POSH_ERR_INTERNAL : POSH_ERR_NOMEM;
        } else {
            c->engine = e;
            e->next_engine = engines;
            engines = e;
            /* Registered: the fork handlers take its work lock from now on, so its thread may begin. */
            pthread_mutex_lock(&e->lock);
            e->registered = true;
            pthread_cond_broadcast(&e->go);
            pthread_mutex_unlock(&e->lock);
        }
    }
    pthread_mutex_unlock(&c->engine_lock);
    pthread_mutex_unlock(&engines_lock);
    *out = err == POSH_OK ? e : NULL;
    return err;
}

void posh_engine_stop(posh_client *c)
{
    posh_engine *e;
    CURLM *multi;

    pthread_mutex_lock(&engines_lock);
    pthread_mutex_lock(&c->engine_lock);
    if ((e = c->engine) != NULL) {
        for (posh_engine **p = &engines; *p != NULL; p = &(*p)->next_engine) {
            if (*p == e) {
                *p = e->next_engine;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->engine_lock);
    pthread_mutex_unlock(&engines_lock);
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    e->stop = true; /* from now on submit() refuses: nothing is queued that the thread would not cancel */
    pthread_cond_broadcast(&e->go);
    curl_multi_wakeup(e->multi);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    /*
     * Jobs submitted but never started were cancelled by the thread too (they are in e->jobs). The multi handle
     * (and the connections it keeps) goes now; every wakeup is made under the lock and only while it exists.
     */
    pthread_mutex_lock(&e->lock);
    multi = e->multi;
    e->multi = NULL;
    e->joined = true;
    pthread_mutex_unlock(&e->lock);
    curl_multi_cleanup(multi);
}

void posh_engine_destroy(posh_client *c)
{
    posh_engine *e = c->engine;
    if (e == NULL)
        return;
    /* Stopped by posh_client_free (the last reference goes only after it): no thread, no job but orphans freed. */
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->work);
    pthread_cond_destroy(&e->go);
    c->engine = NULL;
    free(e);
}

/* ---- submitting ---- */

static posh_err submit(posh_client *c, posh_lookup_kind kind, const char *dom, const char *svc, const char *proto,
                       posh_lookup_callback cb, void *arg, posh_wait *w)
{
    posh_engine *e;
    posh_err err;
    job *j;

    if ((err = engine_get(c, &e)) != POSH_OK)
        return err;
    if ((j = calloc(1, sizeof(*j))) == NULL)
        return POSH_ERR_NOMEM;
    j->engine = e;
    j->kind = kind;
    j->cache = kind == POSH_KIND_DELEGATION ? posh_client_delegation_cache(c) : posh_client_posh_cache(c);
    snprintf(j->domain, sizeof(j->domain), "%s", dom);
    snprintf(j->svc, sizeof(j->svc), "%s", svc);
    snprintf(j->proto, sizeof(j->proto), "%s", proto);
    snprintf(j->key, sizeof(j->key), "%s _%s._%s", dom, svc, proto);
    j->cb = cb;
    j->cb_arg = arg;
    j->wait = w;
    pthread_mutex_lock(&e->lock);
    if (e->stop || (w == NULL && e->n_async >= (size_t)c->cfg->async_lookups)) {
        /* Stopped: the client was freed while this thread held it (posh_client_free), and never restarts. */
        err = e->stop ? POSH_ERR_CANCELLED : POSH_ERR_BUSY;
        pthread_mutex_unlock(&e->lock);
        free(j);
        return err;
    }
    j->next = e->jobs.next;
    j->prev = &e->jobs;
    e->jobs.next->prev = j;
    e->jobs.next = j;
    if (w == NULL)
        e->n_async++;
    j->queue_next = e->incoming;
    e->incoming = j;
    j->queued = true;
    curl_multi_wakeup(e->multi); /* not stopped, so the multi handle exists (posh_engine_stop) */
    pthread_mutex_unlock(&e->lock);
    return POSH_OK;
}

bool posh_engine_is_current_thread(const posh_client *c)
{
    return current_engine != NULL && (c == NULL || current_engine->client == c);
}

posh_err posh_engine_submit(posh_client *c, const char *dom, const char *svc, const char *proto,
                            posh_lookup_callback cb, void *arg)
{
    return submit(c, POSH_KIND_POSH, dom, svc, proto, cb, arg, NULL);
}

posh_err posh_wait_start(posh_client *c, posh_lookup_kind kind, const char *dom, const char *svc, const char *proto,
                         posh_wait **out)
{
    posh_engine *e;
    posh_wait *w;
    posh_err err;

    *out = NULL;
    if ((err = engine_get(c, &e)) != POSH_OK)
        return err;
    if (atomic_fetch_add(&e->n_waiting, 1) >= c->cfg->async_waiting) {
        atomic_fetch_sub(&e->n_waiting, 1);
        return POSH_ERR_BUSY;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL) {
        atomic_fetch_sub(&e->n_waiting, 1);
        return POSH_ERR_NOMEM;
    }
    w->kind = kind;
    snprintf(w->domain, sizeof(w->domain), "%s", dom);
    snprintf(w->service, sizeof(w->service), "_%s._%s", svc, proto);
    atomic_init(&w->refs, 2);
    if ((w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        free(w);
        atomic_fetch_sub(&e->n_waiting, 1);
        return errno == ENOMEM ? POSH_ERR_NOMEM : POSH_ERR_BUSY; /* out of descriptors */
    }
    if ((err = submit(c, kind, dom, svc, proto, NULL, NULL, w)) != POSH_OK) {
        atomic_fetch_sub(&e->n_waiting, 1);
        atomic_init(&w->refs, 1);
        wait_unref(w);
        return err;
    }
    *out = w;
    return POSH_OK;
}

/* ---- fork ---- */

/* Every engine between two passes: no engine thread is inside libcurl or OpenSSL at the fork. */
void posh_engine_atfork_prepare_all(void)
{
    pthread_mutex_lock(&engines_lock);
    for (posh_engine *e = engines; e != NULL; e = e->next_engine)
        pthread_mutex_lock(&e->work);
}

void posh_engine_atfork_parent_all(void)
{
    for (posh_engine *e = engines; e != NULL; e = e->next_engine)
        pthread_mutex_unlock(&e->work);
    pthread_mutex_unlock(&engines_lock);
}

void posh_engine_atfork_child_all(void)
{
    engines = NULL; /* no engine thread exists in the child: exit() has none to stop; their locks stay taken */
    pthread_mutex_unlock(&engines_lock);
}

void posh_engine_atfork_prepare(posh_client *c)
{
    pthread_mutex_lock(&c->engine_lock);
    if (c->engine != NULL)
        pthread_mutex_lock(&c->engine->lock);
}

void posh_engine_atfork_parent(posh_client *c)
{
    if (c->engine != NULL)
        pthread_mutex_unlock(&c->engine->lock);
    pthread_mutex_unlock(&c->engine_lock);
}

/*
 * The child: the engine thread does not exist here and its transfers' connections are the parent's, so the
 * engine is abandoned as it is (never cleaned up: that would close the parent's TLS streams). Waiting
 * handshakes fail closed: each wait gets an eventfd of the child's own on the same descriptor number (the
 * inherited one is shared with the parent, which still waits on it), made readable. Callbacks are not called.
 */
void posh_engine_atfork_child(posh_client *c)
{
    posh_engine *e = c->engine;
    if (e != NULL && e->joined) {
        /* A freed client's stopped engine (memory only, no thread): kept for posh_engine_destroy. */
        pthread_mutex_unlock(&e->lock);
    } else if (e != NULL) {
        for (job *j = e->jobs.next; j != &e->jobs; j = j->next) {
            posh_wait *w = j->wait;
            int fd;
            if (w == NULL || atomic_load(&w->done))
                continue;
            if ((fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0) {
                dup3(fd, w->fd, O_CLOEXEC);
                close(fd);
            }
            wait_deliver(w, POSH_ERR_CANCELLED, NULL);
        }
        c->engine = NULL; /* its lock stays taken: nobody in this process uses that engine again */
    }
    pthread_mutex_unlock(&c->engine_lock);
}
