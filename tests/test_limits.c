/*
 * test_limits.c - every hard limit on what comes from the network (README "Limits"), end to end through
 * posh_lookup() against a real HTTPS server on 127.0.0.1: just under (or at) the limit works, one over is
 * refused with the documented error and goes no further. The parser's own limits are unit-tested in
 * test_doc.c (doc_limits); here they are seen as a client sees them.
 */
#include "fixture.h"
#include "posh_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fx f;
static ts_evil *evil;
static posh_client *client;

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

TestSuite(limits, .init = setup, .fini = teardown, .timeout = 120);

/* A server for foo.example.com (its web certificate) that answers only the routes a test gives it. */
static void evil_new(void)
{
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo)));
}

static void route(const char *path, const char *body, size_t len, int no_content_length)
{
    ts_evil_route_opts o = {.status = 200, .body = body, .body_len = len, .no_content_length = no_content_length};
    cr_assert_eq(ts_evil_route(evil, path, &o), 0, "route %.80s", path);
}

static void redirect(const char *path, const char *location)
{
    ts_evil_route_opts o = {.status = 302, .location = location};
    cr_assert_eq(ts_evil_route(evil, path, &o), 0, "route %.80s", path);
}

/* Start the server, and a client whose requests for host go to it; max_bytes > 0 sets the body cap. */
static void go_for(const char *host, long max_bytes)
{
    char connect_to[600];
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d", host, ts_evil_port(evil));
    posh_config *cfg = posh_config_new();
    cr_assert_not_null(cfg);
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK, "%s", posh_config_error(cfg));
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 20000), POSH_OK);
    if (max_bytes > 0)
        cr_assert_eq(posh_config_set_max_bytes(cfg, max_bytes), POSH_OK);
    cr_assert_not_null(client = posh_client_new(cfg));
    posh_config_free(cfg);
}

static void go(long max_bytes)
{
    go_for(FOO, max_bytes);
}

/* Look up (domain, service); expect err and, if want_text is given, a message that contains it. */
static posh_result *expect_on(const char *domain, const char *service, posh_err want, const char *want_text)
{
    posh_result *r = NULL;
    posh_err err = posh_lookup(client, domain, service, &r);
    cr_assert_not_null(r);
    cr_expect_eq(err, want, "%.40s %.40s: got %d (%s: %s), want %d (%s)", domain, service, err, posh_strerror(err),
                 posh_result_message(r), want, posh_strerror(want));
    if (want_text != NULL)
        cr_expect(strstr(posh_result_message(r), want_text) != NULL, "message \"%s\" mentions \"%s\"",
                  posh_result_message(r), want_text);
    return r;
}

static void expect(const char *service, posh_err want, const char *want_text)
{
    posh_result_free(expect_on(FOO, service, want, want_text));
}

/* text padded with JSON whitespace to exactly n bytes (n >= strlen(text)). Caller frees. */
static char *padded(const char *text, size_t n)
{
    char *s = malloc(n + 1);
    size_t len = strlen(text);
    cr_assert_not_null(s);
    cr_assert_leq(len, n);
    memcpy(s, text, len);
    memset(s + len, ' ', n - len);
    s[n] = '\0';
    return s;
}

/* "https://foo.example.com/" followed by 'a's to exactly n characters. Caller frees. */
static char *long_url(size_t n)
{
    static const char prefix[] = "https://" FOO "/";
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memcpy(s, prefix, sizeof(prefix) - 1);
    memset(s + sizeof(prefix) - 1, 'a', n - (sizeof(prefix) - 1));
    s[n] = '\0';
    return s;
}

static const char *path_of(const char *url)
{
    return url + strlen("https://" FOO);
}

/* ---- response body: POSH_MAX_BYTES ---- */

