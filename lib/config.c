/*
 * config.c - defaults, setters with range checks, and the POSH_* environment. An invalid value is an error
 * naming the variable, never silently a default.
 */
#include "client_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_MAX_REDIRECTS 10
#define DEFAULT_MAX_BYTES 65536
#define DEFAULT_MAX_TTL 86400
#define DEFAULT_NEGATIVE_TTL 60
#define DEFAULT_CACHE_SIZE 10000
#define DEFAULT_ASYNC_LOOKUPS 1024
#define DEFAULT_ASYNC_WAITING 10000

static time_t monotonic_seconds(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static time_t wall_seconds(void *arg)
{
    (void)arg;
    return time(NULL);
}

posh_config *posh_config_new(void)
{
    posh_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    cfg->timeout_ms = DEFAULT_TIMEOUT_MS;
    cfg->max_redirects = DEFAULT_MAX_REDIRECTS;
    cfg->max_bytes = DEFAULT_MAX_BYTES;
    cfg->max_ttl = DEFAULT_MAX_TTL;
    cfg->negative_ttl = DEFAULT_NEGATIVE_TTL;
    cfg->cache_size = DEFAULT_CACHE_SIZE;
    cfg->async_lookups = DEFAULT_ASYNC_LOOKUPS;
    cfg->async_waiting = DEFAULT_ASYNC_WAITING;
    cfg->mode = POSH_MODE_NAME;
    cfg->layouts = POSH_LAYOUT_ALL;
    cfg->formats = POSH_FORMAT_ALL;
    cfg->now = monotonic_seconds;
    cfg->wall_now = wall_seconds;
    return cfg;
}

void posh_config_free(posh_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->ca_file);
    free(cfg->ca_path);
    free(cfg->connect_to);
    free(cfg->cache_dir);
    free(cfg);
}

static int dup_string(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    *dst = strdup(src);
    return *dst == NULL ? -1 : 0;
}

posh_config *posh_config_dup(const posh_config *src)
{
    posh_config *cfg = malloc(sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    *cfg = *src;
    cfg->ca_file = cfg->ca_path = cfg->connect_to = cfg->cache_dir = NULL;
    if (dup_string(&cfg->ca_file, src->ca_file) != 0 || dup_string(&cfg->ca_path, src->ca_path) != 0 ||
        dup_string(&cfg->connect_to, src->connect_to) != 0 || dup_string(&cfg->cache_dir, src->cache_dir) != 0) {
        posh_config_free(cfg);
        return NULL;
    }
    return cfg;
}

time_t posh_config_now(const posh_config *cfg)
{
    return cfg->now(cfg->now_arg);
}

time_t posh_config_wall_now(const posh_config *cfg)
{
    return cfg->wall_now(cfg->wall_now_arg);
}

void posh_config_set_wall_clock(posh_config *cfg, time_t (*now)(void *arg), void *arg)
{
    cfg->wall_now = now != NULL ? now : wall_seconds;
    cfg->wall_now_arg = now != NULL ? arg : NULL;
}

const char *posh_config_error(const posh_config *cfg)
{
    return cfg == NULL ? "no configuration" : cfg->error;
}

static posh_err set_string(posh_config *cfg, char **field, const char *value)
{
    char *copy = NULL;
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (value != NULL && value[0] != '\0' && (copy = strdup(value)) == NULL)
        return POSH_ERR_NOMEM;
    free(*field);
    *field = copy;
    return POSH_OK;
}

/*
 * A trust anchor's path made absolute against the working directory of the moment it is configured: a relative
 * "ca.pem" must name the same file for every fetch whatever the process later chdir()s to, and the persistent
 * cache's scope (store.c) hashes what that one file holds. The path is not resolved further (symbolic links
 * are followed when the anchors are read, as OpenSSL does). POSH_ERR_CONFIG when the working directory is
 * unknown.
 */
static posh_err set_anchor_path(posh_config *cfg, char **field, const char *path, const char *what)
{
    char cwd[PATH_MAX], *abs;
    size_t len;
    posh_err err;

    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (path == NULL || path[0] == '\0' || path[0] == '/')
        return set_string(cfg, field, path);
    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        posh_msg(cfg->error, sizeof(cfg->error), "%s: a relative path, and the working directory is unknown: %s",
                 what, strerror(errno));
        return POSH_ERR_CONFIG;
    }
    len = strlen(cwd) + 1 + strlen(path) + 1;
    if ((abs = malloc(len)) == NULL)
        return POSH_ERR_NOMEM;
    snprintf(abs, len, "%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", path);
    err = set_string(cfg, field, abs);
    free(abs);
    return err;
}

