/*
 * test_shim.c - libposh-preload.so in real, unmodified Debian programs (openssl s_client, curl, python3,
 * stunnel4, Postfix's posttls-finger, Prosody), run as child processes against the fixture's nginx and TLS
 * servers on 127.0.0.1. For each program: (a) without the shim rejected, (b) with the shim and a vouching
 * document accepted, (c) with a document that does not vouch rejected, (d) a certificate carrying the name
 * accepted with no POSH request. Then transparency (untrusted chains, curl -k, servers, programs without TLS,
 * silence) and safety (no recursion, threads, fork, lazy initialisation, an application's own callback).
 * Each test runs in a network namespace of its own with only loopback (ts_private_network: root, as in CI).
 * A missing program is a failure, never a skip: CI installs them all (.ci/run).
 */
#include "programs.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#define BAR "bar.example.org"       /* a second XMPP domain whose certificate carries its own name */
#define XMPP_CLIENT_PATH "/.well-known/posh/xmpp-client.json"
#define SUBMISSION_PATH "/.well-known/posh/submission.json"
#define HTTP_BODY "posh-shim-ok"
#define PYTHON "/usr/bin/python3"   /* Debian's, whatever PATH says */

static fx f;
static ts_cert *named;             /* foo.example.com: the name matches, POSH never needed */
static ts_tls *svc_server;         /* presents xmpp.hosting.example.net */
static ts_tls *named_server;       /* presents foo.example.com */

/* ------------------------------------------------------------------------------------------------------ */
/* Helpers (running programs and the HTTPS server: programs.c)                                            */

static int count_occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Servers                                                                                                */

static ts_cert *issue(ts_ca *ca, const char *name, int self_signed)
{
    ts_cert_opts o = {0};
    o.dns[0] = name;
    o.cn = name;
    o.not_before_days = -1;
    o.not_after_days = 30;
    o.self_signed = self_signed;
    ts_cert *c = ts_cert_issue(ca, &o);
    cr_assert_not_null(c);
    return c;
}

/*
 * A sequential TLS server on a port of our choosing (0: any): a bare handshake (MINI_TLS), an SMTP STARTTLS
 * dialogue (MINI_SMTP: "220" greeting, EHLO -> 250 STARTTLS, STARTTLS -> 220, handshake, then EHLO/QUIT inside
 * TLS), HTTP inside TLS as http_handler answers it (MINI_HTTP), or an XMPP server's STARTTLS (MINI_XMPP: the
 * stream header, features with starttls, proceed, handshake).
 */
enum { MINI_TLS, MINI_SMTP, MINI_HTTP, MINI_XMPP };

typedef seq_server mini;

/* Read until needle was seen (XMPP sends no newlines): 1, or 0 on EOF, timeout or a full buffer. */
static int plain_until(int fd, const char *needle)
{
    char buf[2048];
    size_t n = 0;
    while (n < sizeof(buf) - 1 && recv(fd, buf + n, 1, 0) == 1) {
        buf[++n] = '\0';
        if (strstr(buf, needle) != NULL)
            return 1;
    }
    return 0;
}

