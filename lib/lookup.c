/*
 * lookup.c - the POSH process for one (domain, service): the layouts in order, the reference hop, the expiry
 * min rule; and the result object that records what happened.
 */
#include "client_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* What one lookup gathers while it runs; the result is built from it at the end. */
typedef struct lookup_state {
    char message[POSH_MSG_LEN];
    posh_trace trace;
    int followed_reference;
} lookup_state;

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

posh_result *posh_result_build(const posh_result_parts *p)
{
    size_t n_req = p->trace != NULL ? p->trace->n : 0;
    size_t n_desc = p->doc != NULL ? p->doc->n_descriptors : 0;
    char message[POSH_MSG_LEN];
    /* The one place a lookup's message becomes public: what a server sent is escaped here (posh_internal.h). */
    size_t mlen = posh_escape(message, sizeof(message), p->message, POSH_ESCAPE_RAW) + 1;
    size_t dlen = strlen(p->domain) + 1, slen = strlen(p->service) + 1;
    size_t digests = 0, strings = dlen + slen + mlen, size, off;
    posh_request *req;
    posh_result_descriptor *desc;
    unsigned char *dig;
    posh_result *r;
    char *str;

    for (size_t i = 0; i < n_req; i++)
        strings += strlen(p->trace->req[i].url) + 1;
    for (size_t i = 0; i < n_desc; i++)
        digests += descriptor_bytes(&p->doc->descriptors[i]);
    size = align8(sizeof(*r)) + align8(n_req * sizeof(*req)) + align8(n_desc * sizeof(*desc)) + digests + strings;
    if ((r = calloc(1, size)) == NULL)
        return NULL;
    off = align8(sizeof(*r));
    req = (posh_request *)((char *)r + off);
    off += align8(n_req * sizeof(*req));
    desc = (posh_result_descriptor *)((char *)r + off);
    off += align8(n_desc * sizeof(*desc));
    dig = (unsigned char *)r + off;
    str = (char *)dig + digests;

    r->refs = 1;
    r->err = p->err;
    r->followed_reference = p->followed_reference;
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
        req[i].status = p->trace->req[i].status;
        COPY_STRING(req[i].url, p->trace->req[i].url, strlen(p->trace->req[i].url) + 1);
    }
#undef COPY_STRING
    off = 0;
    for (size_t i = 0; i < n_desc; i++) {
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
    r->requests = req;
    r->n_descriptors = n_desc;
    r->descriptors = desc;
    r->digests = dig;
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

posh_err posh_result_match(const posh_result *r, const unsigned char *der, size_t der_len, int *index)
{
    posh_digests digests = {.der = der, .der_len = der_len};
    *index = -1;
    for (size_t i = 0; i < r->n_descriptors; i++) {
        const posh_result_descriptor *d = &r->descriptors[i];
        const unsigned char *want = descriptor_digest(r, d, d->decided), *got;
        if (want == NULL)
            continue; /* nothing usable: the descriptor can never match */
        if ((got = posh_digests_get(&digests, (posh_hash)d->decided)) == NULL)
            return POSH_ERR_CERTIFICATE;
        if (CRYPTO_memcmp(got, want, posh_hash_len((posh_hash)d->decided)) == 0) {
            *index = (int)i;
            return POSH_OK;
        }
    }
    return POSH_OK;
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
    free(r);
}

static void trace_clear(posh_trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->req[i].url);
    t->n = 0;
}

/* Fetch url and parse it as a POSH document. *missing is set (and POSH_OK returned) on a 4xx. */
static posh_err fetch_doc(CURL *curl, const posh_config *cfg, const char *url, int64_t deadline_ms,
                          lookup_state *r, posh_doc *doc, bool *missing)
{
    posh_fetch_result fr;
    char why[POSH_MSG_LEN];
    posh_err err;

    *missing = false;
    err = posh_fetch(curl, cfg, url, deadline_ms, &r->trace, &fr, r->message, sizeof(r->message));
    if (err != POSH_OK)
        return err;
    if (fr.status >= 400) {
        *missing = true;
        posh_msg(r->message, sizeof(r->message), "%s: HTTP status %ld", fr.final_url, fr.status);
        posh_fetch_result_clear(&fr);
        return POSH_OK;
    }
    err = posh_doc_parse(fr.body, fr.body_len, doc, why, sizeof(why));
    if (err != POSH_OK)
        posh_msg(r->message, sizeof(r->message), "%s: %s", fr.final_url, why);
    posh_fetch_result_clear(&fr);
    return err;
}

