/*
 * store.c - the persistent cache: the second level under the in-memory cache (client.c's fill tries it
 * before fetching; lookup.c writes a successful lookup to it). Entries are re-judged on every load: parsed
 * again, checked against the name they were asked under, and expired on the wall clock. They are filed under
 * a scope naming what the fetches trusted (the trust anchors' content, not their paths), re-checked before
 * every disk access. Nothing here ever fails a lookup: a problem is logged and the lookup fetches.
 */
#include "client_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory's byte cap (README "Persistent cache"); its entry cap is the cache size. */
#define STORE_MAX_BYTES (64ull * 1024 * 1024)
/*
 * Hashing the trust anchors reads at most this much (the Debian bundle and /etc/ssl/certs: about 0.45 MB in
 * 151 files); past it, or when they cannot be read, the disk cache is not used (fail closed, logged).
 */
#define ANCHOR_MAX_FILES 4096
#define ANCHOR_MAX_BYTES (16ull * 1024 * 1024)
/* Entries the engine thread has serialised and writes once its pass's transfers are serviced (engine.c). */
#define PENDING_MAX 32

/* What stat() says of a trust anchor: when any of it moves, the anchors are hashed again. */
typedef struct anchor_id {
    int err;  /* 0, the errno of stat(), or -1 for no such anchor */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} anchor_id;

typedef struct pending_write {
    char name[POSH_STORE_NAME_LEN + 1];
    char what[POSH_MAX_DOMAIN_LEN + POSH_STORE_SERVICE_LEN + 2];  /* "domain service", for the log */
    unsigned char *buf;
    size_t len;
} pending_write;

struct posh_store {
    int dirfd;
    const posh_config *cfg;     /* the client's, which outlives its store */
    /* What the fetches trust: the configured CA file and directory, or libcurl's built-in ones (NULL: none). */
    const char *anchor_file, *anchor_dir;
    pthread_mutex_t lock;       /* guards everything below but the pending writes */
    anchor_id file_id, dir_id;  /* the anchors as they were when scope was made */
    bool scope_ok;              /* false: the anchors could not be hashed, the disk cache is not used */
    /*
     * The anchors moved while this client ran. Its fetches may still go by the old ones: its pooled connections
     * were verified under them and are reused, and libcurl (7.87 and later) keeps a loaded CA store for up to
     * CURLOPT_CA_CACHE_TIMEOUT (24 h) when no CA directory is in force. So from then on this client reads (under
     * the new anchors' scope: what clients started since have written) but writes nothing: it could file a
     * document the old anchors vouched for under anchors that would not.
     */
    bool anchors_moved;
    unsigned char scope[32];    /* posh_store_scope() of the client's configuration */
    /*
     * The entry count and bytes are estimates: counted by a scan (the first write's, then each trim's), then
     * one more per write, even one that replaced an entry. Overcounting only brings the next scan nearer; other
     * processes' writes are counted by their own estimates and seen by the next scan.
     */
    long entries;               /* -1: not counted yet */
    uint64_t bytes;
    bool trimming;              /* a scan runs (outside the lock); writes meanwhile are counted in since_* */
    long since_entries;
    uint64_t since_bytes;
    int write_warned;           /* atomic: the first failed write is a warning, later ones are debug lines */
    pending_write pending[PENDING_MAX];  /* the engine thread's only */
    size_t n_pending;
};

/* ---- the scope: what the fetches trusted ---- */

static pthread_once_t defaults_once = PTHREAD_ONCE_INIT;
static bool defaults_known;
static char default_file[PATH_MAX], default_dir[PATH_MAX];

/*
 * libcurl's built-in CA file and directory (CURLINFO_CAINFO/CAPATH, libcurl 7.84 and later): what a fetch
 * trusts when posh is not told otherwise. Configured anchors replace both (fetch.c sets the one not configured
 * to none), so they alone are the scope then. Neither built in: libcurl may fall back to OpenSSL's defaults,
 * hashed then. Unknown (an older libcurl): no scope can name the default store.
 */
