/*
 * posh.c - the `posh` command: dispatch to lookup, verify, generate, cache, delegation, lint and doctor; --help and
 * --version.
 */
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: posh COMMAND [OPTIONS] ARGS...\n"
    "\n"
    "POSH (RFC 7711): check and publish which certificate a domain's hosting provider may present.\n"
    "\n"
    "commands:\n"
    "  lookup [-s SERVICE] DOMAIN                    fetch DOMAIN's POSH document, print it as JSON\n"
    "  verify [-s SERVICE] [--cafile F] [--capath D] [--starttls xmpp|smtp|imap] [--json] [--timeout S]\n"
    "         DOMAIN HOST:PORT\n"
    "                                                TLS handshake with HOST:PORT as DOMAIN: pkix, posh or rejected\n"
    "  generate [--expires N] [--sha1] CERT.pem...   print a fingerprints document for these certificates\n"
    "  generate --jwk [--sha1] [--x5c] [--expires N] CERT.pem...\n"
    "                                                the same as a JWK Set (the form of the early drafts)\n"
    "  generate --url URL [--expires N]              print a reference document pointing at URL\n"
    "  cache list [--dir DIR] [--json]               what the persistent cache directory holds\n"
    "  cache flush [--dir DIR] [DOMAIN]              remove its entries (all, or DOMAIN's)\n"
    "  lint [-s SERVICE] DOMAIN                      a document's errors (posh rejects it) and warnings (other\n"
    "  lint --file DOC.json                          clients may): exit 0 none, 1 warnings, 2 errors\n"
    "  delegation [-s SERVICE] DOMAIN                fetch DOMAIN's Secure Service Delegation document, print\n"
    "                                                it as JSON\n"
    "  doctor PROGRAM                                can the LD_PRELOAD shim help PROGRAM? (reads its ELF file\n"
    "                                                and libraries, runs nothing): exit 0 yes, 1 no\n"
    "\n"
    "  posh COMMAND --help    the options of a command\n"
    "  posh --version         the version of posh\n"
    "\n"
    "Exit status: 0 found / accepted / printed; 1 no valid document / rejected / unreadable certificate;\n"
    "2 usage error, invalid POSH_* environment, or (verify) the connection failed.\n"
    "The POSH_* environment variables (POSH_CA_FILE, POSH_CONNECT_TO, POSH_TIMEOUT_MS, POSH_FORMATS, ...)\n"
    "configure the HTTPS fetches of lookup, verify and delegation; POSH_LOG is off unless set.\n";

int main(int argc, char **argv)
{
    const char *cmd;

    /* A peer that closes while we write must give an error, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    /* The command reports every failure itself; the library's own log is there for those who ask for it. */
    setenv("POSH_LOG", "off", 0);

    if (argc < 2)
        return cli_usage_error(NULL, "a command is required");
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (strcmp(cmd, "help") == 0 && argc > 2) {
            char help[] = "--help";
            char *args[] = {argv[2], help, NULL};
            if (strcmp(argv[2], "lookup") == 0)
                return cmd_lookup(2, args);
            if (strcmp(argv[2], "verify") == 0)
                return cmd_verify(2, args);
            if (strcmp(argv[2], "generate") == 0)
                return cmd_generate(2, args);
            if (strcmp(argv[2], "cache") == 0)
                return cmd_cache(2, args);
            if (strcmp(argv[2], "lint") == 0)
                return cmd_lint(2, args);
            if (strcmp(argv[2], "delegation") == 0)
                return cmd_delegation(2, args);
            if (strcmp(argv[2], "doctor") == 0)
                return cmd_doctor(2, args);
            return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
        }
        fputs(usage_text, stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        printf("posh %s (%s)\n", posh_version(), OpenSSL_version(OPENSSL_VERSION));
        return CLI_OK;
    }
    if (strcmp(cmd, "lookup") == 0)
        return cmd_lookup(argc - 1, argv + 1);
    if (strcmp(cmd, "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "cache") == 0)
        return cmd_cache(argc - 1, argv + 1);
    if (strcmp(cmd, "lint") == 0)
        return cmd_lint(argc - 1, argv + 1);
    if (strcmp(cmd, "delegation") == 0)
        return cmd_delegation(argc - 1, argv + 1);
    if (strcmp(cmd, "doctor") == 0)
        return cmd_doctor(argc - 1, argv + 1);
    return cli_usage_error(NULL, "unknown command '%s'", cmd);
}
