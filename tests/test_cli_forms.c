/*
 * test_cli_forms.c - the `posh` command and the seeds' other forms (issue 14), as a real process
 * (POSH_CLI_PATH) against the fixture's nginx: lookup's "format" (fingerprints, JWK Set, a reference to a JWK
 * Set, POSH_FORMATS), `generate --jwk` read back by the library and by lookup/verify, and `posh delegation`.
 * The process runner and the helpers it shares with the other test_cli sources are in cli_run.c.
 */
#include "cli_run.h"
#include "fixture.h"

#include "posh_internal.h"

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVICES_PATH "/.well-known/services/xmpp-server/"
/* nginx answers a directory URL with the directory's index.html (served as application/json, like every file). */
#define SERVICES_FILE SERVICES_PATH "index.html"

/* ---- JSON output ---- */

/* Whether o has the member key (of any type, null included). */
static int has(json_object *o, const char *key)
{
    return json_object_object_get_ex(o, key, NULL);
}

/* ---- the fixture ---- */

static fx f;
static ts_tls *server;

static void setup(void)
{
    cli_fixture_setup(&f);
}

static void teardown(void)
{
    cli_fixture_teardown(&f, &server);
}

static EVP_PKEY *new_key(const char *type, const char *curve)
{
    EVP_PKEY *k = curve != NULL ? EVP_PKEY_Q_keygen(NULL, NULL, type, curve)
                  : strcmp(type, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, type, (size_t)2048)
                                             : EVP_PKEY_Q_keygen(NULL, NULL, type);
    cr_assert_not_null(k, "a %s key", type);
    return k;
}

/* ---- base64url, written here rather than taken from the library under test ---- */

/* Unpadded base64url (RFC 7515 section 2) of len bytes. Caller frees. */
static char *b64url(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    cr_assert_not_null(out);
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

/* The base64url SHA-256 (or SHA-1) thumbprint of a certificate's DER. Caller frees. */
static char *thumbprint(ts_cert *c, const EVP_MD *md)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    cr_assert(EVP_Digest(der, len, d, &dlen, md, NULL));
    return b64url(d, dlen);
}

/* Decode strict unpadded base64url (the library's exact decoder at the length the text implies). Caller frees. */
static unsigned char *b64url_decode(const char *s, size_t *len)
{
    size_t n = strlen(s), want = n / 4 * 3 + (n % 4 == 2 ? 1 : n % 4 == 3 ? 2 : 0);
    unsigned char *out = malloc(want + 1);
    cr_assert_not_null(out);
    cr_assert_neq(n % 4, 1, "'%s' is not base64url", s);
    cr_assert_eq(posh_b64url_decode_exact(s, n, out, want), 0, "'%s' is not unpadded base64url", s);
    *len = want;
    return out;
}

/* A JWK Set with one key per certificate, vouching by x5t#S256. Caller frees. */
static char *jwk_doc(ts_cert *const *certs, size_t n, long expires)
{
    char *s = strdup("{\"keys\":[");
    for (size_t i = 0; s != NULL && i < n; i++) {
        char *tp = thumbprint(certs[i], EVP_sha256()), *more = NULL;
        cr_assert_geq(asprintf(&more, "%s%s{\"kty\":\"EC\",\"kid\":\"k%zu\",\"x5t#S256\":\"%s\"}", s, i ? "," : "",
                               i, tp),
                      0);
        free(tp);
        free(s);
        s = more;
    }
    char *doc = NULL;
    cr_assert_geq(asprintf(&doc, "%s],\"expires\":%ld}", s, expires), 0);
    free(s);
    return doc;
}

/* ======================================================================================================== */
/* posh lookup: which form was read                                                                         */

TestSuite(cli_forms, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_forms, lookup_of_a_jwk_set_says_jwk)
{
    ts_cert *certs[] = {f.svc, f.other};
    char *a = cli_fingerprint(f.svc, "sha-256"), *b = cli_fingerprint(f.other, "sha-256");
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 2, 900));
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    cr_expect_eq(r.err[0], '\0', "nothing on stderr: %s", r.err);
    json_object *j = cli_parse_json(r.out), *fps = cli_member(j, "fingerprints");
    cr_expect_str_eq(cli_member_str(j, "format"), "jwk");
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 900);
    cr_expect(!json_object_get_boolean(cli_member(j, "followed_reference")));
    cr_assert_eq(json_object_array_length(fps), 2, "one descriptor per key");
    /* A key's x5t#S256 is shown as the SHA-256 it is, in the standard base64 of fingerprints documents. */
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-256"), a);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 1), "sha-256"), b);
    cr_expect_null(cli_member(j, "error"));
    json_object_put(j);
    cli_run_free(&r);
    free(a);
    free(b);
}

Test(cli_forms, lookup_of_a_fingerprints_document_says_fingerprints)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "format"), "fingerprints");
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_forms, lookup_of_a_reference_to_a_jwk_set)
{
    char *fp = cli_fingerprint(f.svc, "sha-256");
    fx_put_free(&f, HOSTING, "/posh/xmpp.json", jwk_doc(&f.svc, 1, 600));
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://" HOSTING "/posh/xmpp.json", 7200));
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "format"), "jwk", "the form of the document the reference led to");
    cr_expect(json_object_get_boolean(cli_member(j, "followed_reference")));
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 600);
    cr_expect_eq(json_object_array_length(cli_member(j, "requests")), 2);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(cli_member(j, "fingerprints"), 0), "sha-256"), fp);
    json_object_put(j);
    cli_run_free(&r);
    free(fp);
}

