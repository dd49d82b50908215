/* par P PROGRAM [ARGS...]: starts P copies of PROGRAM at once (fork + execv) and waits for
 * all of them; fails if any fails. Used to run P guarded processes side by side (they share
 * the launcher and its counters). Its own BENCH_RUSAGE_OUT covers the children it waited for;
 * the children do not write one. */
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: par P PROGRAM [ARGS...]\n");
        return 2;
    }
    long p = bench_parse("par", "P", argv[1], 64);
    const char *rusage_out = getenv("BENCH_RUSAGE_OUT");
    if (rusage_out) {
        static char keep[4096];
        snprintf(keep, sizeof keep, "%s", rusage_out);
        unsetenv("BENCH_RUSAGE_OUT"); /* the children must not overwrite our file */
        setenv("BENCH_PAR_RUSAGE_OUT", keep, 1);
    }
    for (long i = 0; i < p; i++) {
        pid_t pid = fork();
        if (pid < 0)
            DIE("fork");
        if (pid == 0) {
            execv(argv[2], argv + 2);
            DIE("execv");
        }
    }
    int failed = 0;
    for (long i = 0; i < p; i++) {
        int status;
        while (wait(&status) < 0)
            if (errno != EINTR)
                DIE("wait");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    if (rusage_out) {
        setenv("BENCH_RUSAGE_OUT", getenv("BENCH_PAR_RUSAGE_OUT"), 1);
        bench_write_rusage();
    }
    return failed;
}
