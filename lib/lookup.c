/*
 * lookup.c - the POSH process for one (domain, service): the layouts in order, the reference hop (its target
 * cached by URL), the expiry min rule. The result object it builds is result.c's.
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
    /* With a persistent cache: the last document parsed, as fetched (kept for the entry; store.c). */
    bool keep;
    char *body;
    size_t body_len;
    char *body_url;
    long body_status;
} lookup_state;

static void state_init(lookup_state *st, bool keep)
{
    st->message[0] = '\0';
    st->trace.n = 0;
    st->followed_reference = 0;
    st->keep = keep;
    st->body = st->body_url = NULL;
    st->body_len = 0;
    st->body_status = 0;
}

static void trace_clear(posh_trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->req[i].url);
    t->n = 0;
}

static void state_clear(lookup_state *st)
{
    trace_clear(&st->trace);
    free(st->body);
    free(st->body_url);
    st->body = st->body_url = NULL;
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
    if (err != POSH_OK) {
        posh_msg(r->message, sizeof(r->message), "%s: %s", fr.final_url, why);
    } else if (r->keep) {
        free(r->body);
        free(r->body_url);
        r->body = fr.body;
        r->body_len = fr.body_len;
        r->body_url = fr.final_url;
        r->body_status = fr.status;
        fr.body = fr.final_url = NULL;
    }
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

/*
 * Reference targets are cached by URL (client->targets) and shared by every (domain, service) that refers to
 * them, so 1,000 hosted domains naming one provider document cost one fetch of it, not 1,000.
 *
 * Key: the URL exactly as the reference gives it (it passed posh_url_is_https when parsed). Sharing it across
 * source domains poisons nothing: the bytes under a URL are whatever that URL's own host serves over HTTPS
 * verified against that host (and every redirect hop verified against its own), whichever domain referred to
 * it. A referring domain chooses which URL, never what is stored under it: a hostile domain naming a
 * provider's URL gets, and caches, exactly what any other domain naming it would get.
 *
 * Lifetime: the target's own expires, capped by the maximum TTL, on the client's clock from when its fetch
 * began. A failure (4xx: POSH_ERR_REFERENCE_TARGET; a reference to a reference; 5xx, TLS, bad JSON, ...)
 * lives the negative TTL, so domains pointing at a dead provider cost one fetch per negative TTL between
 * them. Two failures live 0 (stale at once: never served from the cache to a later lookup): POSH_ERR_NOMEM,
 * which is ours, and POSH_ERR_TIMEOUT, which ran out the referring lookup's budget: a referring domain that
 * dawdles before answering leaves its target little time, and must not make the target fail for every other
 * domain that names it (a lookup that waited for such a fill tries again on its own budget).
 * A domain's result built on a target never outlives it: see posh_lookup_uncached.
 *
 * The fill runs on the calling lookup's curl handle and within its deadline; concurrent lookups of the same
 * URL wait for it (the cache's single flight). A domain lookup waiting here holds no lock: its own domain
 * entry is merely marked pending, and a target fill never waits on a domain entry, so there is no cycle.
 */
typedef struct target_fill {
    posh_client *client;
    CURL *curl;
    const char *url;
    int64_t deadline_ms;
    bool ran;                  /* this lookup fetched the target (else it came from the URL cache) */
} target_fill;

static posh_result *fill_target(void *arg)
{
    target_fill *a = arg;
    const posh_config *cfg = a->client->cfg;
    time_t started = posh_config_now(cfg);
    int64_t started_wall = posh_config_wall_now(cfg);
    posh_doc doc = {0};
    int64_t ttl = 0;
    lookup_state st;
    posh_result *r;
    bool missing;
    posh_err err;

    a->ran = true;
    state_init(&st, a->client->store != NULL);
    err = fetch_doc(a->curl, cfg, a->url, a->deadline_ms, &st, &doc, &missing);
    if (err == POSH_OK && missing) {
        err = POSH_ERR_REFERENCE_TARGET; /* st.message names the URL and the status */
    } else if (err == POSH_OK && doc.kind == POSH_DOC_REFERENCE) {
        posh_msg(st.message, sizeof(st.message), "%s: a reference may not point to another reference (%s)", a->url,
                 doc.url);
        err = POSH_ERR_REFERENCE_CHAIN;
    }
    if (err == POSH_OK) {
        ttl = doc.expires < cfg->max_ttl ? doc.expires : cfg->max_ttl;
        st.message[0] = '\0';
    } else {
        ttl = err == POSH_ERR_NOMEM || err == POSH_ERR_TIMEOUT ? 0 : cfg->negative_ttl;
    }
    r = posh_result_build(&(posh_result_parts){
        .domain = a->url,
        .service = "",
        .err = err,
        .message = st.message,
        .trace = &st.trace,
        .ttl = (long)ttl,
        .expires_at = started + (time_t)ttl,
        .doc = err == POSH_OK ? &doc : NULL,
        .allow_sha1 = !cfg->no_sha1,
        .fetched_wall = started_wall,
        .raw_doc = err == POSH_OK ? st.body : NULL,
        .raw_doc_len = st.body_len,
        .raw_url = st.body_url,
        .raw_status = st.body_status,
    });
    state_clear(&st);
    posh_doc_clear(&doc);
    return r;
}

posh_result *posh_lookup_uncached(posh_client *client, const char *domain, const char *svc, const char *proto)
{
    const posh_config *cfg = client->cfg;
    posh_doc src = {0};
    const posh_doc *fingerprints = NULL;
    posh_result *target = NULL;
    target_fill tf = {0};
    posh_escape_mode escape = POSH_ESCAPE_RAW;
    int64_t deadline_ms = posh_now_ms() + cfg->timeout_ms;
    time_t started = posh_config_now(cfg);
    int64_t started_wall = posh_config_wall_now(cfg);
    int64_t ttl = 0;
    char service[2 * POSH_MAX_SERVICE_LEN + 4];
    lookup_state st;
    posh_result *r;
    CURL *curl;
    posh_err err;

    state_init(&st, client->store != NULL);
    snprintf(service, sizeof(service), "_%s._%s", svc, proto);
    if ((curl = posh_client_handle_get(client)) == NULL) {
        const char *why = posh_client_curl_problem();
        err = why != NULL ? POSH_ERR_INTERNAL : POSH_ERR_NOMEM;
        if (why != NULL)
            posh_msg(st.message, sizeof(st.message), "%s", why);
        goto done;
    }
    err = fetch_source(curl, cfg, domain, svc, proto, deadline_ms, &st, &src);
    if (err != POSH_OK)
        goto done;
    ttl = src.expires;
    fingerprints = &src;
    if (src.kind == POSH_DOC_REFERENCE) {
        st.followed_reference = 1;
        fingerprints = NULL; /* the target's result carries them */
        tf = (target_fill){.client = client, .curl = curl, .url = src.url, .deadline_ms = deadline_ms};
        /*
         * Another lookup's fill that ran out of its budget says nothing of ours: try again while ours lasts (a
         * few times at most, should an injected clock run backwards and keep that result fresh).
         */
        for (int tries = 0;; tries++) {
            target = posh_cache_get(client->targets, src.url, posh_config_now(cfg), fill_target, &tf);
            if (target == NULL || target->err != POSH_ERR_TIMEOUT || tf.ran || tries == 3 ||
                posh_now_ms() >= deadline_ms)
                break;
            posh_result_free(target);
        }
        if (target == NULL) {
            err = POSH_ERR_NOMEM;
            goto done;
        }
        err = target->err;
        if (err != POSH_OK) {
            /* The target's message is escaped already (it is a result's); what we add to it is escaped here. */
            escape = POSH_ESCAPE_MESSAGE;
            if (err == POSH_ERR_REFERENCE_TARGET) {
                char url[POSH_MSG_LEN];
                posh_escape(url, sizeof(url), src.url, POSH_ESCAPE_RAW);
                posh_msg(st.message, sizeof(st.message), "reference from %s to %s: document not found (%s)", domain,
                         url, target->message);
            } else {
                posh_msg(st.message, sizeof(st.message), "%s", target->message);
            }
            goto done;
        }
        if (target->ttl < ttl)
            ttl = target->ttl;
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
    /*
     * Never longer than the shared target the result was built on: a target fetched earlier for another domain
     * has only the rest of its life left (RFC 7711 section 6: the lower expires of the chain decides, then the
     * whole process runs again from the source domain; the target is fetched again once it is stale itself).
     * A timeout is not the target's to share (fill_target): the domain's failure lives the negative TTL.
     */
    if (target != NULL && target->err != POSH_ERR_TIMEOUT && target->expires_at - started < ttl)
        ttl = target->expires_at - started > 0 ? (int64_t)(target->expires_at - started) : 0;
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
        .target = target,
        .target_shared = !tf.ran,
        .escape = escape,
    });
    /* Logged from the result: its message is the escaped one, the same text the application sees. */
    if (err != POSH_OK)
        posh_log(POSH_LOG_INFO, "lookup %s %s: %s: %s", domain, service, posh_strerror(err),
                 r != NULL ? r->message : "(no result: out of memory)");
    /* Only successes are persisted: a "no POSH" on disk would outlive the negative TTL in every process. */
    if (err == POSH_OK && r != NULL && r->ttl > 0)
        posh_store_save(client, domain, service, started_wall, st.body_url, st.body_status, st.body, st.body_len,
                        target);
    state_clear(&st);
    posh_doc_clear(&src);
    posh_result_free(target);
    return r;
}
