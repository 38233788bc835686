/*
 * selftest.c - proof that the test support does what support.h says: the PKI verifies (or fails) as it
 * should, nginx serves SNI sites and counts requests, the TLS server handshakes, the evil server misbehaves
 * exactly as asked and still stops promptly; the relay delays, copies both ways, hangs and stops promptly.
 */
#include "support.h"

#include <criterion/criterion.h>
#include <curl/curl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#define FOO "foo.example.com"
#define BAR "bar.example.org"

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void suite_init(void)
{
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void suite_fini(void)
{
    curl_global_cleanup();
}

static ts_cert *leaf(ts_ca *ca, const char *name)
{
    ts_cert_opts o = {.dns = {name}, .cn = name};
    ts_cert *c = ts_cert_issue(ca, &o);
    cr_assert_not_null(c, "%s", ts_error());
    return c;
}

/* ---- a small libcurl client -------------------------------------------------------------------------- */

typedef struct resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len, cap;
    char location[512];
    char ctype[128];
    char error[CURL_ERROR_SIZE];
} resp;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    resp *r = arg;
    if (r->len + size * n + 1 > r->cap) {
        size_t cap = (r->len + size * n + 1) * 2;
        char *nb = realloc(r->body, cap);
        if (nb == NULL)
            return 0;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    resp *r = arg;
    size_t len = size * n;
    if (len > 9 && strncasecmp(p, "Location:", 9) == 0)
        snprintf(r->location, sizeof(r->location), "%.*s", (int)(len - 9), p + 9);
    if (len > 13 && strncasecmp(p, "Content-Type:", 13) == 0)
        snprintf(r->ctype, sizeof(r->ctype), "%.*s", (int)(len - 13), p + 13);
    /* trim " value\r\n" */
    for (char *s = r->location; *s; s++)
        if (*s == '\r' || *s == '\n')
            *s = '\0';
    for (char *s = r->ctype; *s; s++)
        if (*s == '\r' || *s == '\n')
            *s = '\0';
    return len;
}

/* GET url with the test CA, host:443 routed to 127.0.0.1:port (port 0: no routing). curl may be NULL. */
static resp get_with(CURL *curl, const char *url, const char *cafile, const char *host, int port, long timeout_ms)
{
    resp r = {0};
    struct curl_slist *to = NULL;
    char map[300];
    CURL *own = NULL;

    if (curl == NULL)
        curl = own = curl_easy_init();
    cr_assert_not_null(curl);
    if (port > 0) {
        snprintf(map, sizeof(map), "%s:443:127.0.0.1:%d", host, port);
        to = curl_slist_append(NULL, map);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECT_TO, to);
    curl_easy_setopt(curl, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(curl, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, r.error);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 10000L);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    r.rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_setopt(curl, CURLOPT_CONNECT_TO, NULL);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(to);
    if (own != NULL)
        curl_easy_cleanup(own);
    return r;
}

static resp get(const char *url, const char *cafile, const char *host, int port)
{
    return get_with(NULL, url, cafile, host, port, 0);
}

/* ---- a raw TLS client -------------------------------------------------------------------------------- */

static int tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

typedef struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    int ok; /* handshake completed and verified */
} client;

/* Handshake with 127.0.0.1:port as host, trusting anchor (NULL: nothing). */
static client tls_connect(int port, X509 *anchor, const char *host)
{
    client c = {0};
    c.ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(c.ctx);
    if (anchor != NULL)
        cr_assert_eq(X509_STORE_add_cert(SSL_CTX_get_cert_store(c.ctx), anchor), 1);
    SSL_CTX_set_verify(c.ctx, SSL_VERIFY_PEER, NULL);
    c.fd = tcp_connect(port);
    c.ssl = SSL_new(c.ctx);
    cr_assert_not_null(c.ssl);
    SSL_set_fd(c.ssl, c.fd);
    SSL_set_tlsext_host_name(c.ssl, host);
    SSL_set1_host(c.ssl, host);
    c.ok = SSL_connect(c.ssl) == 1 && SSL_get_verify_result(c.ssl) == X509_V_OK;
    ERR_clear_error();
    return c;
}

static void client_close(client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    close(c->fd);
}

/* ==== util ============================================================================================ */

TestSuite(util);

Test(util, files_and_dirs)
{
    char *dir = ts_tmpdir(), path[600], *back;
    size_t len = 0;
    struct stat st;
    const char data[] = "a\0b\nc";

    cr_assert_not_null(dir);
    cr_assert_eq(strncmp(dir, "/tmp/posh-test-", 15), 0);
    snprintf(path, sizeof(path), "%s/f.bin", dir);
    cr_assert_eq(ts_write_file(path, data, sizeof(data)), 0);
    back = ts_read_file(path, &len);
    cr_assert_not_null(back);
    cr_assert_eq(len, sizeof(data));
    cr_assert_eq(memcmp(back, data, len), 0);
    free(back);
    cr_assert_null(ts_read_file("/tmp/posh-test-does-not-exist/x", NULL));
    cr_assert_neq(ts_error()[0], '\0');
    snprintf(path, sizeof(path), "%s/sub", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/sub/g", dir);
    cr_assert_eq(ts_write_file(path, "x", 1), 0);
    ts_rmtree(dir);
    cr_assert_neq(stat(dir, &st), 0, "%s still exists", dir);
    free(dir);
}

Test(util, ports)
{
    int port = ts_free_port(), fd;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    long t0;

    cr_assert_gt(port, 1023);
    t0 = mono_ms();
    cr_assert_eq(ts_wait_port(port, 200), -1, "nothing listens there");
    cr_assert_geq(mono_ms() - t0, 190);
    cr_assert_lt(mono_ms() - t0, 1000);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 8), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    cr_assert_eq(ts_wait_port(ntohs(sa.sin_port), 1000), 0);
    close(fd);
}

