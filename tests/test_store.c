/*
 * test_store.c - the persistent cache directory against a real nginx: a new client (a new process) starts warm,
 * an unsafe directory is refused, anything odd in an entry's place is ignored and replaced, concurrent
 * processes never see a partial entry, expiry is judged on an injected wall clock (clock going back too),
 * entries are filed under the trust anchors' content, and the directory is bounded without a scan per write.
 */
#include "fixture.h"
#include "client_internal.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

/*
 * Every readdir() of this process is counted (the library's calls resolve to this definition first): how many
 * directory entries a lookup walks, whatever code walks them.
 */
static long readdir_calls;

struct dirent *readdir(DIR *d)
{
    static struct dirent *(*real)(DIR *);
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "readdir");
    __atomic_add_fetch(&readdir_calls, 1, __ATOMIC_RELAXED);
    return real(d);
}

static fx f;
static char dir[256];
static char base[64];
static time_t wall_now;
static time_t mono_now;

static time_t fake_clock(void *arg)
{
    return *(time_t *)arg;
}

static void setup(void)
{
    fx_init(&f);
    snprintf(base, sizeof(base), "/tmp/posh-store-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/cache", base);
    cr_assert_eq(mkdir(dir, 0700), 0);
    wall_now = 1700000000;
    mono_now = 1000;
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", base);
    fx_fini(&f);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

/* A client with the cache directory d, the memory clock and the wall clock injected. */
static posh_client *store_client(const char *d)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_cache_dir(cfg, d), POSH_OK);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &mono_now), POSH_OK);
    posh_config_set_wall_clock(cfg, fake_clock, &wall_now);
    posh_client *c = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c);
    return c;
}

/* One lookup of FOO (or domain) by a new client, as a new process would make it; returns the error. */
static posh_err fresh_lookup(const char *domain, long *ttl, int *shared)
{
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    posh_err err = posh_lookup(c, domain, "xmpp-server", &r);
    cr_assert_not_null(r);
    if (ttl != NULL)
        *ttl = posh_result_ttl(r);
    if (shared != NULL)
        *shared = posh_result_request_shared(r, 0);
    posh_result_free(r);
    posh_client_free(c);
    return err;
}

static void entry_path(const char *domain, char *out, size_t outlen)
{
    char name[POSH_STORE_NAME_LEN + 1];
    unsigned char scope[32];
    posh_config *cfg = fx_config(&f); /* what store_client() fetches with */
    posh_store_scope(cfg, scope);
    posh_config_free(cfg);
    posh_store_entry_name(domain, "_xmpp-server._tcp", scope, name);
    snprintf(out, outlen, "%s/%s", dir, name);
}

static size_t count_files(const char *d)
{
    DIR *dd = opendir(d);
    struct dirent *e;
    size_t n = 0;
    cr_assert_not_null(dd);
    while ((e = readdir(dd)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dd);
    return n;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;
    long n;
    cr_assert_not_null(fp, "%s", path);
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    rewind(fp);
    cr_assert_not_null(buf = malloc((size_t)n + 1));
    cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "%s", path);
    cr_assert_eq(fwrite(buf, 1, len, fp), len);
    cr_assert_eq(fclose(fp), 0);
}

static posh_err cert_match(posh_client *c, const posh_result *r, ts_cert *cert, int *match)
{
    size_t len = 0;
    const unsigned char *der = ts_cert_der(cert, &len);
    return posh_match_der(c, r, der, len, match, NULL);
}

/* ---- a new process starts warm ---- */

Test(store, new_client_starts_warm)
{
    char path[512];
    struct stat st;
    long ttl = 0;
    int shared = 0;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    entry_path(FOO, path, sizeof(path));
    cr_assert_eq(lstat(path, &st), 0, "the entry was written");
    cr_expect(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600, "mode %o", st.st_mode);
    wall_now += 100;
    cr_assert_eq(fresh_lookup(FOO, &ttl, &shared), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "zero requests: the new client started warm");
    cr_expect_eq(ttl, 200, "what is left of the entry's life");
    cr_expect_eq(shared, 1, "the request was an earlier process's");

    /* The result from disk matches as the fetched one does. */
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    int match = 0;
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_assert_eq(cert_match(c, r, f.svc, &match), POSH_OK);
    cr_expect_eq(match, 1);
    cr_assert_eq(cert_match(c, r, f.other, &match), POSH_OK);
    cr_expect_eq(match, 0);
    posh_result_free(r);
    posh_client_free(c);
}

Test(store, another_fetch_configuration_is_not_warm)
{
    /*
     * Entries are filed under the fetch configuration: a process that routes its fetches otherwise (here
     * another connect-to list reaching the same server; other trust anchors alike) never takes an entry it
     * would not have fetched itself for its own. Each keeps its own, and stays warm with it.
     */
    char connect_to[128];
    posh_config *cfg;
    posh_client *c;
    posh_result *r = NULL;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "the same configuration: warm");
    snprintf(connect_to, sizeof(connect_to), "::127.0.0.1:%d", ts_nginx_port(f.nginx));
    for (int round = 0; round < 2; round++) {
        cfg = fx_config(&f);
        cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
        cr_assert_eq(posh_config_set_cache_dir(cfg, dir), POSH_OK);
        cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &mono_now), POSH_OK);
        posh_config_set_wall_clock(cfg, fake_clock, &wall_now);
        cr_assert_not_null(c = posh_client_new(cfg));
        posh_config_free(cfg);
        cr_expect_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
        posh_result_free(r);
        posh_client_free(c);
    }
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "another configuration fetched once, then was warm");
    cr_expect_eq(count_files(dir), 2, "one entry per configuration");
}

Test(store, failures_are_not_persisted)
{
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_ERR_NO_POSH);
    cr_expect_eq(count_files(dir), 0, "a \"no POSH\" is never written");
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_ERR_NO_POSH);
    cr_expect_eq(fx_requests(&f, FOO, NULL), 4);
}

/* ---- the directory must be ours and nobody else's to write ---- */

typedef struct refused_case {
    const char *dir;
} refused_case;

