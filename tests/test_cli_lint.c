/*
 * test_cli_lint.c - `posh lint` as a real process (POSH_CLI_PATH) against the fixture's nginx (and the
 * fault-injecting HTTPS server where a header must be wrong): each finding's exact line and the exit status, a
 * clean document, --file, fetch failures, usage. Errors are compared with what the library's own lookup says.
 */
#include "cli_run.h"
#include "fixture.h"

#include "posh_internal.h"

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RFC_URL "https://" FOO RFC7711_PATH
#define DRAFT_URL "https://" FOO DRAFT02_PATH
#define TARGET_URL "https://" HOSTING RFC7711_PATH
#define CLEAN "0 errors, 0 warnings (clean)\n"
#define WARNED(n) "0 errors, " n " (posh accepts it; other clients may not)\n"
#define FAILED(n) n ", 0 warnings (posh rejects it)\n"
#define SUMMARY "summary: " FOO " xmpp-server: "

/* ---- running the command ---- */

#define LINT(...) cli_run_posh(NULL, (const char *const[]){"lint", __VA_ARGS__, NULL})

/* The exit status, and stdout exactly: the finding lines, then the summary. */
static void expect_lint(cli_run r, int code, const char *out)
{
    cr_expect_eq(r.code, code, "exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.out, r.err);
    cr_expect_str_eq(r.out, out, "stdout:\n%s\nwant:\n%s\nstderr: %s", r.out, out, r.err);
    cli_run_free(&r);
}

/* A usage-like failure: exit 2, nothing on stdout, the reason on stderr. */
static void expect_refused(cli_run r, const char *why)
{
    cr_expect_eq(r.code, 2, "exit %d; stderr %s", r.code, r.err);
    cr_expect_str_empty(r.out, "nothing on stdout: %s", r.out);
    cr_expect(strstr(r.err, why) != NULL, "stderr should say '%s': %s", why, r.err);
    cli_run_free(&r);
}

/* ---- documents ---- */

static fx f;

static void init(void)
{
    fx_init(&f);
    unsetenv("POSH_LOG");
}

static void fini(void)
{
    fx_fini(&f);
}

/* After the test added its redirects and statuses: nginx up, the environment pointing at it. */
static void start(void)
{
    fx_start(&f);
    fx_export_env(&f);
}

/* Unpadded base64url of the hash ("SHA256", "SHA1") of c's DER: a JWK thumbprint. Static buffer per slot. */
static const char *thumbprint(ts_cert *c, const char *md)
{
    static char out[2][128];
    static int slot;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    size_t der_len;
    const unsigned char *der = ts_cert_der(c, &der_len);
    char *o = out[slot++ % 2];

    cr_assert(EVP_Digest(der, der_len, dig, &len, EVP_get_digestbyname(md), NULL));
    posh_b64url_encode(dig, len, o, sizeof(out[0]));
    return o;
}

static char *doc_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *doc_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    cr_assert_geq(vasprintf(&s, fmt, ap), 0);
    va_end(ap);
    return s;
}

/* A file under the fixture's directory holding body; returns its path (static buffer). */
static const char *write_doc(const char *name, const char *body)
{
    static char path[600];
    snprintf(path, sizeof(path), "%s/%s", f.dir, name);
    cr_assert_eq(ts_write_file(path, body, strlen(body)), 0);
    return path;
}

/* ======================================================================================================== */
/* fetched: a clean document and each finding                                                                */

TestSuite(cli_lint, .init = init, .fini = fini, .timeout = 120);

Test(cli_lint, clean_document_has_no_finding)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 86400));
    expect_lint(LINT(FOO), 0, SUMMARY CLEAN);
    /* As a lookup: the RFC 7711 URL answered, so the draft-02 URL was never asked. */
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0);
}

Test(cli_lint, expires_at_the_limits_is_clean)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 30L * 86400));
    expect_lint(LINT(FOO), 0, SUMMARY CLEAN);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    expect_lint(LINT(FOO), 0, SUMMARY CLEAN);
}

