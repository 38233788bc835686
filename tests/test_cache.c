/*
 * test_cache.c - caching against a real nginx with an injected clock: a result lives exactly as long as the
 * min rule says, failures are cached briefly, the cache is bounded, and concurrent lookups share one fetch.
 */
#include "fixture.h"
#include "client_internal.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static fx f;
static time_t fake_now;
static ts_evil *evil;

static time_t fake_clock(void *arg)
{
    return *(time_t *)arg;
}

static void setup(void)
{
    fx_init(&f);
    fake_now = 1000;
}

static ts_cert *web_hosted;

static void teardown(void)
{
    ts_evil_stop(evil);
    ts_cert_free(web_hosted);
    fx_fini(&f);
}

TestSuite(cache, .init = setup, .fini = teardown, .timeout = 60);

static posh_client *clocked_client(long negative_ttl, long cache_size)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &fake_now), POSH_OK);
    cr_assert_eq(posh_config_set_negative_ttl(cfg, negative_ttl), POSH_OK);
    cr_assert_eq(posh_config_set_cache_size(cfg, cache_size), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c);
    return c;
}

static posh_err look(posh_client *c, const char *service)
{
    posh_result *r = NULL;
    posh_err err = posh_lookup(c, FOO, service, &r);
    cr_assert_not_null(r);
    posh_result_free(r);
    return err;
}

Test(cache, lives_exactly_until_expires)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 100));
    fx_start(&f);
    posh_client *c = clocked_client(60, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    fake_now = 1099;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "still fresh one second before expiry");
    fake_now = 1100;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "stale at expiry: fetched again");
    posh_client_free(c);
}

Test(cache, min_rule_restarts_from_source)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://hosting.example.net/posh/foo.json", 50));
    fx_put_free(&f, HOSTING, "/posh/foo.json", fx_doc1(f.svc, 500));
    fx_start(&f);
    posh_client *c = clocked_client(60, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    fake_now += 49;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/foo.json"), 1);
    fake_now += 1;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "the reference's lower expires decides");
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/foo.json"), 1,
                 "the process runs again from the source domain; the target, cached by its URL, is fresh "
                 "under its own expires");
    fake_now = 1500;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 3);
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/foo.json"), 2, "the target's own expires passed: fetched again");
    posh_client_free(c);
}

Test(cache, max_ttl_caps_lifetime)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 1000000));
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &fake_now), POSH_OK);
    cr_assert_eq(posh_config_set_max_ttl(cfg, 10), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    fake_now += 10;
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    posh_client_free(c);
}

Test(cache, negative_entries)
{
    fx_start(&f);
    posh_client *c = clocked_client(30, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_ERR_NO_POSH);
    cr_expect_eq(fx_requests(&f, FOO, NULL), 2);
    fake_now += 29;
    cr_assert_eq(look(c, "xmpp-server"), POSH_ERR_NO_POSH);
    cr_expect_eq(fx_requests(&f, FOO, NULL), 2, "a peer cannot make us hammer the web server");
    fake_now += 1;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK, "after the negative TTL the new document is seen");
    cr_expect_eq(fx_requests(&f, FOO, NULL), 3);
    posh_client_free(c);
}

Test(cache, negative_ttl_zero_caches_nothing)
{
    fx_start(&f);
    posh_client *c = clocked_client(0, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_ERR_NO_POSH);
    cr_assert_eq(look(c, "xmpp-server"), POSH_ERR_NO_POSH);
    cr_expect_eq(fx_requests(&f, FOO, NULL), 4);
    posh_client_free(c);
}