static void two_lookups(void *arg)
{
    const char *d = arg;
    for (int i = 0; i < 2; i++) {
        posh_client *c = store_client(d);
        posh_result *r = NULL;
        cr_expect_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "POSH keeps working from memory");
        posh_result_free(r);
        posh_client_free(c);
    }
}

static void expect_refused(const char *d, const char *why)
{
    char *log = fx_stderr_of(two_lookups, (void *)d);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "%s: not used, so each client fetched", why);
    cr_expect_eq(count_files(dir), 0, "%s: nothing written", why);
    cr_expect_not_null(strstr(log, "persistent cache not used"), "%s: logged: %s", why, log);
    free(log);
}

Test(store, group_writable_dir_refused)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(chmod(dir, 0770), 0);
    expect_refused(dir, "group-writable");
}

Test(store, other_writable_dir_refused)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(chmod(dir, 01777), 0);
    expect_refused(dir, "world-writable, sticky");
}

/*
 * A POSIX ACL that lets another user write: the mode's group bits then show the ACL's mask (rwx), which the
 * directory check reads from fstat. Set through the raw xattr (no setfacl needed): version 2, then entries
 * (tag, permissions, id) sorted by tag: owner rwx, user nobody rwx, group none, mask rwx, other none.
 */
Test(store, acl_letting_another_user_write_refused)
{
    static const uint16_t tags[5] = {0x01, 0x02, 0x04, 0x10, 0x20}, perms[5] = {7, 7, 0, 7, 0};
    unsigned char acl[4 + 5 * 8];
    struct passwd *pw = getpwnam("nobody");
    struct stat st;
    uint32_t v = 2;

    cr_assert_not_null(pw);
    memcpy(acl, &v, 4);
    for (size_t i = 0; i < 5; i++) {
        uint32_t id = tags[i] == 0x02 ? (uint32_t)pw->pw_uid : 0xffffffffu;
        memcpy(acl + 4 + 8 * i, &tags[i], 2);
        memcpy(acl + 4 + 8 * i + 2, &perms[i], 2);
        memcpy(acl + 4 + 8 * i + 4, &id, 4);
    }
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(chmod(dir, 0700), 0);
    cr_assert_eq(setxattr(dir, "system.posix_acl_access", acl, sizeof(acl), 0), 0,
                 "set an ACL on %s: %s (the test directory's file system must support POSIX ACLs)", dir,
                 strerror(errno));
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0770, "the ACL's mask shows in the group bits: %o", st.st_mode & 07777);
    expect_refused(dir, "an ACL letting nobody write");
}

Test(store, dir_of_another_user_refused)
{
    struct passwd *pw = getpwnam("nobody");
    cr_assert_not_null(pw);
    cr_assert_eq(geteuid(), 0, "the tests run as root");
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(chown(dir, pw->pw_uid, pw->pw_gid), 0);
    expect_refused(dir, "owned by nobody");
}

Test(store, symlinked_dir_refused)
{
    char link[300];
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(link, sizeof(link), "%s/link", base);
    cr_assert_eq(symlink(dir, link), 0);
    expect_refused(link, "a symbolic link to a good directory");
}

Test(store, missing_dir_created_owner_only)
{
    char sub[300];
    struct stat st;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(sub, sizeof(sub), "%s/new", base);
    posh_client *c = store_client(sub);
    posh_client_free(c);
    cr_assert_eq(lstat(sub, &st), 0);
    cr_expect(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700, "mode %o", st.st_mode);
}

/* ---- anything odd in an entry's place is ignored, never partly trusted, and replaced ---- */

typedef enum damage {
    TRUNCATE,
    FLIP_BYTE,
    FOREIGN_MAGIC,
    OTHER_VERSION,
    OTHER_DOMAIN,
    OVERSIZED,
    FIFO,
    SYMLINK,
    HARDLINK,
    GROUP_WRITABLE,
    NOT_OURS,
    EMPTY,
    DIRECTORY,
} damage;

static const char *const damage_names[] = {"truncated", "a flipped byte", "foreign magic", "another version",
                                           "another domain's entry", "oversized", "a FIFO", "a symlink",
                                           "a hard link", "group-writable", "owned by nobody", "empty",
                                           "a directory"};

static void apply(damage d, const char *path, const char *other_path)
{
    size_t len;
    unsigned char *buf = read_all(path, &len);
    char aside[600];

    switch (d) {
    case TRUNCATE:
        write_all(path, buf, len / 2);
        break;
    case FLIP_BYTE: {
        /* One letter of the fingerprint in another case: still valid base64 of the right length, another
         * certificate's digest. Only the entry's SHA-256 can tell. */
        unsigned char *fp = memmem(buf, len, "\"sha-256\":\"", 11);
        cr_assert_not_null(fp);
        /* The first letter of the value (the certificate is new each run: it may start with a digit). */
        for (fp += 11; *fp != '"' && !((*fp | 0x20) >= 'a' && (*fp | 0x20) <= 'z'); fp++)
            ;
        cr_assert(*fp != '"', "a fingerprint without a letter");
        *fp ^= 0x20;
        write_all(path, buf, len);
        break;
    }
    case FOREIGN_MAGIC:
        memcpy(buf, "POSHSTOX", 8);
        write_all(path, buf, len);
        break;
    case OTHER_VERSION:
        buf[11] = 2;
        write_all(path, buf, len);
        break;
    case OTHER_DOMAIN: {
        size_t olen;
        unsigned char *other = read_all(other_path, &olen);
        write_all(path, other, olen); /* a sound entry, for hosting.example.net, under foo's name */
        free(other);
        break;
    }
    case OVERSIZED: {
        size_t big = POSH_STORE_MAX_ENTRY + 10;
        unsigned char *huge = calloc(1, big);
        cr_assert_not_null(huge);
        memcpy(huge, buf, len);
        write_all(path, huge, big);
        free(huge);
        break;
    }
    case FIFO:
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(mkfifo(path, 0600), 0);
        break;
    case SYMLINK:
        /* A link to a sound copy of the entry: never followed. */
        snprintf(aside, sizeof(aside), "%s/copy", base);
        write_all(aside, buf, len);
        chmod(aside, 0600);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(symlink(aside, path), 0);
        break;
    case HARDLINK:
        snprintf(aside, sizeof(aside), "%s/hard", base);
        cr_assert_eq(link(path, aside), 0);
        break;
    case GROUP_WRITABLE:
        cr_assert_eq(chmod(path, 0620), 0);
        break;
    case NOT_OURS:
        cr_assert_eq(chown(path, getpwnam("nobody")->pw_uid, 0), 0);
        break;
    case EMPTY:
        write_all(path, "", 0);
        break;
    case DIRECTORY:
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(mkdir(path, 0700), 0);
        break;
    }
    free(buf);
}

