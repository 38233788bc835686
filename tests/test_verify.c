/*
 * test_verify.c - real TLS handshakes through the one-line API: acceptance exactly when the source domain
 * vouches, no laundering of other errors (untrusted chain, expired leaf, revoked certificate) even with an
 * accept-everything application callback, callbacks set before and after, reference identifier order, mode pin,
 * and many threads sharing one SSL_CTX with a single lookup.
 */
#include "fixture.h"
#include "handshake.h"

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static fx f;
static posh_client *client;
static ts_tls *server;

static void setup(void)
{
    fx_init(&f);
}

static void teardown(void)
{
    ts_tls_stop(server);
    posh_client_free(client);
    fx_fini(&f);
}

TestSuite(verify, .init = setup, .fini = teardown, .timeout = 60);

/* Start nginx and a TLS server presenting cert (signed by the fixture CA unless it says otherwise). */
static void start(ts_cert *cert)
{
    fx_start(&f);
    client = fx_client(&f);
    server = ts_tls_start(ts_cert_x509(cert), NULL, ts_cert_key(cert));
    cr_assert_not_null(server, "TLS server did not start");
}

static SSL_CTX *client_ctx(void)
{
    return hs_client_ctx(f.ca_file, client, "xmpp-server");
}

/* One handshake; host (SSL_set1_host) and sni may be NULL; tweak may adjust the SSL before connecting. */
static hs handshake_with(SSL_CTX *ctx, const char *host, const char *sni, void (*tweak)(SSL *))
{
    return hs_handshake(ctx, ts_tls_port(server), host, sni, tweak);
}

static hs handshake(SSL_CTX *ctx)
{
    return handshake_with(ctx, FOO, FOO, NULL);
}

Test(verify, accepted_when_vouched)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_OK);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    cr_expect_eq(h.err, POSH_OK);
    cr_expect(strstr(h.msg, "descriptor 0") != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);
}

/*
 * The message of a warm outcome is formatted when the application asks for it (issue 20): the text is exactly what
 * it was when formatted during the handshake, for the first handshake (digest) and the next (remembered DER), and
 * the descriptor named is the one that matched.
 */
Test(verify, warm_messages_exact)
{
    ts_cert *certs[2] = {f.other, f.svc};
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(certs, 2, "sha-256", 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    for (int i = 0; i < 3; i++) {
        hs h = handshake(ctx);
        cr_expect(h.connected);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
        cr_expect_str_eq(h.msg, "foo.example.com _xmpp-server._tcp: certificate vouched for by descriptor 1 of "
                                "https://foo.example.com/.well-known/posh/xmpp-server.json");
    }
    SSL_CTX_free(ctx);
}

static void add_foo_host(SSL *ssl)
{
    cr_assert_eq(SSL_add1_host(ssl, FOO), 1);
}

/*
 * On a warm cache the first host is taken as the reference as it is, without normalising it, only when it is a
 * cached key, which only a normalised name can be (issue 20). Any other form of the name is normalised as before:
 * the reference in the message is always the normal form, one lookup serves them all, and a first host that
 * cannot be a source domain still gives way to the next one.
 */
Test(verify, warm_reference_is_the_normalised_name)
{
    static const char *const forms[] = {FOO, "FOO.Example.COM", "foo.example.com.", "Foo.Example.Com."};
    const char *want = "foo.example.com _xmpp-server._tcp: certificate vouched for by descriptor 0 of "
                       "https://foo.example.com/.well-known/posh/xmpp-server.json";
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake(ctx);
    cr_assert_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        h = handshake_with(ctx, forms[i], FOO, NULL);
        cr_expect(h.connected, "%s", forms[i]);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s: %s", forms[i], h.msg);
        cr_expect_str_eq(h.msg, want, "%s", forms[i]);
    }
    h = handshake_with(ctx, "*.example.com", FOO, add_foo_host);
    cr_expect(h.connected);
    cr_expect_str_eq(h.msg, want);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "one lookup, then the cache for every form");
    SSL_CTX_free(ctx);
}

static void no_wildcards(SSL *ssl)
{
    X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl), X509_CHECK_FLAG_NO_WILDCARDS);
}

