/*
 * test_jwk.c - JWK Set documents (issue 14, part 1): the parser's every rule as a table of (bytes, error, the
 * member the message names), keys built from real certificates (the test PKI, EC P-256) matched down to their DER,
 * the strongest-hash rule and the SHA-1 switch, the limits just under and just over, the POSH_FORMATS mask; then
 * against a real nginx: lookups that read a JWK Set (also through a reference), posh_result_format, the formats a
 * client accepts, and a TLS handshake a JWK Set vouches for.
 *
 * Thumbprints and base64 are computed here with OpenSSL's own encoder (EVP_EncodeBlock), never with libposh's, so
 * that a bug shared by the encoder and the decoder cannot hide.
 */
#include "fixture.h"
#include "handshake.h"
#include "client_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define BIT(h) (1u << (h))

/* ---- encodings and digests, independent of libposh ---- */

/* Standard base64, padded (what x5c holds). Caller frees. */
static char *b64(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    cr_assert_not_null(out);
    cr_assert_geq(EVP_EncodeBlock((unsigned char *)out, in, (int)len), 0);
    return out;
}

/* Unpadded base64url (what x5t and x5t#S256 hold) into out (at least 100 bytes for a digest). */
static void b64url(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    char *s = b64(in, len);
    size_t n = strlen(s);
    cr_assert_lt(n, outlen);
    while (n > 0 && s[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++)
        out[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    out[n] = '\0';
    free(s);
}

/* The thumbprint of a DER certificate under md ("SHA1", "SHA256"), base64url. */
static void thumb_der(const unsigned char *der, size_t len, const char *md, char out[100])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    size_t n = 0;
    cr_assert_eq(EVP_Q_digest(NULL, md, NULL, der, len, d, &n), 1);
    b64url(d, n, out, 100);
}

static void thumb(ts_cert *c, const char *md, char out[100])
{
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    thumb_der(der, len, md, out);
}

/* x5c entry of a certificate. Caller frees. */
static char *x5c_of(ts_cert *c)
{
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    return b64(der, len);
}

/* ---- the test PKI ---- */

static ts_ca *ca;
static ts_cert *cert_a, *cert_b, *cert_c, *cert_a2; /* a2: cert_a's key and names, another certificate */

static void pki_setup(void)
{
    cr_assert_not_null(ca = ts_ca_new("jwk test CA"));
    cert_a = fx_issue_key(ca, "a.hosting.example.net", NULL);
    cert_b = fx_issue_key(ca, "b.hosting.example.net", NULL);
    cert_c = fx_issue_key(ca, "c.hosting.example.net", NULL);
    cert_a2 = fx_issue_key(ca, "a.hosting.example.net", ts_cert_key(cert_a));
}

static void pki_teardown(void)
{
    ts_cert_free(cert_a);
    ts_cert_free(cert_b);
    ts_cert_free(cert_c);
    ts_cert_free(cert_a2);
    ts_ca_free(ca);
}

/* ---- parsing and matching ---- */

static int doc_is_empty(const posh_doc *d)
{
    return d->kind == 0 && d->format == 0 && d->expires == 0 && d->n_descriptors == 0 && d->descriptors == NULL &&
           d->url == NULL;
}

/* Parse json under formats; on failure also check the contract on *doc and that a message says why. */
static posh_err parse_f(const char *json, unsigned formats, posh_doc *doc, char msg[POSH_MSG_LEN])
{
    posh_err err;
    memset(doc, 0x5a, sizeof(*doc)); /* garbage in: never read before written */
    err = posh_doc_parse_formats(json, strlen(json), formats, doc, msg, POSH_MSG_LEN);
    if (err != POSH_OK) {
        cr_expect(doc_is_empty(doc), "a failed parse left data in the document: %.200s", json);
        cr_expect_neq(msg[0], '\0', "error %d without a message", (int)err);
    } else {
        cr_expect_eq(msg[0], '\0', "success with a message: %s", msg);
    }
    return err;
}

static posh_err parse(const char *json, posh_doc *doc, char msg[POSH_MSG_LEN])
{
    return parse_f(json, POSH_FORMAT_ALL, doc, msg);
}

/*
 * The index of the key that vouches for der (-1: none), with SHA-1 allowed or not. With SHA-1 allowed the result
 * object (what lookups build: posh_result_from_doc, posh_result_match) must say the same as the descriptors.
 */
static int match_der(const posh_doc *doc, const unsigned char *der, size_t len, bool allow_sha1)
{
    int index = 42, index2 = 42;
    cr_assert_eq(posh_match_descriptors(doc->descriptors, doc->n_descriptors, allow_sha1, der, len, &index), POSH_OK);
    if (allow_sha1) {
        posh_result *r = posh_result_from_doc("foo.example.com", "_xmpp-server._tcp", doc, 0, 86400);
        cr_assert_not_null(r);
        cr_assert_eq(posh_result_match(r, der, len, &index2), POSH_OK);
        cr_expect_eq(index2, index, "the result object and the descriptors disagree");
        cr_expect_eq(posh_result_format(r), POSH_FORMAT_JWK);
        posh_result_free(r);
    }
    return index;
}

static int match(const posh_doc *doc, ts_cert *c, bool allow_sha1)
{
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    return match_der(doc, der, len, allow_sha1);
}

/* {"keys":[keys],"expires":60}. Caller frees. */
static char *jwks(const char *keys)
{
    char *s = NULL;
    cr_assert_geq(asprintf(&s, "{\"keys\":[%s],\"expires\":60}", keys), 0);
    return s;
}

/* Parse a JWK Set that must be valid. */
static void parse_ok(const char *json, posh_doc *doc)
{
    char msg[POSH_MSG_LEN];
    posh_err err = parse(json, doc, msg);
    cr_assert_eq(err, POSH_OK, "%s: %.300s", msg, json);
    cr_assert_eq(doc->kind, POSH_DOC_FINGERPRINTS);
    cr_assert_eq(doc->format, POSH_FORMAT_JWK);
    cr_assert_eq(doc->expires, 60);
    cr_assert_null(doc->url);
}

TestSuite(jwk, .init = pki_setup, .fini = pki_teardown, .timeout = 60);

/* ---- valid sets ---- */

Test(jwk, x5t_only)
{
    char t[100], key[256];
    posh_doc doc;
    thumb(cert_a, "SHA1", t);
    snprintf(key, sizeof(key), "{\"kty\":\"EC\",\"x5t\":\"%s\"}", t);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_assert_eq(doc.n_descriptors, 1);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA1));
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_b, true), -1);
    cr_expect_eq(match(&doc, cert_a2, true), -1, "same key, another certificate");
    cr_expect_eq(match(&doc, cert_a, false), -1, "POSH_NO_SHA1: an x5t-only key matches nothing");
    posh_doc_clear(&doc);
    free(json);
}

Test(jwk, x5t_s256_only)
{
    char t[100], key[256];
    posh_doc doc;
    thumb(cert_a, "SHA256", t);
    snprintf(key, sizeof(key), "{\"kty\":\"EC\",\"x5t#S256\":\"%s\"}", t);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_assert_eq(doc.n_descriptors, 1);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA256));
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_a, false), 0, "SHA-256 is unaffected by the SHA-1 switch");
    cr_expect_eq(match(&doc, cert_b, true), -1);
    cr_expect_eq(match(&doc, cert_a2, true), -1);
    posh_doc_clear(&doc);
    free(json);
}

Test(jwk, x5c_only_matches_exactly_that_der)
{
    posh_doc doc;
    char *x = x5c_of(cert_a), *key = NULL;
    cr_assert_geq(asprintf(&key, "{\"kty\":\"EC\",\"x5c\":[\"%s\"]}", x), 0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_assert_eq(doc.n_descriptors, 1);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA256), "x5c[0] is recorded as its SHA-256");
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_a, false), 0, "x5c does not rest on SHA-1");
    cr_expect_eq(match(&doc, cert_a2, true), -1, "same key and names, another certificate: no match");
    cr_expect_eq(match(&doc, cert_b, true), -1);

    /* The DER with one byte changed or one byte short: not that certificate. */
    size_t len;
    const unsigned char *der = ts_cert_der(cert_a, &len);
    unsigned char *copy = malloc(len);
    cr_assert_not_null(copy);
    memcpy(copy, der, len);
    copy[len - 1] ^= 1;
    cr_expect_eq(match_der(&doc, copy, len, true), -1);
    cr_expect_eq(match_der(&doc, der, len - 1, true), -1);
    free(copy);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(x);
}