Test(cli_lint, unpadded_base64)
{
    char *b64 = cli_fingerprint(f.svc, "sha-256");
    start();
    cr_assert_eq(b64[43], '=');
    b64[43] = '\0';
    fx_put_free(&f, FOO, RFC7711_PATH, doc_printf("{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":86400}", b64));
    {
        char *want = doc_printf("warning: " RFC_URL ": fingerprints[0].sha-256: base64 without its padding: posh "
                                "accepts it, but mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim match "
                                "nothing; write \"%s=\"\n" SUMMARY WARNED("1 warning"),
                                b64);
        expect_lint(LINT(FOO), 1, want);
        free(want);
    }
    free(b64);
}

Test(cli_lint, descriptor_without_sha256)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(&f.svc, 1, "sha-512", 86400));
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": fingerprints[0]: no sha-256 (it has sha-512): Conversations reads only "
                "sha-256 and matches nothing\n" SUMMARY WARNED("1 warning"));
}

Test(cli_lint, only_sha1)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(&f.svc, 1, "sha-1", 86400));
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": fingerprints[0]: no sha-256 (it has sha-1): Conversations reads only sha-256 "
                "and matches nothing\n"
                "warning: " RFC_URL ": only SHA-1 fingerprints: clients that refuse SHA-1 (posh with POSH_NO_SHA1=1) "
                "match nothing, and SHA-1 no longer resists collisions; add sha-256\n" SUMMARY WARNED("2 warnings"));
}

Test(cli_lint, expires_over_30_days)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 30L * 86400 + 1));
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": expires: 2592001 s (30 days) is over 30 days: peers may go on trusting a "
                "replaced or compromised certificate that long\n" SUMMARY WARNED("1 warning"));
}

Test(cli_lint, expires_under_5_minutes)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 299));
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": expires: 299 s is under 5 minutes: peers fetch the document again for nearly "
                "every connection, and a short outage of the web server fails them\n" SUMMARY WARNED("1 warning"));
}

Test(cli_lint, reference_document_and_its_target)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref(TARGET_URL, 86400));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_doc1(f.svc, 60));
    /* The reference is a warning; its target is fetched and judged like any document. */
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": a reference document (url " TARGET_URL "): the community Prosody module "
                "mod_s2s_auth_posh never follows references, so its servers find no fingerprints here\n"
                "warning: " TARGET_URL ": expires: 60 s is under 5 minutes: peers fetch the document again for "
                "nearly every connection, and a short outage of the web server fails them\n" SUMMARY
                    WARNED("2 warnings"));
    cr_expect_eq(fx_requests(&f, HOSTING, RFC7711_PATH), 1);
}

Test(cli_lint, only_the_draft02_url_answers)
{
    start();
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_doc1(f.svc, 86400));
    expect_lint(LINT(FOO), 1,
                "warning: " DRAFT_URL ": only the draft-02 URL answers (" RFC_URL ": HTTP status 404): RFC 7711 "
                "clients ask only at " RFC_URL " and find nothing\n" SUMMARY WARNED("1 warning"));
}

Test(cli_lint, jwk_set)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH,
                doc_printf("{\"keys\":[{\"kty\":\"EC\",\"x5t#S256\":\"%s\"}],\"expires\":86400}",
                           thumbprint(f.svc, "SHA256")));
    expect_lint(LINT(FOO), 1,
                "warning: " RFC_URL ": a JWK Set (keys), the form of the drafts before June 2014: RFC 7711 clients "
                "(mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim) read only a fingerprints document and "
                "find nothing\n" SUMMARY WARNED("1 warning"));
}