static void add_service_host(SSL *ssl)
{
    cr_assert_eq(SSL_add1_host(ssl, "xmpp.hosting.example.net"), 1);
}

/*
 * A warm verification takes the name check's answer from the cache (issue 20) only for what was checked: these
 * very certificate bytes, this one host and these flags failed before and POSH vouched. Flags under which the
 * same bytes carry the name, or a second host they carry, are checked again and give PKIX, not POSH.
 */
Test(verify, known_name_failure_is_exact)
{
    ts_cert *wild = fx_issue(f.ca, "*.example.com", -1, 30, 0);
    hs h;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(wild, 3600));
    start(wild);
    SSL_CTX *ctx = client_ctx();
    for (int i = 0; i < 3; i++) {
        h = handshake_with(ctx, FOO, FOO, no_wildcards);
        cr_expect(h.connected);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "no wildcards, %d: %s", i, h.msg);
    }
    h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.status, POSH_STATUS_PKIX, "wildcards allowed: the certificate carries the name: %s", h.msg);
    h = handshake_with(ctx, FOO, FOO, no_wildcards);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    SSL_CTX_free(ctx);
    ts_cert_free(wild);
}

Test(verify, known_name_failure_is_for_one_host)
{
    hs h;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    for (int i = 0; i < 3; i++) {
        h = handshake(ctx);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%d: %s", i, h.msg);
    }
    h = handshake_with(ctx, FOO, FOO, add_service_host);
    cr_expect(h.connected);
    cr_expect_eq(h.status, POSH_STATUS_PKIX, "the second host is the certificate's name: %s", h.msg);
    SSL_CTX_free(ctx);
}

static time_t memo_clock(void *arg)
{
    return *(time_t *)arg;
}

/*
 * A thread keeps the last answer it took from the cache (issue 20: the cache's lock, bucket and entry are cold
 * lines on every handshake), and it must answer exactly as the cache would: a flush, an expiry and a new
 * document all reach the next handshake on that thread, through a new fetch.
 */
Test(verify, warm_memo_follows_the_cache)
{
    time_t now = 1000;
    posh_config *cfg;
    hs h;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 60));
    fx_start(&f);
    cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_clock(cfg, memo_clock, &now), POSH_OK);
    client = fx_client_of(cfg);
    server = ts_tls_start(ts_cert_x509(f.svc), NULL, ts_cert_key(f.svc));
    cr_assert_not_null(server);
    SSL_CTX *ctx = client_ctx();
    for (int i = 0; i < 4; i++) {
        h = handshake(ctx);
        cr_assert_eq(h.status, POSH_STATUS_ACCEPTED, "%d: %s", i, h.msg);
    }
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "warm: one fetch");
    posh_client_flush(client);
    for (int i = 0; i < 3; i++) {
        h = handshake(ctx);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    }
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "flushed: fetched again, once");
    now += 61;
    h = handshake(ctx);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 3, "expired: fetched again");
    /* The domain now vouches for another certificate only: once its answer is fetched, this one is rejected. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 60));
    now += 61;
    h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s", h.msg);
    h = handshake(ctx);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "the new answer, not the remembered one: %s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 4);
    SSL_CTX_free(ctx);
}

/* A certificate POSH vouched for is remembered by its bytes: another certificate is still judged by digest. */
Test(verify, remembered_match_is_byte_exact)
{
    ts_tls *stranger;
    hs h;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    stranger = ts_tls_start(ts_cert_x509(f.other), NULL, ts_cert_key(f.other));
    cr_assert_not_null(stranger);
    SSL_CTX *ctx = client_ctx();
    h = handshake(ctx);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    h = hs_handshake(ctx, ts_tls_port(stranger), FOO, FOO, NULL);
    cr_expect(!h.connected);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s", h.msg);
    h = handshake(ctx);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    SSL_CTX_free(ctx);
    ts_tls_stop(stranger);
}

