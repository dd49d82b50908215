/* Runs PROGRAM [ARG] through one exec or spawn function, with an empty environment where the
 * function takes one, or after clearenv() where it uses environ:
 *   execfam execl|execlp|execle-empty|execv-cleared|execvp-cleared|execvpe-empty|
 *           posix_spawn-empty|posix_spawnp-empty PROGRAM [ARG]
 * (execl and execlp keep the environment.) Prints "exec failed errno=E" if the exec fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *how = argv[1], *prog = argv[2], *arg = argc > 3 ? argv[3] : NULL;
    char *empty[] = {NULL};
    fflush(stdout);
    if (!strcmp(how, "execl")) execl(prog, prog, arg, (char *)NULL);
    else if (!strcmp(how, "execlp")) execlp(prog, prog, arg, (char *)NULL);
    else if (!strcmp(how, "execle-empty")) execle(prog, prog, arg, (char *)NULL, empty);
    else if (!strcmp(how, "execv-cleared") || !strcmp(how, "execvp-cleared")) {
        char *args[] = {(char *)prog, (char *)arg, NULL};
        const char *path = getenv("PATH");
        char keep[4096];
        snprintf(keep, sizeof keep, "%s", path ? path : "/usr/bin:/bin");
        clearenv();
        if (how[5] == 'p') { setenv("PATH", keep, 1); execvp(prog, args); }
        else execv(prog, args);
    } else if (!strcmp(how, "execvpe-empty")) {
        char *args[] = {(char *)prog, (char *)arg, NULL};
        execvpe(prog, args, empty);
    } else if (!strcmp(how, "posix_spawn-empty") || !strcmp(how, "posix_spawnp-empty")) {
        char *args[] = {(char *)prog, (char *)arg, NULL};
        pid_t pid;
        int rc = how[11] == 'p' ? posix_spawnp(&pid, prog, NULL, NULL, args, empty)
                                : posix_spawn(&pid, prog, NULL, NULL, args, empty);
        if (rc != 0) { printf("exec failed errno=%d\n", rc); return 0; }
        int status;
        waitpid(pid, &status, 0);
        return 0;
    } else return 2;
    printf("exec failed errno=%d\n", errno);
    return 0;
}
