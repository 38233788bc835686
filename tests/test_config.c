/*
 * test_config.c - configuration setters and the POSH_* environment: every invalid value is an error naming the
 * variable, and an invalid environment leaves the configuration unchanged.
 */
#include "client_internal.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static const char *const all_vars[] = {
    "POSH_CA_FILE", "POSH_CA_PATH", "POSH_CONNECT_TO", "POSH_TIMEOUT_MS", "POSH_MAX_REDIRECTS",
    "POSH_MAX_BYTES", "POSH_MAX_TTL", "POSH_NEGATIVE_TTL", "POSH_CACHE_SIZE", "POSH_MODE", "POSH_NO_SHA1",
    "POSH_LAYOUT", "POSH_SERVICE", "POSH_LOG", "POSH_LOG_LEVEL",
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
    cr_assert_eq(posh_config_load_env(cfg), POSH_OK, "%s", posh_config_error(cfg));
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
    for (int e = POSH_OK; e <= POSH_ERR_INTERNAL; e++)
        cr_expect(strcmp(posh_strerror((posh_err)e), "unknown error") != 0, "code %d has a string", e);
    cr_expect_str_eq(posh_strerror((posh_err)999), "unknown error");
    cr_expect_str_eq(posh_version(), POSH_VERSION_STRING);
}