/* ==== pki ============================================================================================= */

TestSuite(pki);

/* X509_verify_cert of c (with its chain) against anchor, for host (NULL: no name check), with crl if any. */
static int verify(ts_cert *c, ts_ca *anchor, const char *host, const char *crl_path)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int err;

    cr_assert_eq(X509_STORE_add_cert(store, ts_ca_x509(anchor)), 1);
    if (crl_path != NULL) {
        cr_assert_eq(X509_STORE_load_file(store, crl_path), 1);
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    cr_assert_eq(X509_STORE_CTX_init(ctx, store, ts_cert_x509(c), ts_cert_chain(c)), 1);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    if (host != NULL)
        X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx), host, 0);
    X509_verify_cert(ctx);
    err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return err;
}

Test(pki, leaf_verifies_with_names_and_times)
{
    ts_ca *ca = ts_ca_new("Test CA");
    ts_cert_opts two = {.dns = {FOO, "www." FOO}, .cn = FOO, .not_before_days = -1, .not_after_days = 30};
    ts_cert_opts expired = {.dns = {FOO}, .not_before_days = -10, .not_after_days = -1};
    ts_cert_opts future = {.dns = {FOO}, .not_before_days = 1, .not_after_days = 30};
    ts_cert *c, *old, *young;

    cr_assert_not_null(ca, "%s", ts_error());
    cr_assert_not_null(c = ts_cert_issue(ca, &two), "%s", ts_error());
    cr_assert_eq(verify(c, ca, FOO, NULL), X509_V_OK);
    cr_assert_eq(verify(c, ca, "www." FOO, NULL), X509_V_OK);
    cr_assert_eq(verify(c, ca, BAR, NULL), X509_V_ERR_HOSTNAME_MISMATCH);
    cr_assert_not_null(old = ts_cert_issue(ca, &expired));
    cr_assert_eq(verify(old, ca, FOO, NULL), X509_V_ERR_CERT_HAS_EXPIRED);
    cr_assert_not_null(young = ts_cert_issue(ca, &future));
    cr_assert_eq(verify(young, ca, FOO, NULL), X509_V_ERR_CERT_NOT_YET_VALID);
    cr_assert_eq(sk_X509_num(ts_cert_chain(c)), 0, "a root-issued leaf needs no intermediates");
    cr_assert_not_null(strstr(ts_cert_pem(c), "BEGIN CERTIFICATE"));
    cr_assert_not_null(strstr(ts_cert_key_pem(c), "BEGIN PRIVATE KEY"));
    cr_assert_eq(X509_check_private_key(ts_cert_x509(c), ts_cert_key(c)), 1);
    ts_cert_free(c);
    ts_cert_free(old);
    ts_cert_free(young);
    ts_ca_free(ca);
}