/* POSH_FORMATS=fingerprints refuses the old form: exit 1, POSH_ERR_DOCUMENT, no format; and the other way. */
Test(cli_forms, posh_formats_refuses_a_form)
{
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(&f.svc, 1, 900));
    setenv("POSH_FORMATS", "fingerprints", 1);
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out), *e = cli_member(j, "error");
    cr_expect_null(cli_member(j, "format"), "no form read on failure");
    cr_expect_null(cli_member(j, "ttl"));
    cr_expect_eq(json_object_array_length(cli_member(j, "fingerprints")), 0);
    cr_assert_not_null(e);
    cr_expect_str_eq(cli_member_str(e, "name"), "POSH_ERR_DOCUMENT");
    cr_expect(strstr(cli_member_str(e, "message"), "POSH_FORMATS") != NULL, "says why: %s",
              cli_member_str(e, "message"));
    cr_expect(strstr(r.err, "POSH_ERR_DOCUMENT") != NULL, "stderr: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);

    /* The same document with both forms accepted, explicitly. */
    setenv("POSH_FORMATS", "fingerprints,jwk", 1);
    r = POSH("lookup", FOO);
    expect_code(r, 0);
    cli_run_free(&r);

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    setenv("POSH_FORMATS", "jwk", 1);
    r = POSH("lookup", FOO);
    expect_code(r, 1);
    j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_DOCUMENT");
    cr_expect_null(cli_member(j, "format"));
    json_object_put(j);
    cli_run_free(&r);

    setenv("POSH_FORMATS", "pem", 1);
    r = POSH("lookup", FOO);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "POSH_FORMATS") != NULL, "names the variable: %s", r.err);
    cr_expect_eq(r.out[0], '\0');
    cli_run_free(&r);
}

Test(cli_forms, failure_has_a_null_format)
{
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out);
    cr_expect_null(cli_member(j, "format"));
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_NO_POSH");
    json_object_put(j);
    cli_run_free(&r);

    /* A JWK Set that publishes a private key is refused whole. */
    char *tp = thumbprint(f.svc, EVP_sha256()), *doc = NULL;
    cr_assert_geq(asprintf(&doc, "{\"keys\":[{\"kty\":\"EC\",\"d\":\"AAAA\",\"x5t#S256\":\"%s\"}],\"expires\":60}", tp),
                  0);
    fx_put_free(&f, FOO, RFC7711_PATH, doc);
    r = POSH("lookup", FOO);
    expect_code(r, 1);
    j = cli_parse_json(r.out);
    cr_expect_null(cli_member(j, "format"));
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_DOCUMENT");
    cr_expect(strstr(cli_member_str(cli_member(j, "error"), "message"), "keys[0].d") != NULL, "%s",
              cli_member_str(cli_member(j, "error"), "message"));
    json_object_put(j);
    cli_run_free(&r);
    free(tp);
}

Test(cli_forms, help_texts)
{
    cli_run r = POSH("lookup", "--help");
    expect_code(r, 0);
    cr_expect(strstr(r.out, "POSH_FORMATS") != NULL, "lookup --help names POSH_FORMATS: %s", r.out);
    cr_expect(strstr(r.out, "format (") != NULL, "lookup --help documents \"format\": %s", r.out);
    cli_run_free(&r);

    r = POSH("generate", "--help");
    expect_code(r, 0);
    cr_expect(strstr(r.out, "--jwk") != NULL && strstr(r.out, "--x5c") != NULL, "%s", r.out);
    cli_run_free(&r);

    r = POSH("--help");
    expect_code(r, 0);
    cr_expect(strstr(r.out, "  delegation [-s SERVICE] DOMAIN") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "generate --jwk") != NULL, "%s", r.out);
    cli_run_free(&r);

    const char *const forms[][3] = {{"delegation", "--help", NULL}, {"help", "delegation", NULL}};
    for (size_t i = 0; i < 2; i++) {
        r = cli_run_posh(NULL, forms[i]);
        expect_code(r, 0);
        cr_expect(cli_starts_with(r.out, "usage: posh delegation"), "%s %s: %s", forms[i][0], forms[i][1], r.out);
        cr_expect(strstr(r.out, "Exit status") != NULL);
        cr_expect(strstr(r.out, "/.well-known/services/SERVICE/") != NULL);
        cli_run_free(&r);
    }
}

/* ======================================================================================================== */
/* posh generate --jwk                                                                                      */

TestSuite(cli_generate_jwk, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_generate_jwk, usage_errors)
{
    static const cli_usage_case cases[] = {
        {{"generate", "--x5c", "x.pem"}, "--x5c is for JWK Sets: give --jwk"},
        {{"generate", "--jwk"}, "at least one certificate"},
        {{"generate", "--jwk", "--url", "https://hosting.example.net/x.json"}, "--jwk is for JWK Sets, not with --url"},
        {{"generate", "--x5c", "--url", "https://hosting.example.net/x.json"}, "--x5c is for JWK Sets, not with --url"},
        {{"generate", "--jwk", "--expires", "0", "x.pem"}, "--expires '0'"},
        {{"generate", "--jwk=yes", "x.pem"}, "--jwk=yes"},
    };
    cli_expect_usage_errors(cases, sizeof(cases) / sizeof(cases[0]), NULL);

    const char *args[72] = {"generate", "--jwk", "--x5c"};
    for (int i = 3; i <= 67; i++)
        args[i] = "x.pem";
    cli_run r = cli_run_posh(NULL, args);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "at most 64") != NULL, "%s", r.err);
    cli_run_free(&r);
}