Test(jwk, all_three_consistent)
{
    char t1[100], t256[100];
    posh_doc doc;
    char *xa = x5c_of(cert_a), *xca, *key = NULL;
    /* x5c: the leaf, then its issuer (a chain as RFC 7517 4.7 has it). */
    int n;
    unsigned char *cader = NULL;
    cr_assert_gt(n = i2d_X509(ts_ca_x509(ca), &cader), 0);
    xca = b64(cader, (size_t)n);
    OPENSSL_free(cader);
    thumb(cert_a, "SHA1", t1);
    thumb(cert_a, "SHA256", t256);
    cr_assert_geq(asprintf(&key,
                           "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                           "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\",\"kid\":\"2014\",\"use\":\"sig\","
                           "\"alg\":\"ES256\",\"key_ops\":[\"verify\"],\"x5u\":\"https://example.com/x.pem\","
                           "\"x5t\":\"%s\",\"x5t#S256\":\"%s\",\"x5c\":[\"%s\",\"%s\"]}",
                           t1, t256, xa, xca),
                  0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_assert_eq(doc.n_descriptors, 1);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA256));
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_a, false), 0);
    cr_expect_eq(match(&doc, cert_a2, true), -1);
    size_t calen;
    cader = NULL;
    cr_assert_gt(n = i2d_X509(ts_ca_x509(ca), &cader), 0);
    calen = (size_t)n;
    cr_expect_eq(match_der(&doc, cader, calen, true), -1, "x5c[1] (the issuer) is never vouched for");
    OPENSSL_free(cader);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(xa);
    free(xca);
}

Test(jwk, several_keys_and_rollover_order)
{
    char tb[100], tc[100];
    posh_doc doc;
    char *xa = x5c_of(cert_a), *keys = NULL;
    thumb(cert_b, "SHA256", tb);
    thumb(cert_c, "SHA1", tc);
    /* The certificate soonest to expire first, then the renewed one (draft-miller-xmpp-posh-prooftype-02 6). */
    cr_assert_geq(asprintf(&keys,
                           "{\"kty\":\"EC\",\"kid\":\"old\",\"x5t#S256\":\"%s\"},"
                           "{\"kty\":\"EC\",\"kid\":\"new\",\"x5c\":[\"%s\"]},"
                           "{\"kty\":\"RSA\",\"n\":\"0vx7\",\"e\":\"AQAB\",\"x5t\":\"%s\"}",
                           tb, xa, tc),
                  0);
    char *json = jwks(keys);
    parse_ok(json, &doc);
    cr_assert_eq(doc.n_descriptors, 3);
    cr_expect_eq(match(&doc, cert_b, true), 0);
    cr_expect_eq(match(&doc, cert_a, true), 1);
    cr_expect_eq(match(&doc, cert_c, true), 2);
    cr_expect_eq(match(&doc, cert_c, false), -1, "the x5t-only key is ignored without SHA-1");
    cr_expect_eq(match(&doc, cert_a, false), 1);
    cr_expect_eq(match(&doc, cert_a2, true), -1);
    posh_doc_clear(&doc);
    free(json);
    free(keys);
    free(xa);
}

/* The first key that vouches is the one reported, whichever comes later. */
Test(jwk, first_matching_key_reported)
{
    char t256[100], t1[100];
    posh_doc doc;
    char *xa = x5c_of(cert_a), *keys = NULL;
    thumb(cert_a, "SHA256", t256);
    thumb(cert_a, "SHA1", t1);
    cr_assert_geq(asprintf(&keys,
                           "{\"kty\":\"EC\",\"x5t\":\"%s\"},{\"kty\":\"EC\",\"x5t#S256\":\"%s\"},"
                           "{\"kty\":\"EC\",\"x5c\":[\"%s\"]}",
                           t1, t256, xa),
                  0);
    char *json = jwks(keys);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_a, false), 1);
    posh_doc_clear(&doc);
    free(json);
    free(keys);
    free(xa);
}

/* The prooftype-02 form: "kty":"PKIX" and x5c only. kty is any non-empty string; only the certificate counts. */
Test(jwk, prooftype_pkix_key)
{
    posh_doc doc;
    char *xa = x5c_of(cert_a), *key = NULL;
    cr_assert_geq(asprintf(&key, "{\"kty\":\"PKIX\",\"x5c\":[\"%s\"]}", xa), 0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, cert_a, true), 0);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(xa);
}

/* Unknown members are ignored, as unknown hash names are in fingerprint descriptors; key_ops may be empty. */
Test(jwk, unknown_members_ignored)
{
    char t[100], key[512];
    posh_doc doc;
    thumb(cert_a, "SHA256", t);
    snprintf(key, sizeof(key),
             "{\"kty\":\"EC\",\"x5t#S256\":\"%s\",\"ext\":true,\"x5t#S512\":42,\"X5T\":null,\"D\":\"not d\","
             "\"key_ops\":[],\"comment\":{\"d\":\"nested, not a member of the key\"}}",
             t);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA256));
    cr_expect_eq(match(&doc, cert_a, true), 0);
    posh_doc_clear(&doc);
    free(json);
}

/* x5c in standard base64 without its padding: the one base64 rule of posh (padding optional, bits zero). */
Test(jwk, x5c_unpadded_accepted)
{
    posh_doc doc;
    ts_cert *const pick[] = {cert_a, cert_b, cert_c, cert_a2};
    ts_cert *c = NULL;
    size_t len;
    /* A certificate whose DER is not a multiple of 3 bytes long, so that its base64 has padding to take off. */
    for (size_t i = 0; c == NULL && i < sizeof(pick) / sizeof(pick[0]); i++)
        if (ts_cert_der(pick[i], &len) != NULL && len % 3 != 0)
            c = pick[i];
    if (c == NULL)
        cr_skip_test("no certificate of this run has padding in its base64");
    char *xa = x5c_of(c), *key = NULL;
    size_t n = strlen(xa);
    while (n > 0 && xa[n - 1] == '=')
        xa[--n] = '\0';
    cr_assert_geq(asprintf(&key, "{\"kty\":\"EC\",\"x5c\":[\"%s\"]}", xa), 0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, c, true), 0);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(xa);
}

Test(jwk, reference_is_still_a_reference)
{
    static const char json[] = "{\"url\":\"https://hosting.example.net/posh/foo.json\",\"expires\":60}";
    static const unsigned forms[] = {POSH_FORMAT_ALL, POSH_FORMAT_JWK, POSH_FORMAT_FINGERPRINTS};
    char msg[POSH_MSG_LEN];
    posh_doc doc;
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        cr_assert_eq(parse_f(json, forms[i], &doc, msg), POSH_OK, "formats %u: %s", forms[i], msg);
        cr_expect_eq(doc.kind, POSH_DOC_REFERENCE, "formats %u", forms[i]);
        cr_expect_str_eq(doc.url, "https://hosting.example.net/posh/foo.json");
        cr_expect_eq(doc.n_descriptors, 0);
        posh_doc_clear(&doc);
    }
}

/* ---- the strongest-hash rule ---- */

/* Both thumbprints, no x5c, naming two certificates: the SHA-256 decides (README: never judged by its x5t). */
Test(jwk, s256_decides_over_x5t)
{
    char t1[100], t256[100], key[256];
    posh_doc doc;
    char msg[POSH_MSG_LEN];

    /* x5t is cert_b's SHA-1, x5t#S256 is cert_a's SHA-256. */
    thumb(cert_b, "SHA1", t1);
    thumb(cert_a, "SHA256", t256);
    snprintf(key, sizeof(key), "{\"kty\":\"EC\",\"x5t\":\"%s\",\"x5t#S256\":\"%s\"}", t1, t256);
    char *json = jwks(key);
    cr_assert_eq(parse(json, &doc, msg), POSH_OK,
                 "thumbprints that disagree without x5c are not compared with anything: %s", msg);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA256));
    cr_expect_eq(match(&doc, cert_a, true), 0, "the SHA-256 names cert_a");
    cr_expect_eq(match(&doc, cert_a, false), 0);
    cr_expect_eq(match(&doc, cert_b, true), -1, "a right SHA-1 never rescues a wrong SHA-256");
    cr_expect_eq(match(&doc, cert_b, false), -1);
    posh_doc_clear(&doc);
    free(json);

    /* The other way round: x5t is cert_a's, x5t#S256 is cert_b's. */
    thumb(cert_a, "SHA1", t1);
    thumb(cert_b, "SHA256", t256);
    snprintf(key, sizeof(key), "{\"kty\":\"EC\",\"x5t#S256\":\"%s\",\"x5t\":\"%s\"}", t256, t1);
    json = jwks(key);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, cert_a, true), -1);
    cr_expect_eq(match(&doc, cert_b, true), 0);
    posh_doc_clear(&doc);
    free(json);
}

/* x5c counts as SHA-256: with a consistent x5t beside it, SHA-1 being off changes nothing. */
Test(jwk, x5c_with_x5t_survives_no_sha1)
{
    char t1[100];
    posh_doc doc;
    char *xa = x5c_of(cert_a), *key = NULL;
    thumb(cert_a, "SHA1", t1);
    cr_assert_geq(asprintf(&key, "{\"kty\":\"EC\",\"x5t\":\"%s\",\"x5c\":[\"%s\"]}", t1, xa), 0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    cr_expect_eq(doc.descriptors[0].present, BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA256));
    cr_expect_eq(match(&doc, cert_a, false), 0);
    cr_expect_eq(match(&doc, cert_a2, false), -1);
    cr_expect_eq(match(&doc, cert_a2, true), -1);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(xa);
}

