/*
 * test_clients.c - issue 21: the shim with OpenSSL clients that check names their own way (mbsync and Node:
 * SSL_VERIFY_NONE, then their own subjectAltName check; Ruby: names read from an X509_dup() copy), programs it
 * cannot help (GnuTLS's OpenSSL compatibility layer, wget, git: left exactly as without it), each against the
 * fixture's nginx on 127.0.0.1 in a network and mount namespace of its own (/etc/hosts names foo.example.com
 * 127.0.0.1 there only). Perl, PHP, socat and fetchmail worked through the shim already; they are here because
 * test_shim does not cover them. The three ways of the issue for each: (a) without the shim the provider's certificate
 * is rejected for foo.example.com, (b) with the shim and a vouching document it is accepted, (c) an impostor
 * (a valid certificate of the same CA that the document does not list) is rejected. Plus the security
 * properties of lazy approvals and of copies (tests/clients_probe.c). A missing program is a failure: CI installs
 * them all (.ci/run).
 */
#include "programs.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>

#define HTTP_BODY "posh-clients-ok"
#define IMAP_PATH "/.well-known/posh/imap.json"

static fx f;
static ts_tls *svc_server;     /* HTTPS presenting xmpp.hosting.example.net: the provider's certificate */
static ts_tls *other_server;   /* HTTPS presenting other.hosting.example.net: the impostor */

/* ------------------------------------------------------------------------------------------------------ */
/* Servers                                                                                                */

/*
 * A sequential IMAP server (what mbsync needs to list mailboxes): IMAPS (TLS first) or STARTTLS. logins counts
 * the LOGIN commands received inside TLS: a client that accepted the certificate logs in, one that rejected it
 * hangs up after the handshake.
 */
typedef struct imap {
    seq_server *server;
    int port, starttls;
    atomic_int logins;
} imap;

static void imap_serve(SSL_CTX *ctx, int fd, void *arg)
{
    imap *m = arg;
    char line[1024], tag[64], cmd[64], reply[512];
    SSL *ssl = NULL;

    if (!m->starttls && ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1))
        goto done;
    conn_send(fd, ssl, m->starttls ? "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] posh test\r\n"
                                   : "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] posh test\r\n");
    while (conn_line(fd, ssl, line, sizeof(line)) == 0) {
        if (sscanf(line, "%63s %63s", tag, cmd) != 2)
            break;
        if (strcasecmp(cmd, "STARTTLS") == 0 && ssl == NULL) {
            snprintf(reply, sizeof(reply), "%s OK begin TLS\r\n", tag);
            conn_send(fd, NULL, reply);
            if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)
                goto done;
            continue;
        }
        if (strcasecmp(cmd, "CAPABILITY") == 0)
            snprintf(reply, sizeof(reply), "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n%s OK done\r\n", tag);
        else if (strcasecmp(cmd, "LIST") == 0)
            snprintf(reply, sizeof(reply), "* LIST () \"/\" INBOX\r\n%s OK done\r\n", tag);
        else if (strcasecmp(cmd, "LOGOUT") == 0)
            snprintf(reply, sizeof(reply), "* BYE\r\n%s OK done\r\n", tag);
        else
            snprintf(reply, sizeof(reply), "%s OK done\r\n", tag);
        if (strcasecmp(cmd, "LOGIN") == 0 || strcasecmp(cmd, "AUTHENTICATE") == 0) {
            if (ssl != NULL)
                atomic_fetch_add(&m->logins, 1);
            if (strcasecmp(cmd, "AUTHENTICATE") == 0 && strchr(line + strlen(tag) + strlen(cmd) + 2, ' ') == NULL) {
                conn_send(fd, ssl, "+ \r\n");
                if (conn_line(fd, ssl, line, sizeof(line)) != 0)
                    break;
            }
        }
        conn_send(fd, ssl, reply);
        if (strcasecmp(cmd, "LOGOUT") == 0)
            break;
    }
    if (ssl != NULL)
        SSL_shutdown(ssl);
done:
    SSL_free(ssl);
    ERR_clear_error();
}

static imap *imap_start(ts_cert *cert, int starttls)
{
    imap *m = calloc(1, sizeof(*m));
    cr_assert_not_null(m);
    m->starttls = starttls;
    m->server = seq_server_start(cert, 0, imap_serve, m);
    m->port = m->server->port;
    return m;
}