Test(cli_lint, jwk_keys_with_only_x5t)
{
    static const char jwk_warning[] =
        "warning: " RFC_URL ": a JWK Set (keys), the form of the drafts before June 2014: RFC 7711 clients "
        "(mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim) read only a fingerprints document and find "
        "nothing\n";
    char *want;
    start();
    /* One key of two names its certificate by SHA-1 only: that key is named. */
    fx_put_free(&f, FOO, RFC7711_PATH,
                doc_printf("{\"keys\":[{\"kty\":\"EC\",\"x5t#S256\":\"%s\"},{\"kty\":\"EC\",\"x5t\":\"%s\"}],"
                           "\"expires\":86400}",
                           thumbprint(f.svc, "SHA256"), thumbprint(f.other, "SHA1")));
    want = doc_printf("%swarning: " RFC_URL ": keys[1]: only x5t, a SHA-1 thumbprint: clients that refuse SHA-1 "
                      "(posh with POSH_NO_SHA1=1) match nothing; add x5t#S256\n" SUMMARY WARNED("2 warnings"),
                      jwk_warning);
    expect_lint(LINT(FOO), 1, want);
    free(want);
    /* Every key: the document is SHA-1 only. */
    fx_put_free(&f, FOO, RFC7711_PATH,
                doc_printf("{\"keys\":[{\"kty\":\"EC\",\"x5t\":\"%s\"}],\"expires\":86400}", thumbprint(f.svc, "SHA1")));
    want = doc_printf("%swarning: " RFC_URL ": only SHA-1 thumbprints (x5t): clients that refuse SHA-1 (posh with "
                      "POSH_NO_SHA1=1) match nothing, and SHA-1 no longer resists collisions; add x5t#S256\n" SUMMARY
                          WARNED("2 warnings"),
                      jwk_warning);
    expect_lint(LINT(FOO), 1, want);
    free(want);
}

/* One nginx, one service per redirect status: /.well-known/posh/rNNN.json redirects to a clean document. */
Test(cli_lint, permanent_redirects_warn_temporary_ones_do_not)
{
    static const int codes[] = {301, 302, 303, 307, 308};
    char path[64];
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/r%d.json", codes[i]);
        cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, path, codes[i], TARGET_URL), 0);
    }
    start();
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_doc1(f.svc, 86400));
    for (size_t i = 0; i < 5; i++) {
        char svc[16], *want;
        snprintf(svc, sizeof(svc), "r%d", codes[i]);
        if (codes[i] == 301 || codes[i] == 308)
            want = doc_printf("warning: https://" FOO "/.well-known/posh/%s.json: HTTP %d, a permanent redirect (to "
                              TARGET_URL "): clients and HTTP caches may keep it for good; RFC 7711 asks for a "
                              "temporary one (302 or 307)\nsummary: " FOO " %s: " WARNED("1 warning"),
                              svc, codes[i], svc);
        else
            want = doc_printf("summary: " FOO " %s: " CLEAN, svc);
        expect_lint(LINT("-s", svc, FOO), codes[i] == 301 || codes[i] == 308 ? 1 : 0, want);
        free(want);
    }
}

/* The fault-injecting server, as foo.example.com, one route per service. */
static ts_evil *evil_foo(void)
{
    ts_evil *e = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    char route[128];
    cr_assert_not_null(e);
    cr_assert_eq(ts_evil_start(e), 0);
    snprintf(route, sizeof(route), FOO ":443:127.0.0.1:%d", ts_evil_port(e));
    setenv("POSH_CONNECT_TO", route, 1);
    setenv("POSH_CA_FILE", f.ca_file, 1);
    return e;
}

