/*
 * test_hostile.c - a fault-injecting HTTPS server of our own: slow and hanging bodies, bodies over the cap,
 * redirect loops and chains of 10 and 11 hops, redirects off https, wrong and untrusted certificates, server
 * errors, malformed and hostile JSON. Every case is a rejection with the right error, within the time budget.
 */
#include "fixture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUDGET_MS 800 /* the tests of the time budget: short, so that they are quick */
/*
 * Every other test: a budget only a hang reaches. Their verdicts are the server's doing, not the machine's
 * speed: ten redirects are eleven TLS connections (Connection: close), which under ASan on a loaded 2-CPU box
 * took up to 790 ms, and a lookup that ran out of BUDGET_MS would end in POSH_ERR_TIMEOUT, not its verdict.
 */
#define HANG_BUDGET_MS 20000

static fx f;
static ts_evil *evil;
static posh_client *client;
static long budget_ms;

static void setup(void)
{
    fx_init(&f);
}

static void teardown(void)
{
    posh_client_free(client);
    ts_evil_stop(evil);
    fx_fini(&f);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 60);

/* The evil server answers for foo.example.com and hosting.example.net with the given web certificate. */
static void evil_new(ts_cert *cert)
{
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(cert), ts_cert_key(cert)));
}

static void route(const char *path, ts_evil_route_opts o)
{
    cr_assert_eq(ts_evil_route(evil, path, &o), 0, "route %s", path);
}

static void go_within(long max_redirects, long budget)
{
    char connect_to[256];
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d,%s:443:127.0.0.1:%d", FOO, ts_evil_port(evil),
             HOSTING, ts_evil_port(evil));
    posh_config *cfg = posh_config_new();
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_timeout_ms(cfg, budget), POSH_OK);
    cr_assert_eq(posh_config_set_max_redirects(cfg, max_redirects), POSH_OK);
    cr_assert_not_null(client = posh_client_new(cfg));
    posh_config_free(cfg);
    budget_ms = budget;
}

static void go(long max_redirects)
{
    go_within(max_redirects, HANG_BUDGET_MS);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Look up foo.example.com, expect err, and a message containing want_text (if given). */
static void expect_lookup_service(const char *service, posh_err want, const char *want_text)
{
    posh_result *r = NULL;
    double t0 = now_ms();
    posh_err err = posh_lookup(client, FOO, service, &r);
    double took = now_ms() - t0;
    cr_assert_not_null(r);
    cr_expect_eq(err, want, "got %d (%s: %s), want %d (%s)", err, posh_strerror(err), posh_result_message(r), want,
                 posh_strerror(want));
    if (want_text != NULL)
        cr_expect(strstr(posh_result_message(r), want_text) != NULL, "message \"%s\" mentions \"%s\"",
                  posh_result_message(r), want_text);
    /* Bounded by the budget (with room for a loaded machine, never an unbounded hang). */
    cr_expect_lt(took, budget_ms + 2000.0, "took %.0f ms for a %ld ms budget", took, budget_ms);
    posh_result_free(r);
}

static void expect_lookup(posh_err want, const char *want_text)
{
    expect_lookup_service("xmpp-server", want, want_text);
}

static ts_evil_route_opts body(const char *s)
{
    return (ts_evil_route_opts){.status = 200, .body = s, .body_len = strlen(s)};
}

Test(hostile, slow_body_times_out)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 200, .repeat_body_bytes = 60000, .drip_ms = 50});
    go_within(10, BUDGET_MS);
    expect_lookup(POSH_ERR_TIMEOUT, RFC7711_PATH);
}

Test(hostile, hanging_server_times_out)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.hang = 1});
    go_within(10, BUDGET_MS);
    expect_lookup(POSH_ERR_TIMEOUT, NULL);
}

Test(hostile, budget_covers_the_whole_lookup)
{
    /* Each hop is slow but under the budget on its own; together they exceed it. */
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 404, .body = "nope", .body_len = 4, .drip_ms = 150});
    route(DRAFT02_PATH, (ts_evil_route_opts){.status = 200, .repeat_body_bytes = 40, .drip_ms = 150});
    go_within(10, BUDGET_MS);
    expect_lookup(POSH_ERR_TIMEOUT, NULL);
}

