/*
 * store_entry.c - one entry of the persistent cache directory as bytes: serialise, and parse back strictly
 * (bytes -> entry or error; the format is in posh_internal.h). Pure: no I/O, no clock, no globals; fuzzed by
 * fuzz/fuzz_cache_entry.c. An entry is a trust-store record: nothing in it is believed before all of it is
 * checked, and the documents in it are judged again by the same parser as a fetched document.
 */
#include "posh_internal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_LEN (8 + 4 + 8 + 8)
#define DIGEST_LEN 32

/* ---- a bounded reader over the bytes ---- */
typedef struct cursor {
    const unsigned char *p;
    size_t n, i;
} cursor;

static bool take(cursor *c, size_t n, const unsigned char **out)
{
    if (c->n - c->i < n)
        return false;
    *out = c->p + c->i;
    c->i += n;
    return true;
}

static bool take_u32(cursor *c, uint32_t *v)
{
    const unsigned char *b;
    if (!take(c, 4, &b))
        return false;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return true;
}

static bool take_i64(cursor *c, int64_t *v)
{
    const unsigned char *b;
    uint64_t u = 0;
    if (!take(c, 8, &b))
        return false;
    for (int k = 0; k < 8; k++)
        u = u << 8 | b[k];
    *v = (int64_t)u;
    return true;
}

/* A length-prefixed byte string of at most max bytes. */
static bool take_str(cursor *c, size_t max, const char **s, size_t *len)
{
    const unsigned char *b;
    uint32_t n;
    if (!take_u32(c, &n) || n > max || !take(c, n, &b))
        return false;
    *s = (const char *)b;
    *len = n;
    return true;
}

