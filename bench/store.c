/*
 * store.c - what persisting a lookup costs with the cache directory empty and with 10,000 entries of other keys in
 * it (finding 5: the trim used to scan the whole directory on every write, 27 ms at 10,000 entries). Each run is a
 * new client (its first write counts the directory once) writing N entries of new keys through posh_store_save(),
 * the call a lookup makes once its fetches are done; N is past an eighth of the cache size, so the amortised
 * figure includes the high-water scans and trims; rounds alternate the two, each in new directories. Also: what
 * hashing the default trust anchors costs (the scope, once per client at open, again when the anchors change).
 */
#include "bench.h"

#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* n entries of other keys, as other processes would have left them (the trim reads names and metadata only). */
static void fill(const char *dir, size_t n)
{
    char why[POSH_MSG_LEN], name[POSH_STORE_NAME_LEN + 1], domain[64];
    unsigned char scope[32] = {0};
    int fd = posh_store_dir_open(dir, 1, why, sizeof(why));

    if (fd < 0)
        bench_fail("store: %s", why);
    for (size_t i = 0; i < n; i++) {
        snprintf(domain, sizeof(domain), "other%zu.example", i);
        posh_store_entry_name(domain, "_xmpp-server._tcp", scope, name);
        if (posh_store_write(fd, name, (const unsigned char *)"x", 1, why, sizeof(why)) != 0)
            bench_fail("store: fill: %s", why);
    }
    close(fd);
}

/* Mean ns per persisted lookup over n new keys (the first write included); the first write's in *first_ns, the
 * median write's in *median_ns (the mean carries the rare scans, and the file system's stalls). */
static double persist(const bench_env *env, const char *dir, size_t cache_size, size_t n, double *first_ns,
                      double *median_ns)
{
    double *each = bench_xmalloc(sizeof(double) * n);
    char domain[64];
    char *doc = bench_doc(env, 3600);
    posh_config *cfg = posh_config_new();
    posh_client *c;
    int64_t t0, t1 = 0;

    if (cfg == NULL || posh_config_set_ca_file(cfg, env->ca_file) != POSH_OK ||
        posh_config_set_cache_dir(cfg, dir) != POSH_OK || posh_config_set_cache_size(cfg, (long)cache_size) != POSH_OK)
        bench_fail("store: configuration");
    if ((c = posh_client_new(cfg)) == NULL || c->store == NULL)
        bench_fail("store: no persistent cache");
    posh_config_free(cfg);
    t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
        int64_t w0 = bench_now_ns();
        snprintf(domain, sizeof(domain), "d%zu.example.com", i);
        posh_store_save(c, domain, "_xmpp-server._tcp", (int64_t)time(NULL), "https://" SOURCE RFC7711_PATH, 200,
                        doc, strlen(doc), NULL);
        each[i] = (double)(bench_now_ns() - w0);
        if (i == 0)
            t1 = bench_now_ns();
    }
    *median_ns = bench_median(each, n);
    *first_ns = (double)(t1 - t0);
    t1 = bench_now_ns();
    posh_client_free(c);
    free(doc);
    free(each);
    return (double)(t1 - t0) / (double)n;
}

void bench_store(bench_env *env)
{
    const size_t filled = env->smoke ? 1000 : 10000, n = env->smoke ? 300 : 2500;
    char empty_dir[700], full_dir[700], label[128];
    enum { MAX_ROUNDS = 3 };
    const int rounds = env->smoke ? 1 : MAX_ROUNDS;
    double empty_v[MAX_ROUNDS], full_v[MAX_ROUNDS], first_v[MAX_ROUNDS], empty_med[MAX_ROUNDS], full_med[MAX_ROUNDS];
    double full_first, empty_first, empty_ns, full_ns, scope_ns[9];
    unsigned char scope[32];
    posh_config *dflt = posh_config_new();

    if (dflt == NULL)
        bench_fail("store: out of memory");
    for (size_t i = 0; i < sizeof(scope_ns) / sizeof(scope_ns[0]); i++) {
        int64_t t0 = bench_now_ns();
        if (posh_store_scope(dflt, scope) != 0)
            bench_fail("store: the default trust anchors cannot be hashed");
        scope_ns[i] = (double)(bench_now_ns() - t0);
    }
    posh_config_free(dflt);
    bench_figure("store", "hash the default trust anchors (client start-up)",
                 bench_median(scope_ns, sizeof(scope_ns) / sizeof(scope_ns[0])) / 1e6, "ms", BENCH_INFO, BENCH_NONE,
                 0);

    /* Rounds alternate which goes first, each in new directories; the medians are compared. */
    for (int r = 0; r < rounds; r++) {
        snprintf(empty_dir, sizeof(empty_dir), "%s/store-empty-%d", env->dir, r);
        snprintf(full_dir, sizeof(full_dir), "%s/store-full-%d", env->dir, r);
        fill(full_dir, filled);
        if (r % 2 == 0) {
            empty_v[r] = persist(env, empty_dir, filled, n, &empty_first, &empty_med[r]);
            full_v[r] = persist(env, full_dir, filled, n, &first_v[r], &full_med[r]);
        } else {
            full_v[r] = persist(env, full_dir, filled, n, &first_v[r], &full_med[r]);
            empty_v[r] = persist(env, empty_dir, filled, n, &empty_first, &empty_med[r]);
        }
    }
    empty_ns = bench_median(empty_v, (size_t)rounds);
    full_ns = bench_median(full_v, (size_t)rounds);
    full_first = bench_median(first_v, (size_t)rounds);
    /* Means over n writes each, medians of the rounds. */
    bench_figure("store", "persist a lookup, empty directory (mean)", empty_ns / 1e6, "ms", BENCH_INFO, BENCH_NONE, 0);
    snprintf(label, sizeof(label), "persist a lookup, %zu entries (mean, scans included)", filled);
    bench_figure("store", label, full_ns / 1e6, "ms", BENCH_MEASURED, BENCH_LE, 1);
    snprintf(label, sizeof(label), "ratio %zu entries / empty", filled);
    bench_figure("store", label, full_ns / empty_ns, "x", BENCH_MEASURED, BENCH_LE, 3);
    bench_figure("store", "median write, empty directory", bench_median(empty_med, (size_t)rounds) / 1e6, "ms",
                 BENCH_INFO, BENCH_NONE, 0);
    snprintf(label, sizeof(label), "median write, %zu entries", filled);
    bench_figure("store", label, bench_median(full_med, (size_t)rounds) / 1e6, "ms", BENCH_INFO, BENCH_NONE, 0);
    snprintf(label, sizeof(label), "first write, %zu entries (counts the directory)", filled);
    bench_figure("store", label, full_first / 1e6, "ms", BENCH_INFO, BENCH_NONE, 0);
}