Test(pki, no_san_and_self_signed)
{
    ts_ca *ca = ts_ca_new("Test CA"), *other = ts_ca_new("Other CA");
    ts_cert_opts cn_only = {.cn = FOO};
    ts_cert_opts self = {.dns = {FOO}, .cn = FOO, .self_signed = 1};
    ts_cert *c = ts_cert_issue(ca, &cn_only), *s = ts_cert_issue(NULL, &self);

    cr_assert_not_null(c);
    cr_assert_not_null(s);
    cr_assert_eq(X509_get_ext_by_NID(ts_cert_x509(c), NID_subject_alt_name, -1), -1);
    cr_assert_eq(X509_check_issued(ts_cert_x509(s), ts_cert_x509(s)), X509_V_OK);
    cr_assert_eq(verify(s, ca, FOO, NULL), X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    cr_assert_eq(verify(c, other, NULL, NULL), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    ts_cert_free(c);
    ts_cert_free(s);
    ts_ca_free(ca);
    ts_ca_free(other);
}

Test(pki, intermediate_chain)
{
    ts_ca *root = ts_ca_new("Root"), *mid = ts_ca_new_intermediate(root, "Intermediate");
    ts_cert *c;
    char *dir = ts_tmpdir(), path[600], *crt;
    const char *p;
    int n = 0;

    cr_assert_not_null(mid, "%s", ts_error());
    c = leaf(mid, FOO);
    ts_ca_free(mid); /* the certificate keeps what it needs */
    cr_assert_eq(sk_X509_num(ts_cert_chain(c)), 1);
    cr_assert_eq(verify(c, root, FOO, NULL), X509_V_OK);
    cr_assert_eq(ts_cert_write(c, dir, "foo"), 0);
    snprintf(path, sizeof(path), "%s/foo.crt", dir);
    cr_assert_not_null(crt = ts_read_file(path, NULL));
    for (p = crt; (p = strstr(p, "BEGIN CERTIFICATE")) != NULL; p++)
        n++;
    cr_assert_eq(n, 2, "leaf + intermediate, no root");
    cr_assert_eq(strncmp(crt, ts_cert_pem(c), strlen(ts_cert_pem(c))), 0, "the leaf comes first");
    free(crt);
    for (n = 0, p = ts_cert_chain_pem(c); (p = strstr(p, "BEGIN CERTIFICATE")) != NULL; p++)
        n++;
    cr_assert_eq(n, 3, "chain PEM: leaf, intermediate, root");
    snprintf(path, sizeof(path), "%s/foo.key", dir);
    cr_assert_not_null(crt = ts_read_file(path, NULL));
    cr_assert_str_eq(crt, ts_cert_key_pem(c));
    free(crt);
    ts_cert_free(c);
    ts_ca_free(root);
    ts_rmtree(dir);
    free(dir);
}

Test(pki, crl_revokes)
{
    ts_ca *ca = ts_ca_new("Test CA");
    ts_cert *bad = leaf(ca, FOO), *good = leaf(ca, BAR);
    char *dir = ts_tmpdir(), crl[600], ca_path[600];

    snprintf(crl, sizeof(crl), "%s/ca.crl", dir);
    snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", dir);
    cr_assert_eq(ts_ca_write(ca, ca_path), 0);
    cr_assert_eq(ts_ca_write_crl(ca, &bad, 1, crl), 0, "%s", ts_error());
    cr_assert_eq(verify(bad, ca, FOO, crl), X509_V_ERR_CERT_REVOKED);
    cr_assert_eq(verify(good, ca, BAR, crl), X509_V_OK);
    cr_assert_eq(ts_ca_write_crl(ca, NULL, 0, crl), 0, "an empty CRL");
    cr_assert_eq(verify(bad, ca, FOO, crl), X509_V_OK);
    ts_cert_free(bad);
    ts_cert_free(good);
    ts_ca_free(ca);
    ts_rmtree(dir);
    free(dir);
}

Test(pki, fingerprints_and_serials)
{
    ts_ca *ca = ts_ca_new("Test CA");
    ts_cert *c = leaf(ca, FOO), *certs[40];
    ts_cert_opts same_key = {.dns = {FOO}, .key = ts_cert_key(c)};
    ts_cert *twin;
    unsigned char md[32], b64[64];
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    char *fp;

    /* sha-256 over the whole DER, standard padded base64 */
    SHA256(der, len, md);
    EVP_EncodeBlock(b64, md, 32);
    cr_assert_not_null(fp = ts_cert_fingerprint_b64(c, "sha-256"));
    cr_assert_str_eq(fp, (char *)b64);
    free(fp);
    cr_assert_eq(strlen(fp = ts_cert_fingerprint_b64(c, "sha-1")), 28);
    free(fp);
    cr_assert_eq(strlen(fp = ts_cert_fingerprint_b64(c, "sha-224")), 40);
    free(fp);
    cr_assert_eq(strlen(fp = ts_cert_fingerprint_b64(c, "sha-384")), 64);
    free(fp);
    cr_assert_eq(strlen(fp = ts_cert_fingerprint_b64(c, "sha-512")), 88);
    free(fp);
    cr_assert_null(ts_cert_fingerprint_b64(c, "md5"));
    cr_assert_null(ts_cert_fingerprint_b64(c, "SHA256"));

    /* same key, different certificate: same SPKI, different fingerprint */
    cr_assert_not_null(twin = ts_cert_issue(ca, &same_key));
    cr_assert_eq(EVP_PKEY_eq(ts_cert_key(twin), ts_cert_key(c)), 1);
    {
        char *a = ts_cert_fingerprint_b64(c, "sha-256"), *b = ts_cert_fingerprint_b64(twin, "sha-256");
        cr_assert_str_neq(a, b);
        free(a);
        free(b);
    }
    ts_cert_free(twin);

    for (int i = 0; i < 40; i++)
        certs[i] = leaf(ca, FOO);
    for (int i = 0; i < 40; i++)
        for (int j = i + 1; j < 40; j++)
            cr_assert_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(ts_cert_x509(certs[i])),
                                           X509_get0_serialNumber(ts_cert_x509(certs[j]))),
                          0);
    for (int i = 0; i < 40; i++)
        ts_cert_free(certs[i]);
    ts_cert_free(c);
    ts_ca_free(ca);
}

/* ==== nginx =========================================================================================== */

typedef struct site_fx {
    char *dir;
    char ca_file[600];
    ts_ca *ca;
    ts_cert *foo, *bar;
    ts_nginx *ngx;
} site_fx;

static void site_init(site_fx *f)
{
    char crt[600], key[600];
    memset(f, 0, sizeof(*f));
    cr_assert_not_null(f->dir = ts_tmpdir());
    cr_assert_not_null(f->ca = ts_ca_new("Test CA"));
    f->foo = leaf(f->ca, FOO);
    f->bar = leaf(f->ca, BAR);
    snprintf(f->ca_file, sizeof(f->ca_file), "%s/ca.pem", f->dir);
    cr_assert_eq(ts_ca_write(f->ca, f->ca_file), 0);
    cr_assert_eq(ts_cert_write(f->foo, f->dir, "foo"), 0);
    cr_assert_eq(ts_cert_write(f->bar, f->dir, "bar"), 0);
    cr_assert_not_null(f->ngx = ts_nginx_new(f->dir), "%s", ts_error());
    snprintf(crt, sizeof(crt), "%s/foo.crt", f->dir);
    snprintf(key, sizeof(key), "%s/foo.key", f->dir);
    cr_assert_eq(ts_nginx_add_site(f->ngx, FOO, crt, key), 0, "%s", ts_error());
    snprintf(crt, sizeof(crt), "%s/bar.crt", f->dir);
    snprintf(key, sizeof(key), "%s/bar.key", f->dir);
    cr_assert_eq(ts_nginx_add_site(f->ngx, BAR, crt, key), 0, "%s", ts_error());
}

static void site_fini(site_fx *f)
{
    ts_nginx_free(f->ngx);
    ts_cert_free(f->foo);
    ts_cert_free(f->bar);
    ts_ca_free(f->ca);
    if (f->dir != NULL)
        ts_rmtree(f->dir);
    free(f->dir);
}

