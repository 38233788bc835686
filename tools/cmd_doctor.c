/*
 * cmd_doctor.c - `posh doctor PROGRAM`: can the LD_PRELOAD shim help this program? Reads the program's ELF
 * dynamic section and, breadth first as the dynamic loader does, the DT_NEEDED libraries it would load, and says
 * whether OpenSSL's libssl.so.3 is among them, GnuTLS (or GnuTLS's OpenSSL compatibility layer) instead, or
 * neither (a static OpenSSL, or one loaded later with dlopen).
 *
 * A pure reader, on purpose: ldd, or LD_TRACE_LOADED_OBJECTS=1, runs the program's own interpreter (PT_INTERP,
 * any file the program names) and, for some loaders, the program itself; doctor is meant for programs one is
 * not sure about. The search follows the loader's rules closely enough to name the libraries (DT_RPATH when there
 * is no DT_RUNPATH, LD_LIBRARY_PATH, DT_RUNPATH, the directories of /etc/ld.so.conf, then /lib and /usr/lib),
 * reading the configuration files rather than /etc/ld.so.cache; a library built for another machine or ELF class
 * is skipped, as the loader does. Everything read is bounded.
 */
#include "cli.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_OBJECTS 512       /* libraries followed (a desktop program needs about 150) */
#define MAX_DIRS 128          /* search directories from the configuration */
#define MAX_PHDRS 256
#define MAX_DYN_BYTES (1 << 20)
#define MAX_STRTAB_BYTES (16 << 20)
#define MAX_CONF_DEPTH 4

static const char doctor_usage[] =
    "usage: posh doctor PROGRAM\n"
    "\n"
    "Can the LD_PRELOAD shim (libposh-preload.so) help PROGRAM? Reads its ELF dynamic section and the libraries\n"
    "it needs, without running anything, and says one of:\n"
    "  links libssl.so.3 dynamically: the shim applies                     (exit 0)\n"
    "  links GnuTLS: not helped                                            (exit 1)\n"
    "  links GnuTLS's OpenSSL compatibility layer: not helped              (exit 1)\n"
    "  no dynamic libssl (static OpenSSL?): not helped, unless it loads libssl.so.3 later (exit 1)\n"
    "  statically linked / setuid or setgid: the loader ignores LD_PRELOAD (exit 1)\n"
    "PROGRAM without a slash is looked up in PATH; it may also be a shared library, e.g. an interpreter's TLS\n"
    "module (python3's _ssl, Ruby's openssl.so), which the program loads later. Exit 2: not found, not an ELF\n"
    "file, or unreadable.\n";

typedef struct elf_info {
    int is_dynamic;              /* has PT_DYNAMIC (a dynamically linked program or a shared library) */
    int has_interp;              /* has PT_INTERP (an executable started by the dynamic loader) */
    unsigned char ei_class;
    Elf64_Half machine;
    char **needed;               /* DT_NEEDED names, in order */
    size_t n_needed;
    char *rpath, *runpath;       /* DT_RPATH, DT_RUNPATH (NULL if none) */
} elf_info;

static void elf_info_free(elf_info *e)
{
    for (size_t i = 0; i < e->n_needed; i++)
        free(e->needed[i]);
    free(e->needed);
    free(e->rpath);
    free(e->runpath);
    memset(e, 0, sizeof(*e));
}

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n = pread(fd, buf, len, (off_t)off);
    return n >= 0 && (size_t)n == len ? 0 : -1;
}

/* One program header, converted to the 64-bit form. */
static int phdr_at(int fd, const Elf64_Ehdr *eh, unsigned char cls, size_t i, Elf64_Phdr *ph)
{
    if (cls == ELFCLASS64)
        return read_at(fd, ph, sizeof(*ph), eh->e_phoff + i * eh->e_phentsize);
    Elf32_Phdr p32;
    if (read_at(fd, &p32, sizeof(p32), eh->e_phoff + i * eh->e_phentsize) != 0)
        return -1;
    ph->p_type = p32.p_type;
    ph->p_offset = p32.p_offset;
    ph->p_vaddr = p32.p_vaddr;
    ph->p_filesz = p32.p_filesz;
    return 0;
}

