/*
 * cold.c - wall time of a cold lookup (new client: empty cache, no connection) against nginx, next to the time
 * the curl command takes for the same GETs in the same run: a possession lookup (one GET) and a reference lookup
 * (two GETs on two hosts; curl fetches both URLs in one invocation). Interleaved, median of per-run ratios.
 * The curl command's wall time includes starting a process; curl's own time_total (the transfers alone, as
 * curl -w reports them) is shown beside it for a comparison without that.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define REFERRER "ref.example.com" /* served by the default site: a reference to the provider */

static double posh_once(const bench_env *env, const char *domain, int reference)
{
    posh_client *client = bench_client(env, NULL);
    posh_result *r = NULL;
    int64_t t0 = bench_now_ns(), t1;
    posh_err err = posh_lookup(client, domain, "xmpp-server", &r);
    t1 = bench_now_ns();
    if (err != POSH_OK || posh_result_followed_reference(r) != reference ||
        posh_result_request_count(r) != (size_t)(reference ? 2 : 1))
        bench_fail("cold lookup of %s: %s: %s", domain, posh_strerror(err), posh_result_message(r));
    posh_result_free(r);
    posh_client_free(client);
    return (double)(t1 - t0) / 1e6;
}

typedef struct curl_time {
    double wall_ms;           /* the command, start to exit */
    double transfer_ms;       /* the sum of curl's own time_total over its URLs */
} curl_time;

/* The curl command for the same GETs: its own config ignored, no proxy, the test CA, the same routing. */
static curl_time curl_once(const bench_env *env, const char *url1, const char *url2)
{
    char *argv[24], out[256];
    int argc = 0, status, pipefd[2];
    size_t got = 0;
    ssize_t n;
    posix_spawn_file_actions_t fa;
    curl_time ct = {0};
    pid_t pid;
    int64_t t0, t1;

    argv[argc++] = "curl";
    argv[argc++] = "-q";
    argv[argc++] = "-sS";
    argv[argc++] = "--fail";
    argv[argc++] = "--noproxy";
    argv[argc++] = "*";
    argv[argc++] = "--cacert";
    argv[argc++] = (char *)env->ca_file;
    argv[argc++] = "--connect-to";
    argv[argc++] = (char *)env->connect_to;
    argv[argc++] = "-w";
    argv[argc++] = "%{time_total}\\n";
    argv[argc++] = (char *)url1;
    argv[argc++] = "-o";
    argv[argc++] = "/dev/null";
    if (url2 != NULL) {
        argv[argc++] = (char *)url2;
        argv[argc++] = "-o";
        argv[argc++] = "/dev/null";
    }
    argv[argc] = NULL;
    if (pipe2(pipefd, O_CLOEXEC) != 0 || posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1) != 0)
        bench_fail("spawn curl: %s", strerror(errno));
    t0 = bench_now_ns();
    if ((errno = posix_spawnp(&pid, "curl", &fa, NULL, argv, environ)) != 0)
        bench_fail("spawn curl: %s", strerror(errno));
    close(pipefd[1]);
    /* Two short lines at most; read to the end so that curl never blocks on a full pipe. */
    while ((n = read(pipefd[0], out + got, sizeof(out) - 1 - got)) != 0) {
        if (n < 0 && errno != EINTR)
            bench_fail("read from curl: %s", strerror(errno));
        got += n > 0 ? (size_t)n : 0;
        if (got == sizeof(out) - 1)
            bench_fail("curl wrote more than expected");
    }
    if (waitpid(pid, &status, 0) != pid)
        bench_fail("waitpid curl: %s", strerror(errno));
    t1 = bench_now_ns();
    close(pipefd[0]);
    posix_spawn_file_actions_destroy(&fa);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_fail("curl %s%s%s failed (status %d)", url1, url2 ? " " : "", url2 ? url2 : "", status);
    out[got] = '\0';
    for (char *p = out, *end; *p != '\0'; p = end) {
        double v = strtod(p, &end);
        if (end == p)
            break;
        ct.transfer_ms += v * 1000.0;
    }
    ct.wall_ms = (double)(t1 - t0) / 1e6;
    return ct;
}