Test(verify, rejected_when_not_vouched)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(verify, rejected_without_document)
{
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(verify, matching_name_needs_no_posh)
{
    ts_cert *named = fx_issue(f.ca, FOO, -1, 30, 0);
    start(named);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_OK);
    cr_expect_eq(h.status, POSH_STATUS_PKIX);
    cr_expect_str_eq(h.msg, "foo.example.com: the certificate carries the name");
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0, "no POSH request when the name matches");
    SSL_CTX_free(ctx);
    ts_cert_free(named);
}

/* ---- no laundering ---- */

static void expect_not_laundered(ts_cert *cert, long want, void (*configure)(SSL_CTX *))
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(cert, 3600));
    start(cert);
    SSL_CTX *ctx = client_ctx();
    if (configure != NULL)
        configure(ctx);
    hs h = handshake(ctx);
    cr_expect(!h.connected, "the handshake must fail");
    cr_expect(hs_same_failure(h.verify_result, want), "verify result %ld (%s), want %ld", h.verify_result,
                 X509_verify_cert_error_string(h.verify_result), want);
    SSL_CTX_free(ctx);

    /* The same with an application callback that accepts everything: the handshake goes on, the result stays. */
    ctx = client_ctx();
    if (configure != NULL)
        configure(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_accept_all);
    h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect(hs_same_failure(h.verify_result, want), "accept-all callback: verify result %ld (%s), want %ld",
              h.verify_result,
                 X509_verify_cert_error_string(h.verify_result), want);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "POSH vouched for the name only: %s", h.msg);
    SSL_CTX_free(ctx);
}

Test(verify, untrusted_chain_not_laundered)
{
    ts_ca *stranger = ts_ca_new("stranger CA");
    ts_cert *c = fx_issue(stranger, "xmpp.hosting.example.net", -1, 30, 0);
    expect_not_laundered(c, X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, NULL);
    ts_cert_free(c);
    ts_ca_free(stranger);
}

Test(verify, self_signed_not_laundered_in_mode_name)
{
    ts_cert *c = fx_issue(NULL, "xmpp.hosting.example.net", -1, 30, 1);
    expect_not_laundered(c, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, NULL);
    ts_cert_free(c);
}

Test(verify, expired_leaf_not_laundered)
{
    ts_cert *c = fx_issue(f.ca, "xmpp.hosting.example.net", -30, -1, 0);
    expect_not_laundered(c, X509_V_ERR_CERT_HAS_EXPIRED, NULL);
    ts_cert_free(c);
}

Test(verify, not_yet_valid_leaf_not_laundered)
{
    ts_cert *c = fx_issue(f.ca, "xmpp.hosting.example.net", 1, 30, 0);
    expect_not_laundered(c, X509_V_ERR_CERT_NOT_YET_VALID, NULL);
    ts_cert_free(c);
}

static char crl_path[700];

static void check_crl(SSL_CTX *ctx)
{
    hs_load_crl(ctx, crl_path);
}

Test(verify, revoked_not_laundered)
{
    ts_cert *c = fx_issue(f.ca, "xmpp.hosting.example.net", -1, 30, 0);
    snprintf(crl_path, sizeof(crl_path), "%s/revoked.crl", f.dir);
    cr_assert_eq(ts_ca_write_crl(f.ca, &c, 1, crl_path), 0);
    expect_not_laundered(c, X509_V_ERR_CERT_REVOKED, check_crl);
    ts_cert_free(c);
}

Test(verify, crl_check_passes_for_unrevoked)
{
    snprintf(crl_path, sizeof(crl_path), "%s/empty.crl", f.dir);
    cr_assert_eq(ts_ca_write_crl(f.ca, NULL, 0, crl_path), 0);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    check_crl(ctx);
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_OK, "%s", X509_verify_cert_error_string(h.verify_result));
    SSL_CTX_free(ctx);
}

Test(verify, set_verify_after_the_one_line_still_no_laundering)
{
    ts_ca *stranger = ts_ca_new("stranger CA");
    ts_cert *c = fx_issue(stranger, "xmpp.hosting.example.net", -1, 30, 0);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(c, 3600));
    start(c);
    SSL_CTX *ctx = client_ctx();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, hs_accept_all); /* after the one line */
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE);
    SSL_CTX_free(ctx);
    ts_cert_free(c);
    ts_ca_free(stranger);
}

