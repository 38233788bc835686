/*
 * client_internal.h - configuration, logging, fetching, caching and result internals shared by libposh's files.
 */
#ifndef POSH_CLIENT_INTERNAL_H
#define POSH_CLIENT_INTERNAL_H

#include "posh_internal.h"

#include <curl/curl.h>
#include <stdatomic.h>

/* ---- configuration (config.c) ---- */
struct posh_config {
    char *ca_file;
    char *ca_path;
    char *connect_to;          /* comma-separated curl --connect-to entries, or NULL */
    long timeout_ms;
    long max_redirects;
    long max_bytes;
    long max_ttl;
    long negative_ttl;
    long cache_size;
    long async_lookups;        /* the engine's bounds (engine.c) */
    int delegation;            /* POSH_DELEGATION: every context of the client also accepts delegation */
    long async_waiting;
    long async_transfers;      /* 0: from RLIMIT_NOFILE when the engine starts (engine.c) */
    posh_mode mode;
    int no_sha1;
    unsigned layouts;
    unsigned formats;          /* POSH_FORMAT_* accepted */
    time_t (*now)(void *arg);
    void *now_arg;
    char *cache_dir;           /* the persistent cache directory, or NULL */
    time_t (*wall_now)(void *arg);  /* the persistent cache's clock: wall-clock seconds (time(NULL)) */
    void *wall_now_arg;
    char error[POSH_MSG_LEN];
};

/* Deep copy of src into a new config (NULL when out of memory). */
posh_config *posh_config_dup(const posh_config *src);
/* Parse a --connect-to list into a curl list. POSH_ERR_CONFIG with msg when malformed. */
posh_err posh_connect_to_parse(const char *list, struct curl_slist **out, char *msg, size_t msglen);
/* The config's clock. */
time_t posh_config_now(const posh_config *cfg);
/*
 * The persistent cache's clock: wall-clock seconds, time(NULL) unless a test sets another (NULL restores it).
 * Separate from posh_config_set_clock, which may be monotonic: an entry written by one process is judged by
 * another, and only the wall clock is shared between them.
 */
time_t posh_config_wall_now(const posh_config *cfg);
void posh_config_set_wall_clock(posh_config *cfg, time_t (*now)(void *arg), void *arg);

/*
 * The one way libposh reads a POSH_* variable: secure_getenv(), so that a privileged process (setuid, setgid,
 * file capabilities: AT_SECURE) ignores a caller's POSH_* environment and keeps the defaults, as OpenSSL does
 * for SSL_CERT_FILE. The first time a variable that is set is ignored, one warning names the POSH_* variables
 * present (once per process).
 */
const char *posh_getenv(const char *name);
/* The same rule without the warning, for the log module: the warning is written through it (no recursion). */
const char *posh_getenv_quiet(const char *name);