Test(hostile, body_over_cap_with_length)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 200, .repeat_body_bytes = 10 * 1024 * 1024});
    go(10);
    expect_lookup(POSH_ERR_TOO_LARGE, "65536");
}

Test(hostile, body_over_cap_without_length)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 200, .repeat_body_bytes = 10 * 1024 * 1024,
                                             .no_content_length = 1});
    go(10);
    expect_lookup(POSH_ERR_TOO_LARGE, NULL);
}

Test(hostile, body_just_under_cap_is_read)
{
    /* A valid document padded with JSON whitespace to exactly 65536 bytes is accepted. */
    char *doc = fx_doc1(f.svc, 300);
    size_t n = 65536;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    memcpy(big, doc, strlen(doc));
    big[n] = '\0';
    evil_new(f.web_foo);
    route(RFC7711_PATH, body(big));
    go(10);
    expect_lookup(POSH_OK, NULL);
    free(big);
    free(doc);
}

/*
 * posh reads the body as JSON whatever the server calls it, or when it says nothing (RFC 7711 names no
 * Content-Type rule for clients; posh lint warns the publisher). The document decides, not the header.
 */
Test(hostile, content_type_is_not_judged)
{
    char *doc = fx_doc1(f.svc, 300);
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.body = doc, .no_content_type = 1});
    route("/.well-known/posh/imap.json", (ts_evil_route_opts){.body = doc, .content_type = "text/html"});
    route("/.well-known/posh/smtp.json", (ts_evil_route_opts){.body = "<html>hello</html>", .no_content_type = 1});
    go(10);
    expect_lookup(POSH_OK, NULL);
    expect_lookup_service("imap", POSH_OK, NULL);
    expect_lookup_service("smtp", POSH_ERR_JSON, NULL);
    free(doc);
}

Test(hostile, redirect_loop)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 302, .location = "https://foo.example.com/loop"});
    route("/loop", (ts_evil_route_opts){.status = 302, .location = "https://foo.example.com/loop"});
    go(10);
    expect_lookup(POSH_ERR_TOO_MANY_REDIRECTS, "10 redirects");
    cr_expect_eq(ts_evil_requests(evil, NULL), 11, "the first request and 10 redirects, then stop");
}

/* A chain of hops redirects: path -> /h1 -> ... -> /h<hops> which serves the document. */
static void redirect_chain(int hops, const char *doc)
{
    char path[64], next[96];
    for (int i = 0; i <= hops; i++) {
        if (i == 0)
            snprintf(path, sizeof(path), "%s", RFC7711_PATH);
        else
            snprintf(path, sizeof(path), "/h%d", i);
        if (i == hops) {
            route(path, body(doc));
        } else {
            snprintf(next, sizeof(next), "https://%s/h%d", FOO, i + 1);
            route(path, (ts_evil_route_opts){.status = i % 2 ? 307 : 302, .location = next});
        }
    }
}

Test(hostile, ten_redirects_are_followed)
{
    char *doc = fx_doc1(f.svc, 300);
    evil_new(f.web_foo);
    redirect_chain(10, doc);
    go(10);
    expect_lookup(POSH_OK, NULL);
    cr_expect_eq(ts_evil_requests(evil, NULL), 11);
    free(doc);
}

Test(hostile, eleven_redirects_are_not)
{
    char *doc = fx_doc1(f.svc, 300);
    evil_new(f.web_foo);
    redirect_chain(11, doc);
    go(10);
    expect_lookup(POSH_ERR_TOO_MANY_REDIRECTS, NULL);
    free(doc);
}

Test(hostile, redirect_to_http)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 302, .location = "http://foo.example.com/doc.json"});
    go(10);
    expect_lookup(POSH_ERR_REDIRECT_SCHEME, "http://foo.example.com/doc.json");
    cr_expect_eq(ts_evil_requests(evil, NULL), 1);
}