Test(limits, body_cap_default_under_at_over)
{
    static const struct {
        size_t size;
        int no_content_length;
        posh_err want;
    } cases[] = {
        {65535, 0, POSH_OK},           {65536, 0, POSH_OK}, {65537, 0, POSH_ERR_TOO_LARGE},
        {65535, 1, POSH_OK},           {65536, 1, POSH_OK}, {65537, 1, POSH_ERR_TOO_LARGE},
        {10 * 1024 * 1024, 1, POSH_ERR_TOO_LARGE},
    };
    const size_t n = sizeof(cases) / sizeof(cases[0]);
    char *doc = fx_doc1(f.svc, 300), *bodies[sizeof(cases) / sizeof(cases[0])], path[64], service[16];

    evil_new();
    for (size_t i = 0; i < n; i++) {
        bodies[i] = padded(doc, cases[i].size);
        snprintf(path, sizeof(path), "/.well-known/posh/b%zu.json", i);
        route(path, bodies[i], cases[i].size, cases[i].no_content_length);
    }
    go(0);
    for (size_t i = 0; i < n; i++) {
        snprintf(service, sizeof(service), "b%zu", i);
        expect(service, cases[i].want, cases[i].want == POSH_ERR_TOO_LARGE ? "65536" : NULL);
        free(bodies[i]);
    }
    free(doc);
}

Test(limits, body_cap_configured_and_per_response)
{
    /* The largest cap allowed: 1 MiB read, one byte more refused. */
    char *doc = fx_doc1(f.svc, 300), *at = padded(doc, 1048576), *over = padded(doc, 1048577);
    char *ref = padded("{\"url\":\"https://" FOO "/target\",\"expires\":60}", 200), *target = padded(doc, 201);
    char *ref_over = padded("{\"url\":\"https://" FOO "/target\",\"expires\":60}", 201);

    evil_new();
    route("/.well-known/posh/at.json", at, 1048576, 0);
    route("/.well-known/posh/over.json", over, 1048577, 1);
    go(1048576);
    expect("at", POSH_OK, NULL);
    expect("over", POSH_ERR_TOO_LARGE, "1048576");
    posh_client_free(client);
    client = NULL;
    ts_evil_stop(evil);

    /* A cap of 200: the source answer at the cap is read, the reference target one over it is refused. */
    evil_new();
    route("/.well-known/posh/ref.json", ref, 200, 0);
    route("/.well-known/posh/refover.json", ref_over, 201, 0);
    route("/target", target, 201, 0);
    go(200);
    expect("ref", POSH_ERR_TOO_LARGE, "https://" FOO "/target");
    expect("refover", POSH_ERR_TOO_LARGE, "/.well-known/posh/refover.json");
    cr_expect_eq(ts_evil_requests(evil, "/target"), 1, "only the reference under the cap was followed");
    free(doc);
    free(at);
    free(over);
    free(ref);
    free(ref_over);
    free(target);
}

/* ---- URLs: POSH_MAX_URL_LEN for a reference's url and for a redirect's Location ---- */

Test(limits, reference_url_length)
{
    char *doc = fx_doc1(f.svc, 300), *at = long_url(POSH_MAX_URL_LEN), *over = long_url(POSH_MAX_URL_LEN + 1);
    char *ref_at = fx_ref(at, 60), *ref_over = fx_ref(over, 60);

    evil_new();
    route("/.well-known/posh/at.json", ref_at, strlen(ref_at), 0);
    route("/.well-known/posh/over.json", ref_over, strlen(ref_over), 0);
    route(path_of(at), doc, strlen(doc), 0);
    route(path_of(over), doc, strlen(doc), 0);
    go(0);
    posh_result *r = expect_on(FOO, "at", POSH_OK, NULL);
    cr_expect_eq(posh_result_followed_reference(r), 1);
    posh_result_free(r);
    expect("over", POSH_ERR_REFERENCE_URL, "longer than 2048");
    cr_expect_eq(ts_evil_requests(evil, path_of(at)), 1);
    cr_expect_eq(ts_evil_requests(evil, path_of(over)), 0, "a url over the limit is never requested");
    free(doc);
    free(at);
    free(over);
    free(ref_at);
    free(ref_over);
}