/* The file offset of a virtual address inside one of the PT_LOAD segments; (uint64_t)-1 if none holds it. */
static uint64_t vaddr_to_offset(const Elf64_Phdr *loads, size_t n, uint64_t vaddr)
{
    for (size_t i = 0; i < n; i++)
        if (vaddr >= loads[i].p_vaddr && vaddr - loads[i].p_vaddr < loads[i].p_filesz)
            return loads[i].p_offset + (vaddr - loads[i].p_vaddr);
    return (uint64_t)-1;
}

static char *strtab_dup(const char *strtab, size_t size, uint64_t off)
{
    if (off >= size || memchr(strtab + off, '\0', size - off) == NULL)
        return NULL;
    return strdup(strtab + off);
}

/* The i-th entry of a dynamic section (bounds checked by the caller): its tag and value, for either class. */
static void dyn_entry(int ei_class, const unsigned char *dynbuf, size_t i, int64_t *tag, uint64_t *val)
{
    if (ei_class == ELFCLASS64) {
        Elf64_Dyn d;
        memcpy(&d, dynbuf + i * sizeof(d), sizeof(d));
        *tag = d.d_tag;
        *val = d.d_un.d_val;
    } else {
        Elf32_Dyn d;
        memcpy(&d, dynbuf + i * sizeof(d), sizeof(d));
        *tag = d.d_tag;
        *val = d.d_un.d_val;
    }
}

/*
 * Read what doctor needs of an ELF file (little-endian, as on every machine Debian's posh is built for; a file
 * of the other byte order is refused). 0 ok, -1 not an ELF file or malformed (why in err).
 */
static int elf_read(const char *path, elf_info *e, char *err, size_t errlen)
{
    unsigned char ident[EI_NIDENT];
    Elf64_Ehdr eh = {0};
    Elf64_Phdr dyn = {0}, loads[MAX_PHDRS];
    size_t n_loads = 0, dyn_count, entsize;
    unsigned char *dynbuf = NULL;
    char *strtab = NULL;
    uint64_t strtab_vaddr = 0, strsz = 0, strtab_off, rpath_off = (uint64_t)-1, runpath_off = (uint64_t)-1;
    int fd, rc = -1, have_dyn = 0;

    memset(e, 0, sizeof(*e));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    if (read_at(fd, ident, sizeof(ident), 0) != 0 || memcmp(ident, ELFMAG, SELFMAG) != 0) {
        snprintf(err, errlen, "not an ELF file");
        goto done;
    }
    if ((ident[EI_CLASS] != ELFCLASS64 && ident[EI_CLASS] != ELFCLASS32) || ident[EI_DATA] != ELFDATA2LSB) {
        snprintf(err, errlen, "an ELF class or byte order doctor does not read");
        goto done;
    }
    e->ei_class = ident[EI_CLASS];
    if (e->ei_class == ELFCLASS64) {
        if (read_at(fd, &eh, sizeof(eh), 0) != 0)
            goto malformed;
    } else {
        Elf32_Ehdr e32;
        if (read_at(fd, &e32, sizeof(e32), 0) != 0)
            goto malformed;
        eh.e_machine = e32.e_machine;
        eh.e_phoff = e32.e_phoff;
        eh.e_phentsize = e32.e_phentsize;
        eh.e_phnum = e32.e_phnum;
    }
    e->machine = eh.e_machine;
    if (eh.e_phnum > MAX_PHDRS ||
        eh.e_phentsize < (e->ei_class == ELFCLASS64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)))
        goto malformed;
    for (size_t i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph = {0};
        if (phdr_at(fd, &eh, e->ei_class, i, &ph) != 0)
            goto malformed;
        if (ph.p_type == PT_INTERP)
            e->has_interp = 1;
        else if (ph.p_type == PT_DYNAMIC) {
            dyn = ph;
            have_dyn = 1;
        } else if (ph.p_type == PT_LOAD) {
            loads[n_loads++] = ph;
        }
    }
    e->is_dynamic = have_dyn;
    if (!have_dyn) {
        rc = 0;
        goto done;
    }
    entsize = e->ei_class == ELFCLASS64 ? sizeof(Elf64_Dyn) : sizeof(Elf32_Dyn);
    if (dyn.p_filesz > MAX_DYN_BYTES || (dynbuf = malloc(dyn.p_filesz + 1)) == NULL ||
        read_at(fd, dynbuf, dyn.p_filesz, dyn.p_offset) != 0)
        goto malformed;
    dyn_count = dyn.p_filesz / entsize;
    /* First pass: where the string table is and the offsets of the names; second: the names themselves. */
    for (size_t i = 0; i < dyn_count; i++) {
        int64_t tag;
        uint64_t val;
        dyn_entry(e->ei_class, dynbuf, i, &tag, &val);
        if (tag == DT_NULL)
            break;
        if (tag == DT_STRTAB)
            strtab_vaddr = val;
        else if (tag == DT_STRSZ)
            strsz = val;
        else if (tag == DT_NEEDED)
            e->n_needed++;
        else if (tag == DT_RPATH)
            rpath_off = val;
        else if (tag == DT_RUNPATH)
            runpath_off = val;
    }
    if (strsz == 0 || strsz > MAX_STRTAB_BYTES ||
        (strtab_off = vaddr_to_offset(loads, n_loads, strtab_vaddr)) == (uint64_t)-1 ||
        (strtab = malloc(strsz)) == NULL || read_at(fd, strtab, strsz, strtab_off) != 0 ||
        (e->needed = calloc(e->n_needed + 1, sizeof(char *))) == NULL)
        goto malformed;
    e->n_needed = 0;
    for (size_t i = 0; i < dyn_count; i++) {
        int64_t tag;
        uint64_t val;
        dyn_entry(e->ei_class, dynbuf, i, &tag, &val);
        if (tag == DT_NULL)
            break;
        if (tag == DT_NEEDED && (e->needed[e->n_needed] = strtab_dup(strtab, strsz, val)) != NULL)
            e->n_needed++;
    }
    if (rpath_off != (uint64_t)-1)
        e->rpath = strtab_dup(strtab, strsz, rpath_off);
    if (runpath_off != (uint64_t)-1)
        e->runpath = strtab_dup(strtab, strsz, runpath_off);
    rc = 0;
    goto done;
