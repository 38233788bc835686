/*
 * exit_probe.c - a process that exits while its engine has lookups in flight, for test_event_loop: it starts
 * eight prefetches through a client configured from its POSH_* environment, waits for one byte on stdin (the
 * test sends it once the web server has the request, so the transfers are surely in flight), then calls exit(0)
 * without freeing the client. A clean exit status is the whole point: posh's exit handler must stop the engine
 * thread before OpenSSL's own exit handler runs. A separate program, started with posix_spawn, because fork() of
 * a test process with threads is not safe under every sanitizer's allocator.
 */
#include <posh.h>

#include <stdlib.h>
#include <unistd.h>

int main(void)
{
    posh_config *cfg = posh_config_new();
    posh_client *client;
    char go;

    if (cfg == NULL || posh_config_load_env(cfg) != POSH_OK || (client = posh_client_new(cfg)) == NULL)
        return 3;
    posh_config_free(cfg);
    for (int i = 0; i < 8; i++)
        if (posh_prefetch(client, "foo.example.com", i % 2 ? "xmpp-server" : "xmpp-client") != POSH_OK)
            return 4;
    if (read(0, &go, 1) != 1)
        return 5;
    exit(0);
}