posh_err posh_config_set_ca_file(posh_config *cfg, const char *path)
{
    return set_anchor_path(cfg, cfg != NULL ? &cfg->ca_file : NULL, path, "CA file");
}

posh_err posh_config_set_ca_path(posh_config *cfg, const char *path)
{
    return set_anchor_path(cfg, cfg != NULL ? &cfg->ca_path : NULL, path, "CA path");
}

posh_err posh_config_set_cache_dir(posh_config *cfg, const char *path)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT : set_string(cfg, &cfg->cache_dir, path);
}

posh_err posh_config_set_connect_to(posh_config *cfg, const char *list)
{
    struct curl_slist *parsed = NULL;
    posh_err err;
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    err = posh_connect_to_parse(list, &parsed, cfg->error, sizeof(cfg->error));
    curl_slist_free_all(parsed);
    if (err != POSH_OK)
        return err;
    return set_string(cfg, &cfg->connect_to, list);
}

static posh_err set_range(posh_config *cfg, long *field, long value, long min, long max, const char *what)
{
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (value < min || value > max) {
        posh_msg(cfg->error, sizeof(cfg->error), "%s: %ld is out of range %ld..%ld", what, value, min, max);
        return POSH_ERR_CONFIG;
    }
    *field = value;
    return POSH_OK;
}

posh_err posh_config_set_timeout_ms(posh_config *cfg, long ms)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT : set_range(cfg, &cfg->timeout_ms, ms, 1, 600000, "timeout");
}

posh_err posh_config_set_max_redirects(posh_config *cfg, long n)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT
                       : set_range(cfg, &cfg->max_redirects, n, 0, 10, "maximum redirects");
}

posh_err posh_config_set_max_bytes(posh_config *cfg, long n)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT : set_range(cfg, &cfg->max_bytes, n, 64, 1048576, "maximum bytes");
}

posh_err posh_config_set_max_ttl(posh_config *cfg, long seconds)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT
                       : set_range(cfg, &cfg->max_ttl, seconds, 1, 31536000, "maximum TTL");
}

posh_err posh_config_set_negative_ttl(posh_config *cfg, long seconds)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT
                       : set_range(cfg, &cfg->negative_ttl, seconds, 0, 86400, "negative TTL");
}

posh_err posh_config_set_cache_size(posh_config *cfg, long entries)
{
    return cfg == NULL ? POSH_ERR_INVALID_ARGUMENT
                       : set_range(cfg, &cfg->cache_size, entries, 1, 10000000, "cache size");
}

posh_err posh_config_set_async_limits(posh_config *cfg, long max_lookups, long max_waiting)
{
    posh_err err;
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    /* Both or neither: check the second before the first is stored. */
    if (max_waiting < 1 || max_waiting > 1000000)
        return set_range(cfg, &cfg->async_waiting, max_waiting, 1, 1000000, "connections waiting");
    if ((err = set_range(cfg, &cfg->async_lookups, max_lookups, 1, 100000, "lookups in flight")) != POSH_OK)
        return err;
    return set_range(cfg, &cfg->async_waiting, max_waiting, 1, 1000000, "connections waiting");
}

posh_err posh_config_set_async_transfers(posh_config *cfg, long max_transfers)
{
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    if (max_transfers == 0) {
        cfg->async_transfers = 0; /* the default: from the descriptor limit */
        return POSH_OK;
    }
    return set_range(cfg, &cfg->async_transfers, max_transfers, 1, 10000, "transfers at once");
}

