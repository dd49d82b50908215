/* A static program that execs its arguments (PATH search), as a static shell would. */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    execvp(argv[1], argv + 1);
    perror("execvp");
    return 127;
}
