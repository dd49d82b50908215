/* cleared_shell system|popen|wordexp COMMAND: clearenv(), then run COMMAND through system() or
 * popen(), passing its output through, or expand the words COMMAND through wordexp() (which runs
 * a shell for a command substitution) and print them, space-separated. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wordexp.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    clearenv();
    setenv("PATH", "/usr/bin:/bin", 1);
    fflush(stdout);
    if (!strcmp(argv[1], "system")) return system(argv[2]) == 0 ? 0 : 1;
    if (!strcmp(argv[1], "wordexp")) {
        wordexp_t w;
        int rc = wordexp(argv[2], &w, 0);
        if (rc != 0) {
            printf("wordexp failed %d\n", rc);
            return 1;
        }
        for (size_t i = 0; i < w.we_wordc; i++) printf(i ? " %s" : "%s", w.we_wordv[i]);
        putchar('\n');
        wordfree(&w);
        return 0;
    }
    FILE *f = popen(argv[2], "r");
    if (!f) return 1;
    char line[256];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    return pclose(f) == 0 ? 0 : 1;
}