/* The server's side of XMPP STARTTLS, up to the handshake: 1 when the client asked for it. */
static int xmpp_preamble(int fd)
{
    if (!plain_until(fd, "version='1.0'>"))
        return 0;
    conn_send(fd, NULL,
              "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx."
              "jabber.org/streams' id='s1' from='" FOO "' version='1.0'><stream:features><starttls "
              "xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>");
    if (!plain_until(fd, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
        return 0;
    conn_send(fd, NULL, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    return 1;
}

static void mini_serve(SSL_CTX *ctx, int fd, void *arg)
{
    int mode = (int)(intptr_t)arg;
    char line[1024];
    SSL *ssl = NULL;

    if (mode == MINI_XMPP && !xmpp_preamble(fd))
        return;
    if (mode == MINI_SMTP) {
        conn_send(fd, NULL, "220 " FOO " ESMTP posh-test\r\n");
        for (;;) {
            if (conn_line(fd, NULL, line, sizeof(line)) != 0)
                return;
            if (strncasecmp(line, "EHLO", 4) == 0) {
                conn_send(fd, NULL, "250-" FOO "\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
            } else if (strncasecmp(line, "STARTTLS", 8) == 0) {
                conn_send(fd, NULL, "220 2.0.0 Ready to start TLS\r\n");
                break;
            } else if (strncasecmp(line, "QUIT", 4) == 0) {
                conn_send(fd, NULL, "221 2.0.0 Bye\r\n");
                return;
            } else {
                conn_send(fd, NULL, "250 2.0.0 Ok\r\n");
            }
        }
    }
    if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)
        goto done;
    while (mode == MINI_HTTP && conn_line(fd, ssl, line, sizeof(line)) == 0) {
        if (strcmp(line, "\r\n") != 0)
            continue;
        SSL_write(ssl, http_response(), (int)strlen(http_response()));
        SSL_shutdown(ssl);
        while (SSL_read(ssl, line, (int)sizeof(line)) > 0)
            ; /* until the client is gone: see http_handler */
        goto done;
    }
    while (mode == MINI_SMTP && conn_line(fd, ssl, line, sizeof(line)) == 0) {
        const char *reply = strncasecmp(line, "EHLO", 4) == 0   ? "250-" FOO "\r\n250 PIPELINING\r\n"
                            : strncasecmp(line, "QUIT", 4) == 0 ? "221 2.0.0 Bye\r\n"
                                                                : "250 2.0.0 Ok\r\n";
        SSL_write(ssl, reply, (int)strlen(reply));
        if (strncasecmp(line, "QUIT", 4) == 0)
            break;
    }
    SSL_shutdown(ssl);
done:
    SSL_free(ssl);
    ERR_clear_error();
}

static mini *mini_start(ts_cert *cert, int port, int mode)
{
    return seq_server_start(cert, port, mini_serve, (void *)(intptr_t)mode);
}

static void mini_stop(mini *m)
{
    seq_server_stop(m);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Suite                                                                                                  */

static void setup(void)
{
    /* Every test in a network namespace of its own: the port-map tests bind 5222, 5269, 587 and 143, and
     * nothing on the machine (nor a parallel run) can hold them; the programs' packets stay in it. */
    cr_assert_eq(ts_private_network(), 0, "%s", ts_error());
    programs_use(&f, HTTP_BODY);
    fx_init(&f);
    named = issue(f.ca, FOO, 0);
    fx_start(&f);
    svc_server = start_http(f.svc);
    named_server = start_http(named);
}

static void teardown(void)
{
    ts_tls_stop(svc_server);
    ts_tls_stop(named_server);
    svc_server = named_server = NULL;
    ts_cert_free(named);
    named = NULL;
    fx_fini(&f);
}

TestSuite(shim, .init = setup, .fini = teardown, .timeout = 240);

/* ------------------------------------------------------------------------------------------------------ */
/* The programs, each returning whether it accepted the peer                                             */

typedef struct target {
    int port;                      /* where the program connects (127.0.0.1) */
    const char *name;              /* the name it expects */
} target;

typedef int (*program_fn)(target t, const run_opts *o, char **out);

static int finish(run_result r, int accepted, char **out)
{
    *out = r.out;
    return accepted;
}

static int prog_s_client(target t, const run_opts *o, char **out)
{
    char connect[64];
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", t.port);
    const char *argv[] = {"/usr/bin/openssl", "s_client", "-connect", connect, "-servername", t.name,
                          "-verify_hostname", t.name, "-verify_return_error", "-CAfile", f.ca_file, "-brief",
                          NULL};
    run_result r = run(argv, o);
    return finish(r, r.status == 0 && strstr(r.out, "Verification: OK") != NULL, out);
}

/* curl's URL for t and its --resolve entry (to 127.0.0.1), each into 300 bytes. */
static void curl_target(target t, char url[300], char resolve[300])
{
    snprintf(url, 300, "https://%s:%d/", t.name, t.port);
    snprintf(resolve, 300, "%s:%d:127.0.0.1", t.name, t.port);
}

static int prog_curl(target t, const run_opts *o, char **out)
{
    char url[300], resolve[300];
    curl_target(t, url, resolve);
    const char *argv[] = {"/usr/bin/curl", "-sS", "--max-time", "30", "--cacert", f.ca_file, "--resolve", resolve,
                          url, NULL};
    run_result r = run(argv, o);
    return finish(r, r.status == 0 && strstr(r.out, HTTP_BODY) != NULL, out);
}

static const char python_client[] =
    "import socket, ssl, sys\n"
    "port, cafile, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "ctx = ssl.create_default_context(cafile=cafile)\n"
    "with socket.create_connection(('127.0.0.1', port)) as sock:\n"
    "    try:\n"
    "        with ctx.wrap_socket(sock, server_hostname=name) as tls:\n"
    "            print('handshake ok', tls.version())\n"
    "    except ssl.SSLError as e:\n"
    "        print('handshake failed:', e)\n"
    "        sys.exit(1)\n";

static int prog_python(target t, const run_opts *o, char **out)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", t.port);
    const char *argv[] = {PYTHON, "-c", python_client, port, f.ca_file, t.name, NULL};
    run_result r = run(argv, o);
    return finish(r, r.status == 0 && strstr(r.out, "handshake ok") != NULL, out);
}

/*
 * stunnel4 in inetd mode (no accept: stdin/stdout is the plain side), client, verifyChain + checkHost.
 * stunnel sends the connect host as SNI unless told otherwise ("SNI: sending servername: 127.0.0.1"), so the
 * name POSH needs as reference identifier is given with sni, as for any XMPP/SMTP client of a source domain.
 */
static int prog_stunnel(target t, const run_opts *o, char **out)
{
    static atomic_int n;
    char *conf = NULL, *body = NULL;
    cr_assert_geq(asprintf(&conf, "%s/stunnel-%d.conf", f.dir, atomic_fetch_add(&n, 1)), 0);
    cr_assert_geq(asprintf(&body,
                           "foreground = yes\ndebug = notice\npid =\nclient = yes\nconnect = 127.0.0.1:%d\n"
                           "CAfile = %s\nverifyChain = yes\ncheckHost = %s\nsni = %s\n",
                           t.port, f.ca_file, t.name, t.name), 0);
    cr_assert_eq(ts_write_file(conf, body, strlen(body)), 0);
    const char *argv[] = {"/usr/bin/stunnel4", conf, NULL};
    run_opts with_input = *o;
    with_input.input = "GET / HTTP/1.0\r\n\r\n";
    run_result r = run(argv, &with_input);
    free(conf);
    free(body);
    return finish(r, strstr(r.out, HTTP_BODY) != NULL, out);
}

/*
 * Postfix's TLS client against a STARTTLS SMTP server: -l secure, the expected name as match argument.
 * Started as root, posttls-finger reads -F first, then runs as mail_owner (postfix): the shim's lazy client
 * reads POSH_CA_FILE after that, so (as in a real deployment) the file must be readable by that user.
 */
static int prog_posttls_finger(target t, const run_opts *o, char **out)
{
    char dest[64], *conf_dir = NULL, *main_cf = NULL, *env_conf = NULL;
    cr_assert_eq(chmod(f.dir, 0711), 0);
    snprintf(dest, sizeof(dest), "[127.0.0.1]:%d", t.port);
    cr_assert_geq(asprintf(&conf_dir, "%s/postfix", f.dir), 0);
    cr_assert_geq(asprintf(&main_cf, "%s/main.cf", conf_dir), 0);
    mkdir(conf_dir, 0700);
    cr_assert_eq(ts_write_file(main_cf, "compatibility_level = 3.6\n", 26), 0);
    cr_assert_geq(asprintf(&env_conf, "MAIL_CONFIG=%s", conf_dir), 0);
    const char *extra[16] = {env_conf};
    for (size_t i = 0; o->env != NULL && o->env[i] != NULL && i < 14; i++)
        extra[i + 1] = o->env[i];
    run_opts with_conf = *o;
    with_conf.env = extra;
    const char *argv[] = {"/usr/sbin/posttls-finger", "-c", "-l", "secure", "-F", f.ca_file, dest, t.name, NULL};
    run_result r = run(argv, &with_conf);
    free(conf_dir);
    free(main_cf);
    free(env_conf);
    return finish(r, strstr(r.out, "Verified TLS connection established") != NULL, out);
}

/* The four outcomes of issue 5 §1 for one program. */
static void four_outcomes(program_fn prog, const char *service, const char *doc_path, target svc, target match)
{
    run_opts plain = {.service = service}, shim = {.preload = 1, .service = service};
    char *out = NULL;
    long before;

    fx_put_free(&f, FOO, doc_path, fx_doc1(f.svc, 3600));
    before = fx_requests(&f, NULL, NULL);
    cr_expect(!prog(svc, &plain, &out), "(a) without the shim the peer must be rejected:\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "(a) no POSH request without the shim");

    cr_expect(prog(svc, &shim, &out), "(b) with the shim and a vouching document: accepted:\n%s", out);
    cr_expect(strstr(out, "posh:") == NULL, "(b) silent without POSH_LOG:\n%s", out);
    free(out);
    cr_expect_gt(fx_requests(&f, FOO, doc_path), 0, "(b) the document was fetched");

    fx_put_free(&f, FOO, doc_path, fx_doc1(f.other, 3600));
    cr_expect(!prog(svc, &shim, &out), "(c) a document that does not vouch: rejected:\n%s", out);
    cr_expect(strstr(out, "posh:") == NULL, "(c) silent without POSH_LOG:\n%s", out);
    free(out);
    fx_put_free(&f, FOO, doc_path, strdup("{\"not\":\"posh\"}"));
    cr_expect(!prog(svc, &shim, &out), "(c) no valid document: rejected:\n%s", out);
    free(out);

    fx_put_free(&f, FOO, doc_path, fx_doc1(f.svc, 3600));
    before = fx_requests(&f, NULL, NULL);
    cr_expect(prog(match, &shim, &out), "(d) the name matches: accepted with the shim:\n%s", out);
    free(out);
    cr_expect(prog(match, &plain, &out), "(d) the name matches: accepted without the shim:\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "(d) no POSH request when the name matches");
}

static target svc_target(void)
{
    return (target){ts_tls_port(svc_server), FOO};
}

static target named_target(void)
{
    return (target){ts_tls_port(named_server), FOO};
}

/* ------------------------------------------------------------------------------------------------------ */
/* §1 real programs                                                                                       */

Test(shim, openssl_s_client)
{
    four_outcomes(prog_s_client, "xmpp-server", RFC7711_PATH, svc_target(), named_target());
}

Test(shim, curl)
{
    four_outcomes(prog_curl, "xmpp-server", RFC7711_PATH, svc_target(), named_target());
}

Test(shim, python3_ssl)
{
    four_outcomes(prog_python, "xmpp-server", RFC7711_PATH, svc_target(), named_target());
}

Test(shim, stunnel4)
{
    four_outcomes(prog_stunnel, "xmpp-server", RFC7711_PATH, svc_target(), named_target());
}

Test(shim, postfix_posttls_finger)
{
    mini *svc_smtp = mini_start(f.svc, 0, MINI_SMTP), *named_smtp = mini_start(named, 0, MINI_SMTP);
    four_outcomes(prog_posttls_finger, "smtp", "/.well-known/posh/smtp.json", (target){svc_smtp->port, FOO},
                  (target){named_smtp->port, FOO});
    mini_stop(svc_smtp);
    mini_stop(named_smtp);
}

/* ---- XMPP: a real Prosody serving foo.example.com with the provider's certificate ---- */

typedef struct prosody {
    pid_t pid;
    char *out_path;
    int port;
} prosody;

static prosody prosody_start(ts_cert *bar)
{
    prosody p = {0};
    char *conf = NULL, *body = NULL, *data = NULL;
    run_opts o = {0};

    cr_assert_eq(ts_cert_write(f.svc, f.dir, "svc"), 0);
    cr_assert_eq(ts_cert_write(bar, f.dir, "bar"), 0);
    cr_assert_geq(asprintf(&data, "%s/prosody-data", f.dir), 0);
    cr_assert_eq(mkdir(data, 0700), 0);
    for (int attempt = 0; attempt < 5; attempt++) {
        p.port = ts_free_port();
        cr_assert_gt(p.port, 0);
        cr_assert_geq(asprintf(&conf, "%s/prosody.cfg.lua", f.dir), 0);
        cr_assert_geq(asprintf(&body,
                               "pidfile = \"%s/prosody.pid\"\n"
                               "data_path = \"%s\"\n"
                               "certificates = \"%s\"\n"
                               "log = { info = \"*console\" }\n"
                               "interfaces = { \"127.0.0.1\" }\n"
                               "local_interfaces = { \"127.0.0.1\" }\n"
                               "c2s_ports = { %d }\n"
                               "c2s_direct_tls_ports = { }\n"
                               "legacy_ssl_ports = { }\n"
                               "s2s_ports = { }\n"
                               "http_ports = { }\n"
                               "https_ports = { }\n"
                               "admin_socket = \"%s/prosody.sock\"\n"
                               "modules_enabled = { \"tls\", \"saslauth\", \"disco\", \"ping\" }\n"
                               "modules_disabled = { \"s2s\", \"http\", \"posix\", \"admin_shell\" }\n"
                               "c2s_require_encryption = true\n"
                               "VirtualHost \"" FOO "\"\n"
                               "  ssl = { certificate = \"%s/svc.crt\", key = \"%s/svc.key\" }\n"
                               "VirtualHost \"" BAR "\"\n"
                               "  ssl = { certificate = \"%s/bar.crt\", key = \"%s/bar.key\" }\n",
                               f.dir, data, f.dir, p.port, f.dir, f.dir, f.dir, f.dir, f.dir), 0);
        cr_assert_eq(ts_write_file(conf, body, strlen(body)), 0);
        const char *argv[] = {"/usr/bin/prosody", "-F", "--config", conf, NULL};
        p.pid = spawn(argv, &o, &p.out_path);
        free(conf);
        free(body);
        conf = body = NULL;
        if (ts_wait_port(p.port, 15000) == 0)
            break;
        run_result r = reap(p.pid, p.out_path, 5000);
        cr_log_warn("prosody did not listen on %d (attempt %d):\n%s", p.port, attempt, r.out);
        run_free(&r);
        p.pid = 0;
    }
    free(data);
    cr_assert_gt(p.pid, 0, "prosody did not start");
    return p;
}

static void prosody_stop(prosody *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    run_result r = reap(p->pid, p->out_path, 10000);
    run_free(&r);
}

static int prog_xmpp(target t, const run_opts *o, char **out)
{
    char connect[64];
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", t.port);
    const char *argv[] = {"/usr/bin/openssl", "s_client", "-connect", connect, "-starttls", "xmpp", "-xmpphost",
                          t.name, "-servername", t.name, "-verify_hostname", t.name, "-verify_return_error",
                          "-CAfile", f.ca_file, "-brief", NULL};
    run_result r = run(argv, o);
    return finish(r, r.status == 0 && strstr(r.out, "Verification: OK") != NULL, out);
}

Test(shim, xmpp_prosody)
{
    ts_cert *bar = issue(f.ca, BAR, 0);
    prosody p = prosody_start(bar);
    four_outcomes(prog_xmpp, "xmpp-client", XMPP_CLIENT_PATH, (target){p.port, FOO}, (target){p.port, BAR});
    prosody_stop(&p);
    ts_cert_free(bar);
}

/* ---- service selection ---- */

Test(shim, service_from_the_port_map)
{
    /* Without POSH_SERVICE, port 5269 means xmpp-server. The port is bound on 127.0.0.1 only. */
    mini *s2s = mini_start(f.svc, 5269, MINI_TLS);
    run_opts shim = {.preload = 1};
    char *out = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cr_expect(prog_s_client((target){5269, FOO}, &shim, &out), "port 5269 -> xmpp-server:\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    mini_stop(s2s);
}

Test(shim, unknown_port_means_no_posh_logged_once)
{
    const char *env[] = {"POSH_LOG=stderr", NULL};
    run_opts shim = {.preload = 1, .env = env};
    char port[16];
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    const char *argv[] = {POSH_SHIM_PROBE, "threads", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 1, "rejected: POSH not used on an unknown port:\n%s", r.out);
    cr_expect_eq(count_occurrences(r.out, "no POSH service is known for port"), 1, "logged once:\n%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
    run_free(&r);
}

Test(shim, invalid_service_means_no_posh)
{
    const char *env[] = {"POSH_LOG=stderr", NULL};
    run_opts shim = {.preload = 1, .service = "not a service", .env = env};
    char *out = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cr_expect(!prog_python(svc_target(), &shim, &out), "%s", out);
    cr_expect(strstr(out, "POSH_SERVICE") != NULL, "the variable is named:\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
}

/* Secure Service Delegation through the shim (issue 14 §2): opt-in with POSH_DELEGATION=1, after POSH. */
Test(shim, delegation_with_posh_delegation)
{
    static const char *const on[] = {"POSH_DELEGATION=1", NULL};
    static const program_fn progs[] = {prog_s_client, prog_curl, prog_python};
    static const char *const names[] = {"openssl s_client", "curl", "python3"};
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    run_opts shim_deleg = {.preload = 1, .service = "xmpp-server", .env = on};
    char *out = NULL;

    /* foo.example.com publishes no POSH document; it delegates xmpp-server to the provider's name. */
    fx_put(&f, FOO, "/.well-known/services/xmpp-server/index.html",
           "[{\"host\": \"xmpp.hosting.example.net\", \"port\": 5269, \"domain\": \"xmpp.hosting.example.net\"}]");
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        cr_expect(!progs[i](svc_target(), &shim, &out), "%s: without POSH_DELEGATION, rejected:\n%s", names[i], out);
        free(out);
        cr_expect(progs[i](svc_target(), &shim_deleg, &out), "%s: POSH_DELEGATION=1 accepts:\n%s", names[i], out);
        free(out);
    }
    cr_expect_gt(fx_requests(&f, FOO, "/.well-known/services/xmpp-server/"), 0, "the delegation was fetched");
    /* A delegation to a name the certificate does not carry changes nothing. */
    fx_put(&f, FOO, "/.well-known/services/xmpp-server/index.html",
           "[{\"host\": \"xmpp.elsewhere.example\", \"port\": 5269, \"domain\": \"elsewhere.example\"}]");
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        cr_expect(!progs[i](svc_target(), &shim_deleg, &out), "%s: another name: rejected:\n%s", names[i], out);
        free(out);
    }
}

/* ------------------------------------------------------------------------------------------------------ */
/* §2 transparent when POSH does not apply                                                               */

Test(shim, untrusted_chain_stays_rejected)
{
    /* A self-signed certificate the document vouches for: mode name never makes POSH a trust anchor. */
    ts_cert *self = issue(NULL, "xmpp.hosting.example.net", 1);
    ts_tls *s = start_http(self);
    mini *smtp = mini_start(self, 0, MINI_SMTP);
    run_opts shim = {.preload = 1, .service = "xmpp-server"}, shim_smtp = {.preload = 1, .service = "smtp"};
    target t = {ts_tls_port(s), FOO};
    char *out = NULL;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(self, 3600));
    fx_put_free(&f, FOO, "/.well-known/posh/smtp.json", fx_doc1(self, 3600));
    cr_expect(!prog_s_client(t, &shim, &out), "%s", out);
    cr_expect(strstr(out, "self-signed") != NULL || strstr(out, "self signed") != NULL,
              "the chain error is reported, not the name:\n%s", out);
    free(out);
    cr_expect(!prog_python(t, &shim, &out), "%s", out);
    free(out);
    cr_expect(!prog_curl(t, &shim, &out), "%s", out);
    free(out);
    /* Postfix: SSL_VERIFY_NONE, a callback that accepts all, the verdict from SSL_get_verify_result(). */
    cr_expect(!prog_posttls_finger((target){smtp->port, FOO}, &shim_smtp, &out), "not laundered:\n%s", out);
    cr_expect(strstr(out, "Untrusted TLS connection established") != NULL, "%s", out);
    free(out);
    mini_stop(smtp);
    ts_tls_stop(s);
    ts_cert_free(self);
}

Test(shim, curl_insecure_is_left_alone)
{
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    char url[300], resolve[300];
    curl_target(svc_target(), url, resolve);
    const char *argv[] = {"/usr/bin/curl", "-sS", "-k", "--resolve", resolve, url, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect_str_eq(r.out, HTTP_BODY "\n", "nothing but the body, even with debug logging");
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0, "verification off: no POSH");
    run_free(&r);
}

Test(shim, server_side_untouched)
{
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    run_opts server_opts = {.preload = 1, .service = "xmpp-server", .env = env}, client_opts = {0};
    char port[16], connect[64], *out_path, *crt = NULL, *key = NULL, *ccrt = NULL, *ckey = NULL;
    int p = ts_free_port();

    cr_assert_gt(p, 0);
    snprintf(port, sizeof(port), "%d", p);
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", p);
    cr_assert_eq(ts_cert_write(f.svc, f.dir, "svc"), 0);
    cr_assert_eq(ts_cert_write(f.other, f.dir, "client"), 0);
    cr_assert_geq(asprintf(&crt, "%s/svc.crt", f.dir), 0);
    cr_assert_geq(asprintf(&key, "%s/svc.key", f.dir), 0);
    cr_assert_geq(asprintf(&ccrt, "%s/client.crt", f.dir), 0);
    cr_assert_geq(asprintf(&ckey, "%s/client.key", f.dir), 0);
    /* The server under the shim also asks for a client certificate and verifies it. */
    const char *argv[] = {"/usr/bin/openssl", "s_server", "-accept", connect, "-cert", crt, "-key", key,
                          "-CAfile", f.ca_file, "-Verify", "1", "-verify_return_error", "-www", NULL};
    pid_t pid = spawn(argv, &server_opts, &out_path);
    cr_assert_eq(ts_wait_port(p, 10000), 0, "s_server did not start");
    const char *cargv[] = {"/usr/bin/openssl", "s_client", "-connect", connect, "-verify_hostname",
                           "xmpp.hosting.example.net", "-verify_return_error", "-CAfile", f.ca_file, "-cert", ccrt,
                           "-key", ckey, "-brief", NULL};
    run_result c = run(cargv, &client_opts);
    kill(pid, SIGTERM);
    run_result s = reap(pid, out_path, 10000);
    cr_expect_eq(c.status, 0, "client:\n%s\nserver:\n%s", c.out, s.out);
    cr_expect(strstr(c.out, "Verification: OK") != NULL, "%s", c.out);
    cr_expect(strstr(s.out, "posh:") == NULL, "the shim stays out of server connections:\n%s", s.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
    run_free(&c);
    run_free(&s);
    free(crt);
    free(key);
    free(ccrt);
    free(ckey);
}

Test(shim, program_without_tls)
{
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", "POSH_TIMEOUT_MS=bogus", NULL};
    run_opts shim = {.preload = 1, .env = env};
    const char *argv[] = {"/bin/true", NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0);
    cr_expect_str_empty(r.out);
    run_free(&r);
}

/* ------------------------------------------------------------------------------------------------------ */
/* §3 safe inside someone else's process                                                                  */

Test(shim, lazy_initialisation)
{
    /* An invalid environment only matters once POSH is needed: creating contexts costs nothing. */
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", "POSH_TIMEOUT_MS=bogus", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    char port[16], *out = NULL;
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    const char *argv[] = {POSH_SHIM_PROBE, "ctx-only", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect_str_empty(r.out);
    run_free(&r);
    /* A matching name needs no client either. */
    cr_expect(prog_python(named_target(), &shim, &out), "%s", out);
    cr_expect(strstr(out, "POSH_TIMEOUT_MS") == NULL, "%s", out);
    free(out);
    /* When POSH is needed, the invalid variable is named and the connection fails closed. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cr_expect(!prog_python(svc_target(), &shim, &out), "%s", out);
    cr_expect(strstr(out, "POSH_TIMEOUT_MS") != NULL, "%s", out);
    free(out);
}

Test(shim, no_recursion_into_the_posh_fetch)
{
    /*
     * bar.example.org's POSH web server is nginx, whose default certificate is foo.example.com's: the
     * fetch's own TLS name check fails. Were the shim to apply POSH to its own fetch, it would look up
     * bar.example.org again from inside that lookup (and wait on itself). It must fail promptly instead.
     */
    char connect_to[1024], *env_ct = NULL;
    snprintf(connect_to, sizeof(connect_to), "%s,%s:443:127.0.0.1:%d", f.connect_to, BAR,
             ts_nginx_port(f.nginx));
    cr_assert_geq(asprintf(&env_ct, "POSH_CONNECT_TO=%s", connect_to), 0);
    const char *env[] = {env_ct, "POSH_LOG=stderr", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    char *out = NULL;
    int64_t t0 = ts_now_ms();
    cr_expect(!prog_s_client((target){ts_tls_port(svc_server), BAR}, &shim, &out), "%s", out);
    cr_expect_lt(ts_now_ms() - t0, 20000, "no hang");
    /* libcurl's own name check of the web server's certificate ran, unanswered by the shim. */
    cr_expect(strstr(out, "no alternative certificate subject name matches target host name '" BAR "'") != NULL,
              "the fetch failed on its own TLS check:\n%s", out);
    free(out);
    free(env_ct);
}

Test(shim, threads_share_one_lookup)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char port[16];
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    const char *argv[] = {POSH_SHIM_PROBE, "threads", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "accepted 32/32") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "one lookup for 32 handshakes in 8 threads");
    run_free(&r);
}

Test(shim, fork_parent_and_child)
{
    /*
     * The parent's lookup leaves a kept-alive connection to foo.example.com's web server in the client's
     * pool. After fork, hosting.example.net's document is a reference to a document on foo.example.com: the
     * child must fetch it over a connection of its own, and the parent can still use its own.
     */
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char port[16];
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    fx_put_free(&f, FOO, "/hosted/svc.json", fx_doc1(f.svc, 3600));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_ref("https://" FOO "/hosted/svc.json", 3600));
    const char *argv[] = {POSH_SHIM_PROBE, "fork", port, f.ca_file, FOO, HOSTING, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "child accepted") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "parent accepted") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, HOSTING, RFC7711_PATH), 2, "one lookup in each process");
    cr_expect_eq(fx_requests(&f, FOO, "/hosted/svc.json"), 2);
    cr_expect_eq(ts_nginx_connections(f.nginx, FOO), 2, "the child opened its own connection to foo");
    run_free(&r);
}

Test(shim, application_cert_verify_callback_is_chained)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char port[16];
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    const char *argv[] = {POSH_SHIM_PROBE, "app-cb", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "POSH still applies:\n%s", r.out);
    cr_expect(strstr(r.out, "app callback calls 1") != NULL, "the application's callback ran:\n%s", r.out);
    run_free(&r);

    /* The application's verdict stands: it refuses, the connection fails even though POSH vouched. */
    const char *deny[] = {POSH_SHIM_PROBE, "app-cb-deny", port, f.ca_file, FOO, NULL};
    r = run(deny, &shim);
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "app callback calls 1") != NULL, "%s", r.out);
    run_free(&r);
}

