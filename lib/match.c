/*
 * match.c - the hashes POSH names and the comparison of a leaf certificate's DER against fingerprint
 * descriptors: per descriptor the strongest allowed hash decides, each digest is computed once.
 */
#include "posh_internal.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* Indexed by posh_hash. Names are the IANA "Hash Function Textual Names" that POSH documents use. */
static const struct {
    const char *name;
    size_t name_len;
    size_t digest_len;
    const EVP_MD *(*md)(void);
} hashes[POSH_HASH_COUNT] = {
    [POSH_HASH_SHA1] = {"sha-1", 5, 20, EVP_sha1},
    [POSH_HASH_SHA224] = {"sha-224", 7, 28, EVP_sha224},
    [POSH_HASH_SHA256] = {"sha-256", 7, 32, EVP_sha256},
    [POSH_HASH_SHA384] = {"sha-384", 7, 48, EVP_sha384},
    [POSH_HASH_SHA512] = {"sha-512", 7, 64, EVP_sha512},
};

/* Strongest first: the order in which a descriptor's hashes are considered. */
static const posh_hash strength_order[POSH_HASH_COUNT] = {
    POSH_HASH_SHA512, POSH_HASH_SHA384, POSH_HASH_SHA256, POSH_HASH_SHA224, POSH_HASH_SHA1,
};

/* Exact and case-sensitive, with the length: "SHA-256" or "sha-256\0x" are not hash names in a document. */
int posh_hash_from_name(const char *name, size_t len)
{
    int h;

    if (name == NULL)
        return -1;
    for (h = 0; h < POSH_HASH_COUNT; h++) {
        if (len == hashes[h].name_len && memcmp(name, hashes[h].name, len) == 0)
            return h;
    }
    return -1;
}

const char *posh_hash_name(posh_hash h)
{
    /* Callers print the name in messages: an out-of-range value gets a printable answer, not NULL. */
    return (unsigned)h < POSH_HASH_COUNT ? hashes[h].name : "unknown-hash";
}

size_t posh_hash_len(posh_hash h)
{
    return (unsigned)h < POSH_HASH_COUNT ? hashes[h].digest_len : 0;
}

int posh_descriptor_pick(const posh_descriptor *d, bool allow_sha1)
{
    size_t i;

    if (d == NULL)
        return -1;
    for (i = 0; i < POSH_HASH_COUNT; i++) {
        posh_hash h = strength_order[i];
        if (h == POSH_HASH_SHA1 && !allow_sha1)
            continue;
        if (d->present & (1u << h))
            return (int)h;
    }
    return -1;
}

const unsigned char *posh_digests_get(posh_digests *c, posh_hash h)
{
    unsigned int len = 0;

    if ((c->have & (1u << h)) == 0) {
        if (EVP_Digest(c->der, c->der_len, c->digest[h], &len, hashes[h].md(), NULL) != 1 ||
            len != hashes[h].digest_len)
            return NULL;
        c->have |= 1u << h;
    }
    return c->digest[h];
}

posh_err posh_match_descriptors(const posh_descriptor *d, size_t n, bool allow_sha1, const unsigned char *der,
                                size_t der_len, int *index)
{
    posh_digests cache = {.der = der, .der_len = der_len};
    size_t i;

    if (index == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    *index = -1;
    /* n is bounded by POSH_MAX_DESCRIPTORS in documents; INT_MAX keeps *index representable whatever the caller. */
    if ((d == NULL && n > 0) || n > INT_MAX || der == NULL || der_len == 0)
        return POSH_ERR_INVALID_ARGUMENT;
    for (i = 0; i < n; i++) {
        int h = posh_descriptor_pick(&d[i], allow_sha1);
        const unsigned char *digest;
        if (h < 0)
            continue; /* nothing usable: the descriptor is ignored, it can never match */
        if ((digest = posh_digests_get(&cache, (posh_hash)h)) == NULL)
            return POSH_ERR_CERTIFICATE;
        /* Constant time is not needed for public fingerprints; CRYPTO_memcmp costs nothing and ends the debate. */
        if (CRYPTO_memcmp(digest, d[i].digest[h], hashes[h].digest_len) == 0) {
            *index = (int)i;
            return POSH_OK;
        }
    }
    return POSH_OK;
}

/* The algorithm identifiers of two signatures are encoded alike: the same OID, and no parameters, NULL, or the
 * same SEQUENCE bytes; 0 for any other parameter (not known so: the caller compares encodings instead). */
static int same_algorithm(const X509_ALGOR *a, const X509_ALGOR *b)
{
    const ASN1_OBJECT *oa, *ob;
    const void *va, *vb;
    int ta, tb;

    X509_ALGOR_get0(&oa, &ta, &va, a);
    X509_ALGOR_get0(&ob, &tb, &vb, b);
    if (ta != tb || OBJ_cmp(oa, ob) != 0)
        return 0;
    if (ta == V_ASN1_UNDEF || ta == V_ASN1_NULL)
        return 1;
    return ta == V_ASN1_SEQUENCE && ASN1_STRING_cmp(va, vb) == 0;
}

/* Two BIT STRINGs are encoded alike: the same bytes and the same count of unused bits (i2c_ASN1_BIT_STRING). */
static int same_bits(const ASN1_BIT_STRING *a, const ASN1_BIT_STRING *b)
{
    const long bits = ASN1_STRING_FLAG_BITS_LEFT | 0x07;
    return a->length == b->length && (a->flags & bits) == (b->flags & bits) &&
           (a->length == 0 || memcmp(a->data, b->data, (size_t)a->length) == 0);
}

int posh_cert_same_der(const X509 *a, const X509 *b)
{
    const ASN1_BIT_STRING *sa, *sb;
    const X509_ALGOR *aa, *ab;

    /* The SHA-1 of the whole DER, then the to-be-signed bytes as parsed, in full (OpenSSL 3's X509_cmp()). */
    if (X509_cmp(a, b) != 0)
        return 0;
    X509_get0_signature(&sa, &aa, a);
    X509_get0_signature(&sb, &ab, b);
    return same_algorithm(aa, ab) && same_bits(sa, sb);
}