TestSuite(nginx, .init = suite_init, .fini = suite_fini);

#define DOC "{\"fingerprints\":[{\"sha-256\":\"x\"}],\"expires\":60}"
#define RFC "/.well-known/posh/xmpp-server.json"

Test(nginx, sni_sites_files_redirects_statuses)
{
    site_fx f;
    resp r;
    int port;
    long t0;

    site_init(&f);
    cr_assert_eq(ts_nginx_put(f.ngx, FOO, RFC, DOC), 0, "%s", ts_error());
    cr_assert_eq(ts_nginx_redirect(f.ngx, FOO, "/moved", 302, "https://" BAR RFC), 0);
    cr_assert_eq(ts_nginx_redirect(f.ngx, FOO, "/relative", 301, "/elsewhere"), 0);
    cr_assert_eq(ts_nginx_status(f.ngx, FOO, "/broken", 500), 0);
    cr_assert_eq(ts_nginx_status(f.ngx, BAR, "/forbidden", 403), 0);
    cr_assert_eq(ts_nginx_port(f.ngx), -1, "not started");
    t0 = mono_ms();
    cr_assert_eq(ts_nginx_start(f.ngx), 0, "%s", ts_error());
    fprintf(stderr, "nginx started in %ld ms\n", mono_ms() - t0);
    port = ts_nginx_port(f.ngx);
    cr_assert_gt(port, 0);
    cr_assert_eq(ts_nginx_redirect(f.ngx, FOO, "/late", 302, "/x"), -1, "redirects only before start");

    r = get("https://" FOO RFC, f.ca_file, FOO, port);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, DOC);
    cr_assert_str_eq(r.ctype, " application/json");
    free(r.body);

    /* bar's certificate is chosen by SNI: curl checks it names bar */
    cr_assert_eq(ts_nginx_put(f.ngx, BAR, RFC, "{\"bar\":1}"), 0, "publishing after start");
    r = get("https://" BAR RFC, f.ca_file, BAR, port);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_str_eq(r.body, "{\"bar\":1}");
    free(r.body);

    r = get("https://" FOO "/moved", f.ca_file, FOO, port);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_eq(r.status, 302);
    cr_assert_str_eq(r.location, " https://" BAR RFC);
    free(r.body);
    r = get("https://" FOO "/relative", f.ca_file, FOO, port);
    cr_assert_eq(r.status, 301);
    cr_assert_str_eq(r.location, " /elsewhere", "absolute_redirect off");
    free(r.body);
    r = get("https://" FOO "/broken", f.ca_file, FOO, port);
    cr_assert_eq(r.status, 500);
    free(r.body);
    r = get("https://" BAR "/forbidden", f.ca_file, BAR, port);
    cr_assert_eq(r.status, 403);
    free(r.body);
    r = get("https://" FOO "/broken", f.ca_file, FOO, port);
    cr_assert_eq(r.status, 500);
    free(r.body);
    r = get("https://" BAR RFC "x", f.ca_file, BAR, port);
    cr_assert_eq(r.status, 404);
    free(r.body);

    cr_assert_eq(ts_nginx_delete(f.ngx, BAR, RFC), 0);
    r = get("https://" BAR RFC, f.ca_file, BAR, port);
    cr_assert_eq(r.status, 404);
    free(r.body);

    /* an unknown name gets the first site's certificate, which does not name it */
    r = get("https://unknown.example.net/", f.ca_file, "unknown.example.net", port);
    cr_assert_eq(r.rc, CURLE_PEER_FAILED_VERIFICATION, "%d %s", r.rc, r.error);
    free(r.body);

    /* plain HTTP */
    {
        char url[200];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d" RFC, ts_nginx_http_port(f.ngx));
        cr_assert_eq(ts_nginx_put(f.ngx, FOO, RFC, DOC), 0);
        r = get(url, NULL, NULL, 0);
        cr_assert_eq(r.status, 200, "the first site is the default server");
        cr_assert_str_eq(r.body, DOC);
        free(r.body);
    }

    cr_assert_eq(ts_nginx_requests(f.ngx, FOO, "/broken"), 2);
    cr_assert_eq(ts_nginx_requests(f.ngx, FOO, RFC), 1, "the plain-HTTP one had Host 127.0.0.1");
    cr_assert_eq(ts_nginx_requests(f.ngx, BAR, NULL), 4);
    cr_assert_eq(ts_nginx_requests(f.ngx, NULL, NULL), 10);
    cr_assert_eq(ts_nginx_requests(f.ngx, "127.0.0.1", RFC), 1);
    site_fini(&f);
}

