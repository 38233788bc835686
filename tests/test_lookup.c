/*
 * test_lookup.c - the POSH process against a real nginx over loopback: both layouts and their order, the
 * reference hop, redirects, statuses, the expiry min rule, and matching of real certificates.
 */
#include "fixture.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

static fx f;
static void setup(void) { fx_init(&f); }
static void teardown(void) { fx_fini(&f); }
TestSuite(lookup, .init = setup, .fini = teardown, .timeout = 60);

/* Does the result vouch for cert? */
static int vouches(posh_client *c, posh_result *r, ts_cert *cert)
{
    size_t len;
    const unsigned char *der = ts_cert_der(cert, &len);
    int match = -1, index = -2;
    cr_assert_eq(posh_match_der(c, r, der, len, &match, &index), POSH_OK);
    cr_assert(match == (index >= 0), "index %d agrees with match %d", index, match);
    return match;
}

static posh_err lookup(posh_client *c, const char *domain, const char *service, posh_result **r)
{
    posh_err err = posh_lookup(c, domain, service, r);
    cr_assert_not_null(*r, "a result explains every lookup");
    cr_assert_eq(posh_result_error(*r), err);
    return err;
}

Test(lookup, rfc7711_possession)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_descriptor_count(r), 1);
    cr_expect_eq(posh_result_ttl(r), 3600);
    cr_expect_eq(posh_result_followed_reference(r), 0);
    cr_expect(vouches(c, r, f.svc));
    cr_expect(!vouches(c, r, f.other));
    cr_expect(!vouches(c, r, f.web_foo));
    cr_assert_eq(posh_result_request_count(r), 1);
    const char *url;
    long status;
    cr_assert(posh_result_request(r, 0, &url, &status));
    cr_expect_str_eq(url, "https://foo.example.com/.well-known/posh/xmpp-server.json");
    cr_expect_eq(status, 200);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0, "stops at the first layout that answers");
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, draft02_after_404)
{
    posh_result *r;
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.svc, 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect(vouches(c, r, f.svc));
    cr_expect_eq(posh_result_request_count(r), 2);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 1);
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, rfc7711_wins_over_draft02)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 600));
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.other, 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect(vouches(c, r, f.svc));
    cr_expect(!vouches(c, r, f.other));
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, layout_switched_off)
{
    posh_result *r;
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.svc, 600));
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_layouts(cfg, POSH_LAYOUT_RFC7711), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_NO_POSH);
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0);
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);

    cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_layouts(cfg, POSH_LAYOUT_DRAFT02), POSH_OK);
    c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "only the earlier client asked rfc7711");
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
}

Test(lookup, srv_form_service)
{
    posh_result *r;
    fx_put_free(&f, FOO, "/.well-known/posh._xmpp-client._tcp.json", fx_doc1(f.svc, 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "_xmpp-client._tcp", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/xmpp-client.json"), 1);
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, nothing_published)
{
    posh_result *r;
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_NO_POSH);
    cr_expect(strstr(posh_result_message(r), "404") != NULL, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_request_count(r), 2);
    int match = 1;
    size_t len;
    const unsigned char *der = ts_cert_der(f.svc, &len);
    cr_expect_eq(posh_match_der(c, r, der, len, &match, NULL), POSH_ERR_NO_POSH);
    cr_expect_eq(match, 0);
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, forbidden_is_no_posh_at_that_url)
{
    posh_result *r;
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, RFC7711_PATH, 403), 0);
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.svc, 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, server_error_stops)
{
    posh_result *r;
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, RFC7711_PATH, 500), 0);
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.svc, 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_HTTP_STATUS);
    cr_expect(strstr(posh_result_message(r), "500") != NULL, "%s", posh_result_message(r));
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0, "an error is not a 404: no fallback");
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, reference_followed_and_min_expires)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://hosting.example.net/posh/foo.json", 300));
    fx_put_free(&f, HOSTING, "/posh/foo.json", fx_doc1(f.svc, 7200));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_followed_reference(r), 1);
    cr_expect_eq(posh_result_ttl(r), 300, "reference expires is lower");
    cr_expect(vouches(c, r, f.svc));
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/foo.json"), 1);
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, min_expires_fingerprints_lower_and_max_ttl)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://hosting.example.net/posh/foo.json", 9000));
    fx_put_free(&f, HOSTING, "/posh/foo.json", fx_doc1(f.svc, 120));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(posh_result_ttl(r), 120);
    posh_result_free(r);
    posh_client_free(c);

    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_max_ttl(cfg, 60), POSH_OK);
    c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(posh_result_ttl(r), 60, "the configured maximum caps the lifetime");
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
}