/* The measured series, one value per repetition. */
enum {
    POS_POSH, POS_CURL, POS_XFER, POS_RATIO, POS_XRATIO,
    REF_POSH, REF_CURL, REF_XFER, REF_RATIO, REF_XRATIO,
    N_SERIES
};

void bench_cold_lookup(bench_env *env)
{
    int reps = env->smoke ? 2 : 25;
    const char *pos_url = "https://" SOURCE RFC7711_PATH;
    const char *ref_url1 = "https://" REFERRER RFC7711_PATH, *ref_url2 = "https://" PROVIDER PROVIDER_PATH;
    double *v[N_SERIES];
    curl_time ct;

    for (int s = 0; s < N_SERIES; s++)
        v[s] = bench_xmalloc(sizeof(double) * (size_t)reps);
    /* Warm-up of both sides (code, page cache, nginx), not measured. */
    posh_once(env, SOURCE, 0);
    curl_once(env, pos_url, NULL);
    for (int i = 0; i < reps; i++) {
        /* Rotate the order of the four measurements from one repetition to the next. */
        for (int k = 0; k < 4; k++) {
            switch ((i + k) % 4) {
            case 0:
                v[POS_POSH][i] = posh_once(env, SOURCE, 0);
                break;
            case 1:
                ct = curl_once(env, pos_url, NULL);
                v[POS_CURL][i] = ct.wall_ms;
                v[POS_XFER][i] = ct.transfer_ms;
                break;
            case 2:
                v[REF_POSH][i] = posh_once(env, REFERRER, 1);
                break;
            default:
                ct = curl_once(env, ref_url1, ref_url2);
                v[REF_CURL][i] = ct.wall_ms;
                v[REF_XFER][i] = ct.transfer_ms;
                break;
            }
        }
        v[POS_RATIO][i] = v[POS_POSH][i] / v[POS_CURL][i];
        v[REF_RATIO][i] = v[REF_POSH][i] / v[REF_CURL][i];
        v[POS_XRATIO][i] = v[POS_POSH][i] / v[POS_XFER][i];
        v[REF_XRATIO][i] = v[REF_POSH][i] / v[REF_XFER][i];
    }
    bench_figure("cold", "possession lookup (1 GET): posh", bench_median(v[POS_POSH], (size_t)reps), "ms",
                 BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "possession lookup (1 GET): curl command", bench_median(v[POS_CURL], (size_t)reps), "ms",
                 BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "possession lookup (1 GET): curl's own time_total", bench_median(v[POS_XFER], (size_t)reps),
                 "ms", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "possession: posh/curl (median of ratios)", bench_median(v[POS_RATIO], (size_t)reps), "",
                 BENCH_MEASURED, BENCH_LE, 1.10);
    /* The stricter reading: against curl's transfers alone, without its process start. */
    bench_figure("cold", "possession: posh/curl time_total (median of ratios)",
                 bench_median(v[POS_XRATIO], (size_t)reps), "", BENCH_MEASURED, BENCH_LE, 1.10);
    bench_figure("cold", "reference lookup (2 GETs, 2 hosts): posh", bench_median(v[REF_POSH], (size_t)reps), "ms",
                 BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "reference lookup (2 GETs, 2 hosts): curl command", bench_median(v[REF_CURL], (size_t)reps),
                 "ms", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "reference lookup (2 GETs, 2 hosts): curl's own time_total",
                 bench_median(v[REF_XFER], (size_t)reps), "ms", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("cold", "reference: posh/curl (median of ratios)", bench_median(v[REF_RATIO], (size_t)reps), "",
                 BENCH_MEASURED, BENCH_LE, 1.10);
    bench_figure("cold", "reference: posh/curl time_total (median of ratios)",
                 bench_median(v[REF_XRATIO], (size_t)reps), "", BENCH_MEASURED, BENCH_LE, 1.10);
    for (int s = 0; s < N_SERIES; s++)
        free(v[s]);
}
