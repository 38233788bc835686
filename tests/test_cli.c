/*
 * test_cli.c - the `posh` command as a real process (POSH_CLI_PATH): every subcommand and exit code, against
 * the fixture's nginx and TLS servers on 127.0.0.1 and a small plaintext-then-TLS server for STARTTLS (XMPP,
 * SMTP, IMAP, and servers that refuse, inject or stay silent). JSON output is parsed back and checked.
 */
#include "cli_run.h"
#include "fixture.h"

#include "posh_internal.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the fixture ---- */

static fx f;
static ts_tls *server;

static void setup(void)
{
    cli_fixture_setup(&f);
}

static void teardown(void)
{
    cli_fixture_teardown(&f, &server);
}

/* ======================================================================================================== */
/* usage, --help, --version: no servers needed                                                              */

TestSuite(cli_usage, .timeout = 120);

Test(cli_usage, no_command_and_unknown_command)
{
    cli_run r = POSH("bogus");
    expect_code(r, 2);
    cr_expect(strstr(r.err, "unknown command 'bogus'") != NULL, "%s", r.err);
    cr_expect_eq(r.out[0], '\0');
    cli_run_free(&r);

    r = cli_run_posh(NULL, (const char *const[]){NULL});
    expect_code(r, 2);
    cr_expect(strstr(r.err, "a command is required") != NULL, "%s", r.err);
    cli_run_free(&r);
}

Test(cli_usage, help_and_version)
{
    static const char *const cmds[] = {"lookup", "verify", "generate"};
    cli_run r = POSH("--help");
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "usage: posh COMMAND"), "%s", r.out);
    cli_run_free(&r);

    r = POSH("--version");
    expect_code(r, 0);
    {
        char want[64];
        snprintf(want, sizeof(want), "posh %s ", posh_version());
        cr_expect(cli_starts_with(r.out, want), "%s", r.out);
    }
    cli_run_free(&r);

    for (size_t i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof(want), "usage: posh %s", cmds[i]);
        r = POSH(cmds[i], "--help");
        expect_code(r, 0);
        cr_expect(cli_starts_with(r.out, want), "%s --help: %s", cmds[i], r.out);
        cr_expect(strstr(r.out, "Exit status") != NULL, "%s --help documents the exit status", cmds[i]);
        cli_run_free(&r);
        r = POSH("help", cmds[i]);
        expect_code(r, 0);
        cr_expect(cli_starts_with(r.out, want), "help %s: %s", cmds[i], r.out);
        cli_run_free(&r);
    }
}

Test(cli_usage, lookup_usage_errors)
{
    cli_expect_domain_usage_errors("lookup");
}

Test(cli_usage, invalid_environment_is_a_usage_error)
{
    setenv("POSH_TIMEOUT_MS", "soon", 1);
    cli_run r = POSH("lookup", "a.example");
    expect_code(r, 2);
    cr_expect(strstr(r.err, "POSH_TIMEOUT_MS") != NULL, "names the variable: %s", r.err);
    cli_run_free(&r);
    r = POSH("verify", "a.example", "127.0.0.1:1");
    expect_code(r, 2);
    cr_expect(strstr(r.err, "POSH_TIMEOUT_MS") != NULL, "names the variable: %s", r.err);
    cli_run_free(&r);
    unsetenv("POSH_TIMEOUT_MS");
}

Test(cli_usage, verify_usage_errors)
{
    static const cli_usage_case cases[] = {
        {{"verify", "a.example"}, "DOMAIN and HOST:PORT are required"},
        {{"verify", "a.example", "127.0.0.1:1", "x"}, "too many arguments"},
        {{"verify", "a.example", "127.0.0.1"}, "expected HOST:PORT"},
        {{"verify", "a.example", "127.0.0.1:0"}, "port must be a number"},
        {{"verify", "a.example", "127.0.0.1:65536"}, "port must be a number"},
        {{"verify", "a.example", "127.0.0.1:x1"}, "port must be a number"},
        {{"verify", "a.example", ":5222"}, "host is empty"},
        {{"verify", "a.example", "::1:5222"}, "in brackets"},
        {{"verify", "a.example", "[::1"}, "[IPV6]:PORT"},
        {{"verify", "--starttls", "pop3", "a.example", "127.0.0.1:1"}, "expected xmpp, smtp or imap"},
        {{"verify", "--timeout", "0", "a.example", "127.0.0.1:1"}, "--timeout"},
        {{"verify", "--json"}, "required"},
        {{"verify", "127.0.0.1", "127.0.0.1:1"}, "not a valid DNS name"},
        {{"verify", "bad_domain.example", "127.0.0.1:1"}, "not a valid DNS name"},
        {{"verify", "a.example..", "127.0.0.1:1"}, "not a valid DNS name"},
        {{"verify", "-s", "bad!", "a.example", "127.0.0.1:1"}, "not a valid POSH service"},
        {{"verify", "--cafile", "/nonexistent/ca.pem", "a.example", "127.0.0.1:1"}, "/nonexistent/ca.pem"},
    };
    cli_expect_usage_errors(cases, sizeof(cases) / sizeof(cases[0]), NULL);
}

Test(cli_usage, generate_usage_errors)
{
    static const cli_usage_case cases[] = {
        {{"generate"}, "at least one certificate"},
        {{"generate", "--expires", "0", "x.pem"}, "--expires '0'"},
        {{"generate", "--expires", "-5", "x.pem"}, "--expires"},
        {{"generate", "--expires", "abc", "x.pem"}, "--expires"},
        {{"generate", "--expires", "1.5", "x.pem"}, "--expires"},
        {{"generate", "--expires", "", "x.pem"}, "--expires"},
        {{"generate", "--expires", " 5", "x.pem"}, "--expires"},
        {{"generate", "--expires", "+5", "x.pem"}, "--expires"},
        {{"generate", "--expires", "2147483648", "x.pem"}, "--expires"},
        {{"generate", "--expires", "99999999999999999999", "x.pem"}, "--expires"},
        {{"generate", "--expires"}, "needs a value"},
        {{"generate", "--url", "http://hosting.example.net/x.json"}, "not an acceptable https:// URL"},
        {{"generate", "--url", "https://user@hosting.example.net/"}, "not an acceptable https:// URL"},
        {{"generate", "--url", "https://hosting.example.net/x.json", "x.pem"}, "give no certificates"},
        {{"generate", "--sha1", "--url", "https://hosting.example.net/x.json"}, "--sha1"},
        {{"generate", "--url"}, "needs a value"},
    };
    cli_expect_usage_errors(cases, sizeof(cases) / sizeof(cases[0]), NULL);
}

Test(cli_usage, generate_more_than_64_certificates)
{
    const char *args[70] = {"generate"};
    for (int i = 1; i <= 65; i++)
        args[i] = "x.pem";
    cli_run r = cli_run_posh(NULL, args);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "at most 64") != NULL, "%s", r.err);
    cli_run_free(&r);
}

