/*
 * many.c - many hosted domains at one provider: 1,000 distinct cold domains (d0..d999.example.com, all served
 * by nginx's default site) whose documents all reference the same provider URL, looked up by 1, 2 and 4
 * threads sharing one client. Counted at nginx: TLS connections to each web server, fetches of the provider
 * document and of the source documents. The provider's document is cached by its URL and shared by every
 * domain (single flight across domains): one fetch, over one connection, per cold client; one source fetch per
 * domain, since each domain's own document is never shared.
 *
 * Then the same 1,000 domains from one thread through the non-blocking engine (posh_lookup_async: a provider's
 * warm start prefetching every hosted domain), with POSH_ASYNC_TRANSFERS at 16, 64 and 256: how much the bound
 * on requests at once (each a socket) costs a burst.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

/* ---- through the engine ---- */

typedef struct async_run {
    atomic_long done, failed;
    int pipe[2];               /* a byte per answer: the loop below waits on it */
    char first_error[300];
} async_run;

static void async_done(posh_err err, posh_result *r, void *arg)
{
    async_run *a = arg;
    ssize_t w;
    if ((err != POSH_OK || !posh_result_followed_reference(r)) && atomic_fetch_add(&a->failed, 1) == 0)
        snprintf(a->first_error, sizeof(a->first_error), "%s: %s", posh_strerror(err),
                 r != NULL ? posh_result_message(r) : "");
    posh_result_free(r);
    atomic_fetch_add(&a->done, 1);
    do
        w = write(a->pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
}

/* One engine lookup per domain, all asked at once from this thread; connect_to NULL: nginx directly. */
static void run_async(bench_env *env, long transfers, size_t domains, const char *connect_to, const char *where)
{
    posh_config *cfg = posh_config_new();
    async_run a = {0};
    posh_client *client;
    counts before, after;
    char domain[64], name[96], buf[256];
    int64_t t0, t1;

    if (cfg == NULL || posh_config_set_ca_file(cfg, env->ca_file) != POSH_OK ||
        posh_config_set_connect_to(cfg, connect_to != NULL ? connect_to : env->connect_to) != POSH_OK ||
        posh_config_set_async_transfers(cfg, transfers) != POSH_OK ||
        posh_config_set_async_limits(cfg, (long)domains, 10) != POSH_OK)
        bench_fail("many: engine client configuration");
    client = posh_client_new(cfg);
    posh_config_free(cfg);
    BENCH_CHECK(client != NULL && pipe2(a.pipe, O_CLOEXEC | O_NONBLOCK) == 0, "many: engine client");
    before = count(env);
    t0 = bench_now_ns();
    for (size_t i = 0; i < domains; i++) {
        snprintf(domain, sizeof(domain), "e%s%ld-%zu.example.com", connect_to != NULL ? "r" : "", transfers, i);
        if (posh_lookup_async(client, domain, "xmpp-server", async_done, &a) != POSH_OK)
            bench_fail("many: posh_lookup_async %s", domain);
    }
    while (atomic_load(&a.done) < (long)domains) {
        struct pollfd p = {.fd = a.pipe[0], .events = POLLIN};
        if (poll(&p, 1, 60000) == 0)
            bench_fail("many: %ld of %zu engine lookups answered in 60 s", atomic_load(&a.done), domains);
        while (read(a.pipe[0], buf, sizeof(buf)) > 0)
            ;
    }
    t1 = bench_now_ns();
    posh_client_free(client);
    close(a.pipe[0]);
    close(a.pipe[1]);
    if (atomic_load(&a.failed) != 0)
        bench_fail("many: %ld engine lookups failed; first: %s", atomic_load(&a.failed), a.first_error);
    after = count(env);
    snprintf(name, sizeof(name), "%zu domains, engine, %s, %ld transfers: total time", domains, where, transfers);
    bench_figure("many", name, (double)(t1 - t0) / 1e9, "s", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "%zu domains, engine, %s, %ld transfers: provider fetches", domains, where,
             transfers);
    bench_figure("many", name, (double)(after.provider_fetches - before.provider_fetches), "", BENCH_EXACT,
                 BENCH_EQ, 1);
}

void bench_many_domains(bench_env *env)
{
    size_t domains = env->smoke ? 40 : 1000;
    run(env, 1, domains);
    run(env, 2, domains);
    run(env, 4, domains);
    static const long transfers[] = {16, 64, 256};
    int delay_ms = env->smoke ? 20 : 50;
    char connect_to[64], where[32];
    ts_relay *relay;

    for (size_t i = 0; i < sizeof(transfers) / sizeof(transfers[0]); i++)
        run_async(env, transfers[i], domains, NULL, "local");
    /* The web servers some way off: every new connection waits delay_ms (tests/support/relay.c). */
    BENCH_CHECK((relay = ts_relay_start(ts_nginx_port(env->nginx), delay_ms, 0)) != NULL, "relay");
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_relay_port(relay));
    snprintf(where, sizeof(where), "+%d ms", delay_ms);
    for (size_t i = 0; i < sizeof(transfers) / sizeof(transfers[0]); i++)
        run_async(env, transfers[i], domains, connect_to, where);
    ts_relay_stop(relay);
}
