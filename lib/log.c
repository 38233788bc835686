/*
 * log.c - optional diagnostics (POSH_LOG = off | stderr | syslog, POSH_LOG_LEVEL = error | warning | info |
 * debug). Read once per process; nothing is printed unless a message reaches the configured level.
 */
#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

enum log_sink { SINK_OFF, SINK_STDERR, SINK_SYSLOG };

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static enum log_sink log_sink = SINK_STDERR;
static posh_log_level log_level = POSH_LOG_WARNING;
static int default_off;  /* set by the shim before any message: a program's stderr is not ours */

void posh_log_default_off(void)
{
    default_off = 1;
}

static int parse_sink(const char *v, enum log_sink *out)
{
    if (v == NULL || strcmp(v, "stderr") == 0) {
        *out = SINK_STDERR;
    } else if (strcmp(v, "off") == 0) {
        *out = SINK_OFF;
    } else if (strcmp(v, "syslog") == 0) {
        *out = SINK_SYSLOG;
    } else {
        return -1;
    }
    return 0;
}

static int parse_level(const char *v, posh_log_level *out)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (v == NULL) {
        *out = POSH_LOG_WARNING;
        return 0;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = (posh_log_level)i;
            return 0;
        }
    }
    return -1;
}

posh_err posh_log_check_env(char *msg, size_t msglen)
{
    enum log_sink sink;
    posh_log_level level;
    if (parse_sink(posh_getenv("POSH_LOG"), &sink) != 0) {
        posh_msg(msg, msglen, "POSH_LOG: expected off, stderr or syslog");
        return POSH_ERR_CONFIG;
    }
    if (parse_level(posh_getenv("POSH_LOG_LEVEL"), &level) != 0) {
        posh_msg(msg, msglen, "POSH_LOG_LEVEL: expected error, warning, info or debug");
        return POSH_ERR_CONFIG;
    }
    return POSH_OK;
}

static void log_init(void)
{
    /* Invalid values are reported by posh_config_load_env(); logging itself falls back to the defaults.
     * Quietly: the privileged-process warning is itself a message, and this runs inside pthread_once. */
    if (parse_sink(posh_getenv_quiet("POSH_LOG"), &log_sink) != 0)
        log_sink = SINK_STDERR;
    if (default_off && posh_getenv_quiet("POSH_LOG") == NULL)
        log_sink = SINK_OFF;
    if (parse_level(posh_getenv_quiet("POSH_LOG_LEVEL"), &log_level) != 0)
        log_level = POSH_LOG_WARNING;
}

void posh_log(posh_log_level level, const char *fmt, ...)
{
    static const char *const tags[] = {"error", "warning", "info", "debug"};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char raw[1024], line[1024];
    va_list ap;

    pthread_once(&log_once, log_init);
    if (log_sink == SINK_OFF || level > log_level)
        return;
    va_start(ap, fmt);
    if (vsnprintf(raw, sizeof(raw), fmt, ap) < 0)
        raw[0] = '\0';
    va_end(ap);
    /* A log line reaches terminals and log viewers: nothing outside printable ASCII, whoever wrote the text. */
    posh_escape(line, sizeof(line), raw, POSH_ESCAPE_MESSAGE);
    if (log_sink == SINK_SYSLOG)
        syslog(LOG_DAEMON | prio[level], "posh: %s", line);
    else
        fprintf(stderr, "posh: %s: %s\n", tags[level], line);
}