Test(shim, logging_only_when_asked)
{
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=info", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    char *out = NULL;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    cr_expect(!prog_python(svc_target(), &shim, &out), "%s", out);
    cr_expect(strstr(out, "posh: warning: rejected") != NULL, "POSH_LOG=stderr says why:\n%s", out);
    free(out);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cr_expect(prog_python(svc_target(), &shim, &out), "%s", out);
    cr_expect(strstr(out, "vouched for by POSH") != NULL, "%s", out);
    free(out);
}

/* ------------------------------------------------------------------------------------------------------ */
/* §4 an approval belongs to the connection whose verification made it (issue 10)                          */

/* stunnel4 as a real daemon: several client sections in one process, each with verifyChain + checkHost. */
typedef struct tunnel {
    const char *name;              /* checkHost and sni */
    int target;                    /* the TLS server's port on 127.0.0.1 */
    int accept;                    /* stunnel's plain port, chosen by stunnel_start */
} tunnel;

typedef struct stunnel_daemon {
    pid_t pid;
    char *out_path;
} stunnel_daemon;

static stunnel_daemon stunnel_start(tunnel *t, size_t n, const run_opts *o)
{
    static atomic_int count;
    stunnel_daemon d = {0};
    char *conf = NULL, *body = NULL, *section = NULL;

    cr_assert_geq(asprintf(&conf, "%s/stunnel-daemon-%d.conf", f.dir, atomic_fetch_add(&count, 1)), 0);
    cr_assert_not_null(body = strdup("foreground = yes\ndebug = info\npid =\n"));
    for (size_t i = 0; i < n; i++) {
        char *grown = NULL;
        cr_assert_gt(t[i].accept = ts_free_port(), 0);
        cr_assert_geq(asprintf(&section,
                               "[t%zu]\nclient = yes\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\nCAfile = %s\n"
                               "verifyChain = yes\ncheckHost = %s\nsni = %s\n",
                               i, t[i].accept, t[i].target, f.ca_file, t[i].name, t[i].name), 0);
        cr_assert_geq(asprintf(&grown, "%s%s", body, section), 0);
        free(body);
        free(section);
        body = grown;
    }
    cr_assert_eq(ts_write_file(conf, body, strlen(body)), 0);
    const char *argv[] = {"/usr/bin/stunnel4", conf, NULL};
    d.pid = spawn(argv, o, &d.out_path);
    for (size_t i = 0; i < n; i++) {
        if (ts_wait_port(t[i].accept, 15000) != 0) {
            run_result r = reap(d.pid, d.out_path, 5000);
            cr_assert_fail("stunnel does not listen on %d:\n%s", t[i].accept, r.out);
        }
    }
    free(conf);
    free(body);
    return d;
}

