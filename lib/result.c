/*
 * result.c - the result of a lookup: one immutable, reference-counted allocation holding what happened (the
 * requests, the error and its message, the lifetime) and the fingerprints to match, and its accessors.
 */
#include "client_internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static size_t descriptor_bytes(const posh_descriptor *d)
{
    size_t n = 0;
    for (int h = 0; h < POSH_HASH_COUNT; h++)
        if (d->present & (1u << h))
            n += posh_hash_len((posh_hash)h);
    return n;
}

/* The digest bytes of a built result (the descriptors' digests stored back to back). */
static size_t result_digest_bytes(const posh_result *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_descriptors; i++)
        for (int h = 0; h < POSH_HASH_COUNT; h++)
            if (r->descriptors[i].present & (1u << h))
                n += posh_hash_len((posh_hash)h);
    return n;
}

posh_result *posh_result_build(const posh_result_parts *p)
{
    const posh_result *t = p->target;
    size_t n_own = p->trace != NULL ? p->trace->n : 0;
    size_t n_req = n_own + (t != NULL ? t->n_requests : 0);
    /* The fingerprints: a document parsed by this lookup, or those of the shared target's result. */
    bool from_target = p->doc == NULL && t != NULL && p->err == POSH_OK;
    size_t n_desc = p->doc != NULL ? p->doc->n_descriptors : from_target ? t->n_descriptors : 0;
    char message[POSH_MSG_LEN];
    /* The one place a lookup's message becomes public: what a server sent is escaped here (posh_internal.h). */
    size_t mlen = posh_escape(message, sizeof(message), p->message, p->escape) + 1;
    size_t dlen = strlen(p->domain) + 1, slen = strlen(p->service) + 1;
    size_t rawlen = p->raw_doc != NULL ? p->raw_doc_len + 1 + strlen(p->raw_url) + 1 : 0;
    size_t n_deleg = p->delegations != NULL ? p->delegations->n : 0;
    size_t digests = 0, strings = dlen + slen + mlen + rawlen, size, off;
    posh_result_deleg *deleg;
    posh_request *req;
    posh_result_descriptor *desc;
    unsigned char *dig;
    posh_result *r;
    char *str;

    for (size_t i = 0; i < n_req; i++)
        strings += strlen(i < n_own ? p->trace->req[i].url : t->requests[i - n_own].url) + 1;
    if (from_target)
        digests = result_digest_bytes(t);
    for (size_t i = 0; p->doc != NULL && i < n_desc; i++)
        digests += descriptor_bytes(&p->doc->descriptors[i]);
    for (size_t i = 0; i < n_deleg; i++)
        strings += strlen(p->delegations->entries[i].host) + 1 + strlen(p->delegations->entries[i].domain) + 1;
    size = align8(sizeof(*r)) + align8(n_req * sizeof(*req)) + align8(n_desc * sizeof(*desc)) +
           align8(n_deleg * sizeof(*deleg)) + digests + strings;
    if ((r = calloc(1, size)) == NULL)
        return NULL;
    off = align8(sizeof(*r));
    req = (posh_request *)((char *)r + off);
    off += align8(n_req * sizeof(*req));
    desc = (posh_result_descriptor *)((char *)r + off);
    off += align8(n_desc * sizeof(*desc));
    deleg = (posh_result_deleg *)((char *)r + off);
    off += align8(n_deleg * sizeof(*deleg));
    dig = (unsigned char *)r + off;
    str = (char *)dig + digests;

    r->refs = 1;
    r->err = p->err;
    r->followed_reference = p->followed_reference;
    r->format = p->doc != NULL ? p->doc->format : from_target ? t->format : 0;
    r->ttl = p->ttl;
    r->expires_at = p->expires_at;
#define COPY_STRING(dst, src, len)                                                                             \
    do {                                                                                                       \
        memcpy(str, (src), (len));                                                                             \
        (dst) = str;                                                                                           \
        str += (len);                                                                                          \
    } while (0)
    COPY_STRING(r->domain, p->domain, dlen);
    COPY_STRING(r->service, p->service, slen);
    COPY_STRING(r->message, message, mlen);
    for (size_t i = 0; i < n_req; i++) {
        const posh_request *from = i < n_own ? &p->trace->req[i] : &t->requests[i - n_own];
        req[i].status = from->status;
        COPY_STRING(req[i].url, from->url, strlen(from->url) + 1);
    }
    if (p->raw_doc != NULL) {
        r->fetched_wall = p->fetched_wall;
        r->doc_len = p->raw_doc_len;
        r->doc_status = p->raw_status;
        COPY_STRING(r->doc, p->raw_doc, p->raw_doc_len);
        *str++ = '\0';
        COPY_STRING(r->doc_url, p->raw_url, strlen(p->raw_url) + 1);
    }
    for (size_t i = 0; i < n_deleg; i++) {
        const posh_delegation *d = &p->delegations->entries[i];
        deleg[i].port = d->port;
        COPY_STRING(deleg[i].host, d->host, strlen(d->host) + 1);
        COPY_STRING(deleg[i].domain, d->domain, strlen(d->domain) + 1);
    }
#undef COPY_STRING
    if (from_target) {
        /* Same client, same SHA-1 rule: the target's decided hashes hold for this result too. */
        memcpy(desc, t->descriptors, n_desc * sizeof(*desc));
        memcpy(dig, t->digests, digests);
    }
    off = 0;
    for (size_t i = 0; p->doc != NULL && i < n_desc; i++) {
        const posh_descriptor *d = &p->doc->descriptors[i];
        desc[i].present = (uint8_t)d->present;
        desc[i].decided = (int8_t)posh_descriptor_pick(d, p->allow_sha1);
        desc[i].offset = (uint16_t)off;
        for (int h = 0; h < POSH_HASH_COUNT; h++) {
            if (d->present & (1u << h)) {
                memcpy(dig + off, d->digest[h], posh_hash_len((posh_hash)h));
                off += posh_hash_len((posh_hash)h);
            }
        }
    }
    r->n_requests = n_req;
    r->first_shared = p->from_store ? 0 : t != NULL && p->target_shared ? n_own : n_req;
    r->requests = req;
    r->n_descriptors = n_desc;
    r->descriptors = desc;
    r->digests = dig;
    r->n_delegations = n_deleg;
    r->delegations = deleg;
    return r;
}

