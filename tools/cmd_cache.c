/*
 * cmd_cache.c - `posh cache list|flush`: what a persistent cache directory holds, and removing its entries.
 * The directory is judged as the library judges it (lib/store_dir.c, compiled in) and every entry is parsed
 * by the library's own entry parser (lib/store_entry.c), so what is listed as valid is what a client would load.
 */
#include "cli.h"

#include "posh_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "cache"
#define DEFAULT_MAX_TTL 86400

static const char cache_help[] =
    "usage: posh cache list [--dir DIR] [--json]\n"
    "       posh cache flush [--dir DIR] [DOMAIN]\n"
    "\n"
    "The persistent cache directory (POSH_CACHE_DIR unless --dir is given): each entry holds the documents of\n"
    "one (domain, service) as fetched. The directory is used only when it belongs to this user and is not\n"
    "writable by group or others, and is not a symbolic link; otherwise it is refused.\n"
    "\n"
    "  list    one line per entry: domain, service, expiry (UTC; with POSH_MAX_TTL, default 86400 s), state\n"
    "          (fresh, stale, invalid: why) and the source URL; --json prints {directory, entries: [{file,\n"
    "          domain, service, source_url, target_url, fetched, expires, state, error}]}\n"
    "  flush   remove every entry, or only DOMAIN's (for every service)\n"
    "\n"
    "  -d, --dir DIR   the directory (default: POSH_CACHE_DIR)\n"
    "  -j, --json      (list) JSON instead of the table\n"
    "  -h, --help      this text\n"
    "\n"
    "Exit status: 0 list: at least one valid entry; flush: at least one entry removed. 1 none. 2 usage error,\n"
    "no directory, or the directory is missing or unsafe.\n";

typedef struct row {
    char file[POSH_STORE_NAME_LEN + 1];
    int valid;
    char domain[POSH_MAX_DOMAIN_LEN + 1];
    char service[POSH_STORE_SERVICE_LEN + 1];
    char source_url[POSH_MAX_URL_LEN + 1];
    char target_url[POSH_MAX_URL_LEN + 1];
    int64_t fetched, expires;
    char error[POSH_MSG_LEN];
} row;

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Read and judge one entry as a client would (the cap: the largest entry any configuration writes). */
static void judge(int dirfd, const char *name, long max_ttl, row *r)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    posh_store_entry e;

    memset(r, 0, sizeof(*r));
    snprintf(r->file, sizeof(r->file), "%s", name);
    if (posh_store_read(dirfd, name, POSH_STORE_MAX_ENTRY, &buf, &len, r->error, sizeof(r->error)) != 1) {
        if (r->error[0] == '\0')
            snprintf(r->error, sizeof(r->error), "removed meanwhile");
        return;
    }
    if (posh_store_entry_parse(buf, len, &e, r->error, sizeof(r->error)) == POSH_OK) {
        r->valid = 1;
        memcpy(r->domain, e.domain, sizeof(r->domain));
        memcpy(r->service, e.service, sizeof(r->service));
        memcpy(r->source_url, e.source_url, sizeof(r->source_url));
        memcpy(r->target_url, e.target_url, sizeof(r->target_url));
        r->fetched = e.fetched;
        r->expires = e.fetched + min64(e.source.expires, max_ttl);
        if (e.source.kind == POSH_DOC_REFERENCE)
            r->expires = min64(r->expires, e.target_fetched + min64(e.target.expires, max_ttl));
        posh_store_entry_clear(&e);
    }
    free(buf);
}

static int by_name(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int c = strcmp(x->domain, y->domain);
    if (c == 0)
        c = strcmp(x->service, y->service);
    return c != 0 ? c : strcmp(x->file, y->file);
}

static const char *state(const row *r, time_t now)
{
    if (!r->valid)
        return "invalid";
    if (r->fetched > now)
        return "stale"; /* fetched in the future: the clock went back */
    return now < r->expires ? "fresh" : "stale";
}

/* Every file with an entry's name, judged; *n rows. NULL (and *n 0) when there are none or memory ran out. */
static row *scan(int dirfd, long max_ttl, size_t *n)
{
    row *rows = NULL;
    size_t cap = 0;
    struct dirent *d;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;

    *n = 0;
    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    while ((d = readdir(dir)) != NULL) {
        if (!posh_store_name_is_entry(d->d_name))
            continue;
        if (*n == cap) {
            row *grown = realloc(rows, (cap = cap == 0 ? 16 : 2 * cap) * sizeof(*rows));
            if (grown == NULL)
                break;
            rows = grown;
        }
        judge(dirfd, d->d_name, max_ttl, &rows[(*n)++]);
    }
    closedir(dir);
    if (*n > 0)
        qsort(rows, *n, sizeof(*rows), by_name);
    return rows;
}

static void utc(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", (long long)t);
}