/* ---- logging (log.c): configured from POSH_LOG / POSH_LOG_LEVEL once per process ---- */
typedef enum posh_log_level { POSH_LOG_ERROR = 0, POSH_LOG_WARNING, POSH_LOG_INFO, POSH_LOG_DEBUG } posh_log_level;
/* Validate the logging environment; POSH_ERR_CONFIG with a message in msg when invalid. */
posh_err posh_log_check_env(char *msg, size_t msglen);
void posh_log(posh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- one HTTPS GET under POSH rules (fetch.c) ---- */
typedef struct posh_request {
    char *url;
    long status;               /* HTTP status, 0 if no response */
} posh_request;

typedef struct posh_trace {
    posh_request req[POSH_MAX_REQUESTS];
    size_t n;
} posh_trace;

typedef struct posh_fetch_result {
    long status;               /* final status after redirects (2xx or 4xx when POSH_OK) */
    long max_age;              /* the final response's Cache-Control: max-age (0 for no-cache, no-store), or -1 */
    char *body;                /* malloc'd, NUL-terminated, body_len bytes before the NUL */
    size_t body_len;
    char *final_url;           /* malloc'd */
    char *content_type;        /* the final response's Content-Type (malloc'd), or NULL when it had none */
} posh_fetch_result;

/*
 * GET url following at most cfg->max_redirects https:// redirects, within the absolute monotonic deadline
 * (milliseconds, see posh_now_ms). Each hop is appended to trace. POSH_OK means a 2xx or 4xx final response
 * (check out->status); anything else is an error with a message in msg.
 */
posh_err posh_fetch(CURL *curl, const posh_config *cfg, const char *url, int64_t deadline_ms, posh_trace *trace,
                    posh_fetch_result *out, char *msg, size_t msglen);
void posh_fetch_result_clear(posh_fetch_result *r);

/* A response body being received, capped at max bytes. */
typedef struct posh_body {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    bool too_large;
    bool nomem;
} posh_body;

/*
 * posh_fetch in steps, for a driver that performs the transfers itself (the engine's multi handle): begin sets
 * curl up for the first request; after each transfer, step judges it and either sets curl up for the next hop
 * (returns 0: perform it) or ends (returns 1 with *err and out as posh_fetch gives them). The op must not move
 * while a transfer runs (curl writes into it). url must outlive the op.
 */
typedef struct posh_fetch_op {
    const posh_config *cfg;
    CURL *curl;
    const char *url;
    char *current;
    long hops;
    int64_t deadline_ms;
    posh_trace *trace;
    char *msg;
    size_t msglen;
    posh_body b;
    char errbuf[CURL_ERROR_SIZE];
} posh_fetch_op;

posh_err posh_fetch_begin(posh_fetch_op *op, CURL *curl, const posh_config *cfg, const char *url,
                          int64_t deadline_ms, posh_trace *trace, char *msg, size_t msglen);
int posh_fetch_step(posh_fetch_op *op, CURLcode rc, posh_fetch_result *out, posh_err *err);
void posh_fetch_op_clear(posh_fetch_op *op);
/* Prepare a reusable easy handle with the invariant options (https only, no signals, CA, connect-to). */
posh_err posh_fetch_handle_setup(CURL *curl, const posh_config *cfg, struct curl_slist *connect_to);
int64_t posh_now_ms(void);

/* ---- results (result.c) ---- */
/* One fingerprint descriptor, compact: the digests present are stored back to back in enum order. */
typedef struct posh_result_descriptor {
    uint8_t present;          /* bit (1u << posh_hash) for each hash present */
    int8_t decided;           /* the hash that decides for this client (strongest allowed), or -1 */
    uint16_t offset;          /* of this descriptor's first digest in the result's digest bytes */
} posh_result_descriptor;

/*
 * Immutable once built, reference counted, and one allocation: the struct, then the requests, the descriptors,
 * the digests and the strings. A cached domain with one request and two SHA-256 descriptors costs ~250 bytes.
 */
struct posh_result {
    int refs;                  /* atomic */
    int retired;               /* atomic: a cache that held it let it go (cache.c), for posh_lookup_peek's memo */
    posh_err err;
    int followed_reference;
    unsigned format;           /* POSH_FORMAT_* the fingerprints were read from; 0 without any */
    long ttl;
    time_t expires_at;
    const char *domain;        /* a reference target's result (the URL cache): its URL */
    const char *service;       /* a reference target's result: "" */
    const char *message;
    size_t n_requests;
    size_t first_shared;       /* requests from here on were made by an earlier lookup (a shared target) */
    const posh_request *requests;
    size_t n_descriptors;
    const posh_result_descriptor *descriptors;
    const unsigned char *digests;
    size_t n_delegations;      /* a delegation lookup's result: where the service is delegated */
    const struct posh_result_deleg *delegations;
    /*
     * A reference target's result, when the client has a persistent cache: its document as fetched, for the
     * entries of the domains that refer to it (store.c). NULL otherwise.
     */
    int64_t fetched_wall;      /* the persistent cache's clock when the fetch began */
    const char *doc;
    size_t doc_len;
    const char *doc_url;       /* the URL it came from (after redirects) */
    long doc_status;
    /*
     * The only part written after the build: the first certificate DER that matched (posh_result_match), set
     * once (atomic, release/acquire) and freed with the result. The same bytes again match without a digest;
     * with its parsed copy (at most 256 in the process) a handshake's leaf matches without being encoded.
     */
    struct posh_match_memo *matched;
};

/* What a lookup found, gathered while it runs; posh_result_build() makes the compact result of it. */
typedef struct posh_result_parts {
    const char *domain;
    const char *service;
    posh_err err;
    const char *message;
    const posh_trace *trace;      /* may be NULL */
    int followed_reference;
    long ttl;
    time_t expires_at;
    const posh_doc *doc;          /* the fingerprints document, or NULL */
    const posh_delegation_doc *delegations; /* a delegation lookup's document, or NULL */
    bool allow_sha1;
    /*
     * The reference target's own result (from the URL cache), or NULL. Its requests follow the trace's; when
     * doc is NULL and err is POSH_OK its descriptors are the result's (decided under the same client's rules).
     */
    const posh_result *target;
    bool target_shared;           /* the target's requests were made by an earlier lookup, not by this one */
    /* RAW: message is working text. MESSAGE: it is made of escaped messages (a target's) and escaped parts. */
    posh_escape_mode escape;
    bool from_store;              /* loaded from the persistent cache: every request was an earlier process's */
    int64_t fetched_wall;         /* kept with the document below */
    const char *raw_doc;          /* the document as fetched, kept in the result (a target's, with a store) */
    size_t raw_doc_len;
    const char *raw_url;
    long raw_status;
} posh_result_parts;

typedef struct posh_result_deleg {
    const char *host;
    const char *domain;
    int port;
} posh_result_deleg;

/* NULL when out of memory. */
posh_result *posh_result_build(const posh_result_parts *parts);
/* A result for a parsed fingerprints document fetched at now (benchmarks and tests fill caches with it). */
posh_result *posh_result_from_doc(const char *domain, const char *service, const posh_doc *doc, time_t now,
                                  long max_ttl);
/* Match der against the decided digest of each descriptor: *index = the first that matches, or -1. */
posh_err posh_result_match(const posh_result *r, const unsigned char *der, size_t der_len, int *index);
/*
 * 1 when leaf is, byte for byte, the certificate r remembers (its first match; *index: the descriptor it
 * matched), decided without encoding leaf (posh_cert_same_der: a leaf as OpenSSL parsed it, during its
 * handshake); 0 when it is not, or not known so: posh_result_match() then decides by its DER.
 */
int posh_result_match_cert(const posh_result *r, const X509 *leaf, int *index);
/* How many remembered certificates are kept parsed in the process (at most 256; tests). */
size_t posh_result_parsed_count(void);
/*
 * X509_check_host(leaf, name, 0, flags, NULL) did not match, noted once a verification that saw it so was
 * vouched for by r: kept when leaf is the certificate r remembers (posh_result_match_cert) and name is r's
 * domain, for those flags (the last noted). posh_result_name_fails() says whether it is known for exactly these:
 * the check is a function of the bytes, the name and the flags, so a verification may take its answer from here.
 * When leaf is r's remembered certificate and name its domain, it also sets *index (as posh_result_match_cert).
 */
void posh_result_note_name_fails(const posh_result *r, const char *name, const X509 *leaf, unsigned flags);
int posh_result_name_fails(const posh_result *r, const char *name, const X509 *leaf, unsigned flags, int *index);
posh_result *posh_result_ref(posh_result *r);

/* ---- the POSH process (lookup.c) ---- */
/* What one lookup gathers while it runs; the result is built from it at the end. */
typedef struct posh_lookup_state {
    char message[POSH_MSG_LEN];
    posh_trace trace;
    int followed_reference;
    /* With a persistent cache: the last document parsed, as fetched (kept for the entry; store.c). */
    bool keep;
    char *body;
    size_t body_len;
    char *body_url;
    long body_status;
} posh_lookup_state;

void posh_lookup_state_init(posh_lookup_state *st, bool keep);
void posh_lookup_state_clear(posh_lookup_state *st);

/*
 * A reference target's result from its fetch (err and fr as posh_fetch gave them; fr is consumed), started at
 * started (client clock) and started_wall (the store's): its own expires capped by the maximum TTL, or a failure
 * (POSH_ERR_REFERENCE_TARGET for a 4xx, POSH_ERR_REFERENCE_CHAIN for a reference) for the negative TTL, or 0 for
 * POSH_ERR_NOMEM and POSH_ERR_TIMEOUT (see lookup.c). NULL when out of memory.
 */
posh_result *posh_target_result(posh_client *client, const char *url, time_t started, int64_t started_wall,
                                posh_err err, posh_fetch_result *fr, posh_lookup_state *st);

/*
 * One lookup as steps, for the blocking driver (posh_lookup_uncached) and the engine's (engine.c), so both make
 * the same requests in the same order and build the same result:
 *   init; while ((url = next_source)) { fetch url; next = source_done(...); if (next != NEXT_SOURCE) break; }
 *   if TARGET: get run->src.url's result from client->targets (retrying while target_retry says so), target_done;
 *   finish (builds, logs and persists the result; clears the run).
 */
typedef enum posh_run_next { POSH_RUN_NEXT_SOURCE, POSH_RUN_TARGET, POSH_RUN_FINISH } posh_run_next;

typedef struct posh_run {
    posh_client *client;
    char domain[POSH_MAX_DOMAIN_LEN + 2];
    char svc[POSH_MAX_SERVICE_LEN + 1];
    char proto[POSH_MAX_SERVICE_LEN + 1];
    char service[2 * POSH_MAX_SERVICE_LEN + 4];
    int64_t deadline_ms;           /* posh_now_ms() clock: the whole lookup's budget */
    time_t started;                /* client clock */
    int64_t started_wall;          /* the persistent cache's clock */
    posh_lookup_state st;
    posh_doc src;                  /* the source domain's document */
    const posh_doc *fingerprints;  /* &src when it holds the fingerprints */
    size_t layout;                 /* the next layout to try */
    char tried[POSH_MSG_LEN];      /* why the layouts tried so far were missing */
    size_t tried_used;
    char url[POSH_MAX_URL_LEN + 1];
    posh_result *target;           /* the reference target's result (owned) */
    bool target_ran;               /* fetched by this lookup (not shared from the URL cache) */
    posh_escape_mode escape;
    int64_t ttl;
    posh_err err;
} posh_run;

void posh_run_init(posh_run *run, posh_client *client, const char *domain, const char *svc, const char *proto);
/* The run fails with err before or instead of fetching (message may be NULL). Then finish. */
void posh_run_fail(posh_run *run, posh_err err, const char *message);
/* The next source URL to fetch, or NULL when none is left (run->err says why: NO_POSH, or a URL error). */
const char *posh_run_next_source(posh_run *run);
/* The source fetch of the last URL ended (err, fr as posh_fetch gives them; fr is consumed). */
posh_run_next posh_run_source_done(posh_run *run, posh_err err, posh_fetch_result *fr);
/* Should a target result obtained from the URL cache (ran: by this lookup) be asked for again (tries so far)? */
bool posh_run_target_retry(const posh_run *run, const posh_result *target, bool ran, int tries);
/* The target's result (owned by the run from here on; NULL: out of memory). */
void posh_run_target_done(posh_run *run, posh_result *target, bool ran);
/* Build the domain's result (NULL when out of memory), log a failure, persist a success; clears the run. */
posh_result *posh_run_finish(posh_run *run);
/* Free what the run holds, without a result (an abandoned run). */
void posh_run_clear(posh_run *run);
/*
 * The whole POSH process for a normalised (domain, svc, proto), without the (domain, service) cache: the
 * source domain's document is always fetched; a reference's target comes from the client's URL cache
 * (client->targets, fetched there when missing or stale). Always returns a result (NULL only when out of
 * memory) whose err says what happened.
 */
posh_result *posh_lookup_uncached(posh_client *client, const char *domain, const char *svc, const char *proto);

/* ---- Secure Service Delegation lookups (lookup.c) ---- */
/* https://DOMAIN/.well-known/services/SVC/ into out, or NULL when it does not fit. */
const char *posh_delegation_url(const char *domain, const char *svc, char *out, size_t outlen);
/*
 * The result of a delegation document's fetch (err and fr as posh_fetch gives them; fr is consumed; st holds
 * the trace and the message), started at started on the client's clock: the delegations for POSH_MAX_TTL
 * lowered by Cache-Control, or POSH_ERR_NO_DELEGATION for a 4xx, or the error, for the negative TTL.
 */
posh_result *posh_delegation_result(posh_client *client, const char *domain, const char *service, time_t started,
                                    posh_err err, posh_fetch_result *fr, posh_lookup_state *st);
/* The whole delegation lookup of a normalised (domain, svc, proto), blocking, without the cache. */
posh_result *posh_delegation_uncached(posh_client *client, const char *domain, const char *svc, const char *proto);

/* ---- cache (cache.c) ---- */
typedef struct posh_cache posh_cache;
posh_cache *posh_cache_new(size_t max_entries);
void posh_cache_free(posh_cache *cache);
void posh_cache_flush(posh_cache *cache);
/*
 * Get the result for key, or run fill(arg) once for all concurrent callers of the same key (single flight)
 * and store what it returns until its expires_at. Returns a new reference, or NULL when out of memory.
 */
posh_result *posh_cache_get(posh_cache *cache, const char *key, time_t now,
                            posh_result *(*fill)(void *arg), void *arg);
size_t posh_cache_count(posh_cache *cache);
/*
 * The asynchronous side of the single flight. begin: FRESH (*out: a new reference), OWNER (the entry is marked
 * pending: the caller must run the fill and posh_cache_complete() it, whatever happens), WAIT (another caller's
 * fill is pending, blocking or asynchronous: w, storage the caller keeps until it is called, is linked to it and
 * w->fn(w->arg, result) runs once when it completes, on the completing thread, outside the cache's lock, with a
 * new reference or NULL when the fill failed for lack of memory), or NOMEM. complete: the owner's result (the
 * cache takes its own reference; NULL: the fill failed) for everyone waiting, blocking or not.
 */
typedef struct posh_cache_waiter {
    void (*fn)(void *arg, posh_result *r);
    void *arg;
    struct posh_cache_waiter *next;
} posh_cache_waiter;
typedef enum { POSH_CACHE_FRESH, POSH_CACHE_OWNER, POSH_CACHE_WAIT, POSH_CACHE_NOMEM } posh_cache_begin_result;
posh_cache_begin_result posh_cache_begin(posh_cache *cache, const char *key, time_t now, posh_result **out,
                                         posh_cache_waiter *w);
void posh_cache_complete(posh_cache *cache, const char *key, posh_result *r);
/* A fresh result for key (a new reference), or NULL: never waits, never fills. */
posh_result *posh_cache_peek(posh_cache *cache, const char *key, time_t now);
void posh_cache_atfork_prepare(posh_cache *cache);
void posh_cache_atfork_parent(posh_cache *cache);
void posh_cache_atfork_child(posh_cache *cache);

/* ---- the persistent cache (store.c; the format and the file system parts: posh_internal.h) ---- */
typedef struct posh_store posh_store;
/* The store of cfg's cache directory; NULL when none is configured or it is unsafe (then logged, once). */
posh_store *posh_store_open(const posh_config *cfg);
/*
 * The SHA-256 of what in cfg decides how documents are fetched: the content of the trust anchors the fetches load
 * (the CA file's bytes; the CA directory's loadable names and their files' bytes; libcurl's built-in ones when
 * not configured), the connect-to list, layouts and redirect limit. Entries are filed under it, so clients that
 * trust or route otherwise never read each other's. 0, or -1 when the anchors cannot be hashed (out: all 0xff).
 */
int posh_store_scope(const posh_config *cfg, unsigned char out[32]);
void posh_store_free(posh_store *store);
/* Around fork() (client.c's handlers): the store's lock held, so that no thread missing in the child holds it. */
void posh_store_atfork_prepare(posh_store *store);
void posh_store_atfork_parent(posh_store *store);
void posh_store_atfork_child(posh_store *store);
/*
 * The result for (domain, service "_svc._proto") from the directory, re-judged now: NULL when there is no
 * usable entry (missing, stale, or refused: logged). Its lifetime is what is left of the entry's.
 */
posh_result *posh_store_load(posh_client *client, const char *domain, const char *service);
/* Persist a successful lookup: the source document as fetched (url, status, bytes) and the target's result.
 * From the engine thread the write is queued until posh_store_drain(). */
void posh_store_save(posh_client *client, const char *domain, const char *service, int64_t fetched_wall,
                     const char *src_url, long src_status, const char *src_doc, size_t src_len,
                     const posh_result *target);
/* Remove every entry. */
void posh_store_flush(posh_store *store);
/*
 * Write the entries posh_store_save() queued on the engine thread (at most 32; engine thread only): the engine
 * calls it once the transfers of its pass are serviced, and before it stops.
 */
void posh_store_drain(posh_store *store);

/* ---- the non-blocking engine (engine.c) ---- */
typedef struct posh_engine posh_engine;
/* What a lookup looks up: POSH documents (posh_lookup) or delegation documents (posh_lookup_delegation). */
typedef enum posh_lookup_kind { POSH_KIND_POSH = 0, POSH_KIND_DELEGATION = 1 } posh_lookup_kind;
typedef struct posh_wait posh_wait;

/*
 * posh_client_free: stop the client's engine (if it has one) for good. Jobs in flight are delivered
 * POSH_ERR_CANCELLED before it returns; the engine never starts again for this client (the client is closed
 * first). The engine's own memory stays until posh_engine_destroy: threads still holding the client may be about
 * to submit to it (they are refused) or complete a cache fill a cancelled job waited for (client.c, refs).
 */
void posh_engine_stop(posh_client *client);
/* The client's last reference is gone: free what posh_engine_stop left. */
void posh_engine_destroy(posh_client *client);
/* Queue an asynchronous lookup of a normalised (domain, svc, proto); cb as posh_lookup_async (NULL: prefetch). */
posh_err posh_engine_submit(posh_client *client, const char *domain, const char *svc, const char *proto,
                            posh_lookup_callback cb, void *arg);
/* Is this thread an engine's (client's, or any engine's when client is NULL)? */
bool posh_engine_is_current_thread(const posh_client *client);
void posh_engine_atfork_prepare_all(void);
void posh_engine_atfork_parent_all(void);
void posh_engine_atfork_child_all(void);
void posh_engine_atfork_prepare(posh_client *client);
void posh_engine_atfork_parent(posh_client *client);
void posh_engine_atfork_child(posh_client *client);

/*
 * A handshake's wait for a lookup (verify.c). start: queue the lookup, with a descriptor that becomes readable
 * when it is done; POSH_ERR_BUSY past the client's bounds. take: 1 once done (*result: owned by the caller, NULL
 * for NOMEM / INVALID_ARGUMENT / CANCELLED; *err as posh_lookup returns it), 0 while it runs. release: the
 * SSL's reference (the lookup goes on into the cache if it still runs).
 */
posh_err posh_wait_start(posh_client *client, posh_lookup_kind kind, const char *domain, const char *svc,
                         const char *proto, posh_wait **out);
posh_lookup_kind posh_wait_kind(const posh_wait *w);
int posh_wait_fd(const posh_wait *w);
const char *posh_wait_domain(const posh_wait *w);
const char *posh_wait_service(const posh_wait *w);
int posh_wait_take(posh_wait *w, posh_result **result, posh_err *err);
void posh_wait_release(posh_wait *w);

/* ---- client (client.c) ---- */
/*
 * Lifetime. posh_client_free() closes the client (closed: its engine is stopped and never restarts, verifications
 * fail closed with POSH_ERR_CANCELLED) and drops the caller's reference; every context given the client
 * (SSL_CTX_set_posh_client) and every verification running on one holds a reference too, so that a handshake
 * retried or started after the free reads live memory and fails closed instead of reading freed memory. The
 * memory (configuration, caches, handle pool, store, engine, locks) goes with the last reference.
 */
struct posh_client {
    atomic_int refs;
    atomic_bool closed;            /* posh_client_free() was called */
    posh_config *cfg;
    posh_store *store;             /* the persistent cache, or NULL */
    posh_cache *cache;             /* results by "domain _svc._proto" */
    posh_cache *targets;           /* reference targets' results by URL (lookup.c says why and how long) */
    posh_cache *delegations;       /* delegation documents' results by "domain _svc._proto" */
    struct curl_slist *connect_to;
    pthread_mutex_t handles_lock;  /* guards the idle handle pool (keeps connections warm between lookups) */
    CURL **idle;
    size_t n_idle;
    size_t max_idle;
    pthread_mutex_t engine_lock;   /* guards engine's creation */
    posh_engine *engine;           /* the non-blocking engine, started on first use (engine.c) */
    struct posh_client *next_client;   /* registry of live clients, for fork handling */
    struct posh_client *prev_client;
};

/* Another reference to c (returned). */
posh_client *posh_client_ref(posh_client *c);
/* Drop a reference (NULL: nothing): the last one frees the client's memory. Never from its own engine thread. */
void posh_client_unref(posh_client *c);
/* Has posh_client_free() been called? Best effort against a concurrent free: the engine refuses work itself. */
bool posh_client_closed(const posh_client *c);

/*
 * Take an easy handle from the client's pool (or a new one, setting libcurl up on the first); give it back when
 * done. NULL: out of memory, or libcurl unusable (posh_client_curl_problem() then says why).
 */
CURL *posh_client_handle_get(posh_client *client);
void posh_client_handle_put(posh_client *client, CURL *curl);
/* The client's caches of POSH results and of delegation results (a lookup kind's cache, for engine.c too). */
posh_cache *posh_client_posh_cache(posh_client *client);
posh_cache *posh_client_delegation_cache(posh_client *client);
/* What posh_lookup() returns for the cache's answer r: its error, and no result (r freed, set to NULL) for
 * POSH_ERR_NOMEM (also when r is NULL) and POSH_ERR_INVALID_ARGUMENT. */
posh_err posh_lookup_outcome(posh_result **r);
/*
 * The cache's fresh answer of kind for (domain, service) (a new reference), or NULL: never waits, never fills,
 * never touches OpenSSL's error queue. domain must be normalised (posh_domain_normalize) and service canonical
 * ("_svc._proto", as posh_service_parse() folds it) for a hit: the key is theirs joined as cache_key() joins the
 * parsed parts, and every key in the cache was built from normalised parts, so anything else only misses.
 */
posh_result *posh_lookup_peek(posh_client *client, posh_lookup_kind kind, const char *domain, const char *service);
/* The default client if it was made already (a cached answer needs one), else NULL: never makes it. */
posh_client *posh_default_client_if_made(void);
/* Why libcurl cannot serve (it failed to initialise, or has no TLS), or NULL when it can. */
const char *posh_client_curl_problem(void);

/* ---- verify.c: what the LD_PRELOAD shim (shim/) needs; unused by the library itself ---- */
typedef struct posh_shim_hooks {
    /*
     * The service for a connection of a shim-installed context: writes the canonical "_svc._proto" form into
     * out (outlen >= 2 * POSH_MAX_SERVICE_LEN + 4) and returns 1, or returns 0: POSH is not used for it.
     */
    int (*service)(SSL *ssl, char *out, size_t outlen);
    /*
     * POSH vouched for leaf, the connection's own peer certificate object (the one SSL_get0_peer_certificate()
     * returns after the handshake), under reference (normalised), for ttl more seconds. Called during the
     * verification, before the chain is verified and the application's callbacks run.
     */
    void (*vouched)(X509 *leaf, const char *reference, long ttl);
    /* The verification of leaf failed after all (another error, the application's verdict): forget the approval. */
    void (*withdrawn)(X509 *leaf);
    /*
     * For a connection that names no host and no SNI: the reference identifier the program named in its
     * protocol (the `to` of the XMPP stream header it sent before the handshake), normalised into out
     * (outlen >= POSH_MAX_DOMAIN_LEN + 2). 1 found, 0 none. Consumes what it returns.
     */
    int (*stream_to)(SSL *ssl, char *out, size_t outlen);
    /*
     * A connection whose program turned OpenSSL's verification off (SSL_VERIFY_NONE) and set no host, but sent
     * SNI: its chain verified (the verify result is X509_V_OK, which then says nothing about names), and POSH
     * may answer the program's own later name questions about leaf for reference (normalised) and service
     * (canonical "_svc._proto"). Nothing is fetched now: posh_verify_deferred() does it at the first question.
     */
    void (*deferred)(X509 *leaf, const char *reference, const char *service);
    /*
     * For a server-side connection: the identity the peer claims in its protocol (the `from` of the XMPP stream
     * header it sent in plaintext on the socket the program accepted, before the handshake), normalised into out
     * (outlen >= POSH_MAX_DOMAIN_LEN + 2). 1 found, 0 none. Consumes what it returns.
     */
    int (*stream_from)(SSL *ssl, char *out, size_t outlen);
} posh_shim_hooks;

/* Set once, before the first context is installed. */
void posh_verify_set_shim_hooks(const posh_shim_hooks *hooks);
/*
 * The lookup a deferred connection (hook deferred) left for later, run now with the default client: does POSH
 * vouch for leaf under (reference, service)? 1 yes (the hook vouched was called on leaf), 0 no (logged why).
 * Blocking; the caller holds no lock.
 */
int posh_verify_deferred(X509 *leaf, const char *reference, const char *service);
/*
 * Install POSH on ctx without touching its verify mode or verify callback. Its connections use the service the
 * hook chooses; POSH applies only where the program asked for a name check, and never adds a host name.
 * Idempotent. 1 ok, 0 out of memory.
 */
int posh_ctx_install_transparent(SSL_CTX *ctx);
/*
 * If POSH is installed on ctx, make cb(xctx, arg) the chain verification POSH calls instead of X509_verify_cert
 * (NULL: X509_verify_cert again) and return 1; otherwise return 0 and change nothing.
 */
int posh_ctx_chain_cert_verify(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg);
/* Is cb POSH's own certificate verification callback? */
int posh_is_cert_verify_callback(int (*cb)(X509_STORE_CTX *, void *));
/* POSH's own certificate verification callback itself (bench/: timed around, as the verification step). */
int (*posh_cert_verify_callback(void))(X509_STORE_CTX *, void *);
/* 1 while this thread runs a POSH lookup: its HTTPS fetches are POSH's own and never subject to POSH. */
int posh_verify_in_lookup(void);
/* This thread (an engine's) only ever runs POSH lookups. */
void posh_verify_mark_lookup_thread(void);

/* ---- log.c: the shim is silent unless POSH_LOG is set ---- */
/* When POSH_LOG is unset, log nowhere instead of to stderr. Call before the first message. */
void posh_log_default_off(void);

#endif /* POSH_CLIENT_INTERNAL_H */