Test(cli_lint, content_type_not_json)
{
    static const struct {
        const char *type;
        int warns;
    } cases[] = {
        {"text/plain", 1},
        {"application/octet-stream", 1},
        {"text/json", 1},
        {"application/json", 0},
        {"application/json; charset=utf-8", 0},
        {"Application/JSON", 0},
        {"application/jwk-set+json", 0},
    };
    char *doc = fx_doc1(f.svc, 86400);
    ts_evil *e = evil_foo();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[64], svc[16], *want;
        snprintf(svc, sizeof(svc), "ct%zu", i);
        snprintf(path, sizeof(path), "/.well-known/posh/%s.json", svc);
        cr_assert_eq(ts_evil_route(e, path, &(ts_evil_route_opts){.content_type = cases[i].type, .body = doc}), 0);
        if (cases[i].warns)
            want = doc_printf("warning: https://" FOO "%s: Content-Type \"%s\" is not JSON (application/json or a "
                              "+json type): clients that check it may refuse the document\nsummary: " FOO
                              " %s: " WARNED("1 warning"),
                              path, cases[i].type, svc);
        else
            want = doc_printf("summary: " FOO " %s: " CLEAN, svc);
        expect_lint(LINT("-s", svc, FOO), cases[i].warns, want);
        free(want);
    }
    /* No Content-Type at all. */
    cr_assert_eq(ts_evil_route(e, "/.well-known/posh/none.json",
                               &(ts_evil_route_opts){.no_content_type = 1, .body = doc}), 0);
    expect_lint(LINT("-s", "none", FOO), 1,
                "warning: https://" FOO "/.well-known/posh/none.json: no Content-Type: clients that check it expect "
                "JSON (application/json) and may refuse the document\nsummary: " FOO " none: " WARNED("1 warning"));
    ts_evil_stop(e);
    free(doc);
}

Test(cli_lint, findings_add_up)
{
    char *b64 = cli_fingerprint(f.svc, "sha-1");
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DRAFT02_PATH, 308, TARGET_URL), 0);
    start();
    b64[27] = '\0';
    fx_put_free(&f, HOSTING, RFC7711_PATH,
                doc_printf("{\"fingerprints\":[{\"sha-1\":\"%s\"}],\"expires\":99999999}", b64));
    {
        char *want = doc_printf(
            "warning: " DRAFT_URL ": HTTP 308, a permanent redirect (to " TARGET_URL "): clients and HTTP caches may "
            "keep it for good; RFC 7711 asks for a temporary one (302 or 307)\n"
            "warning: " DRAFT_URL ": only the draft-02 URL answers (" RFC_URL ": HTTP status 404): RFC 7711 clients "
            "ask only at " RFC_URL " and find nothing\n"
            "warning: " TARGET_URL ": fingerprints[0].sha-1: base64 without its padding: posh accepts it, but "
            "mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim match nothing; write \"%s=\"\n"
            "warning: " TARGET_URL ": fingerprints[0]: no sha-256 (it has sha-1): Conversations reads only sha-256 "
            "and matches nothing\n"
            "warning: " TARGET_URL ": only SHA-1 fingerprints: clients that refuse SHA-1 (posh with POSH_NO_SHA1=1) "
            "match nothing, and SHA-1 no longer resists collisions; add sha-256\n"
            "warning: " TARGET_URL ": expires: 99999999 s (1157 days) is over 30 days: peers may go on trusting a "
            "replaced or compromised certificate that long\n" SUMMARY WARNED("6 warnings"),
            b64);
        expect_lint(LINT(FOO), 1, want);
        free(want);
    }
    free(b64);
}

/* ======================================================================================================== */
/* errors: what posh rejects, in the library's words                                                         */

/* The names `posh` prints (tools/cli.c cli_err_name), by code. */
static const char *err_name(posh_err err)
{
    static const char *const names[] = {
        "POSH_OK", "POSH_ERR_NOMEM", "POSH_ERR_INVALID_ARGUMENT", "POSH_ERR_CONFIG", "POSH_ERR_BAD_DOMAIN",
        "POSH_ERR_BAD_SERVICE", "POSH_ERR_NO_POSH", "POSH_ERR_HTTP_STATUS", "POSH_ERR_CONNECT", "POSH_ERR_TLS",
        "POSH_ERR_TIMEOUT", "POSH_ERR_TOO_LARGE", "POSH_ERR_REDIRECT_SCHEME", "POSH_ERR_TOO_MANY_REDIRECTS",
        "POSH_ERR_FETCH", "POSH_ERR_JSON", "POSH_ERR_DOCUMENT", "POSH_ERR_FINGERPRINT", "POSH_ERR_EXPIRES",
        "POSH_ERR_REFERENCE_URL", "POSH_ERR_REFERENCE_CHAIN", "POSH_ERR_REFERENCE_TARGET",
    };
    cr_assert_lt((size_t)err, sizeof(names) / sizeof(names[0]));
    return names[err];
}