Test(jwk, no_sha1_ignores_x5t_only_keys)
{
    char t1[100], t256[100], keys[512];
    posh_doc doc;
    thumb(cert_a, "SHA1", t1);
    thumb(cert_b, "SHA256", t256);
    snprintf(keys, sizeof(keys), "{\"kty\":\"EC\",\"x5t\":\"%s\"},{\"kty\":\"EC\",\"x5t#S256\":\"%s\"}", t1, t256);
    char *json = jwks(keys);
    parse_ok(json, &doc);
    cr_expect_eq(posh_descriptor_pick(&doc.descriptors[0], false), -1, "nothing usable without SHA-1");
    cr_expect_eq(posh_descriptor_pick(&doc.descriptors[0], true), POSH_HASH_SHA1);
    cr_expect_eq(match(&doc, cert_a, false), -1);
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_b, false), 1);
    posh_doc_clear(&doc);
    free(json);
}

/* ---- refusals that need no certificate: a table ---- */

/* SHA-256("abc") and SHA-1("abc") as x5t#S256 and x5t write them. */
#define S256 "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
#define S1 "qZk-NkcGgWq6PiVxeFDCbJzQ2J0"
#define OKKEY "\"kty\":\"EC\",\"x5t#S256\":\"" S256 "\""
/* A document of one key with these members. */
#define KEY(m) "{\"keys\":[{" m "}],\"expires\":60}"
/* A document of one good key then one with these members. */
#define KEY2(m) "{\"keys\":[{" OKKEY "},{" m "}],\"expires\":60}"

typedef struct refusal {
    const char *name;
    const char *json;
    posh_err err;
    const char *says; /* the message holds this */
} refusal;