/* The members a public JWK of ours may have: never a private one (d, p, q, dp, dq, qi, oth, k) or anything else. */
static void expect_public_members_only(json_object *key)
{
    static const char *const allowed[] = {"kty", "n", "e", "crv", "x", "y", "x5t#S256", "x5t", "x5c"};
    json_object_object_foreach(key, name, val)
    {
        int ok = 0;
        (void)val;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
            ok |= strcmp(name, allowed[i]) == 0;
        cr_expect(ok, "member '%s' in %s", name, json_object_to_json_string(key));
    }
}

/* Build the public key a JWK describes (from its members alone) and expect it to be the certificate's key. */
static void expect_key_of(json_object *key, ts_cert *c)
{
    EVP_PKEY *want = X509_get0_pubkey(ts_cert_x509(c)), *got = NULL;
    const char *kty = cli_member_str(key, "kty");
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char *a = NULL, *b = NULL;
    unsigned char point[1 + 2 * 66]; /* EC: read by OSSL_PARAM_BLD_to_param, not copied when pushed */
    size_t alen = 0, blen = 0;
    BIGNUM *n = NULL, *e = NULL;

    cr_assert_not_null(bld);
    expect_public_members_only(key);
    if (strcmp(kty, "RSA") == 0) {
        cr_expect(!has(key, "crv") && !has(key, "x") && !has(key, "y"));
        a = b64url_decode(cli_member_str(key, "n"), &alen);
        b = b64url_decode(cli_member_str(key, "e"), &blen);
        cr_expect(alen > 0 && a[0] != 0, "n without leading zero bytes (RFC 7518 6.3.1.1)");
        cr_expect(blen > 0 && b[0] != 0, "e without leading zero bytes");
        n = BN_bin2bn(a, (int)alen, NULL);
        e = BN_bin2bn(b, (int)blen, NULL);
        cr_assert(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
                  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e));
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else if (strcmp(kty, "EC") == 0) {
        static const struct {
            const char *crv, *group;
            size_t len;
        } curves[] = {{"P-256", "prime256v1", 32}, {"P-384", "secp384r1", 48}, {"P-521", "secp521r1", 66}};
        const char *crv = cli_member_str(key, "crv"), *group = NULL;
        size_t len = 0;
        for (size_t i = 0; i < 3; i++)
            if (strcmp(crv, curves[i].crv) == 0) {
                group = curves[i].group;
                len = curves[i].len;
            }
        cr_assert_not_null(group, "crv %s", crv);
        a = b64url_decode(cli_member_str(key, "x"), &alen);
        b = b64url_decode(cli_member_str(key, "y"), &blen);
        cr_expect_eq(alen, len, "x is the full length of the field (RFC 7518 6.2.1.2)");
        cr_expect_eq(blen, len, "y is the full length of the field (RFC 7518 6.2.1.3)");
        cr_assert(alen == len && blen == len);
        point[0] = 0x04;
        memcpy(point + 1, a, len);
        memcpy(point + 1 + len, b, len);
        cr_assert(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
                  OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * len));
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else {
        const char *crv = cli_member_str(key, "crv");
        cr_assert_str_eq(kty, "OKP");
        cr_expect(!has(key, "y") && !has(key, "n"));
        a = b64url_decode(cli_member_str(key, "x"), &alen);
        got = EVP_PKEY_new_raw_public_key_ex(NULL, crv, NULL, a, alen);
        cr_assert_not_null(got, "an %s key from x", crv);
    }
    if (got == NULL) {
        cr_assert_not_null(ctx);
        cr_assert_not_null(params = OSSL_PARAM_BLD_to_param(bld));
        cr_assert_eq(EVP_PKEY_fromdata_init(ctx), 1);
        cr_assert_eq(EVP_PKEY_fromdata(ctx, &got, EVP_PKEY_PUBLIC_KEY, params), 1, "a %s key from the members", kty);
    }
    cr_expect_eq(EVP_PKEY_eq(got, want), 1, "the JWK's %s key is the certificate's", kty);
    EVP_PKEY_free(got);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(a);
    free(b);
}

/*
 * Check one key of generate's output against its certificate: the thumbprints, x5c, the public key; and that
 * the library read it as a descriptor for exactly that certificate.
 */