/* ---- the application's callback sees the verdict ---- */

Test(verify, app_callback_before_and_after)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);

    /* Set before the one line. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, f.ca_file, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_recording_cb);
    cr_assert_eq(SSL_CTX_set_posh_client(ctx, client), 1);
    cr_assert_eq(SSL_CTX_set_posh_verify(ctx, "xmpp-server"), 1);
    cr_expect_eq(SSL_CTX_get_verify_callback(ctx), hs_recording_cb, "the one line keeps the callback");
    hs_cb_reset();
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_gt(hs_cb.calls, 0);
    cr_expect_eq(hs_cb.depth0_ok, 1, "the callback saw acceptance at depth 0");
    SSL_CTX_free(ctx);

    /* Set after, on a connection POSH rejects: the callback sees the name mismatch. */
    ts_cert *c = f.other;
    (void)c;
    posh_client_flush(client);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    ctx = client_ctx();
    hs_expect_cb_sees_mismatch(ctx, handshake);
    SSL_CTX_free(ctx);
}

/* ---- reference identifier ---- */

static void set_reference(SSL *ssl)
{
    cr_assert_eq(SSL_set_posh_reference(ssl, FOO), 1);
}

Test(verify, reference_identifier_order)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();

    /* SNI only: SNI is the reference and the name checked. */
    hs h = handshake_with(ctx, NULL, FOO, NULL);
    cr_expect(h.connected);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);

    /* SNI of a domain without POSH and no host: still a name check, and a rejection. */
    h = handshake_with(ctx, NULL, HOSTING, NULL);
    cr_expect(!h.connected, "POSH enforces the reference identifier when the application set no host");
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);

    /* SSL_set_posh_reference overrides the host and the SNI name. */
    h = handshake_with(ctx, HOSTING, HOSTING, set_reference);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);

    /* Postfix style: ".domain" forms are not source domains; the next host is. */
    h = handshake_with(ctx, ".example.com", NULL, NULL);
    cr_expect(!h.connected);
    cr_expect_eq(h.err, POSH_ERR_NO_REFERENCE_ID, "%s", h.msg);

    /* No host and no SNI: POSH does not take part; the chain alone decides. */
    h = handshake_with(ctx, NULL, NULL, NULL);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_OK);
    cr_expect_eq(h.status, POSH_STATUS_NONE);
    SSL_CTX_free(ctx);
}

/* A full handshake of ssl on a new TCP connection; ssl keeps its settings. */
static hs reconnect(SSL *ssl)
{
    int fd = hs_tcp_connect(ts_tls_port(server));
    hs h = hs_handshake_on(ssl, fd);
    SSL_shutdown(ssl);
    close(fd);
    cr_assert_eq(SSL_clear(ssl), 1);
    cr_assert_eq(SSL_set_session(ssl, NULL), 1, "no resumption: every handshake is verified");
    ERR_clear_error();
    return h;
}