/* The command applies the library's rule for a reference URL (lib/names.c, compiled in): both agree on every case. */
Test(cli_usage, generate_url_rule_is_the_library_rule)
{
    static const char *const urls[] = {
        "https://hosting.example.net/.well-known/posh/xmpp-server.json",
        "HTTPS://hosting.example.net/x",
        "https://hosting.example.net",
        "https://hosting.example.net:8443/x?y=1#z",
        "https://[2001:db8::1]:443/x",
        "https://[2001:db8::1/x",
        "https://[]/x",
        "https://[:]/x",
        "https://[::ffff:192.0.2.1]/x",
        "https://127.0.0.1/x",
        "https://h/x%20y",
        "https://h/x%2",
        "https://h/x%zz",
        "https://h/x y",
        "https://h/x\ty",
        "https://h/x\"y",
        "https://h/x<y>",
        "https://h/x{y}",
        "https://h/x|y",
        "https://h/x\\y",
        "https://h/x^y",
        "https://h/x`y",
        "https://h/\xc3\xa9",
        "https://user@h/x",
        "https://h@/x",
        "https://:443/x",
        "https://h:0/x",
        "https://h:65535/x",
        "https://h:65536/x",
        "https://h:/x",
        "https://h:44a/x",
        "https://h_h/x",
        "https:///x",
        "https://",
        "https:/h/x",
        "http://h/x",
        "ftp://h/x",
        "//h/x",
        "h/x",
        "https://h/x?q=a&b=c;d=e!$'()*+,=~",
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        int lib = posh_url_is_https(urls[i], strlen(urls[i]));
        cli_run r = POSH("generate", "--url", urls[i]);
        cr_expect_eq(r.code, lib ? 0 : 2, "'%s': library says %s, posh generate exits %d (%s)", urls[i],
                     lib ? "ok" : "invalid", r.code, r.err);
        cli_run_free(&r);
    }
    /* The length limit, at and over 2048. */
    {
        char url[2100];
        size_t prefix = strlen("https://h/");
        memcpy(url, "https://h/", prefix);
        memset(url + prefix, 'a', 2048 - prefix);
        url[2048] = '\0';
        cli_run r = POSH("generate", "--url", url);
        cr_expect_eq(r.code, posh_url_is_https(url, 2048) ? 0 : 2);
        cr_expect_eq(r.code, 0, "2048 characters are allowed");
        cli_run_free(&r);
        url[2048] = 'a';
        url[2049] = '\0';
        r = POSH("generate", "--url", url);
        cr_expect_eq(r.code, 2, "2049 characters are not");
        cr_expect_eq(posh_url_is_https(url, 2049), 0);
        cli_run_free(&r);
    }
}

/* ======================================================================================================== */
/* posh lookup against nginx                                                                                */

TestSuite(cli_lookup, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_lookup, found_rfc7711)
{
    char *want = cli_fingerprint(f.svc, "sha-256");
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    cr_expect_eq(r.err[0], '\0', "nothing on stderr: %s", r.err);
    json_object *j = cli_parse_json(r.out), *reqs, *fps, *req0;
    cr_expect_str_eq(cli_member_str(j, "domain"), FOO);
    cr_expect_str_eq(cli_member_str(j, "service"), "xmpp-server");
    reqs = cli_member(j, "requests");
    cr_assert_eq(json_object_array_length(reqs), 1);
    req0 = json_object_array_get_idx(reqs, 0);
    cr_expect_str_eq(cli_member_str(req0, "url"), "https://" FOO RFC7711_PATH);
    cr_expect_eq(json_object_get_int(cli_member(req0, "status")), 200);
    cr_expect(!json_object_get_boolean(cli_member(j, "followed_reference")));
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 3600);
    fps = cli_member(j, "fingerprints");
    cr_assert_eq(json_object_array_length(fps), 1);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-256"), want);
    cr_expect_eq(json_object_object_length(json_object_array_get_idx(fps, 0)), 1, "only the hash published");
    cr_expect_null(cli_member(j, "error"));
    json_object_put(j);
    free(want);
    cli_run_free(&r);
}

Test(cli_lookup, reference_followed_with_every_hash)
{
    char *sha1 = cli_fingerprint(f.svc, "sha-1"), *sha256 = cli_fingerprint(f.svc, "sha-256");
    char *other = cli_fingerprint(f.other, "sha-512"), *doc = NULL;
    cr_assert_geq(asprintf(&doc,
                           "{\"fingerprints\":[{\"sha-1\":\"%s\",\"sha-256\":\"%s\"},{\"sha-512\":\"%s\"}],"
                           "\"expires\":600}",
                           sha1, sha256, other),
                  0);
    fx_put_free(&f, HOSTING, "/posh/xmpp.json", doc);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref("https://" HOSTING "/posh/xmpp.json", 7200));
    cli_run r = POSH("lookup", "-s", "xmpp-server", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *fps, *d0, *d1;
    cr_expect(json_object_get_boolean(cli_member(j, "followed_reference")));
    cr_expect_eq(json_object_array_length(cli_member(j, "requests")), 2);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(cli_member(j, "requests"), 1), "url"),
                     "https://" HOSTING "/posh/xmpp.json");
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 600, "min(reference, fingerprints)");
    fps = cli_member(j, "fingerprints");
    cr_assert_eq(json_object_array_length(fps), 2);
    d0 = json_object_array_get_idx(fps, 0);
    d1 = json_object_array_get_idx(fps, 1);
    cr_expect_str_eq(cli_member_str(d0, "sha-1"), sha1);
    cr_expect_str_eq(cli_member_str(d0, "sha-256"), sha256);
    cr_expect_str_eq(cli_member_str(d1, "sha-512"), other);
    json_object_put(j);
    free(sha1);
    free(sha256);
    free(other);
    cli_run_free(&r);
}