/* The source domain's document: the first layout that does not answer 4xx. */
static posh_err fetch_source(CURL *curl, const posh_config *cfg, const char *domain, const char *svc,
                             const char *proto, int64_t deadline_ms, lookup_state *r, posh_doc *doc)
{
    static const unsigned order[] = {POSH_LAYOUT_RFC7711, POSH_LAYOUT_DRAFT02};
    char url[POSH_MAX_URL_LEN + 1];
    char tried[POSH_MSG_LEN] = "";
    size_t used = 0;

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        bool missing;
        posh_err err;
        if ((cfg->layouts & order[i]) == 0)
            continue;
        err = posh_build_url(order[i], domain, svc, proto, url, sizeof(url));
        if (err != POSH_OK)
            return err;
        err = fetch_doc(curl, cfg, url, deadline_ms, r, doc, &missing);
        if (err != POSH_OK || !missing)
            return err;
        if (used < sizeof(tried)) {
            int n = snprintf(tried + used, sizeof(tried) - used, "%s%s", used ? "; " : "", r->message);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    posh_msg(r->message, sizeof(r->message), "no POSH document for %s (%s)", domain, tried);
    return POSH_ERR_NO_POSH;
}

posh_result *posh_lookup_uncached(posh_client *client, const char *domain, const char *svc, const char *proto)
{
    const posh_config *cfg = client->cfg;
    posh_doc src = {0}, target = {0};
    const posh_doc *fingerprints = NULL;
    int64_t deadline_ms = posh_now_ms() + cfg->timeout_ms;
    time_t started = posh_config_now(cfg);
    int64_t ttl = 0;
    char service[2 * POSH_MAX_SERVICE_LEN + 4];
    lookup_state st;
    posh_result *r;
    bool missing;
    CURL *curl;
    posh_err err;

    st.message[0] = '\0';
    st.trace.n = 0;
    st.followed_reference = 0;
    snprintf(service, sizeof(service), "_%s._%s", svc, proto);
    if ((curl = posh_client_handle_get(client)) == NULL) {
        err = POSH_ERR_NOMEM;
        goto done;
    }
    err = fetch_source(curl, cfg, domain, svc, proto, deadline_ms, &st, &src);
    if (err != POSH_OK)
        goto done;
    ttl = src.expires;
    fingerprints = &src;
    if (src.kind == POSH_DOC_REFERENCE) {
        st.followed_reference = 1;
        err = fetch_doc(curl, cfg, src.url, deadline_ms, &st, &target, &missing);
        if (err == POSH_OK && missing) {
            char why[POSH_MSG_LEN];
            memcpy(why, st.message, sizeof(why));
            posh_msg(st.message, sizeof(st.message), "reference from %s to %s: document not found (%s)", domain,
                     src.url, why);
            err = POSH_ERR_REFERENCE_TARGET;
        } else if (err == POSH_OK && target.kind == POSH_DOC_REFERENCE) {
            posh_msg(st.message, sizeof(st.message), "%s: a reference may not point to another reference (%s)",
                     src.url, target.url);
            err = POSH_ERR_REFERENCE_CHAIN;
        }
        if (err != POSH_OK)
            goto done;
        if (target.expires < ttl)
            ttl = target.expires;
        fingerprints = &target;
    }
    if (ttl > cfg->max_ttl)
        ttl = cfg->max_ttl;
    st.message[0] = '\0';
done:
    posh_client_handle_put(client, curl);
    if (err != POSH_OK) {
        fingerprints = NULL;
        ttl = err == POSH_ERR_NOMEM ? 0 : cfg->negative_ttl;
    }
    r = posh_result_build(&(posh_result_parts){
        .domain = domain,
        .service = service,
        .err = err,
        .message = st.message,
        .trace = &st.trace,
        .followed_reference = st.followed_reference,
        .ttl = (long)ttl,
        .expires_at = started + (time_t)ttl,
        .doc = fingerprints,
        .allow_sha1 = !cfg->no_sha1,
    });
    /* Logged from the result: its message is the escaped one, the same text the application sees. */
    if (err != POSH_OK)
        posh_log(POSH_LOG_INFO, "lookup %s %s: %s: %s", domain, service, posh_strerror(err),
                 r != NULL ? r->message : "(no result: out of memory)");
    trace_clear(&st.trace);
    posh_doc_clear(&src);
    posh_doc_clear(&target);
    return r;
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

int posh_result_followed_reference(const posh_result *r)
{
    return r == NULL ? 0 : r->followed_reference;
}

size_t posh_result_request_count(const posh_result *r)
{
    return r == NULL ? 0 : r->n_requests;
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
