/*
 * pki.c - a throwaway PKI made in-process with the OpenSSL 3 API: root and intermediate CAs, leaves with
 * chosen names and validity, CRLs, and the POSH fingerprints of what was issued.
 */
#include "support.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

struct ts_ca {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *above; /* the CAs above this one, nearest first, root last (empty for a root) */
    char *pem;
};

struct ts_cert {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain; /* intermediates sent after the leaf (root excluded) */
    char *pem, *key_pem, *chain_pem;
    unsigned char *der;
    size_t der_len;
};

/* Append the OpenSSL error queue to a message, then record it. */
static void pki_error(const char *what)
{
    char buf[1024];
    size_t off = 0;
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0 && off < sizeof(buf) - 2) {
        int w = snprintf(buf + off, sizeof(buf) - off, "%s%s", off ? "; " : "", ERR_error_string(e, NULL));
        if (w < 0)
            break;
        off += (size_t)w;
    }
    ts_set_error("pki: %s%s%s", what, buf[0] ? ": " : "", buf);
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL)
        pki_error("EC key generation");
    return k;
}

static char *bio_to_string(BIO *b)
{
    char *data = NULL, *s;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
        return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

/* PEM of the certificates, in order. */
static char *certs_pem(X509 *first, STACK_OF(X509) *rest)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    int ok = b != NULL && PEM_write_bio_X509(b, first);
    for (int i = 0; ok && rest != NULL && i < sk_X509_num(rest); i++)
        ok = PEM_write_bio_X509(b, sk_X509_value(rest, i));
    if (ok)
        s = bio_to_string(b);
    if (s == NULL)
        pki_error("PEM encoding");
    BIO_free(b);
    return s;
}

/* Unique within the process whatever the CA: 64 random bits, then a counter. Positive, under 20 octets. */
static int set_serial(X509 *x)
{
    static atomic_uint counter;
    unsigned char raw[12];
    BIGNUM *bn = NULL;
    int ok = 0;
    unsigned int c = atomic_fetch_add(&counter, 1) + 1;

    if (RAND_bytes(raw, 8) != 1)
        goto done;
    raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x01);
    raw[8] = (unsigned char)(c >> 24);
    raw[9] = (unsigned char)(c >> 16);
    raw[10] = (unsigned char)(c >> 8);
    raw[11] = (unsigned char)c;
    bn = BN_bin2bn(raw, sizeof(raw), NULL);
    ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
done:
    BN_free(bn);
    return ok;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return 0;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static int add_san(X509 *x, const char *const *dns)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    int ok = names != NULL;
    for (size_t i = 0; ok && i < 8 && dns[i] != NULL; i++) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = gn != NULL && s != NULL && ASN1_STRING_set(s, dns[i], (int)strlen(dns[i]));
        if (!ok) {
            GENERAL_NAME_free(gn);
            ASN1_IA5STRING_free(s);
            break;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
        ok = sk_GENERAL_NAME_push(names, gn) > 0;
        if (!ok)
            GENERAL_NAME_free(gn);
    }
    if (ok && sk_GENERAL_NAME_num(names) > 0)
        ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(names);
    return ok;
}

/*
 * The one certificate builder. issuer_cert/issuer_key NULL: self-signed. Returns the certificate, with the
 * subject key in *key_out (new or up-referenced reuse).
 */
