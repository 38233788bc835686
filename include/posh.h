/*
 * posh.h - PKIX over Secure HTTP (POSH, RFC 7711 / draft-ietf-xmpp-posh-02) for OpenSSL programs.
 *
 * The one public header of libposh. Everything exported by the library is declared and documented here.
 *
 * THE ONE LINE
 *   SSL_CTX_set_posh_verify(ctx, "xmpp-server");
 * installs a certificate verification step on the context: when the peer's certificate does not carry the
 * reference identifier (the name the application expects), the source domain's POSH document is fetched over
 * verified HTTPS and the peer is accepted only if the SHA-256 (or SHA-1, unless disabled) of its leaf
 * certificate is published there. Every other failure of the verification stands: POSH never turns an
 * untrusted, expired, not-yet-valid or revoked certificate into an accepted one (no laundering).
 *
 * THREADS
 *   - posh_config: build it in one thread; once given to posh_client_new() it is copied and may be freed.
 *   - posh_client: fully thread-safe; share one per process (the cache lives in it).
 *   - posh_result: immutable and reference counted; may be read from any thread.
 *   - An SSL_CTX with POSH enabled may be shared by any number of threads, as OpenSSL allows.
 *   - posh_lookup() blocks the calling thread for at most the configured timeout (POSH_TIMEOUT_MS); so does a
 *     handshake needing a cold lookup, unless the context is non-blocking (SSL_CTX_set_posh_nonblocking()).
 *   - Non-blocking work (posh_lookup_async(), posh_prefetch(), non-blocking handshakes) runs on one engine
 *     thread per client (libcurl's multi interface: many transfers, one thread), started on first use.
 *   - The library calls curl_global_init() once, before its first fetch (thread-safe in libcurl >= 7.84), and never
 *     cleans it up.
 *
 * CAVEATS (what posh does not do)
 *   - Server side (a server checking a client certificate): POSH runs only for the identity the application says
 *     the peer claims (SSL_set_posh_reference() before the handshake, or SSL_check_posh_peer() after it); a
 *     server-side connection without one is never touched. A server-side verification always blocks (OpenSSL
 *     3.0 cannot suspend a client certificate's verification); SSL_check_posh_peer() has a non-blocking form.
 *   - POSH does not replace chain validation in the default mode (POSH_MODE_NAME): the peer's chain must still
 *     be trusted by the application's store. Mode POSH_MODE_PIN makes a POSH match a trust anchor (like DANE-EE).
 *   - Only the leaf certificate's full DER is hashed (as RFC 7711 says), never the SPKI.
 *   - DNS (SRV lookups, DNSSEC) is the application's business: the source domain is the reference identifier.
 *   - Resumed TLS sessions are not verified again by OpenSSL; they reuse the first verification's result.
 *   - By default lookups are synchronous inside the handshake (a cold lookup adds up to one HTTPS round trip
 *     per hop); event-driven programs opt in to SSL_CTX_set_posh_nonblocking().
 *   - SSL_get0_peername() stays NULL after an acceptance by POSH (the name did not match).
 */
#ifndef POSH_H
#define POSH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define POSH_EXPORT __attribute__((visibility("default")))
#define POSH_MUST_CHECK __attribute__((warn_unused_result))
#else
#define POSH_EXPORT
#define POSH_MUST_CHECK
#endif

#define POSH_VERSION_MAJOR 0
#define POSH_VERSION_MINOR 1
#define POSH_VERSION_PATCH 0
#define POSH_VERSION_STRING "0.1.0"

/* The library's version string, e.g. "0.1.0". */
POSH_EXPORT const char *posh_version(void);

/*
 * Error codes. Stable: values are only ever appended, never renumbered or removed.
 * posh_strerror() gives a short fixed description; the message attached to a result or a connection says
 * which URL, HTTP status, JSON member or name was at fault.
 */
