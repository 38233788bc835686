/*
 * shim_internal.h - what the parts of libposh-preload.so share: start-up, symbol resolution, the caller test,
 * and each part's entry points. shim.c: contexts and services; vouch.c: a connection's approval and the
 * program's own name checks; stream.c: the XMPP stream header a program sent before its handshake.
 */
#ifndef POSH_SHIM_INTERNAL_H
#define POSH_SHIM_INTERNAL_H

#include "client_internal.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
/* The symbol version at which Debian's libssl3 and libcrypto3 define every function. */
#define OPENSSL_VERSION_NODE "OPENSSL_3.0.0"

/* Resolve every real function (once, thread-safe). Only symbols and plain memory: never OpenSSL or libcurl. */
void shim_ready(void);
/*
 * OpenSSL's definition of name (SSL_*: libssl.so.3's, else libcrypto.so.3's) at version; without a version, the
 * next definition after this module (libc). NULL if none or self.
 */
void *shim_resolve(const char *name, const char *version, void *self);
/* What the program's own call of name reaches without this module (RTLD_NEXT); NULL if nothing or self. */
void *shim_resolve_own(const char *name, void *self);
/* OpenSSL's name, or the program's own when that is another library's (*foreign set: only pass through). */
void *shim_resolve_openssl_or_own(const char *name, void *self, int *foreign);
/* Is this return address in the program's own code, as opposed to OpenSSL itself, libposh or this module? */
int shim_caller_is_program(const void *ret);

/* ---- shim.c ---- */
/* The service of ssl's connection (canonical "_svc._proto" into out) as the verification will choose it; 0: none. */
int shim_choose_service(SSL *ssl, char *out, size_t outlen);

/* ---- vouch.c ---- */
void shim_vouch_init(void);
void shim_vouch_remember(X509 *leaf, const char *reference, long ttl);
void shim_vouch_forget(X509 *leaf);
/* The hook deferred (client_internal.h): remember that POSH may answer the program's own questions later. */
void shim_vouch_defer(X509 *leaf, const char *reference, const char *service);

/*
 * Can a connection dialled to addr carry an XMPP stream whose header the verification will read? 0 when the
 * service rule (read at the first verification) gives it another service or none: POSH_SERVICE names another,
 * or it is unset and addr's port is not an XMPP one. 1 otherwise, and before the rule is read. Lock-free and
 * async-signal-safe (connect() may run in a signal handler).
 */
int shim_connect_may_be_xmpp(const struct sockaddr *addr, socklen_t len);

/* ---- stream.c ---- */
void shim_stream_init(void);
/*
 * The `to` of the last XMPP stream header the program sent in plaintext on ssl's socket before the handshake
 * (normalised, into out of POSH_MAX_DOMAIN_LEN + 2 bytes); the record is consumed. 1 found, 0 none.
 */
int shim_stream_to(SSL *ssl, char *out, size_t outlen);
/*
 * The `from` of the last XMPP stream header the peer sent in plaintext on ssl's socket, one the program accepted
 * (an XMPP s2s socket), before the handshake (normalised, into out of POSH_MAX_DOMAIN_LEN + 2 bytes); the record
 * is consumed. 1 found, 0 none.
 */
int shim_stream_from(SSL *ssl, char *out, size_t outlen);

#endif /* POSH_SHIM_INTERNAL_H */