posh_err posh_config_set_mode(posh_config *cfg, posh_mode mode)
{
    if (cfg == NULL || (mode != POSH_MODE_NAME && mode != POSH_MODE_PIN))
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->mode = mode;
    return POSH_OK;
}

posh_err posh_config_set_no_sha1(posh_config *cfg, int no_sha1)
{
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->no_sha1 = no_sha1 != 0;
    return POSH_OK;
}

posh_err posh_config_set_delegation(posh_config *cfg, int on)
{
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->delegation = on != 0;
    return POSH_OK;
}

posh_err posh_config_set_formats(posh_config *cfg, unsigned formats)
{
    if (cfg == NULL || formats == 0 || (formats & ~POSH_FORMAT_ALL) != 0)
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->formats = formats;
    return POSH_OK;
}

posh_err posh_config_set_layouts(posh_config *cfg, unsigned layouts)
{
    if (cfg == NULL || layouts == 0 || (layouts & ~POSH_LAYOUT_ALL) != 0)
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->layouts = layouts;
    return POSH_OK;
}

posh_err posh_config_set_clock(posh_config *cfg, time_t (*now)(void *arg), void *arg)
{
    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    cfg->now = now != NULL ? now : monotonic_seconds;
    cfg->now_arg = now != NULL ? arg : NULL;
    return POSH_OK;
}

/* ---- the connect-to list ---- */


/* ---- the environment ---- */

/* Every variable libposh and the shim read: what the warning of a privileged process can name. */
static const char *const env_names[] = {
    "POSH_CA_FILE", "POSH_CA_PATH", "POSH_CONNECT_TO", "POSH_TIMEOUT_MS", "POSH_MAX_REDIRECTS",
    "POSH_MAX_BYTES", "POSH_MAX_TTL", "POSH_NEGATIVE_TTL", "POSH_CACHE_SIZE", "POSH_CACHE_DIR",
    "POSH_ASYNC_LOOKUPS", "POSH_ASYNC_WAITING", "POSH_FORMATS", "POSH_DELEGATION", "POSH_MODE", "POSH_NO_SHA1",
    "POSH_LAYOUT", "POSH_SERVICE", "POSH_LOG", "POSH_LOG_LEVEL",
};

static pthread_once_t ignored_once = PTHREAD_ONCE_INIT;

/*
 * Names only, never values: the values belong to whoever started the process. The names come from the table,
 * so nothing the environment holds reaches the log.
 */
static void warn_ignored(void)
{
    char names[512] = "";
    size_t used = 0;

    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++) {
        int n;
        if (getenv(env_names[i]) == NULL)
            continue;
        n = snprintf(names + used, sizeof(names) - used, "%s%s", used > 0 ? ", " : "", env_names[i]);
        if (n < 0 || (size_t)n >= sizeof(names) - used)
            break;
        used += (size_t)n;
    }
    posh_log(POSH_LOG_WARNING,
             "privileged process (setuid, setgid or file capabilities): the POSH_* environment is ignored and "
             "the defaults apply (ignored: %s)", used > 0 ? names : "POSH_*");
}

const char *posh_getenv_quiet(const char *name)
{
    return secure_getenv(name);
}

const char *posh_getenv(const char *name)
{
    const char *v = posh_getenv_quiet(name);
    /* posh_log() reads POSH_LOG through posh_getenv_quiet(), so the warning cannot come back here. */
    if (v == NULL && getenv(name) != NULL)
        pthread_once(&ignored_once, warn_ignored);
    return v;
}