Test(verify, reference_serves_one_handshake)
{
    /* hosting.example.net publishes nothing; foo.example.com vouches for the provider's certificate. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    SSL *ssl = SSL_new(ctx);
    cr_assert_not_null(ssl);
    cr_assert_eq(SSL_set1_host(ssl, HOSTING), 1);
    cr_assert_eq(SSL_set_tlsext_host_name(ssl, HOSTING), 1);

    set_reference(ssl);
    hs h = reconnect(ssl);
    cr_expect(h.connected, "the reference applies to the handshake it was set for: %s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);

    /* Reused with SSL_clear() and no new reference: judged by its own host, not by the old source domain. */
    h = reconnect(ssl);
    cr_expect(!h.connected, "the previous handshake's reference must not carry over");
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    cr_expect(strstr(h.msg, HOSTING) != NULL, "%s", h.msg);

    /* NULL unsets a reference before it is used. */
    set_reference(ssl);
    cr_expect_eq(SSL_set_posh_reference(ssl, NULL), 1);
    h = reconnect(ssl);
    cr_expect(!h.connected);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);

    /* Set again: it applies again. */
    set_reference(ssl);
    h = reconnect(ssl);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    cr_expect_eq(SSL_set_posh_reference(ssl, "not a domain"), 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

typedef struct evil_hs {
    SSL_CTX *ctx;
    hs h;
} evil_hs;

static void evil_handshake(void *arg)
{
    evil_hs *e = arg;
    e->h = handshake(e->ctx);
}

/* A server's control bytes reach neither SSL_get_posh_message() nor the log line of the rejection. */
Test(verify, server_text_is_escaped_in_the_connection_message)
{
    ts_evil *evil = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    ts_evil_route_opts o = {.status = 302, .location = FX_EVIL_LOCATION};
    char connect_to[128];
    posh_config *cfg = posh_config_new();
    evil_hs e = {0};
    char *log;

    unsetenv("POSH_LOG"); /* the default: warnings to stderr */
    unsetenv("POSH_LOG_LEVEL");
    cr_assert_not_null(evil);
    cr_assert_eq(ts_evil_route(evil, RFC7711_PATH, &o), 0);
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d", FOO, ts_evil_port(evil));
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_not_null(client = posh_client_new(cfg));
    posh_config_free(cfg);
    cr_assert_not_null(server = ts_tls_start(ts_cert_x509(f.svc), NULL, ts_cert_key(f.svc)));
    e.ctx = client_ctx();
    log = fx_stderr_of(evil_handshake, &e);
    cr_expect(!e.h.connected);
    cr_expect_eq(e.h.err, POSH_ERR_REDIRECT_SCHEME, "%s", e.h.msg);
    fx_expect_printable("SSL_get_posh_message", e.h.msg);
    cr_expect(strstr(e.h.msg, FX_EVIL_ESCAPED) != NULL, "escaped once, as in the result: %s", e.h.msg);
    cr_expect(strstr(log, "posh: warning: rejected: ") != NULL, "the rejection is logged: %s", log);
    cr_expect(strstr(log, FX_EVIL_ESCAPED) != NULL, "the log shows the Location escaped once: %s", log);
    for (char *line = strtok(log, "\n"); line != NULL; line = strtok(NULL, "\n"))
        fx_expect_printable("log line", line);
    free(log);
    SSL_CTX_free(e.ctx);
    ts_evil_stop(evil);
}

static void postfix_style(SSL *ssl)
{
    SSL_set_verify(ssl, SSL_VERIFY_NONE, hs_accept_all);
    SSL_set1_host(ssl, ".example.com");
    SSL_add1_host(ssl, FOO);
}

Test(verify, postfix_style_reads_verify_result)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    hs h = handshake_with(ctx, NULL, NULL, postfix_style);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_OK, "%s", X509_verify_cert_error_string(h.verify_result));
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    SSL_CTX_free(ctx);

    posh_client_flush(client);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    ctx = client_ctx();
    h = handshake_with(ctx, NULL, NULL, postfix_style);
    cr_expect(h.connected, "verification off: the handshake goes on");
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH, "but the result says no");
    SSL_CTX_free(ctx);
}

/* ---- per-connection enabling ---- */

/*
 * SSL_dup() (of an SSL before its handshake: OpenSSL copies only those) gives the copy a state of its own, its
 * formatted message included: each SSL frees its own (a shared one is a double free under ASan).
 */
Test(verify, dup_copies_the_connection_state)
{
    const char *want = "foo.example.com: the handshake has not finished";
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    SSL *ssl = SSL_new(ctx), *copy;
    cr_assert_not_null(ssl);
    cr_assert_eq(SSL_check_posh_peer(ssl, FOO, "xmpp-server", 0), POSH_STATUS_REJECTED);
    cr_assert_str_eq(SSL_get_posh_message(ssl), want);
    cr_assert_not_null(copy = SSL_dup(ssl));
    cr_assert_neq(copy, ssl, "a copy, not the same SSL");
    SSL_free(ssl);
    cr_expect_eq(SSL_get_posh_status(copy), POSH_STATUS_REJECTED);
    cr_expect_str_eq(SSL_get_posh_message(copy), want);
    SSL_free(copy);
    SSL_CTX_free(ctx);
}