/* The daemon's log so far, and then stop it. */
static char *stunnel_stop(stunnel_daemon *d)
{
    kill(d->pid, SIGTERM);
    run_result r = reap(d->pid, d->out_path, 10000);
    return r.out;
}

/* One request through a tunnel: 1 when the web page came back (stunnel accepted the peer), 0 when not. */
static int tunnel_get(const tunnel *t)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)t->accept)};
    struct timeval tv = {.tv_sec = 30};
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    char buf[4096];
    size_t have = 0;
    ssize_t got;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect to stunnel: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert_eq(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
    while (have < sizeof(buf) - 1 && (got = recv(fd, buf + have, sizeof(buf) - 1 - have, 0)) > 0)
        have += (size_t)got;
    buf[have] = '\0';
    close(fd);
    return strstr(buf, HTTP_BODY) != NULL;
}

Test(shim, stunnel_approval_stays_on_its_connection)
{
    /*
     * One stunnel process, three client sections checking foo.example.com against the provider's
     * certificate: port 5222 (xmpp-client, whose document vouches), port 143 (imap, no document) and a port
     * with no POSH service. Once 5222 was approved, the other two must still be refused: the approval is not
     * a property of the certificate.
     */
    mini *xmpp = mini_start(f.svc, 5222, MINI_HTTP), *imap = mini_start(f.svc, 143, MINI_HTTP);
    tunnel t[3] = {{FOO, xmpp->port, 0}, {FOO, imap->port, 0}, {FOO, ts_tls_port(svc_server), 0}};
    const char *env[] = {"POSH_LOG=stderr", NULL};
    run_opts shim = {.preload = 1, .env = env};
    stunnel_daemon d;
    char *log;

    fx_put_free(&f, FOO, XMPP_CLIENT_PATH, fx_doc1(f.svc, 3600));
    d = stunnel_start(t, 3, &shim);
    cr_expect(!tunnel_get(&t[2]), "no POSH service on this port: refused");
    cr_expect(!tunnel_get(&t[1]), "imap: no POSH document: refused");
    cr_expect(tunnel_get(&t[0]), "xmpp-client: vouched for by POSH: accepted");
    cr_expect(!tunnel_get(&t[2]), "after the approval on 5222: still refused where POSH is not used");
    cr_expect(!tunnel_get(&t[1]), "after the approval on 5222: still refused for imap");
    cr_expect(tunnel_get(&t[0]), "xmpp-client again (the session is resumed): accepted");
    log = stunnel_stop(&d);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_CLIENT_PATH), 1, "one lookup for xmpp-client:\n%s", log);
    /* At least: the start-up probes of the ports are connections too. */
    cr_expect_geq(count_occurrences(log, "Rejected by CERT at depth=0"), 4, "stunnel's own check refused:\n%s",
                  log);
    free(log);
    mini_stop(xmpp);
    mini_stop(imap);
}