Test(cache, bounded_lru)
{
    fx_put_free(&f, FOO, "/.well-known/posh/a.json", fx_doc1(f.svc, 300));
    fx_put_free(&f, FOO, "/.well-known/posh/b.json", fx_doc1(f.svc, 300));
    fx_put_free(&f, FOO, "/.well-known/posh/c.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = clocked_client(60, 2);
    cr_assert_eq(look(c, "a"), POSH_OK);
    cr_assert_eq(look(c, "b"), POSH_OK);
    cr_assert_eq(look(c, "a"), POSH_OK); /* a is now the most recent */
    cr_assert_eq(look(c, "c"), POSH_OK); /* evicts b */
    cr_expect_eq(posh_cache_count(c->cache), 2);
    cr_assert_eq(look(c, "a"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/a.json"), 1, "a stayed");
    cr_assert_eq(look(c, "b"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/b.json"), 2, "b was evicted");
    posh_client_free(c);
}

Test(cache, flush)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = clocked_client(60, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    posh_client_flush(c);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    posh_client_free(c);
}

/* ---- single flight: a slow server makes every thread arrive while the first lookup is running ---- */

#define FLIGHT 16

static posh_client *flight_client;
static pthread_barrier_t flight_start;
static posh_result *flight_results[FLIGHT];

static void *flight_main(void *arg)
{
    posh_result **out = arg;
    pthread_barrier_wait(&flight_start);
    posh_err err = posh_lookup(flight_client, FOO, "xmpp-server", out);
    cr_expect_eq(err, POSH_OK);
    return NULL;
}

Test(cache, single_flight)
{
    pthread_t t[FLIGHT];
    char *doc = fx_doc1(f.svc, 300);
    ts_evil_route_opts slow = {.status = 200, .body = doc, .body_len = strlen(doc), .drip_ms = 40};
    char connect_to[256];

    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo)));
    cr_assert_eq(ts_evil_route(evil, RFC7711_PATH, &slow), 0);
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d", FOO, ts_evil_port(evil));
    posh_config *cfg = posh_config_new();
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 30000), POSH_OK);
    flight_client = posh_client_new(cfg);
    posh_config_free(cfg);
    pthread_barrier_init(&flight_start, NULL, FLIGHT);
    for (int i = 0; i < FLIGHT; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, flight_main, &flight_results[i]), 0);
    for (int i = 0; i < FLIGHT; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < FLIGHT; i++) {
        cr_expect_eq(posh_result_error(flight_results[i]), POSH_OK, "%s", posh_result_message(flight_results[i]));
        cr_expect_eq(flight_results[i], flight_results[0], "every caller shares the one result");
        posh_result_free(flight_results[i]);
    }
    cr_expect_eq(ts_evil_requests(evil, RFC7711_PATH), 1, "one fetch for %d concurrent lookups", FLIGHT);
    pthread_barrier_destroy(&flight_start);
    posh_client_free(flight_client);
    free(doc);
}

/* ---- fork: the child has its own connections and its own lookups; the parent is unaffected ---- */

#include <sys/wait.h>
#include <unistd.h>

Test(cache, survives_fork)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_put_free(&f, FOO, "/.well-known/posh/imap.json", fx_doc1(f.svc, 300));
    fx_put_free(&f, FOO, "/.well-known/posh/smtp.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = clocked_client(60, 100);
    cr_assert_eq(look(c, "xmpp-server"), POSH_OK); /* warm: a pooled connection and a cached result */
    cr_assert_eq(c->n_idle, 1);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* No pooled handle (the parent's connection) is inherited; the cached result is. */
        int ok = c->n_idle == 0;
        ok = ok && look(c, "xmpp-server") == POSH_OK && look(c, "imap") == POSH_OK;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child lookups failed");
    cr_assert_eq(look(c, "smtp"), POSH_OK, "the parent's pooled connection still works");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "the child used the inherited cache");
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/imap.json"), 1);
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/smtp.json"), 1);
    posh_client_free(c);
}

/* ---- reference targets cached by URL: many hosted domains, one provider document ---- */

#define TARGET_PATH "/posh/hosted.json"
#define TARGET_URL "https://" HOSTING TARGET_PATH
#define HOSTED_MAX 32

