/*
 * fuzz_same_der.c - the warm path's certificate identity (issue 20): posh_cert_same_der() says two parsed
 * certificates have the same DER without encoding either, and a result's remembered certificate is compared
 * with a handshake's leaf that way (posh_result_match_cert). Exactness is the whole point, so it is checked
 * against the encodings themselves. The input is a certificate (DER), then either a second one, or edits of the
 * first: 3 bytes each, a position (16 bits, little-endian, modulo its length) and a byte to XOR there, so that
 * most pairs are near twins (none, or edits that do not parse: the first's bytes again). Asserted for every
 * pair:
 * - same_der(a, b) == same_der(b, a), and a 1 only when i2d(a) and i2d(b) are the same bytes;
 * - a result that matched a's DER (by its SHA-256, computed here) and so remembers it says b is its certificate
 *   (posh_result_match_cert, with descriptor 0) only when i2d(b) is that DER; and it still matches a's DER.
 * What no input can show: that X509_cmp() compares the kept to-be-signed bytes and not only the SHA-1 of the
 * whole (that would take a SHA-1 collision). It does in OpenSSL 3, as its manual says ("the hash values ... and
 * the canonical (DER) encoding values"); posh_cert_same_der's own comparison of the signature does not rely on it.
 * Seeds: corpus/fuzz_same_der/ (a P-256 and an RSA-PSS certificate, each alone, twice, and beside its ECDSA
 * signature twin (r, n - s) or another certificate).
 */
#include "fuzz_check.h"
#include "client_internal.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The DER OpenSSL encodes for x (caller frees with OPENSSL_free), or NULL. */
static unsigned char *der_of(X509 *x, int *len)
{
    unsigned char *der = NULL;
    *len = i2d_X509(x, &der);
    if (*len <= 0) {
        OPENSSL_free(der);
        return NULL;
    }
    return der;
}

/* A result whose one descriptor is the SHA-256 of der, as a lookup would build it from a document. */
static posh_result *result_for(const unsigned char *der, int len)
{
    unsigned char digest[32];
    char b64[64], json[160];
    unsigned int n = 0;
    posh_doc doc;
    posh_result *r;

    FUZZ_ASSERT(EVP_Digest(der, (size_t)len, digest, &n, EVP_sha256(), NULL) == 1 && n == 32, "SHA-256");
    FUZZ_ASSERT(posh_b64_encode(digest, 32, b64, sizeof(b64)) > 0, "base64");
    snprintf(json, sizeof(json), "{\"fingerprints\":[{\"sha-256\":\"%s\"}],\"expires\":3600}", b64);
    FUZZ_ASSERT(posh_doc_parse(json, strlen(json), &doc, NULL, 0) == POSH_OK, "%s", json);
    r = posh_result_from_doc("foo.example.com", "_xmpp-server._tcp", &doc, 0, 3600);
    posh_doc_clear(&doc);
    FUZZ_ASSERT(r != NULL, "out of memory");
    return r;
}

/* The certificate cert (len bytes) with the edits applied, parsed; cert itself again if that does not parse. */
static X509 *edited(const uint8_t *cert, size_t len, const uint8_t *edits, size_t n)
{
    unsigned char copy[16384];
    const unsigned char *p = copy;
    X509 *x;

    memcpy(copy, cert, len);
    for (size_t i = 0; i + 3 <= n; i += 3)
        copy[(edits[i] | (size_t)edits[i + 1] << 8) % len] ^= edits[i + 2];
    if ((x = d2i_X509(NULL, &p, (long)len)) != NULL)
        return x;
    p = cert;
    x = d2i_X509(NULL, &p, (long)len);
    FUZZ_ASSERT(x != NULL, "the first certificate's bytes parse twice");
    return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const unsigned char *p = data, *second;
    X509 *a, *b;
    unsigned char *da, *db;
    int la, lb, same, index = -2;
    posh_result *r;

    if (size > 16384 || (a = d2i_X509(NULL, &p, (long)size)) == NULL)
        return 0;
    second = p;
    if ((b = d2i_X509(NULL, &p, (long)(size - (size_t)(second - data)))) == NULL)
        b = edited(data, (size_t)(second - data), second, size - (size_t)(second - data));
    da = der_of(a, &la);
    db = der_of(b, &lb);
    if (da == NULL || db == NULL)
        goto done;
    same = posh_cert_same_der(a, b);
    FUZZ_ASSERT(same == posh_cert_same_der(b, a), "not symmetric: %d", same);
    FUZZ_ASSERT(!same || (la == lb && memcmp(da, db, (size_t)la) == 0),
                "the same DER said of different encodings (%d and %d bytes)", la, lb);

    r = result_for(da, la);
    FUZZ_ASSERT(posh_result_match(r, da, (size_t)la, &index) == POSH_OK && index == 0, "a's DER must match");
    index = -2;
    if (posh_result_match_cert(r, b, &index))
        FUZZ_ASSERT(index == 0 && la == lb && memcmp(da, db, (size_t)la) == 0,
                    "the result took b for the certificate it remembers (descriptor %d)", index);
    index = -2;
    FUZZ_ASSERT(posh_result_match(r, da, (size_t)la, &index) == POSH_OK && index == 0, "remembered by its DER");
    posh_result_free(r);
done:
    OPENSSL_free(da);
    OPENSSL_free(db);
    X509_free(a);
    X509_free(b);
    return 0;
}