/* lint's error line for what a lookup by the library says of FOO now (a new client: nothing cached). */
static char *library_says(void)
{
    posh_client *c = fx_client(&f);
    posh_result *r = NULL;
    posh_err err = posh_lookup(c, FOO, "xmpp-server", &r);
    char *line;
    cr_assert_neq(err, POSH_OK, "the library accepts it");
    cr_assert_not_null(r);
    line = doc_printf("error: %s (%s)\n", posh_result_message(r), err_name(err));
    posh_result_free(r);
    posh_client_free(c);
    return line;
}

/* Each document error: lint's line is the library's message and error, and the exit status 2. */
Test(cli_lint, document_errors_are_the_librarys)
{
    static const char *const docs[] = {
        "{\"fingerprints\":[{\"sha-256\":\"AAAA\"}],\"expires\":86400}",  /* not a 32-byte digest */
        "{\"fingerprints\":[],\"expires\":86400}",                          /* no descriptor */
        "{\"fingerprints\":[{\"sha-256\":\"x\"}]}",                           /* expires missing (checked first) */
        "{\"fingerprints\":[{\"sha-256\":\"x\"}],\"expires\":0}",            /* expires 0 */
        "{\"fingerprints\":[{\"sha-256\":\"x\"}],\"expires\":86400",        /* not JSON */
        "{\"url\":\"http://hosting.example.net/x.json\",\"expires\":86400}", /* not https */
        "{\"url\":\"" TARGET_URL "\",\"fingerprints\":[],\"expires\":1}",  /* both */
        "{\"keys\":[{\"kty\":\"EC\",\"d\":\"secret\",\"x5t\":\"x\"}],\"expires\":1}", /* a private key */
        "",                                                                  /* empty */
    };
    start();
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char *lib, *want;
        fx_put(&f, FOO, RFC7711_PATH, docs[i]);
        lib = library_says();
        want = doc_printf("%s" SUMMARY FAILED("1 error"), lib);
        expect_lint(LINT(FOO), 2, want);
        free(want);
        free(lib);
    }
}

Test(cli_lint, missing_expires_exact_line)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, doc_printf("{\"fingerprints\":[{\"sha-256\":\"%s\"}]}", "x"));
    expect_lint(LINT(FOO), 2, "error: " RFC_URL ": expires: missing (POSH_ERR_EXPIRES)\n" SUMMARY FAILED("1 error"));
}

Test(cli_lint, no_document_at_either_url)
{
    char *lib;
    start();
    lib = library_says();
    expect_lint(LINT(FOO), 2,
                "error: no POSH document for " FOO " (" RFC_URL ": HTTP status 404; " DRAFT_URL
                ": HTTP status 404) (POSH_ERR_NO_POSH)\n" SUMMARY FAILED("1 error"));
    cr_expect_str_eq(lib, "error: no POSH document for " FOO " (" RFC_URL ": HTTP status 404; " DRAFT_URL
                          ": HTTP status 404) (POSH_ERR_NO_POSH)\n");
    free(lib);
}

Test(cli_lint, server_error)
{
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, RFC7711_PATH, 500), 0);
    start();
    expect_lint(LINT(FOO), 2, "error: " RFC_URL ": HTTP status 500 (POSH_ERR_HTTP_STATUS)\n" SUMMARY FAILED("1 error"));
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0, "like the library: a 5xx ends the lookup");
}