Test(hostile, redirect_to_other_schemes)
{
    static const char *const targets[] = {"ftp://foo.example.com/x", "file:///etc/passwd", "//foo.example.com/x",
                                          "javascript:alert(1)", "https://user@foo.example.com/x",
                                          "HTTP://foo.example.com/x"};
    const size_t n = sizeof(targets) / sizeof(targets[0]);
    char path[64], service[16];
    evil_new(f.web_foo);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/s%zu.json", i);
        route(path, (ts_evil_route_opts){.status = 302, .location = targets[i]});
    }
    go(10);
    for (size_t i = 0; i < n; i++) {
        snprintf(service, sizeof(service), "s%zu", i);
        /* A scheme-relative target stays on https: followed (to a 404), like any https redirect. */
        expect_lookup_service(service, i == 2 ? POSH_ERR_NO_POSH : POSH_ERR_REDIRECT_SCHEME, NULL);
    }
    cr_expect_eq(ts_evil_requests(evil, "/x"), 1);
    cr_expect_eq(ts_evil_requests(evil, NULL), (long)n + 2, "no non-https redirect target was requested");
}

Test(hostile, redirect_without_location)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 302});
    go(10);
    expect_lookup(POSH_ERR_HTTP_STATUS, "302");
}

Test(hostile, wrong_certificate_name)
{
    evil_new(f.web_hosting); /* valid, trusted, but for hosting.example.net */
    route(RFC7711_PATH, body("{}"));
    go(10);
    expect_lookup(POSH_ERR_TLS, NULL);
    cr_expect_eq(ts_evil_requests(evil, NULL), 0, "no request over a connection to the wrong server");
}

Test(hostile, untrusted_certificate)
{
    ts_cert_opts o = {0};
    o.dns[0] = FOO;
    o.cn = FOO;
    o.not_before_days = -1;
    o.not_after_days = 30;
    o.self_signed = 1;
    ts_cert *self = ts_cert_issue(NULL, &o);
    cr_assert_not_null(self);
    evil_new(self);
    route(RFC7711_PATH, body("{}"));
    go(10);
    expect_lookup(POSH_ERR_TLS, NULL);
    ts_cert_free(self);
}

Test(hostile, server_error)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 500, .body = "oops", .body_len = 4});
    go(10);
    expect_lookup(POSH_ERR_HTTP_STATUS, "500");
    cr_expect_eq(ts_evil_requests(evil, DRAFT02_PATH), 0);
}

Test(hostile, connection_closed)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.close_immediately = 1});
    go(10);
    expect_lookup(POSH_ERR_FETCH, NULL);
}

Test(hostile, nothing_listening)
{
    evil_new(f.web_foo);
    go(10);
    ts_evil_stop(evil);
    evil = NULL;
    expect_lookup(POSH_ERR_CONNECT, NULL);
}

/*
 * A response header over libcurl's limit (100 KiB a line) makes curl fail with CURLE_OUT_OF_MEMORY. That is the
 * web server's doing, not our memory running out: a fetch failure, cached for the negative TTL like any other,
 * so that a hostile server cannot make every handshake fetch again; and a result as posh_lookup() promises.
 */
Test(hostile, header_flood_is_a_cached_fetch_failure)
{
    const size_t flood = 200 * 1024;
    char *headers = malloc(flood + 16);
    cr_assert_not_null(headers);
    memcpy(headers, "X-Flood: ", 9);
    memset(headers + 9, 'a', flood);
    memcpy(headers + 9 + flood, "\r\n", 3);
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 200, .headers = headers, .body = "{}", .body_len = 2});
    free(headers);
    go(10);
    for (int i = 0; i < 2; i++) {
        posh_result *r = NULL;
        posh_err err = posh_lookup(client, FOO, "xmpp-server", &r);
        cr_expect_eq(err, POSH_ERR_FETCH, "lookup %d: got %d (%s), want POSH_ERR_FETCH", i, err,
                     posh_strerror(err));
        /* posh.h: *out is a result for every return but POSH_ERR_NOMEM and POSH_ERR_INVALID_ARGUMENT. */
        cr_assert_not_null(r, "lookup %d: no result for %s", i, posh_strerror(err));
        cr_expect_eq(posh_result_error(r), err);
        cr_expect(strstr(posh_result_message(r), RFC7711_PATH) != NULL, "names the URL: %s", posh_result_message(r));
        cr_expect(strstr(posh_result_message(r), "header") != NULL, "says a header was the trouble: %s",
                  posh_result_message(r));
        cr_expect_eq(posh_result_ttl(r), 60, "cached for the default negative TTL, got %ld", posh_result_ttl(r));
        posh_result_free(r);
    }
    cr_expect_eq(ts_evil_requests(evil, NULL), 1, "the second lookup within the negative TTL made no request");
}

