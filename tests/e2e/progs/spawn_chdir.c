/* spawn_chdir HOW DIR PROG: posix_spawn PROG (a path relative to DIR) after a file action that
 * changes the child's working directory to DIR, as Rust's Command::current_dir does.
 *   chdir      posix_spawn_file_actions_addchdir_np(DIR), posix_spawn(PROG)
 *   fchdir     addfchdir_np on a descriptor of DIR opened here, posix_spawn(PROG)
 *   chdir-p    addchdir_np(DIR), posix_spawnp(PROG) with PATH=. (a relative PATH entry)
 *   open-fchdir  addopen_np(DIR as descriptor 9) then addfchdir_np(9): a directory only the
 *              child has, posix_spawn(PROG)
 * Prints "child ran STATUS" or "spawn refused ERRNO". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *how = argv[1], *dir = argv[2], *prog = argv[3];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* Unrelated actions first, so the chdir is not the only one. */
    posix_spawn_file_actions_addopen(&fa, 8, "/dev/null", O_RDONLY, 0);
    if (!strcmp(how, "chdir") || !strcmp(how, "chdir-p")) {
        posix_spawn_file_actions_addchdir_np(&fa, "/");
        posix_spawn_file_actions_addchdir_np(&fa, dir);
    } else if (!strcmp(how, "fchdir")) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY);
        if (fd < 0) return 2;
        posix_spawn_file_actions_addfchdir_np(&fa, fd);
    } else if (!strcmp(how, "open-fchdir")) {
        posix_spawn_file_actions_addopen(&fa, 9, dir, O_RDONLY | O_DIRECTORY, 0);
        posix_spawn_file_actions_addfchdir_np(&fa, 9);
    } else {
        return 2;
    }
    posix_spawn_file_actions_addclose(&fa, 8);
    char *args[] = {(char *)prog, NULL};
    pid_t pid;
    int rc;
    fflush(stdout);
    if (!strcmp(how, "chdir-p")) {
        setenv("PATH", ".", 1);
        rc = posix_spawnp(&pid, prog, &fa, NULL, args, environ);
    } else {
        rc = posix_spawn(&pid, prog, &fa, NULL, args, environ);
    }
    if (rc != 0) {
        printf("spawn refused %d\n", rc);
        return 0;
    }
    int status;
    waitpid(pid, &status, 0);
    printf("child ran %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
