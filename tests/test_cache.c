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

static void teardown(void)
{
    ts_evil_stop(evil);
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