Test(limits, redirect_location_length)
{
    char *doc = fx_doc1(f.svc, 300), *at = long_url(POSH_MAX_URL_LEN), *over = long_url(POSH_MAX_URL_LEN + 1);

    evil_new();
    redirect("/.well-known/posh/at.json", at);
    redirect("/.well-known/posh/over.json", over);
    route(path_of(at), doc, strlen(doc), 0);
    route(path_of(over), doc, strlen(doc), 0);
    go(0);
    expect("at", POSH_OK, NULL);
    expect("over", POSH_ERR_REDIRECT_SCHEME, NULL);
    cr_expect_eq(ts_evil_requests(evil, path_of(at)), 1);
    cr_expect_eq(ts_evil_requests(evil, path_of(over)), 0, "a Location over the limit is never requested");
    free(doc);
    free(at);
    free(over);
}

/* ---- documents: POSH_MAX_DESCRIPTORS, POSH_MAX_HASH_STRING, POSH_MAX_JSON_DEPTH ---- */

/* n descriptors that vouch for nobody (all-zero SHA-256), then one for f.svc: n + 1 in all. */
static char *descriptors_then_svc(size_t n)
{
    static const char zero[] = "{\"sha-256\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"},";
    char *b64 = ts_cert_fingerprint_b64(f.svc, "sha-256"), *s;
    size_t cap = 64 + n * sizeof(zero) + strlen(b64) + 64, len;

    cr_assert_not_null(s = malloc(cap));
    len = (size_t)snprintf(s, cap, "{\"expires\":60,\"fingerprints\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s", zero);
    snprintf(s + len, cap - len, "{\"sha-256\":\"%s\"}]}", b64);
    free(b64);
    return s;
}

Test(limits, descriptor_count)
{
    char *at = descriptors_then_svc(POSH_MAX_DESCRIPTORS - 1), *over = descriptors_then_svc(POSH_MAX_DESCRIPTORS);
    size_t len;
    const unsigned char *der = ts_cert_der(f.svc, &len);
    int match = 0, index = -1;

    evil_new();
    route("/.well-known/posh/at.json", at, strlen(at), 0);
    route("/.well-known/posh/over.json", over, strlen(over), 0);
    go(0);
    posh_result *r = expect_on(FOO, "at", POSH_OK, NULL);
    cr_expect_eq(posh_result_descriptor_count(r), POSH_MAX_DESCRIPTORS);
    cr_expect_eq(posh_match_der(client, r, der, len, &match, &index), POSH_OK);
    cr_expect(match && index == POSH_MAX_DESCRIPTORS - 1, "the 64th descriptor vouches (match %d, index %d)", match,
              index);
    posh_result_free(r);
    expect("over", POSH_ERR_DOCUMENT, "65 descriptors");
    free(at);
    free(over);
}

Test(limits, fingerprint_string_length)
{
    /* SHA-512 is the longest digest (88 characters of base64), well under the limit; past it, refused unread. */
    char *b64 = ts_cert_fingerprint_b64(f.svc, "sha-512"), *longest = NULL, *over = NULL, *unknown = NULL;
    char many[POSH_MAX_HASH_STRING + 2];
    size_t len;
    const unsigned char *der = ts_cert_der(f.svc, &len);
    int match = 0, index = -1;

    memset(many, 'A', sizeof(many) - 1);
    many[sizeof(many) - 1] = '\0';
    cr_assert_eq(strlen(b64), 88);
    cr_assert_geq(asprintf(&longest, "{\"fingerprints\":[{\"sha-512\":\"%s\"}],\"expires\":60}", b64), 0);
    cr_assert_geq(asprintf(&over, "{\"fingerprints\":[{\"sha-512\":\"%s\"}],\"expires\":60}", many), 0);
    /* Unknown hash names are never read, whatever their length: the document still serves its known hash. */
    cr_assert_geq(asprintf(&unknown, "{\"fingerprints\":[{\"sha3-512\":\"%s\",\"sha-512\":\"%s\"}],\"expires\":60}",
                           many, b64), 0);
    evil_new();
    route("/.well-known/posh/at.json", longest, strlen(longest), 0);
    route("/.well-known/posh/over.json", over, strlen(over), 0);
    route("/.well-known/posh/unknown.json", unknown, strlen(unknown), 0);
    go(0);
    posh_result *r = expect_on(FOO, "at", POSH_OK, NULL);
    cr_expect_eq(posh_match_der(client, r, der, len, &match, &index), POSH_OK);
    cr_expect(match, "a SHA-512 fingerprint decides");
    posh_result_free(r);
    expect("over", POSH_ERR_FINGERPRINT, "longer than 128");
    expect("unknown", POSH_OK, NULL);
    free(b64);
    free(longest);
    free(over);
    free(unknown);
}