Test(verify, ssl_set_posh_verify)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, client, NULL);

    hs h = handshake(ctx);
    cr_expect(!h.connected, "without POSH the name check fails");
    cr_expect_eq(h.status, POSH_STATUS_NONE);

    SSL *ssl = SSL_new(ctx);
    cr_expect_eq(SSL_set_posh_verify(ssl, "bad service!"), 0);
    cr_expect_eq(SSL_set_posh_verify(ssl, "xmpp-server"), 1);
    SSL_free(ssl);
    h = handshake_with(ctx, FOO, FOO, NULL);
    cr_expect(!h.connected, "a connection without POSH is unaffected by another's");
    SSL_CTX_free(ctx);
}

static void enable_posh(SSL *ssl)
{
    cr_assert_eq(SSL_set_posh_verify(ssl, "xmpp-server"), 1);
}

Test(verify, ssl_set_posh_verify_accepts)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, f.ca_file, NULL), 1);
    cr_assert_eq(SSL_CTX_set_posh_client(ctx, client), 1);
    hs h = handshake_with(ctx, FOO, FOO, enable_posh);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.verify_result, X509_V_OK);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED);
    SSL_CTX_free(ctx);
}

/* ---- mode pin ---- */

static SSL_CTX *pin_ctx(void)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_mode(cfg, POSH_MODE_PIN), POSH_OK);
    posh_client_free(client);
    client = posh_client_new(cfg);
    posh_config_free(cfg);
    return client_ctx();
}

Test(verify, pin_mode_self_signed)
{
    ts_cert *c = fx_issue(NULL, "xmpp.hosting.example.net", -1, 30, 1);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(c, 3600));
    start(c);
    SSL_CTX *ctx = pin_ctx();
    hs h = handshake(ctx);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.verify_result, X509_V_OK, "%s", X509_verify_cert_error_string(h.verify_result));
    SSL_CTX_free(ctx);

    posh_client_flush(client);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    ctx = client_ctx();
    h = handshake(ctx);
    cr_expect(!h.connected, "not vouched: rejected in mode pin too");
    SSL_CTX_free(ctx);
    ts_cert_free(c);
}

Test(verify, pin_mode_never_overrides_expiry)
{
    ts_cert *c = fx_issue(NULL, "xmpp.hosting.example.net", -30, -1, 1);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(c, 3600));
    start(c);
    SSL_CTX *ctx = pin_ctx();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_accept_all);
    hs h = handshake(ctx);
    cr_expect_eq(h.verify_result, X509_V_ERR_CERT_HAS_EXPIRED, "%s", X509_verify_cert_error_string(h.verify_result));
    SSL_CTX_free(ctx);
    ts_cert_free(c);
}

/*
 * An ECDSA signature (r, s) is as valid as (r, n - s): the twin has the same to-be-signed bytes, the same key, a
 * signature the CA's key verifies, and another DER, so another fingerprint. POSH vouches for the bytes it
 * publishes: a warm answer that remembers the certificate (issue 20: compared without encoding the leaf) must
 * tell the twin from it, in mode name (the twin passes PKIX) and in mode pin, while the certificate itself stays
 * accepted.
 */
static void expect_twin_rejected(SSL_CTX *ctx, ts_tls *twin_server, const char *mode)
{
    hs h;
    for (int i = 0; i < 3; i++) {
        h = handshake(ctx);
        cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s, %d: %s", mode, i, h.msg);
    }
    h = hs_handshake(ctx, ts_tls_port(twin_server), FOO, FOO, NULL);
    cr_expect(!h.connected, "%s: the twin is not the published certificate", mode);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s: %s", mode, h.msg);
    h = handshake(ctx);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s, after the twin: %s", mode, h.msg);
}