Test(cli_lookup, draft02_layout_and_other_service)
{
    fx_put_free(&f, FOO, "/.well-known/posh._imap._tcp.json", fx_doc1(f.svc, 60));
    cli_run r = POSH("lookup", "--service", "imap", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *reqs = cli_member(j, "requests");
    cr_expect_str_eq(cli_member_str(j, "service"), "imap");
    cr_assert_eq(json_object_array_length(reqs), 2);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(reqs, 0), "url"),
                     "https://" FOO "/.well-known/posh/imap.json");
    cr_expect_eq(json_object_get_int(cli_member(json_object_array_get_idx(reqs, 0), "status")), 404);
    cr_expect_eq(json_object_get_int(cli_member(json_object_array_get_idx(reqs, 1), "status")), 200);
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_lookup, none_is_exit_1)
{
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out), *e = cli_member(j, "error");
    cr_assert_not_null(e);
    cr_expect_str_eq(cli_member_str(e, "name"), "POSH_ERR_NO_POSH");
    cr_expect_eq(json_object_get_int(cli_member(e, "code")), POSH_ERR_NO_POSH);
    cr_expect_eq(json_object_array_length(cli_member(j, "requests")), 2, "both layouts tried");
    cr_expect_eq(json_object_array_length(cli_member(j, "fingerprints")), 0);
    cr_expect_null(cli_member(j, "ttl"));
    cr_expect(strstr(r.err, "POSH_ERR_NO_POSH") != NULL, "the reason on stderr too: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_lookup, invalid_document_is_exit_1_with_the_reason)
{
    fx_put(&f, FOO, RFC7711_PATH, "{\"fingerprints\":[{\"sha-256\":\"not base64!\"}],\"expires\":60}");
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out), *e = cli_member(j, "error");
    cr_expect_str_eq(cli_member_str(e, "name"), "POSH_ERR_FINGERPRINT");
    cr_expect(strstr(cli_member_str(e, "message"), "sha-256") != NULL, "%s", cli_member_str(e, "message"));
    cr_expect(strstr(r.err, "sha-256") != NULL, "stderr: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);

    fx_put(&f, FOO, RFC7711_PATH, "{\"fingerprints\":[{\"sha-256\":\"AAAA\"}]}");
    r = POSH("lookup", FOO);
    expect_code(r, 1);
    j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_EXPIRES");
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_lookup, untrusted_web_server_is_exit_1)
{
    unsetenv("POSH_CA_FILE"); /* the system store does not know the test CA */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_run r = POSH("lookup", FOO);
    expect_code(r, 1);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(cli_member(j, "error"), "name"), "POSH_ERR_TLS");
    cr_expect(strstr(r.err, "https://" FOO) != NULL, "the URL in the reason: %s", r.err);
    json_object_put(j);
    cli_run_free(&r);
}

/* ======================================================================================================== */
/* posh verify against the in-process TLS server                                                            */

TestSuite(cli_verify, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_verify, accepted_by_posh)
{
    char *fp = cli_fingerprint(f.svc, "sha-256");
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    cr_expect(strstr(r.out, "descriptor 0") != NULL, "which descriptor: %s", r.out);
    cr_expect(strstr(r.out, "https://" FOO RFC7711_PATH) != NULL, "which URL: %s", r.out);
    cr_expect(strstr(r.out, fp) != NULL, "the peer's fingerprint: %s", r.out);
    cr_expect(strstr(r.out, "CN=xmpp.hosting.example.net") != NULL, "the peer's subject: %s", r.out);
    free(fp);
    cli_run_free(&r);
}

/* A result that cannot be written is a failure (exit 1), not a silent success. */
Test(cli_verify, unwritable_stdout_is_exit_1)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_serve(&server, f.svc);
    for (int json = 0; json < 2; json++) {
        cli_run r = json ? POSH_TO("/dev/full", "verify", "--json", "--cafile", f.ca_file, FOO, cli_server_addr(server))
                         : POSH_TO("/dev/full", "verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
        expect_code(r, 1);
        cr_expect(strstr(r.err, "cannot write the result") != NULL, "json %d: %s", json, r.err);
        cli_run_free(&r);
    }
}

/* What a server sends reaches the operator's terminal only with its control bytes neutralised. */
Test(cli_lookup, server_text_cannot_drive_the_terminal)
{
    ts_evil *e = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo));
    ts_evil_route_opts o = {.status = 302, .location = "http://evil.example/\x1b]0;owned\x07\x1b[2J"};
    char connect_to[128];

    cr_assert_not_null(e);
    cr_assert_eq(ts_evil_route(e, RFC7711_PATH, &o), 0);
    cr_assert_eq(ts_evil_start(e), 0);
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_evil_port(e));
    setenv("POSH_CONNECT_TO", connect_to, 1);
    cli_run r = POSH("lookup", FOO);
    fx_export_env(&f);
    expect_code(r, 1);
    cr_expect(strstr(r.err, "which is not an https URL") != NULL, "the redirect is the reason: %s", r.err);
    /* The library's message arrives escaped (\xHH); the command shows it as it is, not escaped a second time. */
    cr_expect(strstr(r.err, "http://evil.example/\\x1b]0;owned\\x07\\x1b[2J\", which") != NULL,
              "control bytes as \\xHH, once: %s", r.err);
    for (const char *p = r.err; *p != '\0'; p++)
        cr_expect((unsigned char)*p >= 0x20 || *p == '\n', "a control byte 0x%02x on stderr", (unsigned char)*p);
    cli_run_free(&r);
    ts_evil_stop(e);
}

Test(cli_verify, pkix_when_the_name_matches)
{
    ts_cert *named = fx_issue_key(f.ca, FOO, NULL);
    cli_serve(&server, named);
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "pkix: " FOO), "%s", r.out);
    cr_expect_eq(fx_requests(&f, NULL, NULL), 0, "no POSH request when the name matches");
    ts_cert_free(named);
    cli_run_free(&r);
}

Test(cli_verify, rejected_when_not_vouched)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 1);
    cr_expect(cli_starts_with(r.out, "rejected: hostname mismatch"), "%s", r.out);
    cr_expect(strstr(r.out, "matches none of the 1 fingerprint descriptors") != NULL, "POSH's reason: %s", r.out);
    cli_run_free(&r);
}

Test(cli_verify, rejected_without_document)
{
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 1);
    cr_expect(cli_starts_with(r.out, "rejected: hostname mismatch"), "%s", r.out);
    cr_expect(strstr(r.out, "no POSH document") != NULL || strstr(r.out, "404") != NULL, "%s", r.out);
    cli_run_free(&r);
}

Test(cli_verify, untrusted_chain_rejected_even_when_vouched)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", FOO, cli_server_addr(server)); /* system store: the test CA is unknown */
    expect_code(r, 1);
    cr_expect(cli_starts_with(r.out, "rejected: unable to"), "%s", r.out);
    cr_expect(strstr(r.out, "POSH vouched for the name") != NULL, "%s", r.out);
    cli_run_free(&r);
}