static void check_damage(damage d)
{
    char path[512], other[512];
    struct stat st;
    long ttl = 0;

    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_doc1(f.other, 300));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_assert_eq(fresh_lookup(HOSTING, NULL, NULL), POSH_OK);
    entry_path(FOO, path, sizeof(path));
    entry_path(HOSTING, other, sizeof(other));
    apply(d, path, other);

    /* Ignored: the next client fetches (and, for another domain's entry, does not take its fingerprints). */
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    int match = 0;
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK, "%s", damage_names[d]);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "%s: ignored, fetched", damage_names[d]);
    cr_assert_eq(cert_match(c, r, f.svc, &match), POSH_OK);
    cr_expect_eq(match, 1, "%s: foo's own fingerprints", damage_names[d]);
    cr_assert_eq(cert_match(c, r, f.other, &match), POSH_OK);
    cr_expect_eq(match, 0, "%s: nothing of the entry was trusted", damage_names[d]);
    cr_expect_eq(posh_result_request_shared(r, 0), 0, "%s: fetched by this lookup", damage_names[d]);
    posh_result_free(r);
    posh_client_free(c);

    if (d == DIRECTORY) {
        /* rename() cannot replace a directory: the lookups go on working, from the network. */
        cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
        cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 3);
        return;
    }
    /* Replaced: a sound entry of ours again, and the next client is warm. */
    cr_assert_eq(lstat(path, &st), 0);
    cr_expect(S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == geteuid() && (st.st_mode & 0777) == 0600,
              "%s: replaced by a regular file of ours (mode %o, %lu links)", damage_names[d], st.st_mode,
              (unsigned long)st.st_nlink);
    cr_assert_eq(fresh_lookup(FOO, &ttl, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "%s: replaced, then warm", damage_names[d]);
}

Test(store, truncated_entry_replaced) { check_damage(TRUNCATE); }
Test(store, flipped_byte_replaced) { check_damage(FLIP_BYTE); }
Test(store, foreign_magic_replaced) { check_damage(FOREIGN_MAGIC); }
Test(store, other_version_replaced) { check_damage(OTHER_VERSION); }
Test(store, other_domains_entry_replaced) { check_damage(OTHER_DOMAIN); }
Test(store, oversized_entry_replaced) { check_damage(OVERSIZED); }
Test(store, fifo_replaced) { check_damage(FIFO); }
Test(store, symlink_replaced) { check_damage(SYMLINK); }
Test(store, hard_link_replaced) { check_damage(HARDLINK); }
Test(store, group_writable_entry_replaced) { check_damage(GROUP_WRITABLE); }
Test(store, entry_of_another_user_replaced) { check_damage(NOT_OURS); }
Test(store, empty_entry_replaced) { check_damage(EMPTY); }
Test(store, directory_in_place_ignored) { check_damage(DIRECTORY); }

/* ---- wall-clock expiry ---- */

Test(store, expiry_on_the_wall_clock)
{
    long ttl = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 100));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    wall_now += 99;
    mono_now = 5; /* the memory cache's clock says nothing about the disk's */
    cr_assert_eq(fresh_lookup(FOO, &ttl, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "fresh one second before expiry");
    cr_expect_eq(ttl, 1);
    wall_now += 1;
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "stale at expiry: fetched again");
    cr_assert_eq(fresh_lookup(FOO, &ttl, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "and written again");
    cr_expect_eq(ttl, 100);
}

Test(store, max_ttl_applies_on_load)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 100000));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    wall_now += 86400; /* the default POSH_MAX_TTL */
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "capped by the maximum TTL");
}

Test(store, clock_going_back_makes_stale)
{
    long ttl = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    wall_now -= 1000; /* the entry now says it was fetched in the future */
    cr_assert_eq(fresh_lookup(FOO, &ttl, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "an entry from the future is stale, never older-but-valid");
    cr_expect_eq(ttl, 300);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "rewritten with the clock as it is now");
    wall_now -= 1;
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 3, "one second back is back too");
}

/* ---- a reference: the target persisted with the entry, the min rule after reload ---- */

#define TARGET_PATH "/posh/target.json"
#define TARGET_URL "https://" HOSTING TARGET_PATH

Test(store, reference_min_rule_after_reload)
{
    long ttl = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref(TARGET_URL, 500));
    fx_put_free(&f, HOSTING, TARGET_PATH, fx_doc1(f.svc, 50));
    fx_start(&f);
    cr_assert_eq(fresh_lookup(FOO, NULL, NULL), POSH_OK);
    wall_now += 49;
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    int match = 0;
    const char *url = NULL;
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 1, "the target came from the entry");
    cr_expect_eq(posh_result_followed_reference(r), 1);
    cr_expect_eq(posh_result_ttl(r), 1, "the target's lower expires decides");
    cr_expect_eq(posh_result_request_count(r), 2);
    cr_expect(posh_result_request(r, 1, &url, NULL) && strcmp(url, TARGET_URL) == 0, "%s", url);
    cr_assert_eq(cert_match(c, r, f.svc, &match), POSH_OK);
    cr_expect_eq(match, 1);
    posh_result_free(r);
    posh_client_free(c);
    wall_now += 1;
    cr_assert_eq(fresh_lookup(FOO, &ttl, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "stale: again from the source domain");
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 2);
    cr_expect_eq(ttl, 50);
}

