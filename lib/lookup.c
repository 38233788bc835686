/*
 * lookup.c - the POSH process for one (domain, service): the layouts in order, the reference hop (its target
 * cached by URL), the expiry min rule. The result object it builds is result.c's.
 */
#include "client_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

typedef posh_lookup_state lookup_state;

void posh_lookup_state_init(lookup_state *st, bool keep)
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

void posh_lookup_state_clear(lookup_state *st)
{
    trace_clear(&st->trace);
    free(st->body);
    free(st->body_url);
    st->body = st->body_url = NULL;
}

/* Judge a finished fetch as a POSH document (fr is consumed). *missing is set (and POSH_OK returned) on a 4xx. */
static posh_err doc_from_fetch(const posh_config *cfg, posh_err err, posh_fetch_result *fr, lookup_state *r,
                               posh_doc *doc, bool *missing)
{
    char why[POSH_MSG_LEN];

    *missing = false;
    if (err != POSH_OK)
        return err;
    if (fr->status >= 400) {
        *missing = true;
        posh_msg(r->message, sizeof(r->message), "%s: HTTP status %ld", fr->final_url, fr->status);
        posh_fetch_result_clear(fr);
        return POSH_OK;
    }
    err = posh_doc_parse_formats(fr->body, fr->body_len, cfg->formats, doc, why, sizeof(why));
    if (err != POSH_OK) {
        posh_msg(r->message, sizeof(r->message), "%s: %s", fr->final_url, why);
    } else if (r->keep) {
        free(r->body);
        free(r->body_url);
        r->body = fr->body;
        r->body_len = fr->body_len;
        r->body_url = fr->final_url;
        r->body_status = fr->status;
        fr->body = fr->final_url = NULL;
    }
    posh_fetch_result_clear(fr);
    return err;
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

posh_result *posh_target_result(posh_client *client, const char *url, time_t started, int64_t started_wall,
                                posh_err err, posh_fetch_result *fr, lookup_state *st)
{
    const posh_config *cfg = client->cfg;
    posh_doc doc = {0};
    int64_t ttl = 0;
    posh_result *r;
    bool missing;

    err = doc_from_fetch(cfg, err, fr, st, &doc, &missing);
    if (err == POSH_OK && missing) {
        err = POSH_ERR_REFERENCE_TARGET; /* st->message names the URL and the status */
    } else if (err == POSH_OK && doc.kind == POSH_DOC_REFERENCE) {
        posh_msg(st->message, sizeof(st->message), "%s: a reference may not point to another reference (%s)", url,
                 doc.url);
        err = POSH_ERR_REFERENCE_CHAIN;
    }
    if (err == POSH_OK) {
        ttl = doc.expires < cfg->max_ttl ? doc.expires : cfg->max_ttl;
        st->message[0] = '\0';
    } else {
        ttl = err == POSH_ERR_NOMEM || err == POSH_ERR_TIMEOUT ? 0 : cfg->negative_ttl;
    }
    r = posh_result_build(&(posh_result_parts){
        .domain = url,
        .service = "",
        .err = err,
        .message = st->message,
        .trace = &st->trace,
        .ttl = (long)ttl,
        .expires_at = started + (time_t)ttl,
        .doc = err == POSH_OK ? &doc : NULL,
        .allow_sha1 = !cfg->no_sha1,
        .fetched_wall = started_wall,
        .raw_doc = err == POSH_OK ? st->body : NULL,
        .raw_doc_len = st->body_len,
        .raw_url = st->body_url,
        .raw_status = st->body_status,
    });
    posh_doc_clear(&doc);
    return r;
}

static posh_result *fill_target(void *arg)
{
    target_fill *a = arg;
    const posh_config *cfg = a->client->cfg;
    time_t started = posh_config_now(cfg);
    int64_t started_wall = posh_config_wall_now(cfg);
    posh_fetch_result fr;
    lookup_state st;
    posh_result *r;
    posh_err err;

    a->ran = true;
    posh_lookup_state_init(&st, a->client->store != NULL);
    err = posh_fetch(a->curl, cfg, a->url, a->deadline_ms, &st.trace, &fr, st.message, sizeof(st.message));
    r = posh_target_result(a->client, a->url, started, started_wall, err, &fr, &st);
    posh_lookup_state_clear(&st);
    return r;
}

/* ---- one lookup as steps (posh_run): driven by posh_lookup_uncached below, or by the engine (engine.c) ---- */

static const unsigned layout_order[] = {POSH_LAYOUT_RFC7711, POSH_LAYOUT_DRAFT02};

void posh_run_init(posh_run *run, posh_client *client, const char *domain, const char *svc, const char *proto)
{
    const posh_config *cfg = client->cfg;

    memset(run, 0, sizeof(*run));
    run->client = client;
    snprintf(run->domain, sizeof(run->domain), "%s", domain);
    snprintf(run->svc, sizeof(run->svc), "%s", svc);
    snprintf(run->proto, sizeof(run->proto), "%s", proto);
    snprintf(run->service, sizeof(run->service), "_%s._%s", svc, proto);
    run->deadline_ms = posh_now_ms() + cfg->timeout_ms;
    run->started = posh_config_now(cfg);
    run->started_wall = posh_config_wall_now(cfg);
    run->escape = POSH_ESCAPE_RAW;
    posh_lookup_state_init(&run->st, client->store != NULL);
}

void posh_run_fail(posh_run *run, posh_err err, const char *message)
{
    run->err = err;
    posh_msg(run->st.message, sizeof(run->st.message), "%s", message != NULL ? message : "");
}

const char *posh_run_next_source(posh_run *run)
{
    const posh_config *cfg = run->client->cfg;

    while (run->layout < sizeof(layout_order) / sizeof(layout_order[0])) {
        unsigned layout = layout_order[run->layout++];
        posh_err err;
        if ((cfg->layouts & layout) == 0)
            continue;
        err = posh_build_url(layout, run->domain, run->svc, run->proto, run->url, sizeof(run->url));
        if (err != POSH_OK) {
            run->err = err;
            return NULL;
        }
        return run->url;
    }
    posh_msg(run->st.message, sizeof(run->st.message), "no POSH document for %s (%s)", run->domain, run->tried);
    run->err = POSH_ERR_NO_POSH;
    return NULL;
}

posh_run_next posh_run_source_done(posh_run *run, posh_err err, posh_fetch_result *fr)
{
    bool missing;

    err = doc_from_fetch(run->client->cfg, err, fr, &run->st, &run->src, &missing);
    if (err == POSH_OK && missing) {
        /* 4xx: remember why, try the next layout. */
        if (run->tried_used < sizeof(run->tried)) {
            int n = snprintf(run->tried + run->tried_used, sizeof(run->tried) - run->tried_used, "%s%s",
                             run->tried_used ? "; " : "", run->st.message);
            run->tried_used += n > 0 ? (size_t)n : 0;
        }
        return POSH_RUN_NEXT_SOURCE;
    }
    run->err = err;
    if (err != POSH_OK)
        return POSH_RUN_FINISH;
    run->ttl = run->src.expires;
    if (run->src.kind == POSH_DOC_REFERENCE) {
        run->st.followed_reference = 1;
        return POSH_RUN_TARGET;
    }
    run->fingerprints = &run->src;
    return POSH_RUN_FINISH;
}

bool posh_run_target_retry(const posh_run *run, const posh_result *target, bool ran, int tries)
{
    /*
     * Another lookup's fill that ran out of its budget says nothing of ours: try again while ours lasts (a few
     * times at most, should an injected clock run backwards and keep that result fresh).
     */
    return target != NULL && target->err == POSH_ERR_TIMEOUT && !ran && tries < 3 &&
           posh_now_ms() < run->deadline_ms;
}

void posh_run_target_done(posh_run *run, posh_result *target, bool ran)
{
    run->target = target;
    run->target_ran = ran;
    if (target == NULL) {
        run->err = POSH_ERR_NOMEM;
        return;
    }
    run->err = target->err;
    if (run->err != POSH_OK) {
        /* The target's message is escaped already (it is a result's); what we add to it is escaped here. */
        run->escape = POSH_ESCAPE_MESSAGE;
        if (run->err == POSH_ERR_REFERENCE_TARGET) {
            char url[POSH_MSG_LEN];
            posh_escape(url, sizeof(url), run->src.url, POSH_ESCAPE_RAW);
            posh_msg(run->st.message, sizeof(run->st.message), "reference from %s to %s: document not found (%s)",
                     run->domain, url, target->message);
        } else {
            posh_msg(run->st.message, sizeof(run->st.message), "%s", target->message);
        }
        return;
    }
    if (target->ttl < run->ttl)
        run->ttl = target->ttl;
}

/*
 * How long a failed lookup is remembered: the negative TTL, except for failures of this process and not of the
 * domain (out of memory, cancelled by posh_client_free, no transfer free in time), which the next caller retries.
 */
static long failure_ttl(const posh_config *cfg, posh_err err)
{
    return err == POSH_ERR_NOMEM || err == POSH_ERR_CANCELLED || err == POSH_ERR_BUSY ? 0 : cfg->negative_ttl;
}

posh_result *posh_run_finish(posh_run *run)
{
    posh_client *client = run->client;
    const posh_config *cfg = client->cfg;
    posh_result *target = run->target;
    posh_err err = run->err;
    int64_t ttl = run->ttl;
    posh_result *r;

    if (err == POSH_OK) {
        if (ttl > cfg->max_ttl)
            ttl = cfg->max_ttl;
        run->st.message[0] = '\0';
    } else {
        run->fingerprints = NULL;
        ttl = failure_ttl(cfg, err);
    }
    /*
     * Never longer than the shared target the result was built on: a target fetched earlier for another domain
     * has only the rest of its life left (RFC 7711 section 6: the lower expires of the chain decides, then the
     * whole process runs again from the source domain; the target is fetched again once it is stale itself).
     * A timeout is not the target's to share (fill_target): the domain's failure lives the negative TTL.
     */
    if (target != NULL && target->err != POSH_ERR_TIMEOUT && target->expires_at - run->started < ttl)
        ttl = target->expires_at - run->started > 0 ? (int64_t)(target->expires_at - run->started) : 0;
    r = posh_result_build(&(posh_result_parts){
        .domain = run->domain,
        .service = run->service,
        .err = err,
        .message = run->st.message,
        .trace = &run->st.trace,
        .followed_reference = run->st.followed_reference,
        .ttl = (long)ttl,
        .expires_at = run->started + (time_t)ttl,
        .doc = run->fingerprints,
        .allow_sha1 = !cfg->no_sha1,
        .target = target,
        .target_shared = !run->target_ran,
        .escape = run->escape,
    });
    /* Logged from the result: its message is the escaped one, the same text the application sees. */
    if (err != POSH_OK)
        posh_log(POSH_LOG_INFO, "lookup %s %s: %s: %s", run->domain, run->service, posh_strerror(err),
                 r != NULL ? r->message : "(no result: out of memory)");
    /* Only successes are persisted: a "no POSH" on disk would outlive the negative TTL in every process. */
    if (err == POSH_OK && r != NULL && r->ttl > 0)
        posh_store_save(client, run->domain, run->service, run->started_wall, run->st.body_url,
                        run->st.body_status, run->st.body, run->st.body_len, target);
    posh_run_clear(run);
    return r;
}

void posh_run_clear(posh_run *run)
{
    posh_lookup_state_clear(&run->st);
    posh_doc_clear(&run->src);
    posh_result_free(run->target);
    run->target = NULL;
    run->fingerprints = NULL;
}

posh_result *posh_lookup_uncached(posh_client *client, const char *domain, const char *svc, const char *proto)
{
    posh_run run;
    target_fill tf = {0};
    posh_run_next next = POSH_RUN_FINISH;
    const char *url;
    CURL *curl;

    posh_run_init(&run, client, domain, svc, proto);
    if ((curl = posh_client_handle_get(client)) == NULL) {
        const char *why = posh_client_curl_problem();
        posh_run_fail(&run, why != NULL ? POSH_ERR_INTERNAL : POSH_ERR_NOMEM, why);
        return posh_run_finish(&run);
    }
    while ((url = posh_run_next_source(&run)) != NULL) {
        posh_fetch_result fr;
        posh_err err = posh_fetch(curl, client->cfg, url, run.deadline_ms, &run.st.trace, &fr, run.st.message,
                                  sizeof(run.st.message));
        if ((next = posh_run_source_done(&run, err, &fr)) != POSH_RUN_NEXT_SOURCE)
            break;
    }
    if (url != NULL && next == POSH_RUN_TARGET) {
        posh_result *target;
        tf = (target_fill){.client = client, .curl = curl, .url = run.src.url, .deadline_ms = run.deadline_ms};
        for (int tries = 0;; tries++) {
            target = posh_cache_get(client->targets, run.src.url, posh_config_now(client->cfg), fill_target, &tf);
            if (!posh_run_target_retry(&run, target, tf.ran, tries))
                break;
            posh_result_free(target);
        }
        posh_run_target_done(&run, target, tf.ran);
    }
    posh_client_handle_put(client, curl);
    return posh_run_finish(&run);
}

/* ---- Secure Service Delegation: one document per (domain, service), no reference, no expires ---- */

const char *posh_delegation_url(const char *domain, const char *svc, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "https://%s/.well-known/services/%s/", domain, svc);
    return n > 0 && (size_t)n < outlen ? out : NULL;
}