static void expect_jwk_for(json_object *key, const posh_descriptor *d, ts_cert *c, int sha1, int x5c)
{
    char *s256 = thumbprint(c, EVP_sha256()), *s1 = thumbprint(c, EVP_sha1());
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t der_len;
    const unsigned char *der = ts_cert_der(c, &der_len);

    expect_key_of(key, c);
    cr_expect_str_eq(cli_member_str(key, "x5t#S256"), s256);
    cr_expect_eq(has(key, "x5t"), sha1, "x5t only with --sha1");
    if (sha1)
        cr_expect_str_eq(cli_member_str(key, "x5t"), s1);
    cr_expect_eq(has(key, "x5c"), x5c, "x5c only with --x5c");
    if (x5c) {
        json_object *arr = cli_member(key, "x5c");
        cr_assert_eq(json_object_array_length(arr), 1, "the certificate alone");
        const char *b64 = json_object_get_string(json_object_array_get_idx(arr, 0));
        unsigned char *got = malloc(der_len + 3);
        cr_assert_not_null(got);
        cr_expect_eq(strlen(b64) % 4, 0, "standard base64 with padding");
        cr_expect(strchr(b64, '-') == NULL && strchr(b64, '_') == NULL, "not base64url");
        cr_expect_eq(EVP_DecodeBlock(got, (const unsigned char *)b64, (int)strlen(b64)),
                     (int)(4 * ((der_len + 2) / 3) / 4 * 3));
        cr_expect_eq(memcmp(got, der, der_len), 0, "x5c[0] is the certificate's DER");
        free(got);
    }
    cr_assert(EVP_Digest(der, der_len, md, &mdlen, EVP_sha256(), NULL));
    cr_expect(d->present & (1u << POSH_HASH_SHA256));
    cr_expect_eq(memcmp(d->digest[POSH_HASH_SHA256], md, mdlen), 0, "the library's descriptor is this certificate");
    cr_expect_eq(!!(d->present & (1u << POSH_HASH_SHA1)), sha1);
    if (sha1) {
        cr_assert(EVP_Digest(der, der_len, md, &mdlen, EVP_sha1(), NULL));
        cr_expect_eq(memcmp(d->digest[POSH_HASH_SHA1], md, mdlen), 0);
    }
    free(s256);
    free(s1);
}

/* Run generate --jwk with the options for certs; check the output key by key and with posh_doc_parse. */
static char *generate_jwk(ts_cert *const *certs, size_t n, int sha1, int x5c)
{
    const char *args[16] = {"generate", "--jwk", "--expires", "3600"};
    size_t a = 4;
    char paths[8][600];
    posh_doc doc;
    char msg[POSH_MSG_LEN];

    cr_assert_leq(n, 8);
    if (sha1)
        args[a++] = "--sha1";
    if (x5c)
        args[a++] = "--x5c";
    for (size_t i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "jwk%zu", i);
        cr_assert_eq(ts_cert_write(certs[i], f.dir, name), 0);
        snprintf(paths[i], sizeof(paths[i]), "%s/%s.crt", f.dir, name);
        args[a++] = paths[i];
    }
    args[a] = NULL;
    cli_run r = cli_run_posh(NULL, args);
    expect_code(r, 0);
    cr_expect_eq(r.err[0], '\0', "nothing on stderr: %s", r.err);
    json_object *j = cli_parse_json(r.out), *keys = cli_member(j, "keys");
    cr_expect_eq(json_object_object_length(j), 2, "keys and expires only: %s", r.out);
    cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 3600);
    cr_expect(strstr(r.out, "\\/") == NULL, "slashes are not escaped");
    cr_assert_eq(json_object_array_length(keys), n);

    cr_assert_eq(posh_doc_parse(r.out, strlen(r.out), &doc, msg, sizeof(msg)), POSH_OK, "the library refuses it: %s",
                 msg);
    cr_expect_eq(doc.kind, POSH_DOC_FINGERPRINTS);
    cr_expect_eq(doc.format, POSH_FORMAT_JWK);
    cr_expect_eq(doc.expires, 3600);
    cr_assert_eq(doc.n_descriptors, n, "one descriptor per certificate");
    for (size_t i = 0; i < n; i++)
        expect_jwk_for(json_object_array_get_idx(keys, i), &doc.descriptors[i], certs[i], sha1, x5c);
    posh_doc_clear(&doc);
    json_object_put(j);
    char *out = r.out;
    free(r.err);
    return out;
}

/* Every key type generate knows, every option combination: the members are the certificate's public key. */
Test(cli_generate_jwk, every_key_type_and_option)
{
    static const struct {
        const char *type, *curve;
    } kinds[] = {{"EC", "P-256"}, {"EC", "P-384"}, {"EC", "P-521"}, {"RSA", NULL}, {"ED25519", NULL}, {"ED448", NULL}};
    ts_cert *certs[6];
    for (size_t i = 0; i < 6; i++) {
        EVP_PKEY *k = new_key(kinds[i].type, kinds[i].curve);
        /* A P-521 x coordinate that needs a leading zero byte (one key in two): the padding is exercised. */
        for (int tries = 0; kinds[i].curve != NULL && strcmp(kinds[i].curve, "P-521") == 0; tries++) {
            BIGNUM *x = NULL;
            int short_x;
            cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x));
            short_x = BN_num_bytes(x) < 66;
            BN_free(x);
            if (short_x)
                break;
            cr_assert_lt(tries, 200);
            EVP_PKEY_free(k);
            k = new_key(kinds[i].type, kinds[i].curve);
        }
        char name[64];
        snprintf(name, sizeof(name), "k%zu.hosting.example.net", i);
        certs[i] = fx_issue_key(f.ca, name, k);
        EVP_PKEY_free(k);
    }
    for (int opt = 0; opt < 4; opt++)
        free(generate_jwk(certs, 6, opt & 1, (opt >> 1) & 1));
    /* One at a time too (the default expires). */
    for (size_t i = 0; i < 6; i++) {
        cli_run r = POSH("generate", "--jwk", cli_cert_file(certs[i], f.dir, "one"));
        expect_code(r, 0);
        json_object *j = cli_parse_json(r.out);
        cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 86400);
        expect_key_of(json_object_array_get_idx(cli_member(j, "keys"), 0), certs[i]);
        json_object_put(j);
        cli_run_free(&r);
    }
    for (size_t i = 0; i < 6; i++)
        ts_cert_free(certs[i]);
}