/* A target shared in memory keeps its own fetch time in the next domain's entry. */
Test(store, shared_target_keeps_its_fetch_time)
{
    long ttl = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_ref(TARGET_URL, 500));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_ref(TARGET_URL, 500));
    fx_put_free(&f, HOSTING, TARGET_PATH, fx_doc1(f.svc, 50));
    fx_start(&f);
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    posh_result_free(r);
    wall_now += 30;
    mono_now += 30;
    cr_assert_eq(posh_lookup(c, HOSTING, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(fx_requests(&f, HOSTING, TARGET_PATH), 1, "the target was shared in memory");
    cr_expect_eq(posh_result_ttl(r), 20);
    posh_result_free(r);
    posh_client_free(c);
    wall_now += 19;
    cr_assert_eq(fresh_lookup(HOSTING, &ttl, NULL), POSH_OK);
    cr_expect_eq(ttl, 1);
    cr_expect_eq(fx_requests(&f, HOSTING, RFC7711_PATH), 1, "warm");
    wall_now += 1;
    cr_assert_eq(fresh_lookup(HOSTING, NULL, NULL), POSH_OK);
    cr_expect_eq(fx_requests(&f, HOSTING, RFC7711_PATH), 2, "the target's fetch time counted, not the entry's");
}

/* ---- bounds ---- */

Test(store, bounded_by_cache_size_oldest_out)
{
    static const char *const svcs[] = {"a", "b", "c", "d"};
    char path[256];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/%s.json", svcs[i]);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 300));
    }
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_cache_dir(cfg, dir), POSH_OK);
    cr_assert_eq(posh_config_set_cache_size(cfg, 2), POSH_OK);
    for (size_t i = 0; i < 4; i++) {
        posh_client *c = posh_client_new(cfg);
        posh_result *r = NULL;
        cr_assert_eq(posh_lookup(c, FOO, svcs[i], &r), POSH_OK);
        posh_result_free(r);
        posh_client_free(c);
        usleep(20000); /* distinct modification times */
    }
    cr_expect_eq(count_files(dir), 2, "at most the cache size");
    posh_client *c = posh_client_new(cfg);
    posh_result *r = NULL;
    cr_assert_eq(posh_lookup(c, FOO, "d", &r), POSH_OK);
    posh_result_free(r);
    cr_assert_eq(posh_lookup(c, FOO, "a", &r), POSH_OK);
    posh_result_free(r);
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/d.json"), 1, "the newest stayed");
    cr_expect_eq(fx_requests(&f, FOO, "/.well-known/posh/a.json"), 2, "the oldest went");
    posh_client_free(c);
    posh_config_free(cfg);
}

Test(store, flush_empties_the_directory)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = store_client(dir);
    posh_result *r = NULL;
    cr_assert_eq(posh_lookup(c, FOO, "xmpp-server", &r), POSH_OK);
    posh_result_free(r);
    cr_expect_eq(count_files(dir), 1);
    posh_client_flush(c);
    cr_expect_eq(count_files(dir), 0);
    posh_client_free(c);
}

/* ---- processes racing on one directory ---- */

#define RACERS 6
#define ROUNDS 15

static const char *const race_svcs[] = {"xmpp-server", "a", "b", "c"};

/* A child: new clients looking up and writing the same and different keys; exit 0 when every result was sound. */
static int racer(int id)
{
    for (int round = 0; round < ROUNDS; round++) {
        posh_config *cfg = posh_config_new();
        posh_client *c;
        if (cfg == NULL || posh_config_set_ca_file(cfg, f.ca_file) != POSH_OK ||
            posh_config_set_connect_to(cfg, f.connect_to) != POSH_OK || posh_config_set_cache_dir(cfg, dir) != POSH_OK)
            return 2;
        c = posh_client_new(cfg);
        posh_config_free(cfg);
        if (c == NULL)
            return 3;
        for (size_t k = 0; k < 4; k++) {
            const char *domain = (round + id + (int)k) % 2 == 0 ? FOO : HOSTING;
            posh_result *r = NULL;
            int match = 0;
            if (posh_lookup(c, domain, race_svcs[(k + (size_t)id) % 4], &r) != POSH_OK)
                return 4;
            if (cert_match(c, r, f.svc, &match) != POSH_OK ||
                !match)
                return 5;
            posh_result_free(r);
        }
        if (round % 5 == 4)
            posh_client_flush(c); /* now and then everything goes: writers, readers and removers together */
        posh_client_free(c);
    }
    return 0;
}

/* A reader: every file with an entry's name that it can read is a whole, sound entry. */
static int reader(volatile sig_atomic_t *stop)
{
    char why[POSH_MSG_LEN];
    int fd = posh_store_dir_open(dir, 0, why, sizeof(why));
    long seen = 0;
    if (fd < 0)
        return 6;
    while (!*stop || seen == 0) {
        DIR *dd = opendir(dir);
        struct dirent *e;
        if (dd == NULL)
            return 7;
        while ((e = readdir(dd)) != NULL) {
            unsigned char *buf = NULL;
            size_t len = 0;
            posh_store_entry en;
            if (!posh_store_name_is_entry(e->d_name))
                continue;
            if (posh_store_read(fd, e->d_name, POSH_STORE_MAX_ENTRY, &buf, &len, why, sizeof(why)) != 1)
                continue; /* removed meanwhile */
            if (posh_store_entry_parse(buf, len, &en, why, sizeof(why)) != POSH_OK) {
                fprintf(stderr, "reader: %s: %s\n", e->d_name, why);
                return 8;
            }
            posh_store_entry_clear(&en);
            free(buf);
            seen++;
        }
        closedir(dd);
    }
    close(fd);
    return seen > 0 ? 0 : 9;
}

static volatile sig_atomic_t reader_stop;

static void on_usr1(int sig)
{
    (void)sig;
    reader_stop = 1;
}

