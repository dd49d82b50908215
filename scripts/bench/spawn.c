/* Workload (d): COUNT posix_spawn of /bin/true, waiting for each. Under egress-run every
 * child loads the guard library and reports itself to the launcher. */
#include <spawn.h>
#include <sys/wait.h>

#include "common.h"

extern char **environ;

int main(int argc, char **argv)
{
    long n = bench_count(argc, argv);
    char *child_argv[] = {"/bin/true", NULL};
    for (long i = 0; i < n; i++) {
        pid_t pid;
        int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, child_argv, environ);
        if (rc != 0) {
            errno = rc;
            DIE("posix_spawn /bin/true");
        }
        int status;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR)
                DIE("waitpid");
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "spawn: /bin/true failed (status 0x%x)\n", status);
            return 1;
        }
    }
    return 0;
}
