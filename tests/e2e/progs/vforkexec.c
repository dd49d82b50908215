/* vforkexec: starts a program with vfork() + execve(), as old C code and some runtimes do.
 *
 *   vforkexec inherit|empty PROG [ARGS...]
 *
 * Prints {"root":PID} first, then vfork()s; the child execve()s PROG with this environment
 * ("inherit") or an empty one ("empty": no LD_PRELOAD, no EGRESS_RUN_POLICY). Waits for the
 * child and exits with its status (127 when the exec failed).
 */
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "inherit") != 0 && strcmp(argv[1], "empty") != 0)) {
        fprintf(stderr, "usage: vforkexec inherit|empty PROG [ARGS...]\n");
        return 2;
    }
    printf("{\"root\":%d}\n", (int)getpid());
    fflush(stdout);
    char *empty[] = {NULL};
    char **envp = strcmp(argv[1], "empty") == 0 ? empty : environ;
    pid_t pid = vfork();
    if (pid < 0) {
        perror("vfork");
        return 2;
    }
    if (pid == 0) {
        execve(argv[2], argv + 2, envp);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        return 2;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