posh_result *posh_delegation_result(posh_client *client, const char *domain, const char *service, time_t started,
                                    posh_err err, posh_fetch_result *fr, posh_lookup_state *st)
{
    const posh_config *cfg = client->cfg;
    posh_delegation_doc doc = {0};
    char why[POSH_MSG_LEN];
    long ttl;
    posh_result *r;

    if (err == POSH_OK && fr->status >= 400) {
        posh_msg(st->message, sizeof(st->message), "%s: HTTP status %ld: no delegation document", fr->final_url,
                 fr->status);
        err = POSH_ERR_NO_DELEGATION;
    } else if (err == POSH_OK &&
               (err = posh_delegation_parse(fr->body, fr->body_len, &doc, why, sizeof(why))) != POSH_OK) {
        posh_msg(st->message, sizeof(st->message), "%s: %s", fr->final_url, why);
    }
    if (err == POSH_OK) {
        /* The draft has no expires: the configured maximum, lowered by what the response says of itself. */
        ttl = fr->max_age >= 0 && fr->max_age < cfg->max_ttl ? fr->max_age : cfg->max_ttl;
        st->message[0] = '\0';
    } else {
        ttl = failure_ttl(cfg, err);
    }
    r = posh_result_build(&(posh_result_parts){
        .domain = domain,
        .service = service,
        .err = err,
        .message = st->message,
        .trace = &st->trace,
        .ttl = ttl,
        .expires_at = started + (time_t)ttl,
        .delegations = err == POSH_OK ? &doc : NULL,
    });
    if (err != POSH_OK)
        posh_log(POSH_LOG_INFO, "delegation %s %s: %s: %s", domain, service, posh_strerror(err),
                 r != NULL ? r->message : "(no result: out of memory)");
    posh_delegation_clear(&doc);
    posh_fetch_result_clear(fr);
    return r;
}