typedef enum posh_err {
    POSH_OK = 0,
    POSH_ERR_NOMEM = 1,              /* out of memory (this process's allocations; never what a server sent) */
    POSH_ERR_INVALID_ARGUMENT = 2,   /* a NULL or out-of-range argument */
    POSH_ERR_CONFIG = 3,             /* invalid configuration value or POSH_* environment variable */
    POSH_ERR_BAD_DOMAIN = 4,         /* the source domain is not a valid DNS name */
    POSH_ERR_BAD_SERVICE = 5,        /* the service name is not valid */
    POSH_ERR_NO_POSH = 6,            /* the source domain publishes no POSH document (404/4xx at every URL) */
    POSH_ERR_HTTP_STATUS = 7,        /* an HTTP status that is neither success, redirect nor 4xx (e.g. 500) */
    POSH_ERR_CONNECT = 8,            /* could not resolve or connect to the web server */
    POSH_ERR_TLS = 9,                /* HTTPS handshake failed or the web server's certificate did not verify */
    POSH_ERR_TIMEOUT = 10,           /* the lookup's time budget ran out */
    POSH_ERR_TOO_LARGE = 11,         /* a response body exceeded the size cap */
    POSH_ERR_REDIRECT_SCHEME = 12,   /* a redirect to something other than an https:// URL */
    POSH_ERR_TOO_MANY_REDIRECTS = 13,/* more redirects than allowed */
    POSH_ERR_FETCH = 14,             /* any other transfer failure (e.g. a response header libcurl refuses) */
    POSH_ERR_JSON = 15,              /* the body is not one well-formed JSON object within the limits */
    POSH_ERR_DOCUMENT = 16,          /* valid JSON that is not a valid POSH document (member missing or wrong) */
    POSH_ERR_FINGERPRINT = 17,       /* a fingerprint that is not base64 of the right length */
    POSH_ERR_EXPIRES = 18,           /* "expires" missing, zero, negative or not an integer */
    POSH_ERR_REFERENCE_URL = 19,     /* a reference "url" that is not a valid https:// URL */
    POSH_ERR_REFERENCE_CHAIN = 20,   /* a reference that points to another reference */
    POSH_ERR_REFERENCE_TARGET = 21,  /* the document a reference points to does not exist (4xx) */
    POSH_ERR_NO_MATCH = 22,          /* the document is valid but vouches for another certificate */
    POSH_ERR_NO_REFERENCE_ID = 23,   /* the connection has no reference identifier to run POSH for */
    POSH_ERR_CERTIFICATE = 24,       /* the peer certificate could not be read or hashed */
    POSH_ERR_INTERNAL = 25,          /* a bug or an unexpected library failure */
    POSH_ERR_BUSY = 26,              /* non-blocking: too many lookups in flight or waiting, or none free in time */
    POSH_ERR_CANCELLED = 27,         /* non-blocking: the lookup was abandoned (client freed, process forked) */
    POSH_ERR_NO_DELEGATION = 28      /* the domain publishes no service delegation document (4xx) */
} posh_err;

/* A fixed, short English description of an error code. Never NULL; unknown codes give "unknown error". */
POSH_EXPORT const char *posh_strerror(posh_err err);

/* ---------------------------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------------------------ */

typedef enum posh_mode {
    POSH_MODE_NAME = 0, /* default: POSH only stands in for the name check of an otherwise trusted chain */
    POSH_MODE_PIN = 1   /* opt-in: a POSH match also stands in for chain trust (leaf becomes a trust anchor) */
} posh_mode;

/* URL layouts, a bit mask. Requests go in this order: RFC 7711, then draft-02. */
#define POSH_LAYOUT_RFC7711 0x1u /* https://D/.well-known/posh/SERVICE.json */
#define POSH_LAYOUT_DRAFT02 0x2u /* https://D/.well-known/posh._SERVICE._tcp.json */
#define POSH_LAYOUT_ALL (POSH_LAYOUT_RFC7711 | POSH_LAYOUT_DRAFT02)

/*
 * Document forms, a bit mask (POSH_FORMATS). A reference document may lead to either.
 *   FINGERPRINTS: {"fingerprints": [{"sha-256": "base64"}, ...], "expires": N} (RFC 7711, draft-ietf-xmpp-posh-01+)
 *   JWK: a JSON Web Key Set {"keys": [{"kty": ..., "x5t#S256"/"x5t": "base64url", "x5c": ["base64 DER", ...]}],
 *        "expires": N} (draft-miller-posh-01..03, draft-ietf-xmpp-posh-00): a key vouches for the leaf whose
 *        SHA-256 is its x5t#S256, whose SHA-1 is its x5t (unless SHA-1 is off), or whose DER is its x5c[0].
 */
#define POSH_FORMAT_FINGERPRINTS 0x1u
#define POSH_FORMAT_JWK 0x2u
#define POSH_FORMAT_ALL (POSH_FORMAT_FINGERPRINTS | POSH_FORMAT_JWK)

typedef struct posh_config posh_config;

/*
 * A new configuration holding the defaults: system trust store, 5000 ms per lookup, 10 redirects, 65536 bytes
 * per body, cached lifetime at most 86400 s, failures cached 60 s, 10000 cache entries, mode name, SHA-1
 * accepted, both layouts, logging of warnings to stderr. The POSH_* environment is NOT read; see
 * posh_config_load_env(). NULL when out of memory.
 */
POSH_EXPORT posh_config *posh_config_new(void);
POSH_EXPORT void posh_config_free(posh_config *cfg);