static const refusal refusals[] = {
    /* private-key members, each: the whole document is refused, whatever the value */
    {"d", KEY(OKKEY ",\"d\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].d: a private-key member"},
    {"p", KEY(OKKEY ",\"p\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].p: a private-key member"},
    {"q", KEY(OKKEY ",\"q\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].q: a private-key member"},
    {"dp", KEY(OKKEY ",\"dp\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].dp: a private-key member"},
    {"dq", KEY(OKKEY ",\"dq\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].dq: a private-key member"},
    {"qi", KEY(OKKEY ",\"qi\":\"secret\""), POSH_ERR_DOCUMENT, "keys[0].qi: a private-key member"},
    {"oth", KEY(OKKEY ",\"oth\":[{\"r\":\"x\",\"d\":\"y\",\"t\":\"z\"}]"), POSH_ERR_DOCUMENT,
     "keys[0].oth: a private-key member"},
    {"k", KEY("\"kty\":\"oct\",\"k\":\"GawgguFyGrWKav7AX4VKUg\",\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].k: a private-key member"},
    {"d null", KEY(OKKEY ",\"d\":null"), POSH_ERR_DOCUMENT, "keys[0].d: a private-key member"},
    {"d empty", KEY(OKKEY ",\"d\":\"\""), POSH_ERR_DOCUMENT, "keys[0].d: a private-key member"},
    {"d as a number", KEY(OKKEY ",\"d\":1"), POSH_ERR_DOCUMENT, "keys[0].d: a private-key member"},
    {"d escaped in the name", KEY(OKKEY ",\"\\u0064\":\"secret\""), POSH_ERR_DOCUMENT,
     "keys[0].d: a private-key member"},
    {"d first, before any other check", KEY("\"d\":\"secret\",\"kty\":5"), POSH_ERR_DOCUMENT,
     "keys[0].d: a private-key member"},
    {"d in the second key", KEY2(OKKEY ",\"d\":\"secret\""), POSH_ERR_DOCUMENT, "keys[1].d: a private-key member"},
    {"qi in the second key", KEY2(OKKEY ",\"qi\":\"x\""), POSH_ERR_DOCUMENT, "keys[1].qi: a private-key member"},
    /* kty */
    {"kty missing", KEY("\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT, "keys[0].kty: missing or empty"},
    {"kty empty", KEY("\"kty\":\"\",\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT, "keys[0].kty: missing or empty"},
    {"kty number", KEY("\"kty\":1,\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].kty: expected a string, got int"},
    {"kty null", KEY("\"kty\":null,\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].kty: expected a string, got null"},
    {"kty array", KEY("\"kty\":[\"EC\"],\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].kty: expected a string, got array"},
    {"kty object", KEY("\"kty\":{},\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].kty: expected a string, got object"},
    {"kty true", KEY("\"kty\":true,\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[0].kty: expected a string, got boolean"},
    {"kty missing in the second key", KEY2("\"x5t#S256\":\"" S256 "\""), POSH_ERR_DOCUMENT,
     "keys[1].kty: missing or empty"},
    /* the other string members */
    {"kid number", KEY(OKKEY ",\"kid\":1"), POSH_ERR_DOCUMENT, "keys[0].kid: expected a string, got int"},
    {"use null", KEY(OKKEY ",\"use\":null"), POSH_ERR_DOCUMENT, "keys[0].use: expected a string, got null"},
    {"alg array", KEY(OKKEY ",\"alg\":[\"ES256\"]"), POSH_ERR_DOCUMENT, "keys[0].alg: expected a string, got array"},
    {"n number", KEY(OKKEY ",\"n\":12345"), POSH_ERR_DOCUMENT, "keys[0].n: expected a string, got int"},
    {"e number", KEY(OKKEY ",\"e\":65537"), POSH_ERR_DOCUMENT, "keys[0].e: expected a string, got int"},
    {"crv object", KEY(OKKEY ",\"crv\":{}"), POSH_ERR_DOCUMENT, "keys[0].crv: expected a string, got object"},
    {"x boolean", KEY(OKKEY ",\"x\":false"), POSH_ERR_DOCUMENT, "keys[0].x: expected a string, got boolean"},
    {"y double", KEY(OKKEY ",\"y\":1.5"), POSH_ERR_DOCUMENT, "keys[0].y: expected a string, got double"},
    {"x5u number", KEY(OKKEY ",\"x5u\":443"), POSH_ERR_DOCUMENT, "keys[0].x5u: expected a string, got int"},
    /* key_ops */
    {"key_ops string", KEY(OKKEY ",\"key_ops\":\"verify\""), POSH_ERR_DOCUMENT,
     "keys[0].key_ops: expected an array of strings"},
    {"key_ops of a number", KEY(OKKEY ",\"key_ops\":[1]"), POSH_ERR_DOCUMENT,
     "keys[0].key_ops: expected an array of strings"},
    {"key_ops with a null", KEY(OKKEY ",\"key_ops\":[\"verify\",null]"), POSH_ERR_DOCUMENT,
     "keys[0].key_ops: expected an array of strings"},
    {"key_ops of an array", KEY(OKKEY ",\"key_ops\":[[\"verify\"]]"), POSH_ERR_DOCUMENT,
     "keys[0].key_ops: expected an array of strings"},
    {"key_ops object", KEY(OKKEY ",\"key_ops\":{}"), POSH_ERR_DOCUMENT, "keys[0].key_ops: expected an array of strings"},
    {"key_ops null", KEY(OKKEY ",\"key_ops\":null"), POSH_ERR_DOCUMENT, "keys[0].key_ops: expected an array of strings"},
    /* x5t: unpadded base64url of exactly 20 bytes, unused bits zero */
    {"x5t padded", KEY("\"kty\":\"EC\",\"x5t\":\"" S1 "=\""), POSH_ERR_FINGERPRINT, "keys[0].x5t: not unpadded"},
    {"x5t standard alphabet", KEY("\"kty\":\"EC\",\"x5t\":\"qZk+NkcGgWq6PiVxeFDCbJzQ2J0\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t: not unpadded"},
    {"x5t standard alphabet, padded", KEY("\"kty\":\"EC\",\"x5t\":\"qZk+NkcGgWq6PiVxeFDCbJzQ2J0=\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t slash", KEY("\"kty\":\"EC\",\"x5t\":\"qZk_NkcGgWq6PiVxeFDCbJzQ2J/\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t one symbol short (19 bytes)", KEY("\"kty\":\"EC\",\"x5t\":\"qZk-NkcGgWq6PiVxeFDCbJzQ2J\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t lone last symbol", KEY("\"kty\":\"EC\",\"x5t\":\"qZk-NkcGgWq6PiVxeFDCbJzQ2\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t"},
    {"x5t one symbol long (21 bytes)", KEY("\"kty\":\"EC\",\"x5t\":\"" S1 "A\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t trailing bits set", KEY("\"kty\":\"EC\",\"x5t\":\"qZk-NkcGgWq6PiVxeFDCbJzQ2J1\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t"},
    {"x5t trailing bits set (high one)", KEY("\"kty\":\"EC\",\"x5t\":\"qZk-NkcGgWq6PiVxeFDCbJzQ2J2\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t holding a SHA-256", KEY("\"kty\":\"EC\",\"x5t\":\"" S256 "\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t empty", KEY("\"kty\":\"EC\",\"x5t\":\"\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t with a space", KEY("\"kty\":\"EC\",\"x5t\":\"qZk-NkcGgWq6PiVx eFDCbJzQ2J0\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t"},
    {"x5t with a newline", KEY("\"kty\":\"EC\",\"x5t\":\"" S1 "\\n\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    {"x5t hex", KEY("\"kty\":\"EC\",\"x5t\":\"a9993e364706816aba3e25717850c26c9cd0d89d\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t"},
    {"x5t number", KEY("\"kty\":\"EC\",\"x5t\":20"), POSH_ERR_FINGERPRINT, "keys[0].x5t: expected a string"},
    {"x5t null", KEY("\"kty\":\"EC\",\"x5t\":null"), POSH_ERR_FINGERPRINT, "keys[0].x5t: expected a string"},
    {"x5t array", KEY("\"kty\":\"EC\",\"x5t\":[\"" S1 "\"]"), POSH_ERR_FINGERPRINT, "keys[0].x5t: expected a string"},
    {"bad x5t beside a good x5t#S256", KEY(OKKEY ",\"x5t\":\"" S1 "=\""), POSH_ERR_FINGERPRINT, "keys[0].x5t"},
    /* x5t#S256 likewise, 32 bytes */
    {"x5t#S256 padded", KEY("\"kty\":\"EC\",\"x5t#S256\":\"" S256 "=\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t#S256: not unpadded"},
    {"x5t#S256 standard alphabet", KEY("\"kty\":\"EC\",\"x5t#S256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t#S256"},
    {"x5t#S256 as fingerprints write it",
     KEY("\"kty\":\"EC\",\"x5t#S256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t#S256"},
    {"x5t#S256 short (31 bytes)", KEY("\"kty\":\"EC\",\"x5t#S256\":\"ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t#S256"},
    {"x5t#S256 long (33 bytes)", KEY("\"kty\":\"EC\",\"x5t#S256\":\"" S256 "A\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t#S256"},
    {"x5t#S256 trailing bits set", KEY("\"kty\":\"EC\",\"x5t#S256\":\"ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa1\""),
     POSH_ERR_FINGERPRINT, "keys[0].x5t#S256"},
    {"x5t#S256 holding a SHA-1", KEY("\"kty\":\"EC\",\"x5t#S256\":\"" S1 "\""), POSH_ERR_FINGERPRINT,
     "keys[0].x5t#S256"},
    {"x5t#S256 number", KEY("\"kty\":\"EC\",\"x5t#S256\":256"), POSH_ERR_FINGERPRINT,
     "keys[0].x5t#S256: expected a string"},
    {"x5t#S256 over 128 characters",
     KEY("\"kty\":\"EC\",\"x5t#S256\":\"" S256 S256 S256 "\""), POSH_ERR_FINGERPRINT, "keys[0].x5t#S256"},
    {"x5t#S256 in the second key", KEY2("\"kty\":\"EC\",\"x5t#S256\":\"" S256 "=\""), POSH_ERR_FINGERPRINT,
     "keys[1].x5t#S256"},
    /* x5c that no certificate can be made of */
    {"x5c string", KEY("\"kty\":\"EC\",\"x5c\":\"MIIB\""), POSH_ERR_DOCUMENT, "keys[0].x5c: expected an array"},
    {"x5c object", KEY("\"kty\":\"EC\",\"x5c\":{}"), POSH_ERR_DOCUMENT, "keys[0].x5c: expected an array"},
    {"x5c null", KEY("\"kty\":\"EC\",\"x5c\":null"), POSH_ERR_DOCUMENT, "keys[0].x5c: expected an array"},
    {"x5c empty", KEY("\"kty\":\"EC\",\"x5c\":[]"), POSH_ERR_DOCUMENT, "keys[0].x5c: 0 certificates, expected 1 to 10"},
    {"x5c empty beside a good thumbprint", KEY(OKKEY ",\"x5c\":[]"), POSH_ERR_DOCUMENT, "keys[0].x5c: 0 certificates"},
    {"x5c entry a number", KEY("\"kty\":\"EC\",\"x5c\":[1]"), POSH_ERR_DOCUMENT, "keys[0].x5c[0]: expected a string"},
    {"x5c entry null", KEY("\"kty\":\"EC\",\"x5c\":[null]"), POSH_ERR_DOCUMENT, "keys[0].x5c[0]: expected a string"},
    {"x5c entry empty", KEY("\"kty\":\"EC\",\"x5c\":[\"\"]"), POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not a DER certificate"},
    {"x5c entry not base64", KEY("\"kty\":\"EC\",\"x5c\":[\"not base64!\"]"), POSH_ERR_DOCUMENT,
     "keys[0].x5c[0]: not standard base64"},
    {"x5c entry base64 of text", KEY("\"kty\":\"EC\",\"x5c\":[\"aGVsbG8gd29ybGQ=\"]"), POSH_ERR_DOCUMENT,
     "keys[0].x5c[0]: not a DER certificate"},
    {"x5c entry a PEM", KEY("\"kty\":\"EC\",\"x5c\":[\"-----BEGIN CERTIFICATE-----\"]"), POSH_ERR_DOCUMENT,
     "keys[0].x5c[0]: not standard base64"},
    /* a key must say which certificate it is about */
    {"kty only", KEY("\"kty\":\"EC\""), POSH_ERR_DOCUMENT, "keys[0]: none of x5t, x5t#S256 and x5c"},
    {"public parameters only", KEY("\"kty\":\"RSA\",\"n\":\"0vx7\",\"e\":\"AQAB\",\"x5u\":\"https://x/y\""),
     POSH_ERR_DOCUMENT, "keys[0]: none of"},
    {"thumbprints under other names", KEY("\"kty\":\"EC\",\"X5T\":\"" S1 "\",\"x5t#s256\":\"" S256 "\""),
     POSH_ERR_DOCUMENT, "keys[0]: none of"},
    {"none in the second key", KEY2("\"kty\":\"EC\""), POSH_ERR_DOCUMENT, "keys[1]: none of"},
    /* keys itself */
    {"keys empty", "{\"keys\":[],\"expires\":60}", POSH_ERR_DOCUMENT, "keys: 0 keys, expected 1 to 64"},
    {"keys object", "{\"keys\":{\"kty\":\"EC\"},\"expires\":60}", POSH_ERR_DOCUMENT, "keys: expected an array, got object"},
    {"keys string", "{\"keys\":\"x\",\"expires\":60}", POSH_ERR_DOCUMENT, "keys: expected an array, got string"},
    {"keys null", "{\"keys\":null,\"expires\":60}", POSH_ERR_DOCUMENT, "keys: expected an array, got null"},
    {"key a string", "{\"keys\":[\"" S256 "\"],\"expires\":60}", POSH_ERR_DOCUMENT, "keys[0]: expected an object, got string"},
    {"key null", "{\"keys\":[null],\"expires\":60}", POSH_ERR_DOCUMENT, "keys[0]: expected an object, got null"},
    {"key an array", "{\"keys\":[[]],\"expires\":60}", POSH_ERR_DOCUMENT, "keys[0]: expected an object, got array"},
    {"second key a number", "{\"keys\":[{" OKKEY "},2],\"expires\":60}", POSH_ERR_DOCUMENT,
     "keys[1]: expected an object, got int"},
    /* one form per document */
    {"keys and fingerprints",
     "{\"keys\":[{" OKKEY "}],\"fingerprints\":[{\"sha-256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\"}],"
     "\"expires\":60}",
     POSH_ERR_DOCUMENT, "more than one of fingerprints, keys and url"},
    {"keys and url", "{\"keys\":[{" OKKEY "}],\"url\":\"https://hosting.example.net/x.json\",\"expires\":60}",
     POSH_ERR_DOCUMENT, "more than one of fingerprints, keys and url"},
    {"keys, fingerprints and url",
     "{\"keys\":[{" OKKEY "}],\"fingerprints\":[],\"url\":\"https://h.example/\",\"expires\":60}", POSH_ERR_DOCUMENT,
     "more than one"},
    {"keys null and url", "{\"keys\":null,\"url\":\"https://hosting.example.net/x.json\",\"expires\":60}",
     POSH_ERR_DOCUMENT, "more than one"},
    {"empty fingerprints beside keys", "{\"fingerprints\":[],\"keys\":[{" OKKEY "}],\"expires\":60}", POSH_ERR_DOCUMENT,
     "more than one"},
    /* expires, as for fingerprints */
    {"expires missing", "{\"keys\":[{" OKKEY "}]}", POSH_ERR_EXPIRES, "expires: missing"},
    {"expires zero", "{\"keys\":[{" OKKEY "}],\"expires\":0}", POSH_ERR_EXPIRES, "expires"},
    {"expires negative", "{\"keys\":[{" OKKEY "}],\"expires\":-1}", POSH_ERR_EXPIRES, "expires"},
    {"expires string", "{\"keys\":[{" OKKEY "}],\"expires\":\"60\"}", POSH_ERR_EXPIRES, "expires"},
    {"expires fraction", "{\"keys\":[{" OKKEY "}],\"expires\":60.5}", POSH_ERR_EXPIRES, "expires"},
    /* strict JSON still */
    {"trailing comma in keys", "{\"keys\":[{" OKKEY "},],\"expires\":60}", POSH_ERR_JSON, "byte"},
    {"single quotes", "{'keys':[{" OKKEY "}],\"expires\":60}", POSH_ERR_JSON, "byte"},
    {"escaped NUL in a member name", KEY(OKKEY ",\"d\\u0000x\":\"secret\""), POSH_ERR_JSON, "byte"},
};

Test(jwk, refusals_table)
{
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        const refusal *c = &refusals[i];
        char msg[POSH_MSG_LEN];
        posh_doc doc;
        posh_err err = parse(c->json, &doc, msg);
        cr_expect_eq(err, c->err, "%s: error %d (%s), expected %d: %s", c->name, (int)err, posh_strerror(err),
                     (int)c->err, msg);
        cr_expect(strstr(msg, c->says) != NULL, "%s: message \"%s\" lacks \"%s\"", c->name, msg, c->says);
        if (err == POSH_OK)
            posh_doc_clear(&doc);
    }
}

/* The refusals' own controls: the same documents without the fault are valid. */
Test(jwk, refusals_controls)
{
    static const char *const ok[] = {
        KEY(OKKEY),
        KEY2(OKKEY),
        KEY("\"kty\":\"EC\",\"x5t\":\"" S1 "\""),
        KEY(OKKEY ",\"x5t\":\"" S1 "\""),
        KEY(OKKEY ",\"kid\":\"\",\"use\":\"sig\",\"alg\":\"ES256\",\"n\":\"\",\"e\":\"\",\"crv\":\"P-256\",\"x\":\"\","
                  "\"y\":\"\",\"x5u\":\"\",\"key_ops\":[\"verify\",\"sign\"]"),
        "{\"keys\":[{" OKKEY "}],\"expires\":9223372036854775807}",
        "{\"expires\":1,\"keys\":[{" OKKEY "}]}",
        " {\n  \"keys\" : [ { " OKKEY " } ] ,\n  \"expires\" : 60\n} \n",
        KEY("\"kty\":\"EC\",\"x5t\\u0023S256\":\"" S256 "\""), /* an escaped '#' is the same member name */
        "{\"keys\":[{" OKKEY "}],\"expires\":60,\"fingerprint\":[],\"urls\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char msg[POSH_MSG_LEN];
        posh_doc doc;
        cr_expect_eq(parse(ok[i], &doc, msg), POSH_OK, "%s: %s", ok[i], msg);
        cr_expect_eq(doc.format, POSH_FORMAT_JWK, "%s", ok[i]);
        posh_doc_clear(&doc);
    }
}

/* ---- refusals that need certificates ---- */

static void expect_refused(const char *json, posh_err want, const char *says, const char *what)
{
    char msg[POSH_MSG_LEN];
    posh_doc doc;
    posh_err err = parse(json, &doc, msg);
    cr_expect_eq(err, want, "%s: error %d (%s), expected %d: %s", what, (int)err, posh_strerror(err), (int)want, msg);
    cr_expect(strstr(msg, says) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, says);
    if (err == POSH_OK)
        posh_doc_clear(&doc);
}

/* A one-key document whose x5c holds these entries (JSON strings, already quoted or not). Caller frees. */
static char *x5c_doc(const char *members, const char *const *entries, size_t n, int quote)
{
    fx_sb b = {0};
    fx_sb_addf(&b, "{\"keys\":[{\"kty\":\"EC\"%s%s,\"x5c\":[", members[0] ? "," : "", members);
    for (size_t i = 0; i < n; i++)
        fx_sb_addf(&b, "%s%s%s%s", i ? "," : "", quote ? "\"" : "", entries[i], quote ? "\"" : "");
    fx_sb_addf(&b, "]}],\"expires\":60}");
    return b.s;
}

Test(jwk, x5c_disagreeing_with_thumbprints)
{
    char t1[100], t256[100], m[256];
    char *xa = x5c_of(cert_a), *xb = x5c_of(cert_b), *json;
    const char *entries[2] = {xa, xb};

    thumb(cert_b, "SHA1", t1);
    snprintf(m, sizeof(m), "\"x5t\":\"%s\"", t1);
    json = x5c_doc(m, entries, 1, 1);
    expect_refused(json, POSH_ERR_FINGERPRINT, "keys[0].x5t: not the thumbprint of keys[0].x5c[0]", "x5t of another");
    free(json);

    thumb(cert_b, "SHA256", t256);
    snprintf(m, sizeof(m), "\"x5t#S256\":\"%s\"", t256);
    json = x5c_doc(m, entries, 1, 1);
    expect_refused(json, POSH_ERR_FINGERPRINT, "keys[0].x5t#S256: not the thumbprint of keys[0].x5c[0]",
                   "x5t#S256 of another");
    free(json);

    /* The thumbprints of x5c[1], not x5c[0]: the key is about x5c[0] only. */
    json = x5c_doc(m, entries, 2, 1);
    expect_refused(json, POSH_ERR_FINGERPRINT, "keys[0].x5t#S256: not the thumbprint of keys[0].x5c[0]",
                   "x5t#S256 of x5c[1]");
    free(json);

    /* One thumbprint right, the other wrong: still two things said. */
    thumb(cert_a, "SHA256", t256);
    snprintf(m, sizeof(m), "\"x5t#S256\":\"%s\",\"x5t\":\"%s\"", t256, t1);
    json = x5c_doc(m, entries, 1, 1);
    expect_refused(json, POSH_ERR_FINGERPRINT, "keys[0].x5t: not the thumbprint", "right S256, wrong x5t");
    free(json);

    /* A certificate with the same key (same SPKI) is still another certificate. */
    char *xa2 = x5c_of(cert_a2);
    const char *same_key[1] = {xa2};
    snprintf(m, sizeof(m), "\"x5t#S256\":\"%s\"", t256);
    json = x5c_doc(m, same_key, 1, 1);
    expect_refused(json, POSH_ERR_FINGERPRINT, "keys[0].x5t#S256: not the thumbprint", "same key, other cert");
    free(json);

    /* Controls: both right is valid. */
    thumb(cert_a, "SHA1", t1);
    snprintf(m, sizeof(m), "\"x5t#S256\":\"%s\",\"x5t\":\"%s\"", t256, t1);
    json = x5c_doc(m, entries, 2, 1);
    expect_refused(json, POSH_OK, "", "both right");
    free(json);
    free(xa2);
    free(xa);
    free(xb);
}

Test(jwk, x5c_entries_must_be_whole_certificates)
{
    size_t len;
    const unsigned char *der = ts_cert_der(cert_a, &len);
    unsigned char *buf = malloc(len + 2);
    char *xa = x5c_of(cert_a), *bad, *json;
    const char *entries[2];
    cr_assert_not_null(buf);

    /* One byte after the DER. */
    memcpy(buf, der, len);
    buf[len] = 0;
    bad = b64(buf, len + 1);
    entries[0] = bad;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not a DER certificate", "a NUL after the DER");
    free(json);
    free(bad);

    /* A second certificate after the first, in one entry. */
    unsigned char *two = malloc(2 * len);
    cr_assert_not_null(two);
    memcpy(two, der, len);
    memcpy(two + len, der, len);
    bad = b64(two, 2 * len);
    entries[0] = bad;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not a DER certificate", "two certificates in one entry");
    free(json);
    free(bad);
    free(two);

    /* One byte short. */
    bad = b64(der, len - 1);
    entries[0] = bad;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not a DER certificate", "truncated DER");
    free(json);
    free(bad);

    /* A public key, not a certificate. */
    unsigned char *spki = NULL;
    int n = i2d_PUBKEY(ts_cert_key(cert_a), &spki);
    cr_assert_gt(n, 0);
    bad = b64(spki, (size_t)n);
    OPENSSL_free(spki);
    entries[0] = bad;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not a DER certificate", "a SubjectPublicKeyInfo");
    free(json);
    free(bad);

    /* The base64url spelling of the certificate (as the prooftype-02 example had it). */
    bad = strdup(xa);
    cr_assert_not_null(bad);
    int changed = 0;
    for (char *p = bad; *p; p++) {
        if (*p == '+' || *p == '/') {
            *p = *p == '+' ? '-' : '_';
            changed = 1;
        }
    }
    if (changed) {
        entries[0] = bad;
        json = x5c_doc("", entries, 1, 1);
        expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not standard base64", "base64url x5c");
        free(json);
    }
    free(bad);

    /* PEM-style line breaks inside the base64. */
    fx_sb b = {0};
    for (size_t i = 0; xa[i]; i++)
        fx_sb_addf(&b, "%c%s", xa[i], i % 64 == 63 ? "\\n" : "");
    entries[0] = b.s;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not standard base64", "line breaks");
    free(json);
    free(b.s);

    /* Every entry is checked, not only the first. */
    entries[0] = xa;
    entries[1] = "aGVsbG8gd29ybGQ=";
    json = x5c_doc("", entries, 2, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[1]: not a DER certificate", "x5c[1] not a certificate");
    free(json);
    {
        char *q = NULL;
        cr_assert_geq(asprintf(&q, "\"%s\"", xa), 0);
        const char *mixed[2] = {q, "null"};
        json = x5c_doc("", mixed, 2, 0);
        expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[1]: expected a string", "x5c[1] null");
        free(json);
        free(q);
    }
    free(buf);
    free(xa);
}

Test(jwk, x5c_count_10_and_11)
{
    char *xa = x5c_of(cert_a), *xb = x5c_of(cert_b), *json;
    const char *entries[11];
    posh_doc doc;
    entries[0] = xa;
    for (size_t i = 1; i < 11; i++)
        entries[i] = xb;
    json = x5c_doc("", entries, 10, 1);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, cert_a, true), 0);
    cr_expect_eq(match(&doc, cert_b, true), -1, "only x5c[0] is vouched for");
    posh_doc_clear(&doc);
    free(json);
    json = x5c_doc("", entries, 11, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c: 11 certificates, expected 1 to 10", "11 certificates");
    free(json);
    free(xa);
    free(xb);
}

/*
 * A certificate of exactly want bytes of DER: Ed25519 (fixed-size signatures) with a private extension whose
 * filler is adjusted until the size is right. Caller frees (OPENSSL_free).
 */
static unsigned char *sized_cert(size_t want, size_t *len)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.4.1.55555.1", 1);
    long filler = (long)want - 400;
    unsigned char *der = NULL;
    cr_assert(key != NULL && oid != NULL);
    for (int tries = 0; tries < 20; tries++) {
        X509 *x = X509_new();
        X509_NAME *name = X509_NAME_new();
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        unsigned char *fill = calloc(1, (size_t)filler);
        int n;
        cr_assert(x && name && os && fill && filler > 0);
        memset(fill, 'x', (size_t)filler);
        cr_assert(ASN1_OCTET_STRING_set(os, fill, (int)filler));
        cr_assert(X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
        cr_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"big.example.net", -1,
                                             -1, 0));
        cr_assert(X509_set_subject_name(x, name) && X509_set_issuer_name(x, name));
        cr_assert(X509_gmtime_adj(X509_getm_notBefore(x), 0) && X509_gmtime_adj(X509_getm_notAfter(x), 3600));
        cr_assert(X509_set_pubkey(x, key));
        X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, os);
        cr_assert(ext && X509_add_ext(x, ext, -1));
        cr_assert_gt(X509_sign(x, key, NULL), 0);
        X509_EXTENSION_free(ext);
        n = i2d_X509(x, &der);
        cr_assert_gt(n, 0);
        X509_free(x);
        X509_NAME_free(name);
        ASN1_OCTET_STRING_free(os);
        free(fill);
        if ((size_t)n == want) {
            *len = (size_t)n;
            ASN1_OBJECT_free(oid);
            EVP_PKEY_free(key);
            return der;
        }
        filler += (long)want - n;
        OPENSSL_free(der);
        der = NULL;
    }
    cr_assert_fail("could not make a certificate of %zu bytes", want);
    return NULL;
}

Test(jwk, x5c_entry_16384_and_16385_bytes)
{
    size_t len16k, len_over;
    unsigned char *big = sized_cert(16384, &len16k), *over = sized_cert(16385, &len_over);
    char *x = b64(big, len16k), *xo = b64(over, len_over), *json;
    const char *entries[2];
    posh_doc doc;

    cr_assert_eq(len16k, 16384);
    entries[0] = x;
    json = x5c_doc("", entries, 1, 1);
    parse_ok(json, &doc);
    cr_expect_eq(match_der(&doc, big, len16k, true), 0, "a 16384-byte certificate is vouched for");
    posh_doc_clear(&doc);
    free(json);

    cr_assert_eq(len_over, 16385);
    entries[0] = xo;
    json = x5c_doc("", entries, 1, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[0]: not standard base64 of at most 16384 bytes",
                   "16385 bytes");
    free(json);

    /* The limit holds for every entry, not only the first. */
    char *xa = x5c_of(cert_a);
    entries[0] = xa;
    entries[1] = xo;
    json = x5c_doc("", entries, 2, 1);
    expect_refused(json, POSH_ERR_DOCUMENT, "keys[0].x5c[1]: not standard base64 of at most 16384", "x5c[1] 16385");
    free(json);
    entries[1] = x;
    json = x5c_doc("", entries, 2, 1);
    parse_ok(json, &doc);
    cr_expect_eq(match(&doc, cert_a, true), 0);
    posh_doc_clear(&doc);
    free(json);
    free(xa);
    free(x);
    free(xo);
    OPENSSL_free(big);
    OPENSSL_free(over);
}

Test(jwk, keys_64_and_65)
{
    char t[100];
    fx_sb b = {0};
    posh_doc doc;
    thumb(cert_a, "SHA256", t);
    fx_sb_addf(&b, "{\"keys\":[");
    for (int i = 0; i < 63; i++)
        fx_sb_addf(&b, "{" OKKEY ",\"kid\":\"%d\"},", i);
    fx_sb_addf(&b, "{\"kty\":\"EC\",\"x5t#S256\":\"%s\"}", t); /* the 64th vouches */
    fx_sb_addf(&b, "],\"expires\":60}");
    parse_ok(b.s, &doc);
    cr_expect_eq(doc.n_descriptors, 64);
    cr_expect_eq(match(&doc, cert_a, true), 63);
    posh_doc_clear(&doc);
    /* One more key: refused whole. */
    b.len -= strlen("],\"expires\":60}");
    fx_sb_addf(&b, ",{" OKKEY "}],\"expires\":60}");
    expect_refused(b.s, POSH_ERR_DOCUMENT, "keys: 65 keys, expected 1 to 64", "65 keys");
    free(b.s);
}

/* A private member in any key, even one after a key that vouches, refuses the whole document. */
Test(jwk, private_member_anywhere_refuses_all)
{
    static const char *const members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    char t[100];
    thumb(cert_a, "SHA256", t);
    for (size_t m = 0; m < sizeof(members) / sizeof(members[0]); m++) {
        for (int at = 0; at < 3; at++) {
            fx_sb b = {0};
            char says[64];
            fx_sb_addf(&b, "{\"keys\":[");
            for (int i = 0; i < 3; i++)
                fx_sb_addf(&b, "%s{\"kty\":\"EC\",\"x5t#S256\":\"%s\"%s%s%s}", i ? "," : "", t,
                           i == at ? ",\"" : "", i == at ? members[m] : "", i == at ? "\":\"AQAB\"" : "");
            fx_sb_addf(&b, "],\"expires\":60}");
            snprintf(says, sizeof(says), "keys[%d].%s: a private-key member", at, members[m]);
            expect_refused(b.s, POSH_ERR_DOCUMENT, says, members[m]);
            free(b.s);
        }
    }
}

/* ---- POSH_FORMATS at the parser ---- */

Test(jwk, formats_mask)
{
    char msg[POSH_MSG_LEN];
    posh_doc doc;
    static const char fps[] =
        "{\"fingerprints\":[{\"sha-256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\"}],\"expires\":60}";
    static const char jwk[] = KEY(OKKEY);

    cr_expect_eq(parse_f(jwk, POSH_FORMAT_FINGERPRINTS, &doc, msg), POSH_ERR_DOCUMENT);
    cr_expect(strstr(msg, "JWK Set (keys), a form this client does not accept (POSH_FORMATS)") != NULL, "%s", msg);
    cr_expect_eq(parse_f(fps, POSH_FORMAT_JWK, &doc, msg), POSH_ERR_DOCUMENT);
    cr_expect(strstr(msg, "fingerprints document, a form this client does not accept (POSH_FORMATS)") != NULL, "%s",
              msg);

    cr_expect_eq(parse_f(jwk, POSH_FORMAT_JWK, &doc, msg), POSH_OK, "%s", msg);
    cr_expect_eq(doc.format, POSH_FORMAT_JWK);
    posh_doc_clear(&doc);
    cr_expect_eq(parse_f(fps, POSH_FORMAT_FINGERPRINTS, &doc, msg), POSH_OK, "%s", msg);
    cr_expect_eq(doc.format, POSH_FORMAT_FINGERPRINTS);
    posh_doc_clear(&doc);
    cr_expect_eq(parse_f(jwk, POSH_FORMAT_ALL, &doc, msg), POSH_OK);
    posh_doc_clear(&doc);
    cr_expect_eq(parse_f(fps, POSH_FORMAT_ALL, &doc, msg), POSH_OK);
    posh_doc_clear(&doc);
    /* posh_doc_parse accepts both. */
    cr_expect_eq(posh_doc_parse(jwk, strlen(jwk), &doc, msg, sizeof(msg)), POSH_OK);
    posh_doc_clear(&doc);

    /* The form is judged before anything inside it: a refused form with a bad expires is still the form's error. */
    cr_expect_eq(parse_f("{\"keys\":[{" OKKEY "}],\"expires\":0}", POSH_FORMAT_FINGERPRINTS, &doc, msg),
                 POSH_ERR_DOCUMENT, "%s", msg);
    cr_expect_eq(parse_f("{\"keys\":[{\"d\":\"x\"}],\"expires\":60}", POSH_FORMAT_FINGERPRINTS, &doc, msg),
                 POSH_ERR_DOCUMENT);
    cr_expect(strstr(msg, "POSH_FORMATS") != NULL, "%s", msg);
    /* No form accepted: neither is. */
    cr_expect_eq(parse_f(jwk, 0, &doc, msg), POSH_ERR_DOCUMENT);
    cr_expect_eq(parse_f(fps, 0, &doc, msg), POSH_ERR_DOCUMENT);
}

/* ---- the result's view of a JWK Set: what posh lookup prints ---- */

Test(jwk, result_descriptors_normalised)
{
    char t1[100], want[100];
    posh_doc doc;
    char *xa = x5c_of(cert_a), *key = NULL, buf[96];
    unsigned char d256[32];
    size_t n = 0, len;
    const unsigned char *der = ts_cert_der(cert_a, &len);
    thumb(cert_b, "SHA1", t1);
    cr_assert_geq(asprintf(&key, "{\"kty\":\"EC\",\"x5c\":[\"%s\"]},{\"kty\":\"EC\",\"x5t\":\"%s\"}", xa, t1), 0);
    char *json = jwks(key);
    parse_ok(json, &doc);
    posh_result *r = posh_result_from_doc("foo.example.com", "_xmpp-server._tcp", &doc, 0, 86400);
    cr_assert_not_null(r);
    cr_expect_eq(posh_result_format(r), POSH_FORMAT_JWK);
    cr_expect_eq(posh_result_descriptor_count(r), 2);
    cr_assert_eq(EVP_Q_digest(NULL, "SHA256", NULL, der, len, d256, &n), 1);
    char *std = b64(d256, n);
    snprintf(want, sizeof(want), "%s", std);
    free(std);
    cr_expect(posh_result_descriptor_hash(r, 0, "sha-256", buf, sizeof(buf)));
    cr_expect_str_eq(buf, want, "x5c[0] shows as the standard base64 of its SHA-256");
    cr_expect(!posh_result_descriptor_hash(r, 0, "sha-1", buf, sizeof(buf)), "x5c gives no SHA-1");
    cr_expect(posh_result_descriptor_hash(r, 1, "sha-1", buf, sizeof(buf)));
    cr_expect(!posh_result_descriptor_hash(r, 1, "sha-256", buf, sizeof(buf)));
    posh_result_free(r);
    posh_doc_clear(&doc);
    free(json);
    free(key);
    free(xa);
}

/* ======================================================================================================= */
/* Against nginx: lookups, POSH_FORMATS through the client, and a handshake a JWK Set vouches for.          */

static fx f;

static void fx_setup(void)
{
    fx_init(&f);
}

static void fx_teardown(void)
{
    fx_fini(&f);
}

TestSuite(jwk_lookup, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

/* A JWK Set with one key per certificate: "s256" (x5t#S256), "sha1" (x5t) or "x5c". Caller frees. */
static char *jwk_doc(ts_cert *const *certs, size_t n, const char *how, long expires)
{
    fx_sb b = {0};
    fx_sb_addf(&b, "{\"keys\":[");
    for (size_t i = 0; i < n; i++) {
        char t[100];
        if (strcmp(how, "x5c") == 0) {
            char *x = x5c_of(certs[i]);
            fx_sb_addf(&b, "%s{\"kty\":\"EC\",\"x5c\":[\"%s\"]}", i ? "," : "", x);
            free(x);
        } else {
            thumb(certs[i], strcmp(how, "sha1") == 0 ? "SHA1" : "SHA256", t);
            fx_sb_addf(&b, "%s{\"kty\":\"EC\",\"%s\":\"%s\"}", i ? "," : "",
                       strcmp(how, "sha1") == 0 ? "x5t" : "x5t#S256", t);
        }
    }
    fx_sb_addf(&b, "],\"expires\":%ld}", expires);
    return b.s;
}

static int vouches(posh_client *c, posh_result *r, ts_cert *cert)
{
    size_t len;
    const unsigned char *der = ts_cert_der(cert, &len);
    int m = -1, index = -2;
    cr_assert_eq(posh_match_der(c, r, der, len, &m, &index), POSH_OK);
    return m;
}

static posh_client *client_with(unsigned formats, int no_sha1)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_formats(cfg, formats), POSH_OK, "%s", posh_config_error(cfg));
    cr_assert_eq(posh_config_set_no_sha1(cfg, no_sha1), POSH_OK);
    return fx_client_of(cfg);
}

Test(jwk_lookup, reads_a_jwk_set)
{
    ts_cert *certs[2] = {f.other, f.svc};
    posh_result *r = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 2, "x5c", 900));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_format(r), POSH_FORMAT_JWK);
    cr_expect_eq(posh_result_descriptor_count(r), 2);
    cr_expect_eq(posh_result_ttl(r), 900, "expires as for fingerprints");
    cr_expect(vouches(c, r, f.svc));
    cr_expect(vouches(c, r, f.other));
    cr_expect(!vouches(c, r, f.web_foo));
    posh_result_free(r);

    /* The same client reading a fingerprints document says so. */
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_doc1(f.svc, 900));
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_format(r), POSH_FORMAT_FINGERPRINTS);
    posh_result_free(r);

    /* A failure has no form. */
    cr_assert_eq(posh_lookup(c, FOO, "imap", &r), POSH_ERR_NO_POSH);
    cr_expect_eq(posh_result_format(r), 0);
    posh_result_free(r);
    cr_expect_eq(posh_result_format(NULL), 0);
    posh_client_free(c);
}

Test(jwk_lookup, draft02_url_and_reference_to_a_jwk_set)
{
    ts_cert *certs[1] = {f.svc};
    posh_result *r = NULL;
    fx_put_free(&f, FOO, DRAFT02_PATH, fx_ref("https://hosting.example.net/posh/foo.json", 300));
    fx_put_free(&f, HOSTING, "/posh/foo.json", jwk_doc(certs, 1, "s256", 7200));
    fx_start(&f);
    posh_client *c = client_with(POSH_FORMAT_JWK, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_followed_reference(r), 1);
    cr_expect_eq(posh_result_format(r), POSH_FORMAT_JWK, "the form of the target");
    cr_expect_eq(posh_result_ttl(r), 300, "the lower expires wins");
    cr_expect(vouches(c, r, f.svc));
    posh_result_free(r);
    posh_client_free(c);

    /* A client that refuses JWK Sets refuses the target (a reference itself is always read). */
    c = client_with(POSH_FORMAT_FINGERPRINTS, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT);
    cr_expect(strstr(posh_result_message(r), "POSH_FORMATS") != NULL, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "https://hosting.example.net/posh/foo.json") != NULL, "%s",
              posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);
}

Test(jwk_lookup, formats_refuse_a_form)
{
    ts_cert *certs[1] = {f.svc};
    posh_result *r = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 1, "x5c", 600));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_doc1(f.svc, 600));
    fx_start(&f);

    posh_client *c = client_with(POSH_FORMAT_FINGERPRINTS, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT);
    cr_expect(strstr(posh_result_message(r), "JWK Set (keys), a form this client does not accept") != NULL, "%s",
              posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "https://foo.example.com/.well-known/posh/xmpp-server.json") != NULL, "%s",
              posh_result_message(r));
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 0, "a refused document is an answer, not a 404");
    posh_result_free(r);
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_OK);
    posh_result_free(r);
    posh_client_free(c);

    c = client_with(POSH_FORMAT_JWK, 0);
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_ERR_DOCUMENT);
    cr_expect(strstr(posh_result_message(r), "fingerprints document, a form this client does not accept") != NULL,
              "%s", posh_result_message(r));
    posh_result_free(r);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect(vouches(c, r, f.svc));
    posh_result_free(r);
    posh_client_free(c);

    posh_config *cfg = posh_config_new();
    /* Out of range, as for posh_config_set_layouts(). */
    cr_expect_eq(posh_config_set_formats(cfg, 0), POSH_ERR_INVALID_ARGUMENT, "an empty set of forms");
    cr_expect_eq(posh_config_set_formats(cfg, 4), POSH_ERR_INVALID_ARGUMENT, "an unknown form");
    cr_expect_eq(posh_config_set_formats(cfg, POSH_FORMAT_ALL | 8), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_config_set_formats(NULL, POSH_FORMAT_ALL), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_config_set_formats(cfg, POSH_FORMAT_ALL), POSH_OK);
    posh_config_free(cfg);
}

Test(jwk_lookup, no_sha1_client_and_x5t_only_keys)
{
    ts_cert *certs[1] = {f.svc};
    posh_result *r = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 1, "sha1", 600));
    fx_start(&f);
    posh_client *c = client_with(POSH_FORMAT_ALL, 1);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "a valid document that vouches for nothing");
    cr_expect(!vouches(c, r, f.svc), "POSH_NO_SHA1: x5t-only keys match nothing");
    posh_result_free(r);
    posh_client_free(c);
    c = client_with(POSH_FORMAT_ALL, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect(vouches(c, r, f.svc));
    posh_result_free(r);
    posh_client_free(c);
}

/* A JWK Set with a private key in it fails the lookup, whatever else it says. */
Test(jwk_lookup, private_key_document_fails_the_lookup)
{
    char t[100], *doc = NULL;
    posh_result *r = NULL;
    thumb(f.svc, "SHA256", t);
    cr_assert_geq(asprintf(&doc, "{\"keys\":[{\"kty\":\"EC\",\"x5t#S256\":\"%s\",\"d\":\"c2VjcmV0\"}],\"expires\":600}",
                           t),
                  0);
    fx_put_free(&f, FOO, RFC7711_PATH, doc);
    fx_start(&f);
    posh_client *c = fx_client(&f);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT);
    cr_expect(strstr(posh_result_message(r), "keys[0].d: a private-key member") != NULL, "%s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);
}

/* ---- a handshake ---- */

Test(jwk_lookup, handshake_vouched_by_a_jwk_set)
{
    ts_cert *certs[1] = {f.svc};
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 1, "x5c", 600));
    fx_start(&f);
    posh_client *c = fx_client(&f);
    ts_tls *server = ts_tls_start(ts_cert_x509(f.svc), NULL, ts_cert_key(f.svc));
    cr_assert_not_null(server);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, c, "xmpp-server");

    for (int round = 0; round < 2; round++) {
        hs h = hs_handshake(ctx, ts_tls_port(server), FOO, FOO, NULL);
        if (round == 0) {
            cr_expect(h.connected, "%s", h.msg);
            cr_expect_eq(h.verify_result, X509_V_OK);
            cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
            cr_expect(strstr(h.msg, "descriptor 0") != NULL, "%s", h.msg);
        } else {
            cr_expect(!h.connected, "a JWK Set naming another certificate: rejected");
            cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
            cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s", h.msg);
        }
        /* Second round: the document names another certificate. */
        certs[0] = f.other;
        fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(certs, 1, "x5c", 600));
        posh_client_flush(c);
    }
    SSL_CTX_free(ctx);
    ts_tls_stop(server);
    posh_client_free(c);
}

/* ---- the persistent cache: a stored JWK Set is read back under the reading client's own rules ---- */

static posh_client *store_client(const char *dir, unsigned formats, int no_sha1)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_cache_dir(cfg, dir), POSH_OK, "%s", posh_config_error(cfg));
    cr_assert_eq(posh_config_set_formats(cfg, formats), POSH_OK);
    cr_assert_eq(posh_config_set_no_sha1(cfg, no_sha1), POSH_OK);
    return fx_client_of(cfg);
}

Test(jwk_lookup, persistent_cache_keeps_the_rules)
{
    char dir[600];
    ts_cert *svc[1] = {f.svc};
    posh_result *r = NULL;
    snprintf(dir, sizeof(dir), "%s/cache", f.dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(svc, 1, "x5c", 3600));
    fx_put_free(&f, HOSTING, RFC7711_PATH, jwk_doc(svc, 1, "sha1", 3600));
    fx_start(&f);

    /* A first "process" fetches and stores both. */
    posh_client *c = store_client(dir, POSH_FORMAT_ALL, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect(vouches(c, r, f.svc));
    posh_result_free(r);
    posh_client_free(c);
    cr_assert_eq(fx_requests(&f, NULL, NULL), 2);

    /* A second one reads them from the directory: a JWK Set still, and still vouching. */
    c = store_client(dir, POSH_FORMAT_ALL, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_format(r), POSH_FORMAT_JWK);
    cr_expect(vouches(c, r, f.svc));
    cr_expect(!vouches(c, r, f.other));
    posh_result_free(r);
    posh_client_free(c);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 2, "read from the persistent cache");

    /* One with SHA-1 off: the stored x5t-only key vouches for nothing. */
    c = store_client(dir, POSH_FORMAT_ALL, 1);
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect(!vouches(c, r, f.svc), "POSH_NO_SHA1 holds for a stored document too");
    posh_result_free(r);
    posh_client_free(c);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 2);

    /* One that refuses JWK Sets does not take the stored one: it fetches, and refuses what it gets. */
    c = store_client(dir, POSH_FORMAT_FINGERPRINTS, 0);
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "POSH_FORMATS") != NULL, "%s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "the stored JWK Set was not used");
}

/* ---- POSH_FORMATS ---- */

TestSuite(jwk_env, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

Test(jwk_env, posh_formats_values)
{
    static const struct {
        const char *value;
        posh_err err;
        unsigned formats;
    } cases[] = {
        {"fingerprints", POSH_OK, POSH_FORMAT_FINGERPRINTS},
        {"jwk", POSH_OK, POSH_FORMAT_JWK},
        {"fingerprints,jwk", POSH_OK, POSH_FORMAT_ALL},
        {"jwk,fingerprints", POSH_OK, POSH_FORMAT_ALL},
        {"jwk,jwk", POSH_OK, POSH_FORMAT_JWK},
        {"", POSH_ERR_CONFIG, 0},
        {"JWK", POSH_ERR_CONFIG, 0},
        {"fingerprint", POSH_ERR_CONFIG, 0},
        {"jwk,", POSH_ERR_CONFIG, 0},
        {",jwk", POSH_ERR_CONFIG, 0},
        {"fingerprints, jwk", POSH_ERR_CONFIG, 0},
        {"fingerprints;jwk", POSH_ERR_CONFIG, 0},
        {"x5t", POSH_ERR_CONFIG, 0},
    };
    unsetenv("POSH_FORMATS");
    posh_config *cfg = posh_config_new();
    cr_assert_not_null(cfg);
    cr_expect_eq(cfg->formats, POSH_FORMAT_ALL, "both forms by default");
    cr_expect_eq(posh_config_load_env(cfg), POSH_OK);
    cr_expect_eq(cfg->formats, POSH_FORMAT_ALL, "unset: unchanged");
    posh_config_free(cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_not_null(cfg = posh_config_new());
        cr_assert_eq(posh_config_set_formats(cfg, POSH_FORMAT_FINGERPRINTS), POSH_OK);
        setenv("POSH_FORMATS", cases[i].value, 1);
        posh_err err = posh_config_load_env(cfg);
        cr_expect_eq(err, cases[i].err, "POSH_FORMATS=\"%s\": %d", cases[i].value, (int)err);
        if (cases[i].err == POSH_OK) {
            cr_expect_eq(cfg->formats, cases[i].formats, "POSH_FORMATS=\"%s\"", cases[i].value);
        } else {
            cr_expect_eq(cfg->formats, POSH_FORMAT_FINGERPRINTS, "an invalid value leaves the configuration as it was");
            cr_expect(strstr(posh_config_error(cfg), "POSH_FORMATS") != NULL, "%s", posh_config_error(cfg));
        }
        posh_config_free(cfg);
    }
    unsetenv("POSH_FORMATS");
}


/* The operator's switch, end to end: a client configured from the environment refuses the old form. */
Test(jwk_env, posh_formats_refuses_jwk_sets)
{
    ts_cert *svc[1] = {f.svc};
    posh_result *r = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, jwk_doc(svc, 1, "s256", 600));
    fx_start(&f);
    setenv("POSH_FORMATS", "fingerprints", 1);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_load_env(cfg), POSH_OK, "%s", posh_config_error(cfg));
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c);
    cr_expect_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT, "%s", posh_result_message(r));
    posh_result_free(r);
    posh_client_free(c);
    unsetenv("POSH_FORMATS");
}

/*
 * A private key in a member json-c drops: with "keys" twice, json-c keeps the last and the first (holding "d") is
 * never looked at, yet the document as published does hold a private key, and a parser that keeps the first
 * duplicate (RFC 8259 4 leaves it open) would read exactly that key. The rule is that such a document is refused
 * whole, never partly used: every document with a member name given twice in one object is refused as JSON
 * (doc.c, unique_member_names), whatever the duplicated member holds.
 */
Test(jwk, private_member_in_a_dropped_duplicate)
{
    static const char *const docs[] = {
        "{\"keys\":[{" OKKEY ",\"d\":\"c2VjcmV0\"}],\"keys\":[{" OKKEY "}],\"expires\":60}",
        "{\"keys\":[{" OKKEY "}],\"expires\":60,\"keys\":[{" OKKEY "}],\"keys\":[{" OKKEY "}]}" /* no d, still twice */,
        "{\"keys\":[{" OKKEY ",\"kid\":{\"d\":\"nested\"},\"kid\":\"1\"}],\"expires\":60}" /* kid twice */,
        "{\"keys\":[{" OKKEY ",\"k\":\"c2VjcmV0\",\"kty\":\"EC\"}],\"expires\":60}",
        "{\"keys\":[{" OKKEY ",\"oth\":[],\"d\":\"x\"}],\"keys\":[{" OKKEY "}],\"expires\":60}",
    };
    static const posh_err want[] = {POSH_ERR_JSON, POSH_ERR_JSON, POSH_ERR_JSON, POSH_ERR_JSON, POSH_ERR_JSON};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char msg[POSH_MSG_LEN];
        posh_doc doc;
        posh_err err = parse(docs[i], &doc, msg);
        cr_expect_eq(err, want[i], "%s: error %d (%s), expected %d: %s", docs[i], (int)err, posh_strerror(err),
                     (int)want[i], msg);
        if (err == POSH_OK)
            posh_doc_clear(&doc);
    }
}
