/*
 * test_match.c - hash names, the per-descriptor choice of hash, and matching a real certificate (EC P-256,
 * self-signed, made at test time) against descriptors, down to a document parsed from JSON.
 */
#include "client_internal.h"
#include "posh_internal.h"
#include "support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* ---- hash names ---- */

typedef struct hash_name_case {
    const char *name;
    size_t len; /* 0: strlen(name) */
    int hash;
} hash_name_case;

Test(hash_names, table)
{
    static const hash_name_case cases[] = {
        {"sha-1", 0, POSH_HASH_SHA1},     {"sha-224", 0, POSH_HASH_SHA224}, {"sha-256", 0, POSH_HASH_SHA256},
        {"sha-384", 0, POSH_HASH_SHA384}, {"sha-512", 0, POSH_HASH_SHA512}, {"SHA-256", 0, -1},
        {"Sha-256", 0, -1},               {"sha256", 0, -1},                {"sha-256 ", 0, -1},
        {" sha-256", 0, -1},              {"sha-2", 0, -1},                 {"sha-2567", 0, -1},
        {"sha-3-256", 0, -1},             {"md5", 0, -1},                   {"", 0, -1},
        {"sha-256\0", 8, -1},             {"sha-1\0x", 7, -1},              {"sha-2560", 7, POSH_HASH_SHA256},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].name);
        cr_expect_eq(posh_hash_from_name(cases[i].name, len), cases[i].hash, "\"%s\" (%zu)", cases[i].name, len);
    }
    cr_expect_eq(posh_hash_from_name(NULL, 5), -1);
}

Test(hash_names, names_and_lengths)
{
    static const size_t lens[POSH_HASH_COUNT] = {20, 28, 32, 48, 64};
    int h;

    for (h = 0; h < POSH_HASH_COUNT; h++) {
        const char *name = posh_hash_name((posh_hash)h);
        cr_expect_eq(posh_hash_from_name(name, strlen(name)), h, "%s round trip", name);
        cr_expect_eq(posh_hash_len((posh_hash)h), lens[h], "%s length", name);
        cr_expect_leq(posh_hash_len((posh_hash)h), POSH_HASH_MAX_LEN);
    }
    cr_expect_eq(posh_hash_len(POSH_HASH_COUNT), 0);
    cr_expect_eq(posh_hash_len((posh_hash)-1), 0);
    cr_expect_str_eq(posh_hash_name(POSH_HASH_COUNT), "unknown-hash");
}

/* ---- which hash decides ---- */

#define BIT(h) (1u << (h))

typedef struct pick_case {
    unsigned present;
    bool allow_sha1;
    int pick;
} pick_case;

Test(pick, strongest_allowed)
{
    static const pick_case cases[] = {
        {0, true, -1},
        {BIT(POSH_HASH_SHA1), true, POSH_HASH_SHA1},
        {BIT(POSH_HASH_SHA1), false, -1},
        {BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA256), true, POSH_HASH_SHA256},
        {BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA224), false, POSH_HASH_SHA224},
        {BIT(POSH_HASH_SHA224) | BIT(POSH_HASH_SHA256), true, POSH_HASH_SHA256},
        {BIT(POSH_HASH_SHA256) | BIT(POSH_HASH_SHA384), true, POSH_HASH_SHA384},
        {BIT(POSH_HASH_SHA384) | BIT(POSH_HASH_SHA512), true, POSH_HASH_SHA512},
        {BIT(POSH_HASH_SHA512) | BIT(POSH_HASH_SHA1), true, POSH_HASH_SHA512},
        {(1u << POSH_HASH_COUNT) - 1, true, POSH_HASH_SHA512},
        {(1u << POSH_HASH_COUNT) - 1 - BIT(POSH_HASH_SHA512), false, POSH_HASH_SHA384},
        {BIT(POSH_HASH_COUNT) | BIT(31), true, -1}, /* bits beyond the known hashes mean nothing */
        {BIT(POSH_HASH_COUNT) | BIT(POSH_HASH_SHA1), true, POSH_HASH_SHA1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        posh_descriptor d = {.present = cases[i].present};
        cr_expect_eq(posh_descriptor_pick(&d, cases[i].allow_sha1), cases[i].pick, "present %#x, sha-1 %s",
                     cases[i].present, cases[i].allow_sha1 ? "allowed" : "off");
    }
    cr_expect_eq(posh_descriptor_pick(NULL, true), -1);
}

