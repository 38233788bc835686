/*
 * test_federation.c - two real Prosody servers federating (issue 11, item 3). Prosody A serves
 * origin.example.org with s2s_secure_auth = true and trusts the test CA; it pings foo.example.com, which
 * Prosody B serves with the provider's certificate (xmpp.hosting.example.net). A decides whether the s2s
 * stream to foo.example.com is secure: without the shim it refuses; with libposh-preload.so it accepts when
 * foo.example.com vouches for the certificate over HTTPS (a reference to hosting.example.net, or the
 * fingerprints themselves), and refuses an impostor with the same name and another key; a certificate that
 * carries foo.example.com is accepted with no POSH request. Issue 19 adds both directions: both servers
 * s2s_secure_auth, both domains hosted and publishing POSH documents, both under the shim, each pinging the
 * other (each ping crosses a stream each way, so each server verifies the other as the server it dialled and as
 * the client certificate of a stream it accepted), and the early lookup measured against a slow web server.
 *
 * No packet leaves the machine: every test runs in network and mount namespaces of its own (unshare, as
 * root: a failure to isolate is a test failure, never a skip), with only loopback. Prosody's resolver reads
 * /etc/resolv.conf and ignores /etc/hosts, so a private resolv.conf (nameserver 127.0.0.1) is bind-mounted in
 * that private mount namespace, and tests/support/dns.c answers the SRV and A questions there. nginx (the
 * fixture) publishes the POSH documents; POSH_CONNECT_TO routes the shim's fetches to it.
 */
#include "dns.h"
#include "fixture.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ORIGIN "origin.example.org"              /* Prosody A's domain */
#define SVC_NAME "xmpp.hosting.example.net"      /* the provider's XMPP server: B's certificate, SRV target */
#define A_PORT 5269                              /* both on 127.0.0.1 in a namespace of their own */
#define B_PORT 5270                              /* reached through foo.example.com's SRV record */
#define PROSODY "/usr/bin/prosody"
#define PROSODYCTL "/usr/bin/prosodyctl"
#define START_MS 15000                           /* a Prosody instance listens within this */
#define DECIDE_MS 20000                          /* A accepts or refuses the s2s stream within this */

/* Lines of Prosody's log that decide an outcome (mod_s2s, 0.12). */
#define LOG_ACCEPTED "Outgoing s2s connection " ORIGIN "->" FOO " complete"
#define LOG_FORBIDDEN "Forbidding insecure connection to/from " FOO " because its certificate is not valid for this name"
#define LOG_FORBIDDEN_ANY "Forbidding insecure connection to/from " FOO
#define LOG_FAILED "because of failed outgoing connection to " FOO

static fx f;
static ts_cert *web_origin;        /* the web server of origin.example.org (its POSH document) */
static char *connect_to_override;  /* POSH_CONNECT_TO for the servers instead of f.connect_to (a slow relay) */
static ts_dns *dns;
static char *host_resolv;          /* the host's /etc/resolv.conf as it was before the test */
static size_t host_resolv_len;
static int host_mnt_ns = -1;       /* the mount namespace the test started in */

/* ------------------------------------------------------------------------------------------------------ */
/* Isolation: network and mount namespaces of this test's process                                         */

/* /etc/resolv.conf as the mount namespace the test started in sees it, read by a child that joins it. */
static char *resolv_in_host_namespace(size_t *len)
{
    int p[2];
    pid_t pid;
    char *buf = malloc(65536);
    size_t n = 0;
    ssize_t got;
    int status;

    cr_assert_not_null(buf);
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* Async-signal-safe calls only: the test has threads. */
        char b[4096];
        int fd;
        ssize_t r;
        if (setns(host_mnt_ns, CLONE_NEWNS) != 0 || (fd = open("/etc/resolv.conf", O_RDONLY)) < 0)
            _exit(1);
        while ((r = read(fd, b, sizeof(b))) > 0)
            if (write(p[1], b, (size_t)r) != r)
                _exit(1);
        _exit(r == 0 ? 0 : 1);
    }
    close(p[1]);
    while (n < 65535 && (got = read(p[0], buf + n, 65535 - n)) > 0)
        n += (size_t)got;
    close(p[0]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "could not read the host's /etc/resolv.conf");
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void expect_host_resolv_unchanged(const char *when)
{
    size_t len;
    char *now = resolv_in_host_namespace(&len);
    cr_expect(len == host_resolv_len && memcmp(now, host_resolv, len) == 0,
              "%s: the host's /etc/resolv.conf changed:\n--- before ---\n%s\n--- now ---\n%s", when, host_resolv,
              now);
    free(now);
}

/* Enter new network and mount namespaces (mounts private before anything is mounted), bring loopback up and
 * put a resolv.conf naming 127.0.0.1 over /etc/resolv.conf for this namespace only. */
static void isolate(void)
{
    char path[600], *seen;
    static const char resolv[] = "# posh test_federation: the test's own DNS responder\nnameserver 127.0.0.1\n";

    cr_assert_not_null(host_resolv = ts_read_file("/etc/resolv.conf", &host_resolv_len));
    host_mnt_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(host_mnt_ns, 0, "open /proc/self/ns/mnt: %s", strerror(errno));
    cr_assert_eq(ts_private_network(), 0, "%s", ts_error());
    cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s (this test runs as root: CI does)",
                 strerror(errno));
    /* Before any mount: nothing done in this namespace may propagate back to the host's. */
    cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "make / private: %s", strerror(errno));

    snprintf(path, sizeof(path), "%s/resolv.conf", f.dir);
    cr_assert_eq(ts_write_file(path, resolv, strlen(resolv)), 0);
    cr_assert_eq(mount(path, "/etc/resolv.conf", NULL, MS_BIND, NULL), 0, "bind-mount %s on /etc/resolv.conf: %s",
                 path, strerror(errno));
    cr_assert_not_null(seen = ts_read_file("/etc/resolv.conf", NULL));
    cr_assert_str_eq(seen, resolv, "the bind mount is not what this namespace sees");
    free(seen);
    expect_host_resolv_unchanged("after the bind mount");
}

static void start_dns(void)
{
    cr_assert_not_null(dns = ts_dns_new());
    cr_assert_eq(ts_dns_add_srv(dns, "_xmpp-server._tcp." FOO, 0, 0, B_PORT, SVC_NAME), 0);
    cr_assert_eq(ts_dns_add_a(dns, SVC_NAME, "127.0.0.1"), 0);
    cr_assert_eq(ts_dns_add_srv(dns, "_xmpp-server._tcp." ORIGIN, 0, 0, A_PORT, ORIGIN), 0);
    cr_assert_eq(ts_dns_add_a(dns, ORIGIN, "127.0.0.1"), 0);
    cr_assert_eq(ts_dns_add_empty(dns, FOO), 0);
    cr_assert_eq(ts_dns_start(dns, "127.0.0.1", 53), 0, "%s", ts_error());
}