Test(store, processes_race_on_one_directory)
{
    pid_t kids[RACERS], rd;
    int status;
    char path[256];

    for (size_t i = 1; i < 4; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/%s.json", race_svcs[i]);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 300));
        fx_put_free(&f, HOSTING, path, fx_ref("https://" FOO "/posh/target.json", 300));
    }
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_put_free(&f, HOSTING, RFC7711_PATH, fx_ref("https://" FOO "/posh/target.json", 300));
    fx_put_free(&f, FOO, "/posh/target.json", fx_doc1(f.svc, 300));
    fx_start(&f);
    fflush(NULL);
    signal(SIGUSR1, on_usr1);
    cr_assert_geq(rd = fork(), 0);
    if (rd == 0)
        _exit(reader(&reader_stop));
    for (int i = 0; i < RACERS; i++) {
        cr_assert_geq(kids[i] = fork(), 0);
        if (kids[i] == 0)
            _exit(racer(i));
    }
    for (int i = 0; i < RACERS; i++) {
        cr_assert_eq(waitpid(kids[i], &status, 0), kids[i]);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "racer %d: status %d", i, status);
    }
    kill(rd, SIGUSR1);
    cr_assert_eq(waitpid(rd, &status, 0), rd);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader: status %d", status);
    /* No temporary file left behind, and the next client of each key is sound. */
    DIR *dd = opendir(dir);
    struct dirent *e;
    cr_assert_not_null(dd);
    while ((e = readdir(dd)) != NULL)
        cr_expect(strncmp(e->d_name, ".tmp.", 5) != 0, "temporary file left: %s", e->d_name);
    closedir(dd);
}

/* ---- the scope: entries are filed under the trust anchors' content ---- */

/* A client routed to the fixture's nginx, trusting ca_file and/or ca_path (NULL: libcurl's default for it). */
static posh_client *anchored_client(const char *ca_file, const char *ca_path, long cache_size)
{
    posh_config *cfg = posh_config_new();
    posh_client *c;
    cr_assert_not_null(cfg);
    cr_assert_eq(posh_config_set_ca_file(cfg, ca_file), POSH_OK);
    cr_assert_eq(posh_config_set_ca_path(cfg, ca_path), POSH_OK);
    cr_assert_eq(posh_config_set_connect_to(cfg, f.connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_cache_dir(cfg, dir), POSH_OK);
    if (cache_size > 0)
        cr_assert_eq(posh_config_set_cache_size(cfg, cache_size), POSH_OK);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &mono_now), POSH_OK);
    posh_config_set_wall_clock(cfg, fake_clock, &wall_now);
    cr_assert_not_null(c = posh_client_new(cfg));
    posh_config_free(cfg);
    return c;
}

/* One lookup; *from_disk: the result came from the persistent cache (an earlier client's request). */
static posh_err lookup_svc(posh_client *c, const char *domain, const char *svc, int *from_disk)
{
    posh_result *r = NULL;
    posh_err err = posh_lookup(c, domain, svc, &r);
    if (from_disk != NULL)
        *from_disk = r != NULL && posh_result_request_count(r) > 0 && posh_result_request_shared(r, 0);
    posh_result_free(r);
    return err;
}

static void write_text(const char *path, const char *a, const char *b)
{
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp, "%s", path);
    cr_assert(fputs(a, fp) >= 0 && (b == NULL || fputs(b, fp) >= 0));
    cr_assert_eq(fclose(fp), 0);
}

/* A process whose working directory is d, trusting the relative "ca.pem" there: by the setter or POSH_CA_FILE. */
static posh_err lookup_from(const char *d, bool by_env, int *from_disk)
{
    char cwd[PATH_MAX];
    posh_config *cfg = posh_config_new();
    posh_client *c;
    posh_err err;
    cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
    cr_assert_eq(chdir(d), 0);
    cr_assert_not_null(cfg);
    if (by_env) {
        setenv("POSH_CA_FILE", "ca.pem", 1);
        cr_assert_eq(posh_config_load_env(cfg), POSH_OK, "%s", posh_config_error(cfg));
        unsetenv("POSH_CA_FILE");
    } else {
        cr_assert_eq(posh_config_set_ca_file(cfg, "ca.pem"), POSH_OK);
    }
    cr_expect(cfg->ca_file != NULL && cfg->ca_file[0] == '/', "made absolute when configured: %s", cfg->ca_file);
    cr_assert_eq(posh_config_set_connect_to(cfg, f.connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_cache_dir(cfg, dir), POSH_OK);
    posh_config_set_wall_clock(cfg, fake_clock, &wall_now);
    cr_assert_not_null(c = posh_client_new(cfg));
    posh_config_free(cfg);
    err = lookup_svc(c, FOO, "xmpp-server", from_disk);
    posh_client_free(c);
    cr_assert_eq(chdir(cwd), 0);
    return err;
}

Test(store, relative_ca_files_in_two_directories_never_share)
{
    /*
     * Two processes each trusting "ca.pem" of their own working directory: the first's CA trusts the web server,
     * the second's does not. The second must not take the first's entry from disk; it fetches, and fails.
     */
    char trusting[300], other[300], path[400];
    int from_disk = -1;
    ts_ca *stranger = ts_ca_new("Stranger Root");

    cr_assert_not_null(stranger);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(trusting, sizeof(trusting), "%s/a", base);
    snprintf(other, sizeof(other), "%s/b", base);
    cr_assert_eq(mkdir(trusting, 0700), 0);
    cr_assert_eq(mkdir(other, 0700), 0);
    snprintf(path, sizeof(path), "%s/ca.pem", trusting);
    cr_assert_eq(ts_ca_write(f.ca, path), 0);
    snprintf(path, sizeof(path), "%s/ca.pem", other);
    cr_assert_eq(ts_ca_write(stranger, path), 0);

    cr_assert_eq(lookup_from(trusting, false, &from_disk), POSH_OK);
    cr_expect_eq(count_files(dir), 1, "written");
    cr_expect_eq(lookup_from(trusting, true, &from_disk), POSH_OK, "the same file by POSH_CA_FILE");
    cr_expect_eq(from_disk, 1, "the same anchors: warm");
    for (int by_env = 0; by_env < 2; by_env++) {
        from_disk = -1;
        cr_expect_neq(lookup_from(other, by_env, &from_disk), POSH_OK,
                      "%s: another ca.pem, which does not trust the web server: fetched, and the fetch failed",
                      by_env ? "POSH_CA_FILE" : "the setter");
        cr_expect_eq(from_disk, 0, "never the other process's entry");
    }
    ts_ca_free(stranger);
}

Test(store, same_anchors_at_two_paths_share)
{
    /* The scope is what the anchors say, not where they are: a copy of the bundle elsewhere trusts the same. */
    char copy[300];
    int from_disk = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(copy, sizeof(copy), "%s/copy-of-ca.pem", base);
    cr_assert_eq(ts_ca_write(f.ca, copy), 0);
    posh_client *c = anchored_client(f.ca_file, NULL, 0);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", NULL), POSH_OK);
    posh_client_free(c);
    c = anchored_client(copy, NULL, 0);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1, "the same content at another path: the same entry");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    posh_client_free(c);
}