/* ---- matching a real certificate ---- */

/* A throwaway self-signed EC P-256 certificate, as DER: the kind of leaf POSH is for. */
static unsigned char *make_cert_der(size_t *len)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    unsigned char *der = NULL;
    int n;

    cr_assert(key != NULL && x != NULL);
    name = X509_get_subject_name(x);
    cr_assert(X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1);
    cr_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"hosting.example.net",
                                         -1, -1, 0) == 1);
    cr_assert(X509_set_issuer_name(x, name) == 1);
    cr_assert(X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL);
    cr_assert(X509_gmtime_adj(X509_getm_notAfter(x), 3600) != NULL);
    cr_assert(X509_set_pubkey(x, key) == 1 && X509_sign(x, key, EVP_sha256()) > 0);
    n = i2d_X509(x, &der);
    cr_assert_gt(n, 0);
    *len = (size_t)n;
    X509_free(x);
    EVP_PKEY_free(key);
    return der;
}

static unsigned char *cert;
static size_t cert_len;
/* The certificate's digests, computed here with another OpenSSL entry point than the library's. */
static unsigned char cert_digest[POSH_HASH_COUNT][POSH_HASH_MAX_LEN];

static void cert_setup(void)
{
    static const char *const md_names[POSH_HASH_COUNT] = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"};
    int h;

    cert = make_cert_der(&cert_len);
    for (h = 0; h < POSH_HASH_COUNT; h++) {
        size_t n = 0;
        cr_assert_eq(EVP_Q_digest(NULL, md_names[h], NULL, cert, cert_len, cert_digest[h], &n), 1);
        cr_assert_eq(n, posh_hash_len((posh_hash)h));
    }
}

static void cert_teardown(void)
{
    OPENSSL_free(cert);
    cert = NULL;
}

TestSuite(match, .init = cert_setup, .fini = cert_teardown);

/* Set hash h of d to the certificate's digest, or to a wrong one (the right one with its last byte changed). */
static void set_hash(posh_descriptor *d, posh_hash h, bool right)
{
    size_t len = posh_hash_len(h);
    memcpy(d->digest[h], cert_digest[h], len);
    if (!right)
        d->digest[h][len - 1] ^= 0x01;
    d->present |= BIT(h);
}

static int match_index(const posh_descriptor *d, size_t n, bool allow_sha1)
{
    int index = 42;
    cr_assert_eq(posh_match_descriptors(d, n, allow_sha1, cert, cert_len, &index), POSH_OK);
    return index;
}

Test(match, right_sha256_matches)
{
    posh_descriptor d = {0};

    set_hash(&d, POSH_HASH_SHA256, true);
    cr_expect_eq(match_index(&d, 1, true), 0);
    cr_expect_eq(match_index(&d, 1, false), 0);
}

Test(match, wrong_sha256_does_not_match)
{
    posh_descriptor d = {0};

    set_hash(&d, POSH_HASH_SHA256, false);
    cr_expect_eq(match_index(&d, 1, true), -1);
}

Test(match, each_hash_alone)
{
    int h;

    for (h = 0; h < POSH_HASH_COUNT; h++) {
        posh_descriptor right = {0}, wrong = {0};
        set_hash(&right, (posh_hash)h, true);
        set_hash(&wrong, (posh_hash)h, false);
        cr_expect_eq(match_index(&right, 1, true), 0, "%s right", posh_hash_name((posh_hash)h));
        cr_expect_eq(match_index(&wrong, 1, true), -1, "%s wrong", posh_hash_name((posh_hash)h));
    }
}