Test(cli_verify, json_output)
{
    char *fp = cli_fingerprint(f.svc, "sha-256");
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_serve(&server, f.svc);
    cli_run r = POSH("verify", "--json", "--cafile", f.ca_file, "-s", "xmpp-server", FOO, cli_server_addr(server));
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *posh, *peer;
    cr_expect_str_eq(cli_member_str(j, "result"), "posh");
    cr_expect_str_eq(cli_member_str(j, "domain"), FOO);
    cr_expect_str_eq(cli_member_str(j, "service"), "xmpp-server");
    cr_expect_str_eq(cli_member_str(j, "connect"), cli_server_addr(server));
    cr_expect_null(cli_member(j, "starttls"));
    cr_expect_eq(json_object_get_int(cli_member(cli_member(j, "verify_result"), "code")), 0);
    posh = cli_member(j, "posh");
    cr_expect_str_eq(cli_member_str(posh, "status"), "accepted");
    cr_expect_null(cli_member(posh, "error"));
    cr_expect(strstr(cli_member_str(posh, "message"), "descriptor 0") != NULL);
    peer = cli_member(j, "peer");
    cr_expect_str_eq(cli_member_str(peer, "sha-256"), fp);
    cr_expect_str_eq(cli_member_str(peer, "subject"), "CN=xmpp.hosting.example.net");
    cr_expect_null(cli_member(j, "error"));
    json_object_put(j);
    cli_run_free(&r);

    /* Rejected, in JSON. */
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 3600));
    r = POSH("verify", "--json", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 1);
    j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "result"), "rejected");
    cr_expect_eq(json_object_get_int(cli_member(cli_member(j, "verify_result"), "code")), X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_str_eq(cli_member_str(cli_member(j, "posh"), "status"), "rejected");
    cr_expect_str_eq(cli_member_str(cli_member(cli_member(j, "posh"), "error"), "name"), "POSH_ERR_NO_MATCH");
    cr_expect_str_eq(cli_member_str(cli_member(j, "peer"), "sha-256"), fp);
    json_object_put(j);
    free(fp);
    cli_run_free(&r);
}

Test(cli_verify, connection_refused_is_exit_2)
{
    int port = ts_free_port();
    char addr[32];
    cr_assert_gt(port, 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cli_run r = POSH("verify", FOO, addr);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "Connection refused") != NULL, "%s", r.err);
    cr_expect_eq(r.out[0], '\0', "%s", r.out);
    cli_run_free(&r);

    /* The bracketed IPv6 form parses; nothing listens on ::1 (or there is no IPv6 at all). */
    snprintf(addr, sizeof(addr), "[::1]:%d", port);
    r = POSH("verify", FOO, addr);
    expect_code(r, 2);
    cr_expect(cli_starts_with(r.err, "posh verify: " FOO " [::1]:"), "%s", r.err);
    cr_expect(strstr(r.err, "cannot connect to ::1 port") != NULL, "%s", r.err);
    cli_run_free(&r);

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    r = POSH("verify", "--json", FOO, addr);
    expect_code(r, 2);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "result"), "error");
    cr_expect(strstr(cli_member_str(j, "error"), "Connection refused") != NULL);
    cr_expect_null(cli_member(j, "verify_result"));
    cr_expect_null(cli_member(j, "peer"));
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_verify, host_name_resolved)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    cli_serve(&server, f.svc);
    char addr[48];
    snprintf(addr, sizeof(addr), "localhost:%d", ts_tls_port(server));
    cli_run r = POSH("verify", "--cafile", f.ca_file, FOO, addr);
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: "), "%s", r.out);
    cli_run_free(&r);
}

/* A listening socket nobody accepts on: the kernel completes the TCP handshake, then nothing is ever said. */
static int silent_listener(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(fd, 8), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

Test(cli_verify, silent_peer_times_out)
{
    int port, fd = silent_listener(&port);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cli_run r = POSH("verify", "--timeout", "1", FOO, addr);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "TLS handshake: timed out") != NULL, "%s", r.err);
    cr_expect_lt(r.ms, 10000, "bounded by --timeout (%ld ms)", r.ms);
    cli_run_free(&r);

    r = POSH("verify", "--timeout", "1", "--starttls", "smtp", FOO, addr);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "timed out waiting for the SMTP greeting") != NULL, "%s", r.err);
    cr_expect_lt(r.ms, 10000, "bounded by --timeout (%ld ms)", r.ms);
    cli_run_free(&r);
    close(fd);
}

Test(cli_verify, handshake_failure_that_is_not_verification_is_exit_2)
{
    /* A peer that answers the ClientHello with plaintext: no verification ever happened. */
    int port, lfd = silent_listener(&port), cfd;
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char buf[512];
        if ((cfd = accept(lfd, NULL, NULL)) >= 0) {
            if (read(cfd, buf, sizeof(buf)) > 0 && write(cfd, "HTTP/1.0 400 Bad Request\r\n\r\n", 28) < 0)
                _exit(1);
            close(cfd);
        }
        _exit(0);
    }
    cli_run r = POSH("verify", "--timeout", "10", FOO, addr);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "TLS handshake:") != NULL, "%s", r.err);
    cli_run_free(&r);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(lfd);
}

/* ======================================================================================================== */
/* STARTTLS: a plaintext-then-TLS server in a thread                                                         */

typedef enum st_mode {
    ST_XMPP,
    ST_SMTP,
    ST_IMAP,
    ST_XMPP_INJECT,        /* bytes after <proceed/> */
    ST_XMPP_NO_TLS,        /* features without <starttls/> */
    ST_SMTP_NO_STARTTLS,   /* EHLO reply without STARTTLS */
    ST_SMTP_INJECT,        /* "220 go ahead\r\n" followed by more */
    ST_IMAP_REFUSE,        /* a1 NO */
    ST_XMPP_AFTER_FEATURES, /* a <proceed/> sent with the features, ahead of our <starttls/> */
    ST_XMPP_PROCEED_JUNK,  /* <proceed ...></proceed> with bytes and an element after it */
    ST_SMTP_PIPELINED,     /* "220 go ahead" appended to the EHLO reply, ahead of our STARTTLS */
    ST_IMAP_PIPELINED      /* "a1 OK" appended to the greeting, ahead of our a1 STARTTLS */
} st_mode;

typedef struct st_server {
    st_mode mode;
    int lfd, port, stop[2];
    SSL_CTX *ctx;
    pthread_t thread;
    char seen[8192]; /* what the client sent before TLS */
    size_t seen_len;
    int tls_done;
    int joined;
} st_server;

static int st_send(int fd, const char *s)
{
    return send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s) ? 0 : -1;
}

/* Read until a appears (from offset mark) and then b after it. 0 ok, -1 on EOF/timeout/overflow. */
static int st_read_until(st_server *s, int fd, size_t mark, const char *a, const char *b)
{
    for (;;) {
        const char *pa = strstr(s->seen + mark, a);
        if (pa != NULL && (b == NULL || strstr(pa + strlen(a), b) != NULL))
            return 0;
        if (s->seen_len + 1 >= sizeof(s->seen))
            return -1;
        ssize_t n = recv(fd, s->seen + s->seen_len, sizeof(s->seen) - 1 - s->seen_len, 0);
        if (n <= 0)
            return -1;
        s->seen_len += (size_t)n;
        s->seen[s->seen_len] = '\0';
    }
}

