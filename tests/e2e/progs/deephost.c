/* deephost PLUGIN now|lazy ACTION [ARG]: dlopen(PLUGIN, RTLD_NOW or RTLD_LAZY | RTLD_DEEPBIND)
 * (a bare PLUGIN name is found through this program's RUNPATH), then:
 *   shared                 print "plugin N host M" (the plugin's shared_name() and ours)
 *   connect|connect_ptr|sendto|dep_connect PORT   print "ok" or "errno E"
 *   gai NAME               print "gai RC"
 * The program defines shared_name() too and exports it (-rdynamic). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int shared_name(void) { return 1; }

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int mode = (strcmp(argv[2], "now") == 0 ? RTLD_NOW : RTLD_LAZY) | RTLD_DEEPBIND;
    void *h = dlopen(argv[1], mode);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
    char sym[64];
    snprintf(sym, sizeof sym, "plugin_%s", argv[3]);
    void *f = dlsym(h, sym);
    if (!f) { printf("no %s\n", sym); return 1; }
    if (strcmp(argv[3], "shared") == 0) {
        printf("plugin %d host %d\n", ((int (*)(void))f)(), shared_name());
    } else if (strcmp(argv[3], "gai") == 0) {
        if (argc != 5) return 2;
        printf("gai %d\n", ((int (*)(const char *))f)(argv[4]));
    } else {
        if (argc != 5) return 2;
        int rc = ((int (*)(int))f)(atoi(argv[4]));
        if (rc == 0) printf("ok\n"); else printf("errno %d\n", rc);
    }
    return 0;
}