/* A string field copied into out (outlen > max), NUL-terminated; no NUL inside. */
static bool take_text(cursor *c, size_t max, char *out)
{
    const char *s;
    size_t n;
    if (!take_str(c, max, &s, &n) || memchr(s, '\0', n) != NULL)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static bool sha256(const unsigned char *buf, size_t len, unsigned char out[DIGEST_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == DIGEST_LEN;
}

static bool is_2xx(uint32_t status)
{
    return status >= 200 && status <= 299;
}

void posh_store_entry_clear(posh_store_entry *e)
{
    posh_doc_clear(&e->source);
    posh_doc_clear(&e->target);
    memset(e, 0, sizeof(*e));
}

posh_err posh_store_entry_parse(const unsigned char *buf, size_t len, posh_store_entry *e, char *msg,
                                size_t msglen)
{
    unsigned char digest[DIGEST_LEN];
    char why[POSH_MSG_LEN] = "";
    char dom[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    char canon[POSH_STORE_SERVICE_LEN + 2];
    const unsigned char *b;
    cursor c = {buf, len, 0};
    uint32_t version;
    posh_err err = POSH_ERR_DOCUMENT;
    const char *what;

    memset(e, 0, sizeof(*e));
    if (msg != NULL && msglen > 0)
        msg[0] = '\0';
    /* Whole-file checks first: the size, the magic, the version, then the digest over everything. */
    what = "too short or too long";
    if (len < HEADER_LEN + 6 * 4 + 2 * 4 + DIGEST_LEN || len > POSH_STORE_MAX_ENTRY)
        goto fail;
    what = "not a posh cache entry (magic)";
    if (!take(&c, 8, &b) || memcmp(b, POSH_STORE_MAGIC, 8) != 0)
        goto fail;
    what = "another version";
    if (!take_u32(&c, &version) || version != POSH_STORE_VERSION)
        goto fail;
    what = "checksum mismatch (truncated or corrupted)";
    if (!sha256(buf, len - DIGEST_LEN, digest) || memcmp(digest, buf + len - DIGEST_LEN, DIGEST_LEN) != 0)
        goto fail;
    c.n = len - DIGEST_LEN;

    what = "bad fetch time";
    if (!take_i64(&c, &e->fetched) || !take_i64(&c, &e->target_fetched) || e->fetched <= 0 ||
        e->target_fetched < 0)
        goto fail;
    what = "bad domain";
    if (!take_text(&c, POSH_MAX_DOMAIN_LEN, e->domain) ||
        posh_domain_normalize(e->domain, dom, sizeof(dom)) != POSH_OK || strcmp(dom, e->domain) != 0)
        goto fail;
    what = "bad service";
    if (!take_text(&c, POSH_STORE_SERVICE_LEN, e->service) || e->service[0] != '_' ||
        posh_service_parse(e->service, svc, proto) != POSH_OK)
        goto fail;
    snprintf(canon, sizeof(canon), "_%s._%s", svc, proto);
    if (strcmp(canon, e->service) != 0)
        goto fail;
    what = "bad source URL or status";
    if (!take_text(&c, POSH_MAX_URL_LEN, e->source_url) || !posh_url_is_https(e->source_url, strlen(e->source_url)) ||
        !take_u32(&c, &e->source_status) || !is_2xx(e->source_status))
        goto fail;
    what = "bad source document";
    if (!take_str(&c, POSH_STORE_MAX_DOC, &e->source_doc, &e->source_doc_len))
        goto fail;
    what = "bad target URL or status";
    if (!take_text(&c, POSH_MAX_URL_LEN, e->target_url) || !take_u32(&c, &e->target_status))
        goto fail;
    what = "bad target document";
    if (!take_str(&c, POSH_STORE_MAX_DOC, &e->target_doc, &e->target_doc_len))
        goto fail;
    what = "bytes after the last field";
    if (c.i != c.n)
        goto fail;

    /* The documents, judged as when they were fetched. */
    if ((err = posh_doc_parse(e->source_doc, e->source_doc_len, &e->source, why, sizeof(why))) != POSH_OK) {
        what = "source document";
        goto fail;
    }
    err = POSH_ERR_DOCUMENT;
    if (e->source.kind == POSH_DOC_FINGERPRINTS) {
        what = "target fields without a reference";
        if (e->target_fetched != 0 || e->target_url[0] != '\0' || e->target_status != 0 || e->target_doc_len != 0)
            goto fail;
        return POSH_OK;
    }
    what = "bad target URL, status or fetch time";
    if (e->target_fetched <= 0 || !posh_url_is_https(e->target_url, strlen(e->target_url)) ||
        !is_2xx(e->target_status))
        goto fail;
    if ((err = posh_doc_parse(e->target_doc, e->target_doc_len, &e->target, why, sizeof(why))) != POSH_OK) {
        what = "target document";
        goto fail;
    }
    if (e->target.kind != POSH_DOC_FINGERPRINTS) {
        err = POSH_ERR_REFERENCE_CHAIN;
        what = "the target is a reference";
        goto fail;
    }
    return POSH_OK;
fail:
    if (msg != NULL && msglen > 0)
        posh_msg(msg, msglen, "%s%s%s", what, why[0] != '\0' ? ": " : "", why);
    posh_store_entry_clear(e);
    return err;
}

/* ---- serialising ---- */
static unsigned char *put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put_i64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int k = 7; k >= 0; k--) {
        p[k] = (unsigned char)u;
        u >>= 8;
    }
    return p + 8;
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t n)
{
    p = put_u32(p, (uint32_t)n);
    if (n > 0)
        memcpy(p, s, n);
    return p + n;
}

posh_err posh_store_entry_serialize(const posh_store_entry *e, unsigned char **out, size_t *outlen)
{
    size_t dl = strnlen(e->domain, sizeof(e->domain)), sl = strnlen(e->service, sizeof(e->service));
    size_t sul = strnlen(e->source_url, sizeof(e->source_url)), tul = strnlen(e->target_url, sizeof(e->target_url));
    size_t len;
    unsigned char *buf, *p;

    *out = NULL;
    *outlen = 0;
    if (dl > POSH_MAX_DOMAIN_LEN || sl > POSH_STORE_SERVICE_LEN || sul > POSH_MAX_URL_LEN || tul > POSH_MAX_URL_LEN ||
        e->source_doc_len > POSH_STORE_MAX_DOC || e->target_doc_len > POSH_STORE_MAX_DOC)
        return POSH_ERR_INVALID_ARGUMENT;
    len = HEADER_LEN + 6 * 4 + 2 * 4 + DIGEST_LEN + dl + sl + sul + tul + e->source_doc_len + e->target_doc_len;
    if ((buf = malloc(len)) == NULL)
        return POSH_ERR_NOMEM;
    memcpy(buf, POSH_STORE_MAGIC, 8);
    p = put_u32(buf + 8, POSH_STORE_VERSION);
    p = put_i64(p, e->fetched);
    p = put_i64(p, e->target_fetched);
    p = put_str(p, e->domain, dl);
    p = put_str(p, e->service, sl);
    p = put_str(p, e->source_url, sul);
    p = put_u32(p, e->source_status);
    p = put_str(p, e->source_doc, e->source_doc_len);
    p = put_str(p, e->target_url, tul);
    p = put_u32(p, e->target_status);
    p = put_str(p, e->target_doc, e->target_doc_len);
    if (!sha256(buf, (size_t)(p - buf), p)) {
        free(buf);
        return POSH_ERR_INTERNAL;
    }
    *out = buf;
    *outlen = len;
    return POSH_OK;
}

/* ---- names ---- */
void posh_store_entry_name(const char *domain, const char *service, const unsigned char scope[32], char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[DIGEST_LEN];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, domain, strlen(domain)) == 1 && EVP_DigestUpdate(ctx, " ", 1) == 1 &&
              EVP_DigestUpdate(ctx, service, strlen(service)) == 1 && EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
              EVP_DigestUpdate(ctx, scope, 32) == 1 && EVP_DigestFinal_ex(ctx, digest, &n) == 1;

    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(digest, 0, sizeof(digest)); /* never a name from the input; an all-zero name simply misses */
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    memcpy(out + 2 * DIGEST_LEN, ".posh", 6);
}

int posh_store_name_is_entry(const char *name)
{
    for (size_t i = 0; i < 2 * DIGEST_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return strcmp(name + 2 * DIGEST_LEN, ".posh") == 0;
}