/* A document whose unknown member "x" nests depth values deep (the document itself counted), as json-c counts. */
static char *nested(size_t depth)
{
    char *b64 = ts_cert_fingerprint_b64(f.svc, "sha-256"), *s;
    size_t cap = 256 + 8 * depth, len, containers = depth - 2;

    cr_assert_not_null(s = malloc(cap));
    len = (size_t)snprintf(s, cap, "{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":60,\"x\":", b64);
    for (size_t i = 0; i < containers; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s", i % 2 ? "{\"y\":" : "[");
    len += (size_t)snprintf(s + len, cap - len, "1");
    for (size_t i = containers; i-- > 0;)
        len += (size_t)snprintf(s + len, cap - len, "%s", i % 2 ? "}" : "]");
    snprintf(s + len, cap - len, "}");
    free(b64);
    return s;
}

Test(limits, json_depth)
{
    char *at = nested(POSH_MAX_JSON_DEPTH), *over = nested(POSH_MAX_JSON_DEPTH + 1), *far = nested(10000);

    evil_new();
    route("/.well-known/posh/at.json", at, strlen(at), 0);
    route("/.well-known/posh/over.json", over, strlen(over), 0);
    route("/.well-known/posh/far.json", far, strlen(far), 0); /* about 30 kB, under the body cap */
    go(0);
    expect("at", POSH_OK, NULL);
    expect("over", POSH_ERR_JSON, "nesting too deep");
    expect("far", POSH_ERR_JSON, "nesting too deep");
    free(at);
    free(over);
    free(far);
}

/* ---- names: POSH_MAX_DOMAIN_LEN and POSH_MAX_SERVICE_LEN ---- */

/* labels of 63, 63, 63 and last characters, dotted: 3 * 64 + last characters in all. */
static void long_domain(char *out, size_t last)
{
    size_t len = 0;
    for (int l = 0; l < 4; l++) {
        size_t n = l < 3 ? 63 : last;
        memset(out + len, 'a' + l, n);
        len += n;
        if (l < 3)
            out[len++] = '.';
    }
    out[len] = '\0';
}

Test(limits, domain_length)
{
    char at[POSH_MAX_DOMAIN_LEN + 1], at_dot[POSH_MAX_DOMAIN_LEN + 2], over[POSH_MAX_DOMAIN_LEN + 2];
    char *doc = fx_doc1(f.svc, 300), want_url[400];
    ts_cert_opts o = {0};
    ts_cert *web;
    const char *url = NULL;

    long_domain(at, 61);
    long_domain(over, 62);
    cr_assert_eq(strlen(at), POSH_MAX_DOMAIN_LEN);
    cr_assert_eq(strlen(over), POSH_MAX_DOMAIN_LEN + 1);
    snprintf(at_dot, sizeof(at_dot), "%s.", at);
    /* The longest name's own web server, with a certificate for it (no CN: a CN holds 64 characters at most). */
    o.dns[0] = at;
    o.not_before_days = -1;
    o.not_after_days = 30;
    cr_assert_not_null(web = ts_cert_issue(f.ca, &o));
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(web), ts_cert_key(web)));
    route(RFC7711_PATH, doc, strlen(doc), 0);
    go_for(at, 0);
    posh_result *r = expect_on(at, "xmpp-server", POSH_OK, NULL);
    cr_expect_str_eq(posh_result_domain(r), at);
    cr_assert_eq(posh_result_request_count(r), 1);
    cr_assert(posh_result_request(r, 0, &url, NULL));
    snprintf(want_url, sizeof(want_url), "https://%s%s", at, RFC7711_PATH);
    cr_expect_str_eq(url, want_url);
    posh_result_free(r);
    posh_result_free(expect_on(at_dot, "xmpp-server", POSH_OK, NULL)); /* the trailing dot is not counted */
    posh_result_free(expect_on(over, "xmpp-server", POSH_ERR_BAD_DOMAIN, NULL));
    cr_expect_eq(ts_evil_requests(evil, NULL), 1, "one fetch for the name (and its dotted form), none past the limit");
    ts_cert_free(web);
    free(doc);
}