static void imap_stop(imap *m)
{
    if (m == NULL)
        return;
    seq_server_stop(m->server);
    free(m);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Suite                                                                                                  */

/*
 * A network namespace of its own (only loopback) and a mount namespace in which /etc/hosts names
 * foo.example.com 127.0.0.1, so that programs connect by name (mbsync has no --resolve). Nothing mounted here
 * propagates to the host's namespace (/ is made private first).
 */
static void isolate(void)
{
    static const char hosts[] = "127.0.0.1 localhost\n127.0.0.1 " FOO "\n";
    char path[600];

    cr_assert_eq(ts_private_network(), 0, "%s", ts_error());
    cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s (the tests run as root: CI does)",
                 strerror(errno));
    cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "make / private: %s", strerror(errno));
    snprintf(path, sizeof(path), "%s/hosts", f.dir);
    cr_assert_eq(ts_write_file(path, hosts, strlen(hosts)), 0);
    cr_assert_eq(mount(path, "/etc/hosts", NULL, MS_BIND, NULL), 0, "bind-mount %s on /etc/hosts: %s", path,
                 strerror(errno));
}

static void setup(void)
{
    programs_use(&f, HTTP_BODY);
    fx_init(&f);
    isolate();
    fx_start(&f);
    svc_server = start_http(f.svc);
    other_server = start_http(f.other);
}

static void teardown(void)
{
    ts_tls_stop(svc_server);
    ts_tls_stop(other_server);
    svc_server = other_server = NULL;
    fx_fini(&f);
}

TestSuite(clients, .init = setup, .fini = teardown, .timeout = 240);

/* A program connecting to port and expecting FOO; returns whether it accepted the peer. */
typedef int (*program_fn)(int port, const run_opts *o, char **out);

/*
 * The three ways of issue 21 for one program: (a) no shim, the provider's certificate: rejected, no POSH
 * request; (b) the shim and a vouching document: accepted, silently; (c) the shim, an impostor of the same CA
 * the document does not list: rejected.
 */
static void three_ways(program_fn prog, const char *service, const char *doc_path, int svc_port, int impostor_port)
{
    run_opts plain = {.service = service}, shim = {.preload = 1, .service = service};
    char *out = NULL;
    long before;

    fx_put_free(&f, FOO, doc_path, fx_doc1(f.svc, 3600));
    before = fx_requests(&f, NULL, NULL);
    cr_expect(!prog(svc_port, &plain, &out), "(a) without the shim the peer must be rejected:\n%s", out);
    free(out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "(a) no POSH request without the shim");

    cr_expect(prog(svc_port, &shim, &out), "(b) with the shim and a vouching document: accepted:\n%s", out);
    cr_expect(strstr(out, "posh:") == NULL, "(b) silent without POSH_LOG:\n%s", out);
    free(out);
    cr_expect_gt(fx_requests(&f, FOO, doc_path), 0, "(b) the document was fetched");

    cr_expect(!prog(impostor_port, &shim, &out), "(c) an impostor of the same CA: rejected:\n%s", out);
    free(out);
}

/* ------------------------------------------------------------------------------------------------------ */
/* The probe: lazy approvals and copies, answer by answer                                                  */

static run_result probe(int port, const char *mode, const run_opts *o)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {POSH_CLIENTS_PROBE, p, f.ca_file, FOO, mode, NULL};
    return run(argv, o);
}

Test(clients, verify_none_asks_nothing_fetches_nothing)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    long before;
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    before = fx_requests(&f, NULL, NULL);
    r = probe(ts_tls_port(svc_server), "none", &shim);
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "verify=0") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "a program that never asks about the name: no POSH request");
    free(r.out);
}

