/*
 * many.c - many hosted domains at one provider: 1,000 distinct cold domains (d0..d999.example.com, all served
 * by nginx's default site) whose documents all reference the same provider URL, looked up by 1, 2 and 4
 * threads sharing one client. Counted at nginx: TLS connections to each web server, fetches of the provider
 * document and of the source documents. The provider's document is cached by its URL and shared by every
 * domain (single flight across domains): one fetch, over one connection, per cold client; one source fetch per
 * domain, since each domain's own document is never shared.
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct many_run {
    posh_client *client;
    size_t domains;
    atomic_size_t next;
} many_run;

static void *worker(void *p)
{
    many_run *m = p;
    char domain[64];
    for (;;) {
        size_t i = atomic_fetch_add(&m->next, 1);
        posh_result *r = NULL;
        posh_err err;
        if (i >= m->domains)
            return NULL;
        snprintf(domain, sizeof(domain), "d%zu.example.com", i);
        err = posh_lookup(m->client, domain, "xmpp-server", &r);
        if (err != POSH_OK || !posh_result_followed_reference(r))
            bench_fail("many: %s: %s: %s", domain, posh_strerror(err), posh_result_message(r));
        posh_result_free(r);
    }
}

typedef struct counts {
    long provider_conns, all_conns, provider_fetches, source_fetches;
} counts;

static counts count(bench_env *env)
{
    counts c;
    c.provider_conns = ts_nginx_connections(env->nginx, PROVIDER);
    c.all_conns = ts_nginx_connections(env->nginx, NULL);
    c.provider_fetches = ts_nginx_requests(env->nginx, PROVIDER, PROVIDER_PATH);
    c.source_fetches = ts_nginx_requests(env->nginx, NULL, RFC7711_PATH);
    BENCH_CHECK(c.provider_conns >= 0 && c.all_conns >= 0 && c.provider_fetches >= 0 && c.source_fetches >= 0,
                "nginx counts");
    return c;
}

static void run(bench_env *env, int threads, size_t domains)
{
    many_run m = {.domains = domains};
    pthread_t tid[16];
    counts before, after;
    int64_t t0, t1;
    char name[96];
    long provider_conns, source_conns;

    before = count(env);
    m.client = bench_client(env, NULL);
    atomic_init(&m.next, 0);
    t0 = bench_now_ns();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, worker, &m) != 0)
            bench_fail("pthread_create");
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    t1 = bench_now_ns();
    posh_client_free(m.client); /* closes its connections: each run starts from none */
    after = count(env);
    provider_conns = after.provider_conns - before.provider_conns;
    source_conns = (after.all_conns - before.all_conns) - provider_conns;

    snprintf(name, sizeof(name), "%zu domains, %d thread%s: total time", domains, threads, threads > 1 ? "s" : "");
    bench_figure("many", name, (double)(t1 - t0) / 1e9, "s", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "%zu domains, %d thread%s: connections to the provider", domains, threads,
             threads > 1 ? "s" : "");
    bench_figure("many", name, (double)provider_conns, "", BENCH_EXACT, BENCH_EQ, 1);
    snprintf(name, sizeof(name), "%zu domains, %d thread%s: connections to the source domains", domains, threads,
             threads > 1 ? "s" : "");
    bench_figure("many", name, (double)source_conns, "", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "%zu domains, %d thread%s: provider document fetches", domains, threads,
             threads > 1 ? "s" : "");
    bench_figure("many", name, (double)(after.provider_fetches - before.provider_fetches), "", BENCH_EXACT,
                 BENCH_EQ, 1);
    snprintf(name, sizeof(name), "%zu domains, %d thread%s: source document fetches", domains, threads,
             threads > 1 ? "s" : "");
    bench_figure("many", name, (double)(after.source_fetches - before.source_fetches), "", BENCH_EXACT, BENCH_EQ,
                 (double)domains);
}

void bench_many_domains(bench_env *env)
{
    size_t domains = env->smoke ? 40 : 1000;
    run(env, 1, domains);
    run(env, 2, domains);
    run(env, 4, domains);
}
