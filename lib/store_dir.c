/*
 * store_dir.c - the persistent cache directory on the file system: open it only when it is the effective
 * user's own and nobody else can write to it, then read, write (temporary file + renameat) and bound its
 * entries, every name relative to the directory's descriptor and never through a symbolic link. No library
 * state and no logging: `posh cache` uses these too.
 */
#include "posh_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEMP_PREFIX ".tmp."
#define TEMP_MAX_AGE 60

int posh_store_dir_open(const char *path, int create, char *why, size_t whylen)
{
    struct stat st;
    int fd;

    if (path == NULL || path[0] == '\0') {
        posh_msg(why, whylen, "no directory");
        return -1;
    }
    if (create && mkdir(path, 0700) != 0 && errno != EEXIST) {
        posh_msg(why, whylen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        posh_msg(why, whylen, "%s: %s", path,
                 errno == ELOOP || errno == ENOTDIR ? "not a directory (or a symbolic link)" : strerror(errno));
        return -1;
    }
    /* Judge what was opened, not the name: the name could be switched between a check and the open. */
    if (fstat(fd, &st) != 0) {
        posh_msg(why, whylen, "%s: %s", path, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        posh_msg(why, whylen, "%s: not a directory", path);
    } else if (st.st_uid != geteuid()) {
        posh_msg(why, whylen, "%s: owned by uid %lu, not by this user (uid %lu)", path, (unsigned long)st.st_uid,
                 (unsigned long)geteuid());
    } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        posh_msg(why, whylen, "%s: writable by %s (mode %04o)", path,
                 (st.st_mode & S_IWOTH) != 0 ? "others" : "its group", (unsigned)(st.st_mode & 07777));
    } else {
        return fd;
    }
    close(fd);
    return -1;
}

int posh_store_read(int dirfd, const char *name, size_t cap, unsigned char **buf, size_t *len, char *why,
                    size_t whylen)
{
    unsigned char *b = NULL;
    struct stat st;
    size_t got = 0;
    int fd, rc = -1;

    *buf = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO put in an entry's place must not block the open (it is refused below). */
    fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        posh_msg(why, whylen, "%s", errno == ELOOP ? "a symbolic link" : strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        posh_msg(why, whylen, "%s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        posh_msg(why, whylen, "not a regular file");
        goto done;
    }
    if (st.st_uid != geteuid() || st.st_nlink != 1 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        posh_msg(why, whylen, "not our own file (uid %lu, %lu links, mode %04o)", (unsigned long)st.st_uid,
                 (unsigned long)st.st_nlink, (unsigned)(st.st_mode & 07777));
        goto done;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > cap) {
        posh_msg(why, whylen, "%lld bytes, over the cap of %zu", (long long)st.st_size, cap);
        goto done;
    }
    /* The size may change under us: read at most cap + 1 bytes, and more than cap is refused all the same. */
    if ((b = malloc(cap + 1)) == NULL) {
        posh_msg(why, whylen, "out of memory");
        goto done;
    }
    while (got < cap + 1) {
        ssize_t n = read(fd, b + got, cap + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            posh_msg(why, whylen, "%s", strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    if (got > cap) {
        posh_msg(why, whylen, "grew over the cap of %zu bytes", cap);
        goto done;
    }
    *buf = b;
    *len = got;
    b = NULL;
    rc = 1;
done:
    free(b);
    close(fd);
    return rc;
}

static unsigned long temp_counter;

int posh_store_write(int dirfd, const char *name, const unsigned char *buf, size_t len, char *why, size_t whylen)
{
    return posh_store_write_mode(dirfd, name, buf, len, 0600, why, whylen);
}

int posh_store_write_mode(int dirfd, const char *name, const unsigned char *buf, size_t len, mode_t mode, char *why,
                          size_t whylen)
{
    unsigned char rnd[8] = {0};
    char temp[96];
    size_t off = 0;
    int fd;

    /* Unique among processes (pid), threads (counter) and pid reuse after a crash (random). */
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(rnd, &ts.tv_nsec, sizeof(ts.tv_nsec) < sizeof(rnd) ? sizeof(ts.tv_nsec) : sizeof(rnd));
    }
    snprintf(temp, sizeof(temp), TEMP_PREFIX "%ld.%lu.%02x%02x%02x%02x%02x%02x%02x%02x", (long)getpid(),
             __atomic_add_fetch(&temp_counter, 1, __ATOMIC_RELAXED), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
             rnd[6], rnd[7]);
    /* Owner-only whatever was asked: 0600, or 0400 for an entry in use (posh_store_mark_used). */
    fd = openat(dirfd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0600);
    if (fd < 0) {
        posh_msg(why, whylen, "create %s: %s", temp, strerror(errno));
        return -1;
    }
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            posh_msg(why, whylen, "write %s: %s", temp, n < 0 ? strerror(errno) : "no progress");
            goto fail;
        }
        off += (size_t)n;
    }
    if (close(fd) != 0) {
        fd = -1;
        posh_msg(why, whylen, "close %s: %s", temp, strerror(errno));
        goto fail;
    }
    fd = -1;
    /* Readers see the old file or the new one, whole: never a partly written entry. */
    if (renameat(dirfd, temp, dirfd, name) != 0) {
        posh_msg(why, whylen, "rename to %s: %s", name, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlinkat(dirfd, temp, 0);
    return -1;
}

int posh_store_in_use(int dirfd, const char *name)
{
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
           st.st_nlink == 1 && (st.st_mode & 0777) == 0400;
}

void posh_store_mark_used(int dirfd, const char *name)
{
    struct stat st;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return;
    /* Only an entry of ours (another process may have replaced it since it was read: the same key, fine). */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_nlink == 1 &&
        (st.st_mode & 0177) == 0) {
        if ((st.st_mode & 0777) != 0400)
            (void)fchmod(fd, 0400);
        (void)futimens(fd, NULL); /* recency: the modification time says when it was last written or used */
    }
    close(fd);
}

/*
 * Eviction order: entries surely expired (untouched for max_age: an entry lives at most that long from its
 * fetch, and it was fetched before it was last written or used), then entries never used since written
 * (mode 0600), then those in use (0400); the least recently written or used first within each.
 */
enum { TRIM_EXPIRED = 0, TRIM_UNUSED = 1, TRIM_IN_USE = 2 };

typedef struct trim_item {
    char name[POSH_STORE_NAME_LEN + 1];
    int class;
    time_t mtime;
    long mtime_ns;
    uint64_t size;
} trim_item;

static int evict_first(const void *a, const void *b)
{
    const trim_item *x = a, *y = b;
    if (x->class != y->class)
        return x->class < y->class ? -1 : 1;
    if (x->mtime != y->mtime)
        return x->mtime < y->mtime ? -1 : 1;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    return strcmp(x->name, y->name);
}

size_t posh_store_trim(int dirfd, const posh_store_limits *lim, uint64_t *bytes_left)
{
    trim_item *items = NULL;
    size_t n = 0, cap = 0, first = 0;
    uint64_t total = 0;
    struct dirent *d;
    DIR *dir;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (bytes_left != NULL)
        *bytes_left = 0;
    if (fd < 0)
        return 0;
    if ((dir = fdopendir(fd)) == NULL) {
        close(fd);
        return 0;
    }
    while ((d = readdir(dir)) != NULL) {
        struct stat st;
        if (fstatat(dirfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* gone meanwhile: another process trimmed or replaced it */
        if (strncmp(d->d_name, TEMP_PREFIX, strlen(TEMP_PREFIX)) == 0) {
            if (S_ISREG(st.st_mode) && lim->now - st.st_mtime > TEMP_MAX_AGE)
                unlinkat(dirfd, d->d_name, 0);
            continue;
        }
        if (!posh_store_name_is_entry(d->d_name))
            continue;
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : 2 * cap;
            trim_item *grown = realloc(items, ncap * sizeof(*items));
            if (grown == NULL)
                break; /* trimming what was seen is still right */
            items = grown;
            cap = ncap;
        }
        memcpy(items[n].name, d->d_name, POSH_STORE_NAME_LEN + 1);
        items[n].class = lim->max_age > 0 && lim->now - st.st_mtime >= lim->max_age ? TRIM_EXPIRED
                         : (st.st_mode & 0777) == 0400                              ? TRIM_IN_USE
                                                                                    : TRIM_UNUSED;
        items[n].mtime = st.st_mtim.tv_sec;
        items[n].mtime_ns = st.st_mtim.tv_nsec;
        items[n].size = (uint64_t)st.st_size;
        total += items[n].size;
        n++;
    }
    closedir(dir);
    if (n > lim->high_entries || total > lim->high_bytes || (n > 0 && lim->max_age > 0)) {
        bool over = n > lim->high_entries || total > lim->high_bytes;
        size_t in_use = 0, keep = lim->low_entries / 4 * 3;
        qsort(items, n, sizeof(*items), evict_first);
        /*
         * Entries in use keep at most 3/4 of the low-water mark: past that, the least recently used of them are
         * evicted with the unused ones, so that keys used twice (a peer can arrange that too) never leave new
         * entries no room.
         */
        for (size_t i = 0; i < n; i++)
            in_use += items[i].class == TRIM_IN_USE;
        if (over && in_use > keep) {
            for (size_t i = n - in_use; i < n - keep; i++)
                items[i].class = TRIM_UNUSED;
            qsort(items, n, sizeof(*items), evict_first);
        }
        /* Past a high-water mark: down to the low ones, so that the next scan is many writes away. */
        while (first < n && (items[first].class == TRIM_EXPIRED ||
                             (over && (n - first > lim->low_entries || total > lim->low_bytes)))) {
            unlinkat(dirfd, items[first].name, 0); /* another process may have removed it first: fine */
            total -= items[first].size;
            first++;
        }
    }
    free(items);
    if (bytes_left != NULL)
        *bytes_left = total;
    return n - first;
}