Test(clients, verify_none_lazy_approval)
{
    run_opts plain = {.service = "xmpp-server"}, shim = {.preload = 1, .service = "xmpp-server"};
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    r = probe(ts_tls_port(svc_server), "none-ask", &plain);
    cr_expect(strstr(r.out, "verify=0 host=0 san=0 copy_host=0 copy_san=0") != NULL, "no shim: %s", r.out);
    free(r.out);

    r = probe(ts_tls_port(svc_server), "none-ask", &shim);
    /* The object and the program's copy answer; a re-parse (another object) and a copy outliving the
     * connection's certificate do not. */
    cr_expect(strstr(r.out, "verify=0 host=1 san=1 copy_host=1 copy_san=1 parsed_host=0 parsed_san=0 "
                            "openssl_copy_host=0 gone_copy_host=0 gone_copy_san=0") != NULL, "shim: %s", r.out);
    cr_expect_gt(fx_requests(&f, FOO, RFC7711_PATH), 0);
    free(r.out);

    r = probe(ts_tls_port(other_server), "none-ask", &shim);
    cr_expect(strstr(r.out, "verify=0 host=0 san=0 copy_host=0 copy_san=0") != NULL, "impostor: %s", r.out);
    free(r.out);

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    r = probe(ts_tls_port(svc_server), "none-ask", &shim);
    cr_expect(strstr(r.out, "verify=0 host=0 san=0 copy_host=0 copy_san=0") != NULL, "not vouched: %s", r.out);
    free(r.out);
}

/* Nothing is laundered: a chain that did not verify gets no approval, and POSH is not even asked. */
Test(clients, verify_none_untrusted_chain_no_approval)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    ts_cert *self = fx_issue(NULL, "xmpp.hosting.example.net", -1, 30, 1);
    ts_tls *s = start_http(self);
    long before;
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(self, 3600));
    before = fx_requests(&f, NULL, NULL);
    r = probe(ts_tls_port(s), "none-ask", &shim);
    cr_expect(strstr(r.out, "verify=18 host=0 san=0 copy_host=0 copy_san=0") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "an unverified chain: no POSH request");
    free(r.out);
    ts_tls_stop(s);
    ts_cert_free(self);
}

/* Ruby's pattern: the verify callback checks the name on an X509_dup() copy of the leaf. */
static int prog_peer_copy(int port, const run_opts *o, char **out)
{
    run_result r = probe(port, "peer-copy", o);
    *out = r.out;
    return r.status == 0 && strstr(r.out, "verify=0") != NULL;
}