static void defaults_init(void)
{
#if LIBCURL_VERSION_NUM >= 0x075400
    CURL *h = curl_easy_init();
    char *file = NULL, *dir = NULL;

    if (h != NULL && curl_easy_getinfo(h, CURLINFO_CAINFO, &file) == CURLE_OK &&
        curl_easy_getinfo(h, CURLINFO_CAPATH, &dir) == CURLE_OK) {
        if (file == NULL && dir == NULL) {
            file = (char *)X509_get_default_cert_file();
            dir = (char *)X509_get_default_cert_dir();
        }
        defaults_known = (file == NULL || strlen(file) < sizeof(default_file)) &&
                         (dir == NULL || strlen(dir) < sizeof(default_dir));
        if (defaults_known) {
            snprintf(default_file, sizeof(default_file), "%s", file != NULL ? file : "");
            snprintf(default_dir, sizeof(default_dir), "%s", dir != NULL ? dir : "");
        }
    }
    curl_easy_cleanup(h);
#endif
}

/* The CA file and directory cfg's fetches load (NULL: none); false when the default store is unknown. */
static bool effective_anchors(const posh_config *cfg, const char **file, const char **dir)
{
    if (cfg->ca_file != NULL || cfg->ca_path != NULL) {
        *file = cfg->ca_file;
        *dir = cfg->ca_path;
        return true;
    }
    pthread_once(&defaults_once, defaults_init);
    if (!defaults_known)
        return false;
    *file = default_file[0] != '\0' ? default_file : NULL;
    *dir = default_dir[0] != '\0' ? default_dir : NULL;
    return true;
}

static void anchor_stat(const char *path, anchor_id *id)
{
    struct stat st;

    memset(id, 0, sizeof(*id));
    if (path == NULL) {
        id->err = -1;
    } else if (stat(path, &st) != 0) {
        id->err = errno != 0 ? errno : EIO;
    } else {
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->size = st.st_size;
        id->mtime = st.st_mtim;
        id->ctime = st.st_ctim;
    }
}

static bool same_anchor(const anchor_id *a, const anchor_id *b)
{
    return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/*
 * SHA-256 of the file path (relative to at), following symbolic links as OpenSSL does, reading no more than
 * *budget bytes (and taking what it read off it). 0 done; 1 nothing to read (missing, a dangling link, not a
 * regular file: OpenSSL loads nothing from it); -1 unreadable or over the budget (why says which).
 */
static int digest_file(int at, const char *path, unsigned char out[32], uint64_t *budget, char *why,
                       size_t whylen)
{
    unsigned char chunk[16384];
    EVP_MD_CTX *ctx = NULL;
    struct stat st;
    unsigned int n = 0;
    int fd, rc = -1;

    fd = openat(at, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return 1;
        posh_msg(why, whylen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        posh_msg(why, whylen, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = 1;
        goto done;
    }
    if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        posh_msg(why, whylen, "out of memory");
        goto done;
    }
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            posh_msg(why, whylen, "%s: %s", path, strerror(errno));
            goto done;
        }
        if (got == 0)
            break;
        if ((uint64_t)got > *budget) {
            posh_msg(why, whylen, "over %llu bytes of trust anchors", ANCHOR_MAX_BYTES);
            goto done;
        }
        *budget -= (uint64_t)got;
        if (EVP_DigestUpdate(ctx, chunk, (size_t)got) != 1)
            goto done;
    }
    rc = EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32 ? 0 : -1;
    if (rc != 0)
        posh_msg(why, whylen, "SHA-256 failed");
done:
    EVP_MD_CTX_free(ctx);
    close(fd);
    return rc;
}

