/*
 * test_config.c - configuration setters and the POSH_* environment: every invalid value is an error naming the
 * variable, and an invalid environment leaves the configuration unchanged. A privileged process (here: file
 * capabilities, run by an unprivileged user) ignores the POSH_* environment, with one warning.
 */
#include "client_internal.h"
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const all_vars[] = {
    "POSH_CA_FILE", "POSH_CA_PATH", "POSH_CONNECT_TO", "POSH_TIMEOUT_MS", "POSH_MAX_REDIRECTS",
    "POSH_MAX_BYTES", "POSH_MAX_TTL", "POSH_NEGATIVE_TTL", "POSH_CACHE_SIZE", "POSH_MODE", "POSH_NO_SHA1",
    "POSH_LAYOUT", "POSH_SERVICE", "POSH_LOG", "POSH_LOG_LEVEL", "POSH_ASYNC_LOOKUPS", "POSH_ASYNC_WAITING",
    "POSH_ASYNC_TRANSFERS",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(all_vars) / sizeof(all_vars[0]); i++)
        unsetenv(all_vars[i]);
}

TestSuite(config, .init = clear_env);

Test(config, defaults)
{
    posh_config *cfg = posh_config_new();
    cr_assert_not_null(cfg);
    cr_expect_eq(cfg->timeout_ms, 5000);
    cr_expect_eq(cfg->max_redirects, 10);
    cr_expect_eq(cfg->max_bytes, 65536);
    cr_expect_eq(cfg->max_ttl, 86400);
    cr_expect_eq(cfg->mode, POSH_MODE_NAME);
    cr_expect_eq(cfg->no_sha1, 0);
    cr_expect_eq(cfg->layouts, POSH_LAYOUT_ALL);
    cr_expect_eq(cfg->async_lookups, 1024);
    cr_expect_eq(cfg->async_waiting, 10000);
    cr_expect_null(cfg->ca_file);
    cr_expect_null(cfg->connect_to);
    cr_expect_eq(posh_config_load_env(cfg), POSH_OK, "an empty environment is valid");
    posh_config_free(cfg);
}

struct env_case {
    const char *var, *value;
    posh_err want;
};