/*
 * Apply the POSH_* environment variables (see README) on top of the current values. An invalid value leaves
 * cfg unchanged and returns POSH_ERR_CONFIG; posh_config_error() then names the variable and the reason.
 * In a privileged process (setuid, setgid or file capabilities: the kernel's AT_SECURE, as secure_getenv()
 * sees it) the POSH_* environment belongs to a less privileged user and is ignored, like OpenSSL's
 * SSL_CERT_FILE: this returns POSH_OK and leaves cfg as it was, even if a variable holds an invalid value,
 * and a warning naming the ignored variables is logged once per process. The same holds for POSH_LOG,
 * POSH_LOG_LEVEL and the shim's POSH_SERVICE. Such a program configures posh through the posh_config_set_*
 * functions instead.
 */
POSH_EXPORT posh_err posh_config_load_env(posh_config *cfg) POSH_MUST_CHECK;

/* The message of the last failed setter or posh_config_load_env() call on cfg ("" if none). */
POSH_EXPORT const char *posh_config_error(const posh_config *cfg);

/*
 * Trust anchors for the HTTPS fetches (a PEM file and/or an OpenSSL hashed directory). NULL: system store. A
 * relative path is made absolute against the working directory of this call (POSH_ERR_CONFIG if it is unknown).
 */
POSH_EXPORT posh_err posh_config_set_ca_file(posh_config *cfg, const char *path);
POSH_EXPORT posh_err posh_config_set_ca_path(posh_config *cfg, const char *path);
/*
 * Route HTTPS fetches as curl's --connect-to does: comma-separated "HOST:PORT:ADDR:PORT" entries (empty HOST or
 * PORT = any). The certificate is still checked against the URL's host name. NULL or "": none.
 */
POSH_EXPORT posh_err posh_config_set_connect_to(posh_config *cfg, const char *list);
/* Time budget for one whole lookup (every request, redirect and the reference hop), 1..600000 ms. */
POSH_EXPORT posh_err posh_config_set_timeout_ms(posh_config *cfg, long ms);
/* Maximum redirects followed per request, 0..10. */
POSH_EXPORT posh_err posh_config_set_max_redirects(posh_config *cfg, long n);
/* Maximum body per response, 64..1048576 bytes. */
POSH_EXPORT posh_err posh_config_set_max_bytes(posh_config *cfg, long n);
/* Cap on a result's cached lifetime, 1..31536000 s (the document's own expires is honoured when lower). */
POSH_EXPORT posh_err posh_config_set_max_ttl(posh_config *cfg, long seconds);
/* Lifetime of cached failures and "no POSH" answers, 0..86400 s (0 = not cached). */
POSH_EXPORT posh_err posh_config_set_negative_ttl(posh_config *cfg, long seconds);
/*
 * Maximum number of cached (domain, service) results, 1..10000000; least recently used go first. Reference
 * targets, cached by URL and shared by the domains that refer to them, have a bound of their own, the same.
 */
POSH_EXPORT posh_err posh_config_set_cache_size(posh_config *cfg, long entries);
/*
 * A persistent cache directory (opt-in; NULL or "": none, the default; also POSH_CACHE_DIR): successful
 * results are written there and a new client (a new process) of the same user starts warm from it. It is a
 * trust store, so it is used only when, opened without following a symbolic link, it is a directory owned by
 * the effective user and not writable by group or others (a missing directory is created with mode 0700);
 * otherwise it is not used, posh_client_new() logs why once, and the client caches in memory only. Entries
 * are written atomically (temporary file and rename), hold the documents as fetched and are parsed again on
 * load; expiry there is judged on the wall clock (time()), and an entry fetched "in the future" (the clock
 * went back) is stale. Anything odd (truncated, corrupted, oversized, another format, another domain, not a
 * regular file of ours) is ignored and replaced by the next fetch. Entries are filed under the content of the
 * trust anchors the fetches used: other anchors (another file, a root removed) never read them. At most the
 * cache size (entries; expired, then never used, then least recently used first out) and 64 MiB, checked by a
 * scan only past those marks. Failures and "no POSH" are never written. Disk problems never fail a lookup: it
 * fetches. Several processes may share one directory. See README "Persistent cache".
 */
POSH_EXPORT posh_err posh_config_set_cache_dir(posh_config *cfg, const char *path);
/*
 * Bounds of the non-blocking engine (also POSH_ASYNC_LOOKUPS, POSH_ASYNC_WAITING): posh_lookup_async() and
 * posh_prefetch() calls in flight at once (1..100000, default 1024; each counts until it completes, even one that
 * joins another's lookup), and handshakes waiting for a lookup in non-blocking mode (1..1000000, default 10000;
 * each holds one descriptor, see SSL_get_posh_wait_fd(), until the lookup is done). Either bound is its own: a
 * full one refuses only its kind. Past it the request fails at once with POSH_ERR_BUSY (a handshake is then
 * rejected: fail closed), never queued without limit.
 */