/* A name OpenSSL's hashed directory lookup opens: 8 lower-case hex digits, ".", an optional "r", a number. */
static bool loadable_name(const char *name)
{
    size_t i, digits;
    for (i = 0; i < 8; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    if (name[i++] != '.')
        return false;
    if (name[i] == 'r')
        i++;
    for (digits = 0; name[i] >= '0' && name[i] <= '9'; i++)
        digits++;
    return digits > 0 && digits <= 9 && name[i] == '\0';
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Feed the CA directory to ctx: the sorted names OpenSSL could load there, each with its file's SHA-256 (or a
 * mark that it holds nothing). A missing directory holds nothing. 0, or -1 (why) when unreadable or past the
 * caps.
 */
static int digest_dir(EVP_MD_CTX *ctx, const char *path, uint64_t *budget, char *why, size_t whylen)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *d;
    DIR *dir = NULL;
    int fd, rc = -1;

    if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return EVP_DigestUpdate(ctx, "absent", 7) == 1 ? 0 : -1;
        posh_msg(why, whylen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if ((dir = fdopendir(fd)) == NULL) {
        posh_msg(why, whylen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    while ((d = readdir(dir)) != NULL) {
        if (!loadable_name(d->d_name))
            continue;
        if (n == ANCHOR_MAX_FILES) {
            posh_msg(why, whylen, "%s: over %d certificate files", path, ANCHOR_MAX_FILES);
            goto done;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 256 : 2 * cap;
            char **grown = realloc(names, ncap * sizeof(*names));
            if (grown == NULL)
                goto nomem;
            names = grown;
            cap = ncap;
        }
        if ((names[n] = strdup(d->d_name)) == NULL)
            goto nomem;
        n++;
    }
    if (n > 0)
        qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        unsigned char digest[32];
        int got = digest_file(dirfd(dir), names[i], digest, budget, why, whylen);
        if (got < 0 || EVP_DigestUpdate(ctx, names[i], strlen(names[i]) + 1) != 1 ||
            EVP_DigestUpdate(ctx, got == 0 ? digest : (const unsigned char *)"-", got == 0 ? 32 : 1) != 1)
            goto done;
    }
    rc = 0;
    goto done;
nomem:
    posh_msg(why, whylen, "out of memory");
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(dir);
    return rc;
}

/*
 * The scope of cfg with these anchors: SHA-256 over the CA file's content, the CA directory's (names and
 * contents), the connect-to list, the layouts and the redirect limit. Content, not paths: the same anchors at two
 * paths trust the same servers, so they share entries; other anchors at one path (a root removed) do not.
 */
static int make_scope(const posh_config *cfg, const char *file, const char *dir, unsigned char out[32], char *why,
                      size_t whylen)
{
    unsigned char digest[32];
    uint64_t budget = ANCHOR_MAX_BYTES;
    char buf[64];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1, got;

    memset(out, 0xff, 32);
    posh_msg(why, whylen, "cannot hash the trust anchors");
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, "posh store scope 2", 19) != 1)
        goto done;
    /* A tag per part (set or not), then its bytes: no two configurations hash alike by shifting. */
    if (file != NULL) {
        if ((got = digest_file(AT_FDCWD, file, digest, &budget, why, whylen)) > 0)
            posh_msg(why, whylen, "%s: missing or not a regular file", file);
        if (got != 0 || EVP_DigestUpdate(ctx, "F", 1) != 1 || EVP_DigestUpdate(ctx, digest, 32) != 1)
            goto done;
    } else if (EVP_DigestUpdate(ctx, "f", 1) != 1) {
        goto done;
    }
    if (dir != NULL ? EVP_DigestUpdate(ctx, "D", 1) != 1 || digest_dir(ctx, dir, &budget, why, whylen) != 0
                    : EVP_DigestUpdate(ctx, "d", 1) != 1)
        goto done;
    if (EVP_DigestUpdate(ctx, cfg->connect_to != NULL ? "s" : "-", 1) != 1 ||
        (cfg->connect_to != NULL && EVP_DigestUpdate(ctx, cfg->connect_to, strlen(cfg->connect_to) + 1) != 1))
        goto done;
    snprintf(buf, sizeof(buf), "layouts=%u redirects=%ld", cfg->layouts, cfg->max_redirects);
    if (EVP_DigestUpdate(ctx, buf, strlen(buf)) != 1 || EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32) {
        memset(out, 0xff, 32);
        goto done;
    }
    rc = 0;
done:
    EVP_MD_CTX_free(ctx);
    return rc;
}

int posh_store_scope(const posh_config *cfg, unsigned char out[32])
{
    const char *file, *dir;
    char why[POSH_MSG_LEN];

    if (!effective_anchors(cfg, &file, &dir)) {
        memset(out, 0xff, 32);
        return -1;
    }
    return make_scope(cfg, file, dir, out, why, sizeof(why));
}

/*
 * The scope to file entries under now, in out; false: none (the anchors cannot be hashed), so no disk access.
 * *moved (may be NULL): the anchors moved since the client started (then it no longer writes).
 * Two stat() calls each time; the anchors are hashed again when either moved (inode, size, times). A file
 * changed inside a CA directory without the directory itself changing is noticed by the next client only.
 */