static const struct env_case env_cases[] = {
    {"POSH_TIMEOUT_MS", "2500", POSH_OK},
    {"POSH_TIMEOUT_MS", "0", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", "600001", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", "-5", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", "5s", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", " 5", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", "", POSH_ERR_CONFIG},
    {"POSH_TIMEOUT_MS", "99999999999999999999999", POSH_ERR_CONFIG},
    {"POSH_MAX_REDIRECTS", "0", POSH_OK},
    {"POSH_MAX_REDIRECTS", "10", POSH_OK},
    {"POSH_MAX_REDIRECTS", "11", POSH_ERR_CONFIG},
    {"POSH_MAX_BYTES", "64", POSH_OK},
    {"POSH_MAX_BYTES", "63", POSH_ERR_CONFIG},
    {"POSH_MAX_BYTES", "1048577", POSH_ERR_CONFIG},
    {"POSH_MAX_TTL", "1", POSH_OK},
    {"POSH_MAX_TTL", "0", POSH_ERR_CONFIG},
    {"POSH_NEGATIVE_TTL", "0", POSH_OK},
    {"POSH_NEGATIVE_TTL", "86401", POSH_ERR_CONFIG},
    {"POSH_CACHE_SIZE", "0", POSH_ERR_CONFIG},
    {"POSH_CACHE_SIZE", "1", POSH_OK},
    {"POSH_ASYNC_LOOKUPS", "1", POSH_OK},
    {"POSH_ASYNC_LOOKUPS", "100000", POSH_OK},
    {"POSH_ASYNC_LOOKUPS", "0", POSH_ERR_CONFIG},
    {"POSH_ASYNC_LOOKUPS", "100001", POSH_ERR_CONFIG},
    {"POSH_ASYNC_WAITING", "1", POSH_OK},
    {"POSH_ASYNC_WAITING", "1000000", POSH_OK},
    {"POSH_ASYNC_WAITING", "0", POSH_ERR_CONFIG},
    {"POSH_ASYNC_WAITING", "1000001", POSH_ERR_CONFIG},
    {"POSH_ASYNC_TRANSFERS", "1", POSH_OK},
    {"POSH_ASYNC_TRANSFERS", "10000", POSH_OK},
    {"POSH_ASYNC_TRANSFERS", "0", POSH_ERR_CONFIG},
    {"POSH_ASYNC_TRANSFERS", "10001", POSH_ERR_CONFIG},
    {"POSH_ASYNC_TRANSFERS", "-3", POSH_ERR_CONFIG},
    {"POSH_MODE", "name", POSH_OK},
    {"POSH_MODE", "pin", POSH_OK},
    {"POSH_MODE", "PIN", POSH_ERR_CONFIG},
    {"POSH_MODE", "dane", POSH_ERR_CONFIG},
    {"POSH_NO_SHA1", "1", POSH_OK},
    {"POSH_NO_SHA1", "0", POSH_OK},
    {"POSH_NO_SHA1", "yes", POSH_ERR_CONFIG},
    {"POSH_LAYOUT", "rfc7711", POSH_OK},
    {"POSH_LAYOUT", "draft02", POSH_OK},
    {"POSH_LAYOUT", "rfc7711,draft02", POSH_OK},
    {"POSH_LAYOUT", "draft02,rfc7711", POSH_OK},
    {"POSH_LAYOUT", "rfc7711,", POSH_ERR_CONFIG},
    {"POSH_LAYOUT", "", POSH_ERR_CONFIG},
    {"POSH_LAYOUT", "rfc6125", POSH_ERR_CONFIG},
    {"POSH_CONNECT_TO", "foo.example.com:443:127.0.0.1:8443", POSH_OK},
    {"POSH_CONNECT_TO", "::127.0.0.1:8443,a.example:443:127.0.0.2:", POSH_OK},
    {"POSH_CONNECT_TO", "foo.example.com:443", POSH_ERR_CONFIG},
    {"POSH_CONNECT_TO", "a:1:b:2,,c:1:d:2", POSH_ERR_CONFIG},
    {"POSH_CONNECT_TO", "a b:1:c:2", POSH_ERR_CONFIG},
    {"POSH_CA_FILE", "/etc/ssl/certs/ca-certificates.crt", POSH_OK},
    {"POSH_CA_FILE", "", POSH_ERR_CONFIG},
    {"POSH_LOG", "off", POSH_OK},
    {"POSH_LOG", "syslog", POSH_OK},
    {"POSH_LOG", "stdout", POSH_ERR_CONFIG},
    {"POSH_LOG_LEVEL", "debug", POSH_OK},
    {"POSH_LOG_LEVEL", "verbose", POSH_ERR_CONFIG},
};

Test(config, environment_table)
{
    for (size_t i = 0; i < sizeof(env_cases) / sizeof(env_cases[0]); i++) {
        const struct env_case *c = &env_cases[i];
        posh_config *cfg = posh_config_new();
        posh_err err;
        clear_env();
        setenv(c->var, c->value, 1);
        err = posh_config_load_env(cfg);
        cr_expect_eq(err, c->want, "%s=\"%s\": got %d (%s), want %d", c->var, c->value, err,
                     posh_config_error(cfg), c->want);
        if (err != POSH_OK)
            cr_expect(strstr(posh_config_error(cfg), c->var) != NULL, "message names %s: \"%s\"", c->var,
                      posh_config_error(cfg));
        posh_config_free(cfg);
    }
}

Test(config, environment_values_applied)
{
    posh_config *cfg = posh_config_new();
    setenv("POSH_TIMEOUT_MS", "1234", 1);
    setenv("POSH_MAX_REDIRECTS", "3", 1);
    setenv("POSH_MODE", "pin", 1);
    setenv("POSH_NO_SHA1", "1", 1);
    setenv("POSH_LAYOUT", "draft02", 1);
    setenv("POSH_CA_FILE", "/tmp/ca.pem", 1);
    setenv("POSH_CONNECT_TO", "a:443:127.0.0.1:1", 1);
    setenv("POSH_ASYNC_LOOKUPS", "7", 1);
    setenv("POSH_ASYNC_WAITING", "9", 1);
    setenv("POSH_ASYNC_TRANSFERS", "11", 1);
    cr_assert_eq(posh_config_load_env(cfg), POSH_OK, "%s", posh_config_error(cfg));
    cr_expect_eq(cfg->async_transfers, 11);
    cr_expect_eq(cfg->async_lookups, 7);
    cr_expect_eq(cfg->async_waiting, 9);
    cr_expect_eq(cfg->timeout_ms, 1234);
    cr_expect_eq(cfg->max_redirects, 3);
    cr_expect_eq(cfg->mode, POSH_MODE_PIN);
    cr_expect_eq(cfg->no_sha1, 1);
    cr_expect_eq(cfg->layouts, POSH_LAYOUT_DRAFT02);
    cr_expect_str_eq(cfg->ca_file, "/tmp/ca.pem");
    cr_expect_str_eq(cfg->connect_to, "a:443:127.0.0.1:1");
    posh_config_free(cfg);
}

Test(config, invalid_environment_changes_nothing)
{
    posh_config *cfg = posh_config_new();
    setenv("POSH_TIMEOUT_MS", "1234", 1);
    setenv("POSH_MODE", "bogus", 1);
    cr_assert_eq(posh_config_load_env(cfg), POSH_ERR_CONFIG);
    cr_expect_eq(cfg->timeout_ms, 5000, "a valid variable before the invalid one must not be applied");
    cr_expect_eq(cfg->mode, POSH_MODE_NAME);
    posh_config_free(cfg);
}

Test(config, setter_ranges)
{
    posh_config *cfg = posh_config_new();
    cr_expect_eq(posh_config_set_timeout_ms(cfg, 0), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_timeout_ms(cfg, 1), POSH_OK);
    cr_expect_eq(posh_config_set_max_redirects(cfg, 11), POSH_ERR_CONFIG);
    cr_expect(strstr(posh_config_error(cfg), "redirects") != NULL);
    cr_expect_eq(posh_config_set_max_bytes(cfg, 63), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_max_ttl(cfg, 0), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_layouts(cfg, 0), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_config_set_layouts(cfg, 4), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_config_set_mode(cfg, (posh_mode)7), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_config_set_connect_to(cfg, "nonsense"), POSH_ERR_CONFIG);
    cr_expect_null(cfg->connect_to, "a rejected connect-to list is not stored");
    cr_expect_eq(posh_config_set_timeout_ms(NULL, 5), POSH_ERR_INVALID_ARGUMENT);
    /* Both bounds or neither: an invalid second one leaves the first as it was. */
    cr_expect_eq(posh_config_set_async_limits(cfg, 5, 0), POSH_ERR_CONFIG);
    cr_expect(strstr(posh_config_error(cfg), "waiting") != NULL, "%s", posh_config_error(cfg));
    cr_expect_eq(cfg->async_lookups, 1024);
    cr_expect_eq(posh_config_set_async_limits(cfg, 0, 5), POSH_ERR_CONFIG);
    cr_expect(strstr(posh_config_error(cfg), "lookups in flight") != NULL, "%s", posh_config_error(cfg));
    cr_expect_eq(cfg->async_waiting, 10000);
    cr_expect_eq(posh_config_set_async_limits(cfg, 100001, 5), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_async_limits(cfg, 2, 1000001), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_async_limits(cfg, 2, 3), POSH_OK);
    cr_expect_eq(cfg->async_lookups, 2);
    cr_expect_eq(cfg->async_waiting, 3);
    cr_expect_eq(posh_config_set_async_limits(NULL, 2, 3), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(cfg->async_transfers, 0, "the default: from the descriptor limit");
    cr_expect_eq(posh_config_set_async_transfers(cfg, 10001), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_async_transfers(cfg, -1), POSH_ERR_CONFIG);
    cr_expect_eq(posh_config_set_async_transfers(cfg, 10000), POSH_OK);
    cr_expect_eq(cfg->async_transfers, 10000);
    cr_expect_eq(posh_config_set_async_transfers(cfg, 0), POSH_OK);
    cr_expect_eq(cfg->async_transfers, 0, "0: back to the default");
    cr_expect_eq(posh_config_set_async_transfers(NULL, 3), POSH_ERR_INVALID_ARGUMENT);
    posh_config_free(cfg);
}

Test(config, default_client_refuses_invalid_environment)
{
    setenv("POSH_MAX_REDIRECTS", "99", 1);
    cr_expect_null(posh_default_client());
    cr_expect(strstr(posh_default_client_error(), "POSH_MAX_REDIRECTS") != NULL, "%s", posh_default_client_error());
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_expect_eq(SSL_CTX_set_posh_verify(ctx, "xmpp-server"), 0, "the one line fails closed on a bad environment");
    SSL_CTX_free(ctx);
}

Test(config, strerror_covers_every_code)
{
    for (int e = POSH_OK; e <= POSH_ERR_NO_DELEGATION; e++)
        cr_expect(strcmp(posh_strerror((posh_err)e), "unknown error") != 0, "code %d has a string", e);
    cr_expect_str_eq(posh_strerror((posh_err)999), "unknown error");
    cr_expect_str_eq(posh_version(), POSH_VERSION_STRING);
}

/* ---- a privileged process ignores the POSH_* environment (security review, finding 5) ---- */

/*
 * POSH_ENV_PROBE (tests/env_probe.c) prints what it made of its environment. Copies of it go into a fresh
 * directory under /tmp that nobody can traverse: one plain, one with cap_net_bind_service+ep (a setgid copy if
 * this filesystem keeps no capabilities). Run as an unprivileged user, the plain copy must honour the POSH_*
 * variables and the capable one must ignore them, keep the defaults and say so exactly once. As root, who gains
 * nothing from the capability, the capable copy honours them again.
 */
static char *priv_dir;

static void priv_cleanup(void)
{
    if (priv_dir != NULL)
        ts_rmtree(priv_dir);
    free(priv_dir);
    priv_dir = NULL;
}

typedef struct probe_run {
    int status;     /* exit status, or -1 if the program did not run to an exit */
    char *out, *err;
} probe_run;

static const char *first_executable(const char *const *paths)
{
    for (; *paths != NULL; paths++) {
        if (access(*paths, X_OK) == 0)
            return *paths;
    }
    return NULL;
}

/* Run argv (argv[0] a full path) with exactly env; stdout and stderr into files of priv_dir, then read back. */
static probe_run run_with_env(const char *const *argv, const char *const *env)
{
    probe_run r = {-1, NULL, NULL};
    char out_path[256], err_path[256];
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status;

    snprintf(out_path, sizeof(out_path), "%s/out", priv_dir);
    snprintf(err_path, sizeof(err_path), "%s/err", priv_dir);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, (char *const *)env) == 0 &&
        waitpid(pid, &status, 0) == pid && WIFEXITED(status))
        r.status = WEXITSTATUS(status);
    posix_spawn_file_actions_destroy(&fa);
    r.out = ts_read_file(out_path, NULL);
    r.err = ts_read_file(err_path, NULL);
    if (r.out == NULL)
        r.out = strdup("");
    if (r.err == NULL)
        r.err = strdup("");
    cr_assert(r.out != NULL && r.err != NULL);
    return r;
}