Test(store, root_removed_from_the_ca_file_entry_not_used)
{
    /*
     * The bundle trusts the test CA and another root; an entry is written under it. Then the other root is removed
     * from the file at the same path: neither a new client nor the one that wrote the entry uses it again.
     */
    char bundle[300];
    int from_disk = -1;
    ts_ca *extra = ts_ca_new("Removed Root");
    cr_assert_not_null(extra);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(bundle, sizeof(bundle), "%s/bundle.pem", base);
    write_text(bundle, ts_ca_pem(f.ca), ts_ca_pem(extra));

    posh_client *longlived = anchored_client(bundle, NULL, 0);
    cr_assert_eq(lookup_svc(longlived, FOO, "xmpp-server", NULL), POSH_OK);
    posh_client *c = anchored_client(bundle, NULL, 0);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1, "unchanged anchors: warm");
    posh_client_free(c);

    write_text(bundle, ts_ca_pem(f.ca), NULL); /* a root removed, at the same path */
    c = anchored_client(bundle, NULL, 0);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 0, "a new client: the entry fetched under the old anchors is not used");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    posh_client_free(c);

    /* The first client: its memory entry goes stale on its clock, the disk's is fresh on the wall clock. */
    write_text(bundle, ts_ca_pem(f.ca), ts_ca_pem(extra));
    cr_assert_eq(lookup_svc(c = anchored_client(bundle, NULL, 0), FOO, "xmpp-server", NULL), POSH_OK);
    posh_client_free(c); /* the bundle with both roots again: its entry is warm (content, not time, names it) */
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    write_text(bundle, ts_ca_pem(f.ca), NULL);
    mono_now += 1000;
    cr_assert_eq(lookup_svc(longlived, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1, "the entry written under the new anchors by the second client");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    write_text(bundle, ts_ca_pem(extra), ts_ca_pem(f.ca)); /* the same roots in another order: other bytes */
    mono_now += 1000;
    cr_assert_eq(lookup_svc(longlived, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 0, "the same client noticed the change: fetched");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 3);
    posh_client_free(longlived);
    /* ...and wrote nothing: libcurl may have fetched with the CA store it loaded before the change. */
    cr_assert_eq(lookup_svc(c = anchored_client(bundle, NULL, 0), FOO, "xmpp-server", &from_disk), POSH_OK);
    posh_client_free(c);
    cr_expect_eq(from_disk, 0, "a client whose anchors moved writes no entry");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 4);
    ts_ca_free(extra);
}

Test(store, ca_directory_scope_follows_its_content)
{
    char cadir[300], path[400], name[32];
    int from_disk = -1;
    ts_ca *extra = ts_ca_new("Another Root");
    cr_assert_not_null(extra);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(cadir, sizeof(cadir), "%s/certs", base);
    cr_assert_eq(mkdir(cadir, 0755), 0);
    fx_hashed_name(f.ca, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", cadir, name);
    cr_assert_eq(ts_ca_write(f.ca, path), 0);

    posh_client *longlived = anchored_client(NULL, cadir, 0); /* the web server trusted through the directory */
    cr_assert_eq(lookup_svc(longlived, FOO, "xmpp-server", NULL), POSH_OK);
    posh_client *c = anchored_client(NULL, cadir, 0);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1, "the same directory: warm");
    posh_client_free(c);

    /* A file OpenSSL never loads (not a hash name) changes nothing. */
    snprintf(path, sizeof(path), "%s/README", cadir);
    write_text(path, "not a certificate\n", NULL);
    cr_assert_eq(lookup_svc(c = anchored_client(NULL, cadir, 0), FOO, "xmpp-server", &from_disk), POSH_OK);
    posh_client_free(c);
    cr_expect_eq(from_disk, 1, "a name OpenSSL does not load: the same anchors");

    /* Another root in the directory: other anchors, for a new client and for the one running. */
    fx_hashed_name(extra, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", cadir, name);
    cr_assert_eq(ts_ca_write(extra, path), 0);
    cr_assert_eq(lookup_svc(c = anchored_client(NULL, cadir, 0), FOO, "xmpp-server", &from_disk), POSH_OK);
    posh_client_free(c);
    cr_expect_eq(from_disk, 0, "a root added to the directory: the entry is not used");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    cr_assert_eq(unlink(path), 0);
    mono_now += 1000;
    cr_assert_eq(lookup_svc(longlived, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1, "removed again: the first entry's anchors, and the running client noticed");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2);
    posh_client_free(longlived);
    ts_ca_free(extra);
}

Test(store, default_store_scope_is_what_libcurl_loads)
{
    /*
     * The system's files are not touched: the default scope (no CA configured) must be the scope of libcurl's
     * built-in CA file and directory named explicitly, stable from one client to the next, and not a CA file's.
     */
    CURL *h = curl_easy_init();
    char *cainfo = NULL, *capath = NULL;
    unsigned char dflt[32], again[32], named[32], fixture[32], none[32];
    posh_config *cfg;

    cr_assert_not_null(h);
    cr_assert_eq(curl_easy_getinfo(h, CURLINFO_CAINFO, &cainfo), CURLE_OK);
    cr_assert_eq(curl_easy_getinfo(h, CURLINFO_CAPATH, &capath), CURLE_OK);
    cr_assert(cainfo != NULL || capath != NULL, "this libcurl has a built-in store");
    cr_assert_not_null(cfg = posh_config_new());
    posh_store_scope(cfg, dflt);
    posh_store_scope(cfg, again);
    cr_expect_eq(memcmp(dflt, again, 32), 0, "stable");
    cr_assert_eq(posh_config_set_ca_file(cfg, cainfo), POSH_OK);
    cr_assert_eq(posh_config_set_ca_path(cfg, capath), POSH_OK);
    posh_store_scope(cfg, named);
    cr_expect_eq(memcmp(dflt, named, 32), 0, "the default store is libcurl's built-in file and directory");
    cr_assert_eq(posh_config_set_ca_file(cfg, f.ca_file), POSH_OK);
    posh_store_scope(cfg, fixture);
    cr_expect_neq(memcmp(dflt, fixture, 32), 0, "a CA file's scope differs");
    memset(none, 0xff, 32); /* what a configuration whose anchors cannot be hashed gets: never a scope */
    cr_expect_neq(memcmp(dflt, none, 32), 0, "the default store was hashed");
    cr_expect_neq(memcmp(fixture, none, 32), 0, "the CA file was hashed");
    posh_config_free(cfg);
    curl_easy_cleanup(h);
}

static void lookups_with_big_cadir(void *arg)
{
    const char *cadir = arg;
    for (int i = 0; i < 2; i++) {
        posh_client *c = anchored_client(f.ca_file, cadir, 0);
        cr_expect_eq(lookup_svc(c, FOO, "xmpp-server", NULL), POSH_OK, "POSH keeps working from the network");
        posh_client_free(c);
    }
}

Test(store, anchors_past_the_cap_no_disk_cache)
{
    /* A CA directory with more loadable names than are hashed: no scope, so nothing read or written (logged). */
    char cadir[300], path[400];
    char *log;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    snprintf(cadir, sizeof(cadir), "%s/many", base);
    cr_assert_eq(mkdir(cadir, 0755), 0);
    for (int i = 0; i < 4097; i++) {
        snprintf(path, sizeof(path), "%s/%08x.0", cadir, i);
        write_text(path, "", NULL);
    }
    log = fx_stderr_of(lookups_with_big_cadir, cadir);
    cr_expect_eq(count_files(dir), 0, "nothing written");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 2, "each client fetched");
    cr_expect_not_null(strstr(log, "trust anchors cannot be hashed"), "logged: %s", log);
    free(log);
}