Test(lookup, reference_to_reference_is_an_error)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://hosting.example.net/posh/a.json", 300));
    fx_put_free(&f, HOSTING, "/posh/a.json", fx_ref("https://hosting.example.net/posh/b.json", 300));
    fx_put_free(&f, HOSTING, "/posh/b.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_REFERENCE_CHAIN);
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/b.json"), 0);
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, reference_target_missing)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://hosting.example.net/posh/gone.json", 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_REFERENCE_TARGET);
    cr_expect(strstr(posh_result_message(r), "gone.json") != NULL, "%s", posh_result_message(r));
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0, "a broken reference does not fall back");
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, redirects_302_and_307)
{
    posh_result *r;
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, RFC7711_PATH, 302, "https://hosting.example.net/r1"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, HOSTING, "/r1", 307, "https://hosting.example.net/posh/foo.json"), 0);
    fx_put_free(&f, HOSTING, "/posh/foo.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect(vouches(c, r, f.svc));
    cr_expect_eq(posh_result_request_count(r), 3);
    long status;
    cr_assert(posh_result_request(r, 0, NULL, &status));
    cr_expect_eq(status, 302);
    cr_assert(posh_result_request(r, 1, NULL, &status));
    cr_expect_eq(status, 307);
    cr_expect_eq(posh_result_followed_reference(r), 0, "a redirect is not a reference");
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, redirect_limit_configurable)
{
    posh_result *r;
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, RFC7711_PATH, 302, "https://hosting.example.net/r1"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, HOSTING, "/r1", 302, "https://hosting.example.net/posh/foo.json"), 0);
    fx_put_free(&f, HOSTING, "/posh/foo.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_max_redirects(cfg, 1), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_TOO_MANY_REDIRECTS);
    cr_expect_eq(fx_requests(&f, HOSTING, "/posh/foo.json"), 0);
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
}

Test(lookup, sha1_switch)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(&f.svc, 1, "sha-1", 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect(vouches(c, r, f.svc), "SHA-1 is accepted by default");
    posh_result_free(r);
    posh_client_free(c);

    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_no_sha1(cfg, 1), POSH_OK);
    c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect(!vouches(c, r, f.svc), "SHA-1 switched off");
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
}

Test(lookup, sha512_and_alternates)
{
    posh_result *r;
    ts_cert *both[] = {f.other, f.svc};
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(both, 2, "sha-512", 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    size_t len;
    const unsigned char *der = ts_cert_der(f.svc, &len);
    int match, index;
    cr_assert_eq(posh_match_der(c, r, der, len, &match, &index), POSH_OK);
    cr_expect_eq(match, 1);
    cr_expect_eq(index, 1, "the second descriptor (roll-over alternate) matched");
    char b64[96];
    cr_expect(posh_result_descriptor_hash(r, 1, "sha-512", b64, sizeof(b64)));
    char *want = ts_cert_fingerprint_b64(f.svc, "sha-512");
    cr_expect_str_eq(b64, want);
    free(want);
    cr_expect(!posh_result_descriptor_hash(r, 1, "sha-256", b64, sizeof(b64)));
    posh_result_free(r);
    posh_client_free(c);
}

Test(lookup, web_server_not_trusted)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    /* Trust anchors that did not sign the web server's certificate. */
    ts_ca *stranger = ts_ca_new("stranger CA");
    char path[600];
    snprintf(path, sizeof(path), "%s/stranger.pem", f.dir);
    cr_assert_eq(ts_ca_write(stranger, path), 0);
    cr_assert_eq(posh_config_set_ca_file(cfg, path), POSH_OK);
    posh_client *c = posh_client_new(cfg);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_TLS, "%s", posh_result_message(r));
    cr_expect_eq(fx_requests(&f, FOO, NULL), 0, "no request was sent over an unverified connection");
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
    ts_ca_free(stranger);
}

