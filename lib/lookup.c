/*
 * lookup.c - the POSH process for one (domain, service): the layouts in order, the reference hop, the expiry
 * min rule; and the result object that records what happened.
 */
#include "client_internal.h"

#include <stdlib.h>
#include <string.h>

posh_result *posh_result_new(void)
{
    posh_result *r = calloc(1, sizeof(*r));
    if (r != NULL)
        r->refs = 1;
    return r;
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
    for (size_t i = 0; i < r->trace.n; i++)
        free(r->trace.req[i].url);
    free(r->descriptors);
    free(r);
}

/* Fetch url and parse it as a POSH document. *missing is set (and POSH_OK returned) on a 4xx. */
static posh_err fetch_doc(CURL *curl, const posh_config *cfg, const char *url, int64_t deadline_ms,
                          posh_result *r, posh_doc *doc, bool *missing)
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
                             const char *proto, int64_t deadline_ms, posh_result *r, posh_doc *doc)
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

static void take_descriptors(posh_result *r, posh_doc *doc)
{
    r->descriptors = doc->descriptors;
    r->n_descriptors = doc->n_descriptors;
    doc->descriptors = NULL;
    doc->n_descriptors = 0;
}

posh_result *posh_lookup_uncached(posh_client *client, const char *domain, const char *svc, const char *proto)
{
    const posh_config *cfg = client->cfg;
    posh_doc src = {0}, target = {0};
    int64_t deadline_ms = posh_now_ms() + cfg->timeout_ms;
    time_t started = posh_config_now(cfg);
    int64_t ttl;
    bool missing;
    posh_result *r;
    CURL *curl = NULL;
    posh_err err;

    if ((r = posh_result_new()) == NULL)
        return NULL;
    snprintf(r->domain, sizeof(r->domain), "%s", domain);
    snprintf(r->service, sizeof(r->service), "_%s._%s", svc, proto);
    if ((curl = posh_client_handle_get(client)) == NULL) {
        err = POSH_ERR_NOMEM;
        goto done;
    }
    err = fetch_source(curl, cfg, domain, svc, proto, deadline_ms, r, &src);
    if (err != POSH_OK)
        goto done;
    ttl = src.expires;
    if (src.kind == POSH_DOC_REFERENCE) {
        r->followed_reference = 1;
        err = fetch_doc(curl, cfg, src.url, deadline_ms, r, &target, &missing);
        if (err == POSH_OK && missing) {
            posh_msg(r->message, sizeof(r->message), "reference from %s to %s: document not found (%s)", domain,
                     src.url, r->message);
            err = POSH_ERR_REFERENCE_TARGET;
        } else if (err == POSH_OK && target.kind == POSH_DOC_REFERENCE) {
            posh_msg(r->message, sizeof(r->message), "%s: a reference may not point to another reference (%s)",
                     src.url, target.url);
            err = POSH_ERR_REFERENCE_CHAIN;
        }
        if (err != POSH_OK)
            goto done;
        if (target.expires < ttl)
            ttl = target.expires;
        take_descriptors(r, &target);
    } else {
        take_descriptors(r, &src);
    }
    if (ttl > cfg->max_ttl)
        ttl = cfg->max_ttl;
    r->ttl = (long)ttl;
    r->message[0] = '\0';
done:
    posh_client_handle_put(client, curl);
    posh_doc_clear(&src);
    posh_doc_clear(&target);
    r->err = err;
    if (err != POSH_OK)
        r->ttl = err == POSH_ERR_NOMEM ? 0 : cfg->negative_ttl;
    r->expires_at = started + r->ttl;
    if (err != POSH_OK)
        posh_log(POSH_LOG_INFO, "lookup %s %s: %s: %s", r->domain, r->service, posh_strerror(err), r->message);
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
    return r == NULL ? 0 : r->trace.n;
}

int posh_result_request(const posh_result *r, size_t i, const char **url, long *http_status)
{
    if (r == NULL || i >= r->trace.n)
        return 0;
    if (url != NULL)
        *url = r->trace.req[i].url;
    if (http_status != NULL)
        *http_status = r->trace.req[i].status;
    return 1;
}

size_t posh_result_descriptor_count(const posh_result *r)
{
    return r == NULL ? 0 : r->n_descriptors;
}

int posh_result_descriptor_hash(const posh_result *r, size_t i, const char *hash_name, char *buf, size_t buflen)
{
    int h;
    size_t need;
    if (r == NULL || hash_name == NULL || buf == NULL || i >= r->n_descriptors)
        return 0;
    h = posh_hash_from_name(hash_name, strlen(hash_name));
    if (h < 0 || (r->descriptors[i].present & (1u << h)) == 0)
        return 0;
    need = 4 * ((posh_hash_len((posh_hash)h) + 2) / 3) + 1;
    if (buflen < need)
        return 0;
    posh_b64_encode(r->descriptors[i].digest[h], posh_hash_len((posh_hash)h), buf, buflen);
    return 1;
}
