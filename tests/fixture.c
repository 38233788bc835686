/*
 * fixture.c - see fixture.h.
 */
#include "fixture.h"

#include <criterion/criterion.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* name as its only SAN and its CN, the rest of o as given; asserts on failure. */
static ts_cert *issue_named(ts_ca *ca, const char *name, ts_cert_opts o)
{
    o.dns[0] = name;
    o.cn = name;
    ts_cert *c = ts_cert_issue(ca, &o);
    cr_assert_not_null(c, "issue %s: %s", name, ts_error());
    return c;
}

ts_cert *fx_issue(ts_ca *ca, const char *name, long nb_days, long na_days, int self_signed)
{
    return issue_named(ca, name, (ts_cert_opts){.not_before_days = nb_days, .not_after_days = na_days,
                                                .self_signed = self_signed});
}

ts_cert *fx_issue_key(ts_ca *ca, const char *name, EVP_PKEY *key)
{
    return issue_named(ca, name, (ts_cert_opts){.key = key});
}

static ts_cert *issue(ts_ca *ca, const char *name)
{
    return fx_issue(ca, name, -1, 30, 0);
}

void fx_init(fx *f)
{
    char path[600];
    memset(f, 0, sizeof(*f));
    cr_assert_not_null(f->dir = ts_tmpdir());
    cr_assert_not_null(f->ca = ts_ca_new("posh test CA"));
    f->web_foo = issue(f->ca, FOO);
    f->web_hosting = issue(f->ca, HOSTING);
    f->svc = issue(f->ca, "xmpp.hosting.example.net");
    f->other = issue(f->ca, "other.hosting.example.net");
    snprintf(f->ca_file, sizeof(f->ca_file), "%s/ca.pem", f->dir);
    cr_assert_eq(ts_ca_write(f->ca, f->ca_file), 0);
    cr_assert_eq(ts_cert_write(f->web_foo, f->dir, "foo"), 0);
    cr_assert_eq(ts_cert_write(f->web_hosting, f->dir, "hosting"), 0);
    cr_assert_not_null(f->nginx = ts_nginx_new(f->dir));
    snprintf(path, sizeof(path), "%s/foo.crt", f->dir);
    {
        char key[600];
        snprintf(key, sizeof(key), "%s/foo.key", f->dir);
        cr_assert_eq(ts_nginx_add_site(f->nginx, FOO, path, key), 0);
        snprintf(path, sizeof(path), "%s/hosting.crt", f->dir);
        snprintf(key, sizeof(key), "%s/hosting.key", f->dir);
        cr_assert_eq(ts_nginx_add_site(f->nginx, HOSTING, path, key), 0);
    }
}

void fx_start(fx *f)
{
    int port;
    cr_assert_eq(ts_nginx_start(f->nginx), 0, "nginx did not start");
    port = ts_nginx_port(f->nginx);
    cr_assert_gt(port, 0);
    snprintf(f->connect_to, sizeof(f->connect_to), "%s:443:127.0.0.1:%d,%s:443:127.0.0.1:%d", FOO, port, HOSTING,
             port);
}

void fx_fini(fx *f)
{
    ts_nginx_free(f->nginx);
    ts_cert_free(f->web_foo);
    ts_cert_free(f->web_hosting);
    ts_cert_free(f->svc);
    ts_cert_free(f->other);
    ts_ca_free(f->ca);
    if (f->dir != NULL)
        ts_rmtree(f->dir);
    free(f->dir);
}

char *fx_doc(ts_cert *const *certs, size_t n, const char *hash, long expires)
{
    size_t cap = 64 + n * 160, len = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    len += (size_t)snprintf(s + len, cap - len, "{\"fingerprints\":[");
    for (size_t i = 0; i < n; i++) {
        char *b64 = ts_cert_fingerprint_b64(certs[i], hash);
        cr_assert_not_null(b64);
        len += (size_t)snprintf(s + len, cap - len, "%s{\"%s\":\"%s\"}", i ? "," : "", hash, b64);
        free(b64);
    }
    snprintf(s + len, cap - len, "],\"expires\":%ld}", expires);
    return s;
}

char *fx_doc1(ts_cert *cert, long expires)
{
    return fx_doc(&cert, 1, "sha-256", expires);
}

char *fx_ref(const char *url, long expires)
{
    char *s = NULL;
    cr_assert_geq(asprintf(&s, "{\"url\":\"%s\",\"expires\":%ld}", url, expires), 0);
    return s;
}

void fx_put(fx *f, const char *host, const char *path, const char *body)
{
    cr_assert_eq(ts_nginx_put(f->nginx, host, path, body), 0, "publish %s%s", host, path);
}

void fx_put_free(fx *f, const char *host, const char *path, char *body)
{
    fx_put(f, host, path, body);
    free(body);
}

posh_config *fx_config(fx *f)
{
    posh_config *cfg = posh_config_new();
    cr_assert_not_null(cfg);
    cr_assert_eq(posh_config_set_ca_file(cfg, f->ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, f->connect_to), POSH_OK, "%s", posh_config_error(cfg));
    return cfg;
}

posh_client *fx_client(fx *f)
{
    return fx_client_of(fx_config(f));
}

posh_client *fx_client_of(posh_config *cfg)
{
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c);
    return c;
}

long fx_requests(fx *f, const char *host, const char *path)
{
    return ts_nginx_requests(f->nginx, host, path);
}

void fx_export_env(fx *f)
{
    setenv("POSH_CA_FILE", f->ca_file, 1);
    setenv("POSH_CONNECT_TO", f->connect_to, 1);
}

void fx_sb_addf(fx_sb *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cr_assert_geq(n, 0);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        cr_assert_not_null(b->s = realloc(b->s, b->cap));
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void fx_expect_printable(const char *what, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e) {
            cr_expect(0, "%s: byte 0x%02x at offset %zu", what, *p, (size_t)(p - (const unsigned char *)s));
            return;
        }
    }
}

char *fx_stderr_of(void (*fn)(void *), void *arg)
{
    FILE *tmp = tmpfile();
    int saved = dup(2);
    char *out;
    long len;

    cr_assert(tmp != NULL && saved >= 0);
    fflush(stderr);
    cr_assert_geq(dup2(fileno(tmp), 2), 0);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    len = ftell(tmp);
    cr_assert_geq(len, 0);
    cr_assert_not_null(out = calloc(1, (size_t)len + 1));
    rewind(tmp);
    cr_assert_eq(fread(out, 1, (size_t)len, tmp), (size_t)len);
    fclose(tmp);
    return out;
}

void fx_hashed_name(ts_ca *ca, char *out, size_t outlen)
{
    snprintf(out, outlen, "%08lx.0", X509_subject_name_hash(ts_ca_x509(ca)));
}