Test(limits, service_length)
{
    char at[POSH_MAX_SERVICE_LEN + 1], over[POSH_MAX_SERVICE_LEN + 2], path[128], srv[2 * POSH_MAX_SERVICE_LEN + 8];
    char *doc = fx_doc1(f.svc, 300);

    memset(at, 's', sizeof(at) - 1);
    at[sizeof(at) - 1] = '\0';
    memset(over, 's', sizeof(over) - 1);
    over[sizeof(over) - 1] = '\0';
    evil_new();
    snprintf(path, sizeof(path), "/.well-known/posh/%s.json", at);
    route(path, doc, strlen(doc), 0);
    go(0);
    expect(at, POSH_OK, NULL);
    snprintf(srv, sizeof(srv), "_%s._%s", at, "tcp");
    expect(srv, POSH_OK, NULL); /* the same service in SRV form: the same cache entry */
    expect(over, POSH_ERR_BAD_SERVICE, NULL);
    snprintf(srv, sizeof(srv), "_%s._%s", over, "tcp");
    expect(srv, POSH_ERR_BAD_SERVICE, NULL);
    snprintf(srv, sizeof(srv), "_%s._%s", "xmpp-server", over);
    expect(srv, POSH_ERR_BAD_SERVICE, NULL);
    cr_expect_eq(ts_evil_requests(evil, NULL), 1);
    free(doc);
}

/* ---- requests per lookup: POSH_MAX_REQUESTS ---- */

/* first -> /<tag>1 -> ... -> /<tag><hops - 1> -> final_path: hops redirects. */
static void redirect_chain(const char *first, const char *tag, int hops, const char *final_path)
{
    char path[96], next[160];
    for (int i = 0; i < hops; i++) {
        if (i == 0)
            snprintf(path, sizeof(path), "%s", first);
        else
            snprintf(path, sizeof(path), "/%s%d", tag, i);
        if (i + 1 == hops)
            snprintf(next, sizeof(next), "https://%s%s", FOO, final_path);
        else
            snprintf(next, sizeof(next), "https://%s/%s%d", FOO, tag, i + 1);
        redirect(path, next);
    }
}

Test(limits, longest_lookup_recorded_in_full)
{
    /* The most requests one lookup can make: each of the 2 layouts and the reference hop at 10 redirects. */
    char *doc = fx_doc1(f.svc, 300), *ref = fx_ref("https://" FOO "/r0", 60);
    const char *url = NULL;
    long status = 0;

    evil_new();
    redirect_chain(RFC7711_PATH, "a", 10, "/gone"); /* ends in a 404: no POSH at this layout */
    redirect_chain(DRAFT02_PATH, "b", 10, "/ref");
    route("/ref", ref, strlen(ref), 0);
    redirect_chain("/r0", "c", 10, "/final");
    route("/final", doc, strlen(doc), 0);
    go(0);
    posh_result *r = expect_on(FOO, "xmpp-server", POSH_OK, NULL);
    cr_expect_eq(ts_evil_requests(evil, NULL), POSH_MAX_REQUESTS);
    cr_assert_eq(posh_result_request_count(r), POSH_MAX_REQUESTS, "every request is in the result");
    cr_assert(posh_result_request(r, POSH_MAX_REQUESTS - 1, &url, &status));
    cr_expect_str_eq(url, "https://" FOO "/final", "the last request is the document's (messages name it)");
    cr_expect_eq(status, 200);
    posh_result_free(r);
    free(doc);
    free(ref);
}