/* The strongest hash present decides: a right weaker hash never rescues a wrong stronger one. */
Test(match, strongest_hash_decides)
{
    posh_descriptor d = {0};

    set_hash(&d, POSH_HASH_SHA1, true);
    set_hash(&d, POSH_HASH_SHA256, false);
    cr_expect_eq(match_index(&d, 1, true), -1, "right sha-1, wrong sha-256");

    memset(&d, 0, sizeof(d));
    set_hash(&d, POSH_HASH_SHA256, true);
    set_hash(&d, POSH_HASH_SHA512, false);
    cr_expect_eq(match_index(&d, 1, true), -1, "right sha-256, wrong sha-512");

    memset(&d, 0, sizeof(d));
    set_hash(&d, POSH_HASH_SHA256, false);
    set_hash(&d, POSH_HASH_SHA384, true);
    cr_expect_eq(match_index(&d, 1, true), 0, "wrong sha-256, right sha-384");

    memset(&d, 0, sizeof(d));
    set_hash(&d, POSH_HASH_SHA1, false);
    set_hash(&d, POSH_HASH_SHA224, true);
    cr_expect_eq(match_index(&d, 1, true), 0, "wrong sha-1, right sha-224");
}

Test(match, sha1_only_when_allowed)
{
    posh_descriptor d = {0};

    set_hash(&d, POSH_HASH_SHA1, true);
    cr_expect_eq(match_index(&d, 1, true), 0, "allowed");
    cr_expect_eq(match_index(&d, 1, false), -1, "switched off: the descriptor has nothing usable");
}

Test(match, second_descriptor_index_1)
{
    posh_descriptor d[2] = {{0}, {0}};

    set_hash(&d[0], POSH_HASH_SHA256, false);
    set_hash(&d[1], POSH_HASH_SHA256, true);
    cr_expect_eq(match_index(d, 2, true), 1);
    /* Only the first n are looked at. */
    cr_expect_eq(match_index(d, 1, true), -1);
    /* Mixed algorithms across descriptors: each digest is computed when first needed. */
    memset(d, 0, sizeof(d));
    set_hash(&d[0], POSH_HASH_SHA512, false);
    set_hash(&d[1], POSH_HASH_SHA1, true);
    cr_expect_eq(match_index(d, 2, true), 1);
    cr_expect_eq(match_index(d, 2, false), -1);
}

Test(match, first_of_two_matching)
{
    posh_descriptor d[2] = {{0}, {0}};

    set_hash(&d[0], POSH_HASH_SHA256, true);
    set_hash(&d[1], POSH_HASH_SHA384, true);
    cr_expect_eq(match_index(d, 2, true), 0);
}

Test(match, present_zero_never_matches)
{
    posh_descriptor d = {0};
    int h;

    /* Every slot holds the right digest, but nothing is marked present. */
    for (h = 0; h < POSH_HASH_COUNT; h++)
        memcpy(d.digest[h], cert_digest[h], posh_hash_len((posh_hash)h));
    cr_expect_eq(match_index(&d, 1, true), -1);
    d.present = BIT(POSH_HASH_COUNT); /* an unknown bit is still nothing */
    cr_expect_eq(match_index(&d, 1, true), -1);
}

Test(match, another_certificate_does_not_match)
{
    posh_descriptor d = {0};
    size_t other_len;
    unsigned char *other = make_cert_der(&other_len);
    int index = 42;

    set_hash(&d, POSH_HASH_SHA256, true);
    cr_expect_eq(posh_match_descriptors(&d, 1, true, other, other_len, &index), POSH_OK);
    cr_expect_eq(index, -1);
    OPENSSL_free(other);
}