malformed:
    snprintf(err, errlen, "a malformed or unsupported ELF file");
    elf_info_free(e);
done:
    free(dynbuf);
    free(strtab);
    close(fd);
    return rc;
}

/* ---- the search path ---- */

typedef struct dirs {
    char *d[MAX_DIRS];
    size_t n;
} dirs;

static void dirs_add(dirs *ds, const char *dir, size_t len)
{
    if (len == 0 || ds->n >= MAX_DIRS)
        return;
    for (size_t i = 0; i < ds->n; i++)
        if (strlen(ds->d[i]) == len && strncmp(ds->d[i], dir, len) == 0)
            return;
    if ((ds->d[ds->n] = strndup(dir, len)) != NULL)
        ds->n++;
}

/* A colon-separated list; $ORIGIN (and ${ORIGIN}) become origin, the directory of the object naming it. */
static void dirs_add_list(dirs *ds, const char *list, const char *origin)
{
    char buf[4096];
    while (list != NULL && *list != '\0') {
        const char *end = strchr(list, ':');
        size_t len = end != NULL ? (size_t)(end - list) : strlen(list);
        char item[2048];
        if (len < sizeof(item)) {
            memcpy(item, list, len);
            item[len] = '\0';
            const char *p = strstr(item, "$ORIGIN") != NULL ? strstr(item, "$ORIGIN") : strstr(item, "${ORIGIN}");
            if (p != NULL) {
                size_t skip = strncmp(p, "${ORIGIN}", 9) == 0 ? 9 : 7;
                snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - item), item, origin, p + skip);
                dirs_add(ds, buf, strlen(buf));
            } else {
                dirs_add(ds, item, len);
            }
        }
        list = end != NULL ? end + 1 : NULL;
    }
}