Test(shim, stunnel_ten_domains_vouch_for_one_certificate)
{
    /*
     * A provider's certificate vouched for by ten hosted domains, each with its own document, checked by one
     * stunnel process (a section per domain): every domain's connection is accepted by stunnel's own check.
     */
    enum { DOMAINS = 10 };
    char names[DOMAINS][64], crt[700], key[700], *ct = NULL;
    tunnel t[DOMAINS];
    ts_cert *web[DOMAINS];
    ts_nginx *ng = ts_nginx_new(f.dir);
    stunnel_daemon d;
    char *log;

    cr_assert_not_null(ng);
    for (int i = 0; i < DOMAINS; i++) {
        snprintf(names[i], sizeof(names[i]), "hosted%d.example.com", i);
        web[i] = issue(f.ca, names[i], 0);
        cr_assert_eq(ts_cert_write(web[i], f.dir, names[i]), 0);
        snprintf(crt, sizeof(crt), "%s/%s.crt", f.dir, names[i]);
        snprintf(key, sizeof(key), "%s/%s.key", f.dir, names[i]);
        cr_assert_eq(ts_nginx_add_site(ng, names[i], crt, key), 0);
        t[i] = (tunnel){names[i], ts_tls_port(svc_server), 0};
    }
    cr_assert_eq(ts_nginx_start(ng), 0, "nginx did not start");
    for (int i = 0; i < DOMAINS; i++) {
        char *doc = fx_doc1(f.svc, 3600);
        cr_assert_eq(ts_nginx_put(ng, names[i], RFC7711_PATH, doc), 0);
        free(doc);
    }
    cr_assert_geq(asprintf(&ct, "POSH_CONNECT_TO=:443:127.0.0.1:%d", ts_nginx_port(ng)), 0);
    const char *env[] = {ct, "POSH_LOG=stderr", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    d = stunnel_start(t, DOMAINS, &shim);
    for (int i = 0; i < DOMAINS; i++)
        cr_expect(tunnel_get(&t[i]), "%s: vouched for by its own document: accepted", names[i]);
    log = stunnel_stop(&d);
    for (int i = 0; i < DOMAINS; i++)
        cr_expect_eq(ts_nginx_requests(ng, names[i], RFC7711_PATH), 1, "%s looked up once:\n%s", names[i], log);
    cr_expect_eq(count_occurrences(log, "Rejected by CERT"), 0, "%s", log);
    free(log);
    free(ct);
    ts_nginx_free(ng);
    for (int i = 0; i < DOMAINS; i++)
        ts_cert_free(web[i]);
}

/*
 * python3 in one process: a connection POSH vouched for (port 587, submission), the same session resumed, the
 * same certificate on a port without POSH, and then python as a server receiving the provider's certificate
 * as a client certificate. getpeercert() reads subjectAltName through X509_get_ext_d2i: only the vouched
 * connection may list foo.example.com. Python hands a session to a new connection as a copy (i2d, then d2i):
 * the resumed connection's certificate is a new object and carries no approval (fails closed; its handshake
 * itself is not verified again, so Python's own check_hostname is unaffected).
 */
static const char python_scopes[] =
    "import socket, ssl, sys, threading\n"
    "cafile, name, vport, oport, crt, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
    "sys.argv[5], sys.argv[6]\n"
    "def dns(cert):\n"
    "    return ','.join(sorted(v for k, v in cert.get('subjectAltName', ()) if k == 'DNS'))\n"
    "def get(ctx, port, session=None):\n"
    "    with socket.create_connection(('127.0.0.1', port)) as sock:\n"
    "        with ctx.wrap_socket(sock, server_hostname=name, session=session) as tls:\n"
    "            tls.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    "            while tls.recv(4096):\n"
    "                pass\n"
    "            return dns(tls.getpeercert()), tls.session, tls.session_reused\n"
    "strict = ssl.create_default_context(cafile=cafile)\n"
    "names, session, reused = get(strict, vport)\n"
    "print('vouched:', names, 'reused' if reused else 'full')\n"
    "names, _, reused = get(strict, vport, session)\n"
    "print('resumed:', names, 'reused' if reused else 'full')\n"
    "lax = ssl.create_default_context(cafile=cafile)\n"
    "lax.check_hostname = False\n"
    "names, _, _ = get(lax, oport)\n"
    "print('other port:', names)\n"
    "server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "server.load_cert_chain(crt, key)\n"
    "server.load_verify_locations(cafile)\n"
    "server.verify_mode = ssl.CERT_REQUIRED\n"
    "client = ssl.create_default_context(cafile=cafile)\n"
    "client.check_hostname = False\n"
    "client.load_cert_chain(crt, key)\n"
    "listener = socket.create_server(('127.0.0.1', 0))\n"
    "def connect():\n"
    "    with socket.create_connection(listener.getsockname()) as sock:\n"
    "        with client.wrap_socket(sock) as tls:\n"
    "            tls.recv(1)\n"
    "peer = threading.Thread(target=connect)\n"
    "peer.start()\n"
    "conn, _ = listener.accept()\n"
    "with server.wrap_socket(conn, server_side=True) as tls:\n"
    "    print('as a server:', dns(tls.getpeercert()))\n"
    "peer.join()\n";

Test(shim, python3_approval_stays_on_its_connection)
{
    /* Each test binds its own port-map ports: tests run in parallel. */
    mini *submission = mini_start(f.svc, 587, MINI_HTTP);
    run_opts shim = {.preload = 1};
    char vport[16], oport[16], *crt = NULL, *key = NULL;

    fx_put_free(&f, FOO, SUBMISSION_PATH, fx_doc1(f.svc, 3600));
    cr_assert_eq(ts_cert_write(f.svc, f.dir, "provider"), 0);
    cr_assert_geq(asprintf(&crt, "%s/provider.crt", f.dir), 0);
    cr_assert_geq(asprintf(&key, "%s/provider.key", f.dir), 0);
    snprintf(vport, sizeof(vport), "%d", submission->port);
    snprintf(oport, sizeof(oport), "%d", ts_tls_port(svc_server));
    const char *argv[] = {PYTHON, "-c", python_scopes, f.ca_file, FOO, vport, oport, crt, key, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "vouched: " FOO ",xmpp.hosting.example.net full\n") != NULL,
              "the vouched connection lists the vouched name:\n%s", r.out);
    cr_expect(strstr(r.out, "resumed: xmpp.hosting.example.net reused\n") != NULL,
              "a session copied by the program is a new certificate object, without approval:\n%s", r.out);
    cr_expect(strstr(r.out, "other port: xmpp.hosting.example.net\n") != NULL,
              "another connection with the same certificate does not:\n%s", r.out);
    cr_expect(strstr(r.out, "as a server: xmpp.hosting.example.net\n") != NULL,
              "nor does the same certificate as a client's certificate:\n%s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, SUBMISSION_PATH), 1);
    run_free(&r);
    free(crt);
    free(key);
    mini_stop(submission);
}

Test(shim, curl_resumed_session_keeps_its_approval)
{
    /*
     * curl keeps the session object itself and checks names on every connection, resumed or not, through
     * X509_get_ext_d2i on the peer certificate: the resumed connection's certificate is the vouched
     * connection's own object, approval included.
     */
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    char url[300], resolve[300];
    curl_target(svc_target(), url, resolve);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    const char *argv[] = {"/usr/bin/curl", "-sS", "-v", "--max-time", "30", "--cacert", f.ca_file, "--resolve",
                          resolve, url, url, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect_eq(count_occurrences(r.out, HTTP_BODY), 2, "both requests answered:\n%s", r.out);
    cr_expect_eq(count_occurrences(r.out, "SSL re-using session ID"), 1, "the second resumed:\n%s", r.out);
    cr_expect_eq(count_occurrences(r.out, "the program's own name check answered by POSH"), 2, "%s", r.out);
    cr_expect_eq(ts_tls_handshakes(svc_server), 2);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    run_free(&r);
}

Test(shim, approval_withdrawn_when_the_verification_fails)
{
    /*
     * Postfix/Dovecot style (SSL_VERIFY_NONE, the verdict read afterwards, the name checked by the program):
     * the document vouches for a self-signed certificate, so the chain fails. The program's own name check of
     * that connection must get OpenSSL's answer too; on a trusted chain it gets POSH's.
     */
    ts_cert *self = issue(NULL, "xmpp.hosting.example.net", 1);
    ts_tls *s = start_http(self);
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char port[16];

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc(&(ts_cert *[]){self, f.svc}[0], 2, "sha-256", 3600));
    snprintf(port, sizeof(port), "%d", ts_tls_port(s));
    const char *untrusted[] = {POSH_SHIM_PROBE, "own-check", port, f.ca_file, FOO, NULL};
    run_result r = run(untrusted, &shim);
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "verify=18 own-check=0") != NULL, "untrusted: no approval for the name:\n%s", r.out);
    run_free(&r);

    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    const char *trusted[] = {POSH_SHIM_PROBE, "own-check", port, f.ca_file, FOO, NULL};
    r = run(trusted, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 own-check=1") != NULL, "trusted and vouched:\n%s", r.out);
    run_free(&r);
    ts_tls_stop(s);
    ts_cert_free(self);
}