/* ------------------------------------------------------------------------------------------------------ */
/* Child processes                                                                                        */

typedef struct child {
    pid_t pid;
    char out_path[600];            /* its stdout and stderr */
    int status;                    /* once reaped: exit code, 128 + signal, -1 killed at the deadline */
} child;

/* Start argv with exactly env (NULL-terminated); output to dir/name.out. */
static void spawn(child *c, const char *name, const char *const argv[], char *const env[])
{
    int out_fd, in_fd;

    memset(c, 0, sizeof(*c));
    cr_assert_eq(access(argv[0], X_OK), 0, "%s is not installed (CI installs it: .ci/run)", argv[0]);
    snprintf(c->out_path, sizeof(c->out_path), "%s/%s.out", f.dir, name);
    out_fd = open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert(out_fd >= 0 && in_fd >= 0);
    c->pid = ts_spawn(argv, env, in_fd, out_fd, 1);  /* dies with the test */
    cr_assert_geq(c->pid, 0, "%s", ts_error());
    close(out_fd);
    close(in_fd);
}

/* 1 if it has exited (status set), 0 if still running. */
static int child_exited(child *c)
{
    int status;
    if (c->pid <= 0)
        return 1;
    if (waitpid(c->pid, &status, WNOHANG) != c->pid)
        return 0;
    c->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    c->pid = 0;
    return 1;
}

/* Wait up to timeout_ms for it to exit; then SIGTERM, and SIGKILL to its process group after 5 s. */
static void child_stop(child *c, int timeout_ms, int sig)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    while (!child_exited(c) && ts_now_ms() < deadline)
        usleep(10000);
    if (c->pid <= 0)
        return;
    if (sig != 0) {
        kill(c->pid, sig);
        deadline = ts_now_ms() + 5000;
        while (!child_exited(c) && ts_now_ms() < deadline)
            usleep(10000);
    }
    if (c->pid > 0) {
        kill(-c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
        c->status = -1;
    }
}

static char *read_or_empty(const char *path)
{
    char *s = ts_read_file(path, NULL);
    return s != NULL ? s : strdup("");
}

/* Prosody's and prosodyctl's output without the banner about lua-unbound they print at every start (the
 * legacy resolver it announces is the one these tests need: it reads /etc/resolv.conf). */