static bool scope_now(posh_store *s, unsigned char out[32], bool *moved)
{
    char why[POSH_MSG_LEN];
    anchor_id file, dir;
    bool ok;

    anchor_stat(s->anchor_file, &file);
    anchor_stat(s->anchor_dir, &dir);
    pthread_mutex_lock(&s->lock);
    if (!same_anchor(&file, &s->file_id) || !same_anchor(&dir, &s->dir_id)) {
        s->scope_ok = make_scope(s->cfg, s->anchor_file, s->anchor_dir, s->scope, why, sizeof(why)) == 0;
        s->file_id = file;
        s->dir_id = dir;
        s->anchors_moved = true;
        if (s->scope_ok)
            posh_log(POSH_LOG_WARNING, "persistent cache: the trust anchors changed; entries fetched under the "
                                       "others are not used, and this client writes no more entries (its "
                                       "connections were verified under the old ones; a new client will)");
        else
            posh_log(POSH_LOG_WARNING, "persistent cache not used while the trust anchors cannot be hashed: %s",
                     why);
    }
    ok = s->scope_ok;
    memcpy(out, s->scope, 32);
    if (moved != NULL)
        *moved = s->anchors_moved;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

posh_store *posh_store_open(const posh_config *cfg)
{
    char why[POSH_MSG_LEN];
    posh_store *s;
    int fd;

    if (cfg->cache_dir == NULL)
        return NULL;
    if ((fd = posh_store_dir_open(cfg->cache_dir, 1, why, sizeof(why))) < 0) {
        posh_log(POSH_LOG_WARNING, "persistent cache not used: %s; results are cached in memory only", why);
        return NULL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        close(fd);
        return NULL;
    }
    s->dirfd = fd;
    s->cfg = cfg;
    s->entries = -1;
    pthread_mutex_init(&s->lock, NULL);
    if (!effective_anchors(cfg, &s->anchor_file, &s->anchor_dir)) {
        posh_log(POSH_LOG_WARNING, "persistent cache not used: libcurl does not say which trust anchors it uses "
                                   "by default (set POSH_CA_FILE and POSH_CA_PATH)");
        posh_store_free(s);
        return NULL;
    }
    /* Hashed now (the start-up cost: README "Persistent cache"), then again whenever the anchors move. */
    anchor_stat(s->anchor_file, &s->file_id);
    anchor_stat(s->anchor_dir, &s->dir_id);
    s->scope_ok = make_scope(cfg, s->anchor_file, s->anchor_dir, s->scope, why, sizeof(why)) == 0;
    if (!s->scope_ok)
        posh_log(POSH_LOG_WARNING, "persistent cache not used while the trust anchors cannot be hashed: %s", why);
    return s;
}

static void pending_drop(posh_store *s)
{
    for (size_t i = 0; i < s->n_pending; i++)
        free(s->pending[i].buf);
    s->n_pending = 0;
}

void posh_store_free(posh_store *s)
{
    if (s == NULL)
        return;
    posh_store_drain(s); /* the engine drained its own before it stopped: nothing normally */
    close(s->dirfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void posh_store_atfork_prepare(posh_store *s)
{
    if (s != NULL)
        pthread_mutex_lock(&s->lock);
}

void posh_store_atfork_parent(posh_store *s)
{
    if (s != NULL)
        pthread_mutex_unlock(&s->lock);
}

void posh_store_atfork_child(posh_store *s)
{
    if (s == NULL)
        return;
    pthread_mutex_unlock(&s->lock);
    pending_drop(s); /* the parent writes them (the engine forks between passes: there are none anyway) */
}

/* ---- bounds ---- */

/* Trims go down to 7/8 of the marks; under 8 entries, to the mark itself (a scan of so few costs nothing). */
static posh_store_limits limits(const posh_store *s, size_t entries, uint64_t bytes)
{
    return (posh_store_limits){
        .high_entries = entries,
        .low_entries = entries - entries / 8,
        .high_bytes = bytes,
        .low_bytes = bytes - bytes / 8,
        .now = posh_config_wall_now(s->cfg),
        .max_age = entries == 0 ? 0 : s->cfg->max_ttl,
    };
}

/*
 * Count a write of len bytes. The directory is scanned only past a high-water mark (the cache size, the byte
 * cap) and then trimmed to the low ones (7/8): a scan costs one fstatat per entry, so it comes at most once per
 * cache_size / 8 writes of this process. The first write of a store scans once to learn the count.
 */
static void count_write(posh_store *s, size_t len)
{
    posh_store_limits lim = limits(s, (size_t)s->cfg->cache_size, STORE_MAX_BYTES);
    uint64_t bytes = 0;
    size_t left;
    bool scan;

    pthread_mutex_lock(&s->lock);
    if (s->trimming) {
        s->since_entries++;
        s->since_bytes += len;
    } else if (s->entries >= 0) {
        s->entries++;
        s->bytes += len;
    }
    scan = !s->trimming && (s->entries < 0 || (size_t)s->entries > lim.high_entries || s->bytes > lim.high_bytes);
    if (scan) {
        s->trimming = true;
        s->since_entries = 0;
        s->since_bytes = 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (!scan)
        return;
    left = posh_store_trim(s->dirfd, &lim, &bytes);
    pthread_mutex_lock(&s->lock);
    s->entries = (long)left + s->since_entries;
    s->bytes = bytes + s->since_bytes;
    s->trimming = false;
    pthread_mutex_unlock(&s->lock);
}

void posh_store_flush(posh_store *s)
{
    posh_store_limits lim;

    if (s == NULL)
        return;
    lim = limits(s, 0, 0);
    posh_store_trim(s->dirfd, &lim, NULL);
    pthread_mutex_lock(&s->lock);
    if (!s->trimming)
        s->entries = -1; /* counted again at the next write: other processes may write meanwhile */
    pthread_mutex_unlock(&s->lock);
}

/* The largest entry this client can have written: two documents of max_bytes each and the rest at its cap. */
static size_t entry_cap(const posh_config *cfg)
{
    return POSH_STORE_MAX_ENTRY - 2 * (size_t)POSH_STORE_MAX_DOC + 2 * (size_t)cfg->max_bytes;
}

static int64_t life(int64_t expires, long max_ttl)
{
    return expires < max_ttl ? expires : (int64_t)max_ttl;
}

posh_result *posh_store_load(posh_client *client, const char *domain, const char *service)
{
    const posh_config *cfg = client->cfg;
    char name[POSH_STORE_NAME_LEN + 1], why[POSH_MSG_LEN];
    unsigned char *buf = NULL, scope[32];
    posh_store_entry e;
    posh_trace trace = {.n = 0};
    posh_result *r = NULL;
    int64_t now, left;
    size_t len;
    int rc;

    memset(&e, 0, sizeof(e));
    if (client->store == NULL || !scope_now(client->store, scope, NULL))
        return NULL;
    posh_store_entry_name(domain, service, scope, name);
    rc = posh_store_read(client->store->dirfd, name, entry_cap(cfg), &buf, &len, why, sizeof(why));
    if (rc == 0)
        return NULL;
    if (rc < 0)
        goto refused;
    if (posh_store_entry_parse(buf, len, &e, why, sizeof(why)) != POSH_OK)
        goto refused;
    if (strcmp(e.domain, domain) != 0 || strcmp(e.service, service) != 0) {
        posh_msg(why, sizeof(why), "an entry for %s %s", e.domain, e.service);
        goto refused;
    }
    if (e.source_doc_len > (size_t)cfg->max_bytes || e.target_doc_len > (size_t)cfg->max_bytes) {
        posh_msg(why, sizeof(why), "a document over the body cap of %ld bytes", cfg->max_bytes);
        goto refused;
    }
    if (((e.source.kind == POSH_DOC_REFERENCE ? e.target.format : e.source.format) & cfg->formats) == 0) {
        posh_msg(why, sizeof(why), "a document of a form this client does not accept (POSH_FORMATS)");
        goto refused;
    }
    /* Wall-clock expiry. Fetched "in the future": the clock went back, and nothing says how old it is. */
    now = posh_config_wall_now(cfg);
    if (e.fetched > now || e.target_fetched > now) {
        posh_log(POSH_LOG_DEBUG, "cache entry %s %s: fetched after now (the clock went back): stale", domain,
                 service);
        goto done;
    }
    left = e.fetched + life(e.source.expires, cfg->max_ttl) - now;
    if (e.source.kind == POSH_DOC_REFERENCE && e.target_fetched + life(e.target.expires, cfg->max_ttl) - now < left)
        left = e.target_fetched + life(e.target.expires, cfg->max_ttl) - now;
    if (left <= 0)
        goto done; /* stale: fetched again, and replaced */
    trace.req[trace.n++] = (posh_request){.url = e.source_url, .status = (long)e.source_status};
    if (e.source.kind == POSH_DOC_REFERENCE)
        trace.req[trace.n++] = (posh_request){.url = e.target_url, .status = (long)e.target_status};
    r = posh_result_build(&(posh_result_parts){
        .domain = domain,
        .service = service,
        .err = POSH_OK,
        .message = "",
        .trace = &trace,
        .followed_reference = e.source.kind == POSH_DOC_REFERENCE,
        .ttl = (long)left,
        .expires_at = posh_config_now(cfg) + (time_t)left,
        .doc = e.source.kind == POSH_DOC_REFERENCE ? &e.target : &e.source,
        .allow_sha1 = !cfg->no_sha1,
        .from_store = true,
    });
    if (r != NULL)
        posh_store_mark_used(client->store->dirfd, name); /* in use: kept over entries nobody used again */
    goto done;
refused:
    posh_log(POSH_LOG_WARNING, "cache entry %s for %s %s ignored: %s", name, domain, service, why);
done:
    posh_store_entry_clear(&e);
    free(buf);
    return r;
}

/* Write one serialised entry: an entry in use stays marked so (its rewrite is the same key, still in use). */
static void write_entry(posh_store *s, const char *name, const unsigned char *buf, size_t len, const char *what)
{
    char why[POSH_MSG_LEN];
    mode_t mode = posh_store_in_use(s->dirfd, name) ? 0400 : 0600;

    if (posh_store_write_mode(s->dirfd, name, buf, len, mode, why, sizeof(why)) == 0) {
        count_write(s, len);
        return;
    }
    posh_log(__atomic_exchange_n(&s->write_warned, 1, __ATOMIC_RELAXED) ? POSH_LOG_DEBUG : POSH_LOG_WARNING,
             "persistent cache: %s not written: %s", what, why);
}

void posh_store_drain(posh_store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_pending; i++)
        write_entry(s, s->pending[i].name, s->pending[i].buf, s->pending[i].len, s->pending[i].what);
    pending_drop(s);
}

void posh_store_save(posh_client *client, const char *domain, const char *service, int64_t fetched_wall,
                     const char *src_url, long src_status, const char *src_doc, size_t src_len,
                     const posh_result *target)
{
    posh_store *s = client->store;
    char name[POSH_STORE_NAME_LEN + 1], what[sizeof(s->pending[0].what)];
    unsigned char *buf = NULL, scope[32];
    posh_store_entry e;
    bool moved = false;
    size_t len;

    if (s == NULL || src_url == NULL || src_doc == NULL || (target != NULL && target->doc == NULL))
        return;
    /* Filed under the anchors of now, which are the ones this client's fetches loaded unless they moved. */
    if (!scope_now(s, scope, &moved) || moved)
        return;
    memset(&e, 0, sizeof(e));
    e.fetched = fetched_wall;
    posh_msg(e.domain, sizeof(e.domain), "%s", domain);
    posh_msg(e.service, sizeof(e.service), "%s", service);
    posh_msg(e.source_url, sizeof(e.source_url), "%s", src_url);
    e.source_status = (uint32_t)src_status;
    e.source_doc = src_doc;
    e.source_doc_len = src_len;
    if (target != NULL) {
        e.target_fetched = target->fetched_wall;
        posh_msg(e.target_url, sizeof(e.target_url), "%s", target->doc_url);
        e.target_status = (uint32_t)target->doc_status;
        e.target_doc = target->doc;
        e.target_doc_len = target->doc_len;
    }
    posh_store_entry_name(domain, service, scope, name);
    posh_msg(what, sizeof(what), "%s %s", domain, service);
    if (posh_store_entry_serialize(&e, &buf, &len) != POSH_OK) {
        posh_log(__atomic_exchange_n(&s->write_warned, 1, __ATOMIC_RELAXED) ? POSH_LOG_DEBUG : POSH_LOG_WARNING,
                 "persistent cache: %s not written: cannot serialise the entry", what);
        return;
    }
    /*
     * On the engine thread the write waits until the pass's transfers are serviced (posh_store_drain, from
     * engine.c): a disk write never delays the handling of a transfer that completed in the same pass.
     */
    if (posh_engine_is_current_thread(client)) {
        if (s->n_pending == PENDING_MAX)
            posh_store_drain(s); /* a pass that completed more lookups than that: write the earlier ones now */
        pending_write *p = &s->pending[s->n_pending++];
        memcpy(p->name, name, sizeof(p->name));
        memcpy(p->what, what, sizeof(p->what));
        p->buf = buf;
        p->len = len;
        return;
    }
    write_entry(s, name, buf, len, what);
    free(buf);
}