/*
 * The substitute subjectAltName a program's own name check reads is made at its first read, not at approval
 * (issue 20: a program that never reads it pays nothing for it). Eight threads of the program make that first
 * read at once, curl's way and LuaSec's, 200 times each: every read carries the vouched name (a substitute
 * made twice is freed once, never handed out half-made: ASan in the sanitizer build).
 */
Test(shim, substitute_made_at_the_first_read_by_racing_threads)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char port[16];

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    const char *argv[] = {POSH_SHIM_PROBE, "san-threads", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "san-threads: 1600 of 1600 reads carry " FOO) != NULL, "%s", r.out);
    run_free(&r);
}

/*
 * Only a connection that can be XMPP gets a stream record (issue 20: every connect() of every program under the
 * shim paid getsockopt, fstat and two sigprocmask for it, and its first TLS record one more fstat). Once the
 * first verification has read the service rule, 1,100 connections under POSH_SERVICE=imap record nothing, so
 * none is evicted; under xmpp-server the same flood overflows the 1,024 records (they are kept where they
 * matter) and the shim says so at the next verification that reads a stream header.
 */
Test(shim, only_connections_that_can_be_xmpp_are_recorded)
{
    const char *env[] = {"POSH_LOG=stderr", NULL};
    run_opts imap = {.preload = 1, .service = "imap", .env = env};
    run_opts xmpp = {.preload = 1, .service = "xmpp-server", .env = env};
    char port[16];

    snprintf(port, sizeof(port), "%d", ts_tls_port(named_server));
    const char *argv[] = {POSH_SHIM_PROBE, "connect-flood", port, f.ca_file, FOO, NULL};
    run_result r = run(argv, &imap);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "flood: 1100 connections open") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "were evicted") == NULL, "imap: nothing recorded, nothing evicted:\n%s", r.out);
    run_free(&r);
    r = run(argv, &xmpp);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "flood: 1100 connections open") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "the oldest stream records were evicted") != NULL, "xmpp-server: recorded:\n%s", r.out);
    run_free(&r);
}