Test(nginx, request_and_connection_counts_are_exact)
{
    site_fx f;
    CURL *curl;
    int port;

    site_init(&f);
    cr_assert_eq(ts_nginx_put(f.ngx, FOO, RFC, DOC), 0);
    cr_assert_eq(ts_nginx_requests(f.ngx, NULL, NULL), 0, "before start");
    cr_assert_eq(ts_nginx_start(f.ngx), 0, "%s", ts_error());
    port = ts_nginx_port(f.ngx);
    cr_assert_eq(ts_nginx_requests(f.ngx, NULL, NULL), 0);
    cr_assert_eq(ts_nginx_connections(f.ngx, NULL), 0);

    /* one handle, keep-alive: three requests on one connection */
    curl = curl_easy_init();
    for (int i = 0; i < 3; i++) {
        resp r = get_with(curl, "https://" FOO RFC, f.ca_file, FOO, port, 0);
        cr_assert_eq(r.status, 200, "%s", r.error);
        free(r.body);
        /* counted at once, every time: no race with nginx's log write */
        cr_assert_eq(ts_nginx_requests(f.ngx, FOO, RFC), i + 1);
    }
    curl_easy_cleanup(curl);
    cr_assert_eq(ts_nginx_connections(f.ngx, FOO), 1);
    /* fresh handles: a connection each */
    for (int i = 0; i < 4; i++) {
        resp r = get("https://" FOO RFC, f.ca_file, FOO, port);
        free(r.body);
        cr_assert_eq(ts_nginx_requests(f.ngx, FOO, NULL), 4 + i);
    }
    cr_assert_eq(ts_nginx_connections(f.ngx, FOO), 5);
    cr_assert_eq(ts_nginx_connections(f.ngx, BAR), 0);
    cr_assert_eq(ts_nginx_requests(f.ngx, FOO, "/.well-known/posh/"), 0, "paths compare exactly");
    site_fini(&f);
}

Test(nginx, two_instances_and_bad_input)
{
    site_fx a, b;
    resp r;

    site_init(&a);
    site_init(&b);
    cr_assert_eq(ts_nginx_put(a.ngx, FOO, "/who", "a"), 0);
    cr_assert_eq(ts_nginx_put(b.ngx, FOO, "/who", "b"), 0);
    cr_assert_eq(ts_nginx_start(a.ngx), 0, "%s", ts_error());
    cr_assert_eq(ts_nginx_start(b.ngx), 0, "%s", ts_error());
    cr_assert_eq(ts_nginx_start(b.ngx), -1, "already started");
    cr_assert_neq(ts_nginx_port(a.ngx), ts_nginx_port(b.ngx));
    r = get("https://" FOO "/who", a.ca_file, FOO, ts_nginx_port(a.ngx));
    cr_assert_str_eq(r.body, "a");
    free(r.body);
    r = get("https://" FOO "/who", b.ca_file, FOO, ts_nginx_port(b.ngx));
    cr_assert_str_eq(r.body, "b");
    free(r.body);
    r = get("https://" FOO "/who", a.ca_file, FOO, ts_nginx_port(b.ngx));
    cr_assert_eq(r.rc, CURLE_PEER_FAILED_VERIFICATION, "b's CA is not a's");
    free(r.body);

    cr_assert_eq(ts_nginx_put(a.ngx, "nope.example", "/x", "x"), -1);
    cr_assert_eq(ts_nginx_put(a.ngx, FOO, "/../escape", "x"), -1);
    cr_assert_eq(ts_nginx_put(a.ngx, FOO, "relative", "x"), -1);
    cr_assert_eq(ts_nginx_put(a.ngx, FOO, "/a?b", "x"), -1);
    cr_assert_eq(ts_nginx_status(b.ngx, FOO, "/x", 999), -1);
    site_fini(&a);
    site_fini(&b);
}

Test(nginx, start_failure_is_reported)
{
    char *dir = ts_tmpdir();
    ts_nginx *n = ts_nginx_new(dir);
    long t0 = mono_ms();

    cr_assert_eq(ts_nginx_start(n), -1, "no site");
    cr_assert_eq(ts_nginx_add_site(n, "x;y", "/c", "/k"), -1);
    cr_assert_eq(ts_nginx_add_site(n, FOO, "/tmp/$x.crt", "/k"), -1);
    cr_assert_eq(ts_nginx_redirect(n, FOO, "/x", 302, "/y"), -1, "no such site yet");
    cr_assert_eq(ts_nginx_add_site(n, FOO, "/tmp/posh-test-nonexistent.crt", "/tmp/posh-test-nonexistent.key"), 0);
    cr_assert_eq(ts_nginx_start(n), -1);
    cr_assert_not_null(strstr(ts_error(), "posh-test-nonexistent.crt"), "the error log is in the message: %s",
                       ts_error());
    cr_assert_lt(mono_ms() - t0, 5000);
    ts_nginx_free(n);
    ts_rmtree(dir);
    free(dir);
}

/* ==== tlsserver ======================================================================================= */

TestSuite(tls);

Test(tls, handshakes_survive_failures_and_idle_clients)
{
    ts_ca *root = ts_ca_new("Root"), *mid = ts_ca_new_intermediate(root, "Mid"), *other = ts_ca_new("Other");
    ts_cert *svc = leaf(mid, "xmpp.hosting.example.net");
    ts_tls *s = ts_tls_start(ts_cert_x509(svc), ts_cert_chain(svc), ts_cert_key(svc));
    int idle[5];
    client c;
    long t0;

    cr_assert_not_null(s, "%s", ts_error());
    cr_assert_gt(ts_tls_port(s), 0);

    c = tls_connect(ts_tls_port(s), ts_ca_x509(root), "xmpp.hosting.example.net");
    cr_assert(c.ok, "handshake with the chain from the intermediate");
    cr_assert_eq(ts_tls_accepted(s), 1);
    {
        char byte;
        cr_assert_leq(SSL_read(c.ssl, &byte, 1), 0, "the server writes nothing and closes");
        cr_assert_eq(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN, "close_notify");
    }
    client_close(&c);

    c = tls_connect(ts_tls_port(s), ts_ca_x509(other), "xmpp.hosting.example.net");
    cr_assert_not(c.ok, "untrusted");
    client_close(&c);
    c = tls_connect(ts_tls_port(s), ts_ca_x509(root), "wrong.example.net");
    cr_assert_not(c.ok, "wrong name");
    client_close(&c);

    /* idle clients (never handshaking) do not block others */
    for (int i = 0; i < 5; i++)
        idle[i] = tcp_connect(ts_tls_port(s));
    c = tls_connect(ts_tls_port(s), ts_ca_x509(root), "xmpp.hosting.example.net");
    cr_assert(c.ok);
    client_close(&c);
    cr_assert_eq(ts_tls_accepted(s), 9);
    cr_assert_geq(ts_tls_handshakes(s), 1);

    t0 = mono_ms();
    ts_tls_stop(s);
    cr_assert_lt(mono_ms() - t0, 2000, "stop with idle clients connected");
    for (int i = 0; i < 5; i++)
        close(idle[i]);
    ts_cert_free(svc);
    ts_ca_free(root);
    ts_ca_free(mid);
    ts_ca_free(other);
}