static int st_dialogue(st_server *s, int fd)
{
    size_t mark;
    switch (s->mode) {
    case ST_XMPP:
    case ST_XMPP_INJECT:
    case ST_XMPP_NO_TLS:
    case ST_XMPP_AFTER_FEATURES:
    case ST_XMPP_PROCEED_JUNK:
        if (st_read_until(s, fd, 0, "<stream:stream", ">") != 0)
            return -1;
        if (st_send(fd, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                        "xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='" FOO "' version='1.0'>") != 0)
            return -1;
        if (s->mode == ST_XMPP_NO_TLS) {
            st_send(fd, "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>");
            return -1;
        }
        if (s->mode == ST_XMPP_AFTER_FEATURES) {
            /* One write, so that the client finds the go-ahead beside the features, as a man in the middle
             * would place it; two writes could let the client send <starttls/> in between. */
            st_send(fd, "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                        "</stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            return -1;
        }
        if (st_send(fd, "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                        "</stream:features>") != 0)
            return -1;
        mark = s->seen_len;
        if (st_read_until(s, fd, mark, "<starttls", "/>") != 0)
            return -1;
        if (s->mode == ST_XMPP_PROCEED_JUNK) {
            st_send(fd, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'></proceed>JUNK<x/>");
            return -1;
        }
        return st_send(fd, s->mode == ST_XMPP_INJECT
                               ? "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message>injected</message>"
                               : "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    case ST_SMTP:
    case ST_SMTP_NO_STARTTLS:
    case ST_SMTP_INJECT:
    case ST_SMTP_PIPELINED:
        if (st_send(fd, "220-mx.hosting.example.net ESMTP\r\n220 ready\r\n") != 0 ||
            st_read_until(s, fd, 0, "EHLO ", "\r\n") != 0)
            return -1;
        if (s->mode == ST_SMTP_PIPELINED) {
            st_send(fd, "250-mx.hosting.example.net\r\n250 STARTTLS\r\n220 2.0.0 go ahead\r\n");
            return -1;
        }
        if (st_send(fd, s->mode == ST_SMTP_NO_STARTTLS
                            ? "250-mx.hosting.example.net\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                            : "250-mx.hosting.example.net\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n") != 0)
            return -1;
        mark = s->seen_len;
        if (s->mode == ST_SMTP_NO_STARTTLS)
            return -1; /* the client leaves */
        if (st_read_until(s, fd, mark, "STARTTLS\r\n", NULL) != 0)
            return -1;
        return st_send(fd, s->mode == ST_SMTP_INJECT ? "220 2.0.0 go ahead\r\n250 injected\r\n"
                                                     : "220 2.0.0 go ahead\r\n");
    case ST_IMAP_PIPELINED:
        st_send(fd, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\na1 OK begin TLS now\r\n");
        return -1;
    case ST_IMAP:
    case ST_IMAP_REFUSE:
        if (st_send(fd, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n") != 0 ||
            st_read_until(s, fd, 0, "a1 STARTTLS\r\n", NULL) != 0)
            return -1;
        return st_send(fd, s->mode == ST_IMAP_REFUSE ? "a1 NO [ALERT] not today\r\n"
                                                     : "* OK still here\r\na1 OK begin TLS now\r\n");
    }
    return -1;
}

static void *st_main(void *arg)
{
    st_server *s = arg;
    struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};
    struct timeval tv = {.tv_sec = 10};
    sigset_t set;
    int fd;

    /* The client may be gone when we write (close_notify): EPIPE in this thread, not SIGPIPE for the test. */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (poll(p, 2, 60000) <= 0 || !(p[0].revents & POLLIN))
        return NULL;
    if ((fd = accept(s->lfd, NULL, NULL)) < 0)
        return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (st_dialogue(s, fd) == 0) {
        SSL *ssl = SSL_new(s->ctx);
        if (ssl != NULL && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
            s->tls_done = 1;
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
    } else {
        /* Wait for the client to give up and close, so that it sees our words and not a reset. */
        char buf[256];
        while (recv(fd, buf, sizeof(buf), 0) > 0)
            ;
    }
    close(fd);
    return NULL;
}

static st_server *st_start(st_mode mode, ts_cert *cert)
{
    st_server *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    cr_assert_not_null(s);
    s->mode = mode;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(s->lfd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(s->lfd, 8), 0);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
    cr_assert_eq(pipe2(s->stop, O_CLOEXEC), 0);
    s->ctx = SSL_CTX_new(TLS_server_method());
    cr_assert_not_null(s->ctx);
    cr_assert_eq(SSL_CTX_use_certificate(s->ctx, ts_cert_x509(cert)), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey(s->ctx, ts_cert_key(cert)), 1);
    cr_assert_eq(pthread_create(&s->thread, NULL, st_main, s), 0);
    return s;
}

/* Wait for the server thread: it ends by itself once its one connection is over, or at once if the client
 * never came. Then s->seen and s->tls_done may be read. */
static void st_finish(st_server *s)
{
    if (s->joined)
        return;
    if (write(s->stop[1], "x", 1) != 1)
        cr_log_warn("stop pipe: %s", strerror(errno));
    pthread_join(s->thread, NULL);
    s->joined = 1;
}

static void st_stop(st_server *s)
{
    st_finish(s);
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    SSL_CTX_free(s->ctx);
    free(s);
}

static cli_run st_verify(st_server *s, const char *proto, const char *service)
{
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", s->port);
    return POSH("verify", "--timeout", "20", "--cafile", f.ca_file, "--starttls", proto, "-s", service, FOO, addr);
}

TestSuite(cli_starttls, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_starttls, xmpp_server)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    st_server *s = st_start(ST_XMPP, f.svc);
    cli_run r = st_verify(s, "xmpp", "xmpp-server");
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    st_finish(s);
    cr_expect(strstr(s->seen, "xmlns='jabber:server'") != NULL, "server namespace for xmpp-server: %s", s->seen);
    st_stop(s);
    cli_run_free(&r);
}

Test(cli_starttls, xmpp_stream_header)
{
    fx_put_free(&f, FOO, "/.well-known/posh/xmpp-client.json", fx_doc1(f.svc, 3600));
    st_server *s = st_start(ST_XMPP, f.svc);
    cli_run r = st_verify(s, "xmpp", "xmpp-client");
    expect_code(r, 0);
    st_finish(s);
    cr_expect(strstr(s->seen, "to='" FOO "'") != NULL, "the stream is addressed to DOMAIN: %s", s->seen);
    cr_expect(strstr(s->seen, "xmlns='jabber:client'") != NULL, "client namespace for xmpp-client: %s", s->seen);
    cr_expect(strstr(s->seen, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>") != NULL, "%s", s->seen);
    cr_expect(s->tls_done, "the TLS handshake followed");
    st_stop(s);
    cli_run_free(&r);
}

Test(cli_starttls, smtp)
{
    fx_put_free(&f, FOO, "/.well-known/posh/smtp.json", fx_doc1(f.svc, 3600));
    st_server *s = st_start(ST_SMTP, f.svc);
    cli_run r = st_verify(s, "smtp", "smtp");
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    st_stop(s);
    cli_run_free(&r);
}

Test(cli_starttls, smtp_ehlo_and_rejection)
{
    fx_put_free(&f, FOO, "/.well-known/posh/submission.json", fx_doc1(f.other, 3600));
    st_server *s = st_start(ST_SMTP, f.svc);
    cli_run r = st_verify(s, "smtp", "submission");
    expect_code(r, 1);
    cr_expect(cli_starts_with(r.out, "rejected: hostname mismatch"), "%s", r.out);
    st_finish(s);
    cr_expect(strstr(s->seen, "EHLO [127.0.0.1]\r\nSTARTTLS\r\n") != NULL, "EHLO with our address: %s", s->seen);
    st_stop(s);
    cli_run_free(&r);
}

Test(cli_starttls, imap)
{
    fx_put_free(&f, FOO, "/.well-known/posh/imap.json", fx_doc1(f.svc, 3600));
    st_server *s = st_start(ST_IMAP, f.svc);
    cli_run r = st_verify(s, "imap", "imap");
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    st_stop(s);
    cli_run_free(&r);
}

Test(cli_starttls, json_names_the_protocol)
{
    fx_put_free(&f, FOO, "/.well-known/posh/imap.json", fx_doc1(f.svc, 3600));
    st_server *s = st_start(ST_IMAP, f.svc);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", s->port);
    cli_run r = POSH("verify", "--json", "--cafile", f.ca_file, "--starttls", "imap", "-s", "imap", FOO, addr);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "starttls"), "imap");
    cr_expect_str_eq(cli_member_str(j, "result"), "posh");
    json_object_put(j);
    st_stop(s);
    cli_run_free(&r);
}

/* Each misbehaving server: exit 2, and the reason on stderr. */
Test(cli_starttls, failures_are_connection_errors)
{
    static const struct {
        st_mode mode;
        const char *proto, *err;
    } cases[] = {
        {ST_XMPP_INJECT, "xmpp", "unexpected bytes after its STARTTLS go-ahead"},
        {ST_XMPP_NO_TLS, "xmpp", "does not offer STARTTLS"},
        {ST_SMTP_NO_STARTTLS, "smtp", "does not offer STARTTLS"},
        {ST_SMTP_INJECT, "smtp", "unexpected bytes after its STARTTLS go-ahead"},
        {ST_IMAP_REFUSE, "imap", "STARTTLS refused: 'a1 NO [ALERT] not today'"},
        {ST_SMTP, "imap", "IMAP greeting is not '* OK'"},
        {ST_IMAP, "smtp", "not an SMTP reply line"},
        {ST_XMPP_AFTER_FEATURES, "xmpp", "bytes after its stream features"},
        {ST_XMPP_PROCEED_JUNK, "xmpp", "unexpected bytes after its STARTTLS go-ahead"},
        {ST_SMTP_PIPELINED, "smtp", "bytes ahead of our STARTTLS"},
        {ST_IMAP_PIPELINED, "imap", "bytes ahead of our STARTTLS"},
    };
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 3600));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        st_server *s = st_start(cases[i].mode, f.svc);
        cli_run r = st_verify(s, cases[i].proto, "xmpp-server");
        cr_expect_eq(r.code, 2, "case %zu: exit %d\nstdout %s\nstderr %s", i, r.code, r.out, r.err);
        cr_expect(strstr(r.err, cases[i].err) != NULL, "case %zu: stderr should say '%s': %s", i, cases[i].err,
                  r.err);
        cr_expect(strstr(r.err, "STARTTLS (") != NULL, "case %zu: %s", i, r.err);
        st_stop(s);
        cli_run_free(&r);
    }
}

/* ======================================================================================================== */
/* posh generate                                                                                            */

TestSuite(cli_generate, .init = setup, .fini = teardown, .timeout = 120);

Test(cli_generate, fingerprints_document)
{
    char *fp = cli_fingerprint(f.svc, "sha-256");
    cli_run r = POSH("generate", cli_cert_file(f.svc, f.dir, "svc"));
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *fps = cli_member(j, "fingerprints"), *d;
    cr_assert_eq(json_object_array_length(fps), 1);
    d = json_object_array_get_idx(fps, 0);
    cr_expect_str_eq(cli_member_str(d, "sha-256"), fp);
    cr_expect_eq(json_object_object_length(d), 1, "sha-256 only without --sha1");
    cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 86400, "the documented default");
    cr_expect_eq(json_object_object_length(j), 2);
    json_object_put(j);
    free(fp);
    cli_run_free(&r);
}

Test(cli_generate, several_certificates_with_sha1)
{
    char *a256 = cli_fingerprint(f.svc, "sha-256"), *a1 = cli_fingerprint(f.svc, "sha-1");
    char *b256 = cli_fingerprint(f.other, "sha-256"), *b1 = cli_fingerprint(f.other, "sha-1");
    cli_run r = POSH("generate", "--sha1", "--expires", "600", cli_cert_file(f.svc, f.dir, "svc"),
                     cli_cert_file(f.other, f.dir, "other"));
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out), *fps = cli_member(j, "fingerprints");
    cr_assert_eq(json_object_array_length(fps), 2);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-256"), a256);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-1"), a1);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 1), "sha-256"), b256);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 1), "sha-1"), b1);
    cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 600);
    json_object_put(j);
    free(a256);
    free(a1);
    free(b256);
    free(b1);
    cli_run_free(&r);

    r = POSH("generate", "--expires", "2147483647", cli_cert_file(f.svc, f.dir, "svc"));
    expect_code(r, 0);
    j = cli_parse_json(r.out);
    cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 2147483647L);
    json_object_put(j);
    cli_run_free(&r);
}