/* ---- bounds without a scan per write ---- */

/* n entries of other keys, as other processes would have left them: the trim reads names and metadata only. */
static void fill_directory(size_t n)
{
    char why[POSH_MSG_LEN], name[POSH_STORE_NAME_LEN + 1], domain[64];
    unsigned char scope[32] = {0};
    int fd = posh_store_dir_open(dir, 0, why, sizeof(why));
    cr_assert_geq(fd, 0, "%s", why);
    for (size_t i = 0; i < n; i++) {
        snprintf(domain, sizeof(domain), "d%zu.example", i);
        posh_store_entry_name(domain, "_xmpp-server._tcp", scope, name);
        cr_assert_eq(posh_store_write(fd, name, (const unsigned char *)"x", 1, why, sizeof(why)), 0, "%s", why);
    }
    close(fd);
}

Test(store, ten_thousand_entries_no_scan_per_lookup)
{
    /*
     * Three keys in use (written, then read back by another client), then 10,000 entries nobody used again (a
     * burst of other keys), then 60 persisted lookups: one scan at most, the directory bounded, the three kept.
     */
    enum { IN_USE = 3, FILLED = 10000, LOOKUPS = 60 };
    char path[64];
    int from_disk = 0;
    long walked;

    for (int i = 0; i < LOOKUPS; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/k%d.json", i);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 300));
    }
    for (int i = 0; i < IN_USE; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/u%d.json", i);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 300));
    }
    fx_start(&f);
    for (int round = 0; round < 2; round++) {
        posh_client *c = store_client(dir);
        for (int i = 0; i < IN_USE; i++) {
            snprintf(path, sizeof(path), "u%d", i);
            cr_assert_eq(lookup_svc(c, FOO, path, &from_disk), POSH_OK);
        }
        posh_client_free(c);
    }
    fill_directory(FILLED);
    posh_client *c = store_client(dir); /* the cache size: 10,000 (the default) */
    __atomic_store_n(&readdir_calls, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < LOOKUPS; i++) {
        snprintf(path, sizeof(path), "k%d", i);
        cr_assert_eq(lookup_svc(c, FOO, path, NULL), POSH_OK);
    }
    walked = __atomic_load_n(&readdir_calls, __ATOMIC_RELAXED);
    posh_client_free(c);
    cr_log_info("%d persisted lookups over %d entries walked %ld directory entries", LOOKUPS, FILLED, walked);
    /* One scan at most (the count learnt at the first write, trimmed past the high-water mark). */
    cr_expect_leq(walked, FILLED + LOOKUPS + 1000, "%d persisted lookups walked %ld directory entries", LOOKUPS,
                  walked);
    cr_expect_leq(count_files(dir), 10000, "bounded by the cache size");
    cr_expect_geq(count_files(dir), 10000 * 7 / 8, "trimmed to the low-water mark, no further");
    c = store_client(dir);
    for (int i = 0; i < IN_USE; i++) {
        snprintf(path, sizeof(path), "u%d", i);
        cr_assert_eq(lookup_svc(c, FOO, path, &from_disk), POSH_OK);
        cr_expect_eq(from_disk, 1, "u%d in use: kept over 10,000 newer entries nobody used", i);
    }
    posh_client_free(c);
}