/* ==== evilhttps ======================================================================================= */

typedef struct evil_fx {
    char *dir;
    char ca_file[600];
    ts_ca *ca;
    ts_cert *cert;
    ts_evil *evil;
    int port;
} evil_fx;

static void evil_init(evil_fx *f)
{
    memset(f, 0, sizeof(*f));
    cr_assert_not_null(f->dir = ts_tmpdir());
    cr_assert_not_null(f->ca = ts_ca_new("Test CA"));
    f->cert = leaf(f->ca, FOO);
    snprintf(f->ca_file, sizeof(f->ca_file), "%s/ca.pem", f->dir);
    cr_assert_eq(ts_ca_write(f->ca, f->ca_file), 0);
    cr_assert_not_null(f->evil = ts_evil_new(ts_cert_x509(f->cert), ts_cert_key(f->cert)));
}

static void evil_go(evil_fx *f)
{
    cr_assert_eq(ts_evil_start(f->evil), 0, "%s", ts_error());
    f->port = ts_evil_port(f->evil);
}

static void evil_fini(evil_fx *f)
{
    ts_evil_stop(f->evil);
    ts_cert_free(f->cert);
    ts_ca_free(f->ca);
    ts_rmtree(f->dir);
    free(f->dir);
}

static resp evil_get(evil_fx *f, const char *path, long timeout_ms)
{
    char url[300];
    snprintf(url, sizeof(url), "https://" FOO "%s", path);
    return get_with(NULL, url, f->ca_file, FOO, f->port, timeout_ms);
}

TestSuite(evil, .init = suite_init, .fini = suite_fini);

Test(evil, statuses_bodies_headers)
{
    static const char nul_body[] = "{\"a\":\0\"b\"}";
    ts_evil_route_opts ok = {.body = nul_body, .body_len = sizeof(nul_body) - 1};
    ts_evil_route_opts moved = {.status = 302, .location = "http://" FOO "/plain"};
    ts_evil_route_opts boom = {.status = 500, .body = "oops"};
    ts_evil_route_opts nolen = {.body = "{}", .no_content_length = 1, .headers = "X-Evil: 1\r\n",
                                .content_type = "text/html"};
    ts_evil_route_opts cut = {.close_immediately = 1};
    evil_fx f;
    resp r;
    char *head;

    evil_init(&f);
    cr_assert_eq(ts_evil_route(f.evil, "/ok", &ok), 0);
    cr_assert_eq(ts_evil_route(f.evil, "/moved", &moved), 0);
    cr_assert_eq(ts_evil_route(f.evil, "/boom", &boom), 0);
    evil_go(&f);
    cr_assert_eq(ts_evil_route(f.evil, "/nolen", &nolen), 0, "routes may be added after start");
    cr_assert_eq(ts_evil_route(f.evil, "/cut", &cut), 0);

    r = evil_get(&f, "/ok", 0);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.len, sizeof(nul_body) - 1);
    cr_assert_eq(memcmp(r.body, nul_body, r.len), 0);
    cr_assert_str_eq(r.ctype, " application/json");
    free(r.body);

    r = evil_get(&f, "/moved", 0);
    cr_assert_eq(r.status, 302);
    cr_assert_str_eq(r.location, " http://" FOO "/plain");
    free(r.body);

    r = evil_get(&f, "/boom", 0);
    cr_assert_eq(r.status, 500);
    cr_assert_str_eq(r.body, "oops");
    free(r.body);

    r = evil_get(&f, "/nolen", 0);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_str_eq(r.body, "{}");
    cr_assert_str_eq(r.ctype, " text/html");
    free(r.body);

    r = evil_get(&f, "/cut", 0);
    cr_assert_neq(r.rc, CURLE_OK, "no response at all");
    free(r.body);

    r = evil_get(&f, "/unknown?q=1", 0);
    cr_assert_eq(r.status, 404);
    free(r.body);

    cr_assert_eq(ts_evil_requests(f.evil, "/ok"), 1);
    cr_assert_eq(ts_evil_requests(f.evil, "/cut"), 1);
    cr_assert_eq(ts_evil_requests(f.evil, "/unknown?q=1"), 1);
    cr_assert_eq(ts_evil_requests(f.evil, NULL), 6);
    cr_assert_not_null(head = ts_evil_last_request(f.evil, "/boom"));
    cr_assert_eq(strncmp(head, "GET /boom HTTP/1.1\r\n", 20), 0, "%s", head);
    cr_assert_not_null(strcasestr(head, "\r\nHost: " FOO "\r\n"));
    free(head);
    cr_assert_null(ts_evil_last_request(f.evil, "/never"));
    evil_fini(&f);
}

