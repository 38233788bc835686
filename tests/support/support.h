/*
 * support.h - test support: real servers on 127.0.0.1 (nginx, an in-process TLS server, a fault-injecting
 * HTTPS server) and a throwaway PKI generated at test time. Nothing here touches any non-loopback address.
 *
 * Conventions: functions returning int return 0 on success and -1 on failure; functions returning a pointer
 * return NULL on failure. On failure ts_error() says why (thread-local, overwritten by the next failure), and
 * the message is also printed to stderr so that a failed cr_assert comes with its cause. Every free and stop
 * function accepts NULL. Readiness is always awaited with a bounded deadline, never with a fixed sleep.
 *
 * Threads: each handle may be used from one test thread at a time; the servers run their own threads.
 */
#ifndef POSH_TEST_SUPPORT_H
#define POSH_TEST_SUPPORT_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* ------------------------------------------------------------------------------------------------------ */
/* Errors                                                                                                 */

/* The last failure of a support function in this thread ("" if none). */
const char *ts_error(void);
/* Record a failure (printf-style); also printed to stderr. Used by the support code. */
void ts_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------------------------------------------ */
/* util.c                                                                                                 */

/* A fresh directory /tmp/posh-test-XXXXXX. Caller frees the string (and removes the tree: ts_rmtree). */
char *ts_tmpdir(void);
/* Remove dir and everything under it (symlinks are not followed). Refuses paths outside /tmp/. */
void ts_rmtree(const char *dir);
/* A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close), or -1. Another
 * process may take it before you bind it: servers that use it retry with a new port on EADDRINUSE. */
int ts_free_port(void);
/* Write len bytes to path (created 0644 or truncated). Written to path.tmp first and renamed, so a reader
 * (nginx) never sees a partial file. */
int ts_write_file(const char *path, const void *data, size_t len);
/* The whole file, NUL-terminated (the NUL not counted in *len; len may be NULL). Caller frees. */
char *ts_read_file(const char *path, size_t *len);
/* Poll connect() to 127.0.0.1:port until it is accepted: 0, or -1 after timeout_ms. */
int ts_wait_port(int port, int timeout_ms);
/* Milliseconds on the monotonic clock. */
int64_t ts_now_ms(void);
/*
 * Move the calling process (and so every child it starts afterwards) into a new network namespace with only
 * loopback, brought up: fixed ports (5222, 5269, 53, ...) are then ours alone, and no packet can leave. Needs
 * root (CAP_SYS_ADMIN). 0, or -1 with ts_error().
 */
int ts_private_network(void);
/*
 * Fork and exec argv[0] with exactly env: stdin from in_fd, stdout and stderr to out_fd, in a process group of
 * its own, all signals unblocked. die_with_parent: it gets SIGKILL when the calling thread ends (a crashed test
 * leaves nothing running). Only async-signal-safe calls between fork and exec (tests have threads). The pid,
 * or -1 when fork failed; the caller keeps its descriptors.
 */
pid_t ts_spawn(const char *const argv[], char *const env[], int in_fd, int out_fd, int die_with_parent);

/* ------------------------------------------------------------------------------------------------------ */
/* pki.c - EC P-256 keys, SHA-256 signatures, serial numbers unique within the process (random + counter). */

typedef struct ts_ca ts_ca;
typedef struct ts_cert ts_cert;

typedef struct ts_cert_opts {
    const char *dns[8];    /* subjectAltName dNSNames, up to 8, NULL-terminated if fewer; none: no SAN at all */
    const char *cn;        /* subject CN (NULL: no CN) */
    long not_before_days;  /* validity as offsets from now in days; both 0 means -1 .. +30 */
    long not_after_days;   /*   e.g. -10/-1 expired, +1/+30 not yet valid */
    int self_signed;       /* signed by its own key, issuer = subject; the ca argument is ignored (may be NULL) */
    int is_ca;             /* basicConstraints CA:TRUE + keyCertSign; otherwise CA:FALSE, EKU serverAuth+clientAuth,
                            * keyUsage digitalSignature (none when self-signed, so OpenSSL sees it as self-signed) */
    EVP_PKEY *key;         /* reuse this key (same SPKI, different certificate); NULL: a new key */
} ts_cert_opts;

/* A self-signed root CA "CN=cn". */
ts_ca *ts_ca_new(const char *cn);
/* An intermediate CA "CN=cn" issued by parent (which may be freed afterwards). */
ts_ca *ts_ca_new_intermediate(ts_ca *parent, const char *cn);
void ts_ca_free(ts_ca *ca);
X509 *ts_ca_x509(ts_ca *ca);            /* borrowed */
EVP_PKEY *ts_ca_key(ts_ca *ca);         /* borrowed */
const char *ts_ca_pem(ts_ca *ca);       /* this CA's certificate, PEM */
/* Write this CA's certificate (PEM) to path: a trust-anchor file when ca is a root. */
int ts_ca_write(ts_ca *ca, const char *path);
/* Write a PEM CRL signed by ca (lastUpdate 1 h ago, nextUpdate in 7 days) revoking the n certificates. */
int ts_ca_write_crl(ts_ca *ca, ts_cert *const *revoked, size_t n, const char *path);