POSH_EXPORT posh_err posh_config_set_async_limits(posh_config *cfg, long max_lookups, long max_waiting);
/*
 * How many HTTPS transfers the non-blocking engine runs at once (also POSH_ASYNC_TRANSFERS; 1..10000, or 0 for
 * the default: a quarter of the process's RLIMIT_NOFILE when the engine starts, between 4 and 256). Each transfer
 * holds a socket; a burst of cold lookups beyond the bound waits in order for a free transfer instead of opening
 * a socket each (and failing with "could not connect" once the process runs out of descriptors). A lookup waits
 * at most the timeout (posh_config_set_timeout_ms()) for a transfer, then fails with POSH_ERR_BUSY, which is
 * never cached; once it has one, its requests get the whole timeout as in blocking mode, so its answer is the
 * one a blocking lookup would give. Blocking lookups are not counted: each runs on its caller's thread.
 */
POSH_EXPORT posh_err posh_config_set_async_transfers(posh_config *cfg, long max_transfers);
POSH_EXPORT posh_err posh_config_set_mode(posh_config *cfg, posh_mode mode);
/* 1: SHA-1 fingerprints never match (descriptors with only SHA-1 are then ignored). Default 0. */
POSH_EXPORT posh_err posh_config_set_no_sha1(posh_config *cfg, int no_sha1);
/* Which document forms are accepted (also POSH_FORMATS): a non-empty subset of POSH_FORMAT_ALL (the default). */
POSH_EXPORT posh_err posh_config_set_formats(posh_config *cfg, unsigned formats);
/*
 * 1: every context using this client also accepts Secure Service Delegation (see SSL_CTX_set_posh_delegation();
 * also POSH_DELEGATION=1, the way to turn it on for the shim). Default 0.
 */
POSH_EXPORT posh_err posh_config_set_delegation(posh_config *cfg, int on);
/* Which URL layouts are requested: a non-empty subset of POSH_LAYOUT_ALL. */
POSH_EXPORT posh_err posh_config_set_layouts(posh_config *cfg, unsigned layouts);
/*
 * The clock used for expiry, for tests and for applications with their own time source. now(arg) returns
 * seconds, monotonic or wall clock, as long as it never goes backwards. NULL restores the default (monotonic).
 */
