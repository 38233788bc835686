/*
 * memory.c - bytes per cached domain: one client's cache filled with 100,000 results of two descriptors each,
 * built as a lookup builds them (a parsed document through the library's own result constructor) but without
 * 100,000 HTTPS fetches, then checked through the public posh_lookup().
 */
#include "bench.h"

#include "client_internal.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#define SERVICE_SRV "_xmpp-server._tcp"

/*
 * The one place the benchmark makes a result: if the result's internals change, only this changes. It is what
 * posh_lookup_uncached() stores for a fingerprints document fetched at now.
 */
static posh_result *bench_make_result(const char *domain, const posh_doc *doc, time_t now)
{
    return posh_result_from_doc(domain, SERVICE_SRV, doc, now, 86400);
}

typedef struct fill_arg {
    const char *domain;
    const posh_doc *doc;
    time_t now;
} fill_arg;

static posh_result *fill(void *p)
{
    const fill_arg *a = p;
    return bench_make_result(a->domain, a->doc, a->now);
}

/* A fingerprints document with two random SHA-256 descriptors, parsed by the library's parser. */
static void two_descriptor_doc(posh_doc *doc)
{
    unsigned char d[2][32];
    char b64[2][48], json[256], why[POSH_MSG_LEN];
    if (RAND_bytes(&d[0][0], sizeof(d)) != 1)
        bench_fail("RAND_bytes failed");
    posh_b64_encode(d[0], 32, b64[0], sizeof(b64[0]));
    posh_b64_encode(d[1], 32, b64[1], sizeof(b64[1]));
    snprintf(json, sizeof(json), "{\"fingerprints\":[{\"sha-256\":\"%s\"},{\"sha-256\":\"%s\"}],\"expires\":86400}",
             b64[0], b64[1]);
    if (posh_doc_parse(json, strlen(json), doc, why, sizeof(why)) != POSH_OK)
        bench_fail("parse the memory benchmark's document: %s", why);
}

static long resident_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2)
        bench_fail("read /proc/self/statm");
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

void bench_memory(bool smoke)
{
    size_t n = smoke ? 2000 : 100000, checked = 0;
    posh_config *cfg = posh_config_new();
    posh_client *client;
    posh_doc doc = {0};
    char domain[64], key[128];
    struct mallinfo2 m0, m1;
    long rss0, rss1;
    int64_t t0, t1;
    time_t now;

    /* A miss would be a bug here; were it to happen, the fetch goes to a closed port on loopback. */
    if (cfg == NULL || posh_config_set_cache_size(cfg, (long)n * 2) != POSH_OK ||
        posh_config_set_connect_to(cfg, "::127.0.0.1:1") != POSH_OK || posh_config_set_timeout_ms(cfg, 1000) != POSH_OK)
        bench_fail("memory: configuration");
    if ((client = posh_client_new(cfg)) == NULL)
        bench_fail("memory: posh_client_new failed");
    posh_config_free(cfg);
    two_descriptor_doc(&doc);
    now = posh_config_now(client->cfg);

    m0 = mallinfo2();
    rss0 = resident_bytes();
    t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
        fill_arg a = {domain, &doc, now};
        posh_result *r;
        snprintf(domain, sizeof(domain), "d%zu.example.com", i);
        /* The key posh_lookup() uses: normalised domain, space, canonical service. */
        snprintf(key, sizeof(key), "%s %s", domain, SERVICE_SRV);
        if ((r = posh_cache_get(client->cache, key, now, fill, &a)) == NULL)
            bench_fail("memory: out of memory after %zu entries", i);
        posh_result_free(r);
    }
    t1 = bench_now_ns();
    m1 = mallinfo2();
    rss1 = resident_bytes();

    /* Every entry is a hit through the public API, with its two descriptors. */
    for (size_t i = 0; i < n; i += n / 1000) {
        posh_result *r = NULL;
        posh_err err;
        snprintf(domain, sizeof(domain), "D%zu.Example.COM.", i);
        err = posh_lookup(client, domain, "xmpp-server", &r);
        if (err != POSH_OK || posh_result_descriptor_count(r) != 2 || posh_result_request_count(r) != 0)
            bench_fail("memory: %s is not a cached hit: %s: %s", domain, posh_strerror(err), posh_result_message(r));
        posh_result_free(r);
        checked++;
    }
    if (posh_cache_count(client->cache) != n)
        bench_fail("memory: %zu entries cached, expected %zu", posh_cache_count(client->cache), n);
    bench_note("memory: %zu domains cached, %zu checked through posh_lookup", n, checked);

    bench_figure("memory", "cached domains (2 SHA-256 descriptors each)", (double)n, "", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("memory", "heap bytes per cached domain (mallinfo2)",
                 (double)(m1.uordblks - m0.uordblks) / (double)n, "B", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("memory", "resident bytes per cached domain (RSS delta)", (double)(rss1 - rss0) / (double)n, "B",
                 BENCH_MEASURED, BENCH_LE, 1024);
    bench_figure("memory", "fill time per domain", (double)(t1 - t0) / (double)n / 1000.0, "us", BENCH_INFO,
                 BENCH_NONE, 0);
    posh_doc_clear(&doc);
    posh_client_free(client);
}
