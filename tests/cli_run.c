/*
 * cli_run.c - the test_cli sources' shared helpers (see cli_run.h): posh run with posix_spawn, its two output
 * pipes drained with poll against a deadline, and the JSON and fixture helpers every CLI test uses.
 */
#include "cli_run.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

long cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* One of the child's output pipes and what came through it so far (buf holds CLI_RUN_OUTPUT_CAP bytes). */
typedef struct sink {
    int fd;
    char *buf;
    size_t len;
} sink;

static void drain(sink *s)
{
    char tmp[4096];
    ssize_t n = read(s->fd, tmp, sizeof(tmp));
    if (n > 0) {
        cr_assert_lt(s->len + (size_t)n, (size_t)CLI_RUN_OUTPUT_CAP, "posh wrote more than %d bytes",
                     CLI_RUN_OUTPUT_CAP);
        memcpy(s->buf + s->len, tmp, (size_t)n);
        s->len += (size_t)n;
        s->buf[s->len] = '\0';
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(s->fd);
        s->fd = -1;
    }
}

cli_run cli_run_posh(const cli_run_opts *opts, const char *const *args)
{
    static const cli_run_opts defaults = {0};
    const char *argv[80] = {POSH_CLI_PATH};
    const char *cmd = args[0] != NULL ? args[0] : "(no command)";
    posix_spawn_file_actions_t fa;
    int po[2], pe[2], status = 0;
    sink s[2];
    cli_run r = {0};
    long start = cli_now_ms(), deadline = start + CLI_RUN_DEADLINE_MS;
    pid_t pid;
    size_t n = 1;

    if (opts == NULL)
        opts = &defaults;
    for (; args[n - 1] != NULL; n++) {
        cr_assert_lt(n, sizeof(argv) / sizeof(argv[0]) - 1);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    cr_assert_eq(pipe2(po, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, opts->stdin_path != NULL ? opts->stdin_path : "/dev/null", O_RDONLY,
                                     0);
    if (opts->stdout_path != NULL)
        posix_spawn_file_actions_addopen(&fa, 1, opts->stdout_path, O_WRONLY, 0);
    else
        posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    cr_assert_eq(posix_spawn(&pid, POSH_CLI_PATH, &fa, NULL, (char *const *)argv, environ), 0, "spawn %s",
                 POSH_CLI_PATH);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    s[0] = (sink){po[0], calloc(1, CLI_RUN_OUTPUT_CAP), 0};
    s[1] = (sink){pe[0], calloc(1, CLI_RUN_OUTPUT_CAP), 0};
    cr_assert(s[0].buf != NULL && s[1].buf != NULL);
    while (s[0].fd >= 0 || s[1].fd >= 0) {
        struct pollfd p[2] = {{.fd = s[0].fd, .events = POLLIN}, {.fd = s[1].fd, .events = POLLIN}};
        long left = deadline - cli_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("posh %s did not finish within %d ms; stderr so far: %s", cmd, CLI_RUN_DEADLINE_MS,
                           s[1].buf);
        }
        if (poll(p, 2, (int)left) < 0 && errno != EINTR)
            cr_assert_fail("poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++)
            if (s[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                drain(&s[i]);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "posh %s died with signal %d; stderr: %s", cmd,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0, s[1].buf);
    r.code = WEXITSTATUS(status);
    r.out = s[0].buf;
    r.err = s[1].buf;
    r.ms = cli_now_ms() - start;
    return r;
}

void cli_run_free(cli_run *r)
{
    free(r->out);
    free(r->err);
}

void cli_expect_usage_errors(const cli_usage_case *cases, size_t n, const char *help)
{
    for (size_t i = 0; i < n; i++) {
        cli_run r = cli_run_posh(NULL, cases[i].args);
        cr_expect_eq(r.code, 2, "case %zu: exit %d; stderr %s", i, r.code, r.err);
        cr_expect(strstr(r.err, cases[i].err) != NULL, "case %zu: stderr should say '%s': %s", i, cases[i].err,
                  r.err);
        if (help != NULL)
            cr_expect(strstr(r.err, help) != NULL, "case %zu: points at --help: %s", i, r.err);
        cr_expect_eq(r.out[0], '\0', "case %zu: nothing on stdout: %s", i, r.out);
        cli_run_free(&r);
    }
}

void cli_expect_domain_usage_errors(const char *cmd)
{
    static const cli_usage_case cases[] = {
        {{"CMD"}, "DOMAIN is required"},
        {{"CMD", "a.example", "b.example"}, "too many arguments"},
        {{"CMD", "-x", "a.example"}, "unknown option '-x'"},
        {{"CMD", "--nope", "a.example"}, "unknown option '--nope'"},
        {{"CMD", "a.example", "-s"}, "needs a value"},
        {{"CMD", "127.0.0.1"}, "127.0.0.1"},
        {{"CMD", "a..example"}, "invalid source domain"},
        {{"CMD", "bad_domain.example"}, "invalid source domain"},
        {{"CMD", "-s", "bad service", "a.example"}, "invalid service name"},
    };
    cli_usage_case mine[sizeof(cases) / sizeof(cases[0])];
    char help[64];

    memcpy(mine, cases, sizeof(cases));
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
        mine[i].args[0] = cmd;
    snprintf(help, sizeof(help), "posh %s --help", cmd);
    cli_expect_usage_errors(mine, sizeof(mine) / sizeof(mine[0]), help);
}

json_object *cli_parse_json(const char *s)
{
    json_object *j = json_tokener_parse(s);
    cr_assert_not_null(j, "not JSON: %s", s);
    cr_assert(json_object_is_type(j, json_type_object), "not a JSON object: %s", s);
    return j;
}

json_object *cli_member(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "member %s missing in %s", key, json_object_to_json_string(o));
    return v;
}

const char *cli_member_str(json_object *o, const char *key)
{
    json_object *v = cli_member(o, key);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string in %s", key,
              json_object_to_json_string(o));
    return json_object_get_string(v);
}

int cli_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

void cli_fixture_setup(fx *f)
{
    fx_init(f);
    fx_start(f);
    fx_export_env(f);
    unsetenv("POSH_LOG");
    unsetenv("POSH_FORMATS");
    unsetenv("POSH_MAX_TTL");
}

void cli_fixture_teardown(fx *f, ts_tls **server)
{
    ts_tls_stop(*server);
    *server = NULL;
    unsetenv("POSH_FORMATS");
    fx_fini(f);
}

void cli_serve(ts_tls **server, ts_cert *cert)
{
    ts_tls_stop(*server);
    *server = ts_tls_start(ts_cert_x509(cert), NULL, ts_cert_key(cert));
    cr_assert_not_null(*server, "TLS server: %s", ts_error());
}

const char *cli_server_addr(ts_tls *server)
{
    static char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ts_tls_port(server));
    return addr;
}

const char *cli_cert_file(ts_cert *c, const char *dir, const char *name)
{
    static char paths[4][600];
    static int slot;
    char *p = paths[slot++ % 4];
    cr_assert_eq(ts_cert_write(c, dir, name), 0);
    snprintf(p, sizeof(paths[0]), "%s/%s.crt", dir, name);
    return p;
}

char *cli_fingerprint(ts_cert *c, const char *hash)
{
    char *b64 = ts_cert_fingerprint_b64(c, hash);
    cr_assert_not_null(b64);
    return b64;
}