static int list(int dirfd, const char *path, int json)
{
    long max_ttl = DEFAULT_MAX_TTL;
    const char *v = getenv("POSH_MAX_TTL");
    time_t now = time(NULL);
    size_t n, valid = 0;
    row *rows;

    if (v != NULL && cli_parse_long(v, 1, 31536000, &max_ttl) != 0)
        return cli_usage_error(CMD, "invalid environment: POSH_MAX_TTL=\"%.64s\"", v);
    rows = scan(dirfd, max_ttl, &n);
    for (size_t i = 0; i < n; i++)
        valid += rows[i].valid;
    if (json) {
        json_object *o = json_object_new_object(), *arr = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
            const row *r = &rows[i];
            json_object *e = json_object_new_object();
            json_object_object_add(e, "file", json_object_new_string(r->file));
            json_object_object_add(e, "domain", r->valid ? json_object_new_string(r->domain) : NULL);
            json_object_object_add(e, "service", r->valid ? json_object_new_string(r->service) : NULL);
            json_object_object_add(e, "source_url", r->valid ? json_object_new_string(r->source_url) : NULL);
            json_object_object_add(e, "target_url",
                                   r->valid && r->target_url[0] != '\0' ? json_object_new_string(r->target_url) : NULL);
            json_object_object_add(e, "fetched", r->valid ? json_object_new_int64(r->fetched) : NULL);
            json_object_object_add(e, "expires", r->valid ? json_object_new_int64(r->expires) : NULL);
            json_object_object_add(e, "state", json_object_new_string(state(r, now)));
            json_object_object_add(e, "error", r->valid ? NULL : json_object_new_string(r->error));
            json_object_array_add(arr, e);
        }
        json_object_object_add(o, "directory", json_object_new_string(path));
        json_object_object_add(o, "entries", arr);
        if (cli_print_json(o) != 0)
            cli_error(CMD, "cannot write to stdout");
    } else {
        printf("%-32s %-22s %-20s %-8s %s\n", "DOMAIN", "SERVICE", "EXPIRES (UTC)", "STATE", "SOURCE URL");
        for (size_t i = 0; i < n; i++) {
            row *r = &rows[i];
            char when[32];
            if (!r->valid) {
                printf("%-32s %-22s %-20s %-8s %s: %s\n", "-", "-", "-", "invalid", r->file, cli_sanitize(r->error));
                continue;
            }
            utc(r->expires, when, sizeof(when));
            printf("%-32s %-22s %-20s %-8s %s%s%s\n", r->domain, r->service, when, state(r, now), r->source_url,
                   r->target_url[0] != '\0' ? " -> " : "", r->target_url);
        }
        fflush(stdout);
    }
    free(rows);
    return valid > 0 ? CLI_OK : CLI_FAIL;
}

static int flush(int dirfd, const char *path, const char *domain)
{
    size_t n, removed = 0;
    row *rows = scan(dirfd, DEFAULT_MAX_TTL, &n);

    for (size_t i = 0; i < n; i++) {
        if (domain != NULL && (!rows[i].valid || strcmp(rows[i].domain, domain) != 0))
            continue;
        if (unlinkat(dirfd, rows[i].file, 0) == 0)
            removed++;
    }
    free(rows);
    printf("removed %zu entr%s from %s%s%s\n", removed, removed == 1 ? "y" : "ies", path,
           domain != NULL ? " for " : "", domain != NULL ? domain : "");
    return removed > 0 ? CLI_OK : CLI_FAIL;
}

int cmd_cache(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *action;
    char why[POSH_MSG_LEN], domain[POSH_MAX_DOMAIN_LEN + 2];
    int c, json = 0, fd, rc;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":d:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(cache_help, stdout);
            return CLI_OK;
        default:
            return cli_option_error(CMD, c, argv);
        }
    }
    if (argc - optind < 1)
        return cli_usage_error(CMD, "list or flush is required");
    action = argv[optind++];
    if (strcmp(action, "list") == 0) {
        if (argc - optind != 0)
            return cli_usage_error(CMD, "list takes no arguments");
    } else if (strcmp(action, "flush") == 0) {
        if (json)
            return cli_usage_error(CMD, "--json is for list");
        if (argc - optind > 1)
            return cli_usage_error(CMD, "too many arguments");
        if (argc - optind == 1 && posh_domain_normalize(argv[optind], domain, sizeof(domain)) != POSH_OK)
            return cli_usage_error(CMD, "'%s' is not a valid DNS domain name", argv[optind]);
    } else {
        return cli_usage_error(CMD, "unknown action '%s' (list or flush)", action);
    }
    if (dir == NULL && ((dir = secure_getenv("POSH_CACHE_DIR")) == NULL || dir[0] == '\0'))
        return cli_usage_error(CMD, "no cache directory: give --dir DIR or set POSH_CACHE_DIR");
    if ((fd = posh_store_dir_open(dir, 0, why, sizeof(why))) < 0) {
        cli_error(CMD, "refusing the cache directory: %s", why);
        return CLI_USAGE;
    }
    if (strcmp(action, "list") == 0)
        rc = list(fd, dir, json);
    else
        rc = flush(fd, dir, argc - optind == 1 ? domain : NULL);
    close(fd);
    return rc;
}