Test(cli_lint, reference_target_missing)
{
    char *lib, *want;
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref(TARGET_URL, 86400));
    lib = library_says();
    want = doc_printf("warning: " RFC_URL ": a reference document (url " TARGET_URL "): the community Prosody "
                      "module mod_s2s_auth_posh never follows references, so its servers find no fingerprints "
                      "here\n%s" SUMMARY "1 error, 1 warning (posh rejects it)\n",
                      lib);
    expect_lint(LINT(FOO), 2, want);
    cr_expect_str_eq(lib, "error: reference from " FOO " to " TARGET_URL ": document not found (" TARGET_URL
                          ": HTTP status 404) (POSH_ERR_REFERENCE_TARGET)\n");
    free(want);
    free(lib);
}

Test(cli_lint, reference_to_a_reference)
{
    char *lib, *want;
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref(TARGET_URL, 86400));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_ref("https://elsewhere.example/x.json", 86400));
    lib = library_says();
    want = doc_printf("warning: " RFC_URL ": a reference document (url " TARGET_URL "): the community Prosody "
                      "module mod_s2s_auth_posh never follows references, so its servers find no fingerprints "
                      "here\n%s" SUMMARY "1 error, 1 warning (posh rejects it)\n",
                      lib);
    expect_lint(LINT(FOO), 2, want);
    cr_expect_str_eq(lib, "error: " TARGET_URL ": a reference may not point to another reference "
                          "(https://elsewhere.example/x.json) (POSH_ERR_REFERENCE_CHAIN)\n");
    free(want);
    free(lib);
}

Test(cli_lint, redirect_to_http)
{
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, RFC7711_PATH, 302, "http://" HOSTING RFC7711_PATH), 0);
    start();
    expect_lint(LINT(FOO), 2,
                "error: " RFC_URL ": redirect to \"http://" HOSTING RFC7711_PATH "\", which is not an https URL "
                "(POSH_ERR_REDIRECT_SCHEME)\n" SUMMARY FAILED("1 error"));
}

Test(cli_lint, max_redirects_is_honoured)
{
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, RFC7711_PATH, 302, "/hop1.json"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, "/hop1.json", 307, "/hop2.json"), 0);
    start();
    fx_put_free(&f, FOO, "/hop2.json", fx_doc1(f.svc, 86400));
    expect_lint(LINT(FOO), 0, SUMMARY CLEAN);
    setenv("POSH_MAX_REDIRECTS", "1", 1);
    expect_lint(LINT(FOO), 2,
                "error: " RFC_URL ": redirect to https://" FOO "/hop2.json would exceed 1 redirects "
                "(POSH_ERR_TOO_MANY_REDIRECTS)\n" SUMMARY FAILED("1 error"));
}

Test(cli_lint, max_bytes_is_honoured)
{
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 86400));
    setenv("POSH_MAX_BYTES", "64", 1);
    expect_lint(LINT(FOO), 2,
                "error: " RFC_URL ": body larger than 64 bytes (POSH_ERR_TOO_LARGE)\n" SUMMARY FAILED("1 error"));
}

/*
 * A lint of FOO that failed on its fetch with code: exit 2, one error line about the RFC 7711 URL (its text is
 * the library's, e.g. libcurl's, not ours to fix here) ending in (code), and the summary. Frees r.
 */
static void expect_fetch_error(cli_run *r, const char *code)
{
    char *tail = doc_printf(" (%s)\n" SUMMARY FAILED("1 error"), code);
    const char *nl = strchr(r->out, '\n');
    cr_expect_eq(r->code, 2, "exit %d; stderr %s", r->code, r->err);
    cr_expect(strncmp(r->out, "error: " RFC_URL ": ", strlen("error: " RFC_URL ": ")) == 0, "%s", r->out);
    cr_expect(strstr(r->out, tail) != NULL, "%s", r->out);
    cr_expect(nl != NULL && (size_t)(nl - r->out) + 1 + strlen(SUMMARY FAILED("1 error")) == strlen(r->out),
              "one finding and the summary: %s", r->out);
    free(tail);
    cli_run_free(r);
}

