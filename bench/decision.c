/*
 * decision.c - the POSH step of a verification on a warm client, alone: posh_lookup() (cache hit) and
 * posh_match_der() (digest of the leaf, comparison), each call timed, on one thread and on every core at once.
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct worker {
    posh_client *client;
    const unsigned char *der;
    size_t der_len;
    size_t calls;
    double *ns;               /* per call */
    pthread_barrier_t *start;
} worker;

static void *run(void *p)
{
    worker *w = p;
    if (w->start != NULL)
        pthread_barrier_wait(w->start);
    for (size_t i = 0; i < w->calls; i++) {
        posh_result *r = NULL;
        int match = 0, index = -1;
        int64_t t0 = bench_now_ns();
        posh_err err = posh_lookup(w->client, SOURCE, "xmpp-server", &r);
        if (err == POSH_OK)
            err = posh_match_der(w->client, r, w->der, w->der_len, &match, &index);
        posh_result_free(r);
        w->ns[i] = (double)(bench_now_ns() - t0);
        if (err != POSH_OK || !match)
            bench_fail("decision: %s, match %d", posh_strerror(err), match);
    }
    return NULL;
}

/* threads workers of calls each; figures named by the thread count. */
static void measure(posh_client *client, const unsigned char *der, size_t der_len, int threads, size_t calls)
{
    worker *w = bench_xmalloc(sizeof(*w) * (size_t)threads);
    pthread_t *tid = bench_xmalloc(sizeof(*tid) * (size_t)threads);
    double *all = bench_xmalloc(sizeof(double) * calls * (size_t)threads);
    pthread_barrier_t start;
    char name[96];
    int64_t t0, t1;

    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){client, der, der_len, calls, all + (size_t)i * calls, &start};
        if (pthread_create(&tid[i], NULL, run, &w[i]) != 0)
            bench_fail("pthread_create");
    }
    pthread_barrier_wait(&start);
    t0 = bench_now_ns();
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    t1 = bench_now_ns();
    pthread_barrier_destroy(&start);

    snprintf(name, sizeof(name), "lookup+match, %d thread%s: median", threads, threads > 1 ? "s" : "");
    bench_figure("decision", name, bench_percentile(all, calls * (size_t)threads, 50) / 1000.0, "us",
                 BENCH_MEASURED, BENCH_LE, 2.0);
    snprintf(name, sizeof(name), "lookup+match, %d thread%s: p99", threads, threads > 1 ? "s" : "");
    bench_figure("decision", name, bench_percentile(all, calls * (size_t)threads, 99) / 1000.0, "us", BENCH_INFO,
                 BENCH_NONE, 0);
    snprintf(name, sizeof(name), "lookup+match, %d thread%s: throughput (%zu calls each)", threads,
             threads > 1 ? "s" : "", calls);
    bench_figure("decision", name, (double)calls * threads / ((double)(t1 - t0) / 1e9), "op/s", BENCH_INFO,
                 BENCH_NONE, 0);
    free(all);
    free(tid);
    free(w);
}

void bench_decision(bench_env *env)
{
    size_t calls = env->smoke ? 5000 : 300000, der_len = 0;
    const unsigned char *der = ts_cert_der(env->svc, &der_len);
    posh_client *client = bench_client(env, NULL);
    posh_result *r = NULL;
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);

    /* Warm: one real lookup from nginx. */
    if (posh_lookup(client, SOURCE, "xmpp-server", &r) != POSH_OK)
        bench_fail("decision: warming lookup: %s", posh_result_message(r));
    posh_result_free(r);
    measure(client, der, der_len, 1, calls);
    measure(client, der, der_len, cores < 2 ? 2 : cores, calls);
    posh_client_free(client);
}