/* Sites d0..d(n-1).example.com (one *.example.com certificate), each referring to TARGET_URL. Before fx_start. */
static void add_hosted(size_t n, long ref_expires)
{
    ts_cert_opts o = {.dns = {"*.example.com"}, .cn = "*.example.com"};
    char crt[600], key[600], name[64];
    cr_assert_not_null(web_hosted = ts_cert_issue(f.ca, &o));
    cr_assert_eq(ts_cert_write(web_hosted, f.dir, "hosted"), 0);
    snprintf(crt, sizeof(crt), "%s/hosted.crt", f.dir);
    snprintf(key, sizeof(key), "%s/hosted.key", f.dir);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "d%zu.example.com", i);
        cr_assert_eq(ts_nginx_add_site(f.nginx, name, crt, key), 0, "%s", ts_error());
        fx_put_free(&f, name, RFC7711_PATH, fx_ref(TARGET_URL, ref_expires));
    }
}

/* fx_start, then every other name (the hosted domains) to nginx as well. */
static void start_hosted(void)
{
    size_t used;
    fx_start(&f);
    used = strlen(f.connect_to);
    snprintf(f.connect_to + used, sizeof(f.connect_to) - used, ",::127.0.0.1:%d", ts_nginx_port(f.nginx));
}

static long hosted_source_fetches(size_t i)
{
    char name[64];
    snprintf(name, sizeof(name), "d%zu.example.com", i);
    return fx_requests(&f, name, RFC7711_PATH);
}

/* Look up hosted domain i; expect want. The caller frees the result. */
static posh_result *look_hosted(posh_client *c, size_t i, posh_err want)
{
    char name[64];
    posh_result *r = NULL;
    snprintf(name, sizeof(name), "d%zu.example.com", i);
    cr_assert_eq(posh_lookup(c, name, "xmpp-server", &r), want, "%s: %s", name, posh_result_message(r));
    cr_assert_not_null(r);
    return r;
}

static int vouches_for(posh_client *c, const posh_result *r, ts_cert *cert)
{
    size_t len;
    const unsigned char *der = ts_cert_der(cert, &len);
    int match = 0;
    cr_assert_eq(posh_match_der(c, r, der, len, &match, NULL), POSH_OK);
    return match;
}

Test(cache, hosted_domains_share_one_target_fetch)
{
    const size_t n = 20;
    add_hosted(n, 600);
    fx_put_free(&f, HOSTING, TARGET_PATH, fx_doc1(f.svc, 300));
    start_hosted();
    posh_client *c = clocked_client(60, 100);
    for (size_t i = 0; i < n; i++) {
        posh_result *r = look_hosted(c, i, POSH_OK);
        const char *url = NULL;
        long status = 0;
        cr_expect_eq(posh_result_followed_reference(r), 1);
        cr_expect_eq(posh_result_ttl(r), 300, "the target's lower expires");
        cr_expect(vouches_for(c, r, f.svc), "d%zu vouches for the provider's certificate", i);
        cr_expect(!vouches_for(c, r, f.other));
        cr_assert_eq(posh_result_request_count(r), 2, "the source request, then the target's");
        cr_assert(posh_result_request(r, 1, &url, &status));
        cr_expect_str_eq(url, TARGET_URL);
        cr_expect_eq(status, 200);
        cr_expect_eq(posh_result_request_shared(r, 0), 0, "the source request is always this lookup's own");
        cr_expect_eq(posh_result_request_shared(r, 1), i > 0, "d%zu: the target came from the URL cache", i);
        cr_expect_eq(posh_result_request_shared(r, 2), 0, "past the end");
        cr_expect_eq(hosted_source_fetches(i), 1);
        posh_result_free(r);
    }
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 1, "one provider document fetch for %zu domains", n);
    cr_expect_eq(fx_requests(&f, NULL, RFC7711_PATH), (long)n, "each source domain fetched once");
    cr_expect_eq(posh_cache_count(c->cache), n);
    cr_expect_eq(posh_cache_count(c->targets), 1);
    posh_client_flush(c);
    cr_expect_eq(posh_cache_count(c->targets), 0, "flush forgets the targets too");
    posh_result_free(look_hosted(c, 0, POSH_OK));
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2);
    posh_client_free(c);
}

