/* cleared_shell system|popen COMMAND: clearenv(), then run COMMAND through system() or
 * popen(), passing its output through. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    clearenv();
    setenv("PATH", "/usr/bin:/bin", 1);
    fflush(stdout);
    if (!strcmp(argv[1], "system")) return system(argv[2]) == 0 ? 0 : 1;
    FILE *f = popen(argv[2], "r");
    if (!f) return 1;
    char line[256];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    return pclose(f) == 0 ? 0 : 1;
}
