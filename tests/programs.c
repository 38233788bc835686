/*
 * programs.c - running real programs under the shim or without it, and the HTTPS server they talk to (see
 * programs.h). One copy for test_shim and test_clients.
 */
#include "programs.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static fx *fixture;
static char response[256];

void programs_use(fx *f, const char *http_body)
{
    fixture = f;
    snprintf(response, sizeof(response),
             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
             strlen(http_body) + 1, http_body);
}

const char *http_response(void)
{
    return response;
}

/* The environment of a child: minimal and explicit, so that the tests do not depend on the caller's. */
static char **child_env(const run_opts *o)
{
    static char path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin", lang[] = "LANG=C";
    char **env = calloc(64, sizeof(char *));
    size_t n = 0;
    cr_assert_not_null(env);
    cr_assert_not_null(fixture, "programs_use() first");
    env[n++] = path;
    env[n++] = lang;
    /* The test's own entries first: getenv() finds the first of a name, so they override the defaults. */
    for (size_t i = 0; o->env != NULL && o->env[i] != NULL && n < 40; i++)
        env[n++] = strdup(o->env[i]);
    cr_assert_geq(asprintf(&env[n++], "HOME=%s", fixture->dir), 0);
    cr_assert_geq(asprintf(&env[n++], "POSH_CA_FILE=%s", fixture->ca_file), 0);
    cr_assert_geq(asprintf(&env[n++], "POSH_CONNECT_TO=%s", fixture->connect_to), 0);
    if (o->service != NULL)
        cr_assert_geq(asprintf(&env[n++], "POSH_SERVICE=%s", o->service), 0);
    if (o->preload)
        cr_assert_geq(asprintf(&env[n++], "LD_PRELOAD=%s", POSH_SHIM), 0);
    env[n] = NULL;
    return env;
}

static void env_free(char **env)
{
    for (size_t i = 2; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}

pid_t spawn(const char *const argv[], const run_opts *o, char **out_path)
{
    static atomic_int counter;
    char *in_path = NULL;
    char **env = child_env(o);
    int out_fd, in_fd;
    pid_t pid;

    cr_assert_geq(asprintf(out_path, "%s/out-%d.txt", fixture->dir, atomic_fetch_add(&counter, 1)), 0);
    out_fd = open(*out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(out_fd, 0);
    if (o->input != NULL) {
        cr_assert_geq(asprintf(&in_path, "%s.in", *out_path), 0);
        cr_assert_eq(ts_write_file(in_path, o->input, strlen(o->input)), 0);
        in_fd = open(in_path, O_RDONLY | O_CLOEXEC);
    } else {
        in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    cr_assert_geq(in_fd, 0);
    cr_assert_eq(access(argv[0], X_OK), 0, "%s is not installed (CI installs it: .ci/run)", argv[0]);
    pid = ts_spawn(argv, env, in_fd, out_fd, 0);
    cr_assert_geq(pid, 0, "%s", ts_error());
    close(out_fd);
    close(in_fd);
    free(in_path);
    env_free(env);
    return pid;
}

run_result reap(pid_t pid, char *out_path, int timeout_ms)
{
    run_result r = {.status = -1};
    int64_t deadline = ts_now_ms() + timeout_ms;
    int status;
    pid_t got;

    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && ts_now_ms() < deadline)
        usleep(10000);
    if (got == 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
    } else if (got == pid) {
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    r.out = ts_read_file(out_path, NULL);
    if (r.out == NULL)
        r.out = strdup("");
    free(out_path);
    return r;
}

run_result run(const char *const argv[], const run_opts *o)
{
    char *out_path;
    pid_t pid = spawn(argv, o, &out_path);
    return reap(pid, out_path, RUN_TIMEOUT_MS);
}

void run_free(run_result *r)
{
    free(r->out);
    r->out = NULL;
}

/* After the handshake: read an HTTP request (or whatever comes until the client stops) and answer. */
static void http_handler(ts_conn *c, void *arg)
{
    char buf[2048];
    size_t have = 0;
    int n;
    while (have < sizeof(buf) - 1 && (n = SSL_read(ts_conn_ssl(c), buf + have, (int)(sizeof(buf) - 1 - have))) > 0) {
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL) {
            /* Answer, say goodbye, and read until the client is gone: closing with its close_notify unread
             * would send a TCP reset that can destroy the answer before the client reads it. */
            SSL_write(ts_conn_ssl(c), response, (int)strlen(response));
            SSL_shutdown(ts_conn_ssl(c));
            for (int i = 0; i < 64 && ts_conn_wait(c, 5000) == -1; i++)
                if (SSL_read(ts_conn_ssl(c), buf, (int)sizeof(buf)) <= 0)
                    break;
            return;
        }
    }
}

ts_tls *start_http(ts_cert *cert)
{
    ts_tls *s = ts_tls_start_with(ts_cert_x509(cert), ts_cert_chain(cert), ts_cert_key(cert), http_handler, NULL);
    cr_assert_not_null(s, "TLS server: %s", ts_error());
    return s;
}

/* ---- the sequential server ---- */

int conn_line(int fd, SSL *ssl, char *buf, size_t len)
{
    size_t n = 0;
    while (n < len - 1) {
        char ch;
        if ((ssl != NULL ? SSL_read(ssl, &ch, 1) : (int)recv(fd, &ch, 1, 0)) != 1)
            return -1;
        buf[n++] = ch;
        if (ch == '\n')
            break;
    }
    buf[n] = '\0';
    return 0;
}

void conn_send(int fd, SSL *ssl, const char *s)
{
    if (ssl != NULL)
        SSL_write(ssl, s, (int)strlen(s));
    else if (send(fd, s, strlen(s), MSG_NOSIGNAL) < 0)
        return;
}

static void *seq_main(void *p)
{
    seq_server *s = p;
    struct timeval tv = {.tv_sec = 20};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        struct pollfd pfd[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
        int fd;
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (pfd[1].revents != 0)
            return NULL;
        if ((fd = accept(s->lfd, NULL, NULL)) < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        s->serve(s->ctx, fd, s->arg);
        ERR_clear_error();
        close(fd);
    }
}

seq_server *seq_server_start(ts_cert *cert, int port, seq_serve_fn serve, void *arg)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    socklen_t salen = sizeof(sa);
    seq_server *s = calloc(1, sizeof(*s));
    int one = 1;

    cr_assert_not_null(s);
    s->serve = serve;
    s->arg = arg;
    s->ctx = SSL_CTX_new(TLS_server_method());
    cr_assert_not_null(s->ctx);
    cr_assert_eq(SSL_CTX_use_certificate(s->ctx, ts_cert_x509(cert)), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey(s->ctx, ts_cert_key(cert)), 1);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(s->lfd, 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind 127.0.0.1:%d: %s", port,
                 strerror(errno));
    cr_assert_eq(listen(s->lfd, 16), 0);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&sa, &salen), 0);
    s->port = ntohs(sa.sin_port);
    cr_assert_eq(pipe2(s->stop_pipe, O_CLOEXEC), 0);
    cr_assert_eq(pthread_create(&s->thread, NULL, seq_main, s), 0);
    return s;
}

void seq_server_stop(seq_server *s)
{
    if (s == NULL)
        return;
    if (write(s->stop_pipe[1], "x", 1) != 1)
        cr_log_warn("server: stop pipe");
    pthread_join(s->thread, NULL);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    SSL_CTX_free(s->ctx);
    free(s);
}