Test(cli_generate, pem_variants_and_der)
{
    char *fp = cli_fingerprint(f.svc, "sha-256"), path[3][600], *both = NULL;
    size_t der_len;
    const unsigned char *der = ts_cert_der(f.svc, &der_len);

    /* Key first, then the certificate; a chain file (leaf, then the CA); DER. */
    snprintf(path[0], sizeof(path[0]), "%s/key-then-cert.pem", f.dir);
    cr_assert_geq(asprintf(&both, "%s%s", ts_cert_key_pem(f.svc), ts_cert_pem(f.svc)), 0);
    cr_assert_eq(ts_write_file(path[0], both, strlen(both)), 0);
    free(both);
    snprintf(path[1], sizeof(path[1]), "%s/chain.pem", f.dir);
    cr_assert_geq(asprintf(&both, "%s%s", ts_cert_pem(f.svc), ts_ca_pem(f.ca)), 0);
    cr_assert_eq(ts_write_file(path[1], both, strlen(both)), 0);
    free(both);
    snprintf(path[2], sizeof(path[2]), "%s/svc.der", f.dir);
    cr_assert_eq(ts_write_file(path[2], der, der_len), 0);

    for (int i = 0; i < 3; i++) {
        cli_run r = POSH("generate", path[i]);
        expect_code(r, 0);
        json_object *j = cli_parse_json(r.out), *fps = cli_member(j, "fingerprints");
        cr_expect_eq(json_object_array_length(fps), 1, "%s: one descriptor per file", path[i]);
        cr_expect_str_eq(cli_member_str(json_object_array_get_idx(fps, 0), "sha-256"), fp, "%s", path[i]);
        json_object_put(j);
        cli_run_free(&r);
    }
    free(fp);
}

