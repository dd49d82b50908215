/* measure RESULT_FILE [-e NAME=VALUE]... COMMAND...: runs COMMAND (fork + exec) and writes to
 * RESULT_FILE "exit_code wall_seconds user_seconds sys_seconds maxrss_kib" from wait4's rusage,
 * which covers COMMAND and every descendant it waited for. Each -e sets a variable in COMMAND's
 * environment only (`env NAME=VALUE COMMAND` without env's own exec in the timing).
 *
 * Used instead of spawning from Python directly: Linux carries the pre-exec RSS high-water
 * mark into ru_maxrss, and posix_spawn from Python (vfork) would report Python's own ~15 MiB
 * for every program. Forked from this small helper the floor is about 1 MiB. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int cmd = 2;
    while (cmd + 1 < argc && strcmp(argv[cmd], "-e") == 0)
        cmd += 2;
    if (argc <= cmd) {
        fprintf(stderr, "usage: measure RESULT_FILE [-e NAME=VALUE]... COMMAND [ARGS...]\n");
        return 2;
    }
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("measure: fork");
        return 2;
    }
    if (pid == 0) {
        for (int i = 3; i < cmd; i += 2)
            if (putenv(argv[i]) != 0)
                _exit(127);
        execv(argv[cmd], argv + cmd);
        fprintf(stderr, "measure: exec %s: %s\n", argv[cmd], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("measure: wait4");
            return 2;
        }
    }
    double wall = now() - t0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror("measure: result file");
        return 2;
    }
    fprintf(f, "%d %.9f %.6f %.6f %ld\n", code, wall,
            ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
            ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
    fclose(f);
    return 0;
}
