/*
 * fixture.h - the scenario most integration tests share: a throwaway PKI, a real nginx publishing POSH
 * documents for foo.example.com and hosting.example.net, and a client configured to reach it on 127.0.0.1.
 */
#ifndef POSH_TEST_FIXTURE_H
#define POSH_TEST_FIXTURE_H

#include "support.h"

#include <posh.h>

#define FOO "foo.example.com"
#define HOSTING "hosting.example.net"
#define RFC7711_PATH "/.well-known/posh/xmpp-server.json"
#define DRAFT02_PATH "/.well-known/posh._xmpp-server._tcp.json"

typedef struct fx {
    char *dir;
    ts_ca *ca;
    ts_cert *web_foo;      /* the web servers' certificates */
    ts_cert *web_hosting;
    ts_cert *svc;          /* xmpp.hosting.example.net: what the provider's XMPP server presents */
    ts_cert *other;        /* other.hosting.example.net: a valid certificate nobody vouches for */
    ts_nginx *nginx;
    char ca_file[512];
    char connect_to[512];
} fx;

/* A certificate for name (its CN and one DNS name) from ca (NULL and self_signed: self-signed), valid from nb_days
 * to na_days from now. Asserts on failure. */
ts_cert *fx_issue(ts_ca *ca, const char *name, long nb_days, long na_days, int self_signed);
/* The same with the default validity, reusing key (NULL: a new one): same SPKI, another certificate. */
ts_cert *fx_issue_key(ts_ca *ca, const char *name, EVP_PKEY *key);

/* PKI and nginx sites (not started: add redirects and statuses, then fx_start). Asserts on failure. */
void fx_init(fx *f);
void fx_start(fx *f);
void fx_fini(fx *f);
/* A fingerprints document with one descriptor per certificate, using hash ("sha-256", ...). Caller frees. */
char *fx_doc(ts_cert *const *certs, size_t n, const char *hash, long expires);
char *fx_doc1(ts_cert *cert, long expires);
/* A reference document. Caller frees. */
char *fx_ref(const char *url, long expires);
void fx_put(fx *f, const char *host, const char *path, const char *body);
/* Like fx_put, and frees body. */
void fx_put_free(fx *f, const char *host, const char *path, char *body);
/* The file name OpenSSL's hashed directory lookup opens for ca's certificate (HASH.0). */
void fx_hashed_name(ts_ca *ca, char *out, size_t outlen);
/* A configuration trusting the test CA and routing both sites to nginx. */
posh_config *fx_config(fx *f);
posh_client *fx_client(fx *f);
/* A client of cfg, which it frees. Asserts that there is one. */
posh_client *fx_client_of(posh_config *cfg);
long fx_requests(fx *f, const char *host, const char *path);
/* Export POSH_CA_FILE and POSH_CONNECT_TO so that the default client reaches the fixture. */
void fx_export_env(fx *f);

/* A growing string: start from {0}; s is NULL until something is added. Caller frees s. */
typedef struct fx_sb {
    char *s;
    size_t len, cap;
} fx_sb;

void fx_sb_addf(fx_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A terminal-hijacking Location: sets the window title, clears the screen, prints a fake verdict in red. */
#define FX_EVIL_LOCATION "ftp://x/\x1b]0;TITLE\x07\x1b[2J\x1b[31mFAKE: accepted by POSH\x1b[0m\\x1b\xff"
/* The same as the library must show it: \xHH for each byte outside 0x20..0x7e, and the backslash doubled. */
#define FX_EVIL_ESCAPED "ftp://x/\\x1b]0;TITLE\\x07\\x1b[2J\\x1b[31mFAKE: accepted by POSH\\x1b[0m\\\\x1b\\xff"
/* Expect every byte of s to be printable ASCII (0x20..0x7e); what names s in the failure. */
void fx_expect_printable(const char *what, const char *s);
/* What was written to stderr (the library log's default sink) while fn(arg) ran. Caller frees. */
char *fx_stderr_of(void (*fn)(void *), void *arg);

#endif