Test(store, entries_in_use_survive_a_burst)
{
    /*
     * Five keys are in use: written by one client, read back by another. Then a burst of 200 new keys, each
     * looked up once, goes through a directory bounded at 40 entries: the five stay, and a new client is warm.
     */
    enum { IN_USE = 5, BURST = 200, SIZE = 40 };
    char path[64];
    int from_disk = 0;

    for (int i = 0; i < IN_USE; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/u%d.json", i);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 3000));
    }
    for (int i = 0; i < BURST; i++) {
        snprintf(path, sizeof(path), "/.well-known/posh/s%d.json", i);
        fx_put_free(&f, FOO, path, fx_doc1(f.svc, 3000));
    }
    fx_start(&f);
    for (int round = 0; round < 2; round++) {
        posh_client *c = anchored_client(f.ca_file, NULL, SIZE);
        for (int i = 0; i < IN_USE; i++) {
            snprintf(path, sizeof(path), "u%d", i);
            cr_assert_eq(lookup_svc(c, FOO, path, &from_disk), POSH_OK);
            cr_expect_eq(from_disk, round, "round %d", round);
        }
        posh_client_free(c);
    }
    posh_client *c = anchored_client(f.ca_file, NULL, SIZE);
    for (int i = 0; i < BURST; i++) {
        snprintf(path, sizeof(path), "s%d", i);
        cr_assert_eq(lookup_svc(c, FOO, path, NULL), POSH_OK);
    }
    posh_client_free(c);
    cr_expect_leq(count_files(dir), SIZE, "bounded");
    c = anchored_client(f.ca_file, NULL, SIZE);
    for (int i = 0; i < IN_USE; i++) {
        snprintf(path, sizeof(path), "u%d", i);
        cr_assert_eq(lookup_svc(c, FOO, path, &from_disk), POSH_OK);
        cr_expect_eq(from_disk, 1, "u%d in use: kept through the burst", i);
        snprintf(path, sizeof(path), "/.well-known/posh/u%d.json", i);
        cr_expect_eq(fx_requests(&f, FOO, path), 1);
    }
    posh_client_free(c);
}

/* A file with an entry's name for key i, with this mode and modification time (now + age_s, age_s <= 0). */
static void put_entry(int fd, int i, mode_t mode, time_t mtime)
{
    char why[POSH_MSG_LEN], name[POSH_STORE_NAME_LEN + 1], domain[64];
    unsigned char scope[32] = {0};
    struct timespec ts[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
    snprintf(domain, sizeof(domain), "t%d.example", i);
    posh_store_entry_name(domain, "_xmpp-server._tcp", scope, name);
    cr_assert_eq(posh_store_write_mode(fd, name, (const unsigned char *)"x", 1, mode, why, sizeof(why)), 0);
    cr_assert_eq(utimensat(fd, name, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static bool has_entry(int fd, int i)
{
    char name[POSH_STORE_NAME_LEN + 1], domain[64];
    unsigned char scope[32] = {0};
    struct stat st;
    snprintf(domain, sizeof(domain), "t%d.example", i);
    posh_store_entry_name(domain, "_xmpp-server._tcp", scope, name);
    return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

Test(store, trim_order_expired_then_unused_then_in_use)
{
    char why[POSH_MSG_LEN];
    time_t now = time(NULL);
    int fd = posh_store_dir_open(dir, 0, why, sizeof(why));
    posh_store_limits lim = {.high_entries = 20, .low_entries = 16, .high_bytes = 1 << 20, .low_bytes = 1 << 20,
                             .now = now, .max_age = 1000};
    cr_assert_geq(fd, 0, "%s", why);
    /* 0-3: in use but untouched for longer than an entry lives; 4-13 in use; 14-23 unused, the newest. */
    for (int i = 0; i < 4; i++)
        put_entry(fd, i, 0400, now - 2000 + i);
    for (int i = 4; i < 14; i++)
        put_entry(fd, i, 0400, now - 500 + i);
    for (int i = 14; i < 24; i++)
        put_entry(fd, i, 0600, now - 100 + i);
    cr_expect_eq(posh_store_trim(fd, &lim, NULL), 16);
    for (int i = 0; i < 24; i++)
        cr_expect_eq(has_entry(fd, i), i >= 4 && (i < 14 || i >= 18), "entry %d", i);

    /* Below the high-water mark nothing but the expired goes. */
    put_entry(fd, 30, 0600, now - 1500);
    cr_expect_eq(posh_store_trim(fd, &lim, NULL), 16);
    cr_expect(!has_entry(fd, 30));

    /* In use past 3/4 of the low-water mark (12 of 16): the least recently used of them go with the unused. */
    for (int i = 40; i < 46; i++)
        put_entry(fd, i, 0400, now - 300 + i);
    lim.high_entries = 18;
    lim.low_entries = 16;
    cr_expect_eq(posh_store_trim(fd, &lim, NULL), 16, "22 entries, 16 of them in use");
    for (int i = 4; i < 8; i++)
        cr_expect(!has_entry(fd, i), "in use %d, the least recently used: demoted and out", i);
    for (int i = 8; i < 14; i++)
        cr_expect(has_entry(fd, i), "in use %d kept", i);
    for (int i = 40; i < 46; i++)
        cr_expect(has_entry(fd, i), "in use %d kept", i);
    for (int i = 18; i < 20; i++)
        cr_expect(!has_entry(fd, i), "unused %d, the oldest unused", i);
    for (int i = 20; i < 24; i++)
        cr_expect(has_entry(fd, i), "unused %d: room kept for new entries", i);
    close(fd);
}

/* ---- the engine's writes ---- */

typedef struct done_flag {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    posh_err err;
} done_flag;

static void on_done(posh_err err, posh_result *r, void *arg)
{
    done_flag *d = arg;
    posh_result_free(r);
    pthread_mutex_lock(&d->lock);
    d->err = err;
    d->done = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

Test(store, engine_lookups_are_persisted)
{
    /* The engine writes after its pass: the entry is on disk once the callback ran and the client is freed. */
    done_flag d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, POSH_OK};
    int from_disk = 0;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 300));
    fx_start(&f);
    posh_client *c = store_client(dir);
    cr_assert_eq(posh_lookup_async(c, FOO, "xmpp-server", on_done, &d), POSH_OK);
    pthread_mutex_lock(&d.lock);
    while (!d.done)
        pthread_cond_wait(&d.cond, &d.lock);
    pthread_mutex_unlock(&d.lock);
    cr_assert_eq(d.err, POSH_OK);
    posh_client_free(c);
    c = store_client(dir);
    cr_assert_eq(lookup_svc(c, FOO, "xmpp-server", &from_disk), POSH_OK);
    cr_expect_eq(from_disk, 1);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    posh_client_free(c);
}