static char *without_banner(char *text)
{
    static const char rule[] = "**************************\n";
    char *start = strstr(text, rule), *end;
    if (start != NULL && strstr(start, "lua-unbound") != NULL &&
        (end = strstr(start + sizeof(rule) - 1, rule)) != NULL) {
        end += sizeof(rule) - 1;
        memmove(start, end, strlen(end) + 1);
    }
    return text;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Prosody                                                                                                */

typedef struct prosody {
    char dir[600];                 /* config, data, log, admin socket */
    char conf[700];
    char log[700];
    char sock[700];
    int port;
    child proc;
} prosody;

typedef struct prosody_opts {
    const char *name;              /* "a" or "b": its directory under the fixture's */
    const char *host;              /* its VirtualHost */
    ts_cert *cert;                 /* what it presents (and, as initiating server, its client certificate) */
    int port;
    int secure_auth;
    int shim;                      /* LD_PRELOAD libposh-preload.so */
} prosody_opts;

/* The environment of a child: minimal and explicit, so that the test does not depend on the caller's. */
static char **child_env(int shim)
{
    char **env = calloc(16, sizeof(char *));
    size_t n = 0;
    cr_assert_not_null(env);
    env[n++] = strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    env[n++] = strdup("LANG=C");
    cr_assert_geq(asprintf(&env[n++], "HOME=%s", f.dir), 0);
    if (shim) {
        cr_assert_geq(asprintf(&env[n++], "LD_PRELOAD=%s", POSH_SHIM), 0);
        env[n++] = strdup("POSH_SERVICE=xmpp-server");
        cr_assert_geq(asprintf(&env[n++], "POSH_CA_FILE=%s", f.ca_file), 0);
        cr_assert_geq(asprintf(&env[n++], "POSH_CONNECT_TO=%s", connect_to_override != NULL ? connect_to_override
                                                                                             : f.connect_to), 0);
        env[n++] = strdup("POSH_LOG=stderr");
        env[n++] = strdup("POSH_LOG_LEVEL=debug");
    }
    env[n] = NULL;
    return env;
}

static void env_free(char **env)
{
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}

static int tcp_accepts(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    if (fd < 0)
        return 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int unix_socket_accepts(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, ok;
    if (strlen(path) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void prosody_start_env(prosody *p, const prosody_opts *o, char *const *extra);

static void prosody_start(prosody *p, const prosody_opts *o)
{
    prosody_start_env(p, o, NULL);
}

static char **child_env_plus(int shim, char *const *extra);

/* Start Prosody as o says, with extra environment (NULL-terminated, or NULL) on top of child_env(). */
static void prosody_start_env(prosody *p, const prosody_opts *o, char *const *extra)
{
    char *body = NULL, *out;
    char **env;
    int64_t deadline;

    memset(p, 0, sizeof(*p));
    p->port = o->port;
    snprintf(p->dir, sizeof(p->dir), "%s/prosody-%s", f.dir, o->name);
    snprintf(p->conf, sizeof(p->conf), "%s/prosody.cfg.lua", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/prosody.log", p->dir);
    snprintf(p->sock, sizeof(p->sock), "%s/prosody.sock", p->dir);
    cr_assert_eq(mkdir(p->dir, 0700), 0);
    {
        char sub[700];
        snprintf(sub, sizeof(sub), "%s/data", p->dir);
        cr_assert_eq(mkdir(sub, 0700), 0);
        snprintf(sub, sizeof(sub), "%s/certs", p->dir);
        cr_assert_eq(mkdir(sub, 0700), 0);
        cr_assert_eq(ts_cert_write(o->cert, sub, o->host), 0);
    }
    /* Prosody runs as root here, as in test_shim (the daemon never switches user; prosodyctl would, unless
     * run_as_root, and could then not reach the admin socket). Debug log: the decisive lines are there. */
    cr_assert_geq(asprintf(&body,
                           "pidfile = \"%1$s/prosody.pid\"\n"
                           "data_path = \"%1$s/data\"\n"
                           "certificates = \"%1$s/certs\"\n"
                           "run_as_root = true\n"
                           "log = { debug = \"%2$s\" }\n"
                           "interfaces = { \"127.0.0.1\" }\n"
                           "local_interfaces = { \"127.0.0.1\" }\n"
                           "c2s_ports = { }\n"
                           "c2s_direct_tls_ports = { }\n"
                           "legacy_ssl_ports = { }\n"
                           "s2s_ports = { %3$d }\n"
                           "s2s_direct_tls_ports = { }\n"
                           "http_ports = { }\n"
                           "https_ports = { }\n"
                           "admin_socket = \"%4$s\"\n"
                           "modules_enabled = { \"tls\", \"saslauth\", \"dialback\", \"disco\", \"ping\","
                           " \"admin_shell\" }\n"
                           "modules_disabled = { \"c2s\", \"http\", \"posix\" }\n"
                           "s2s_secure_auth = %5$s\n"
                           "ssl = { cafile = \"%6$s\" }\n"
                           "VirtualHost \"%7$s\"\n"
                           "  ssl = { certificate = \"%1$s/certs/%7$s.crt\", key = \"%1$s/certs/%7$s.key\" }\n",
                           p->dir, p->log, o->port, p->sock, o->secure_auth ? "true" : "false", f.ca_file,
                           o->host),
                 0);
    cr_assert_eq(ts_write_file(p->conf, body, strlen(body)), 0);
    free(body);

    env = child_env_plus(o->shim, extra);
    {
        const char *argv[] = {PROSODY, "-F", "--config", p->conf, NULL};
        spawn(&p->proc, o->name, argv, env);
    }
    env_free(env);

    /* Ready when the s2s port and the admin socket accept; a Prosody that exits is a failure at once. */
    deadline = ts_now_ms() + START_MS;
    while (ts_now_ms() < deadline && !child_exited(&p->proc)) {
        if (tcp_accepts(p->port) && unix_socket_accepts(p->sock))
            return;
        usleep(20000);
    }
    out = read_or_empty(p->proc.out_path);
    {
        char *log = read_or_empty(p->log);
        cr_assert_fail("prosody %s (%s) did not start (exit status %d)\n--- output ---\n%s\n--- log ---\n%s",
                       o->name, o->host, p->proc.pid > 0 ? -2 : p->proc.status, out, log);
    }
}

static void prosody_stop(prosody *p)
{
    child_stop(&p->proc, 0, SIGTERM);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Logs                                                                                                   */

/* The first line of text containing every one of needles (NULL-terminated), or NULL. */
static const char *find_line(const char *text, const char *const needles[])
{
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        int all = 1;
        for (size_t i = 0; needles[i] != NULL && all; i++) {
            const char *hit = memmem(line, len, needles[i], strlen(needles[i]));
            all = hit != NULL;
        }
        if (all)
            return line;
        line = end != NULL ? end + 1 : NULL;
    }
    return NULL;
}

#define HAS_LINE(text, ...) (find_line((text), (const char *const[]){__VA_ARGS__, NULL}) != NULL)

/* Append the lines of text that contain any of needles (all lines if needles is NULL) to *out. */
static void append_lines(char **out, const char *title, const char *text, const char *const needles[])
{
    size_t cap = strlen(*out) + strlen(title) + strlen(text) + 16, len = strlen(*out);
    char *s = realloc(*out, cap);
    cr_assert_not_null(s);
    len += (size_t)snprintf(s + len, cap - len, "%s\n", title);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end != NULL ? (size_t)(end - line) : strlen(line);
        int keep = needles == NULL;
        for (size_t i = 0; !keep && needles[i] != NULL; i++)
            keep = memmem(line, n, needles[i], strlen(needles[i])) != NULL;
        if (keep) {
            memcpy(s + len, line, n);
            len += n;
            s[len++] = '\n';
        }
        line = end != NULL ? end + 1 : NULL;
    }
    s[len] = '\0';
    *out = s;
}

/* ------------------------------------------------------------------------------------------------------ */
/* One federation attempt                                                                                 */

typedef enum { FED_REFUSED, FED_ACCEPTED } verdict;

typedef struct scenario {
    const char *what;
    ts_cert *b_cert;               /* what B presents for foo.example.com */
    int shim;                      /* on A */
    const char *foo_doc;           /* published at https://foo.example.com/.well-known/posh/xmpp-server.json */
    const char *hosting_doc;       /* and at https://hosting.example.net/... (NULL: nothing) */
    verdict expect;
    int await_pong;                /* wait for the ping's answer (only a certificate with the name gets one) */
} scenario;

typedef struct outcome {
    verdict got;
    int decided;                   /* A logged a verdict before the deadline */
    char *a_log, *a_out, *b_log, *ping_out;
    int ping_status;               /* prosodyctl's exit status; -1 killed (no answer in time) */
    long foo_requests, hosting_requests, all_requests;
    long srv_questions;
    int failed;                    /* an expectation failed: print the report */
} outcome;

static void outcome_free(outcome *o)
{
    free(o->a_log);
    free(o->a_out);
    free(o->b_log);
    free(o->ping_out);
}

/* What A (and B, and the DNS responder, and nginx) saw: printed with every failed expectation. */
static char *report(const scenario *s, const outcome *o)
{
    static const char *const a_lines[] = {"s2sout", "\twarn\t", "\terror\t", "adns", "net.connect", NULL};
    static const char *const b_lines[] = {"s2sin", "\twarn\t", "\terror\t", NULL};
    char *r = NULL, *dns_log = ts_dns_log(dns);
    cr_assert_geq(asprintf(&r,
                           "\n===== %s: expected %s; A %s\n"
                           "nginx requests: foo.example.com %ld, hosting.example.net %ld, all %ld\n",
                           s->what, s->expect == FED_ACCEPTED ? "accepted" : "refused",
                           !o->decided ? "logged no verdict in time"
                                       : o->got == FED_ACCEPTED ? "accepted" : "refused",
                           o->foo_requests, o->hosting_requests, o->all_requests),
                 0);
    append_lines(&r, "----- prosody A log (s2sout, adns, net.connect, warnings, errors) -----", o->a_log, a_lines);
    append_lines(&r, "----- prosody A stdout+stderr (the shim logs here: POSH_LOG=stderr) -----", o->a_out, NULL);
    append_lines(&r, "----- prosodyctl shell xmpp:ping on A -----", o->ping_out, NULL);
    append_lines(&r, "----- prosody B log (s2sin, warnings, errors) -----", o->b_log, b_lines);
    append_lines(&r, "----- DNS questions -----", dns_log != NULL ? dns_log : "", NULL);
    free(dns_log);
    return r;
}

static void run_scenario(const scenario *s, outcome *o)
{
    prosody a, b;
    child ping;
    char **env;
    int64_t deadline;
    ts_cert *origin;

    memset(o, 0, sizeof(*o));
    fx_put(&f, FOO, RFC7711_PATH, s->foo_doc);
    if (s->hosting_doc != NULL)
        fx_put(&f, HOSTING, RFC7711_PATH, s->hosting_doc);
    {
        ts_cert_opts co = {.dns = {ORIGIN}, .cn = ORIGIN, .not_before_days = -1, .not_after_days = 30};
        cr_assert_not_null(origin = ts_cert_issue(f.ca, &co));
    }

    /* B is lenient (it only has to let A in, and A presents a valid certificate for its name anyway);
     * A requires authenticated peers and is the one under test. */
    prosody_start(&b, &(prosody_opts){.name = "b", .host = FOO, .cert = s->b_cert, .port = B_PORT});
    prosody_start(&a, &(prosody_opts){.name = "a", .host = ORIGIN, .cert = origin, .port = A_PORT,
                                      .secure_auth = 1, .shim = s->shim});

    /* The admin shell's ping makes A open the s2s stream to foo.example.com. prosodyctl itself gets no shim. */
    env = child_env(0);
    {
        const char *argv[] = {PROSODYCTL, "--config", a.conf, "shell",
                              "xmpp:ping('" ORIGIN "', '" FOO "', 15)", NULL};
        spawn(&ping, "ping", argv, env);
    }
    env_free(env);

    /* A's verdict on the outgoing stream: complete, forbidden, or the connection failed. */
    deadline = ts_now_ms() + DECIDE_MS;
    for (;;) {
        free(o->a_log);
        o->a_log = read_or_empty(a.log);
        if (HAS_LINE(o->a_log, LOG_ACCEPTED)) {
            o->decided = 1;
            o->got = FED_ACCEPTED;
        } else if (HAS_LINE(o->a_log, "s2sout", LOG_FORBIDDEN_ANY) || HAS_LINE(o->a_log, LOG_FAILED)) {
            o->decided = 1;
            o->got = FED_REFUSED;
        }
        if (o->decided || ts_now_ms() >= deadline)
            break;
        usleep(20000);
    }
    /* Accepted: the ping crossed to B over that stream. B's reply needs a stream from B to A, on which A judges
     * B's client certificate (by POSH since issue 19, when A is under the shim); these scenarios are about A's
     * outgoing stream, so the pong is awaited only when the certificate carries the name. The both_ways tests
     * below check the replies. */
    if (o->decided && o->got == FED_ACCEPTED) {
        deadline = ts_now_ms() + DECIDE_MS;
        do {
            free(o->b_log);
            o->b_log = read_or_empty(b.log);
            if (HAS_LINE(o->b_log, "Received[s2sin]: <iq", "type='get'", "from='" ORIGIN "'"))
                break;
            usleep(20000);
        } while (ts_now_ms() < deadline);
    }
    child_stop(&ping, s->await_pong ? DECIDE_MS : 0, SIGTERM);
    o->ping_status = ping.status;

    prosody_stop(&a);
    prosody_stop(&b);
    free(o->a_log);
    free(o->b_log);
    o->a_log = read_or_empty(a.log);
    o->a_out = without_banner(read_or_empty(a.proc.out_path));
    o->b_log = read_or_empty(b.log);
    o->ping_out = without_banner(read_or_empty(ping.out_path));
    o->foo_requests = fx_requests(&f, FOO, NULL);
    o->hosting_requests = fx_requests(&f, HOSTING, NULL);
    o->all_requests = fx_requests(&f, NULL, NULL);
    o->srv_questions = ts_dns_queries(dns, "_xmpp-server._tcp." FOO, TS_DNS_SRV);
    ts_cert_free(origin);
}

/* cr_expect that also marks the outcome o failed (either kind of outcome): the report then follows the test's
 * failures, once. */
#define EXPECT(cond, ...)                                                                                        \
    do {                                                                                                         \
        if (!(cond)) {                                                                                           \
            o->failed = 1;                                                                                       \
            cr_expect(0, __VA_ARGS__);                                                                           \
        }                                                                                                        \
    } while (0)

static void report_if_failed(const scenario *s, outcome *o)
{
    if (o->failed) {
        char *r = report(s, o);
        cr_log_error("%s", r);
        free(r);
    }
}

/* What every scenario shows: the harness worked (A asked our DNS, reached B), and A's verdict. */
static void expect_verdict(const scenario *s, outcome *o)
{
    EXPECT(o->srv_questions > 0, "%s: A never asked for _xmpp-server._tcp." FOO " (DNS responder unused?)", s->what);
    EXPECT(o->decided, "%s: A logged no verdict on its stream to " FOO " within %d ms", s->what, DECIDE_MS);
    if (!o->decided)
        return;
    if (s->expect == FED_ACCEPTED) {
        EXPECT(o->got == FED_ACCEPTED && HAS_LINE(o->a_log, "s2sout", "certificate identity validation result: valid"),
               "%s: A did not accept foo.example.com's certificate", s->what);
        EXPECT(!HAS_LINE(o->a_log, "s2sout", LOG_FORBIDDEN_ANY), "%s: A forbade its outgoing stream", s->what);
        EXPECT(HAS_LINE(o->b_log, "Received[s2sin]: <iq", "type='get'", "from='" ORIGIN "'"),
               "%s: B never received A's ping over the stream", s->what);
    } else {
        EXPECT(o->got == FED_REFUSED && HAS_LINE(o->a_log, "s2sout", LOG_FORBIDDEN),
               "%s: A did not refuse foo.example.com's certificate as not valid for this name", s->what);
        EXPECT(!HAS_LINE(o->a_log, LOG_ACCEPTED), "%s: A completed its outgoing stream", s->what);
        EXPECT(!HAS_LINE(o->b_log, "Received[s2sin]: <iq", "from='" ORIGIN "'"),
               "%s: B received a stanza from A", s->what);
    }
}

/* ------------------------------------------------------------------------------------------------------ */
/* Suite                                                                                                  */

static void setup(void)
{
    char crt[700], key[700];
    size_t len;

    fx_init(&f);
    /* origin.example.org publishes a POSH document too (both domains hosted, both directions). */
    web_origin = fx_issue(f.ca, ORIGIN, -1, 30, 0);
    cr_assert_eq(ts_cert_write(web_origin, f.dir, "origin"), 0);
    snprintf(crt, sizeof(crt), "%s/origin.crt", f.dir);
    snprintf(key, sizeof(key), "%s/origin.key", f.dir);
    cr_assert_eq(ts_nginx_add_site(f.nginx, ORIGIN, crt, key), 0);
    isolate();
    start_dns();
    fx_start(&f);
    len = strlen(f.connect_to);
    snprintf(f.connect_to + len, sizeof(f.connect_to) - len, ",%s:443:127.0.0.1:%d", ORIGIN,
             ts_nginx_port(f.nginx));
}

static void teardown(void)
{
    ts_dns_free(dns);
    dns = NULL;
    fx_fini(&f);
    ts_cert_free(web_origin);
    web_origin = NULL;
    if (host_mnt_ns >= 0) {
        expect_host_resolv_unchanged("at the end of the test");
        close(host_mnt_ns);
        host_mnt_ns = -1;
    }
    free(host_resolv);
    host_resolv = NULL;
}

TestSuite(federation, .init = setup, .fini = teardown, .timeout = 120);

static char *fingerprints_of_svc(void)
{
    return fx_doc1(f.svc, 86400);
}

static char *reference_to_hosting(void)
{
    return fx_ref("https://" HOSTING RFC7711_PATH, 86400);
}

/* 1. A without the shim: the provider's certificate does not carry foo.example.com. Refused, no POSH. */
Test(federation, without_shim_refused)
{
    char *doc = fingerprints_of_svc();
    scenario sc = {.what = "without the shim", .b_cert = f.svc, .shim = 0, .foo_doc = doc, .expect = FED_REFUSED};
    const scenario *s = &sc;
    outcome out, *o = &out;
    run_scenario(s, o);
    expect_verdict(s, o);
    EXPECT(o->all_requests == 0, "%s: %ld POSH requests at the web server", s->what, o->all_requests);
    report_if_failed(s, o);
    outcome_free(o);
    free(doc);
}

/* 2a. With the shim, foo.example.com refers to the provider's document, which holds the fingerprint. */
Test(federation, shim_reference_accepted)
{
    char *ref = reference_to_hosting(), *doc = fingerprints_of_svc();
    scenario sc = {.what = "shim, reference to hosting.example.net", .b_cert = f.svc, .shim = 1, .foo_doc = ref,
                   .hosting_doc = doc, .expect = FED_ACCEPTED};
    const scenario *s = &sc;
    outcome out, *o = &out;
    run_scenario(s, o);
    expect_verdict(s, o);
    EXPECT(fx_requests(&f, FOO, RFC7711_PATH) >= 1, "%s: no request for https://" FOO RFC7711_PATH, s->what);
    EXPECT(fx_requests(&f, HOSTING, RFC7711_PATH) >= 1, "%s: the reference was not followed", s->what);
    report_if_failed(s, o);
    outcome_free(o);
    free(ref);
    free(doc);
}

/* 2b. With the shim, foo.example.com publishes the fingerprint itself. */
Test(federation, shim_fingerprints_accepted)
{
    char *doc = fingerprints_of_svc();
    scenario sc = {.what = "shim, fingerprints at foo.example.com", .b_cert = f.svc, .shim = 1, .foo_doc = doc,
                   .expect = FED_ACCEPTED};
    const scenario *s = &sc;
    outcome out, *o = &out;
    run_scenario(s, o);
    expect_verdict(s, o);
    EXPECT(fx_requests(&f, FOO, RFC7711_PATH) >= 1, "%s: no request for https://" FOO RFC7711_PATH, s->what);
    EXPECT(o->hosting_requests == 0, "%s: %ld requests at hosting.example.net", s->what, o->hosting_requests);
    report_if_failed(s, o);
    outcome_free(o);
    free(doc);
}

/* 3. With the shim, B presents an impostor: the provider's name, another key. Both documents vouch only for
 * the real certificate. Refused, by POSH: the reference identifier came from the stream header, the documents
 * were fetched, and they name another certificate. */
Test(federation, shim_impostor_refused)
{
    char *ref = reference_to_hosting(), *doc = fingerprints_of_svc();
    ts_cert_opts io = {.dns = {SVC_NAME}, .cn = SVC_NAME, .not_before_days = -1, .not_after_days = 30};
    ts_cert *impostor = ts_cert_issue(f.ca, &io);
    cr_assert_not_null(impostor);
    scenario sc = {.what = "shim, impostor certificate", .b_cert = impostor, .shim = 1, .foo_doc = ref,
                   .hosting_doc = doc, .expect = FED_REFUSED};
    const scenario *s = &sc;
    outcome out, *o = &out;
    {
        char *a = ts_cert_fingerprint_b64(impostor, "sha-256"), *b = ts_cert_fingerprint_b64(f.svc, "sha-256");
        cr_assert(a != NULL && b != NULL && strcmp(a, b) != 0);
        cr_assert(X509_NAME_cmp(X509_get_subject_name(ts_cert_x509(impostor)),
                                X509_get_subject_name(ts_cert_x509(f.svc))) == 0);
        cr_assert(EVP_PKEY_eq(ts_cert_key(impostor), ts_cert_key(f.svc)) != 1, "the impostor has the same key");
        free(a);
        free(b);
    }
    run_scenario(s, o);
    expect_verdict(s, o);
    EXPECT(fx_requests(&f, FOO, RFC7711_PATH) >= 1, "%s: POSH did not run for the stream header's `to`", s->what);
    EXPECT(fx_requests(&f, HOSTING, RFC7711_PATH) >= 1, "%s: the reference was not followed", s->what);
    report_if_failed(s, o);
    outcome_free(o);
    ts_cert_free(impostor);
    free(ref);
    free(doc);
}

/* 4. With the shim, B presents a certificate for foo.example.com itself: accepted by PKIX alone, the ping is
 * answered, and nobody asked the web server. */
Test(federation, shim_named_certificate_no_posh)
{
    char *doc = fingerprints_of_svc();
    ts_cert_opts no = {.dns = {FOO}, .cn = FOO, .not_before_days = -1, .not_after_days = 30};
    ts_cert *named = ts_cert_issue(f.ca, &no);
    cr_assert_not_null(named);
    scenario sc = {.what = "shim, certificate for foo.example.com", .b_cert = named, .shim = 1, .foo_doc = doc,
                   .expect = FED_ACCEPTED, .await_pong = 1};
    const scenario *s = &sc;
    outcome out, *o = &out;
    run_scenario(s, o);
    expect_verdict(s, o);
    EXPECT(o->ping_status == 0 && strstr(o->ping_out, "pong from " FOO) != NULL,
           "%s: no pong from " FOO " (prosodyctl exit status %d)", s->what, o->ping_status);
    EXPECT(o->all_requests == 0, "%s: %ld POSH requests at the web server", s->what, o->all_requests);
    report_if_failed(s, o);
    outcome_free(o);
    ts_cert_free(named);
    free(doc);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Both directions (issue 19): both servers s2s_secure_auth, both domains hosted (each presents a provider's
 * certificate that does not carry its name and publishes a POSH document), both under the shim. Every ping
 * needs two streams, one each way, so a pong means that each server accepted the other twice: once as the
 * server it dialled (the `to` it sent) and once as the peer of a stream it accepted (the `from` it received,
 * verified on the peer's client certificate).                                                            */

#define PING_S 15                  /* prosodyctl's ping gives up after this */
#define A_PROVIDER "other.hosting.example.net"   /* A's certificate: f.other */

typedef struct twoway {
    const char *what;
    ts_cert *a_cert, *b_cert;      /* what A (origin.example.org) and B (foo.example.com) present */
    int a_shim, b_shim;
    const char *origin_doc, *foo_doc;   /* published POSH documents (NULL: none) */
    int expect_pong;               /* both pings answered (else both refused) */
    char *const *extra_env;        /* more environment for both servers (NULL-terminated), or NULL */
    const char *tag;               /* suffix of the servers' directories (several runs in one test), or NULL */
} twoway;

typedef struct twoway_outcome {
    int pong_ab, pong_ba;          /* the ping from A to foo.example.com, from B to origin.example.org */
    double secs_ab, secs_ba;       /* ping to pong as Prosody measured it; -1 without a pong */
    char *a_log, *a_out, *b_log, *b_out, *ping_ab, *ping_ba;
    long origin_requests, foo_requests, all_requests;
    int failed;
} twoway_outcome;

static void twoway_free(twoway_outcome *o)
{
    free(o->a_log);
    free(o->a_out);
    free(o->b_log);
    free(o->b_out);
    free(o->ping_ab);
    free(o->ping_ba);
}

/* prosodyctl shell xmpp:ping(from, to) against the server of conf; its output; *secs the pong's time or -1. */
static char *ping(const char *name, const char *conf, const char *from, const char *to, double *secs)
{
    char cmd[300], *out, needle[300];
    const char *hit;
    char **env = child_env(0);
    child c;

    snprintf(cmd, sizeof(cmd), "xmpp:ping('%s', '%s', %d)", from, to, PING_S);
    {
        const char *argv[] = {PROSODYCTL, "--config", conf, "shell", cmd, NULL};
        spawn(&c, name, argv, env);
    }
    env_free(env);
    child_stop(&c, (PING_S + 10) * 1000, SIGTERM);
    out = without_banner(read_or_empty(c.out_path));
    snprintf(needle, sizeof(needle), "pong from %s in ", to);
    *secs = (hit = strstr(out, needle)) != NULL ? strtod(hit + strlen(needle), NULL) : -1;
    return out;
}

/*
 * The time the streams of a ping spent between connecting and being established (TLS, both verifications,
 * authentication), summed over its sessions, from prosodyctl's report ("Session ID (...) connected (T s)",
 * "... established (T s)"): the ping-to-pong time without the resolver's share. -1 if it has none.
 */
static double stream_setup_secs(const char *out)
{
    struct {
        char id[64];
        double connected;
    } seen[8];
    size_t n = 0;
    double total = -1;

    for (const char *line = out; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n'), *paren;
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        char buf[512], id[64];
        snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1), line);
        if (sscanf(buf, "Session %63s", id) == 1 && (paren = strrchr(buf, '(')) != NULL) {
            double t = strtod(paren + 1, NULL);
            if (strstr(buf, " connected (") != NULL && n < 8) {
                snprintf(seen[n].id, sizeof(seen[n].id), "%s", id);
                seen[n++].connected = t;
            } else if (strstr(buf, " established (") != NULL) {
                for (size_t i = 0; i < n; i++)
                    if (strcmp(seen[i].id, id) == 0)
                        total = (total < 0 ? 0 : total) + t - seen[i].connected;
            }
        }
        line = end != NULL ? end + 1 : NULL;
    }
    return total;
}

/* child_env(shim) plus extra (NULL-terminated, or NULL). */
static char **child_env_plus(int shim, char *const *extra)
{
    char **env = child_env(shim);
    size_t n = 0, k = 0;
    while (env[n] != NULL)
        n++;
    while (extra != NULL && extra[k] != NULL)
        k++;
    cr_assert_lt(n + k, 16);
    for (size_t i = 0; i < k; i++)
        env[n + i] = strdup(extra[i]);
    env[n + k] = NULL;
    return env;
}

static void run_twoway(const twoway *s, twoway_outcome *o)
{
    prosody a, b;
    char a_name[32], b_name[32];

    memset(o, 0, sizeof(*o));
    if (s->origin_doc != NULL)
        fx_put(&f, ORIGIN, RFC7711_PATH, s->origin_doc);
    if (s->foo_doc != NULL)
        fx_put(&f, FOO, RFC7711_PATH, s->foo_doc);
    snprintf(a_name, sizeof(a_name), "a%s", s->tag != NULL ? s->tag : "");
    snprintf(b_name, sizeof(b_name), "b%s", s->tag != NULL ? s->tag : "");
    prosody_start_env(&b, &(prosody_opts){.name = b_name, .host = FOO, .cert = s->b_cert, .port = B_PORT,
                                          .secure_auth = 1, .shim = s->b_shim}, s->extra_env);
    prosody_start_env(&a, &(prosody_opts){.name = a_name, .host = ORIGIN, .cert = s->a_cert, .port = A_PORT,
                                          .secure_auth = 1, .shim = s->a_shim}, s->extra_env);
    {
        char n1[48], n2[48];
        snprintf(n1, sizeof(n1), "ping-ab%s", s->tag != NULL ? s->tag : "");
        snprintf(n2, sizeof(n2), "ping-ba%s", s->tag != NULL ? s->tag : "");
        o->ping_ab = ping(n1, a.conf, ORIGIN, FOO, &o->secs_ab);
        o->ping_ba = ping(n2, b.conf, FOO, ORIGIN, &o->secs_ba);
    }
    o->pong_ab = o->secs_ab >= 0;
    o->pong_ba = o->secs_ba >= 0;
    prosody_stop(&a);
    prosody_stop(&b);
    o->a_log = read_or_empty(a.log);
    o->a_out = without_banner(read_or_empty(a.proc.out_path));
    o->b_log = read_or_empty(b.log);
    o->b_out = without_banner(read_or_empty(b.proc.out_path));
    o->origin_requests = fx_requests(&f, ORIGIN, RFC7711_PATH);
    o->foo_requests = fx_requests(&f, FOO, RFC7711_PATH);
    o->all_requests = fx_requests(&f, NULL, NULL);
}

static void twoway_report_if_failed(const twoway *s, twoway_outcome *o)
{
    static const char *const lines[] = {"s2s", "\twarn\t", "\terror\t", "Forbidding", NULL};
    char *r = NULL;
    if (!o->failed)
        return;
    cr_assert_geq(asprintf(&r, "\n===== %s: pongs A->B %d (%gs), B->A %d (%gs); requests origin %ld, foo %ld, "
                           "all %ld\n", s->what, o->pong_ab, o->secs_ab, o->pong_ba, o->secs_ba, o->origin_requests,
                           o->foo_requests, o->all_requests), 0);
    append_lines(&r, "----- ping on A -----", o->ping_ab, NULL);
    append_lines(&r, "----- ping on B -----", o->ping_ba, NULL);
    append_lines(&r, "----- prosody A log -----", o->a_log, lines);
    append_lines(&r, "----- prosody A stdout+stderr -----", o->a_out, NULL);
    append_lines(&r, "----- prosody B log -----", o->b_log, lines);
    append_lines(&r, "----- prosody B stdout+stderr -----", o->b_out, NULL);
    cr_log_error("%s", r);
    free(r);
}

/* Did server (its log) refuse the peer's certificate on a stream it accepted (s2sin)? */
static int refused_incoming(const char *log, const char *peer)
{
    char forbid[200];
    snprintf(forbid, sizeof(forbid), "Forbidding insecure connection to/from %s", peer);
    return HAS_LINE(log, "s2sin", forbid);
}

static void expect_twoway(const twoway *s, twoway_outcome *o)
{
    if (s->expect_pong) {
        EXPECT(o->pong_ab, "%s: no pong from " FOO " for A's ping", s->what);
        EXPECT(o->pong_ba, "%s: no pong from " ORIGIN " for B's ping", s->what);
        EXPECT(!HAS_LINE(o->a_log, "Forbidding insecure connection"), "%s: A forbade a stream", s->what);
        EXPECT(!HAS_LINE(o->b_log, "Forbidding insecure connection"), "%s: B forbade a stream", s->what);
    } else {
        EXPECT(!o->pong_ab, "%s: A's ping was answered", s->what);
        EXPECT(!o->pong_ba, "%s: B's ping was answered", s->what);
    }
}

static char *doc_of(ts_cert *c)
{
    return fx_doc1(c, 86400);
}

/* 5. Both under the shim, both hosted: each pings the other and gets its pong; both documents fetched. */
Test(federation, both_ways_accepted)
{
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    twoway sc = {.what = "both ways, both hosted, both under the shim", .a_cert = f.other, .b_cert = f.svc,
                 .a_shim = 1, .b_shim = 1, .origin_doc = od, .foo_doc = fd, .expect_pong = 1};
    const twoway *s = &sc;
    twoway_outcome out, *o = &out;
    run_twoway(s, o);
    expect_twoway(s, o);
    EXPECT(o->origin_requests >= 1, "%s: origin.example.org's document was never fetched", s->what);
    EXPECT(o->foo_requests >= 1, "%s: foo.example.com's document was never fetched", s->what);
    /* Each server verified its peer on a stream it accepted, by the `from` it received. */
    EXPECT(HAS_LINE(o->a_out, FOO, "vouched for by POSH"), "%s: A's shim vouched for nothing", s->what);
    EXPECT(HAS_LINE(o->b_out, ORIGIN, "vouched for by POSH"), "%s: B's shim vouched for nothing", s->what);
    cr_log_info("both ways: ping to pong A->B %gs, B->A %gs", o->secs_ab, o->secs_ba);
    twoway_report_if_failed(s, o);
    twoway_free(o);
    free(od);
    free(fd);
}

/* 6. The same without the shim: refused in each direction, no POSH request. */
Test(federation, both_ways_without_shim_refused)
{
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    twoway sc = {.what = "both ways, no shim", .a_cert = f.other, .b_cert = f.svc, .origin_doc = od, .foo_doc = fd};
    const twoway *s = &sc;
    twoway_outcome out, *o = &out;
    run_twoway(s, o);
    expect_twoway(s, o);
    EXPECT(o->all_requests == 0, "%s: %ld POSH requests", s->what, o->all_requests);
    twoway_report_if_failed(s, o);
    twoway_free(o);
    free(od);
    free(fd);
}

/* 7. Only the receiving side lacks the shim: A dials B and accepts it (A's shim), but B, without the shim,
 * refuses A's client certificate on the stream it accepted: the incoming direction needs the shim too. */
Test(federation, incoming_without_shim_refused)
{
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    twoway sc = {.what = "A under the shim, B not", .a_cert = f.other, .b_cert = f.svc, .a_shim = 1,
                 .origin_doc = od, .foo_doc = fd};
    const twoway *s = &sc;
    twoway_outcome out, *o = &out;
    run_twoway(s, o);
    expect_twoway(s, o);
    EXPECT(refused_incoming(o->b_log, ORIGIN), "%s: B did not refuse origin.example.org's stream", s->what);
    twoway_report_if_failed(s, o);
    twoway_free(o);
    free(od);
    free(fd);
}

/* 8. An impostor on either side (the provider's name and CA, another key): refused in each direction, also
 * as the peer of a stream the honest server accepted. */
static void impostor_refused(int a_is_impostor)
{
    ts_cert *fake = fx_issue(f.ca, a_is_impostor ? A_PROVIDER : SVC_NAME, -1, 30, 0);
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    twoway sc = {.what = a_is_impostor ? "A an impostor" : "B an impostor",
                 .a_cert = a_is_impostor ? fake : f.other, .b_cert = a_is_impostor ? f.svc : fake,
                 .a_shim = 1, .b_shim = 1, .origin_doc = od, .foo_doc = fd};
    const twoway *s = &sc;
    twoway_outcome out, *o = &out;
    run_twoway(s, o);
    expect_twoway(s, o);
    /* The honest server refuses the impostor on the stream the impostor opened (its client certificate). */
    if (a_is_impostor)
        EXPECT(refused_incoming(o->b_log, ORIGIN), "%s: B did not refuse the impostor's stream", s->what);
    else
        EXPECT(refused_incoming(o->a_log, FOO), "%s: A did not refuse the impostor's stream", s->what);
    EXPECT((a_is_impostor ? o->origin_requests : o->foo_requests) >= 1, "%s: the document was never fetched",
            s->what);
    twoway_report_if_failed(s, o);
    twoway_free(o);
    ts_cert_free(fake);
    free(od);
    free(fd);
}

Test(federation, both_ways_impostor_b_refused)
{
    impostor_refused(0);
}

Test(federation, both_ways_impostor_a_refused)
{
    impostor_refused(1);
}

/* 9. Certificates that carry the domains: accepted both ways by PKIX, no POSH request at all. */
Test(federation, both_ways_named_certificates_no_posh)
{
    ts_cert *named_a = fx_issue(f.ca, ORIGIN, -1, 30, 0), *named_b = fx_issue(f.ca, FOO, -1, 30, 0);
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    twoway sc = {.what = "named certificates", .a_cert = named_a, .b_cert = named_b, .a_shim = 1, .b_shim = 1,
                 .origin_doc = od, .foo_doc = fd, .expect_pong = 1};
    const twoway *s = &sc;
    twoway_outcome out, *o = &out;
    run_twoway(s, o);
    expect_twoway(s, o);
    EXPECT(o->all_requests == 0, "%s: %ld POSH requests", s->what, o->all_requests);
    twoway_report_if_failed(s, o);
    twoway_free(o);
    ts_cert_free(named_a);
    ts_cert_free(named_b);
    free(od);
    free(fd);
}

/*
 * 10. The early lookup (issue 19 §3), measured: every POSH fetch goes through a relay that holds each connection
 * 300 ms before it reaches nginx. Ping to pong both ways, with the shim's early lookup (POSH_PREFETCH=1, opt-in:
 * started when the socket is handed to OpenSSL, right after the stream header) and without it (POSH_PREFETCH=0,
 * the default: at the verification). Prints the figures (bench/RESULTS.md); asserts only the outcomes.
 */
Test(federation, early_lookup_figures)
{
    char *od = doc_of(f.other), *fd = doc_of(f.svc);
    ts_relay *relay = ts_relay_start(ts_nginx_port(f.nginx), 300, 0);
    char *const on[] = {"POSH_PREFETCH=1", NULL}, *const off[] = {"POSH_PREFETCH=0", NULL};
    double secs[2][2], setup[2][2];

    cr_assert_not_null(relay);
    cr_assert_geq(asprintf(&connect_to_override, "%s:443:127.0.0.1:%d,%s:443:127.0.0.1:%d", FOO,
                           ts_relay_port(relay), ORIGIN, ts_relay_port(relay)), 0);
    for (int early = 1; early >= 0; early--) {
        twoway sc = {.what = early ? "300 ms web server, early lookup" : "300 ms web server, no early lookup",
                     .a_cert = f.other, .b_cert = f.svc, .a_shim = 1, .b_shim = 1, .origin_doc = od, .foo_doc = fd,
                     .expect_pong = 1, .extra_env = early ? on : off, .tag = early ? "-early" : "-late"};
        const twoway *s = &sc;
        twoway_outcome out, *o = &out;
        run_twoway(s, o);
        expect_twoway(s, o);
        if (early)
            EXPECT(HAS_LINE(o->b_out, ORIGIN, "early lookup started (stream header received)"),
                    "%s: B started no early lookup for the `from` it received", s->what);
        else
            EXPECT(!HAS_LINE(o->b_out, "early lookup started"), "%s: an early lookup was started", s->what);
        secs[early][0] = o->secs_ab;
        secs[early][1] = o->secs_ba;
        setup[early][0] = stream_setup_secs(o->ping_ab);
        setup[early][1] = stream_setup_secs(o->ping_ba);
        twoway_report_if_failed(s, o);
        twoway_free(o);
    }
    /* Ping to pong includes Prosody's resolver (about 1.7 s per new stream here, whatever POSH does): the
     * streams' own setup time (connected to established, both streams of the ping) is printed too. */
    printf("early-lookup-figures: A->B (cold) ping->pong %.3f s with, %.3f s without; streams' setup %.3f s with, "
           "%.3f s without; B->A (warm) ping->pong %.3f s with, %.3f s without\n", secs[1][0], secs[0][0],
           setup[1][0], setup[0][0], secs[1][1], secs[0][1]);
    fflush(stdout);
    ts_relay_stop(relay);
    free(connect_to_override);
    connect_to_override = NULL;
    free(od);
    free(fd);
}

/* ------------------------------------------------------------------------------------------------------ */
/* The DNS responder on its own, as Prosody's resolver asks it (inside the test's namespaces, through the
 * bind-mounted resolv.conf: res_query reads /etc/resolv.conf too).                                       */

Test(federation, dns_responder_answers_only_what_it_knows)
{
    unsigned char ans[512];
    ns_msg msg;
    ns_rr rr;
    int n;
    char target[NS_MAXDNAME];

    n = res_query("_xmpp-server._tcp." FOO, ns_c_in, ns_t_srv, ans, sizeof(ans));
    cr_assert_gt(n, 0, "SRV query: h_errno %d", h_errno);
    cr_assert_eq(ns_initparse(ans, n, &msg), 0);
    cr_assert_eq(ns_msg_count(msg, ns_s_an), 1);
    cr_assert_eq(ns_parserr(&msg, ns_s_an, 0, &rr), 0);
    cr_assert_eq(ns_rr_type(rr), ns_t_srv);
    cr_assert_eq(ns_get16(ns_rr_rdata(rr) + 4), B_PORT);
    cr_assert_geq(ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr) + 6, target,
                                     sizeof(target)), 0);
    cr_assert_str_eq(target, SVC_NAME);

    n = res_query("XMPP.Hosting.Example.NET.", ns_c_in, ns_t_a, ans, sizeof(ans));
    cr_assert_gt(n, 0, "A query (case-insensitive): h_errno %d", h_errno);
    cr_assert_eq(ns_initparse(ans, n, &msg), 0);
    cr_assert_eq(ns_parserr(&msg, ns_s_an, 0, &rr), 0);
    cr_assert_eq(ns_rr_rdlen(rr), 4);
    cr_assert_eq(memcmp(ns_rr_rdata(rr), "\x7f\x00\x00\x01", 4), 0);

    /* A known name without that type: NOERROR, no answer (res_query reports NO_DATA). */
    cr_assert_lt(res_query(SVC_NAME, ns_c_in, ns_t_aaaa, ans, sizeof(ans)), 0);
    cr_assert_eq(h_errno, NO_DATA);
    /* Anything else: NXDOMAIN, never forwarded. */
    cr_assert_lt(res_query("example.com", ns_c_in, ns_t_a, ans, sizeof(ans)), 0);
    cr_assert_eq(h_errno, HOST_NOT_FOUND);
    cr_assert_eq(ts_dns_queries(dns, "example.com", TS_DNS_A), 1);
    cr_assert_eq(ts_dns_queries(dns, SVC_NAME, 0), 2);
}