static X509 *build(X509 *issuer_cert, EVP_PKEY *issuer_key, const ts_cert_opts *o, EVP_PKEY **key_out)
{
    long nb = o->not_before_days, na = o->not_after_days;
    EVP_PKEY *key = NULL;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    int ok = x != NULL && name != NULL;

    if (nb == 0 && na == 0) {
        nb = -1;
        na = 30;
    }
    if (ok && o->key != NULL) {
        ok = EVP_PKEY_up_ref(o->key);
        key = ok ? o->key : NULL;
    } else if (ok) {
        ok = (key = new_key()) != NULL;
    }
    ok = ok && X509_set_version(x, X509_VERSION_3) && set_serial(x);
    if (ok && o->cn != NULL)
        ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)o->cn, -1, -1, 0);
    ok = ok && X509_set_subject_name(x, name) &&
         X509_set_issuer_name(x, issuer_cert ? X509_get_subject_name(issuer_cert) : name) &&
         X509_gmtime_adj(X509_getm_notBefore(x), nb * 86400L) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), na * 86400L) != NULL && X509_set_pubkey(x, key);
    ok = ok && add_ext(x, issuer_cert ? issuer_cert : x, NID_subject_key_identifier, "hash");
    /* For a self-signed certificate the AKI is its own SKI, which is now set. */
    ok = ok && add_ext(x, issuer_cert ? issuer_cert : x, NID_authority_key_identifier, "keyid:always");
    if (o->is_ca)
        ok = ok && add_ext(x, NULL, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(x, NULL, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    else
        ok = ok && add_ext(x, NULL, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, NULL, NID_ext_key_usage, "serverAuth,clientAuth");
    /* A self-signed leaf gets no keyUsage: with digitalSignature alone OpenSSL would not treat it as
     * self-signed (no keyCertSign), and keyCertSign on a non-CA is contradictory. */
    if (!o->is_ca && issuer_cert != NULL)
        ok = ok && add_ext(x, NULL, NID_key_usage, "critical,digitalSignature");
    ok = ok && add_san(x, o->dns);
    ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
    X509_NAME_free(name);
    if (!ok) {
        pki_error("building a certificate");
        X509_free(x);
        EVP_PKEY_free(key);
        return NULL;
    }
    *key_out = key;
    return x;
}

static ts_ca *ca_make(ts_ca *parent, const char *cn)
{
    ts_cert_opts o = {.cn = cn, .not_before_days = -2, .not_after_days = 365, .is_ca = 1};
    ts_ca *ca = calloc(1, sizeof(*ca));
    if (ca == NULL) {
        ts_set_error("pki: out of memory");
        return NULL;
    }
    ca->cert = build(parent ? parent->cert : NULL, parent ? parent->key : NULL, &o, &ca->key);
    ca->above = sk_X509_new_null();
    if (ca->cert == NULL || ca->above == NULL)
        goto err;
    if (parent != NULL) {
        if (!X509_add_cert(ca->above, parent->cert, X509_ADD_FLAG_UP_REF) ||
            !X509_add_certs(ca->above, parent->above, X509_ADD_FLAG_UP_REF))
            goto err;
    }
    if ((ca->pem = certs_pem(ca->cert, NULL)) == NULL)
        goto err;
    return ca;
err:
    if (ca->cert != NULL)
        pki_error("making a CA");
    ts_ca_free(ca);
    return NULL;
}

ts_ca *ts_ca_new(const char *cn)
{
    return ca_make(NULL, cn);
}

ts_ca *ts_ca_new_intermediate(ts_ca *parent, const char *cn)
{
    if (parent == NULL) {
        ts_set_error("ts_ca_new_intermediate: no parent");
        return NULL;
    }
    return ca_make(parent, cn);
}

void ts_ca_free(ts_ca *ca)
{
    if (ca == NULL)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    sk_X509_pop_free(ca->above, X509_free);
    free(ca->pem);
    free(ca);
}

X509 *ts_ca_x509(ts_ca *ca)
{
    return ca->cert;
}

EVP_PKEY *ts_ca_key(ts_ca *ca)
{
    return ca->key;
}

const char *ts_ca_pem(ts_ca *ca)
{
    return ca->pem;
}

int ts_ca_write(ts_ca *ca, const char *path)
{
    return ts_write_file(path, ca->pem, strlen(ca->pem));
}

int ts_ca_write_crl(ts_ca *ca, ts_cert *const *revoked, size_t n, const char *path)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_new();
    ASN1_INTEGER *number = ASN1_INTEGER_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *pem = NULL;
    int rc = -1;
    int ok = crl != NULL && t != NULL && number != NULL && b != NULL && X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
             X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) && X509_gmtime_adj(t, -3600) &&
             X509_CRL_set1_lastUpdate(crl, t) && X509_gmtime_adj(t, 7 * 86400L) && X509_CRL_set1_nextUpdate(crl, t) &&
             X509_gmtime_adj(t, -60);
    for (size_t i = 0; ok && i < n; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        ok = r != NULL && X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(revoked[i]->cert)) &&
             X509_REVOKED_set_revocationDate(r, t) && X509_CRL_add0_revoked(crl, r);
        if (!ok)
            X509_REVOKED_free(r);
    }
    ok = ok && ASN1_INTEGER_set(number, 1) && X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) == 1;
    if (ok) {
        /* The AKI lets a verifier pick this CA's key among several with the same name. */
        X509V3_CTX v3;
        X509_EXTENSION *ext;
        X509V3_set_ctx(&v3, ca->cert, NULL, NULL, crl, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
        ok = ext != NULL && X509_CRL_add_ext(crl, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ok = ok && X509_CRL_sort(crl) && X509_CRL_sign(crl, ca->key, EVP_sha256()) > 0 && PEM_write_bio_X509_CRL(b, crl) &&
         (pem = bio_to_string(b)) != NULL;
    if (!ok)
        pki_error("making a CRL");
    else
        rc = ts_write_file(path, pem, strlen(pem));
    free(pem);
    BIO_free(b);
    ASN1_INTEGER_free(number);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    return rc;
}

ts_cert *ts_cert_issue(ts_ca *ca, const ts_cert_opts *o)
{
    ts_cert *c;
    STACK_OF(X509) *all = NULL;
    BIO *b = NULL;
    unsigned char *der = NULL;
    int len;

    if (o == NULL || (!o->self_signed && ca == NULL)) {
        ts_set_error("ts_cert_issue: %s", o == NULL ? "no options" : "no CA for a certificate not self-signed");
        return NULL;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        ts_set_error("pki: out of memory");
        return NULL;
    }
    if (o->self_signed)
        c->cert = build(NULL, NULL, o, &c->key);
    else
        c->cert = build(ca->cert, ca->key, o, &c->key);
    if (c->cert == NULL)
        goto err;
    c->chain = sk_X509_new_null();
    all = sk_X509_new_null();
    if (c->chain == NULL || all == NULL)
        goto oom;
    if (!o->self_signed) {
        /* Intermediates: the issuing CA unless it is the root, then everything above it but the root. */
        int above = sk_X509_num(ca->above);
        if (above > 0 && !X509_add_cert(c->chain, ca->cert, X509_ADD_FLAG_UP_REF))
            goto oom;
        for (int i = 0; i + 1 < above; i++)
            if (!X509_add_cert(c->chain, sk_X509_value(ca->above, i), X509_ADD_FLAG_UP_REF))
                goto oom;
        if (!X509_add_cert(all, ca->cert, X509_ADD_FLAG_UP_REF) ||
            !X509_add_certs(all, ca->above, X509_ADD_FLAG_UP_REF))
            goto oom;
    }
    if ((c->pem = certs_pem(c->cert, NULL)) == NULL || (c->chain_pem = certs_pem(c->cert, all)) == NULL)
        goto err;
    if ((b = BIO_new(BIO_s_mem())) == NULL || !PEM_write_bio_PrivateKey(b, c->key, NULL, NULL, 0, NULL, NULL) ||
        (c->key_pem = bio_to_string(b)) == NULL) {
        pki_error("PEM of a key");
        goto err;
    }
    if ((len = i2d_X509(c->cert, &der)) <= 0) {
        pki_error("DER of a certificate");
        goto err;
    }
    if ((c->der = malloc((size_t)len)) == NULL)
        goto oom;
    memcpy(c->der, der, (size_t)len);
    c->der_len = (size_t)len;
    OPENSSL_free(der);
    BIO_free(b);
    sk_X509_pop_free(all, X509_free);
    return c;
oom:
    ts_set_error("pki: out of memory");
err:
    OPENSSL_free(der);
    BIO_free(b);
    sk_X509_pop_free(all, X509_free);
    ts_cert_free(c);
    return NULL;
}

void ts_cert_free(ts_cert *c)
{
    if (c == NULL)
        return;
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
    sk_X509_pop_free(c->chain, X509_free);
    free(c->pem);
    free(c->key_pem);
    free(c->chain_pem);
    free(c->der);
    free(c);
}

X509 *ts_cert_x509(ts_cert *c)
{
    return c->cert;
}

EVP_PKEY *ts_cert_key(ts_cert *c)
{
    return c->key;
}

STACK_OF(X509) *ts_cert_chain(ts_cert *c)
{
    return c->chain;
}

const char *ts_cert_pem(ts_cert *c)
{
    return c->pem;
}

const char *ts_cert_key_pem(ts_cert *c)
{
    return c->key_pem;
}

const char *ts_cert_chain_pem(ts_cert *c)
{
    return c->chain_pem;
}

const unsigned char *ts_cert_der(ts_cert *c, size_t *len)
{
    if (len != NULL)
        *len = c->der_len;
    return c->der;
}

int ts_cert_write(ts_cert *c, const char *dir, const char *basename)
{
    char path[4096];
    char *crt = certs_pem(c->cert, c->chain);
    int rc = -1;

    if (crt == NULL)
        return -1;
    if (snprintf(path, sizeof(path), "%s/%s.crt", dir, basename) >= (int)sizeof(path))
        ts_set_error("ts_cert_write: path too long");
    else if (ts_write_file(path, crt, strlen(crt)) == 0) {
        snprintf(path, sizeof(path), "%s/%s.key", dir, basename);
        rc = ts_write_file(path, c->key_pem, strlen(c->key_pem));
    }
    free(crt);
    return rc;
}

char *ts_cert_fingerprint_b64(ts_cert *c, const char *hash)
{
    static const struct {
        const char *posh, *openssl;
    } names[] = {{"sha-1", "SHA1"},     {"sha-224", "SHA224"}, {"sha-256", "SHA256"},
                 {"sha-384", "SHA384"}, {"sha-512", "SHA512"}};
    const EVP_MD *md = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    char *out;

    for (size_t i = 0; hash != NULL && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(hash, names[i].posh) == 0)
            md = EVP_get_digestbyname(names[i].openssl);
    if (md == NULL) {
        ts_set_error("ts_cert_fingerprint_b64: unknown hash '%s'", hash ? hash : "(null)");
        return NULL;
    }
    if (!EVP_Digest(c->der, c->der_len, digest, &dlen, md, NULL)) {
        pki_error("digest");
        return NULL;
    }
    if ((out = malloc(4 * ((dlen + 2) / 3) + 1)) == NULL) {
        ts_set_error("pki: out of memory");
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen);
    return out;
}

X509 *ts_x509_malleate(X509 *x)
{
    const ASN1_BIT_STRING *sig;
    const X509_ALGOR *alg;
    const unsigned char *p;
    const BIGNUM *r, *s;
    unsigned char *sig_der = NULL, *der = NULL;
    ECDSA_SIG *es = NULL;
    EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *r2 = NULL, *s2 = BN_new();
    X509 *twin = X509_dup(x), *out = NULL;
    int len;

    if (group == NULL || s2 == NULL || twin == NULL)
        goto err;
    X509_get0_signature(&sig, &alg, twin);
    p = sig->data;
    if ((es = d2i_ECDSA_SIG(NULL, &p, sig->length)) == NULL)
        goto err;
    ECDSA_SIG_get0(es, &r, &s);
    if (!BN_sub(s2, EC_GROUP_get0_order(group), s) || (r2 = BN_dup(r)) == NULL || !ECDSA_SIG_set0(es, r2, s2))
        goto err;
    r2 = s2 = NULL; /* es owns them */
    if ((len = i2d_ECDSA_SIG(es, &sig_der)) <= 0 || !ASN1_BIT_STRING_set((ASN1_BIT_STRING *)sig, sig_der, len))
        goto err;
    /* Parsed again from its DER, as a peer would receive it (nothing cached from the original). */
    if ((len = i2d_X509(twin, &der)) <= 0)
        goto err;
    p = der;
    out = d2i_X509(NULL, &p, len);
err:
    if (out == NULL)
        pki_error("malleating a signature");
    OPENSSL_free(der);
    OPENSSL_free(sig_der);
    ECDSA_SIG_free(es);
    BN_free(r2);
    BN_free(s2);
    EC_GROUP_free(group);
    X509_free(twin);
    return out;
}
