/* Shared helpers for the egress-run benchmark workloads.
 * Every workload talks to 127.0.0.1 only and runs a bounded number of iterations. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* At exit, when BENCH_RUSAGE_OUT names a file, writes this program's own CPU time (user and
 * system seconds, itself plus the children it waited for) and peak RSS in KiB. Under
 * egress-run this separates the program's share from the launcher's. */
static void bench_write_rusage(void)
{
    const char *path = getenv("BENCH_RUSAGE_OUT");
    if (!path || !*path)
        return;
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "%.6f %.6f %ld\n",
            self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 +
                kids.ru_utime.tv_sec + kids.ru_utime.tv_usec / 1e6,
            self.ru_stime.tv_sec + self.ru_stime.tv_usec / 1e6 +
                kids.ru_stime.tv_sec + kids.ru_stime.tv_usec / 1e6,
            self.ru_maxrss);
    fclose(f);
}

static inline long bench_count(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s COUNT\n", argv[0]);
        exit(2);
    }
    char *end = NULL;
    long n = strtol(argv[1], &end, 10);
    if (!end || *end || n <= 0 || n > 100000000L) {
        fprintf(stderr, "%s: bad COUNT '%s'\n", argv[0], argv[1]);
        exit(2);
    }
    atexit(bench_write_rusage);
    return n;
}

#define DIE(what) \
    do { \
        fprintf(stderr, "%s: %s: %s\n", __FILE__, (what), strerror(errno)); \
        exit(1); \
    } while (0)

#endif
