/*
 * warm.c - a new process's first verdict, with and without a persistent cache directory (issue 13). The child
 * (this program with --warm-lookup) is what a short-lived program is: it starts, makes a client configured with
 * the cache directory (or none), looks up foo.example.com (a reference to the provider's document) and matches
 * the provider's certificate, then prints the verdict and the time it took from its start to the verdict. The
 * parent also times each child from fork to exit (the whole process with loading and start-up, as a cron job
 * or a Postfix smtp process pays it): cold (empty directory) against warm (the directory a previous process
 * filled), in alternating rounds, and compares the medians.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

/*
 * argv: CA_FILE CONNECT_TO DIR (or "-") CERT_DER_FILE. Prints "verdict: ..." and "ms: ...". The clock starts
 * once OpenSSL is set up (configuration read, SHA-256 fetched): the program this stands for makes a TLS
 * connection, so it has paid for that before POSH is asked, cold or warm.
 */
int bench_warm_lookup_main(int argc, char **argv)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    int ready = OPENSSL_init_ssl(0, NULL) && EVP_Digest("", 0, md, NULL, EVP_sha256(), NULL);
    int64_t t0 = bench_now_ns();
    posh_config *cfg = posh_config_new();
    posh_client *c = NULL;
    posh_result *r = NULL;
    unsigned char der[8192];
    size_t der_len = 0;
    int match = 0, index = -1, rc = 1;
    FILE *f = NULL;
    posh_err err;

    if (!ready || argc != 4 || cfg == NULL || posh_config_set_ca_file(cfg, argv[0]) != POSH_OK ||
        posh_config_set_connect_to(cfg, argv[1]) != POSH_OK ||
        (strcmp(argv[2], "-") != 0 && posh_config_set_cache_dir(cfg, argv[2]) != POSH_OK))
        goto done;
    if ((f = fopen(argv[3], "rb")) == NULL || (der_len = fread(der, 1, sizeof(der), f)) == 0)
        goto done;
    if ((c = posh_client_new(cfg)) == NULL)
        goto done;
    err = posh_lookup(c, SOURCE, "xmpp-server", &r);
    if (err == POSH_OK && posh_match_der(c, r, der, der_len, &match, &index) != POSH_OK)
        match = 0;
    printf("verdict: %s\nms: %.3f\n", err != POSH_OK ? posh_strerror(err) : match ? "vouched" : "rejected",
           (double)(bench_now_ns() - t0) / 1e6);
    rc = 0;
done:
    if (f != NULL)
        fclose(f);
    posh_result_free(r);
    posh_client_free(c);
    posh_config_free(cfg);
    return rc;
}

/* One child run: wall time from fork to exit in ms; its own time to the verdict in *inner; its verdict line. */
static double run_child(const bench_env *env, const char *dir, const char *der_path, double *inner, char *verdict,
                        size_t vlen)
{
    const char *args[] = {"--warm-lookup", env->ca_file, env->connect_to, dir, der_path, NULL};
    char out[256];
    const char *ms;
    int64_t ns = bench_run_self(args, NULL, out, sizeof(out));

    if (ns < 0 || (ms = strstr(out, "\nms: ")) == NULL || sscanf(ms + 5, "%lf", inner) != 1)
        bench_fail("warm: the child failed: \"%s\"", out);
    snprintf(verdict, vlen, "%.*s", (int)(ms - out), out);
    return (double)ns / 1e6;
}

void bench_warm_start(bench_env *env)
{
    const int rounds = env->smoke ? 2 : 9;
    double *v[4]; /* cold whole, warm whole, cold inner, warm inner */
    char dir[700], der_path[700], cold_verdict[128], warm_verdict[128];
    size_t der_len;
    const unsigned char *der = ts_cert_der(env->svc, &der_len);

    for (int k = 0; k < 4; k++)
        v[k] = bench_xmalloc(sizeof(double) * (size_t)rounds);
    snprintf(der_path, sizeof(der_path), "%s/svc.der", env->dir);
    BENCH_CHECK(ts_write_file(der_path, der, der_len) == 0, "warm: write the certificate");
    for (int r = 0; r < rounds; r++) {
        /* A new directory each round: the cold process fills it, the warm one finds it filled. */
        snprintf(dir, sizeof(dir), "%s/cache-%d", env->dir, r);
        v[0][r] = run_child(env, dir, der_path, &v[2][r], cold_verdict, sizeof(cold_verdict));
        v[1][r] = run_child(env, dir, der_path, &v[3][r], warm_verdict, sizeof(warm_verdict));
        if (strcmp(cold_verdict, "verdict: vouched") != 0 || strcmp(warm_verdict, cold_verdict) != 0)
            bench_fail("warm: verdicts differ or are wrong: cold \"%s\", warm \"%s\"", cold_verdict, warm_verdict);
    }
    {
        double cw = bench_median(v[0], (size_t)rounds), ww = bench_median(v[1], (size_t)rounds);
        double ci = bench_median(v[2], (size_t)rounds), wi = bench_median(v[3], (size_t)rounds);
        bench_figure("warm start", "empty cache directory: start to verdict", ci, "ms", BENCH_INFO, BENCH_NONE, 0);
        bench_figure("warm start", "filled cache directory: start to verdict", wi, "ms", BENCH_INFO, BENCH_NONE, 0);
        bench_figure("warm start", "speed-up to the verdict (empty / filled), same verdict", ci / wi, "x",
                     BENCH_MEASURED, BENCH_GE, 10);
        bench_figure("warm start", "whole process, empty directory (exec to exit)", cw, "ms", BENCH_INFO,
                     BENCH_NONE, 0);
        bench_figure("warm start", "whole process, filled directory (exec to exit)", ww, "ms", BENCH_INFO,
                     BENCH_NONE, 0);
    }
    for (int k = 0; k < 4; k++)
        free(v[k]);
}