static void lookup_evil_location(void *unused)
{
    (void)unused;
    posh_result *r = NULL;
    posh_err err = posh_lookup(client, FOO, "xmpp-server", &r);
    cr_expect_eq(err, POSH_ERR_REDIRECT_SCHEME, "got %s", posh_strerror(err));
    cr_assert_not_null(r);
    fx_expect_printable("result message", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), FX_EVIL_ESCAPED) != NULL, "message shows the Location escaped: %s",
              posh_result_message(r));
    posh_result_free(r);
}

/* Control bytes a server sends reach neither the result's message nor the log: they are shown as \xHH. */
Test(hostile, server_text_is_escaped_in_messages_and_log)
{
    char *log;
    unsetenv("POSH_LOG");
    setenv("POSH_LOG_LEVEL", "info", 1); /* read once per process, at the first log line: this one */
    evil_new(f.web_foo);
    route(RFC7711_PATH, (ts_evil_route_opts){.status = 302, .location = FX_EVIL_LOCATION});
    go(10);
    log = fx_stderr_of(lookup_evil_location, NULL);
    cr_expect(strstr(log, "posh: info: lookup " FOO) != NULL, "the failure is logged: %s", log);
    cr_expect(strstr(log, FX_EVIL_ESCAPED) != NULL, "the log shows the Location escaped: %s", log);
    for (char *line = strtok(log, "\n"); line != NULL; line = strtok(NULL, "\n"))
        fx_expect_printable("log line", line);
    free(log);
}

struct json_case {
    const char *body;
    size_t len; /* 0: strlen */
    posh_err want;
};

static const struct json_case json_cases[] = {
    {"", 0, POSH_ERR_JSON},
    {"not json", 0, POSH_ERR_JSON},
    {"[]", 0, POSH_ERR_JSON},
    {"{\"fingerprints\":[{\"sha-256\":\"AAAA\"}],\"expires\":60", 0, POSH_ERR_JSON},
    {"{\"expires\":60} trailing", 0, POSH_ERR_JSON},
    {"{\"fingerprints\":[],\"expires\":60}", 0, POSH_ERR_DOCUMENT},
    {"{\"fingerprints\":[{\"sha-256\":\"AAAA\"}],\"expires\":60}", 0, POSH_ERR_FINGERPRINT},
    {"{\"fingerprints\":[{\"sha-256\":\"x\"}]}", 0, POSH_ERR_EXPIRES},
    {"{\"url\":\"http://hosting.example.net/x\",\"expires\":60}", 0, POSH_ERR_REFERENCE_URL},
    {"{\"url\":\"https://hosting.example.net/x\",\"fingerprints\":[],\"expires\":60}", 0, POSH_ERR_DOCUMENT},
    {"{\"expires\":60,\"url\":\"https://a\\u0000b/\"}", 0, POSH_ERR_JSON},
    {"{\"url\":\"https://hosting.example.net/x\",\"expires\":1e400}", 0, POSH_ERR_EXPIRES},
    {"{\"url\":\"https://foo.example.com/x\",\"expires\":99999999999999999999999999}", 0, POSH_ERR_REFERENCE_TARGET}, /* huge expires is clamped, not an error */
    {"{\"a\":\0}", 7, POSH_ERR_JSON},
    {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 0, POSH_ERR_JSON},
};

Test(hostile, malformed_and_hostile_json)
{
    const size_t n = sizeof(json_cases) / sizeof(json_cases[0]);
    char path[64], service[16];
    evil_new(f.web_foo);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/j%zu.json", i);
        route(path, (ts_evil_route_opts){.status = 200, .body = json_cases[i].body,
                                         .body_len = json_cases[i].len ? json_cases[i].len
                                                                       : strlen(json_cases[i].body)});
    }
    go(10);
    for (size_t i = 0; i < n; i++) {
        snprintf(service, sizeof(service), "j%zu", i);
        expect_lookup_service(service, json_cases[i].want, NULL);
    }
}

Test(hostile, hostile_json_in_the_reference_target)
{
    evil_new(f.web_foo);
    route(RFC7711_PATH, body("{\"url\":\"https://foo.example.com/target\",\"expires\":60}"));
    route("/target", body("{\"fingerprints\":[{\"sha-256\":\"@@@@\"}],\"expires\":60}"));
    go(10);
    expect_lookup(POSH_ERR_FINGERPRINT, "https://foo.example.com/target");
}
