/* Shared helpers for the egress-run benchmark workloads.
 * Every workload talks to 127.0.0.1 only and runs a bounded number of iterations. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* This process's own peak RSS in KiB: VmHWM of its current image. Not ru_maxrss, which Linux
 * carries over vfork+exec from the parent's memory: a program started by posix_spawn (as the
 * launcher starts COMMAND) would report the launcher's peak as its own. */
static long bench_own_peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* At exit, when BENCH_RUSAGE_OUT names a file, writes this program's own CPU time (user and
 * system seconds, itself plus the children it waited for) and its own peak RSS in KiB. Under
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
            bench_own_peak_rss());
    fclose(f);
}

static inline long bench_parse(const char *prog, const char *what, const char *arg, long max)
{
    char *end = NULL;
    long n = strtol(arg, &end, 10);
    if (!end || *end || n <= 0 || n > max) {
        fprintf(stderr, "%s: bad %s '%s'\n", prog, what, arg);
        exit(2);
    }
    return n;
}

/* `PROG COUNT [THREADS]`: the count, and (for the programs that take it) how many threads
 * share it (default 1). */
static inline long bench_count_threads(int argc, char **argv, long *threads)
{
    if (argc != 2 && !(threads && argc == 3)) {
        fprintf(stderr, threads ? "usage: %s COUNT [THREADS]\n" : "usage: %s COUNT\n", argv[0]);
        exit(2);
    }
    long n = bench_parse(argv[0], "COUNT", argv[1], 100000000L);
    if (threads)
        *threads = argc == 3 ? bench_parse(argv[0], "THREADS", argv[2], 64) : 1;
    atexit(bench_write_rusage);
    return n;
}

static inline long bench_count(int argc, char **argv)
{
    return bench_count_threads(argc, argv, NULL);
}

/* The share of COUNT that thread I of T does (the first COUNT % T threads do one more). */
static inline long bench_share(long n, long t, long i)
{
    return n / t + (i < n % t ? 1 : 0);
}

#define DIE(what) \
    do { \
        fprintf(stderr, "%s: %s: %s\n", __FILE__, (what), strerror(errno)); \
        exit(1); \
    } while (0)

#endif
