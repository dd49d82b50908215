/* Runs PROGRAM [ARG] with an empty environment through a descriptor-based exec:
 *   execfd fexecve|execveat|execveat-empty PROGRAM [ARG]
 * Prints "exec failed errno=E" if the exec fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *how = argv[1], *prog = argv[2];
    char *args[] = {(char *)prog, argc > 3 ? argv[3] : NULL, NULL};
    char *empty[] = {NULL};
    fflush(stdout);
    if (!strcmp(how, "fexecve")) {
        int fd = open(prog, O_RDONLY);
        fexecve(fd, args, empty);
    } else if (!strcmp(how, "execveat")) {
        execveat(AT_FDCWD, prog, args, empty, 0);
    } else if (!strcmp(how, "execveat-empty")) {
        int fd = open(prog, O_RDONLY);
        execveat(fd, "", args, empty, AT_EMPTY_PATH);
    } else return 2;
    printf("exec failed errno=%d\n", errno);
    return 0;
}
