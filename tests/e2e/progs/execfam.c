/* Runs PROGRAM through one of glibc's variadic exec functions:
 *   execfam execl|execlp|execle-empty PROGRAM [ARG]
 * execle-empty passes an empty environment. Prints "exec failed errno=E" if the exec fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *how = argv[1], *prog = argv[2], *arg = argc > 3 ? argv[3] : NULL;
    char *empty[] = {NULL};
    fflush(stdout);
    if (!strcmp(how, "execl")) execl(prog, prog, arg, (char *)NULL);
    else if (!strcmp(how, "execlp")) execlp(prog, prog, arg, (char *)NULL);
    else if (!strcmp(how, "execle-empty")) execle(prog, prog, arg, (char *)NULL, empty);
    else return 2;
    printf("exec failed errno=%d\n", errno);
    return 0;
}