posh_result *posh_result_from_doc(const char *domain, const char *service, const posh_doc *doc, time_t now,
                                  long max_ttl)
{
    long ttl = doc->expires < max_ttl ? (long)doc->expires : max_ttl;
    return posh_result_build(&(posh_result_parts){.domain = domain, .service = service, .err = POSH_OK,
                                                  .ttl = ttl, .expires_at = now + ttl, .doc = doc,
                                                  .allow_sha1 = true});
}

/* Where the digest of hash h of descriptor d starts, or NULL if d does not carry h. */
static const unsigned char *descriptor_digest(const posh_result *r, const posh_result_descriptor *d, int h)
{
    size_t off = d->offset;
    if (h < 0 || (d->present & (1u << h)) == 0)
        return NULL;
    for (int i = 0; i < h; i++)
        if (d->present & (1u << i))
            off += posh_hash_len((posh_hash)i);
    return r->digests + off;
}

/*
 * The certificate a result last vouched for, byte for byte. On a warm cache every handshake with a domain's
 * server presents the same leaf: comparing its DER (a few dozen instructions) gives the answer its digest would
 * (a few thousand, and the bulk of the warm decision). Equal bytes have equal digests, so the memo never
 * changes an answer; only a match is remembered, and a different or longer DER takes the digest path.
 */
typedef struct posh_match_memo {
    size_t der_len;
    int index;
    /*
     * 1 + the X509_check_host() flags with which the result's own domain was checked against these bytes and
     * did not match, or 0: not known (atomic; posh_result_note_name_fails). The check is a function of the
     * bytes, the name and the flags alone, so it need not run again for them.
     */
    unsigned long name_failed;
    /*
     * The bytes parsed, when they parse back to themselves (else NULL): a handshake's leaf is compared with it
     * without being encoded (posh_cert_same_der), which on a warm handshake is the one encoding left.
     */
    X509 *cert;
    unsigned char der[];
} posh_match_memo;

/* A leaf's DER is a few hundred bytes to a few KiB; a larger one is matched by digest every time. */
#define MEMO_MAX_DER 4096

/*
 * A parsed copy costs about 5 KiB (the DER alone 0.5 to 1): at most this many are kept in the process, the
 * memory bounded at about 1.4 MB. A memo without one compares an encoding of the leaf instead, as exactly.
 */
#define MEMO_MAX_CERTS 256
static int memo_certs; /* atomic: parsed copies alive */