/* A client routed to the fixture's nginx, trusting ca_file and ca_path (NULL: not configured). */
static posh_client *client_trusting(const char *ca_file, const char *ca_path)
{
    posh_config *cfg = posh_config_new();
    cr_assert_not_null(cfg);
    cr_assert_eq(posh_config_set_connect_to(cfg, f.connect_to), POSH_OK, "%s", posh_config_error(cfg));
    cr_assert_eq(posh_config_set_ca_file(cfg, ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_ca_path(cfg, ca_path), POSH_OK);
    return fx_client_of(cfg);
}

/* Write ca's certificate into dir as OpenSSL's hashed lookup finds it (HASH.0); dir is made. */
static void hashed_dir(const char *dir, ts_ca *ca)
{
    char path[700], name[32];
    cr_assert_eq(mkdir(dir, 0755), 0, "mkdir %s: %s", dir, strerror(errno));
    fx_hashed_name(ca, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    cr_assert_eq(ts_ca_write(ca, path), 0);
}

/*
 * POSH_CA_FILE or POSH_CA_PATH alone replaces the system store: libcurl keeps its built-in CA directory and file
 * unless each is set, so a CA file alone used to leave /etc/ssl/certs trusted beside it. The system store is
 * made to trust the fixture's CA in a private mount namespace of this test worker (/etc/ssl/certs bind-mounted
 * after / was made private: nothing reaches the host's files), and the configured anchors are a stranger's.
 */
Test(lookup, configured_anchors_replace_the_system_store)
{
    char sys[600], stranger_file[600], stranger_dir[600];
    posh_result *r = NULL;
    posh_client *c;
    ts_ca *stranger = ts_ca_new("stranger CA");

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(sys, sizeof(sys), "%s/system-certs", f.dir);
    hashed_dir(sys, f.ca);
    snprintf(stranger_file, sizeof(stranger_file), "%s/system-certs/ca-certificates.crt", f.dir);
    cr_assert_eq(ts_ca_write(f.ca, stranger_file), 0); /* the system bundle too trusts the fixture */
    snprintf(stranger_file, sizeof(stranger_file), "%s/stranger.pem", f.dir);
    cr_assert_eq(ts_ca_write(stranger, stranger_file), 0);
    snprintf(stranger_dir, sizeof(stranger_dir), "%s/stranger-certs", f.dir);
    hashed_dir(stranger_dir, stranger);

    cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s (this test runs as root: CI does)",
                 strerror(errno));
    cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "make / private: %s", strerror(errno));
    cr_assert_eq(mount(sys, "/etc/ssl/certs", NULL, MS_BIND, NULL), 0, "bind-mount on /etc/ssl/certs: %s",
                 strerror(errno));

    /* The control: with nothing configured, the (private) system store is what trusts the web server. */
    c = client_trusting(NULL, NULL);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK, "the system store of this namespace: %s",
                 posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);

    /* A CA file alone: the built-in directory must not be trusted beside it. */
    c = client_trusting(stranger_file, NULL);
    cr_expect_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_TLS, "POSH_CA_FILE alone: %s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);

    /* A CA directory alone: nor the built-in file. */
    c = client_trusting(NULL, stranger_dir);
    cr_expect_eq(lookup(c, FOO, "xmpp-server", &r), POSH_ERR_TLS, "POSH_CA_PATH alone: %s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);

    cr_expect_eq(fx_requests(&f, FOO, NULL), 1, "only the control's request reached nginx over a verified connection");
    ts_ca_free(stranger);
}

Test(lookup, invalid_inputs_make_no_request)
{
    static const char *const domains[] = {"foo.example.com:443", "127.0.0.1", "[::1]", "foo/bar", "", ".",
                                          "-foo.example.com", "foo..example.com"};
    posh_result *r;
    fx_start(&f);
    posh_client *c = fx_client(&f);
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
        cr_expect_eq(lookup(c, domains[i], "xmpp-server", &r), POSH_ERR_BAD_DOMAIN, "%s", domains[i]);
        posh_result_free(r);
    }
    cr_expect_eq(lookup(c, FOO, "xmpp server", &r), POSH_ERR_BAD_SERVICE);
    posh_result_free(r);
    cr_expect_eq(posh_lookup(c, NULL, "xmpp-server", &r), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_null(r);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
    posh_client_free(c);
}

Test(lookup, domain_normalised)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(lookup(c, "FOO.Example.COM.", "XMPP-SERVER", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_str_eq(posh_result_domain(r), FOO);
    cr_expect_str_eq(posh_result_service(r), "_xmpp-server._tcp");
    posh_result_free(r);
    cr_assert_eq(lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "both spellings share one cache entry");
    posh_result_free(r);
    posh_client_free(c);
}