/* Issue a certificate from ca as described by o. */
ts_cert *ts_cert_issue(ts_ca *ca, const ts_cert_opts *o);
void ts_cert_free(ts_cert *c);
X509 *ts_cert_x509(ts_cert *c);         /* borrowed */
EVP_PKEY *ts_cert_key(ts_cert *c);      /* borrowed */
/* The intermediates a server sends after the leaf (the issuing CAs, root excluded; possibly empty). Borrowed. */
STACK_OF(X509) *ts_cert_chain(ts_cert *c);
const char *ts_cert_pem(ts_cert *c);       /* the certificate */
const char *ts_cert_key_pem(ts_cert *c);   /* its private key (PKCS#8, unencrypted) */
const char *ts_cert_chain_pem(ts_cert *c); /* the certificate, then every CA above it up to the root */
const unsigned char *ts_cert_der(ts_cert *c, size_t *len);
/* Write dir/basename.crt (leaf then intermediates, as a server presents it) and dir/basename.key. */
int ts_cert_write(ts_cert *c, const char *dir, const char *basename);
/* Standard base64 (padded) of the hash of the whole certificate's DER. hash: a POSH name ("sha-1",
 * "sha-224", "sha-256", "sha-384", "sha-512"). Caller frees. */
char *ts_cert_fingerprint_b64(ts_cert *c, const char *hash);
/*
 * The twin of an ECDSA-signed certificate (a P-256 issuer): its to-be-signed bytes and signature algorithm, the
 * signature (r, s) made (r, n - s), which is as valid: another certificate, with another DER and fingerprint,
 * that verifies under the same issuer and carries the same key. NULL on error (ts_error()).
 */
X509 *ts_x509_malleate(X509 *x);

/* ------------------------------------------------------------------------------------------------------ */
/* nginx.c - the real nginx (POSH_TEST_NGINX) as a child process, single process (master_process off), on
 * 127.0.0.1: one TLS port (HTTP/1.1 only) and one plain HTTP port, every site on both, chosen by SNI/Host.
 * The first site added is the default server (served for unknown or absent SNI). Files are served with
 * Content-Type application/json. Everything nginx writes lives in a new directory under dir. The child gets
 * SIGKILL if the thread that started it dies, so a crashed test leaves no server behind. */

typedef struct ts_nginx ts_nginx;

/* A stopped instance whose files (config, logs, docroots) go into a new directory dir/nginx-XXXXXX. */
ts_nginx *ts_nginx_new(const char *dir);
/* A virtual host. cert_path holds the leaf then any intermediates (ts_cert_write's .crt). Before start. */
int ts_nginx_add_site(ts_nginx *n, const char *server_name, const char *cert_path, const char *key_path);
/* Publish body at path (e.g. "/.well-known/posh/xmpp-server.json") on that site. Before or after start:
 * the file is replaced atomically, nginx reads it per request. ts_nginx_put_bytes: any bytes. */
int ts_nginx_put(ts_nginx *n, const char *server_name, const char *path, const char *body);
int ts_nginx_put_bytes(ts_nginx *n, const char *server_name, const char *path, const void *data, size_t len);
/* Remove a published file (requests get 404 from then on). */
int ts_nginx_delete(ts_nginx *n, const char *server_name, const char *path);
/* Exact-match location answering `return code location;` (code 301/302/303/307/308), sent verbatim
 * (absolute_redirect off, so a relative location stays relative). Before start. */
int ts_nginx_redirect(ts_nginx *n, const char *server_name, const char *path, int code, const char *location);
/* Exact-match location answering with this status (100..599) and nginx's own body. Before start. */
int ts_nginx_status(ts_nginx *n, const char *server_name, const char *path, int code);
/* Start and wait until it accepts on both ports (deadline 10 s; the error log is in ts_error() on failure). */
int ts_nginx_start(ts_nginx *n);
int ts_nginx_port(ts_nginx *n);         /* the TLS port, once started (else -1) */
int ts_nginx_http_port(ts_nginx *n);    /* the plain-HTTP port, once started (else -1) */
const char *ts_nginx_dir(ts_nginx *n);  /* its directory (nginx.conf, error.log, access.log, sites/) */
/* Requests logged for server_name (NULL: any) and path (NULL: any; else compared with $request_uri
 * exactly, query string included), on either port. First makes sure every request nginx answered before
 * the call is in the log. -1 on error. */
long ts_nginx_requests(ts_nginx *n, const char *server_name, const char *path);
/* Distinct TLS connections that carried at least one request for server_name (NULL: any). -1 on error. */
long ts_nginx_connections(ts_nginx *n, const char *server_name);
/* Stop (SIGTERM, waitpid; SIGKILL after 5 s) and free. The directory is left for ts_rmtree(dir). */
void ts_nginx_free(ts_nginx *n);