static void probe_free(probe_run *r)
{
    free(r->out);
    free(r->err);
}

/* The probe as uid/gid (through setpriv, without supplementary groups), or as root when uid is 0. */
static probe_run run_probe(const char *probe, uid_t uid, gid_t gid, const char *const *env)
{
    static const char *const setpriv_paths[] = {"/usr/bin/setpriv", "/bin/setpriv", NULL};
    const char *setpriv = first_executable(setpriv_paths);
    char reuid[32], regid[32];

    if (uid == 0)
        return run_with_env((const char *const[]){probe, NULL}, env);
    cr_assert_not_null(setpriv, "setpriv (util-linux) is needed to run the probe as an unprivileged user");
    snprintf(reuid, sizeof(reuid), "--reuid=%u", (unsigned)uid);
    snprintf(regid, sizeof(regid), "--regid=%u", (unsigned)gid);
    return run_with_env((const char *const[]){setpriv, reuid, regid, "--clear-groups", probe, NULL}, env);
}

static bool has_line(const char *out, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = out; (p = strstr(p, line)) != NULL; p += n) {
        if ((p == out || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    }
    return false;
}

static int count(const char *haystack, const char *needle)
{
    int n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
    size_t len;
    char *data = ts_read_file(from, &len);
    cr_assert_not_null(data, "read %s: %s", from, ts_error());
    cr_assert_eq(ts_write_file(to, data, len), 0, "write %s: %s", to, ts_error());
    cr_assert_eq(chmod(to, mode), 0, "chmod %s", to);
    free(data);
}

/* Make path privileged for an unprivileged caller: file capabilities, else setgid to a group not theirs. */
static const char *make_privileged(const char *path, gid_t unprivileged_gid)
{
    static const char *const setcap_paths[] = {"/usr/sbin/setcap", "/sbin/setcap", "/usr/bin/setcap", NULL};
    static const char *const env[] = {NULL};
    const char *setcap = first_executable(setcap_paths);
    gid_t other = unprivileged_gid == 1 ? 2 : 1;

    if (setcap != NULL) {
        probe_run r = run_with_env((const char *const[]){setcap, "cap_net_bind_service+ep", path, NULL}, env);
        int ok = r.status == 0;
        if (!ok)
            cr_log_warn("setcap failed (%s): falling back to a setgid copy", r.err);
        probe_free(&r);
        if (ok)
            return "file capabilities (cap_net_bind_service+ep)";
    } else {
        cr_log_warn("no setcap (libcap2-bin): falling back to a setgid copy");
    }
    cr_assert_eq(chown(path, (uid_t)-1, other), 0, "chgrp %s", path);
    cr_assert_eq(chmod(path, 02755), 0, "chmod g+s %s", path);
    return "setgid";
}

static const char *const honoured_env[] = {
    "POSH_MODE=pin",
    "POSH_CA_FILE=/tmp/not-a-trust-anchor.pem",
    "POSH_CONNECT_TO=::127.0.0.1:8443",
    "POSH_MAX_REDIRECTS=3",
    "POSH_LOG=off",                      /* ignored too: then the warning and the probe's message reach stderr */
    "ASAN_OPTIONS=detect_leaks=0",       /* LeakSanitizer cannot stop the threads of a non-dumpable process */
    NULL,
};

static const char *const invalid_env[] = {
    "POSH_MAX_REDIRECTS=99",
    "ASAN_OPTIONS=detect_leaks=0",
    NULL,
};

#define WARNING "the POSH_* environment is ignored"

static void expect_honoured(const probe_run *r, const char *who)
{
    cr_expect_eq(r->status, 0, "%s: exit %d; stderr: %s", who, r->status, r->err);
    cr_expect(has_line(r->out, "at_secure=0"), "%s: not a privileged process: %s", who, r->out);
    cr_expect(has_line(r->out, "load=0,0"), "%s: %s", who, r->out);
    cr_expect(has_line(r->out, "mode=pin"), "%s: POSH_MODE honoured: %s", who, r->out);
    cr_expect(has_line(r->out, "max_redirects=3"), "%s: %s", who, r->out);
    cr_expect(has_line(r->out, "ca_file=/tmp/not-a-trust-anchor.pem"), "%s: %s", who, r->out);
    cr_expect(has_line(r->out, "connect_to=::127.0.0.1:8443"), "%s: %s", who, r->out);
    cr_expect_str_eq(r->err, "", "%s: POSH_LOG=off honoured, nothing on stderr", who);
}

Test(privileged, posh_environment_ignored_with_file_capabilities, .fini = priv_cleanup)
{
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw != NULL ? pw->pw_uid : 65534;
    gid_t gid = pw != NULL ? pw->pw_gid : 65534;
    char plain[256], capable[256], want[64];
    const char *how;
    probe_run r;

    /* Not a skip: a test that cannot make a privileged process has proved nothing, and CI runs as root. */
    cr_assert_eq(geteuid(), 0, "this test must run as root (setcap, setpriv); it fails rather than pass unrun");
    cr_assert_neq(uid, 0);
    priv_dir = ts_tmpdir();
    cr_assert_not_null(priv_dir, "%s", ts_error());
    cr_assert_eq(chmod(priv_dir, 0755), 0, "an unprivileged user must reach the probe");
    snprintf(plain, sizeof(plain), "%s/env_probe", priv_dir);
    snprintf(capable, sizeof(capable), "%s/env_probe-privileged", priv_dir);
    copy_file(POSH_ENV_PROBE, plain, 0755);
    copy_file(POSH_ENV_PROBE, capable, 0755);
    how = make_privileged(capable, gid);
    cr_log_info("the privileged copy has %s", how);

    /* Unprivileged, without the privilege: the variables are the user's own and apply. */
    r = run_probe(plain, uid, gid, honoured_env);
    expect_honoured(&r, "plain copy as nobody");
    probe_free(&r);

    /* The same binary made privileged, run by the same user: defaults, and one warning. */
    r = run_probe(capable, uid, gid, honoured_env);
    cr_assert(has_line(r.out, "at_secure=1"),
              "the %s did not make the probe privileged (nosuid mount? no_new_privs?): %s; stderr: %s", how, r.out,
              r.err);
    cr_expect_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_expect(has_line(r.out, "load=0,0"), "ignoring is not an error: %s", r.out);
    cr_expect(has_line(r.out, "mode=name"), "POSH_MODE=pin ignored: %s", r.out);
    cr_expect(has_line(r.out, "max_redirects=10"), "%s", r.out);
    cr_expect(has_line(r.out, "ca_file=(none)"), "POSH_CA_FILE ignored: %s", r.out);
    cr_expect(has_line(r.out, "connect_to=(none)"), "POSH_CONNECT_TO ignored: %s", r.out);
    cr_expect_eq(count(r.err, WARNING), 1, "the warning exactly once: %s", r.err);
    cr_expect(strstr(r.err, "POSH_MODE") != NULL && strstr(r.err, "POSH_CONNECT_TO") != NULL &&
                  strstr(r.err, "POSH_LOG") != NULL,
              "the warning names the variables: %s", r.err);
    cr_expect(strstr(r.err, "127.0.0.1") == NULL && strstr(r.err, "not-a-trust-anchor") == NULL,
              "the warning names variables, never their values: %s", r.err);
    cr_expect_eq(count(r.err, "env_probe: done"), 1, "POSH_LOG=off ignored as well: %s", r.err);
    probe_free(&r);

    /* Root gains nothing from the capability: not a privileged process, the variables apply. */
    r = run_probe(capable, 0, 0, honoured_env);
    expect_honoured(&r, "privileged copy as root");
    probe_free(&r);

    /* An invalid value: an error for the user's own program, ignored (not an error) in the privileged one. */
    r = run_probe(plain, uid, gid, invalid_env);
    snprintf(want, sizeof(want), "load=%d,%d", (int)POSH_ERR_CONFIG, (int)POSH_ERR_CONFIG);
    cr_expect(has_line(r.out, want), "POSH_MAX_REDIRECTS=99 refused: %s", r.out);
    cr_expect(strstr(r.out, "error=POSH_MAX_REDIRECTS") != NULL, "%s", r.out);
    probe_free(&r);
    r = run_probe(capable, uid, gid, invalid_env);
    cr_expect(has_line(r.out, "load=0,0") && has_line(r.out, "max_redirects=10"), "%s", r.out);
    cr_expect_eq(count(r.err, WARNING), 1, "%s", r.err);
    cr_expect(strstr(r.err, "POSH_MAX_REDIRECTS") != NULL, "%s", r.err);
    probe_free(&r);
}
