/*
 * cmd_generate.c - `posh generate`: the documents an operator publishes. A fingerprints document for the
 * certificates a service presents, or a reference document pointing at one.
 */
#include "cli.h"
#include "posh_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "generate"
#define DEFAULT_EXPIRES 86400L
#define MAX_EXPIRES 2147483647L
#define MAX_CERTS 64 /* the library reads at most 64 descriptors (README "Limits") */
#define MAX_CERT_FILE (1L << 20)

static const char generate_help[] =
    "usage: posh generate [--expires N] [--sha1] CERT.pem...\n"
    "       posh generate --url URL [--expires N]\n"
    "\n"
    "Print a POSH document to publish at https://DOMAIN/.well-known/posh/SERVICE.json.\n"
    "\n"
    "With certificates: a fingerprints document, one descriptor per file, for the first certificate in it\n"
    "(the leaf, in a chain file), read as PEM (other PEM blocks, such as a key, are skipped) or DER. Each\n"
    "descriptor has the SHA-256 of the certificate's DER, and its SHA-1 with --sha1, in standard base64 with\n"
    "padding. Several certificates are alternates: publish the next one before a roll-over.\n"
    "With --url: a reference document; URL must be an https:// URL (where the provider publishes the\n"
    "fingerprints document), with no user name and only RFC 3986 characters.\n"
    "\n"
    "  -e, --expires N   seconds the document may be cached, 1..2147483647 (default 86400: one day)\n"
    "      --sha1        add the SHA-1 fingerprint to each descriptor (for old clients)\n"
    "  -u, --url URL     print a reference document to URL instead\n"
    "  -h, --help        this text\n"
    "\n"
    "Exit status: 0 printed; 1 a file cannot be read or holds no certificate (nothing is printed);\n"
    "2 usage error (bad or missing option value, expires not 1..2147483647, url not https, more than 64\n"
    "certificates, --url together with certificates or --sha1).\n";

static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* The first certificate of path, PEM or DER. NULL (and the reason printed) if there is none. */
static X509 *read_certificate(const char *path)
{
    unsigned char *data = NULL;
    const unsigned char *p;
    struct stat st;
    size_t len = 0;
    int fd;
    FILE *fp = NULL;
    BIO *bio = NULL;
    X509 *x = NULL;

    /*
     * A regular file of sane size: a FIFO or a device could feed the PEM reader forever. O_NONBLOCK: opening a
     * FIFO must not wait for a writer before fstat can refuse it.
     */
    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto done;
    }
    if ((fp = fdopen(fd, "rb")) == NULL) {
        cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > MAX_CERT_FILE) {
        cli_error(CMD, "%s: not a certificate file (%s)", path,
                  !S_ISREG(st.st_mode) ? "not a regular file" : "larger than 1 MiB");
        goto done;
    }
    if ((data = malloc((size_t)st.st_size + 1)) == NULL ||
        (len = fread(data, 1, (size_t)st.st_size, fp)) != (size_t)st.st_size || ferror(fp)) {
        cli_error(CMD, "%s: cannot read", path);
        goto done;
    }
    if ((bio = BIO_new_mem_buf(data, (int)len)) != NULL)
        x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    if (x == NULL) {
        p = data;
        x = d2i_X509(NULL, &p, (long)len);
    }
    if (x == NULL)
        cli_error(CMD, "%s: no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\" or DER)", path);
    else if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        cli_error(CMD, "warning: %s: the certificate has expired; clients will reject it whatever POSH says",
                  path);
done:
    ERR_clear_error();
    BIO_free(bio);
    free(data);
    if (fp != NULL)
        fclose(fp);
    return x;
}

static json_object *descriptor_json(X509 *x, int sha1)
{
    json_object *d = json_object_new_object();
    char b64[96];

    if (d == NULL || cli_cert_fingerprint(x, "SHA256", b64, sizeof(b64)) != 0)
        goto err;
    json_object_object_add(d, "sha-256", json_object_new_string(b64));
    if (sha1) {
        if (cli_cert_fingerprint(x, "SHA1", b64, sizeof(b64)) != 0)
            goto err;
        json_object_object_add(d, "sha-1", json_object_new_string(b64));
    }
    return d;
err:
    json_object_put(d);
    return NULL;
}

static int print_fingerprints(char **files, int n, long expires, int sha1)
{
    json_object *doc = json_object_new_object(), *arr = json_object_new_array();
    int rc = CLI_FAIL;

    if (doc == NULL || arr == NULL) {
        json_object_put(arr);
        goto done;
    }
    json_object_object_add(doc, "fingerprints", arr);
    for (int i = 0; i < n; i++) {
        X509 *x = read_certificate(files[i]);
        json_object *d = x != NULL ? descriptor_json(x, sha1) : NULL;
        X509_free(x);
        if (d == NULL) {
            if (x != NULL)
                cli_error(CMD, "%s: cannot hash the certificate", files[i]);
            goto done;
        }
        json_object_array_add(arr, d);
    }
    json_object_object_add(doc, "expires", json_object_new_int64(expires));
    rc = cli_print_json(doc) == 0 ? CLI_OK : CLI_FAIL;
    doc = NULL;
    if (rc != CLI_OK)
        cli_error(CMD, "cannot write the document to stdout");
done:
    json_object_put(doc);
    return rc;
}

static int print_reference(const char *url, long expires)
{
    json_object *doc = json_object_new_object();

    if (doc == NULL)
        return CLI_FAIL;
    json_object_object_add(doc, "url", json_object_new_string(url));
    json_object_object_add(doc, "expires", json_object_new_int64(expires));
    if (cli_print_json(doc) != 0) {
        cli_error(CMD, "cannot write the document to stdout");
        return CLI_FAIL;
    }
    return CLI_OK;
}

int cmd_generate(int argc, char **argv)
{
    enum { OPT_SHA1 = 256 };
    static const struct option opts[] = {
        {"expires", required_argument, NULL, 'e'},
        {"sha1", no_argument, NULL, OPT_SHA1},
        {"url", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    long expires = DEFAULT_EXPIRES;
    int c, sha1 = 0, n;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":e:u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            if (cli_parse_long(optarg, 1, MAX_EXPIRES, &expires) != 0)
                return cli_usage_error(CMD,
                                       "--expires '%s': expected a whole number of seconds from 1 to %ld "
                                       "(a document with expires 0 is invalid)",
                                       optarg, MAX_EXPIRES);
            break;
        case OPT_SHA1:
            sha1 = 1;
            break;
        case 'u':
            url = optarg;
            break;
        case 'h':
            fputs(generate_help, stdout);
            return CLI_OK;
        default:
            return cli_option_error(CMD, c, argv);
        }
    }
    n = argc - optind;
    if (url != NULL) {
        if (n > 0)
            return cli_usage_error(CMD, "--url prints a reference document: give no certificates with it");
        if (sha1)
            return cli_usage_error(CMD, "--sha1 is for fingerprints documents, not with --url");
        if (!posh_url_is_https(url, strlen(url)))
            return cli_usage_error(CMD,
                                   "--url '%s': not an acceptable https:// URL (scheme https, a host, no "
                                   "user name, RFC 3986 characters only, at most 2048 characters)",
                                   url);
        return print_reference(url, expires);
    }
    if (n < 1)
        return cli_usage_error(CMD, "give at least one certificate file, or --url URL");
    if (n > MAX_CERTS)
        return cli_usage_error(CMD, "at most %d certificates (POSH clients read at most %d descriptors)", MAX_CERTS,
                               MAX_CERTS);
    return print_fingerprints(argv + optind, n, expires, sha1);
}