Test(cli_generate, not_a_certificate_is_exit_1)
{
    char key[600], garbage[600];
    snprintf(key, sizeof(key), "%s/only.key", f.dir);
    cr_assert_eq(ts_write_file(key, ts_cert_key_pem(f.svc), strlen(ts_cert_key_pem(f.svc))), 0);
    snprintf(garbage, sizeof(garbage), "%s/garbage.pem", f.dir);
    cr_assert_eq(ts_write_file(garbage, "hello\n", 6), 0);

    const char *files[] = {key, garbage, f.dir, "/dev/zero"};
    const char *why[] = {"no certificate found", "no certificate found", "not a regular file", "not a regular file"};
    for (int i = 0; i < 4; i++) {
        cli_run r = POSH("generate", files[i]);
        expect_code(r, 1);
        cr_expect(strstr(r.err, why[i]) != NULL, "%s: %s", files[i], r.err);
        cr_expect_eq(r.out[0], '\0', "nothing printed: %s", r.out);
        cli_run_free(&r);
    }
    cli_run r = POSH("generate", cli_cert_file(f.svc, f.dir, "svc"), "/nonexistent/x.pem");
    expect_code(r, 1);
    cr_expect(strstr(r.err, "/nonexistent/x.pem: cannot open: No such file or directory") != NULL, "%s", r.err);
    cr_expect_eq(r.out[0], '\0', "nothing printed when any file fails: %s", r.out);
    cli_run_free(&r);
}

/* A FIFO is refused at once: opening it must not wait for a writer. */
Test(cli_generate, fifo_is_refused_without_waiting)
{
    char fifo[600];
    snprintf(fifo, sizeof(fifo), "%s/cert.fifo", f.dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
    cli_run r = POSH("generate", fifo);
    expect_code(r, 1);
    cr_expect(strstr(r.err, "not a regular file") != NULL, "%s", r.err);
    cli_run_free(&r);
}

Test(cli_generate, expired_certificate_is_printed_with_a_warning)
{
    ts_cert_opts o = {0};
    o.dns[0] = "old.hosting.example.net";
    o.not_before_days = -30;
    o.not_after_days = -1;
    ts_cert *old = ts_cert_issue(f.ca, &o);
    cr_assert_not_null(old);
    char *fp = cli_fingerprint(old, "sha-256");
    cli_run r = POSH("generate", cli_cert_file(old, f.dir, "old"));
    expect_code(r, 0);
    cr_expect(strstr(r.err, "warning:") != NULL && strstr(r.err, "expired") != NULL, "%s", r.err);
    cr_expect(strstr(r.out, fp) != NULL, "%s", r.out);
    cli_run_free(&r);
    free(fp);
    ts_cert_free(old);
}

Test(cli_generate, reference_document)
{
    cli_run r = POSH("generate", "--url", "https://" HOSTING "/posh/xmpp.json", "--expires", "300");
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out);
    cr_expect_str_eq(cli_member_str(j, "url"), "https://" HOSTING "/posh/xmpp.json");
    cr_expect_eq(json_object_get_int64(cli_member(j, "expires")), 300);
    cr_expect_eq(json_object_object_length(j), 2);
    cr_expect(strstr(r.out, "\\/") == NULL, "slashes are not escaped: %s", r.out);
    json_object_put(j);
    cli_run_free(&r);
}

/* What generate prints, published with nginx, is what lookup and a real handshake accept. */
Test(cli_generate, round_trip_through_nginx_lookup_and_handshake)
{
    char *fp = cli_fingerprint(f.svc, "sha-256");
    cli_run g = POSH("generate", "--sha1", "--expires", "3600", cli_cert_file(f.svc, f.dir, "svc"));
    expect_code(g, 0);
    fx_put(&f, HOSTING, "/posh/xmpp.json", g.out);
    cli_run_free(&g);
    g = POSH("generate", "--url", "https://" HOSTING "/posh/xmpp.json", "--expires", "1800");
    expect_code(g, 0);
    fx_put(&f, FOO, RFC7711_PATH, g.out);
    cli_run_free(&g);

    cli_run r = POSH("lookup", FOO);
    expect_code(r, 0);
    json_object *j = cli_parse_json(r.out);
    cr_expect(json_object_get_boolean(cli_member(j, "followed_reference")));
    cr_expect_eq(json_object_get_int64(cli_member(j, "ttl")), 1800);
    cr_expect_str_eq(cli_member_str(json_object_array_get_idx(cli_member(j, "fingerprints"), 0), "sha-256"), fp);
    json_object_put(j);
    cli_run_free(&r);

    /* The library directly, too. */
    posh_client *client = fx_client(&f);
    posh_result *res = NULL;
    size_t der_len;
    const unsigned char *der = ts_cert_der(f.svc, &der_len);
    int match = 0, index = -1;
    cr_expect_eq(posh_lookup(client, FOO, "xmpp-server", &res), POSH_OK, "%s", posh_result_message(res));
    cr_expect_eq(posh_match_der(client, res, der, der_len, &match, &index), POSH_OK);
    cr_expect(match);
    cr_expect_eq(index, 0);
    posh_result_free(res);
    posh_client_free(client);

    cli_serve(&server, f.svc);
    r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 0);
    cr_expect(cli_starts_with(r.out, "posh: " FOO), "%s", r.out);
    cr_expect(strstr(r.out, "https://" HOSTING "/posh/xmpp.json") != NULL, "%s", r.out);
    cli_run_free(&r);

    /* Another certificate, same CA: not what was generated. */
    cli_serve(&server, f.other);
    r = POSH("verify", "--cafile", f.ca_file, FOO, cli_server_addr(server));
    expect_code(r, 1);
    cr_expect(cli_starts_with(r.out, "rejected: "), "%s", r.out);
    cli_run_free(&r);
    free(fp);
}

/* ---- posh cache: list and flush a persistent cache directory ---- */

static char cache_base[64], cache_dir[128];

static void cache_setup(void)
{
    setup();
    snprintf(cache_base, sizeof(cache_base), "/tmp/posh-cli-cache-XXXXXX");
    cr_assert_not_null(mkdtemp(cache_base));
    snprintf(cache_dir, sizeof(cache_dir), "%s/c", cache_base);
    cr_assert_eq(mkdir(cache_dir, 0700), 0);
    unsetenv("POSH_CACHE_DIR");
}