Test(cache, target_expiring_first_restarts_from_source)
{
    add_hosted(3, 300);
    fx_put_free(&f, HOSTING, TARGET_PATH, fx_doc1(f.svc, 10));
    start_hosted();
    posh_client *c = clocked_client(60, 100);
    for (size_t i = 0; i < 3; i++)
        posh_result_free(look_hosted(c, i, POSH_OK));
    fake_now += 9;
    for (size_t i = 0; i < 3; i++)
        posh_result_free(look_hosted(c, i, POSH_OK));
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 1);
    cr_expect_eq(fx_requests(&f, NULL, RFC7711_PATH), 3, "all fresh one second before the target expires");
    fake_now += 1;
    posh_result_free(look_hosted(c, 0, POSH_OK));
    cr_expect_eq(hosted_source_fetches(0), 2, "stale with its target: the process starts again at the source");
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2, "and the target is fetched again");
    posh_result_free(look_hosted(c, 1, POSH_OK));
    cr_expect_eq(hosted_source_fetches(1), 2);
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2, "the refreshed target is shared again");
    posh_client_free(c);
}

Test(cache, result_never_outlives_its_shared_target)
{
    add_hosted(2, 300);
    fx_put_free(&f, HOSTING, TARGET_PATH, fx_doc1(f.svc, 100));
    start_hosted();
    posh_client *c = clocked_client(60, 100);
    posh_result *r = look_hosted(c, 0, POSH_OK);
    cr_expect_eq(posh_result_ttl(r), 100);
    posh_result_free(r);
    fake_now = 1060;
    r = look_hosted(c, 1, POSH_OK);
    cr_expect_eq(posh_result_ttl(r), 40, "what is left of the cached target's 100 s");
    cr_expect_eq(posh_result_expires_at(r), 1100);
    posh_result_free(r);
    fake_now = 1099;
    posh_result_free(look_hosted(c, 1, POSH_OK));
    cr_expect_eq(hosted_source_fetches(1), 1);
    fake_now = 1100;
    r = look_hosted(c, 1, POSH_OK);
    cr_expect_eq(posh_result_ttl(r), 100, "built on a target fetched afresh");
    cr_expect_eq(posh_result_request_shared(r, 1), 0);
    posh_result_free(r);
    cr_expect_eq(hosted_source_fetches(1), 2);
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2);
    posh_client_free(c);
}

static void target_failure_cached(int status, posh_err want)
{
    const size_t n = 10;
    add_hosted(n, 300);
    if (status != 404)
        cr_assert_eq(ts_nginx_status(f.nginx, HOSTING, TARGET_PATH, status), 0);
    start_hosted();
    posh_client *c = clocked_client(30, 100);
    for (size_t i = 0; i < n - 1; i++) {
        char name[64];
        posh_result *r = look_hosted(c, i, want);
        snprintf(name, sizeof(name), "d%zu.example.com", i);
        cr_expect(strstr(posh_result_message(r), TARGET_URL) != NULL, "%s", posh_result_message(r));
        if (want == POSH_ERR_REFERENCE_TARGET)
            cr_expect(strstr(posh_result_message(r), name) != NULL, "the message names its own source domain: %s",
                      posh_result_message(r));
        cr_expect_eq(posh_result_request_count(r), 2);
        posh_result_free(r);
    }
    fake_now += 20;
    posh_result *r = look_hosted(c, n - 1, want);
    cr_expect_eq(posh_result_ttl(r), 10, "a failure shared from the URL cache: only its rest");
    posh_result_free(r);
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 1, "HTTP %d: one fetch for %zu domains", status, n);
    fake_now += 10;
    posh_result_free(look_hosted(c, 1, want));
    posh_result_free(look_hosted(c, 2, want));
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2, "after the negative TTL: fetched again, once");
    posh_client_free(c);
}

Test(cache, target_404_cached_negatively_under_its_url)
{
    target_failure_cached(404, POSH_ERR_REFERENCE_TARGET);
}

Test(cache, target_500_cached_negatively_under_its_url)
{
    target_failure_cached(500, POSH_ERR_HTTP_STATUS);
}