/* ------------------------------------------------------------------------------------------------------ */
/* tlsserver.c - an in-process TLS server on 127.0.0.1, a thread per connection (TLS 1.2 and 1.3). */

typedef struct ts_tls ts_tls;
typedef struct ts_conn ts_conn;
/* Called after a successful handshake; the server then sends close_notify and closes. */
typedef void (*ts_tls_handler)(ts_conn *c, void *arg);

/* Present leaf (+ chain, may be NULL) with key; complete handshakes and close. References are taken. */
ts_tls *ts_tls_start(X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key);
/* Same, running handler on each connection after its handshake. */
ts_tls *ts_tls_start_with(X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key, ts_tls_handler handler, void *arg);
int ts_tls_port(ts_tls *s);
/* Connections accepted (handshakes attempted). Counted at accept(), so a client whose handshake reached
 * the server is always counted by the time the client sees its result. */
long ts_tls_accepted(ts_tls *s);
/* Handshakes that completed on the server side (counted after SSL_accept: may lag the client by a moment). */
long ts_tls_handshakes(ts_tls *s);
/* Stop accepting, abort every connection (blocked reads/writes/waits return), join all threads, free. */
void ts_tls_stop(ts_tls *s);

/* For handlers. */
SSL *ts_conn_ssl(ts_conn *c);
/* Wait up to timeout_ms (-1: forever): 0 when the time passed quietly, -1 when the server is stopping or the
 * peer closed or sent something. */
int ts_conn_wait(ts_conn *c, int timeout_ms);
/* End this connection without close_notify once the handler returns (a truncated, abrupt close). */
void ts_conn_abort(ts_conn *c);

/* ------------------------------------------------------------------------------------------------------ */
/* evilhttps.c - an in-process fault-injecting HTTPS/1.1 server (built on ts_tls). One request per connection,
 * every response has `Connection: close`. Routes by exact request-target (query string included); an
 * unknown target gets 404. */

typedef struct ts_evil ts_evil;

typedef struct ts_evil_route_opts {
    int status;                /* 0: 200 */
    const char *location;      /* Location header, if not NULL */
    const char *content_type;  /* NULL: application/json */
    int no_content_type;       /* send no Content-Type header at all */
    const char *headers;       /* extra raw header lines, each ending in "\r\n", if not NULL */
    const void *body;          /* body bytes (NUL bytes allowed) */
    size_t body_len;           /*   and their number (0 with a body: strlen(body)) */
    size_t repeat_body_bytes;  /* then this many filler bytes, generated, never allocated whole */
    char fill;                 /*   the filler byte (0: 'a') */
    int drip_ms;               /* > 0: send the body drip_bytes at a time, drip_ms apart */
    size_t drip_bytes;         /*   0: 1 */
    int no_content_length;     /* omit Content-Length: the body ends when the connection closes */
    int hang;                  /* read the request, then never answer (until the client leaves or stop) */
    int close_immediately;     /* read the request, then close the TCP connection without a response */
} ts_evil_route_opts;

/* A stopped server presenting leaf (no intermediates) with key; references are taken. */
ts_evil *ts_evil_new(X509 *leaf, EVP_PKEY *key);
/* Add or replace the route for path. Before or after start. The options are copied. */
int ts_evil_route(ts_evil *e, const char *path, const ts_evil_route_opts *o);
int ts_evil_start(ts_evil *e);
int ts_evil_port(ts_evil *e);
/* Requests whose head was read, for this request-target (NULL: all). Counted before the response is sent. */
long ts_evil_requests(ts_evil *e, const char *path);
/* The raw head (request line + headers) of the last request for path (NULL: any). Caller frees; NULL if
 * none. */
char *ts_evil_last_request(ts_evil *e, const char *path);
/* Stop promptly even with hanging or dripping connections (their clients see the connection end), join
 * every thread, free everything. Also the way to free a server never started. */
void ts_evil_stop(ts_evil *e);

/* ------------------------------------------------------------------------------------------------------ */
/* relay.c - a TCP relay on 127.0.0.1 to 127.0.0.1:upstream_port (e.g. nginx's TLS port), modelling a slow or
 * dead web server: each accepted connection waits delay_ms (then connects upstream and copies bytes both
 * ways until either side closes), or with hang never connects upstream and never sends a byte (the client
 * waits until it gives up or the relay stops). One thread and one poll() loop serve every connection (hundreds
 * at once); the delay is a deadline in that loop, which a stop ends early. */

typedef struct ts_relay ts_relay;

ts_relay *ts_relay_start(int upstream_port, int delay_ms, int hang);
int ts_relay_port(ts_relay *r);
long ts_relay_accepted(ts_relay *r);     /* connections accepted so far */
/* The most connections held in their delay at once so far: with a delay, the requests in flight at once (a
 * connection kept open for reuse after its request is past its delay). */
long ts_relay_peak_waiting(ts_relay *r);
void ts_relay_stop(ts_relay *r);          /* close everything promptly, join every thread, free; NULL ok */

#endif
