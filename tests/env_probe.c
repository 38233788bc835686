/*
 * env_probe.c - prints what libposh makes of this process's POSH_* environment, one "key=value" a line, for
 * test_config's privileged-process test, which runs a copy of it with file capabilities as an unprivileged
 * user. Linked statically against libposh so that the copy needs no libposh.so (a capability-bearing program
 * ignores LD_LIBRARY_PATH and RUNPATH $ORIGIN alike).
 */
#include "client_internal.h"

#include <stdio.h>
#include <sys/auxv.h>

int main(void)
{
    posh_config *cfg = posh_config_new();
    posh_err first, second;

    if (cfg == NULL)
        return 2;
    /* Twice: the warning of a privileged process must come once per process, not once per read. */
    first = posh_config_load_env(cfg);
    second = posh_config_load_env(cfg);
    printf("at_secure=%lu\n", getauxval(AT_SECURE));
    printf("load=%d,%d\n", (int)first, (int)second);
    printf("error=%s\n", posh_config_error(cfg));
    printf("mode=%s\n", cfg->mode == POSH_MODE_PIN ? "pin" : "name");
    printf("max_redirects=%ld\n", cfg->max_redirects);
    printf("ca_file=%s\n", cfg->ca_file != NULL ? cfg->ca_file : "(none)");
    printf("connect_to=%s\n", cfg->connect_to != NULL ? cfg->connect_to : "(none)");
    /* A message at warning level after the environment was read: stderr only if POSH_LOG did not say off. */
    posh_log(POSH_LOG_WARNING, "env_probe: done");
    posh_config_free(cfg);
    return fflush(stdout) == 0 ? 0 : 2;
}
