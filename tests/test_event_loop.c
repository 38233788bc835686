/*
 * test_event_loop.c - non-blocking POSH as whole processes: the poll() example (examples/poll_client.c) against
 * real servers, and a process that exits while its engine still has lookups in flight.
 */
#include "fixture.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static fx f;
static ts_tls *svc_server;

static void setup(void)
{
    fx_init(&f);
    fx_start(&f);
    svc_server = ts_tls_start(ts_cert_x509(f.svc), ts_cert_chain(f.svc), ts_cert_key(f.svc));
    cr_assert_not_null(svc_server, "%s", ts_error());
}

static void teardown(void)
{
    ts_tls_stop(svc_server);
    fx_fini(&f);
}

TestSuite(event_loop, .init = setup, .fini = teardown, .timeout = 120);

/* Run argv with the current environment; its stdout into a string (caller frees); the exit status. */
static int run(char *const argv[], char **out)
{
    char path[] = "/tmp/posh-event-loop-XXXXXX";
    posix_spawn_file_actions_t fa;
    int fd = mkstemp(path), status = -1;
    pid_t pid;

    cr_assert_geq(fd, 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    cr_assert_eq(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    close(fd);
    *out = ts_read_file(path, NULL);
    unlink(path);
    cr_assert_not_null(*out);
    cr_assert(WIFEXITED(status), "the example died: status %d", status);
    return WEXITSTATUS(status);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* The README's example: 20 connections at once in one poll() loop, each accepted by POSH or rejected. */
Test(event_loop, poll_example_makes_many_connections)
{
    char target[128], *out = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    fx_export_env(&f);
    setenv("POSH_LOG", "off", 1);
    snprintf(target, sizeof(target), "127.0.0.1:%d:" FOO, ts_tls_port(svc_server));
    {
        char *argv[] = {(char *)POSH_POLL_EXAMPLE_PATH, (char *)"xmpp-server", f.ca_file, target, (char *)"20", NULL};
        cr_expect_eq(run(argv, &out), 0, "every connection accepted:\n%s", out);
    }
    cr_expect_eq(count(out, FOO ": posh: "), 20, "20 lines \"" FOO ": posh: ...\":\n%s", out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "20 waiting handshakes, one lookup");
    free(out);

    /* A domain that does not vouch for the certificate: every connection rejected, with POSH's reason. */
    snprintf(target, sizeof(target), "127.0.0.1:%d:" HOSTING, ts_tls_port(svc_server));
    {
        char *argv[] = {(char *)POSH_POLL_EXAMPLE_PATH, (char *)"xmpp-server", f.ca_file, target, (char *)"3", NULL};
        cr_expect_eq(run(argv, &out), 1, "rejected:\n%s", out);
    }
    cr_expect_eq(count(out, HOSTING ": rejected"), 3, "%s", out);
    free(out);
}

/*
 * exit() while the engine has lookups in flight (a web server that never answers): the process ends at once
 * and cleanly (status 0, no crash in OpenSSL's exit handlers), long before the lookups' timeout. The process is
 * tests/exit_probe.c, configured through its environment.
 */
Test(event_loop, exit_with_lookups_in_flight)
{
    ts_evil *hang = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    const char *const argv[] = {POSH_EXIT_PROBE, NULL};
    char ct[1100], ca[600], *env[5];
    int64_t t0;
    pid_t pid;
    int status = -1, to_child[2];

    cr_assert_not_null(hang);
    cr_assert_eq(ts_evil_route(hang, RFC7711_PATH, &(ts_evil_route_opts){.hang = 1}), 0);
    cr_assert_eq(ts_evil_start(hang), 0, "%s", ts_error());
    snprintf(ct, sizeof(ct), "POSH_CONNECT_TO=%s:443:127.0.0.1:%d", FOO, ts_evil_port(hang));
    snprintf(ca, sizeof(ca), "POSH_CA_FILE=%s", f.ca_file);
    env[0] = ct, env[1] = ca, env[2] = (char *)"POSH_TIMEOUT_MS=30000", env[3] = (char *)"POSH_LOG=off", env[4] = NULL;
    cr_assert_eq(pipe(to_child), 0);
    t0 = ts_now_ms();
    pid = ts_spawn(argv, env, to_child[0], 2, 1);
    close(to_child[0]);
    cr_assert_gt(pid, 0);
    /* Once the web server has a request, the probe's transfers are in flight: then it may exit. */
    for (int64_t end = ts_now_ms() + 20000; ts_evil_requests(hang, NULL) < 1;) {
        if (ts_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("the probe's lookup never reached the web server");
        }
        poll(NULL, 0, 5);
    }
    cr_assert_eq(write(to_child[1], "x", 1), 1);
    close(to_child[1]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the probe ends cleanly: status %d", status);
    cr_expect_lt(ts_now_ms() - t0, 25000, "and long before its lookups' 30 s timeout");
    ts_evil_stop(hang);
}