POSH_EXPORT posh_err posh_config_set_clock(posh_config *cfg, time_t (*now)(void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------------------
 * Client: fetches, caches and matches
 * ------------------------------------------------------------------------------------------------------ */

typedef struct posh_client posh_client;

/* A client using a copy of cfg (NULL: defaults). NULL when out of memory or cfg is unusable. */
POSH_EXPORT posh_client *posh_client_new(const posh_config *cfg);
/*
 * Free the client: it is closed, and the caller's pointer must not be used again. Results obtained from it stay
 * valid until released. Its engine thread (if non-blocking work started one) is stopped first and never starts
 * again: callbacks of lookups in flight are called with POSH_ERR_CANCELLED before this returns. Contexts given
 * the client (SSL_CTX_set_posh_client()) keep its memory until they are freed, and every verification on them
 * from then on fails closed: a handshake started later, or a suspended one retried once its
 * wait descriptor is readable, is rejected with POSH_ERR_CANCELLED (SSL_get_posh_status() POSH_STATUS_REJECTED).
 * Handshakes running on such contexts in other threads at the time of the call are safe too. Never call it from
 * one of its own callbacks (refused: logged, and the client is left alive), nor twice, nor while other threads
 * still use the client directly (posh_lookup() and the other calls taking the client).
 */
POSH_EXPORT void posh_client_free(posh_client *client);

/*
 * The process-wide client configured from the environment, created on first use (thread-safe). NULL when the
 * environment is invalid or memory ran out; posh_default_client_error() then says why. Never free it.
 */
POSH_EXPORT posh_client *posh_default_client(void);
POSH_EXPORT const char *posh_default_client_error(void);

/* Forget every cached result (and every cached reference target), also those of the persistent cache. */
POSH_EXPORT void posh_client_flush(posh_client *client);

typedef struct posh_result posh_result;

/*
 * Look up the POSH document of domain for service ("xmpp-server", or the SRV form "_xmpp-server._tcp"), through
 * the cache. domain must be a DNS name (README "Which names are source domains"): an IP address in any
 * spelling, including "0x7f000001" or "127.1", is POSH_ERR_BAD_DOMAIN. Returns POSH_OK when a valid document
 * (fingerprints or a JWK Set, see posh_config_set_formats()) was obtained; otherwise the error. In both cases,
 * unless the return is POSH_ERR_NOMEM or POSH_ERR_INVALID_ARGUMENT, *out receives a result (to release with
 * posh_result_free()) that explains what happened: URLs fetched, statuses, message. With those two, *out is set
 * to NULL (when out is not NULL) and there is nothing to release. POSH_ERR_NOMEM means this process ran out of
 * memory; whatever a web server does (e.g. a header over libcurl's limit) is a fetch error, and every fetch
 * error and "no POSH" answer is cached for the negative TTL (posh_config_set_negative_ttl()).
 */
POSH_EXPORT posh_err posh_lookup(posh_client *client, const char *domain, const char *service,
                                 posh_result **out) POSH_MUST_CHECK;

/*
 * Non-blocking lookups. cb(err, result, arg) is called exactly once for each call that returned POSH_OK, on the
 * client's engine thread (never inside this call, even when the answer is cached), with what posh_lookup()
 * would have returned: result is the callback's to release with posh_result_free() (NULL only with
 * POSH_ERR_NOMEM, POSH_ERR_CANCELLED). The lookup joins the same cache and the same single flight as blocking
 * lookups: a blocking posh_lookup() or handshake for the same (domain, service) waits for it, and it waits for
 * theirs. cb must not block and must not call posh_lookup() (the engine would wait for itself: such a call
 * returns POSH_ERR_INVALID_ARGUMENT); it may start further async lookups.
 * Returns POSH_OK (started), POSH_ERR_BAD_DOMAIN / POSH_ERR_BAD_SERVICE / POSH_ERR_INVALID_ARGUMENT (cb is
 * NULL or an argument is NULL), POSH_ERR_BUSY (the client's lookups in flight are at their bound),
 * POSH_ERR_NOMEM or POSH_ERR_INTERNAL (the engine thread could not start); then cb is never called.
 * cb may also get POSH_ERR_BUSY, with a result: the lookup waited in line for a transfer longer than the timeout
 * (posh_config_set_async_transfers()); that answer is not cached.
 * posh_client_free() with lookups in flight calls their callbacks with POSH_ERR_CANCELLED before it returns.
 * In the child of a fork() the callbacks of the parent's lookups in flight are never called (the child's
 * copy of the engine is abandoned; its next async lookup starts a new engine).
 */
typedef void (*posh_lookup_callback)(posh_err err, posh_result *result, void *arg);
POSH_EXPORT posh_err posh_lookup_async(posh_client *client, const char *domain, const char *service,
                                       posh_lookup_callback cb, void *arg) POSH_MUST_CHECK;

/*
 * Start fetching (domain, service) into the cache without waiting and without a callback, e.g. while the
 * application resolves SRV records and connects: the handshake then finds the answer cached, or joins the
 * lookup in flight. POSH_OK when started or already fresh in the cache; otherwise as posh_lookup_async().
 */
POSH_EXPORT posh_err posh_prefetch(posh_client *client, const char *domain, const char *service) POSH_MUST_CHECK;

/*
 * Secure Service Delegation (draft-jennings-secure-service-delegation-00): what domain says about where its
 * service runs. GET https://DOMAIN/.well-known/services/SERVICE/ (SERVICE the bare name, e.g. "xmpp-server";
 * https only, redirects and limits as for POSH) must give a JSON array of 1..32 objects, read by posh as
 * {"host": "xmpp.example.com", "port": 5269, "domain": "example.com"}: connect to host:port and expect a
 * certificate valid for domain (the draft's member names are lost; this is posh's reading of it). Cached per
 * (domain, service) with the same single flight, bound and negative TTL as posh_lookup(); a document for
 * POSH_MAX_TTL lowered by the response's Cache-Control max-age (no-cache or no-store: not cached), since the
 * draft has no expires. Returns and fills *out as posh_lookup() does; a 4xx is POSH_ERR_NO_DELEGATION.
 */
POSH_EXPORT posh_err posh_lookup_delegation(posh_client *client, const char *domain, const char *service,
                                            posh_result **out) POSH_MUST_CHECK;
/* The delegations of a result of posh_lookup_delegation() (0 for any other result or a failure). */
POSH_EXPORT size_t posh_result_delegation_count(const posh_result *result);
/* Delegation i: host, port and domain (normalised DNS names; pointers into the result). 1, or 0 past the end. */
POSH_EXPORT int posh_result_delegation(const posh_result *result, size_t i, const char **host, int *port,
                                       const char **domain);

/*
 * Does a leaf certificate (its DER bytes) match the result's fingerprints under the rules of the client that
 * made the result (strongest supported hash per descriptor, SHA-1 switch)? Returns POSH_OK and sets *match to 1
 * or 0, and *index to the descriptor that matched (or -1). Errors only for bad arguments or a failed result
 * (returns its error).
 */
POSH_EXPORT posh_err posh_match_der(const posh_client *client, const posh_result *result,
                                    const unsigned char *der, size_t der_len, int *match,
                                    int *index) POSH_MUST_CHECK;

POSH_EXPORT void posh_result_free(posh_result *result);
/* POSH_OK for a valid fingerprints document, else the lookup's error. */
POSH_EXPORT posh_err posh_result_error(const posh_result *result);
/*
 * Human-readable detail: which URL, status, JSON member. "" when all went well.
 * Messages (this one, SSL_get_posh_message(), the log lines) hold printable ASCII only: each byte outside
 * 0x20..0x7e that came from elsewhere (a Location, a reference url, a JSON member name, curl's error text) is
 * written "\xHH" (two lower-case hex digits) and a backslash from there as "\\", so "\x1b" in a message is
 * always an escaped byte. Safe to print to a terminal or a log as they are. At most 511 characters: a longer
 * message is cut between escapes, never inside one.
 */
POSH_EXPORT const char *posh_result_message(const posh_result *result);
POSH_EXPORT const char *posh_result_domain(const posh_result *result);
POSH_EXPORT const char *posh_result_service(const posh_result *result);
/* The clock value (see posh_config_set_clock) after which the result is stale. */
POSH_EXPORT time_t posh_result_expires_at(const posh_result *result);
/*
 * Effective lifetime granted when fetched: min(reference expires, fingerprints expires, max TTL); when the
 * fingerprints came from a reference target cached by an earlier lookup, what was left of the target's life
 * counts instead of its expires, so a result never outlives the shared target it was built on.
 */
POSH_EXPORT long posh_result_ttl(const posh_result *result);
/* The form the result's fingerprints were read from (POSH_FORMAT_FINGERPRINTS or POSH_FORMAT_JWK); 0 for a failure. */
POSH_EXPORT unsigned posh_result_format(const posh_result *result);
/* 1 when the source domain's document was a reference that was followed, else 0. */
POSH_EXPORT int posh_result_followed_reference(const posh_result *result);

/*
 * Each HTTP request the result rests on, in order (redirect hops included): the source domain's, then, after a
 * reference, its target's. Returns 0 when i is past the end.
 */
POSH_EXPORT size_t posh_result_request_count(const posh_result *result);
POSH_EXPORT int posh_result_request(const posh_result *result, size_t i, const char **url, long *http_status);
/*
 * 1 when request i was not made by this lookup: a reference target is cached by its URL and shared by every
 * domain that refers to it, and a result built on a cached target lists the target's requests as they were
 * made when it was fetched (for whichever domain came first). 0 for the lookup's own requests, or i past the end.
 */
POSH_EXPORT int posh_result_request_shared(const posh_result *result, size_t i);

/* The fingerprint descriptors, in document order. Returns 0 when i or hash_name is unknown. */
POSH_EXPORT size_t posh_result_descriptor_count(const posh_result *result);
/*
 * The base64 value of hash_name ("sha-256", …) in descriptor i, normalised (with padding), into buf.
 * Returns 1 if present, 0 if not (or buf too small; 96 bytes always suffice).
 */
POSH_EXPORT int posh_result_descriptor_hash(const posh_result *result, size_t i, const char *hash_name,
                                            char *buf, size_t buflen);

/* ---------------------------------------------------------------------------------------------------------
 * OpenSSL integration
 * ------------------------------------------------------------------------------------------------------ */

/*
 * Enable POSH for every connection made from ctx, for service (as in posh_lookup()). Turns on
 * SSL_VERIFY_PEER (keeping the other mode bits and any verify callback the application set). The
 * application's verify callback, set before or after, is still called and sees POSH's verdict. Installs a
 * certificate verification callback (SSL_CTX_set_cert_verify_callback): do not install another one.
 * Uses posh_default_client() unless SSL_CTX_set_posh_client() names another. Returns 1 on success, 0 on error
 * (bad service, invalid environment, out of memory).
 * On a server context (SSL_VERIFY_PEER makes OpenSSL ask the client for a certificate; add
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT to require one) POSH verifies a client certificate only when the application
 * named the identity the peer claims with SSL_set_posh_reference() before the handshake: the leaf carries that
 * name: PKIX (POSH_STATUS_PKIX; OpenSSL checks the name); it does not: POSH, with every guarantee of the client
 * side (chain, dates, revocation and the application's verify callback as usual, nothing laundered; rejected:
 * OpenSSL reports X509_V_ERR_HOSTNAME_MISMATCH). Without a reference the connection is not touched: OpenSSL
 * checks no name on a client certificate unless the application set one. Host names set with SSL_set1_host()
 * are checked first as on a client; the SNI name (the server's own) is never a reference. Always blocking.
 */
POSH_EXPORT int SSL_CTX_set_posh_verify(SSL_CTX *ctx, const char *service);
/*
 * Use client instead of the default client. ctx holds a reference to it: the client's memory lives until ctx is
 * freed, even after posh_client_free(), after which ctx's verifications fail closed with POSH_ERR_CANCELLED.
 * Calling it again replaces the client for the verifications that start afterwards; the replaced one is kept
 * until ctx is freed too, since a verification running on another thread may still be using it (verifications
 * take no lock to read a context's client). 1 ok, 0 error (also when the client was freed already).
 */
POSH_EXPORT int SSL_CTX_set_posh_client(SSL_CTX *ctx, posh_client *client);

/*
 * Enable POSH for one connection (service as above). Also installs the pass-through verification callback on
 * the SSL's SSL_CTX (connections without POSH are not affected), and turns on SSL_VERIFY_PEER for ssl.
 * 1 ok, 0 error.
 */
POSH_EXPORT int SSL_set_posh_verify(SSL *ssl, const char *service);

/*
 * The source domain to run POSH for, overriding the default order (first host set with SSL_set1_host or
 * SSL_add1_host, then the SNI name). Also used as the name to check when the application set no host.
 * It serves the next certificate verification of ssl only (normally the handshake that follows) and is then
 * forgotten: an SSL reused with SSL_clear() for another peer is judged by its own hosts unless a reference is
 * set again. A handshake that resumes a session verifies no certificate and leaves a pending reference in
 * place: when reusing an SSL, set the reference (or NULL) before every handshake. source_domain NULL unsets a
 * pending reference. 1 ok, 0 error (invalid domain).
 * On a server-side SSL it names the identity the client claims (e.g. the `from` of the XMPP stream header it
 * sent before STARTTLS, RFC 7712 section 5): the only name POSH then answers for on that connection. It comes
 * from the peer, which is fine: it is exactly the name whose domain must vouch for the certificate.
 */
POSH_EXPORT int SSL_set_posh_reference(SSL *ssl, const char *source_domain);


/*
 * Non-blocking verification (OpenSSL >= 3.0.2) for the client connections of ctx (on = 1; 0 turns it off). When a
 * connection needs a POSH lookup that is not cached, SSL_connect()/SSL_do_handshake() return -1 at once and
 * SSL_get_error() gives SSL_ERROR_WANT_RETRY_VERIFY; the lookup runs on the client's engine thread, and
 * SSL_get_posh_wait_fd() becomes readable when it is done. Calling SSL_connect() again then verifies the
 * certificate exactly as a blocking handshake would (the same checks, the application's verify callback, no
 * laundering) and goes on. Calling it earlier is harmless: it returns WANT_RETRY_VERIFY again. A cached answer
 * is used at once, as in blocking mode; concurrent connections for one (domain, service) share one lookup, with
 * blocking callers too. Past the engine's bounds (posh_config_set_async_limits()) the connection is rejected
 * with POSH_ERR_BUSY. Freeing the SSL while its lookup runs is safe (the lookup completes into the cache).
 * Applies to connections created before or after the call, to those that enabled POSH with SSL_set_posh_verify()
 * too. 1 ok, 0 error (POSH is not installed on ctx: neither SSL_CTX_set_posh_verify() nor SSL_set_posh_verify()
 * on one of its connections was called, or the LD_PRELOAD shim installed it: the shim always blocks).
 * Server-side connections of ctx still verify a client certificate blocking (OpenSSL 3.0 does not suspend that
 * verification): use SSL_check_posh_peer(..., 1) after the handshake instead.
 */
POSH_EXPORT int SSL_CTX_set_posh_nonblocking(SSL_CTX *ctx, int on);
/*
 * Secure Service Delegation for the client connections of ctx (on = 1; also for every context whose client has
 * posh_config_set_delegation() / POSH_DELEGATION=1). When the reference identifier's name check fails and POSH
 * does not vouch for the certificate (POSH is always tried first), the source domain's delegation document for
 * the service (posh_lookup_delegation()) is read, and a certificate that carries one of the delegated "domain"
 * names is accepted: OpenSSL then verifies the chain and that name as usual (a trusted chain is required even in
 * POSH_MODE_PIN; nothing else is laundered). SSL_get_posh_status() is then POSH_STATUS_DELEGATED and the message
 * says "delegated to NAME by URL". Non-blocking contexts look the document up without blocking too. Applies to
 * every connection of ctx that uses POSH (SSL_set_posh_verify() ones too). 1 ok, 0 error (POSH is not installed on
 * ctx by SSL_CTX_set_posh_verify() or SSL_set_posh_verify(), or the shim installed it: use POSH_DELEGATION=1).
 */
POSH_EXPORT int SSL_CTX_set_posh_delegation(SSL_CTX *ctx, int on);
/*
 * A descriptor that becomes readable (POLLIN) when the POSH lookup this connection waits for is done; -1 when it
 * waits for none (status not POSH_STATUS_PENDING). Owned by the library: never read, write or close it; it is
 * valid until the next SSL_connect()/SSL_do_handshake()/SSL_check_posh_peer() on ssl or SSL_free(), whichever
 * comes first.
 */
POSH_EXPORT int SSL_get_posh_wait_fd(const SSL *ssl);

typedef enum posh_status {
    POSH_STATUS_NONE = 0,     /* POSH did not take part (no handshake yet, name matched, or not enabled) */
    POSH_STATUS_PKIX = 1,     /* the reference identifier matched the certificate: POSH was not needed */
    POSH_STATUS_ACCEPTED = 2, /* the name did not match and POSH vouched for the certificate */
    POSH_STATUS_REJECTED = 3, /* the name did not match and POSH did not vouch (see the error) */
    POSH_STATUS_PENDING = 4,  /* non-blocking: the lookup runs; the handshake returned WANT_RETRY_VERIFY */
    POSH_STATUS_DELEGATED = 5 /* the name did not match; the source domain delegated the service to a name the
                               * certificate carries (SSL_CTX_set_posh_delegation) */
} posh_status;

/* After the handshake: what POSH decided for this connection. */
POSH_EXPORT posh_status SSL_get_posh_status(const SSL *ssl);
/* The POSH error of a rejected connection (POSH_OK otherwise). */
POSH_EXPORT posh_err SSL_get_posh_error(const SSL *ssl);
/*
 * Detail of the decision: the source domain, the URL and the reason or the descriptor that matched. Printable
 * ASCII only, escaped as posh_result_message() says (a lookup's message is embedded as it is, not escaped twice).
 */
POSH_EXPORT const char *SSL_get_posh_message(const SSL *ssl);

/*
 * For an application that checks the peer's name itself after the handshake. The source domain (normalised:
 * lower case, no trailing dot) POSH vouched for on this connection (status POSH_STATUS_ACCEPTED or
 * POSH_STATUS_DELEGATED, and the verification passed as a whole: SSL_get_verify_result() is X509_V_OK), or NULL.
 * Valid until the next handshake on ssl or SSL_free().
 */
POSH_EXPORT const char *SSL_get_posh_vouched_name(const SSL *ssl);
/*
 * X509_check_host() for the connection's peer: 1 when cert carries name (as X509_check_host(cert, name, namelen,
 * flags, peername) says) or, when it does not, when cert is this connection's peer certificate (the object or a
 * copy) and POSH vouched for exactly name on ssl (SSL_get_posh_vouched_name()); then *peername (if not NULL) is
 * a copy of name the caller frees with OPENSSL_free(). 0 no, -1 error. Put it where the application calls
 * X509_check_host() today. POSH only answers where it ran: a connection with SSL_VERIFY_NONE and no host name
 * set makes no POSH request, and gets X509_check_host()'s answer.
 */
POSH_EXPORT int SSL_check_posh_host(SSL *ssl, X509 *cert, const char *name, size_t namelen, unsigned int flags,
                                    char **peername);
/*
 * After the handshake (server or client side): is the peer's certificate, whose chain verified, valid for domain
 * by PKIX or vouched for by domain's POSH document for service? For protocols where the claimed identity arrives
 * only inside TLS (XMPP direct TLS, XEP-0368). Returns what SSL_get_posh_status() then says:
 *   POSH_STATUS_PKIX      the certificate carries domain (no lookup);
 *   POSH_STATUS_ACCEPTED  domain vouches for the leaf;
 *   POSH_STATUS_REJECTED  not vouched, or not eligible (SSL_get_posh_error(), SSL_get_posh_message() say why):
 *                         the handshake has not finished, no peer certificate, SSL_get_verify_result() is not
 *                         X509_V_OK (POSH_ERR_CERTIFICATE: only a chain that verified in full is eligible, whatever
 *                         the application's verify callback let through; a host name the application set must
 *                         have matched), an invalid domain or service, the lookup's error;
 *   POSH_STATUS_PENDING   nonblocking != 0 and the lookup is not cached: it runs on the client's engine thread,
 *                         SSL_get_posh_wait_fd() becomes readable when it is done; call again with the same
 *                         arguments (earlier is harmless). Past the engine's bounds: REJECTED, POSH_ERR_BUSY.
 * nonblocking 0: blocks for at most the lookup's timeout. Uses ctx's client (SSL_CTX_set_posh_client()) or the
 * default client; POSH need not be enabled on ctx. It never changes SSL_get_verify_result() nor the connection:
 * the application acts on the answer (e.g. closes the stream). A match is never a trust anchor, even in
 * POSH_MODE_PIN. Call it for one domain at a time per SSL (a call for another domain abandons a pending one).
 */
POSH_EXPORT posh_status SSL_check_posh_peer(SSL *ssl, const char *domain, const char *service, int nonblocking);

#ifdef __cplusplus
}
#endif

#endif /* POSH_H */
