/*
 * main.c - posh-bench: what POSH costs, measured side by side in one run, printed as a table and as JSON with
 * each figure's target and verdict. bench/run builds it in Release and runs it.
 */
#include "bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sections[] = {"memory", "handshake", "decision", "cold", "many",
                                       "single", "nonblock", "shimsend", "shimrecv", "shimhs", "warm", "store"};
#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

static void usage(FILE *out)
{
    fprintf(out, "usage: posh-bench [--smoke] [--json FILE] [--only SECTION[,SECTION...]]\n"
                 "  --smoke   a seconds-long run: every section, small counts, no timing verdicts\n"
                 "  --json    also write the JSON report to FILE\n"
                 "  --only    run these sections: memory, handshake, decision, cold, many, single, nonblock,\n"
                 "            shimsend, shimrecv, shimhs, warm, store\n"
                 "exit status: 0 done (see the verdicts), 1 a benchmark failed, 2 usage;\n"
                 "in smoke mode also 1 when a count target (single flight, connections) is missed\n");
}

/* Is section s selected by the comma-separated list only (NULL: all)? */
static int selected(const char *only, const char *s)
{
    size_t len = strlen(s);
    for (const char *p = only; p != NULL && *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, s, n) == 0)
            return 1;
        p += n + (p[n] == ',');
    }
    return only == NULL;
}

int main(int argc, char **argv)
{
    const char *json = NULL, *only = NULL;
    bool smoke = false;
    bench_env env;
    int misses;

    if ((argc == 3 || argc == 4) && strcmp(argv[1], "--send-loop") == 0)
        return bench_send_loop_main(atol(argv[2]), argc == 4 && strcmp(argv[3], "connected") == 0);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "--recv-loop") == 0)
        return bench_recv_loop_main(atol(argv[2]), argc == 4 && strcmp(argv[3], "accepted") == 0);
    if (argc >= 2 && strcmp(argv[1], "--warm-lookup") == 0)
        return bench_warm_lookup_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "--shim-handshakes") == 0)
        return bench_shim_handshakes_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "--count-handshakes") == 0)
        return bench_count_handshakes_main(argc - 2, argv + 2);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) {
            smoke = true;
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json = argv[++i];
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    for (const char *p = only; p != NULL && *p != '\0';) {
        size_t n = strcspn(p, ","), k;
        for (k = 0; k < N_SECTIONS && !(strlen(sections[k]) == n && strncmp(p, sections[k], n) == 0); k++)
            ;
        if (k == N_SECTIONS) {
            fprintf(stderr, "posh-bench: unknown section \"%.*s\"\n", (int)n, p);
            usage(stderr);
            return 2;
        }
        p += n + (p[n] == ',');
    }
    signal(SIGPIPE, SIG_IGN);
    setenv("POSH_LOG", "off", 1); /* the log would time stderr, not POSH */
    bench_set_smoke(smoke);

    /* Memory first, before servers and other sections have grown and fragmented the heap. */
    if (selected(only, "memory"))
        bench_memory(smoke);
    bench_env_init(&env, smoke);
    if (selected(only, "handshake"))
        bench_handshake(&env);
    if (selected(only, "decision"))
        bench_decision(&env);
    if (selected(only, "cold"))
        bench_cold_lookup(&env);
    if (selected(only, "many"))
        bench_many_domains(&env);
    if (selected(only, "single"))
        bench_single_flight(&env);
    if (selected(only, "nonblock"))
        bench_nonblock(&env);
    if (selected(only, "shimsend"))
        bench_shim_send(smoke);
    if (selected(only, "shimrecv"))
        bench_shim_recv(smoke);
    if (selected(only, "shimhs"))
        bench_shim_handshakes(smoke);
    if (selected(only, "warm"))
        bench_warm_start(&env);
    if (selected(only, "store"))
        bench_store(&env);
    misses = bench_report(&env, json);
    bench_env_fini(&env);
    return smoke && misses > 0 ? 1 : 0;
}