/* /etc/ld.so.conf: one directory a line, "include GLOB" lines, # comments. */
static void read_ld_conf(dirs *ds, const char *path, int depth)
{
    char line[1024];
    FILE *f;
    if (depth > MAX_CONF_DEPTH || (f = fopen(path, "re")) == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *s = line, *hash = strchr(line, '#');
        size_t len;
        if (hash != NULL)
            *hash = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        len = strcspn(s, " \t\r\n");
        if (len == 0)
            continue;
        if (strncmp(s, "include", len) == 0 && len == 7) {
            glob_t g;
            char *pat = s + len;
            while (*pat == ' ' || *pat == '\t')
                pat++;
            pat[strcspn(pat, " \t\r\n")] = '\0';
            if (glob(pat, 0, NULL, &g) == 0) {
                for (size_t i = 0; i < g.gl_pathc; i++)
                    read_ld_conf(ds, g.gl_pathv[i], depth + 1);
            }
            globfree(&g);
            continue;
        }
        dirs_add(ds, s, len);
    }
    fclose(f);
}

/* ---- the walk ---- */

typedef struct object {
    char *soname;   /* the DT_NEEDED name it was loaded as (the program: its path) */
    char *path;     /* where it was found; NULL if not */
    char *needer;   /* who needed it first */
} object;

typedef struct walk {
    object objs[MAX_OBJECTS];
    size_t n;
    dirs system;               /* ld.so.conf, then the defaults */
    const char *ld_library_path;
    unsigned char ei_class;
    Elf64_Half machine;
    int truncated;
} walk;

static int seen(const walk *w, const char *soname)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->objs[i].soname, soname) == 0)
            return 1;
    return 0;
}

/* A file in dir named name, of the program's class and machine: its path (caller frees) or NULL. */
static char *try_dir(const walk *w, const char *dir, const char *name)
{
    char path[4096], err[128];
    elf_info e;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (access(path, R_OK) != 0 || elf_read(path, &e, err, sizeof(err)) != 0)
        return NULL;
    int fits = e.ei_class == w->ei_class && e.machine == w->machine;
    elf_info_free(&e);
    return fits ? strdup(path) : NULL;
}

static char *find_library(const walk *w, const char *name, const elf_info *needer, const char *origin)
{
    dirs ds = {0};
    char *found = NULL;
    if (strchr(name, '/') != NULL)
        return access(name, R_OK) == 0 ? strdup(name) : NULL;
    if (needer->runpath == NULL)
        dirs_add_list(&ds, needer->rpath, origin);
    dirs_add_list(&ds, w->ld_library_path, origin);
    dirs_add_list(&ds, needer->runpath, origin);
    for (size_t i = 0; i < w->system.n; i++)
        dirs_add(&ds, w->system.d[i], strlen(w->system.d[i]));
    for (size_t i = 0; i < ds.n && found == NULL; i++)
        found = try_dir(w, ds.d[i], name);
    for (size_t i = 0; i < ds.n; i++)
        free(ds.d[i]);
    return found;
}

static void add_object(walk *w, const char *soname, char *path, const char *needer)
{
    if (w->n >= MAX_OBJECTS) {
        w->truncated = 1;
        free(path);
        return;
    }
    w->objs[w->n].soname = strdup(soname);
    w->objs[w->n].path = path;
    w->objs[w->n].needer = strdup(needer);
    w->n++;
}

/* Breadth first from the program (objs[0]), as the loader orders its search scope. */
static void walk_needed(walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        char err[128], origin[4096];
        elf_info e;
        if (w->objs[i].path == NULL || elf_read(w->objs[i].path, &e, err, sizeof(err)) != 0)
            continue;
        snprintf(origin, sizeof(origin), "%s", w->objs[i].path);
        dirname(origin);
        for (size_t k = 0; k < e.n_needed; k++) {
            if (seen(w, e.needed[k]))
                continue;
            add_object(w, e.needed[k], find_library(w, e.needed[k], &e, origin), w->objs[i].path);
        }
        elf_info_free(&e);
    }
}

static const object *first_with_prefix(const walk *w, const char *prefix)
{
    for (size_t i = 1; i < w->n; i++)
        if (strncmp(w->objs[i].soname, prefix, strlen(prefix)) == 0)
            return &w->objs[i];
    return NULL;
}

/* PROGRAM, or the first executable of that name in PATH. */
static int locate(const char *prog, char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    if (strchr(prog, '/') != NULL) {
        snprintf(out, outlen, "%s", prog);
        return 0;
    }
    while (path != NULL && *path != '\0') {
        const char *end = strchr(path, ':');
        size_t len = end != NULL ? (size_t)(end - path) : strlen(path);
        snprintf(out, outlen, "%.*s/%s", (int)len, len > 0 ? path : ".", prog);
        if (access(out, X_OK) == 0)
            return 0;
        path = end != NULL ? end + 1 : NULL;
    }
    return -1;
}

