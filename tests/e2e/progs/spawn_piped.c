/* `spawn_piped spawn|spawnp PATH ARG0 ARGS...`: posix_spawn(p)s PATH with argv ARG0 ARGS..., its
 * stdout a pipe (a dup2 file action), in a process group of its own with SIGUSR1 blocked (spawn
 * attributes) and SIGPIPE ignored (inherited), and copies what arrives to stdout prefixed "pipe: ", then
 * prints "rc RC" (posix_spawn's result) and "exit STATUS". */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int p[2];
    if (pipe(p) != 0) return 2;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    posix_spawnattr_setsigmask(&at, &mask);
    signal(SIGPIPE, SIG_IGN);
    pid_t pid;
    int rc = strcmp(argv[1], "spawnp") == 0
                 ? posix_spawnp(&pid, argv[2], &fa, &at, argv + 3, environ)
                 : posix_spawn(&pid, argv[2], &fa, &at, argv + 3, environ);
    close(p[1]);
    if (rc == 0) {
        FILE *in = fdopen(p[0], "r");
        char line[512];
        while (fgets(line, sizeof line, in)) printf("pipe: %s", line);
        int status = 0;
        waitpid(pid, &status, 0);
        printf("rc 0\nexit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    } else {
        printf("rc %d\n", rc);
    }
    return 0;
}
