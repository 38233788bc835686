/*
 * test_cli_doctor.c - `posh doctor PROGRAM`: which programs the LD_PRELOAD shim can help, read from their ELF
 * files without running them (issue 21): OpenSSL (curl, mbsync), GnuTLS (wget), GnuTLS's OpenSSL compatibility
 * layer, a static program, a setuid one, an interpreter's TLS module, and files that are not programs.
 */
#include "cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dir;

static void setup(void)
{
    dir = ts_tmpdir();
    cr_assert_not_null(dir);
}

static void teardown(void)
{
    ts_rmtree(dir);
    free(dir);
}

TestSuite(cli_doctor, .init = setup, .fini = teardown, .timeout = 120);

static void expect_doctor(const char *program, int code, const char *verdict)
{
    cli_run r = POSH("doctor", program);
    expect_code(r, code);
    cr_expect(strstr(r.out, verdict) != NULL, "%s: want \"%s\"\nstdout: %s\nstderr: %s", program, verdict, r.out,
              r.err);
    cli_run_free(&r);
}

Test(cli_doctor, openssl_programs)
{
    expect_doctor("/usr/bin/curl", 0, "links libssl.so.3 dynamically: the shim applies");
    expect_doctor("/usr/bin/mbsync", 0, "links libssl.so.3 dynamically: the shim applies");
    expect_doctor("/usr/bin/mbsync", 0, "libssl.so.3 => ");
    /* Looked up in PATH like a shell would. */
    expect_doctor("curl", 0, "the shim applies");
}

Test(cli_doctor, programs_not_helped)
{
    expect_doctor("/usr/bin/wget", 1, "links GnuTLS: not helped");
    expect_doctor(POSH_GNUTLS_PROBE, 1, "links GnuTLS's OpenSSL compatibility layer: not helped");
    expect_doctor(POSH_STATIC_PROBE, 1, "statically linked");
    /* Ruby loads OpenSSL with its extension: the program alone does not say, the extension does. */
    expect_doctor("/usr/bin/ruby", 1, "no dynamic libssl (static OpenSSL?)");
    expect_doctor("/usr/lib/x86_64-linux-gnu/ruby/3.1.0/openssl.so", 0, "the shim applies");
}

Test(cli_doctor, setuid_program)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/curl-setuid", dir);
    size_t len;
    char *bytes = ts_read_file("/usr/bin/curl", &len);
    cr_assert_not_null(bytes);
    cr_assert_eq(ts_write_file(path, bytes, len), 0);
    free(bytes);
    cr_assert_eq(chmod(path, 04755), 0);
    expect_doctor(path, 1, "setuid or setgid: the loader ignores LD_PRELOAD");
}

Test(cli_doctor, not_programs)
{
    char text[600], truncated[600], garbage[600];
    unsigned char junk[4096];
    size_t len;
    char *bytes;
    cli_run r;

    snprintf(text, sizeof(text), "%s/script", dir);
    cr_assert_eq(ts_write_file(text, "#!/bin/sh\necho hi\n", 18), 0);
    r = POSH("doctor", text);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "not an ELF file") != NULL, "%s", r.err);
    cli_run_free(&r);

    /* The first 200 bytes of a real program: headers that point past the end of the file. */
    bytes = ts_read_file("/usr/bin/curl", &len);
    cr_assert(bytes != NULL && len > 200);
    snprintf(truncated, sizeof(truncated), "%s/truncated", dir);
    cr_assert_eq(ts_write_file(truncated, bytes, 200), 0);
    r = POSH("doctor", truncated);
    expect_code(r, 2);
    cr_expect(strstr(r.err, "malformed") != NULL, "%s", r.err);
    cli_run_free(&r);

    /* ELF magic and class, then noise: refused or read, never a crash (a signal fails cli_run_posh). */
    memcpy(junk, bytes, 64);
    for (size_t i = 64; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 2654435761u >> 13);
    free(bytes);
    snprintf(garbage, sizeof(garbage), "%s/garbage", dir);
    cr_assert_eq(ts_write_file(garbage, junk, sizeof(junk)), 0);
    r = POSH("doctor", garbage);
    cr_expect(r.code == 1 || r.code == 2, "exit %d", r.code);
    cli_run_free(&r);

    r = POSH("doctor", "no-such-program-posh-doctor");
    expect_code(r, 2);
    cr_expect(strstr(r.err, "not found") != NULL, "%s", r.err);
    cli_run_free(&r);

    r = POSH("doctor");
    expect_code(r, 2);
    cli_run_free(&r);
}

Test(cli_doctor, help)
{
    cli_run r = POSH("--help");
    expect_code(r, 0);
    cr_expect(strstr(r.out, "doctor PROGRAM") != NULL, "%s", r.out);
    cli_run_free(&r);
    r = POSH("help", "doctor");
    expect_code(r, 0);
    cr_expect(strstr(r.out, "usage: posh doctor PROGRAM") != NULL, "%s", r.out);
    cli_run_free(&r);
}