Test(match, arguments)
{
    posh_descriptor d = {0};
    int index = 42;

    set_hash(&d, POSH_HASH_SHA256, true);
    cr_expect_eq(match_index(NULL, 0, true), -1, "no descriptors: no match, not an error");
    cr_expect_eq(match_index(&d, 0, true), -1);
    cr_expect_eq(posh_match_descriptors(&d, 1, true, cert, cert_len, NULL), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_match_descriptors(NULL, 1, true, cert, cert_len, &index), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(index, -1, "*index is -1 on every error after it was checked");
    index = 42;
    cr_expect_eq(posh_match_descriptors(&d, 1, true, NULL, cert_len, &index), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(index, -1);
    cr_expect_eq(posh_match_descriptors(&d, 1, true, cert, 0, &index), POSH_ERR_INVALID_ARGUMENT);
}

/* ---- the same certificate without encoding it (posh_cert_same_der, issue 20) ---- */

static X509 *parse(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    cr_assert_not_null(x);
    return x;
}

/* x with the outer signature algorithm's parameter set to (type, value), parsed again from its DER. */
static X509 *with_sig_param(X509 *x, int type, void *value)
{
    const ASN1_BIT_STRING *sig;
    const X509_ALGOR *alg;
    const ASN1_OBJECT *oid;
    unsigned char *der = NULL;
    X509 *copy = X509_dup(x), *out;
    int n;

    cr_assert_not_null(copy);
    X509_get0_signature(&sig, &alg, copy);
    X509_ALGOR_get0(&oid, NULL, NULL, alg);
    cr_assert_eq(X509_ALGOR_set0((X509_ALGOR *)alg, OBJ_dup(oid), type, value), 1);
    n = i2d_X509(copy, &der);
    cr_assert_gt(n, 0);
    out = parse(der, (size_t)n);
    OPENSSL_free(der);
    X509_free(copy);
    return out;
}

static int same_bytes(X509 *a, X509 *b)
{
    unsigned char *da = NULL, *db = NULL;
    int na = i2d_X509(a, &da), nb = i2d_X509(b, &db);
    int same = na > 0 && na == nb && memcmp(da, db, (size_t)na) == 0;
    OPENSSL_free(da);
    OPENSSL_free(db);
    return same;
}

Test(match, same_der_without_encoding)
{
    X509 *a = parse(cert, cert_len), *b = parse(cert, cert_len), *other, *twin, *null_param, *int_param, *int_too;
    size_t other_len;
    unsigned char *other_der = make_cert_der(&other_len);
    ASN1_INTEGER *i1 = ASN1_INTEGER_new(), *i2 = ASN1_INTEGER_new();

    cr_expect_eq(posh_cert_same_der(a, a), 1);
    cr_expect_eq(posh_cert_same_der(a, b), 1, "two parses of the same bytes");
    other = parse(other_der, other_len);
    cr_expect_eq(posh_cert_same_der(a, other), 0, "another certificate");
    /* The twin: the same to-be-signed bytes and key, the signature (r, n - s), as valid. */
    twin = ts_x509_malleate(a);
    cr_assert_not_null(twin, "%s", ts_error());
    cr_assert_eq(X509_verify(twin, X509_get0_pubkey(a)), 1);
    cr_assert(!same_bytes(a, twin));
    cr_expect_eq(posh_cert_same_der(a, twin), 0, "a signature twin");
    cr_expect_eq(posh_cert_same_der(twin, a), 0);
    /* ecdsa-with-SHA256 has no parameters: an explicit NULL is another DER. */
    null_param = with_sig_param(a, V_ASN1_NULL, NULL);
    cr_assert(!same_bytes(a, null_param));
    cr_expect_eq(posh_cert_same_der(a, null_param), 0, "a NULL parameter where there is none");
    /* A parameter of another kind: the same DER, but not known so without encoding: 0, and the caller encodes. */
    cr_assert(i1 != NULL && i2 != NULL && ASN1_INTEGER_set(i1, 7) == 1 && ASN1_INTEGER_set(i2, 7) == 1);
    int_param = with_sig_param(a, V_ASN1_INTEGER, i1);
    int_too = with_sig_param(a, V_ASN1_INTEGER, i2);
    cr_assert(same_bytes(int_param, int_too));
    cr_expect_eq(posh_cert_same_der(int_param, int_too), 0, "an unusual parameter: decided by the DER instead");
    X509_free(int_too);
    X509_free(int_param);
    X509_free(null_param);
    X509_free(twin);
    X509_free(other);
    OPENSSL_free(other_der);
    X509_free(b);
    X509_free(a);
}

/* From JSON to a verdict: what a publisher writes (base64 of the certificate's digests) matches it. */
Test(match, document_round_trip)
{
    char b64_256[100], b64_1[100], json[512];
    posh_doc doc;
    int index = 42;

    posh_b64_encode(cert_digest[POSH_HASH_SHA256], 32, b64_256, sizeof(b64_256));
    posh_b64_encode(cert_digest[POSH_HASH_SHA1], 20, b64_1, sizeof(b64_1));
    snprintf(json, sizeof(json),
             "{\"fingerprints\":[{\"sha-1\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAA=\"},{\"sha-1\":\"%s\",\"sha-256\":\"%s\"}],"
             "\"expires\":604800}",
             b64_1, b64_256);
    cr_assert_eq(posh_doc_parse(json, strlen(json), &doc, NULL, 0), POSH_OK, "%s", json);
    cr_expect_eq(posh_match_descriptors(doc.descriptors, doc.n_descriptors, true, cert, cert_len, &index), POSH_OK);
    cr_expect_eq(index, 1);
    posh_doc_clear(&doc);
}

/*
 * A result remembers the certificate it matched, and keeps a parsed copy of it for warm handshakes (issue 20):
 * about 5 KiB each, so at most 256 in the process. Past that a result still matches exactly (by its DER), and
 * every copy is let go with its result.
 */
Test(match, parsed_copies_are_bounded)
{
    enum { N = 300, CAP = 256 };
    char b64_256[100], json[256];
    posh_doc doc;
    posh_result *r[N];
    X509 *leaf = parse(cert, cert_len);
    size_t base = posh_result_parsed_count(), copies = 0;
    int index;

    posh_b64_encode(cert_digest[POSH_HASH_SHA256], 32, b64_256, sizeof(b64_256));
    snprintf(json, sizeof(json), "{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":3600}", b64_256);
    cr_assert_eq(posh_doc_parse(json, strlen(json), &doc, NULL, 0), POSH_OK);
    for (int i = 0; i < N; i++) {
        cr_assert_not_null(r[i] = posh_result_from_doc("foo.example.com", "_xmpp-server._tcp", &doc, 0, 3600));
        index = 42;
        cr_expect_eq(posh_result_match_cert(r[i], leaf, &index), 0, "nothing remembered yet");
        cr_assert_eq(posh_result_match(r[i], cert, cert_len, &index), POSH_OK);
        cr_expect_eq(index, 0);
        index = 42;
        if (posh_result_match_cert(r[i], leaf, &index)) {
            cr_expect_eq(index, 0);
            copies++;
        }
        index = 42;
        cr_expect_eq(posh_result_match(r[i], cert, cert_len, &index), POSH_OK, "remembered by its DER");
        cr_expect_eq(index, 0);
    }
    cr_expect_eq(copies, CAP - base, "one copy per result up to the bound");
    cr_expect_eq(posh_result_parsed_count(), CAP);
    for (int i = 0; i < N; i++)
        posh_result_free(r[i]);
    cr_expect_eq(posh_result_parsed_count(), base, "every copy goes with its result");
    posh_doc_clear(&doc);
    X509_free(leaf);
}