Test(verify, malleated_signature_is_another_certificate)
{
    X509 *twin = ts_x509_malleate(ts_cert_x509(f.svc));
    unsigned char *twin_der = NULL;
    size_t der_len;
    const unsigned char *der = ts_cert_der(f.svc, &der_len);
    ts_tls *twin_server;
    int n;

    cr_assert_not_null(twin, "%s", ts_error());
    cr_assert_eq(X509_verify(twin, ts_ca_key(f.ca)), 1, "the twin is signed by the CA as well");
    n = i2d_X509(twin, &twin_der);
    cr_assert(n > 0 && ((size_t)n != der_len || memcmp(twin_der, der, der_len) != 0), "another DER");
    OPENSSL_free(twin_der);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    twin_server = ts_tls_start(twin, NULL, ts_cert_key(f.svc));
    cr_assert_not_null(twin_server);
    SSL_CTX *ctx = client_ctx();
    hs h = hs_handshake(ctx, ts_tls_port(twin_server), FOO, FOO, NULL);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "cold: %s", h.msg);
    expect_twin_rejected(ctx, twin_server, "mode name");
    SSL_CTX_free(ctx);
    ctx = pin_ctx();
    expect_twin_rejected(ctx, twin_server, "mode pin");
    SSL_CTX_free(ctx);
    ts_tls_stop(twin_server);
    X509_free(twin);
}

/* ---- threads ---- */

#define THREADS 8
#define PER_THREAD 4

Test(verify, threads_share_ctx_and_one_lookup)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    cr_expect_eq(hs_parallel(ctx, handshake, POSH_STATUS_ACCEPTED, THREADS, PER_THREAD), THREADS * PER_THREAD);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "one lookup for every handshake");
    SSL_CTX_free(ctx);
}

/* ---- the default client, configured from the environment ---- */

Test(verify, default_client_from_environment)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    fx_export_env(&f);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, NULL, "xmpp-server");
    hs h = handshake(ctx);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED);
    SSL_CTX_free(ctx);
}

/* ---- examples/client.c, the one-line program, run as a real process ---- */

#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static int run_example(const char *domain, const char *threads)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", ts_tls_port(server));
    char *argv[] = {(char *)POSH_EXAMPLE_PATH, f.ca_file, (char *)"127.0.0.1", port, (char *)domain,
                    (char *)"xmpp-server", (char *)threads, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status = 0;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    cr_assert_eq(posix_spawn(&pid, POSH_EXAMPLE_PATH, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

Test(verify, example_program)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    start(f.svc);
    fx_export_env(&f);
    setenv("POSH_LOG", "off", 1);
    cr_expect_eq(run_example(FOO, "8"), 0, "8 threads, one SSL_CTX: all accepted by POSH");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "single flight across the threads");
    cr_expect_eq(run_example(HOSTING, "1"), 1, "a domain that does not vouch: rejected");
}

/* ---- fork() while another thread sets POSH up ---- */

static atomic_int setup_stop;

static void *setup_hammer(void *arg)
{
    SSL_CTX *ctx = arg;
    while (!atomic_load(&setup_stop))
        SSL_CTX_set_posh_client(ctx, client);
    return NULL;
}

Test(verify, fork_while_another_thread_sets_up)
{
    /*
     * A thread keeps taking the per-context setup lock; the main thread forks, and each child sets POSH up on
     * a context. Without a fork handler the child sometimes inherits the lock held by a thread it does not
     * have, and waits forever.
     */
    enum { FORKS = 200 };
    start(f.svc);
    SSL_CTX *ctx = client_ctx();
    pthread_t t;
    int hung = 0;

    atomic_store(&setup_stop, 0);
    cr_assert_eq(pthread_create(&t, NULL, setup_hammer, ctx), 0);
    for (int i = 0; i < FORKS && !hung; i++) {
        int status = 0;
        pid_t got, pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
            _exit(SSL_CTX_set_posh_client(ctx, client) == 1 ? 0 : 1);
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((got = waitpid(pid, &status, WNOHANG)) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 5) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                hung = i + 1;
                break;
            }
            sched_yield();
        }
        if (!hung)
            cr_expect(got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d", i);
    }
    atomic_store(&setup_stop, 1);
    pthread_join(t, NULL);
    cr_expect_eq(hung, 0, "child %d never finished: the setup lock was inherited held", hung);
    SSL_CTX_free(ctx);
}
