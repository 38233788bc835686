/*
 * store.c - the persistent cache: the second level under the in-memory cache (client.c's fill tries it
 * before fetching; lookup.c writes a successful lookup to it). Entries are re-judged on every load: parsed
 * again, checked against the name they were asked under, and expired on the wall clock. Nothing here ever
 * fails a lookup: a problem is logged and the lookup fetches.
 */
#include "client_internal.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The directory's byte cap (README "Persistent cache"); its entry cap is the cache size. */
#define STORE_MAX_BYTES (64ull * 1024 * 1024)

struct posh_store {
    int dirfd;
    unsigned char scope[32];  /* posh_store_scope() of the client's configuration */
    int write_warned;  /* atomic: the first failed write is a warning, later ones are debug lines */
};

/*
 * What decides how a document is fetched and so whether it can be trusted: the trust anchors for the HTTPS
 * fetches, where the connections go, the URL layouts and the redirect limit. An entry is filed under this too
 * (posh_store_entry_name): a process with other trust anchors or routing never takes another's entry for one it
 * would have fetched itself. (Limits that are judged again on load, such as POSH_MAX_BYTES or POSH_NO_SHA1, are
 * not part of it.)
 */
void posh_store_scope(const posh_config *cfg, unsigned char out[32])
{
    char buf[64];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const char *const parts[] = {cfg->ca_file, cfg->ca_path, cfg->connect_to};
    unsigned int n = 0;
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;

    for (size_t i = 0; ok && i < sizeof(parts) / sizeof(parts[0]); i++) {
        /* A tag per part (set or not), then its bytes and a NUL: no two configurations hash alike by shifting. */
        ok = EVP_DigestUpdate(ctx, parts[i] != NULL ? "s" : "-", 1) == 1 &&
             (parts[i] == NULL || EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1) == 1);
    }
    snprintf(buf, sizeof(buf), "layouts=%u redirects=%ld", cfg->layouts, cfg->max_redirects);
    ok = ok && EVP_DigestUpdate(ctx, buf, strlen(buf)) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(out, 0xff, 32); /* a scope no real configuration has: entries are simply not found */
}

posh_store *posh_store_open(const posh_config *cfg)
{
    char why[POSH_MSG_LEN];
    posh_store *s;
    int fd;

    if (cfg->cache_dir == NULL)
        return NULL;
    if ((fd = posh_store_dir_open(cfg->cache_dir, 1, why, sizeof(why))) < 0) {
        posh_log(POSH_LOG_WARNING, "persistent cache not used: %s; results are cached in memory only", why);
        return NULL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        close(fd);
        return NULL;
    }
    s->dirfd = fd;
    posh_store_scope(cfg, s->scope);
    return s;
}

void posh_store_free(posh_store *s)
{
    if (s == NULL)
        return;
    close(s->dirfd);
    free(s);
}

void posh_store_flush(posh_store *s)
{
    if (s != NULL)
        posh_store_trim(s->dirfd, 0, 0, 0);
}

/* The largest entry this client can have written: two documents of max_bytes each and the rest at its cap. */
static size_t entry_cap(const posh_config *cfg)
{
    return POSH_STORE_MAX_ENTRY - 2 * (size_t)POSH_STORE_MAX_DOC + 2 * (size_t)cfg->max_bytes;
}

static int64_t life(int64_t expires, long max_ttl)
{
    return expires < max_ttl ? expires : (int64_t)max_ttl;
}