size_t posh_result_parsed_count(void)
{
    return (size_t)__atomic_load_n(&memo_certs, __ATOMIC_RELAXED);
}

/* The memo of r when der is its certificate, byte for byte; else NULL. */
static posh_match_memo *memo_holding(const posh_result *r, const unsigned char *der, size_t der_len)
{
    posh_match_memo *m = __atomic_load_n(&r->matched, __ATOMIC_ACQUIRE);
    return m != NULL && m->der_len == der_len && memcmp(m->der, der, der_len) == 0 ? m : NULL;
}

/* The memo of r when leaf is its certificate, byte for byte (decided without encoding leaf); else NULL. */
static posh_match_memo *memo_holding_cert(const posh_result *r, const X509 *leaf)
{
    posh_match_memo *m = __atomic_load_n(&r->matched, __ATOMIC_ACQUIRE);
    return m != NULL && m->cert != NULL && posh_cert_same_der(leaf, m->cert) ? m : NULL;
}

static int memo_match(const posh_result *r, const unsigned char *der, size_t der_len, int *index)
{
    const posh_match_memo *m = memo_holding(r, der, der_len);
    if (m == NULL)
        return 0;
    *index = m->index;
    return 1;
}

/*
 * der parsed, when it encodes back to exactly der, with its extensions cached (what X509_cmp() computes on first
 * use: done here, once, instead of in a handshake); else NULL. The error queue is left as it was.
 */
static X509 *memo_cert(const unsigned char *der, size_t der_len)
{
    const unsigned char *p = der;
    unsigned char *back = NULL;
    X509 *x;
    int n;

    ERR_set_mark();
    x = d2i_X509(NULL, &p, (long)der_len);
    if (x != NULL && (p != der + der_len || (n = i2d_X509(x, &back)) < 0 || (size_t)n != der_len ||
                      memcmp(back, der, der_len) != 0)) {
        X509_free(x);
        x = NULL;
    }
    OPENSSL_free(back);
    if (x != NULL)
        (void)X509_check_purpose(x, -1, 0);
    ERR_pop_to_mark();
    return x;
}

static void memo_free(posh_match_memo *m)
{
    if (m != NULL && m->cert != NULL) {
        X509_free(m->cert);
        __atomic_sub_fetch(&memo_certs, 1, __ATOMIC_RELAXED);
    }
    free(m);
}

/* Remember der as matching descriptor index, unless a memo is set already (the first one stays: no reclaiming). */
static void memo_set(const posh_result *r, const unsigned char *der, size_t der_len, int index)
{
    posh_match_memo *m, *none = NULL;
    if (der_len > MEMO_MAX_DER || __atomic_load_n(&r->matched, __ATOMIC_RELAXED) != NULL ||
        (m = malloc(sizeof(*m) + der_len)) == NULL)
        return; /* no memo: the next handshake computes the digest again, nothing else changes */
    m->der_len = der_len;
    m->index = index;
    m->name_failed = 0;
    memcpy(m->der, der, der_len);
    m->cert = NULL;
    if (__atomic_add_fetch(&memo_certs, 1, __ATOMIC_RELAXED) > MEMO_MAX_CERTS ||
        (m->cert = memo_cert(der, der_len)) == NULL)
        __atomic_sub_fetch(&memo_certs, 1, __ATOMIC_RELAXED);
    /* The result is shared and otherwise immutable: the memo is its one field set after the build, once. */
    if (!__atomic_compare_exchange_n(&((posh_result *)r)->matched, &none, m, 0, __ATOMIC_RELEASE,
                                     __ATOMIC_RELAXED))
        memo_free(m);
}

posh_err posh_result_match(const posh_result *r, const unsigned char *der, size_t der_len, int *index)
{
    posh_digests digests = {.der = der, .der_len = der_len};
    *index = -1;
    if (memo_match(r, der, der_len, index))
        return POSH_OK;
    for (size_t i = 0; i < r->n_descriptors; i++) {
        const posh_result_descriptor *d = &r->descriptors[i];
        const unsigned char *want = descriptor_digest(r, d, d->decided), *got;
        if (want == NULL)
            continue; /* nothing usable: the descriptor can never match */
        if ((got = posh_digests_get(&digests, (posh_hash)d->decided)) == NULL)
            return POSH_ERR_CERTIFICATE;
        if (CRYPTO_memcmp(got, want, posh_hash_len((posh_hash)d->decided)) == 0) {
            *index = (int)i;
            memo_set(r, der, der_len, *index);
            return POSH_OK;
        }
    }
    return POSH_OK;
}