/*
 * What generate --jwk prints, published with nginx, vouches for exactly those certificates (EC and RSA): the
 * library matches each and nothing else, posh lookup reads it as "jwk", posh verify accepts each server.
 */
static void round_trip(int sha1, int x5c)
{
    EVP_PKEY *rsa = new_key("RSA", NULL);
    ts_cert *rsa_cert = fx_issue_key(f.ca, "rsa.hosting.example.net", rsa);
    ts_cert *certs[] = {f.svc, rsa_cert};
    char *doc = generate_jwk(certs, 2, sha1, x5c);
    char *fp0 = cli_fingerprint(f.svc, "sha-256"), *fp1 = cli_fingerprint(rsa_cert, "sha-256");

    fx_put_free(&f, HOSTING, "/posh/xmpp.json", doc);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://" HOSTING "/posh/xmpp.json", 1800));

    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *fps = cli_member(j, "fingerprints");
    cr_expect_str_eq(cli_member_str(j, "format"), "jwk");
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 1800);
    cr_assert_eq(json_object_array_length(fps), 2);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-256"), fp0);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 1), "sha-256"), fp1);
    cr_expect_eq(has(json_object_array_get_idx(fps, 0), "sha-1"), sha1);
    json_object_put(j);
    cli_run_free(&r);

    /* The library: each certificate matches its own key, another certificate none. */
    posh_client *client = fx_client(&f);
    posh_result *res = NULL;
    cr_assert_eq(posh_lookup(client, FOO, "xmpp-server", &res), POSH_OK, "%s", posh_result_message(res));
    cr_expect_eq(posh_result_format(res), POSH_FORMAT_JWK);
    ts_cert *probe[] = {f.svc, rsa_cert, f.other};
    for (int i = 0; i < 3; i++) {
        size_t der_len;
        const unsigned char *der = ts_cert_der(probe[i], &der_len);
        int match = -1, index = -2;
        cr_expect_eq(posh_match_der(client, res, der, der_len, &match, &index), POSH_OK);
        cr_expect_eq(match, i < 2, "certificate %d", i);
        cr_expect_eq(index, i < 2 ? i : -1, "certificate %d", i);
    }
    posh_result_free(res);
    posh_client_free(client);

    /* Real handshakes. */
    for (int i = 0; i < 3; i++) {
        cli_serve(&server, probe[i]);
        r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
        expect_code(r, i < 2 ? 0 : 1);
        cr_expect(cli_starts_with(r.out, i < 2 ? "posh: " FOO : "rejected: "), "certificate %d: %s", i, r.out);
        if (i < 2)
            cr_expect(strstr(r.out, "https://" HOSTING "/posh/xmpp.json") != NULL, "%s", r.out);
        cli_run_free(&r);
    }
    free(fp0);
    free(fp1);
    ts_cert_free(rsa_cert);
    EVP_PKEY_free(rsa);
}

Test(cli_generate_jwk, round_trip_ec_and_rsa)
{
    round_trip(0, 0);
}

Test(cli_generate_jwk, round_trip_with_sha1_and_x5c)
{
    round_trip(1, 1);
}

Test(cli_generate_jwk, round_trip_with_x5c_only)
{
    round_trip(0, 1);
}

/* POSH_NO_SHA1 clients still match a --sha1 JWK Set: x5t#S256 is always there. */
Test(cli_generate_jwk, sha1_off_still_matches)
{
    char *doc = generate_jwk(&f.svc, 1, 1, 0);
    fx_put_free(&f, FOO, RFC7711_PATH, doc);
    setenv("POSH_NO_SHA1", "1", 1);
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    cli_run_free(&r);
    unsetenv("POSH_NO_SHA1");
}

/* A private key beside the certificate, in the same file, never reaches the output. */
Test(cli_generate_jwk, no_private_member_even_with_the_key_in_the_file)
{
    static const struct {
        const char *type, *curve;
    } kinds[] = {{"EC", "P-256"}, {"RSA", NULL}, {"ED25519", NULL}};
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY *k = new_key(kinds[i].type, kinds[i].curve);
        ts_cert *c = fx_issue_key(f.ca, "keyed.hosting.example.net", k);
        char path[600], *both = NULL;
        snprintf(path, sizeof(path), "%s/key-and-cert-%zu.pem", f.dir, i);
        cr_assert_geq(asprintf(&both, "%s%s", ts_cert_key_pem(c), ts_cert_pem(c)), 0);
        cr_assert_eq(ts_write_file(path, both, strlen(both)), 0);
        free(both);

        cli_run r = POSH("generate", "--jwk", "--sha1", "--x5c", path);
        expect_code(r, 0);
        json_object *j = cli_parse_json(r.out), *key = json_object_array_get_idx(cli_member(j, "keys"), 0);
        static const char *const private[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
        for (size_t m = 0; m < sizeof(private) / sizeof(private[0]); m++)
            cr_expect(!has(key, private[m]), "%s: private member %s in %s", kinds[i].type, private[m], r.out);
        expect_public_members_only(key);
        expect_key_of(key, c);
        json_object_put(j);
        cli_run_free(&r);
        ts_cert_free(c);
        EVP_PKEY_free(k);
    }
}