static void cache_teardown(void)
{
    char cmd[200];
    unsetenv("POSH_CACHE_DIR");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cache_base);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cache_base);
    teardown();
}

TestSuite(cli_cache, .init = cache_setup, .fini = cache_teardown, .timeout = 120);

Test(cli_cache, usage_errors)
{
    cli_run r = POSH("cache");
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
    r = POSH("cache", "bogus", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
    r = POSH("cache", "list");
    cr_expect_eq(r.code, 2, "no --dir and no POSH_CACHE_DIR");
    cr_expect_not_null(strstr(r.err, "POSH_CACHE_DIR"), "%s", r.err);
    cli_run_free(&r);
    r = POSH("cache", "flush", "--json", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
    r = POSH("cache", "flush", "--dir", cache_dir, "127.0.0.1");
    cr_expect_eq(r.code, 2, "not a domain");
    cli_run_free(&r);
    r = POSH("cache", "list", "extra", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
    r = POSH("cache", "--help");
    cr_expect_eq(r.code, 0);
    cr_expect_not_null(strstr(r.out, "posh cache list"));
    cli_run_free(&r);
}

static json_object *cache_list_json(int expect_code)
{
    cli_run r = POSH("cache", "list", "--json", "--dir", cache_dir);
    json_object *o;
    cr_assert_eq(r.code, expect_code, "stderr: %s", r.err);
    o = json_tokener_parse(r.out);
    cr_assert_not_null(o, "not JSON: %s", r.out);
    cli_run_free(&r);
    return o;
}

static const char *entry_field(json_object *o, size_t i, const char *name)
{
    json_object *entries, *v;
    cr_assert(json_object_object_get_ex(o, "entries", &entries));
    v = json_object_object_get(json_object_array_get_idx(entries, i), name);
    return v != NULL ? json_object_get_string(v) : NULL;
}

Test(cli_cache, lookups_fill_it_list_shows_it_flush_empties_it)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_ref("https://" FOO "/posh/t.json", 600));
    fx_put_free(&f, FOO, "/posh/t.json", fx_doc1(f.svc, 600));
    setenv("POSH_CACHE_DIR", cache_dir, 1);
    cli_run r = POSH("lookup", FOO);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cli_run_free(&r);
    r = POSH("lookup", HOSTING);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cli_run_free(&r);
    r = POSH("lookup", FOO);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cli_run_free(&r);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "a new process started warm from the directory");

    json_object *o = cache_list_json(0);
    json_object *entries;
    cr_assert(json_object_object_get_ex(o, "entries", &entries));
    cr_assert_eq(json_object_array_length(entries), 2);
    cr_expect_str_eq(entry_field(o, 0, "domain"), FOO);
    cr_expect_str_eq(entry_field(o, 0, "service"), "_xmpp-server._tcp");
    cr_expect_str_eq(entry_field(o, 0, "source_url"), "https://" FOO RFC7711_PATH);
    cr_expect_str_eq(entry_field(o, 0, "state"), "fresh");
    cr_expect_null(entry_field(o, 0, "target_url"));
    cr_expect_str_eq(entry_field(o, 1, "domain"), HOSTING);
    cr_expect_str_eq(entry_field(o, 1, "target_url"), "https://" FOO "/posh/t.json");
    long long fetched = atoll(entry_field(o, 0, "fetched")), expires = atoll(entry_field(o, 0, "expires"));
    cr_expect_eq(expires - fetched, 300);
    json_object_put(o);

    r = POSH("cache", "list");
    cr_expect_eq(r.code, 0);
    cr_expect_not_null(strstr(r.out, "DOMAIN"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, FOO), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "fresh"), "%s", r.out);
    cli_run_free(&r);

    r = POSH("cache", "flush", FOO);
    cr_expect_eq(r.code, 0, "%s", r.err);
    cli_run_free(&r);
    r = POSH("cache", "flush", "FOO.example.com.");
    cr_expect_eq(r.code, 1, "nothing left for that domain (normalised)");
    cli_run_free(&r);
    o = cache_list_json(0);
    cr_assert(json_object_object_get_ex(o, "entries", &entries));
    cr_expect_eq(json_object_array_length(entries), 1);
    cr_expect_str_eq(entry_field(o, 0, "domain"), HOSTING);
    json_object_put(o);
    r = POSH("cache", "flush");
    cr_expect_eq(r.code, 0);
    cli_run_free(&r);
    r = POSH("cache", "list");
    cr_expect_eq(r.code, 1, "empty");
    cli_run_free(&r);
}

Test(cli_cache, invalid_entries_are_listed_as_invalid)
{
    char path[256];
    FILE *fp;
    snprintf(path, sizeof(path), "%s/%064d.posh", cache_dir, 0);
    cr_assert_not_null(fp = fopen(path, "w"));
    fputs("POSHSTOR but not really", fp);
    fclose(fp);
    json_object *o = cache_list_json(1);
    cr_expect_str_eq(entry_field(o, 0, "state"), "invalid");
    cr_expect_not_null(entry_field(o, 0, "error"));
    json_object_put(o);
    cli_run r = POSH("cache", "flush", "--dir", cache_dir);
    cr_expect_eq(r.code, 0, "flush removes invalid entries too");
    cli_run_free(&r);
    cr_expect_neq(access(path, F_OK), 0);
}

Test(cli_cache, unsafe_directories_refused)
{
    char link[200];
    cli_run r;
    cr_assert_eq(chmod(cache_dir, 0777), 0);
    r = POSH("cache", "list", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cr_expect_not_null(strstr(r.err, "refusing the cache directory"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "writable by others"), "%s", r.err);
    cli_run_free(&r);
    r = POSH("cache", "flush", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
    cr_assert_eq(chmod(cache_dir, 0700), 0);
    cr_assert_eq(chown(cache_dir, 65534, 65534), 0);
    r = POSH("cache", "list", "--dir", cache_dir);
    cr_expect_eq(r.code, 2);
    cr_expect_not_null(strstr(r.err, "owned by uid 65534"), "%s", r.err);
    cli_run_free(&r);
    cr_assert_eq(chown(cache_dir, 0, 0), 0);
    snprintf(link, sizeof(link), "%s/link", cache_base);
    cr_assert_eq(symlink(cache_dir, link), 0);
    r = POSH("cache", "list", "--dir", link);
    cr_expect_eq(r.code, 2);
    cr_expect_not_null(strstr(r.err, "symbolic link"), "%s", r.err);
    cli_run_free(&r);
    snprintf(link, sizeof(link), "%s/missing", cache_base);
    r = POSH("cache", "list", "--dir", link);
    cr_expect_eq(r.code, 2);
    cli_run_free(&r);
}