/* ------------------------------------------------------------------------------------------------------ */
/* §5 XMPP without a name for OpenSSL: the stream header's `to`, and LuaSec's name path (issue 11)        */

/* The probe's XMPP client against a STARTTLS server presenting cert; returns its output, sets *status. */
static char *xmpp_probe(const char *variant, ts_cert *cert, const run_opts *o, int *status)
{
    mini *m = mini_start(cert, 0, MINI_XMPP);
    char mode[32], port[16];
    snprintf(mode, sizeof(mode), "xmpp-%s", variant);
    snprintf(port, sizeof(port), "%d", m->port);
    const char *argv[] = {POSH_SHIM_PROBE, mode, port, f.ca_file, FOO, NULL};
    run_result r = run(argv, o);
    mini_stop(m);
    *status = r.status;
    return r.out;
}

Test(shim, xmpp_stream_header_names_the_reference)
{
    const char *env[] = {"POSH_LOG=stderr", NULL};
    run_opts plain = {.service = "xmpp-server"}, shim = {.preload = 1, .service = "xmpp-server", .env = env};
    int status;
    char *out;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    out = xmpp_probe("send", f.svc, &plain, &status);
    cr_expect_eq(status, 1, "without the shim the program's own check refuses:\n%s", out);
    cr_expect(strstr(out, "verify=0 names-match=0") != NULL, "%s", out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
    free(out);

    out = xmpp_probe("send", f.svc, &shim, &status);
    cr_expect_eq(status, 0, "header sent with send(): POSH for its `to`, LuaSec's path answered:\n%s", out);
    cr_expect(strstr(out, "verify=0 names-match=1") != NULL, "%s", out);
    free(out);
    out = xmpp_probe("write", f.svc, &shim, &status);
    cr_expect_eq(status, 0, "header sent with write():\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "one lookup per process, for the stream header's `to`");

    /* The document vouches for another certificate: LuaSec's check gets OpenSSL's answer. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    out = xmpp_probe("send", f.svc, &shim, &status);
    cr_expect_eq(status, 1, "%s", out);
    cr_expect(strstr(out, "verify=0 names-match=0") != NULL, "%s", out);
    cr_expect(strstr(out, "rejected: foo.example.com _xmpp-server._tcp") != NULL, "%s", out);
    free(out);
}

Test(shim, xmpp_provider_certificate_without_subject_alt_name)
{
    /* LuaSec finds no subjectAltName and reads the CN: the vouched connection shows one holding the name. */
    ts_cert_opts o = {.cn = "xmpp.hosting.example.net", .not_before_days = -1, .not_after_days = 30};
    ts_cert *cn_only = ts_cert_issue(f.ca, &o);
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    int status;
    char *out;

    cr_assert_not_null(cn_only);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(cn_only, 3600));
    out = xmpp_probe("send", cn_only, &shim, &status);
    cr_expect_eq(status, 0, "%s", out);
    cr_expect(strstr(out, "verify=0 names-match=1") != NULL, "%s", out);
    free(out);
    ts_cert_free(cn_only);
}

Test(shim, xmpp_record_does_not_outlive_its_socket)
{
    /*
     * A socket sends a stream header naming foo.example.com and goes; its descriptor number then carries the
     * real connection, whose own header the shim cannot read (writev). The old record must not speak for it:
     * neither after close() nor after dup2() replaced the socket under the same number.
     */
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    int status;
    char *out;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    out = xmpp_probe("close-reuse", f.svc, &shim, &status);
    cr_expect_eq(status, 1, "%s", out);
    cr_expect(strstr(out, "verify=0 names-match=0") != NULL, "%s", out);
    free(out);
    out = xmpp_probe("dup2-reuse", f.svc, &shim, &status);
    cr_expect_eq(status, 1, "%s", out);
    cr_expect(strstr(out, "verify=0 names-match=0") != NULL, "%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0, "no reference, no POSH");
}

/* ------------------------------------------------------------------------------------------------------ */
/* The stream records under load, and the send hooks' safety (security review findings 2 and 3)          */

/* The probe in mode with a STARTTLS server presenting f.svc on PORT (for the modes that dial NAME). */
static run_result probe_run(const char *mode, const run_opts *o, int timeout_ms)
{
    mini *m = mini_start(f.svc, 0, MINI_XMPP);
    char port[16], *out_path;
    snprintf(port, sizeof(port), "%d", m->port);
    const char *argv[] = {POSH_SHIM_PROBE, mode, port, f.ca_file, FOO, NULL};
    pid_t pid = spawn(argv, o, &out_path);
    run_result r = reap(pid, out_path, timeout_ms);
    mini_stop(m);
    return r;
}

Test(shim, xmpp_flood_of_incoming_streams_leaves_outgoing_posh)
{
    /*
     * A peer opens 1,100 streams to the program (an XMPP server), which writes its reply header on each, and
     * keeps them open; then the program dials out. Replies on sockets the peer opened can never serve a
     * verification of the program's: they must not take the records its own streams need.
     */
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    r = probe_run("xmpp-flood-accepted", &shim, RUN_TIMEOUT_MS);
    cr_expect_eq(r.status, 0, "the outgoing stream is vouched for by POSH:\n%s", r.out);
    cr_expect(strstr(r.out, "flood: 1100 accepted streams open\n") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=1") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    run_free(&r);
}

Test(shim, xmpp_stalled_handshakes_do_not_block_a_new_one)
{
    /*
     * The program dials 1,100 streams (as a peer can make an XMPP server do, naming domains of its choosing)
     * whose handshakes begin (ClientHello, verification off) and never end, all kept open; then one stream
     * that needs POSH. Records no verification consumed go first.
     */
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    r = probe_run("xmpp-flood-stalled", &shim, RUN_TIMEOUT_MS);
    cr_expect_eq(r.status, 0, "the new stream is vouched for by POSH:\n%s", r.out);
    cr_expect(strstr(r.out, "flood: 1100 stalled streams open\n") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=1") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    run_free(&r);
}

Test(shim, bad_buffers_give_efault_not_a_signal)
{
    /* The kernel answers a bad buffer with EFAULT: under the shim as without it, never SIGSEGV or SIGBUS. */
    run_opts plain = {0}, shim = {.preload = 1};
    run_result r = probe_run("bad-pointer", &plain, RUN_TIMEOUT_MS);
    cr_expect_eq(r.status, 0, "without the shim:\n%s", r.out);
    run_free(&r);
    r = probe_run("bad-pointer", &shim, RUN_TIMEOUT_MS);
    cr_expect_eq(r.status, 0, "with the shim (128 + signal when it dies):\n%s", r.out);
    cr_expect_eq(count_occurrences(r.out, " ok\n"), 28, "%s", r.out);
    cr_expect_eq(count_occurrences(r.out, "WRONG"), 0, "%s", r.out);
    run_free(&r);
}

Test(shim, signal_handler_sending_a_header_does_not_deadlock)
{
    /*
     * What this shows: a signal handler sent a stream header or a TLS handshake record up to 10,000 times
     * (fewer on a machine so loaded that 10 s go by first; at least 100 of them must have interrupted the main
     * thread inside its own send()), each taking the shim's slow path, while that thread was sending the same
     * in a loop, with 1,000 records held so that the slow path spends long under its lock. With a lock that
     * does not keep signals out, one interruption there deadlocks (the code before this test hung here in 5
     * runs out of 5). It cannot show that no interleaving deadlocks: that rests on the slow path blocking every
     * signal while it holds the lock (stream.c).
     */
    run_opts shim = {.preload = 1};
    run_result r = probe_run("signal-send", &shim, 30000);
    cr_expect_eq(r.status, 0, "finished within 30 s (-1: killed, deadlocked):\n%s", r.out);
    const char *line = strstr(r.out, "signal-send: ");
    int handler_sends = 0, inside = 0;
    cr_expect(line != NULL && sscanf(line, "signal-send: %d handler sends, %d", &handler_sends, &inside) == 2 &&
              inside >= 100, "at least 100 handler runs interrupted a send:\n%s", r.out);
    run_free(&r);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Incoming XMPP streams (issue 19 §4): bounded against a hostile network                                 */

Test(shim, xmpp_incoming_flood_costs_one_fetch_per_domain)
{
    /*
     * A peer opens 1,100 streams to the program (an XMPP server under the shim, POSH_PREFETCH=1), claiming 100
     * domains (peerN.example, each eleven times, none publishing anything usable) and going as far as STARTTLS,
     * so that the program hands each socket to OpenSSL (the shim starts an early lookup for each claimed name)
     * and then never sending a handshake record; then one stream from foo.example.com whose certificate
     * foo.example.com vouches for. That one is accepted (its record is the newest: the silent ones cannot crowd
     * it out), the flood costs at most one fetch per domain (single flight, then the negative cache; every fetch
     * goes through a relay that counts them), and the process ends with a bounded number of threads (one
     * engine, never one per lookup).
     */
    ts_relay *relay = ts_relay_start(ts_nginx_port(f.nginx), 0, 0);
    char base[600], connect_to[600];
    cr_assert_not_null(relay);
    snprintf(base, sizeof(base), "%s/svc", f.dir);
    cr_assert_eq(ts_cert_write(f.svc, f.dir, "svc"), 0);
    snprintf(connect_to, sizeof(connect_to), "POSH_CONNECT_TO=" FOO ":443:127.0.0.1:%d,:443:127.0.0.1:%d",
             ts_nginx_port(f.nginx), ts_relay_port(relay));
    const char *env[] = {connect_to, "POSH_PREFETCH=1", "POSH_LOG=stderr", "POSH_LOG_LEVEL=warning", NULL};
    run_opts shim = {.preload = 1, .service = "xmpp-server", .env = env};
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    const char *argv[] = {POSH_SHIM_PROBE, "xmpp-incoming-flood", "0", f.ca_file, FOO, base, NULL};
    char *out_path;
    pid_t pid = spawn(argv, &shim, &out_path);
    run_result r = reap(pid, out_path, 120000);
    const char *t = strstr(r.out, "threads=");
    int threads = t != NULL ? atoi(t + 8) : -1;
    long fetches = ts_relay_accepted(relay);

    cr_expect_eq(r.status, 0, "the incoming stream from " FOO " is vouched for by POSH:\n%.4000s", r.out);
    cr_expect(strstr(r.out, "incoming-flood: 1100 silent streams open\n") != NULL, "%.4000s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=1") != NULL, "%.4000s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "one lookup for " FOO);
    cr_expect_leq(fetches, 100, "at most one fetch per claimed domain: %ld connections", fetches);
    cr_expect_gt(fetches, 0, "the early lookups for the claimed domains did run");
    cr_expect(threads > 0 && threads <= 3, "threads at the end: %d (the program, the engine)", threads);
    cr_log_info("incoming flood: %ld fetches for 1100 streams claiming 100 domains, %d threads", fetches, threads);
    run_free(&r);
    ts_relay_stop(relay);
}

/*
 * One incoming stream from the probe's peer, in mode (xmpp-incoming*), presenting f.svc; claims checked for FOO.
 * The probe listens on port ("0": any) under POSH_SERVICE=service (NULL: unset).
 */
static run_result incoming_probe_on(const char *mode, const char *port, const char *service)
{
    char base[600], *out_path;
    const char *env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    run_opts shim = {.preload = 1, .service = service, .env = env};
    snprintf(base, sizeof(base), "%s/svc", f.dir);
    cr_assert_eq(ts_cert_write(f.svc, f.dir, "svc"), 0);
    const char *argv[] = {POSH_SHIM_PROBE, mode, port, f.ca_file, FOO, base, NULL};
    pid_t pid = spawn(argv, &shim, &out_path);
    return reap(pid, out_path, RUN_TIMEOUT_MS);
}

static run_result incoming_probe(const char *mode)
{
    return incoming_probe_on(mode, "0", "xmpp-server");
}

Test(shim, xmpp_incoming_from_names_the_reference)
{
    /* The peer claims foo.example.com, which vouches for its certificate: accepted by POSH, names match. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    run_result r = incoming_probe("xmpp-incoming");
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=1") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    run_free(&r);
}

Test(shim, xmpp_incoming_without_usable_from_gets_no_posh)
{
    /* No `from`, or one that is no domain: OpenSSL's and the program's own answer (fail closed), no request. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    run_result r = incoming_probe("xmpp-incoming-nofrom");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=0") != NULL, "%s", r.out);
    run_free(&r);
    r = incoming_probe("xmpp-incoming-badfrom");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=0") != NULL, "%s", r.out);
    run_free(&r);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
}

Test(shim, xmpp_incoming_untouched_without_the_shim)
{
    /* The same stream, no shim: the program's own check refuses the provider's certificate for foo.example.com. */
    char base[600], *out_path;
    run_opts plain = {.service = "xmpp-server"};
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    snprintf(base, sizeof(base), "%s/svc", f.dir);
    cr_assert_eq(ts_cert_write(f.svc, f.dir, "svc"), 0);
    const char *argv[] = {POSH_SHIM_PROBE, "xmpp-incoming", "0", f.ca_file, FOO, base, NULL};
    pid_t pid = spawn(argv, &plain, &out_path);
    run_result r = reap(pid, out_path, RUN_TIMEOUT_MS);
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=0") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0);
    run_free(&r);
}

Test(shim, xmpp_incoming_service_from_the_local_port)
{
    /*
     * Without POSH_SERVICE the local port decides for a socket the program accepted: 5269 is XMPP s2s (the
     * test runs in a network namespace of its own, so the port is free), any other port gets no record.
     */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    run_result r = incoming_probe_on("xmpp-incoming", "5269", NULL);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=1") != NULL, "%s", r.out);
    run_free(&r);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    r = incoming_probe_on("xmpp-incoming", "0", NULL);
    cr_expect_eq(r.status, 1, "another port, no POSH_SERVICE: no POSH\n%s", r.out);
    cr_expect(strstr(r.out, "verify=0 names-match=0") != NULL, "%s", r.out);
    run_free(&r);
    /* POSH_SERVICE names another service: no record, whatever the port. */
    r = incoming_probe_on("xmpp-incoming", "5269", "imap");
    cr_expect_eq(r.status, 1, "POSH_SERVICE=imap: no POSH\n%s", r.out);
    run_free(&r);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
}