int posh_result_match_cert(const posh_result *r, const X509 *leaf, int *index)
{
    const posh_match_memo *m = memo_holding_cert(r, leaf);
    if (m == NULL)
        return 0;
    *index = m->index;
    return 1;
}

/* The memo of r when leaf is its certificate, byte for byte, and name is r's domain; else NULL. */
static posh_match_memo *memo_of(const posh_result *r, const char *name, const X509 *leaf)
{
    return strcmp(name, r->domain) == 0 ? memo_holding_cert(r, leaf) : NULL;
}

int posh_result_name_fails(const posh_result *r, const char *name, const X509 *leaf, unsigned flags, int *index)
{
    const posh_match_memo *m = memo_of(r, name, leaf);
    if (m == NULL)
        return 0;
    *index = m->index;
    return __atomic_load_n(&m->name_failed, __ATOMIC_RELAXED) == (unsigned long)flags + 1;
}

void posh_result_note_name_fails(const posh_result *r, const char *name, const X509 *leaf, unsigned flags)
{
    posh_match_memo *m = memo_of(r, name, leaf);
    if (m != NULL)
        __atomic_store_n(&m->name_failed, (unsigned long)flags + 1, __ATOMIC_RELAXED);
}

posh_result *posh_result_ref(posh_result *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void posh_result_free(posh_result *r)
{
    if (r == NULL || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    memo_free(r->matched);
    free(r);
}

/* ---- the public result accessors ---- */

posh_err posh_result_error(const posh_result *r)
{
    return r == NULL ? POSH_ERR_INVALID_ARGUMENT : r->err;
}

const char *posh_result_message(const posh_result *r)
{
    return r == NULL ? "" : r->message;
}

const char *posh_result_domain(const posh_result *r)
{
    return r == NULL ? "" : r->domain;
}

const char *posh_result_service(const posh_result *r)
{
    return r == NULL ? "" : r->service;
}

time_t posh_result_expires_at(const posh_result *r)
{
    return r == NULL ? 0 : r->expires_at;
}

long posh_result_ttl(const posh_result *r)
{
    return r == NULL ? 0 : r->ttl;
}

size_t posh_result_delegation_count(const posh_result *r)
{
    return r != NULL && r->err == POSH_OK ? r->n_delegations : 0;
}

int posh_result_delegation(const posh_result *r, size_t i, const char **host, int *port, const char **domain)
{
    if (i >= posh_result_delegation_count(r))
        return 0;
    if (host != NULL)
        *host = r->delegations[i].host;
    if (port != NULL)
        *port = r->delegations[i].port;
    if (domain != NULL)
        *domain = r->delegations[i].domain;
    return 1;
}

unsigned posh_result_format(const posh_result *r)
{
    return r != NULL && r->err == POSH_OK ? r->format : 0;
}

int posh_result_followed_reference(const posh_result *r)
{
    return r == NULL ? 0 : r->followed_reference;
}

size_t posh_result_request_count(const posh_result *r)
{
    return r == NULL ? 0 : r->n_requests;
}

int posh_result_request_shared(const posh_result *r, size_t i)
{
    return r != NULL && i < r->n_requests && i >= r->first_shared;
}

int posh_result_request(const posh_result *r, size_t i, const char **url, long *http_status)
{
    if (r == NULL || i >= r->n_requests)
        return 0;
    if (url != NULL)
        *url = r->requests[i].url;
    if (http_status != NULL)
        *http_status = r->requests[i].status;
    return 1;
}

size_t posh_result_descriptor_count(const posh_result *r)
{
    return r == NULL ? 0 : r->n_descriptors;
}

int posh_result_descriptor_hash(const posh_result *r, size_t i, const char *hash_name, char *buf, size_t buflen)
{
    const unsigned char *digest;
    int h;
    size_t need;
    if (r == NULL || hash_name == NULL || buf == NULL || i >= r->n_descriptors)
        return 0;
    h = posh_hash_from_name(hash_name, strlen(hash_name));
    digest = descriptor_digest(r, &r->descriptors[i], h);
    if (digest == NULL)
        return 0;
    need = 4 * ((posh_hash_len((posh_hash)h) + 2) / 3) + 1;
    if (buflen < need)
        return 0;
    posh_b64_encode(digest, posh_hash_len((posh_hash)h), buf, buflen);
    return 1;
}