/* A key a JWK cannot express (secp256k1 is not P-256/384/521): exit 1, nothing printed. */
Test(cli_generate_jwk, key_type_a_jwk_cannot_express)
{
    EVP_PKEY *k = new_key("EC", "secp256k1");
    ts_cert *c = fx_issue_key(f.ca, "k1.hosting.example.net", k);
    cli_run r = POSH("generate", "--jwk", cli_cert_file(f.svc, f.dir, "svc"), cli_cert_file(c, f.dir, "k1"));
    expect_code(r, 1);
    cr_expect(strstr(r.err, "secp256k1") != NULL && strstr(r.err, "cannot express") != NULL, "%s", r.err);
    cr_expect_eq(r.out[0], '\0', "nothing printed: %s", r.out);
    cli_run_free(&r);
    /* A fingerprints document does not care about the key type. */
    r = POSH("generate", cli_cert_file(c, f.dir, "k1"));
    expect_code(r, 0);
    cli_run_free(&r);
    ts_cert_free(c);
    EVP_PKEY_free(k);
}

/* A self-signed certificate made large by a comment extension of comment_len bytes, written to path. */
static void write_big_certificate(const char *path, size_t comment_len)
{
    EVP_PKEY *k = new_key("EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509_EXTENSION *ext;
    char *comment = malloc(comment_len + 1);
    FILE *fp;

    cr_assert(x != NULL && name != NULL && comment != NULL);
    memset(comment, 'a', comment_len);
    comment[comment_len] = '\0';
    cr_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"big", -1, -1, 0));
    cr_assert(X509_set_version(x, X509_VERSION_3) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
              X509_set_subject_name(x, name) && X509_set_issuer_name(x, name) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -86400) && X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
              X509_set_pubkey(x, k));
    cr_assert_not_null(ext = X509V3_EXT_conf_nid(NULL, NULL, NID_netscape_comment, comment));
    cr_assert(X509_add_ext(x, ext, -1));
    cr_assert(X509_sign(x, k, EVP_sha256()) > 0);
    cr_assert_not_null(fp = fopen(path, "w"));
    cr_assert(PEM_write_X509(fp, x));
    cr_assert_eq(fclose(fp), 0);
    X509_EXTENSION_free(ext);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(k);
    free(comment);
}

/* x5c entries are bounded (16384 bytes of DER, as clients read them); a document over 64 KiB gets a warning. */
Test(cli_generate_jwk, limits_of_what_clients_read)
{
    char big[600], large[600];
    snprintf(big, sizeof(big), "%s/big.pem", f.dir);
    snprintf(large, sizeof(large), "%s/large.pem", f.dir);
    write_big_certificate(big, 17000);
    write_big_certificate(large, 10000);

    cli_run r = POSH("generate", "--jwk", "--x5c", big);
    expect_code(r, 1);
    cr_expect(strstr(r.err, "at most 16384") != NULL, "%s", r.err);
    cr_expect_eq(r.out[0], '\0');
    cli_run_free(&r);
    r = POSH("generate", "--jwk", big);
    expect_code(r, 0);
    cr_expect_eq(r.err[0], '\0', "without x5c the size does not matter: %s", r.err);
    cli_run_free(&r);

    /* Eight 10 KB certificates in x5c: over 64 KiB, printed all the same, and still a valid document. */
    r = POSH("generate", "--jwk", "--x5c", large, large, large, large, large, large, large, large);
    expect_code(r, 0);
    cr_expect(strstr(r.err, "warning:") != NULL && strstr(r.err, "POSH_MAX_BYTES") != NULL &&
                  strstr(r.err, "without --x5c") != NULL,
              "%s", r.err);
    cr_expect_gt(strlen(r.out), 65536);
    {
        posh_doc doc;
        char msg[POSH_MSG_LEN];
        cr_expect_eq(posh_doc_parse(r.out, strlen(r.out), &doc, msg, sizeof(msg)), POSH_OK, "%s", msg);
        cr_expect_eq(doc.n_descriptors, 8);
        posh_doc_clear(&doc);
    }
    cli_run_free(&r);
}

/* ======================================================================================================== */
/* posh delegation                                                                                          */

TestSuite(cli_delegation, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_delegation, valid_document)
{
    fx_put(&f, FOO, SERVICES_FILE,
           "[{\"host\":\"xmpp.hosting.example.net\",\"port\":5269,\"domain\":\"hosting.example.net\"},"
           "{\"host\":\"XMPP2.Hosting.Example.NET.\",\"port\":443,\"domain\":\"foo.example.com\",\"note\":1}]");
    setenv("POSH_MAX_TTL", "3600", 1);
    cli_run r = POSH("delegation", FOO);
    expect_code(r, 0);
    cr_expect_eq(r.err[0], '\0', "nothing on stderr: %s", r.err);
    json_object *j = cli_parse_json(r.out), *reqs, *dels, *d;
    cr_expect_str_eq(cli_member_str(j, "domain"), FOO);
    cr_expect_str_eq(cli_member_str(j, "service"), "xmpp-server");
    reqs = cli_member(j, "requests");
    cr_assert_eq(json_object_array_length(reqs), 1);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(reqs, 0), "url"), "https://" FOO SERVICES_PATH);
    cr_expect_eq(json_object_get_int(cli_member(json_object_array_get_idx(reqs, 0), "status")), 200);
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 3600, "POSH_MAX_TTL: no Cache-Control from nginx");
    dels = cli_member(j, "delegations");
    cr_assert_eq(json_object_array_length(dels), 2);
    d = json_object_array_get_idx(dels, 0);
    cr_expect_str_eq(cli_member_str(d, "host"), "xmpp.hosting.example.net");
    cr_expect_eq(json_object_get_int(cli_member(d, "port")), 5269);
    cr_expect(json_object_is_type(cli_member(d, "port"), json_type_int));
    cr_expect_str_eq(cli_member_str(d, "domain"), "hosting.example.net");
    cr_expect_eq(json_object_object_length(d), 3);
    d = json_object_array_get_idx(dels, 1);
    cr_expect_str_eq(cli_member_str(d, "host"), "xmpp2.hosting.example.net", "normalised");
    cr_expect_eq(json_object_get_int(cli_member(d, "port")), 443);
    cr_expect_str_eq(cli_member_str(d, "domain"), FOO);
    cr_expect_eq(json_object_object_length(d), 3, "unknown members are not shown");
    cr_expect_null(cli_member(j, "error"));
    json_object_put(j);
    cli_run_free(&r);
    unsetenv("POSH_MAX_TTL");
}