static void show(const object *o)
{
    printf("  %s => %s (needed by %s)\n", o->soname, o->path != NULL ? o->path : "not found", o->needer);
}

int cmd_doctor(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    char path[4096], err[256];
    const object *ssl, *gnutls, *compat;
    struct stat st;
    elf_info e;
    walk *w;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(doctor_usage, stdout);
            return CLI_OK;
        }
        return cli_option_error("doctor", c, argv);
    }
    if (argc - optind != 1)
        return cli_usage_error("doctor", "one PROGRAM is required");
    if (locate(argv[optind], path, sizeof(path)) != 0) {
        cli_error("doctor", "%s: not found in PATH", argv[optind]);
        return CLI_USAGE;
    }
    if (stat(path, &st) != 0 || elf_read(path, &e, err, sizeof(err)) != 0) {
        cli_error("doctor", "%s: %s", path, stat(path, &st) != 0 ? strerror(errno) : err);
        return CLI_USAGE;
    }
    printf("%s\n", path);
    /* No dynamic section, or one with nothing needed and no interpreter (static-pie): statically linked. A
     * shared library (no interpreter, libraries needed) is read like a program: python3's or Ruby's ssl module. */
    if (!e.is_dynamic || (!e.has_interp && e.n_needed == 0)) {
        printf("statically linked: the loader ignores LD_PRELOAD for it: not helped\n");
        elf_info_free(&e);
        return CLI_FAIL;
    }
    if ((st.st_mode & (S_ISUID | S_ISGID)) != 0) {
        printf("setuid or setgid: the loader ignores LD_PRELOAD for it: not helped\n");
        elf_info_free(&e);
        return CLI_FAIL;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL) {
        elf_info_free(&e);
        cli_error("doctor", "out of memory");
        return CLI_USAGE;
    }
    w->ei_class = e.ei_class;
    w->machine = e.machine;
    w->ld_library_path = getenv("LD_LIBRARY_PATH");
    read_ld_conf(&w->system, "/etc/ld.so.conf", 0);
    dirs_add_list(&w->system, e.ei_class == ELFCLASS64 ? "/lib64:/usr/lib64:/lib:/usr/lib" : "/lib:/usr/lib", "");
    elf_info_free(&e);
    add_object(w, path, strdup(path), "(the program)");
    walk_needed(w);

    ssl = first_with_prefix(w, "libssl.so.3");
    compat = first_with_prefix(w, "libgnutls-openssl.so");
    gnutls = first_with_prefix(w, "libgnutls.so");
    if (compat != NULL)
        show(compat);
    if (ssl != NULL)
        show(ssl);
    if (gnutls != NULL && compat == NULL)
        show(gnutls);
    if (w->truncated)
        printf("  (more than %d libraries: only the first were read)\n", MAX_OBJECTS);
    if (compat != NULL && (ssl == NULL || compat < ssl)) {
        printf("links GnuTLS's OpenSSL compatibility layer: not helped (the shim leaves it as it is)\n");
        rc = CLI_FAIL;
    } else if (ssl != NULL && ssl->path != NULL) {
        printf("links libssl.so.3 dynamically: the shim applies%s\n",
               gnutls != NULL ? " (to its OpenSSL connections; those made with GnuTLS are not helped)" : "");
        rc = CLI_OK;
    } else if (ssl != NULL) {
        printf("needs libssl.so.3 but it was not found: the program would not start\n");
        rc = CLI_FAIL;
    } else if (gnutls != NULL) {
        printf("links GnuTLS: not helped\n");
        rc = CLI_FAIL;
    } else {
        printf("no dynamic libssl (static OpenSSL?): not helped, unless it loads libssl.so.3 later (dlopen, as "
               "python3's ssl module does)\n");
        rc = CLI_FAIL;
    }
    for (size_t i = 0; i < w->n; i++) {
        free(w->objs[i].soname);
        free(w->objs[i].path);
        free(w->objs[i].needer);
    }
    for (size_t i = 0; i < w->system.n; i++)
        free(w->system.d[i]);
    free(w);
    return rc;
}