/* A whole decimal number, nothing else: no sign, no blanks, no suffix. */
static int parse_long(const char *s, long *out)
{
    char *end;
    long v;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static posh_err env_number(posh_config *tmp, const char *var, long *field, long min, long max)
{
    const char *v = posh_getenv(var);
    long n;
    if (v == NULL)
        return POSH_OK;
    if (parse_long(v, &n) != 0 || n < min || n > max) {
        posh_msg(tmp->error, sizeof(tmp->error), "%s=\"%.64s\": expected a whole number from %ld to %ld", var, v,
                 min, max);
        return POSH_ERR_CONFIG;
    }
    *field = n;
    return POSH_OK;
}

static posh_err env_mode(posh_config *tmp)
{
    const char *v = posh_getenv("POSH_MODE");
    if (v == NULL)
        return POSH_OK;
    if (strcmp(v, "name") == 0) {
        tmp->mode = POSH_MODE_NAME;
    } else if (strcmp(v, "pin") == 0) {
        tmp->mode = POSH_MODE_PIN;
    } else {
        posh_msg(tmp->error, sizeof(tmp->error), "POSH_MODE=\"%.64s\": expected name or pin", v);
        return POSH_ERR_CONFIG;
    }
    return POSH_OK;
}

/* A switch: "1" or "0" into *field; unset or empty leaves it. */
static posh_err env_flag(posh_config *tmp, const char *var, int *field)
{
    const char *v = posh_getenv(var);
    if (v == NULL || v[0] == '\0')
        return POSH_OK;
    if (strcmp(v, "1") == 0) {
        *field = 1;
    } else if (strcmp(v, "0") == 0) {
        *field = 0;
    } else {
        posh_msg(tmp->error, sizeof(tmp->error), "%s=\"%.64s\": expected 1 or 0", var, v);
        return POSH_ERR_CONFIG;
    }
    return POSH_OK;
}

/*
 * A comma-separated list of names, each giving one bit of *out (names[i] -> bits[i]), not empty, no trailing
 * comma; absent: *out unchanged. expected: the message's list of valid values.
 */
static posh_err env_bits(posh_config *tmp, const char *var, const char *const names[], const unsigned bits[],
                         size_t n_names, const char *expected, unsigned *out)
{
    const char *v = posh_getenv(var);
    unsigned value = 0;
    const char *p;
    if (v == NULL)
        return POSH_OK;
    for (p = v; *p != '\0';) {
        size_t n = strcspn(p, ","), i;
        for (i = 0; i < n_names; i++)
            if (n == strlen(names[i]) && strncmp(p, names[i], n) == 0)
                break;
        if (i == n_names) {
            value = 0;
            break;
        }
        value |= bits[i];
        p += n;
        if (*p == ',' && *++p == '\0')
            value = 0; /* a trailing comma is a typo, not a list */
    }
    if (value == 0) {
        posh_msg(tmp->error, sizeof(tmp->error), "%s=\"%.64s\": expected %s", var, v, expected);
        return POSH_ERR_CONFIG;
    }
    *out = value;
    return POSH_OK;
}

static posh_err env_layout(posh_config *tmp)
{
    static const char *const names[] = {"rfc7711", "draft02"};
    static const unsigned bits[] = {POSH_LAYOUT_RFC7711, POSH_LAYOUT_DRAFT02};
    return env_bits(tmp, "POSH_LAYOUT", names, bits, 2, "rfc7711, draft02 or rfc7711,draft02", &tmp->layouts);
}

static posh_err env_formats(posh_config *tmp)
{
    static const char *const names[] = {"fingerprints", "jwk"};
    static const unsigned bits[] = {POSH_FORMAT_FINGERPRINTS, POSH_FORMAT_JWK};
    return env_bits(tmp, "POSH_FORMATS", names, bits, 2, "fingerprints, jwk or fingerprints,jwk", &tmp->formats);
}

static posh_err env_string(posh_config *tmp, const char *var, char **field)
{
    const char *v = posh_getenv(var);
    if (v == NULL)
        return POSH_OK;
    if (v[0] == '\0') {
        posh_msg(tmp->error, sizeof(tmp->error), "%s is set but empty", var);
        return POSH_ERR_CONFIG;
    }
    return set_string(tmp, field, v);
}

/* A CA file or directory from the environment, made absolute as the setters make it. */
static posh_err env_anchor(posh_config *tmp, const char *var, char **field)
{
    posh_err err = env_string(tmp, var, field);
    char *rel = *field;

    if (err != POSH_OK || rel == NULL || rel[0] == '/')
        return err;
    *field = NULL;
    err = set_anchor_path(tmp, field, rel, var);
    free(rel);
    return err;
}

posh_err posh_config_load_env(posh_config *cfg)
{
    posh_config *tmp;
    posh_err err;
    const char *ct;

    if (cfg == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    /* Work on a copy so that an invalid variable leaves cfg as it was. */
    tmp = posh_config_dup(cfg);
    if (tmp == NULL)
        return POSH_ERR_NOMEM;
    tmp->error[0] = '\0';
    if ((err = env_anchor(tmp, "POSH_CA_FILE", &tmp->ca_file)) != POSH_OK ||
        (err = env_anchor(tmp, "POSH_CA_PATH", &tmp->ca_path)) != POSH_OK ||
        (err = env_string(tmp, "POSH_CACHE_DIR", &tmp->cache_dir)) != POSH_OK ||
        (err = env_number(tmp, "POSH_TIMEOUT_MS", &tmp->timeout_ms, 1, 600000)) != POSH_OK ||
        (err = env_number(tmp, "POSH_MAX_REDIRECTS", &tmp->max_redirects, 0, 10)) != POSH_OK ||
        (err = env_number(tmp, "POSH_MAX_BYTES", &tmp->max_bytes, 64, 1048576)) != POSH_OK ||
        (err = env_number(tmp, "POSH_MAX_TTL", &tmp->max_ttl, 1, 31536000)) != POSH_OK ||
        (err = env_number(tmp, "POSH_NEGATIVE_TTL", &tmp->negative_ttl, 0, 86400)) != POSH_OK ||
        (err = env_number(tmp, "POSH_CACHE_SIZE", &tmp->cache_size, 1, 10000000)) != POSH_OK ||
        (err = env_number(tmp, "POSH_ASYNC_LOOKUPS", &tmp->async_lookups, 1, 100000)) != POSH_OK ||
        (err = env_number(tmp, "POSH_ASYNC_WAITING", &tmp->async_waiting, 1, 1000000)) != POSH_OK ||
        (err = env_number(tmp, "POSH_ASYNC_TRANSFERS", &tmp->async_transfers, 1, 10000)) != POSH_OK ||
        (err = env_mode(tmp)) != POSH_OK || (err = env_flag(tmp, "POSH_NO_SHA1", &tmp->no_sha1)) != POSH_OK ||
        (err = env_flag(tmp, "POSH_DELEGATION", &tmp->delegation)) != POSH_OK ||
        (err = env_layout(tmp)) != POSH_OK || (err = env_formats(tmp)) != POSH_OK ||
        (err = posh_log_check_env(tmp->error, sizeof(tmp->error))) != POSH_OK)
        goto fail;
    ct = posh_getenv("POSH_CONNECT_TO");
    if (ct != NULL) {
        struct curl_slist *parsed = NULL;
        char why[POSH_MSG_LEN];
        err = posh_connect_to_parse(ct, &parsed, why, sizeof(why));
        curl_slist_free_all(parsed);
        if (err != POSH_OK) {
            posh_msg(tmp->error, sizeof(tmp->error), "POSH_CONNECT_TO: %s", why);
            goto fail;
        }
        if ((err = set_string(tmp, &tmp->connect_to, ct)) != POSH_OK)
            goto fail;
    }
    /* Commit: swap the owned strings, then free the old ones with tmp. */
    {
        posh_config old = *cfg;
        *cfg = *tmp;
        cfg->error[0] = '\0';
        tmp->ca_file = old.ca_file;
        tmp->ca_path = old.ca_path;
        tmp->connect_to = old.connect_to;
        tmp->cache_dir = old.cache_dir;
        posh_config_free(tmp);
    }
    return POSH_OK;
fail:
    memcpy(cfg->error, tmp->error, sizeof(cfg->error));
    posh_config_free(tmp);
    return err;
}