Test(cli_delegation, other_service_and_srv_form)
{
    fx_put(&f, FOO, "/.well-known/services/imap/index.html",
           "[{\"host\":\"imap.hosting.example.net\",\"port\":993,\"domain\":\"hosting.example.net\"}]");
    const char *const services[] = {"imap", "_imap._tcp"};
    for (int i = 0; i < 2; i++) {
        cli_run r = POSH("delegation", "-s", services[i], FOO);
        expect_code(r, 0);
        json_object *j = cli_parse_json(r.out);
        cr_expect_str_eq(cli_member_str(j, "service"), services[i]);
        cr_expect_str_eq(cli_member_str(json_object_array_get_idx(cli_member(j, "requests"), 0), "url"),
                         "https://" FOO "/.well-known/services/imap/");
        cr_expect_eq(
            json_object_get_int(cli_member(json_object_array_get_idx(cli_member(j, "delegations"), 0), "port")), 993);
        json_object_put(j);
        cli_run_free(&r);
    }
    /* xmpp-server has none. */
    cli_run r = POSH("delegation", "--service", "xmpp-server", FOO);
    expect_code(r, 1);
    cli_run_free(&r);
}

Test(cli_delegation, none_is_exit_1)
{
    cli_run r = POSH("delegation", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out), *e = cli_member(j, "error");
    cr_assert_not_null(e);
    cr_expect_str_eq(cli_member_str(e, "name"), "POSH_ERR_NO_DELEGATION");
    cr_expect_eq(json_object_get_int(cli_member(e, "code")), POSH_ERR_NO_DELEGATION);
    cr_expect_str_eq(cli_member_str(e, "description"), posh_strerror(POSH_ERR_NO_DELEGATION));
    cr_expect(strstr(cli_member_str(e, "message"), "404") != NULL, "%s", cli_member_str(e, "message"));
    cr_expect_eq(
        json_object_get_int(cli_member(json_object_array_get_idx(cli_member(j, "requests"), 0), "status")), 404);
    cr_expect_eq(json_object_array_length(cli_member(j, "delegations")), 0);
    cr_expect_null(cli_member(j, "ttl"));
    cr_expect(strstr(r.err, "POSH_ERR_NO_DELEGATION") != NULL, "the reason on stderr too: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_delegation, malformed_documents_are_exit_1)
{
    static const struct {
        const char *body, *name, *why;
    } cases[] = {
        {"", "POSH_ERR_JSON", NULL},
        {"{\"host\":\"a.example\",\"port\":1,\"domain\":\"b.example\"}", "POSH_ERR_JSON", NULL},
        {"[]", "POSH_ERR_DOCUMENT", "0 delegations"},
        {"[1]", "POSH_ERR_DOCUMENT", "[0]"},
        {"[{\"port\":5269,\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].host"},
        {"[{\"host\":\"a.example\",\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].port"},
        {"[{\"host\":\"a.example\",\"port\":5269}]", "POSH_ERR_DOCUMENT", "[0].domain"},
        {"[{\"host\":\"a.example\",\"port\":0,\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].port"},
        {"[{\"host\":\"a.example\",\"port\":65536,\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].port"},
        {"[{\"host\":\"a.example\",\"port\":\"5269\",\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].port"},
        {"[{\"host\":\"127.0.0.1\",\"port\":5269,\"domain\":\"b.example\"}]", "POSH_ERR_DOCUMENT", "[0].host"},
        {"[{\"host\":\"a.example\",\"port\":5269,\"domain\":\"b..example\"}]", "POSH_ERR_DOCUMENT", "[0].domain"},
        {"[{\"host\":\"a.example\",\"port\":1,\"domain\":\"b.example\"},{\"host\":5}]", "POSH_ERR_DOCUMENT",
         "[1].host"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_put(&f, FOO, SERVICES_FILE, cases[i].body);
        cli_run r = POSH("delegation", FOO);
        cr_expect_eq(r.code, 1, "case %zu: exit %d; stderr %s", i, r.code, r.err);
        json_object *j = cli_parse_json(r.out), *e = cli_member(j, "error");
        cr_assert_not_null(e, "case %zu", i);
        cr_expect_str_eq(cli_member_str(e, "name"), cases[i].name, "case %zu: %s", i, cli_member_str(e, "message"));
        if (cases[i].why != NULL)
            cr_expect(strstr(cli_member_str(e, "message"), cases[i].why) != NULL, "case %zu: '%s' in %s", i,
                      cases[i].why, cli_member_str(e, "message"));
        cr_expect_eq(json_object_array_length(cli_member(j, "delegations")), 0, "case %zu", i);
        cr_expect_null(cli_member(j, "ttl"), "case %zu", i);
        json_object_put(j);
        cli_run_free(&r);
    }

    /* 33 entries: one over the bound. */
    char *doc = strdup("[");
    for (int i = 0; i < 33; i++) {
        char *more = NULL;
        cr_assert_geq(asprintf(&more, "%s%s{\"host\":\"h%d.example\",\"port\":5269,\"domain\":\"d.example\"}", doc,
                               i ? "," : "", i),
                      0);
        free(doc);
        doc = more;
    }
    char *full = NULL;
    cr_assert_geq(asprintf(&full, "%s]", doc), 0);
    free(doc);
    fx_put_free(&f, FOO, SERVICES_FILE, full);
    cli_run r = POSH("delegation", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_DOCUMENT");
    cr_expect(strstr(cli_member_str(cli_member(j, "error"), "message"), "33 delegations") != NULL, "%s",
              cli_member_str(cli_member(j, "error"), "message"));
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_delegation, usage_errors_are_exit_2)
{
    cli_expect_domain_usage_errors("delegation");

    setenv("POSH_TIMEOUT_MS", "soon", 1);
    cli_run r = POSH("delegation", FOO);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "POSH_TIMEOUT_MS") != NULL, "names the variable: %s", r.err);
    cli_run_free(&r);
    unsetenv("POSH_TIMEOUT_MS");
}

/* The fetch fails: an untrusted web server, a 500 (from the fault-injecting server). */
Test(cli_delegation, fetch_failures_are_exit_1)
{
    unsetenv("POSH_CA_FILE"); /* the system store does not know the test CA */
    fx_put(&f, FOO, SERVICES_FILE, "[{\"host\":\"a.example\",\"port\":1,\"domain\":\"b.example\"}]");
    cli_run r = POSH("delegation", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_TLS");
    cr_expect(strstr(r.err, "https://" FOO) != NULL, "the URL in the reason: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);
    fx_export_env(&f);

    ts_evil *e = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    ts_evil_route_opts o = {.status = 500, .body = "oops"};
    char connect_to[64];
    cr_assert_not_null(e);
    cr_assert_eq(ts_evil_route(e, SERVICES_PATH, &o), 0);
    cr_assert_eq(ts_evil_start(e), 0);
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_evil_port(e));
    setenv("POSH_CONNECT_TO", connect_to, 1);
    r = POSH("delegation", FOO);
    expect_code(r, 1);
    j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_HTTP_STATUS");
    cr_expect_eq(
        json_object_get_int(cli_member(json_object_array_get_idx(cli_member(j, "requests"), 0), "status")), 500);
    json_object_put(j);
    cli_run_free(&r);
    ts_evil_stop(e);
    fx_export_env(&f);
}

/*
 * The draft has no expires: the answer lives for POSH_MAX_TTL, lowered by the response's Cache-Control
 * max-age. nginx (tests/support/nginx.c) cannot add a header, so the fault-injecting HTTPS server sends them.
 */
Test(cli_delegation, cache_control_max_age_lowers_the_ttl)
{
    static const struct {
        const char *headers;
        long ttl;
    } cases[] = {
        {"Cache-Control: max-age=120\r\n", 120},
        {"Cache-Control: public, max-age=300\r\nCache-Control: max-age=200\r\n", 200},
        {"Cache-Control: max-age=999999\r\n", 3600},
        {"Cache-Control: no-store\r\n", 0},
        {"Cache-Control: private\r\n", 3600},
        {"Cache-Control: MAX-AGE=70\r\n", 70},
        {NULL, 3600},
    };
    static const char body[] = "[{\"host\":\"xmpp.hosting.example.net\",\"port\":5269,\"domain\":\"hosting.example.net\"}]";
    ts_evil *e = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    char connect_to[64];

    cr_assert_not_null(e);
    cr_assert_eq(ts_evil_start(e), 0);
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_evil_port(e));
    setenv("POSH_CONNECT_TO", connect_to, 1);
    setenv("POSH_MAX_TTL", "3600", 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ts_evil_route_opts o = {.body = body, .headers = cases[i].headers};
        cr_assert_eq(ts_evil_route(e, SERVICES_PATH, &o), 0);
        cli_run r = POSH("delegation", FOO);
        expect_code(r, 0);
        json_object *j = cli_parse_json(r.out);
        cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), cases[i].ttl, "case %zu (%s): %s", i,
                     cases[i].headers != NULL ? cases[i].headers : "none", r.out);
        cr_expect_eq(json_object_array_length(cli_member(j, "delegations")), 1);
        json_object_put(j);
        cli_run_free(&r);
    }
    ts_evil_stop(e);
    unsetenv("POSH_MAX_TTL");
    fx_export_env(&f);
}

Test(cli_delegation, unwritable_stdout_is_exit_1)
{
    fx_put(&f, FOO, SERVICES_FILE, "[{\"host\":\"a.example\",\"port\":1,\"domain\":\"b.example\"}]");
    cli_run r = POSH_TO("/dev/full", "delegation", FOO);
    expect_code(r, 1);
    cr_expect(strstr(r.err, "cannot write the result") != NULL, "%s", r.err);
    cli_run_free(&r);
}