Test(clients, copy_in_verify_callback)
{
    three_ways(prog_peer_copy, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

/* The application's own verdict withdraws POSH's approval: from the copy it made too. */
Test(clients, copy_withdrawn_with_the_approval)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    run_result r;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    r = probe(ts_tls_port(svc_server), "copy-withdrawn", &shim);
    cr_expect(strstr(r.out, "kept_during=1 kept_after=0 handshake failed") != NULL, "%s", r.out);
    free(r.out);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Programs the shim cannot help: exactly as without it                                                    */

Test(clients, gnutls_openssl_compat_unchanged)
{
    run_opts plain = {0}, shim = {.preload = 1}, shim_log = {.preload = 1};
    const char *log_env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    const char *argv[] = {POSH_GNUTLS_PROBE, NULL};
    char port[16];
    const char *argv_port[] = {POSH_GNUTLS_PROBE, port, NULL};
    run_result a, b;

    shim_log.env = log_env;
    a = run(argv, &plain);
    b = run(argv, &shim);
    cr_expect_eq(a.status, 0, "%s", a.out);
    cr_expect_eq(b.status, a.status, "with the shim (was SIGSEGV: 139): %s", b.out);
    cr_expect_str_eq(b.out, a.out);
    free(a.out);
    free(b.out);

    b = run(argv, &shim_log);
    cr_expect_eq(b.status, 0, "%s", b.out);
    cr_expect(strstr(b.out, "not OpenSSL's libssl.so.3") != NULL, "the shim says it cannot help:\n%s", b.out);
    free(b.out);

    snprintf(port, sizeof(port), "%d", ts_tls_port(svc_server));
    a = run(argv_port, &plain);
    b = run(argv_port, &shim);
    cr_expect_eq(b.status, a.status, "a handshake, without the shim:\n%s\nwith:\n%s", a.out, b.out);
    cr_expect_str_eq(b.out, a.out);
    free(a.out);
    free(b.out);
}

/* curl -k: verification off, no host: nothing asked, nothing fetched (with the shim as without). */
Test(clients, curl_insecure_fetches_nothing)
{
    run_opts shim = {.preload = 1, .service = "xmpp-server"};
    char url[300];
    long before;
    run_result r;

    snprintf(url, sizeof(url), "https://" FOO ":%d/", ts_tls_port(svc_server));
    const char *argv[] = {"/usr/bin/curl", "-sSk", "--max-time", "30", url, NULL};
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    before = fx_requests(&f, NULL, NULL);
    r = run(argv, &shim);
    cr_expect(r.status == 0 && strstr(r.out, HTTP_BODY) != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "curl -k: no POSH request");
    free(r.out);
}

/* wget and git use GnuTLS: not helped, must fail closed and not crash (git says fatal: 128). */
Test(clients, gnutls_programs_fail_closed)
{
    run_opts plain = {.service = "xmpp-server"}, shim = {.preload = 1, .service = "xmpp-server"};
    char url[300], cafile[600];
    run_result a, b;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    snprintf(url, sizeof(url), "https://" FOO ":%d/", ts_tls_port(svc_server));
    snprintf(cafile, sizeof(cafile), "--ca-certificate=%s", f.ca_file);
    const char *wget[] = {"/usr/bin/wget", "-q", "-O", "-", "--tries=1", "--timeout=20", cafile, url, NULL};
    a = run(wget, &plain);
    b = run(wget, &shim);
    cr_expect(a.status > 0 && a.status <= 128, "wget without the shim: %d %s", a.status, a.out);
    cr_expect_eq(b.status, a.status, "wget with the shim: %d %s", b.status, b.out);
    cr_expect(strstr(b.out, HTTP_BODY) == NULL);
    free(a.out);
    free(b.out);
    /* The shim says, once, that it cannot help (only when asked to log). */
    const char *log_env[] = {"POSH_LOG=stderr", "POSH_LOG_LEVEL=debug", NULL};
    run_opts shim_log = {.preload = 1, .service = "xmpp-server", .env = log_env};
    b = run(wget, &shim_log);
    cr_expect_eq(b.status, a.status);
    cr_expect(strstr(b.out, "this program links libgnutls.so.30, not OpenSSL's libssl.so.3: POSH cannot help it") !=
              NULL, "%s", b.out);
    free(b.out);

    char sslcainfo[600];
    snprintf(sslcainfo, sizeof(sslcainfo), "http.sslCAInfo=%s", f.ca_file);
    const char *git[] = {"/usr/bin/git", "-c", sslcainfo, "ls-remote", url, NULL};
    a = run(git, &plain);
    b = run(git, &shim);
    cr_expect(a.status > 0 && a.status <= 128, "git without the shim: %d %s", a.status, a.out);
    cr_expect_eq(b.status, a.status, "git with the shim: %d %s", b.status, b.out);
    free(a.out);
    free(b.out);
}

/* ------------------------------------------------------------------------------------------------------ */
/* mbsync (isync 1.4.4): SSL_VERIFY_NONE with SNI, SSL_get_verify_result(), then its own subjectAltName check */

static int mbsync(int port, int starttls, const run_opts *o, char **out, imap *server)
{
    static atomic_int n;
    char *conf = NULL, *body = NULL, maildir[600];
    int before = atomic_load(&server->logins);
    run_result r;

    cr_assert_geq(asprintf(&conf, "%s/mbsyncrc-%d", f.dir, atomic_fetch_add(&n, 1)), 0);
    cr_assert_geq(asprintf(&body,
                           "IMAPAccount acc\nHost " FOO "\nPort %d\nUser u\nPass p\nSSLType %s\n"
                           "CertificateFile %s\nSystemCertificates no\nAuthMechs LOGIN\n\n"
                           "IMAPStore far\nAccount acc\n\nMaildirStore near\nPath %s/mail/\nInbox %s/mail/INBOX\n\n"
                           "Channel ch\nFar :far:\nNear :near:\nPatterns INBOX\n",
                           port, starttls ? "STARTTLS" : "IMAPS", f.ca_file, f.dir, f.dir), 0);
    cr_assert_eq(ts_write_file(conf, body, strlen(body)), 0);
    snprintf(maildir, sizeof(maildir), "%s/mail", f.dir);
    mkdir(maildir, 0700);
    const char *argv[] = {"/usr/bin/mbsync", "-c", conf, "-l", "ch", NULL};
    r = run(argv, o);
    free(conf);
    free(body);
    *out = r.out;
    return atomic_load(&server->logins) > before;
}

static imap *mbsync_svc, *mbsync_impostor;
static int mbsync_starttls;

static int prog_mbsync(int port, const run_opts *o, char **out)
{
    return mbsync(port, mbsync_starttls, o, out, port == mbsync_svc->port ? mbsync_svc : mbsync_impostor);
}

static void mbsync_three_ways(int starttls)
{
    mbsync_starttls = starttls;
    mbsync_svc = imap_start(f.svc, starttls);
    mbsync_impostor = imap_start(f.other, starttls);
    three_ways(prog_mbsync, "imap", IMAP_PATH, mbsync_svc->port, mbsync_impostor->port);
    imap_stop(mbsync_svc);
    imap_stop(mbsync_impostor);
}

Test(clients, mbsync_imaps)
{
    mbsync_three_ways(0);
}

Test(clients, mbsync_starttls)
{
    mbsync_three_ways(1);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Ruby 3.1: its verify callback and post_connection_check read X509_dup() copies of the leaf              */

static const char ruby_socket[] =
    "require 'socket'; require 'openssl'\n"
    "port, cafile, name = ARGV[0].to_i, ARGV[1], ARGV[2]\n"
    "ctx = OpenSSL::SSL::SSLContext.new\n"
    "ctx.set_params(ca_file: cafile, verify_mode: OpenSSL::SSL::VERIFY_PEER, verify_hostname: true)\n"
    "ssl = OpenSSL::SSL::SSLSocket.new(TCPSocket.new(name, port), ctx)\n"
    "ssl.hostname = name\n"
    "begin\n"
    "  ssl.connect\n"
    "  ssl.post_connection_check(name)\n"
    "  puts 'ruby accepted'\n"
    "rescue => e\n"
    "  puts \"ruby rejected: #{e.class}: #{e.message}\"\n"
    "  exit 1\n"
    "end\n";

static const char ruby_net_http[] =
    "require 'net/http'\n"
    "port, cafile, name = ARGV[0].to_i, ARGV[1], ARGV[2]\n"
    "http = Net::HTTP.new(name, port)\n"
    "http.use_ssl = true\n"
    "http.ca_file = cafile\n"
    "http.verify_mode = OpenSSL::SSL::VERIFY_PEER\n"
    "begin\n"
    "  puts http.get('/').body\n"
    "rescue => e\n"
    "  puts \"ruby rejected: #{e.class}: #{e.message}\"\n"
    "  exit 1\n"
    "end\n";

static int ruby(const char *script, int port, const run_opts *o, char **out, const char *accepted)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {"/usr/bin/ruby", "-e", script, p, f.ca_file, FOO, NULL};
    run_result r = run(argv, o);
    *out = r.out;
    return r.status == 0 && strstr(r.out, accepted) != NULL;
}

static int prog_ruby_socket(int port, const run_opts *o, char **out)
{
    return ruby(ruby_socket, port, o, out, "ruby accepted");
}

static int prog_ruby_net_http(int port, const run_opts *o, char **out)
{
    return ruby(ruby_net_http, port, o, out, HTTP_BODY);
}

Test(clients, ruby_sslsocket_post_connection_check)
{
    three_ways(prog_ruby_socket, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

Test(clients, ruby_net_http)
{
    three_ways(prog_ruby_net_http, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

/* ------------------------------------------------------------------------------------------------------ */
/* The library for programs that check names themselves (socat): SSL_check_posh_host()                    */

static run_result selfcheck(int port, const char *mode)
{
    run_opts o = {0};
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {POSH_SELFCHECK_PROBE, p, f.ca_file, FOO, mode, NULL};
    return run(argv, &o);
}

static int prog_selfcheck(int port, const run_opts *o, char **out)
{
    /* (a) is the program without POSH, the others with the library (never the shim). */
    run_result r = selfcheck(port, o->preload ? "posh" : "plain");
    *out = r.out;
    return r.status == 0;
}

Test(clients, library_check_host)
{
    long before;
    run_result r;

    three_ways(prog_selfcheck, NULL, RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
    r = selfcheck(ts_tls_port(svc_server), "posh");
    /* X509_check_host() alone rejects what POSH accepted; the new call accepts exactly the vouched name, for the
     * peer's certificate and a copy of it only. */
    cr_expect(strstr(r.out, "verify=0 vouched=" FOO " x509_check_host=0 own_check=1 copy=1 other_name=0 "
                            "other_cert=0") != NULL, "%s", r.out);
    free(r.out);

    before = fx_requests(&f, NULL, NULL);
    r = selfcheck(ts_tls_port(svc_server), "verify0");
    cr_expect(strstr(r.out, "vouched=(none) x509_check_host=0 own_check=0") != NULL, "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), before, "verification off, no host: no POSH request");
    free(r.out);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Clients that already worked through the shim and that test_shim does not cover: Perl, PHP, socat,      */
/* fetchmail                                                                                              */

static int prog_perl(int port, const run_opts *o, char **out)
{
    static const char script[] =
        "use HTTP::Tiny; my ($url, $ca) = @ARGV;\n"
        "my $r = HTTP::Tiny->new(verify_SSL => 1, SSL_options => {SSL_ca_file => $ca})->get($url);\n"
        "print $r->{success} ? $r->{content} : \"perl rejected: $r->{status} $r->{content}\\n\";\n"
        "exit($r->{success} ? 0 : 1);\n";
    char url[300];
    snprintf(url, sizeof(url), "https://" FOO ":%d/", port);
    const char *argv[] = {"/usr/bin/perl", "-e", script, url, f.ca_file, NULL};
    run_result r = run(argv, o);
    *out = r.out;
    return r.status == 0 && strstr(r.out, HTTP_BODY) != NULL;
}

static int prog_php(int port, const run_opts *o, char **out)
{
    static const char script[] =
        "$ctx = stream_context_create(['ssl' => ['cafile' => $argv[2], 'verify_peer' => true,\n"
        "                                        'verify_peer_name' => true]]);\n"
        "$body = @file_get_contents($argv[1], false, $ctx);\n"
        "if ($body === false) { echo 'php rejected: ', error_get_last()['message'] ?? '', \"\\n\"; exit(1); }\n"
        "echo $body;\n";
    char url[300];
    snprintf(url, sizeof(url), "https://" FOO ":%d/", port);
    const char *argv[] = {"/usr/bin/php", "-r", script, "--", url, f.ca_file, NULL};
    run_result r = run(argv, o);
    *out = r.out;
    return r.status == 0 && strstr(r.out, HTTP_BODY) != NULL;
}

static int prog_socat(int port, const run_opts *o, char **out)
{
    char addr[700];
    run_opts with_input = *o;
    snprintf(addr, sizeof(addr), "OPENSSL:" FOO ":%d,cafile=%s,verify=1", port, f.ca_file);
    const char *argv[] = {"/usr/bin/socat", "-", addr, NULL};
    with_input.input = "GET / HTTP/1.0\r\n\r\n";
    run_result r = run(argv, &with_input);
    *out = r.out;
    return r.status == 0 && strstr(r.out, HTTP_BODY) != NULL;
}

Test(clients, perl_http_tiny)
{
    three_ways(prog_perl, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

Test(clients, php_streams)
{
    three_ways(prog_php, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

Test(clients, socat)
{
    three_ways(prog_socat, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}

/* fetchmail: verify-param host and its own SAN/CN check in its callback; IMAPS, --check only. */
static imap *fetchmail_svc, *fetchmail_impostor;

static int prog_fetchmail(int port, const run_opts *o, char **out)
{
    static atomic_int n;
    imap *server = port == fetchmail_svc->port ? fetchmail_svc : fetchmail_impostor;
    int before = atomic_load(&server->logins);
    char *rc = NULL, *body = NULL;
    run_result r;

    cr_assert_geq(asprintf(&rc, "%s/fetchmailrc-%d", f.dir, atomic_fetch_add(&n, 1)), 0);
    cr_assert_geq(asprintf(&body,
                           "poll " FOO " protocol imap port %d user \"u\" password \"p\" ssl sslcertck "
                           "sslcertfile \"%s\"\n",
                           port, f.ca_file), 0);
    cr_assert_eq(ts_write_file(rc, body, strlen(body)), 0);
    cr_assert_eq(chmod(rc, 0600), 0);
    const char *argv[] = {"/usr/bin/fetchmail", "-f", rc, "--check", "--nosyslog", "-v", NULL};
    r = run(argv, o);
    free(rc);
    free(body);
    *out = r.out;
    return atomic_load(&server->logins) > before;
}

Test(clients, fetchmail)
{
    fetchmail_svc = imap_start(f.svc, 0);
    fetchmail_impostor = imap_start(f.other, 0);
    three_ways(prog_fetchmail, "imap", IMAP_PATH, fetchmail_svc->port, fetchmail_impostor->port);
    imap_stop(fetchmail_svc);
    imap_stop(fetchmail_impostor);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Debian's Node 18 (libnode108, the system's OpenSSL): SSL_VERIFY_NONE, SSL_get_verify_result(), then its  */
/* own checkServerIdentity() on the subjectAltName of an X509_dup() copy                                   */

static char node_path[700], node_libs[700];

/*
 * Debian's node: /usr/bin/node as CI installs it (package nodejs). On a machine whose nodejs is another build
 * (nodejs.org's, with a static OpenSSL: the shim cannot help it), POSH_TEST_NODE_ROOT names a directory into
 * which Debian's nodejs, libnode108, node-acorn, node-cjs-module-lexer and node-undici packages were extracted
 * (dpkg -x): its usr/share is laid over /usr/share in this test's own mount namespace, where node looks for its
 * externalised builtins. Either way the node used must be Node 18 on libnode.so.108: anything else fails.
 */
static void node_setup(void)
{
    const char *root = getenv("POSH_TEST_NODE_ROOT");
    char opts[1500];
    node_libs[0] = '\0';
    if (root == NULL) {
        snprintf(node_path, sizeof(node_path), "/usr/bin/node");
        return;
    }
    snprintf(node_path, sizeof(node_path), "%s/usr/bin/node", root);
    snprintf(node_libs, sizeof(node_libs), "LD_LIBRARY_PATH=%s/usr/lib/x86_64-linux-gnu", root);
    snprintf(opts, sizeof(opts), "lowerdir=%s/usr/share:/usr/share", root);
    cr_assert_eq(mount("overlay", "/usr/share", "overlay", 0, opts), 0, "overlay %s on /usr/share: %s", opts,
                 strerror(errno));
}

static int prog_node(int port, const run_opts *o, char **out)
{
    static const char script[] =
        "const https = require('https'), fs = require('fs');\n"
        "const [port, ca, name] = process.argv.slice(1);\n"
        "https.get({host: name, port: +port, ca: fs.readFileSync(ca), servername: name, path: '/'}, res => {\n"
        "  let body = ''; res.on('data', d => body += d); res.on('end', () => { console.log(body); });\n"
        "}).on('error', e => { console.log('node rejected:', e.code, e.message); process.exitCode = 1; });\n";
    const char *env[8] = {NULL};
    char p[16];
    run_opts with_env = *o;
    size_t n = 0;

    for (size_t i = 0; o->env != NULL && o->env[i] != NULL && n < 6; i++)
        env[n++] = o->env[i];
    if (node_libs[0] != '\0')
        env[n++] = node_libs;
    with_env.env = env;
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {node_path, "-e", script, p, f.ca_file, FOO, NULL};
    run_result r = run(argv, &with_env);
    *out = r.out;
    return r.status == 0 && strstr(r.out, HTTP_BODY) != NULL;
}

Test(clients, debian_node18)
{
    run_opts plain = {0};
    const char *env[2] = {node_libs, NULL};
    node_setup();
    plain.env = node_libs[0] != '\0' ? env : NULL;
    const char *argv[] = {node_path, "-p", "process.versions.node + ' ' + process.config.variables.node_shared_openssl",
                          NULL};
    run_result v = run(argv, &plain);
    cr_assert(strncmp(v.out, "18.", 3) == 0 && strstr(v.out, "true") != NULL,
              "Debian's Node 18 with the system's OpenSSL is needed (CI: package nodejs; elsewhere set "
              "POSH_TEST_NODE_ROOT, see node_setup): %s says %s", node_path, v.out);
    free(v.out);
    three_ways(prog_node, "xmpp-server", RFC7711_PATH, ts_tls_port(svc_server), ts_tls_port(other_server));
}
