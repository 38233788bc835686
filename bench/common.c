/*
 * common.c - the benchmark scenario (PKI, nginx, documents), figures with targets, the table and the JSON,
 * clocks and percentiles.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/opensslv.h>

/* ---- failure and notes ---- */

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "posh-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *bench_xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL)
        bench_fail("out of memory (%zu bytes)", n);
    return p;
}

/* ---- clocks and statistics ---- */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    size_t rank;
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    rank = (size_t)ceil(p / 100.0 * (double)n);
    return v[rank == 0 ? 0 : rank - 1];
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- small network and certificate helpers ---- */

int bench_connect(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        bench_fail("socket: %s", strerror(errno));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        bench_fail("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

void bench_cert_sha256(ts_cert *c, unsigned char out[32])
{
    size_t len;
    const unsigned char *der = ts_cert_der(c, &len);
    unsigned int mdlen = 0;
    if (der == NULL || !EVP_Digest(der, len, out, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        bench_fail("SHA-256 of a certificate failed");
}

/* ---- the scenario ---- */

static ts_cert *issue(ts_ca *ca, const char *dns0, const char *dns1, const char *cn)
{
    ts_cert_opts o = {.dns = {dns0, dns1}, .cn = cn, .not_before_days = -1, .not_after_days = 30};
    ts_cert *c = ts_cert_issue(ca, &o);
    BENCH_CHECK(c != NULL, "issue a certificate");
    return c;
}

char *bench_doc(const bench_env *env, long expires)
{
    char *a = ts_cert_fingerprint_b64(env->svc, "sha-256"), *b = ts_cert_fingerprint_b64(env->next, "sha-256");
    char *doc = NULL;
    BENCH_CHECK(a != NULL && b != NULL, "fingerprint");
    if (asprintf(&doc, "{\"fingerprints\":[{\"sha-256\":\"%s\"},{\"sha-256\":\"%s\"}],\"expires\":%ld}", a, b,
                 expires) < 0)
        bench_fail("out of memory");
    free(a);
    free(b);
    return doc;
}

void bench_env_init(bench_env *env, bool smoke)
{
    char crt[600], key[600], *doc, *ref = NULL;

    memset(env, 0, sizeof(*env));
    env->smoke = smoke;
    BENCH_CHECK((env->dir = ts_tmpdir()) != NULL, "temporary directory");
    BENCH_CHECK((env->ca = ts_ca_new("posh bench CA")) != NULL, "CA");
    env->web = issue(env->ca, "*.example.com", PROVIDER, PROVIDER);
    env->svc = issue(env->ca, SERVICE_HOST, NULL, SERVICE_HOST);
    env->next = issue(env->ca, SERVICE_HOST, NULL, SERVICE_HOST);
    snprintf(env->ca_file, sizeof(env->ca_file), "%s/ca.pem", env->dir);
    BENCH_CHECK(ts_ca_write(env->ca, env->ca_file) == 0, "write the CA");
    BENCH_CHECK(ts_cert_write(env->web, env->dir, "web") == 0, "write the web certificate");
    snprintf(crt, sizeof(crt), "%s/web.crt", env->dir);
    snprintf(key, sizeof(key), "%s/web.key", env->dir);

    /*
     * One nginx. The first site is the default server: every dN.example.com (any Host) gets its reference to
     * the provider. foo.example.com has its own possession document; the provider publishes the fingerprints.
     */
    BENCH_CHECK((env->nginx = ts_nginx_new(env->dir)) != NULL, "nginx");
    BENCH_CHECK(ts_nginx_add_site(env->nginx, "example.com", crt, key) == 0, "nginx default site");
    BENCH_CHECK(ts_nginx_add_site(env->nginx, SOURCE, crt, key) == 0, "nginx site " SOURCE);
    BENCH_CHECK(ts_nginx_add_site(env->nginx, PROVIDER, crt, key) == 0, "nginx site " PROVIDER);
    doc = bench_doc(env, 86400);
    if (asprintf(&ref, "{\"url\":\"https://%s%s\",\"expires\":86400}", PROVIDER, PROVIDER_PATH) < 0)
        bench_fail("out of memory");
    BENCH_CHECK(ts_nginx_put(env->nginx, "example.com", RFC7711_PATH, ref) == 0, "publish the reference");
    BENCH_CHECK(ts_nginx_put(env->nginx, SOURCE, RFC7711_PATH, doc) == 0, "publish the possession document");
    BENCH_CHECK(ts_nginx_put(env->nginx, PROVIDER, PROVIDER_PATH, doc) == 0, "publish the provider document");
    free(doc);
    free(ref);
    BENCH_CHECK(ts_nginx_start(env->nginx) == 0, "start nginx");
    snprintf(env->connect_to, sizeof(env->connect_to), "::127.0.0.1:%d", ts_nginx_port(env->nginx));
}

void bench_env_fini(bench_env *env)
{
    ts_nginx_free(env->nginx);
    ts_cert_free(env->web);
    ts_cert_free(env->svc);
    ts_cert_free(env->next);
    ts_ca_free(env->ca);
    if (env->dir != NULL)
        ts_rmtree(env->dir);
    free(env->dir);
}

posh_client *bench_client(const bench_env *env, const char *connect_to)
{
    return bench_client_mode(env, connect_to, POSH_MODE_NAME);
}

posh_client *bench_client_mode(const bench_env *env, const char *connect_to, posh_mode mode)
{
    posh_config *cfg = posh_config_new();
    posh_client *c;
    if (cfg == NULL || posh_config_set_ca_file(cfg, env->ca_file) != POSH_OK ||
        posh_config_set_mode(cfg, mode) != POSH_OK ||
        posh_config_set_connect_to(cfg, connect_to != NULL ? connect_to : env->connect_to) != POSH_OK)
        bench_fail("client configuration: %s", cfg != NULL ? posh_config_error(cfg) : "out of memory");
    c = posh_client_new(cfg);
    posh_config_free(cfg);
    if (c == NULL)
        bench_fail("posh_client_new failed");
    return c;
}

/* ---- figures, the table, the JSON ---- */

typedef struct figure {
    char section[24];
    char name[96];
    double value;
    char unit[16];
    bench_kind kind;
    bench_op op;
    double target;
    const char *verdict;      /* "PASS", "MISS", "-" (no target), "n/a" (measured target in smoke mode) */
} figure;

static figure *figures;
static size_t n_figures, cap_figures;
static bool smoke_mode;

void bench_figure(const char *section, const char *name, double value, const char *unit, bench_kind kind,
                  bench_op op, double target)
{
    figure *f;
    bool met = false;
    if (n_figures == cap_figures) {
        cap_figures = cap_figures ? 2 * cap_figures : 64;
        if ((figures = realloc(figures, cap_figures * sizeof(*figures))) == NULL)
            bench_fail("out of memory");
    }
    f = &figures[n_figures++];
    memset(f, 0, sizeof(*f));
    snprintf(f->section, sizeof(f->section), "%s", section);
    snprintf(f->name, sizeof(f->name), "%s", name);
    snprintf(f->unit, sizeof(f->unit), "%s", unit);
    f->value = value;
    f->kind = kind;
    f->op = op;
    f->target = target;
    switch (op) {
    case BENCH_GE: met = value >= target; break;
    case BENCH_LE: met = value <= target; break;
    case BENCH_EQ: met = value == target; break;
    case BENCH_NONE: break;
    }
    if (op == BENCH_NONE || kind == BENCH_INFO)
        f->verdict = "-";
    else if (kind == BENCH_MEASURED && smoke_mode)
        f->verdict = "n/a";
    else
        f->verdict = met ? "PASS" : "MISS";
}

static const char *op_text(bench_op op)
{
    switch (op) {
    case BENCH_GE: return ">=";
    case BENCH_LE: return "<=";
    case BENCH_EQ: return "==";
    case BENCH_NONE: return "";
    }
    return "";
}

/* Enough digits for the value's size, never scientific notation in the table. */
static void format_value(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if ((v == floor(v) && a < 1e15) || a >= 10000)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, len, "%.1f", v);
    else if (a >= 1)
        snprintf(buf, len, "%.3f", v);
    else
        snprintf(buf, len, "%.4f", v);
}

static void target_text(const figure *f, char *buf, size_t len)
{
    char t[32];
    if (f->op == BENCH_NONE) {
        snprintf(buf, len, "%s", "");
        return;
    }
    snprintf(t, sizeof(t), "%g", f->target);
    snprintf(buf, len, "%s %s", op_text(f->op), t);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* The first line of a file or a command's output, newline removed ("" if none). */
static void first_line(FILE *f, char *buf, size_t len)
{
    buf[0] = '\0';
    if (f != NULL && fgets(buf, (int)len, f) != NULL)
        buf[strcspn(buf, "\n")] = '\0';
}

static void machine(char *cpu, size_t cpulen, char *curl_cmd, size_t curllen)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(cpu, cpulen, "unknown");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') != NULL) {
            snprintf(cpu, cpulen, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    f = popen("curl --version 2>/dev/null", "r");
    first_line(f, curl_cmd, curllen);
    if (f != NULL)
        pclose(f);
}

static void write_json(FILE *out, const char *cpu, const char *curl_cmd, int misses)
{
    char target[48];
    fprintf(out, "{\n  \"mode\": \"%s\",\n  \"machine\": {\"nproc\": %ld, \"cpu\": ", smoke_mode ? "smoke" : "full",
            sysconf(_SC_NPROCESSORS_ONLN));
    json_string(out, cpu);
    fprintf(out, ", \"openssl\": ");
    json_string(out, OpenSSL_version(OPENSSL_VERSION));
    fprintf(out, ", \"libcurl\": ");
    json_string(out, curl_version());
    fprintf(out, ", \"curl_command\": ");
    json_string(out, curl_cmd);
    fprintf(out, ", \"posh\": ");
    json_string(out, posh_version());
    fprintf(out, "},\n  \"misses\": %d,\n  \"figures\": [\n", misses);
    for (size_t i = 0; i < n_figures; i++) {
        const figure *f = &figures[i];
        target_text(f, target, sizeof(target));
        fprintf(out, "    {\"section\": ");
        json_string(out, f->section);
        fprintf(out, ", \"name\": ");
        json_string(out, f->name);
        if (isfinite(f->value))
            fprintf(out, ", \"value\": %.6g, \"unit\": ", f->value);
        else
            fprintf(out, ", \"value\": null, \"unit\": ");
        json_string(out, f->unit);
        fprintf(out, ", \"target\": ");
        json_string(out, target);
        fprintf(out, ", \"verdict\": ");
        json_string(out, f->verdict);
        fprintf(out, "}%s\n", i + 1 < n_figures ? "," : "");
    }
    fprintf(out, "  ]\n}\n");
}

int bench_report(const bench_env *env, const char *json_path)
{
    char cpu[256], curl_cmd[256], value[32], target[48];
    int misses = 0;

    machine(cpu, sizeof(cpu), curl_cmd, sizeof(curl_cmd));
    printf("\nposh %s benchmarks (%s) - %ld CPUs, %s\n%s; libcurl %s; %s\n\n", posh_version(),
           env->smoke ? "smoke mode: no timing verdicts" : "full run", sysconf(_SC_NPROCESSORS_ONLN), cpu,
           OpenSSL_version(OPENSSL_VERSION), curl_version_info(CURLVERSION_NOW)->version, curl_cmd);
    printf("%-12s %-58s %12s %-6s %-10s %s\n", "section", "figure", "value", "unit", "target", "verdict");
    for (size_t i = 0; i < n_figures; i++) {
        const figure *f = &figures[i];
        format_value(value, sizeof(value), f->value);
        target_text(f, target, sizeof(target));
        printf("%-12s %-58s %12s %-6s %-10s %s\n", f->section, f->name, value, f->unit, target, f->verdict);
        if (strcmp(f->verdict, "MISS") == 0)
            misses++;
    }
    printf("\n%d target%s missed\n\n", misses, misses == 1 ? "" : "s");
    write_json(stdout, cpu, curl_cmd, misses);
    if (json_path != NULL) {
        FILE *out = fopen(json_path, "w");
        if (out == NULL)
            bench_fail("%s: %s", json_path, strerror(errno));
        write_json(out, cpu, curl_cmd, misses);
        if (fclose(out) != 0)
            bench_fail("%s: %s", json_path, strerror(errno));
    }
    return misses;
}

void bench_set_smoke(bool smoke)
{
    smoke_mode = smoke;
}

int64_t bench_run_self(const char *const args[], const char *preload, char *out, size_t outlen)
{
    const char *argv[16];
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    size_t n = 0, have = 0;
    int pipefd[2], status;
    int64_t t0;
    ssize_t got;
    pid_t pid;

    if (len <= 0 || outlen == 0 || pipe(pipefd) != 0)
        return -1;
    self[len] = '\0';
    argv[n++] = self;
    for (size_t i = 0; args[i] != NULL && n < sizeof(argv) / sizeof(argv[0]) - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    t0 = bench_now_ns();
    if ((pid = fork()) < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        if (preload != NULL)
            setenv("LD_PRELOAD", preload, 1);
        else
            unsetenv("LD_PRELOAD");
        execv(self, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    while (have < outlen - 1 && (got = read(pipefd[0], out + have, outlen - 1 - have)) > 0)
        have += (size_t)got;
    out[have] = '\0';
    close(pipefd[0]);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return bench_now_ns() - t0;
}