posh_result *posh_store_load(posh_client *client, const char *domain, const char *service)
{
    const posh_config *cfg = client->cfg;
    char name[POSH_STORE_NAME_LEN + 1], why[POSH_MSG_LEN];
    unsigned char *buf = NULL;
    posh_store_entry e;
    posh_trace trace = {.n = 0};
    posh_result *r = NULL;
    int64_t now, left;
    size_t len;
    int rc;

    memset(&e, 0, sizeof(e));
    if (client->store == NULL)
        return NULL;
    posh_store_entry_name(domain, service, client->store->scope, name);
    rc = posh_store_read(client->store->dirfd, name, entry_cap(cfg), &buf, &len, why, sizeof(why));
    if (rc == 0)
        return NULL;
    if (rc < 0)
        goto refused;
    if (posh_store_entry_parse(buf, len, &e, why, sizeof(why)) != POSH_OK)
        goto refused;
    if (strcmp(e.domain, domain) != 0 || strcmp(e.service, service) != 0) {
        posh_msg(why, sizeof(why), "an entry for %s %s", e.domain, e.service);
        goto refused;
    }
    if (e.source_doc_len > (size_t)cfg->max_bytes || e.target_doc_len > (size_t)cfg->max_bytes) {
        posh_msg(why, sizeof(why), "a document over the body cap of %ld bytes", cfg->max_bytes);
        goto refused;
    }
    if (((e.source.kind == POSH_DOC_REFERENCE ? e.target.format : e.source.format) & cfg->formats) == 0) {
        posh_msg(why, sizeof(why), "a document of a form this client does not accept (POSH_FORMATS)");
        goto refused;
    }
    /* Wall-clock expiry. Fetched "in the future": the clock went back, and nothing says how old it is. */
    now = posh_config_wall_now(cfg);
    if (e.fetched > now || e.target_fetched > now) {
        posh_log(POSH_LOG_DEBUG, "cache entry %s %s: fetched after now (the clock went back): stale", domain,
                 service);
        goto done;
    }
    left = e.fetched + life(e.source.expires, cfg->max_ttl) - now;
    if (e.source.kind == POSH_DOC_REFERENCE && e.target_fetched + life(e.target.expires, cfg->max_ttl) - now < left)
        left = e.target_fetched + life(e.target.expires, cfg->max_ttl) - now;
    if (left <= 0)
        goto done; /* stale: fetched again, and replaced */
    trace.req[trace.n++] = (posh_request){.url = e.source_url, .status = (long)e.source_status};
    if (e.source.kind == POSH_DOC_REFERENCE)
        trace.req[trace.n++] = (posh_request){.url = e.target_url, .status = (long)e.target_status};
    r = posh_result_build(&(posh_result_parts){
        .domain = domain,
        .service = service,
        .err = POSH_OK,
        .message = "",
        .trace = &trace,
        .followed_reference = e.source.kind == POSH_DOC_REFERENCE,
        .ttl = (long)left,
        .expires_at = posh_config_now(cfg) + (time_t)left,
        .doc = e.source.kind == POSH_DOC_REFERENCE ? &e.target : &e.source,
        .allow_sha1 = !cfg->no_sha1,
        .from_store = true,
    });
    goto done;
refused:
    posh_log(POSH_LOG_WARNING, "cache entry %s for %s %s ignored: %s", name, domain, service, why);
done:
    posh_store_entry_clear(&e);
    free(buf);
    return r;
}

void posh_store_save(posh_client *client, const char *domain, const char *service, int64_t fetched_wall,
                     const char *src_url, long src_status, const char *src_doc, size_t src_len,
                     const posh_result *target)
{
    posh_store *s = client->store;
    char name[POSH_STORE_NAME_LEN + 1], why[POSH_MSG_LEN];
    posh_store_entry e;
    unsigned char *buf = NULL;
    size_t len;

    if (s == NULL || src_url == NULL || src_doc == NULL || (target != NULL && target->doc == NULL))
        return;
    memset(&e, 0, sizeof(e));
    e.fetched = fetched_wall;
    posh_msg(e.domain, sizeof(e.domain), "%s", domain);
    posh_msg(e.service, sizeof(e.service), "%s", service);
    posh_msg(e.source_url, sizeof(e.source_url), "%s", src_url);
    e.source_status = (uint32_t)src_status;
    e.source_doc = src_doc;
    e.source_doc_len = src_len;
    if (target != NULL) {
        e.target_fetched = target->fetched_wall;
        posh_msg(e.target_url, sizeof(e.target_url), "%s", target->doc_url);
        e.target_status = (uint32_t)target->doc_status;
        e.target_doc = target->doc;
        e.target_doc_len = target->doc_len;
    }
    posh_store_entry_name(domain, service, s->scope, name);
    if (posh_store_entry_serialize(&e, &buf, &len) != POSH_OK) {
        posh_msg(why, sizeof(why), "cannot serialise the entry");
    } else if (posh_store_write(s->dirfd, name, buf, len, why, sizeof(why)) == 0) {
        posh_store_trim(s->dirfd, (size_t)client->cfg->cache_size, STORE_MAX_BYTES, posh_config_wall_now(client->cfg));
        goto done;
    }
    posh_log(__atomic_exchange_n(&s->write_warned, 1, __ATOMIC_RELAXED) ? POSH_LOG_DEBUG : POSH_LOG_WARNING,
             "persistent cache: %s %s not written: %s", domain, service, why);
done:
    free(buf);
}