posh_result *posh_delegation_uncached(posh_client *client, const char *domain, const char *svc, const char *proto)
{
    char url[POSH_MAX_URL_LEN + 1], service[2 * POSH_MAX_SERVICE_LEN + 4];
    time_t started = posh_config_now(client->cfg);
    posh_fetch_result fr = {0};
    posh_lookup_state st;
    posh_result *r;
    posh_err err;
    CURL *curl;

    snprintf(service, sizeof(service), "_%s._%s", svc, proto);
    posh_lookup_state_init(&st, false);
    if ((curl = posh_client_handle_get(client)) == NULL) {
        const char *why = posh_client_curl_problem();
        err = why != NULL ? POSH_ERR_INTERNAL : POSH_ERR_NOMEM;
        posh_msg(st.message, sizeof(st.message), "%s", why != NULL ? why : "");
    } else if (posh_delegation_url(domain, svc, url, sizeof(url)) == NULL) {
        err = POSH_ERR_BAD_DOMAIN;
    } else {
        err = posh_fetch(curl, client->cfg, url, posh_now_ms() + client->cfg->timeout_ms, &st.trace, &fr,
                         st.message, sizeof(st.message));
    }
    r = posh_delegation_result(client, domain, service, started, err, &fr, &st);
    posh_client_handle_put(client, curl);
    posh_lookup_state_clear(&st);
    return r;
}