/* 32 threads, 32 different domains, one cold target URL on a slow server: one fetch of it (single flight). */
static posh_result *hosted_results[HOSTED_MAX];
static size_t hosted_next;

static void *hosted_main(void *arg)
{
    size_t i = __atomic_fetch_add(&hosted_next, 1, __ATOMIC_RELAXED);
    char name[64];
    (void)arg;
    snprintf(name, sizeof(name), "d%zu.example.com", i);
    pthread_barrier_wait(&flight_start);
    cr_expect_eq(posh_lookup(flight_client, name, "xmpp-server", &hosted_results[i]), POSH_OK);
    return NULL;
}

Test(cache, single_flight_per_target_url)
{
    pthread_t t[HOSTED_MAX];
    char *doc = fx_doc1(f.svc, 300);
    ts_evil_route_opts slow = {.status = 200, .body = doc, .body_len = strlen(doc), .drip_ms = 50, .drip_bytes = 4};
    char connect_to[256];

    add_hosted(HOSTED_MAX, 300);
    fx_start(&f);
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_hosting), ts_cert_key(f.web_hosting)));
    cr_assert_eq(ts_evil_route(evil, TARGET_PATH, &slow), 0);
    cr_assert_eq(ts_evil_start(evil), 0);
    /* The provider is the slow server; every other name is nginx. */
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d,::127.0.0.1:%d", HOSTING, ts_evil_port(evil),
             ts_nginx_port(f.nginx));
    posh_config *cfg = posh_config_new();
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 30000), POSH_OK);
    flight_client = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(flight_client);
    pthread_barrier_init(&flight_start, NULL, HOSTED_MAX);
    for (int i = 0; i < HOSTED_MAX; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, hosted_main, NULL), 0);
    for (int i = 0; i < HOSTED_MAX; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < HOSTED_MAX; i++) {
        cr_expect_eq(posh_result_error(hosted_results[i]), POSH_OK, "%s", posh_result_message(hosted_results[i]));
        cr_expect(vouches_for(flight_client, hosted_results[i], f.svc));
        posh_result_free(hosted_results[i]);
    }
    cr_expect_eq(ts_evil_requests(evil, TARGET_PATH), 1, "one target fetch for %d concurrent domains", HOSTED_MAX);
    cr_expect_eq(fx_requests(&f, NULL, RFC7711_PATH), HOSTED_MAX, "each source domain fetched once");
    pthread_barrier_destroy(&flight_start);
    posh_client_free(flight_client);
    free(doc);
}

/*
 * A target that does not answer in time: the timeout ran out the referring lookup's budget, which a referring
 * domain can shrink at will by answering slowly, so it is never cached under the URL (every other domain would
 * fail with it); each domain's own result is cached negatively as before.
 */
Test(cache, target_timeout_not_cached_under_its_url)
{
    ts_evil_route_opts hang = {.hang = 1};
    char connect_to[256];

    add_hosted(2, 300);
    fx_start(&f);
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_hosting), ts_cert_key(f.web_hosting)));
    cr_assert_eq(ts_evil_route(evil, TARGET_PATH, &hang), 0);
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d,::127.0.0.1:%d", HOSTING, ts_evil_port(evil),
             ts_nginx_port(f.nginx));
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &fake_now), POSH_OK);
    /* Long enough for both connections (the source at nginx, then the target) under ASan on a loaded machine:
     * the target must be asked before the budget runs out, or there is nothing to count. */
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 3000), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c);
    posh_result_free(look_hosted(c, 0, POSH_ERR_TIMEOUT));
    posh_result_free(look_hosted(c, 1, POSH_ERR_TIMEOUT));
    cr_expect_eq(ts_evil_requests(evil, TARGET_PATH), 2, "each domain tried the target on its own budget");
    posh_result_free(look_hosted(c, 0, POSH_ERR_TIMEOUT));
    cr_expect_eq(ts_evil_requests(evil, TARGET_PATH), 2, "the domain's own failure is cached");
    cr_expect_eq(hosted_source_fetches(0), 1);
    posh_client_free(c);
}