/* A fetch failure: nothing listens where POSH_CONNECT_TO sends the request. */
Test(cli_lint, fetch_failure)
{
    char route[128];
    cli_run r;
    start();
    snprintf(route, sizeof(route), FOO ":443:127.0.0.1:%d", ts_free_port());
    setenv("POSH_CONNECT_TO", route, 1);
    r = LINT(FOO);
    expect_fetch_error(&r, "POSH_ERR_CONNECT");
}

/* Certificates are verified: with another CA as the only trust anchor, the web server is refused. */
Test(cli_lint, web_server_certificate_is_verified)
{
    ts_ca *other = ts_ca_new("another CA");
    char path[600];
    cli_run r;
    start();
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 86400));
    snprintf(path, sizeof(path), "%s/other-ca.pem", f.dir);
    cr_assert_eq(ts_ca_write(other, path), 0);
    setenv("POSH_CA_FILE", path, 1);
    r = LINT(FOO);
    expect_fetch_error(&r, "POSH_ERR_TLS");
    ts_ca_free(other);
}

Test(cli_lint, timeout_is_honoured)
{
    ts_evil *e = evil_foo();
    long t0;
    cli_run r;
    cr_assert_eq(ts_evil_route(e, RFC7711_PATH, &(ts_evil_route_opts){.hang = 1}), 0);
    setenv("POSH_TIMEOUT_MS", "300", 1);
    t0 = cli_now_ms();
    r = LINT(FOO);
    cr_expect_lt(cli_now_ms() - t0, 10000);
    expect_fetch_error(&r, "POSH_ERR_TIMEOUT");
    ts_evil_stop(e);
}

/* A server's bytes never reach the terminal as they are: escaped as the library escapes its messages. */
Test(cli_lint, server_bytes_are_escaped)
{
    ts_evil *e = evil_foo();
    cli_run r;
    cr_assert_eq(ts_evil_route(e, RFC7711_PATH, &(ts_evil_route_opts){.status = 302, .location = FX_EVIL_LOCATION}),
                 0);
    r = LINT(FOO);
    cr_expect_eq(r.code, 2);
    for (char *nl = r.out; (nl = strchr(nl, '\n')) != NULL;)
        *nl = ' '; /* the lines' own ends: every other byte must be printable */
    fx_expect_printable("stdout", r.out);
    cr_expect(strstr(r.out, FX_EVIL_ESCAPED) != NULL, "the Location, escaped: %s", r.out);
    cr_expect(strstr(r.out, "(POSH_ERR_REDIRECT_SCHEME)") != NULL, "%s", r.out);
    cli_run_free(&r);
    ts_evil_stop(e);
}

/* ======================================================================================================== */
/* --file                                                                                                    */

Test(cli_lint, file_clean)
{
    char *doc = fx_doc1(f.svc, 86400), *want;
    const char *path = write_doc("clean.json", doc);
    want = doc_printf("summary: %s: " CLEAN, path);
    expect_lint(LINT("--file", path), 0, want);
    free(want);
    /* "-": standard input. */
    expect_lint(cli_run_posh(&(cli_run_opts){.stdin_path = path}, (const char *const[]){"lint", "-f", "-", NULL}), 0,
                "summary: -: " CLEAN);
    free(doc);
}

Test(cli_lint, file_findings)
{
    char *b64 = cli_fingerprint(f.svc, "sha-256"), *doc, *want;
    const char *path;
    b64[43] = '\0';
    doc = doc_printf("{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":60}", b64);
    path = write_doc("unpadded.json", doc);
    want = doc_printf("warning: %s: fingerprints[0].sha-256: base64 without its padding: posh accepts it, but "
                      "mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim match nothing; write \"%s=\"\n"
                      "warning: %s: expires: 60 s is under 5 minutes: peers fetch the document again for nearly "
                      "every connection, and a short outage of the web server fails them\n"
                      "summary: %s: " WARNED("2 warnings"),
                      path, b64, path, path);
    expect_lint(LINT("--file", path), 1, want);
    free(want);
    free(doc);
    /* A reference: the warning, and no fetch of its target. */
    path = write_doc("ref.json", "{\"url\":\"" TARGET_URL "\",\"expires\":86400}");
    want = doc_printf("warning: %s: a reference document (url " TARGET_URL "): the community Prosody module "
                      "mod_s2s_auth_posh never follows references, so its servers find no fingerprints here\n"
                      "summary: %s: " WARNED("1 warning"),
                      path, path);
    expect_lint(LINT("--file", path), 1, want);
    free(want);
    free(b64);
}