Test(evil, huge_body_is_streamed)
{
    ts_evil_route_opts big = {.body = "{\"x\":\"", .repeat_body_bytes = 10 * 1024 * 1024, .fill = '{'};
    evil_fx f;
    resp r;

    evil_init(&f);
    cr_assert_eq(ts_evil_route(f.evil, "/big", &big), 0);
    evil_go(&f);
    r = evil_get(&f, "/big", 30000);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_eq(r.len, 6 + 10 * 1024 * 1024);
    cr_assert_eq(memcmp(r.body, "{\"x\":\"{{{", 9), 0);
    cr_assert_eq(r.body[r.len - 1], '{');
    free(r.body);
    evil_fini(&f);
}

typedef struct bg_get {
    evil_fx *f;
    const char *path;
    resp r;
} bg_get;

static void *bg_get_main(void *p)
{
    bg_get *g = p;
    g->r = evil_get(g->f, g->path, 60000);
    return NULL;
}

Test(evil, drip_and_hang_time_out_and_stop_promptly)
{
    ts_evil_route_opts drip = {.body = "{\"fingerprints\":[]}", .repeat_body_bytes = 1000000, .drip_ms = 50};
    ts_evil_route_opts hang = {.hang = 1};
    evil_fx f;
    resp r;
    bg_get g1, g2;
    pthread_t t1, t2;
    long t0;

    evil_init(&f);
    cr_assert_eq(ts_evil_route(f.evil, "/drip", &drip), 0);
    cr_assert_eq(ts_evil_route(f.evil, "/hang", &hang), 0);
    evil_go(&f);

    /* the client's own timeout ends them */
    t0 = mono_ms();
    r = evil_get(&f, "/drip", 400);
    cr_assert_eq(r.rc, CURLE_OPERATION_TIMEDOUT);
    cr_assert_eq(r.status, 200, "headers came");
    cr_assert_gt(r.len, 0, "some body came");
    cr_assert_lt(r.len, 40);
    free(r.body);
    r = evil_get(&f, "/hang", 300);
    cr_assert_eq(r.rc, CURLE_OPERATION_TIMEDOUT);
    cr_assert_eq(r.status, 0);
    free(r.body);
    cr_assert_lt(mono_ms() - t0, 3000);

    /* a stop while clients are still being dripped to and hung on */
    g1 = (bg_get){.f = &f, .path = "/drip"};
    g2 = (bg_get){.f = &f, .path = "/hang"};
    pthread_create(&t1, NULL, bg_get_main, &g1);
    pthread_create(&t2, NULL, bg_get_main, &g2);
    /* wait until both requests reached the server */
    t0 = mono_ms();
    while (ts_evil_requests(f.evil, "/drip") < 2 || ts_evil_requests(f.evil, "/hang") < 2) {
        cr_assert_lt(mono_ms() - t0, 5000, "requests never arrived");
        poll(NULL, 0, 5);
    }
    t0 = mono_ms();
    ts_evil_stop(f.evil);
    f.evil = NULL;
    cr_assert_lt(mono_ms() - t0, 1000, "stop took %ld ms", mono_ms() - t0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_neq(g1.r.rc, CURLE_OK, "the drip was cut short");
    cr_assert_neq(g2.r.rc, CURLE_OK);
    cr_assert_lt(mono_ms() - t0, 5000, "clients saw the end at once");
    free(g1.r.body);
    free(g2.r.body);
    evil_fini(&f);
}

Test(evil, drip_completes_when_short)
{
    ts_evil_route_opts drip = {.body = "{\"expires\":1}", .drip_ms = 5, .drip_bytes = 3};
    evil_fx f;
    resp r;

    evil_init(&f);
    cr_assert_eq(ts_evil_route(f.evil, "/drip", &drip), 0);
    evil_go(&f);
    r = evil_get(&f, "/drip", 5000);
    cr_assert_eq(r.rc, CURLE_OK, "%s", r.error);
    cr_assert_str_eq(r.body, "{\"expires\":1}");
    free(r.body);
    evil_fini(&f);
}

/* ==== relay =========================================================================================== */

#define RELAY_CLIENTS 260

/* A plain TCP connection to 127.0.0.1:port, non-blocking once connected. */
static int tcp_connect_nb(int port)
{
    int fd = tcp_connect(port);
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    return fd;
}

static void echo_handler(ts_conn *c, void *arg)
{
    char buf[64];
    int n = SSL_read(ts_conn_ssl(c), buf, sizeof(buf));
    if (n > 0)
        SSL_write(ts_conn_ssl(c), buf, n);
}

static void wait_accepted(ts_relay *r, long n)
{
    long t0 = mono_ms();
    while (ts_relay_accepted(r) < n) {
        cr_assert_lt(mono_ms() - t0, 5000, "the relay accepted %ld of %ld connections", ts_relay_accepted(r), n);
        poll(NULL, 0, 2);
    }
}

TestSuite(relay);

Test(relay, delays_then_copies_both_ways)
{
    ts_ca *ca = ts_ca_new("Root");
    ts_cert *svc = leaf(ca, "xmpp.hosting.example.net");
    ts_tls *s = ts_tls_start_with(ts_cert_x509(svc), NULL, ts_cert_key(svc), echo_handler, NULL);
    ts_relay *r;
    char buf[16] = {0};
    client c;
    long t0, took;

    cr_assert_not_null(s, "%s", ts_error());
    cr_assert_not_null(r = ts_relay_start(ts_tls_port(s), 300, 0), "%s", ts_error());
    cr_assert_neq(ts_relay_port(r), ts_tls_port(s));
    t0 = mono_ms();
    c = tls_connect(ts_relay_port(r), ts_ca_x509(ca), "xmpp.hosting.example.net");
    took = mono_ms() - t0;
    cr_assert(c.ok, "a TLS handshake through the relay");
    cr_assert_geq(took, 300, "the server answered after %ld ms, before the 300 ms delay", took);
    cr_assert_lt(took, 3000);
    cr_assert_eq(SSL_write(c.ssl, "ping", 4), 4);
    cr_assert_eq(SSL_read(c.ssl, buf, sizeof(buf) - 1), 4, "the echo came back through the relay");
    cr_assert_str_eq(buf, "ping");
    cr_assert_eq(ts_relay_accepted(r), 1);
    cr_assert_eq(ts_tls_accepted(s), 1);
    client_close(&c);
    ts_relay_stop(r);
    ts_tls_stop(s);
    ts_cert_free(svc);
    ts_ca_free(ca);
}

Test(relay, serves_hundreds_at_once, .timeout = 60)
{
    site_fx f;
    ts_relay *r;
    int fd[RELAY_CLIENTS];
    char *got[RELAY_CLIENTS];
    size_t len[RELAY_CLIENTS];
    int open_fds = RELAY_CLIENTS;
    long t0, took;

    site_init(&f);
    cr_assert_eq(ts_nginx_put(f.ngx, FOO, RFC, DOC), 0);
    cr_assert_eq(ts_nginx_start(f.ngx), 0, "%s", ts_error());
    cr_assert_not_null(r = ts_relay_start(ts_nginx_http_port(f.ngx), 200, 0), "%s", ts_error());
    t0 = mono_ms();
    for (int i = 0; i < RELAY_CLIENTS; i++) {
        static const char req[] = "GET " RFC " HTTP/1.0\r\nHost: " FOO "\r\n\r\n";
        fd[i] = tcp_connect_nb(ts_relay_port(r));
        cr_assert_eq(send(fd[i], req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
        cr_assert_not_null(got[i] = calloc(1, 4096));
        len[i] = 0;
    }
    /* Every response read to its end (nginx closes after an HTTP/1.0 response), all in one poll loop. */
    while (open_fds > 0) {
        struct pollfd p[RELAY_CLIENTS];
        for (int i = 0; i < RELAY_CLIENTS; i++)
            p[i] = (struct pollfd){.fd = fd[i], .events = POLLIN};
        cr_assert_gt(poll(p, RELAY_CLIENTS, 10000), 0, "no response for 10 s");
        for (int i = 0; i < RELAY_CLIENTS; i++) {
            ssize_t n;
            if (p[i].revents == 0)
                continue;
            n = recv(fd[i], got[i] + len[i], 4095 - len[i], 0);
            cr_assert(n >= 0 || errno == EAGAIN, "client %d: %s", i, strerror(errno));
            if (n > 0)
                len[i] += (size_t)n;
            if (n == 0) {
                close(fd[i]);
                fd[i] = -1;
                open_fds--;
            }
        }
    }
    took = mono_ms() - t0;
    for (int i = 0; i < RELAY_CLIENTS; i++) {
        cr_assert_eq(strncmp(got[i], "HTTP/1.1 200", 12), 0, "client %d: %s", i, got[i]);
        cr_assert_not_null(strstr(got[i], "\r\n\r\n" DOC), "client %d: the whole body: %s", i, got[i]);
        free(got[i]);
    }
    cr_assert_geq(took, 200, "the delay is applied (%ld ms)", took);
    cr_assert_lt(took, 5000, "%d delays of 200 ms overlap: %ld ms", RELAY_CLIENTS, took);
    cr_assert_eq(ts_relay_accepted(r), RELAY_CLIENTS);
    cr_assert_eq(ts_nginx_requests(f.ngx, FOO, RFC), RELAY_CLIENTS);
    ts_relay_stop(r);
    site_fini(&f);
}

Test(relay, hang_sends_nothing_and_stop_is_prompt, .timeout = 60)
{
    site_fx f;
    ts_relay *r;
    struct pollfd p[RELAY_CLIENTS];
    long t0;

    site_init(&f);
    cr_assert_eq(ts_nginx_start(f.ngx), 0, "%s", ts_error());
    cr_assert_not_null(r = ts_relay_start(ts_nginx_http_port(f.ngx), 0, 1), "%s", ts_error());
    for (int i = 0; i < RELAY_CLIENTS; i++) {
        static const char req[] = "GET / HTTP/1.0\r\nHost: " FOO "\r\n\r\n";
        p[i] = (struct pollfd){.fd = tcp_connect_nb(ts_relay_port(r)), .events = POLLIN};
        cr_assert_eq(send(p[i].fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
    }
    wait_accepted(r, RELAY_CLIENTS);
    /* An observation window, not a synchronisation: a relay that answered or closed would show it here. */
    cr_assert_eq(poll(p, RELAY_CLIENTS, 300), 0, "a hanging relay sent something or closed");
    cr_assert_eq(ts_nginx_requests(f.ngx, NULL, NULL), 0, "hang mode never connects upstream");

    t0 = mono_ms();
    ts_relay_stop(r);
    cr_assert_lt(mono_ms() - t0, 1000, "stop with %d hanging clients took %ld ms", RELAY_CLIENTS, mono_ms() - t0);
    /* Every client sees its connection end at once. */
    for (int i = 0; i < RELAY_CLIENTS; i++) {
        char byte;
        ssize_t n;
        cr_assert_eq(poll(&p[i], 1, 1000), 1, "client %d: the end of the connection", i);
        n = recv(p[i].fd, &byte, 1, 0);
        cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "client %d: %zd bytes", i, n);
        close(p[i].fd);
    }
    site_fini(&f);
}