Test(cli_lint, file_errors)
{
    char *want, big[200];
    const char *path = write_doc("bad.json", "{\"fingerprints\":[{\"sha-256\":true}],\"expires\":86400}");
    want = doc_printf("error: %s: fingerprints[0].sha-256: expected a string, got boolean (POSH_ERR_FINGERPRINT)\n"
                      "summary: %s: " FAILED("1 error"),
                      path, path);
    expect_lint(LINT("--file", path), 2, want);
    free(want);
    /* POSH_MAX_BYTES holds for a file too. */
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "{\"expires\":1}", 13);
    path = write_doc("big.json", big);
    setenv("POSH_MAX_BYTES", "64", 1);
    want = doc_printf("error: %s: body larger than 64 bytes (POSH_ERR_TOO_LARGE)\nsummary: %s: " FAILED("1 error"),
                      path, path);
    expect_lint(LINT("--file", path), 2, want);
    free(want);
}

Test(cli_lint, file_unreadable)
{
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/missing.json", f.dir);
    expect_refused(LINT("--file", missing), "missing.json: cannot open: No such file or directory");
    expect_refused(LINT("--file", f.dir), "not a regular file");
}

/* ======================================================================================================== */
/* usage                                                                                                     */

Test(cli_lint, usage_errors)
{
    static const cli_usage_case cases[] = {
        {{"lint"}, "DOMAIN (or --file) is required"},
        {{"lint", "a.example", "b.example"}, "too many arguments"},
        {{"lint", "--file", "x.json", "a.example"}, "give DOMAIN or --file, not both"},
        {{"lint", "-s", "xmpp-client", "--file", "x.json"}, "not with --file"},
        {{"lint", "--nope", "a.example"}, "unknown option '--nope'"},
        {{"lint", "a.example", "--file"}, "needs a value"},
        {{"lint", "127.0.0.1"}, "invalid source domain: '127.0.0.1'"},
        {{"lint", "-s", "bad service", "a.example"}, "invalid service name: 'bad service'"},
    };
    cli_expect_usage_errors(cases, sizeof(cases) / sizeof(cases[0]), "Try 'posh lint --help'.");
}

Test(cli_lint, invalid_environment)
{
    setenv("POSH_MAX_REDIRECTS", "eleven", 1);
    expect_refused(LINT("a.example"), "invalid environment: POSH_MAX_REDIRECTS");
    expect_refused(LINT("--file", "/dev/null"), "invalid environment: POSH_MAX_REDIRECTS");
    unsetenv("POSH_MAX_REDIRECTS");
    setenv("POSH_CONNECT_TO", "nonsense", 1);
    expect_refused(LINT("a.example"), "POSH_CONNECT_TO");
}

Test(cli_lint, help)
{
    cli_run r = LINT("--help");
    cr_expect_eq(r.code, 0);
    cr_expect(strncmp(r.out, "usage: posh lint", 16) == 0, "%s", r.out);
    cr_expect(strstr(r.out, "Exit status: 0 no finding; 1 warnings only; 2 errors") != NULL, "%s", r.out);
    cli_run_free(&r);
    r = cli_run_posh(NULL, (const char *const[]){"help", "lint", NULL});
    cr_expect_eq(r.code, 0);
    cr_expect(strncmp(r.out, "usage: posh lint", 16) == 0, "%s", r.out);
    cli_run_free(&r);
    r = cli_run_posh(NULL, (const char *const[]){"--help", NULL});
    cr_expect(strstr(r.out, "  lint [-s SERVICE] DOMAIN") != NULL, "posh --help lists lint: %s", r.out);
    cli_run_free(&r);
}
